#!/usr/bin/env bash
# A session saved with `save` and replayed in a fresh qsur reproduces the same
# numbers: load the sample layer, apply several transforms (some with implicit
# seeds), undo one, save, replay, compare QSUR and errors to 1e-9.
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT

"$QSUR_BIN" --json -c "load sample_data/layer.safetensors; use W X; quant w4a8 a:asym; \
  rotate hadamard; rotate random; scale smooth 0.4; undo; rotate rhadamard; set cube asym; \
  qsur; error; save $T/session.qs" > "$T/first.json" 2>"$T/err"
expect_eq "$?" 0 "first session runs ($(cat "$T/err"))"
grep -q '"command":"save","ok":true' "$T/first.json"; expect_eq $? 0 "save succeeded"
# implicit seeds are logged explicitly
grep -q '^rotate random [0-9][0-9]*$' "$T/session.qs"; expect_eq $? 0 "random rotation logged with its seed"
grep -q '^undo$' "$T/session.qs"; expect_eq $? 0 "undo is logged"

(cd "$T" && "$QSUR_BIN" --json -c "run session.qs; qsur; error") > "$T/second.json" 2>"$T/err"
expect_eq "$?" 0 "replay runs from another directory ($(cat "$T/err"))"

# Compare every number of the qsur and error results.
nums() { grep -E "\"command\":\"($2)\"" "$1" | tail -1 | grep -oE '"[a-z0-9_]+":-?[0-9.eE+-]+' ; }
for cmd in qsur error; do
  a=$(nums "$T/first.json" "$cmd"); b=$(nums "$T/second.json" "$cmd")
  [ -n "$a" ] || fail "no numbers in first $cmd"
  while read -r kv; do
    k=${kv%%:*}; v1=${kv#*:}
    v2=$(printf '%s\n' "$b" | grep -F "$k:" | head -1); v2=${v2#*:}
    if awk -v a="$v1" -v b="$v2" 'BEGIN { d = a - b; if (d < 0) d = -d; s = (a < 0 ? -a : a); exit !(d <= 1e-9 * (s > 1 ? s : 1)) }'; then
      pass; else fail "$cmd $k: first $v1, replay $v2"; fi
  done <<< "$a"
done
finish
