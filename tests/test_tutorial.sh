#!/usr/bin/env bash
# docs/tutorial.qs runs start to finish, and the numbers its comments promise
# are the ones it prints.
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
"$QSUR_BIN" -f docs/tutorial.qs > "$T/out" 2>"$T/err"; rc=$?
expect_eq "$rc" 0 "tutorial runs without error ($(head -c 300 "$T/err"))"
qsur_lines=$(grep "QSUR = area" "$T/out" | awk '{print $NF}' | tr '\n' ' ')
expect_eq "$qsur_lines" "0.1571 0.2957 0.1571 0.1535 0.7853 " "2-D QSUR values the comments quote"
expect_grep "outlier channels           4" "$T/out" "four outlier channels"
expect_grep "output error           0.487226     0.186971" "$T/out" "hadamard: 0.49 -> 0.19"
for m in gptq quantease awq; do
  v=$(grep "^    vs RTN" "$T/out" | awk '{print $NF}' | tr -d x | head -n $(case $m in gptq) echo 1;; quantease) echo 2;; awq) echo 3;; esac) | tail -1)
  expect_true "$m beats RTN ($v)" awk -v r="$v" 'BEGIN{exit !(r < 1)}'
done
# docs/tutorial.md is the transcript of this very script
bash docs/make_transcript.sh "$QSUR_BIN" "$T/tutorial.md" >/dev/null
# (trailing blanks ignored: the history table pads its last column to the width the
# absolute paths had before make_transcript.sh shortened them, so it depends on the
# checkout's path; the equivalence errors are float rounding, ~1e-7, whose last digits
# follow OpenBLAS's thread count)
V='time \(s\)|equivalence error'
if diff <(grep -Ev "$V" docs/tutorial.md | sed 's/[[:space:]]*$//') \
        <(grep -Ev "$V" "$T/tutorial.md" | sed 's/[[:space:]]*$//') > "$T/diff"; then pass; else
  fail "docs/tutorial.md is stale; regenerate with: bash docs/make_transcript.sh"; head -20 "$T/diff" >&2; fi
finish
