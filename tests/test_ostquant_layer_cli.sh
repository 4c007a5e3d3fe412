#!/usr/bin/env bash
# `ostquant layer` from the command line: the options it took (lr-scale included)
# are logged, so a saved session replays to the same output error; lr-scale
# reaches the engine (another value gives another result).
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
PRE="load sample_data/layer.safetensors; use W X; quant w4a4 w:sym,row a:sym,token"

"$QSUR_BIN" --json -c "$PRE; ostquant layer steps=6 lr-scale=0.2 block=32; error; save $T/s.qs" > "$T/a.json" 2>"$T/err"
expect_eq "$?" 0 "ostquant layer runs ($(cat "$T/err"))"
expect_grep "lr-scale=0.2 block=32 seed=" "$T/s.qs" "options logged with the implicit seed"
(cd "$T" && "$QSUR_BIN" --json -c "run s.qs; error") > "$T/b.json" 2>"$T/err"
expect_eq "$?" 0 "replay runs ($(cat "$T/err"))"
rel() { grep '"command":"error"' "$1" | tail -1 | grep -oE '"output_error":-?[0-9.eE+-]+' | head -1; }
a=$(rel "$T/a.json"); b=$(rel "$T/b.json")
expect_true "an output error was reported ($a)" test -n "$a"
expect_eq "$b" "$a" "replayed output error"

"$QSUR_BIN" --json -c "$PRE; ostquant layer steps=6 lr-scale=0.01 block=32 seed=$(grep -o 'seed=[0-9]*' "$T/s.qs" | head -1 | cut -d= -f2); error" > "$T/c.json" 2>"$T/err"
c=$(rel "$T/c.json")
expect_true "lr-scale changes the result ($a vs $c)" test -n "$c" -a "$a" != "$c"
"$QSUR_BIN" -c "$PRE; ostquant layer lr-scale=x" > /dev/null 2> "$T/err"
expect_eq "$?" 1 "a bad lr-scale is refused"
finish
