#!/usr/bin/env bash
# docs/results.md is written by two scripts: docs/results.sh (everything) and
# docs/results_ostquant.sh (only between the ostquant markers). Each must keep the
# other's text; this checks the markers and both scripts' splice functions on
# small files (no qsur runs).
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
B='<!-- ostquant:begin -->'
E='<!-- ostquant:end -->'
PB='<!-- protocol:begin -->'
PE='<!-- protocol:end -->'

# the committed document: each marker once, begin before end
expect_eq "$(grep -cxF -- "$B" docs/results.md)" 1 "begin marker count in docs/results.md"
expect_eq "$(grep -cxF -- "$E" docs/results.md)" 1 "end marker count in docs/results.md"
lb=$(grep -nxF -- "$B" docs/results.md | cut -d: -f1)
le=$(grep -nxF -- "$E" docs/results.md | cut -d: -f1)
expect_true "begin (line $lb) before end (line $le)" test "${lb:-0}" -lt "${le:-0}"
expect_eq "$(grep -cxF -- "$PB" docs/results.md)" 1 "protocol begin marker count in docs/results.md"
expect_eq "$(grep -cxF -- "$PE" docs/results.md)" 1 "protocol end marker count in docs/results.md"
expect_grep "$PB" docs/results.sh "results.sh keeps the protocol block"
expect_grep "$PB" docs/results_protocol.sh "results_protocol.sh names its begin marker"
expect_grep "$PE" docs/results_protocol.sh "results_protocol.sh names its end marker"
for f in docs/results.sh docs/results_ostquant.sh; do
  expect_true "$f parses" bash -n "$f"
  expect_grep "$B" "$f" "$f names the begin marker"
  expect_grep "$E" "$f" "$f names the end marker"
done

# results.sh keeps what is between the markers of the current document ...
eval "$(sed -n '/^kept_section() {/,/^}/p' docs/results.sh)"
eval "$(grep '^ostquant_section() {' docs/results.sh)"
OSTQ_BEGIN=$B OSTQ_END=$E
printf 'old head\n%s\nkept 1\n\nkept 2\n%s\nold tail\n' "$B" "$E" > "$T/doc.md"
OUT=$T/doc.md ostquant_section > "$T/kept"
expect_eq "$(cat "$T/kept")" "$(printf '%s\nkept 1\n\nkept 2\n%s' "$B" "$E")" "results.sh keeps the OSTQuant block"
# ... or writes the placeholder between markers when there is none
printf 'no markers\n' > "$T/none.md"
OUT=$T/none.md ostquant_section > "$T/ph"
expect_eq "$(head -1 "$T/ph")" "$B" "placeholder starts with the begin marker"
expect_eq "$(tail -1 "$T/ph")" "$E" "placeholder ends with the end marker"

# results_ostquant.sh replaces exactly the block, markers included, and nothing else
. docs/results_lib.sh
printf '%s\nnew A\nnew B\n%s\n' "$B" "$E" > "$T/section"
splice_section "$T/section" "$T/doc.md" "$B" "$E" > "$T/out"
expect_eq "$(cat "$T/out")" "$(printf 'old head\n%s\nnew A\nnew B\n%s\nold tail' "$B" "$E")" "results_ostquant.sh splice"
finish
