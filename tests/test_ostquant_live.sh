#!/usr/bin/env bash
# The live QSUR of `ostquant model` from the command line: the per-layer table
# of `ostquant status` holds exactly (JSON, %.17g) the numbers the workbench's
# `use` + `qsur` print for the same captured activations of the session model
# (symmetric and asymmetric cube); the report's history has the start point and
# the last step; qsur-every=0 turns it off; the options are logged for replay;
# status without a run fails clearly.
set -u
. "$(dirname "$0")/lib.sh"
: "${QSUR_SHARED:=../shared}"
D="$QSUR_SHARED/data"
M="$D/stories260K.bin"; C="$D/stories260K.calib.u16"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
export OPENBLAS_NUM_THREADS=1
# site LAYER INPUT KEY FILE: KEY of the status table row (last status in FILE)
site() { grep '"command":"ostquant"' "$4" | tail -1 | grep -o "{\"layer\":$1,\"input\":\"$2\"[^}]*" |
  grep -o "\"$3\":[^,}]*" | cut -d: -f2; }
json() { grep -o "\"$1\":[^,}]*" "$2" | tail -1 | cut -d: -f2; }

# calib seqs=2 of 256 tokens = the probe (qsur-tokens=512, training seq-len 256)
for cube in sym asym; do
  uses=""
  for p in "0 attention.wq attention.in" "2 attention.wo attention.wo.in" "4 feed_forward.w3 feed_forward.in" \
           "3 feed_forward.w2 feed_forward.w2.in"; do
    set -- $p
    uses="$uses; use layers.$1.$2; qsur"
  done
  "$QSUR_BIN" -c "set format json; set cube $cube; model load $M; calib $C seqs=2; quant w4a4kv4; ostquant model steps=2 batch=2; ostquant status$uses; save $T/log_$cube.qs" > "$T/$cube.json" 2> "$T/$cube.err"
  expect_eq "$?" 0 "cube $cube: ostquant model + status + qsur succeed ($(head -c 300 "$T/$cube.err"))"
  expect_eq "$(grep '"command":"ostquant"' "$T/$cube.json" | tail -1 | grep -o '"cube":"[a-z]*"')" "\"cube\":\"$cube\"" \
    "cube $cube: status says which cube"
  i=0
  for p in "0 attention.in" "2 attention.wo.in" "4 feed_forward.in" "3 feed_forward.w2.in"; do
    set -- $p
    i=$((i + 1))
    got=$(site "$1" "$2" x_log10 "$T/$cube.json")
    want=$(grep '"command":"qsur"' "$T/$cube.json" | sed -n "${i}p" | grep -o '"x_log10_qsur":[^,}]*' | cut -d: -f2)
    expect_true "cube $cube: layers.$1.$2 has a value ($got)" test -n "$got"
    expect_eq "$got" "$want" "cube $cube: status x_log10 of layers.$1.$2 == \`qsur\` on the captured input"
    got=$(site "$1" "$2" x_qsur_d "$T/$cube.json")
    want=$(grep '"command":"qsur"' "$T/$cube.json" | sed -n "${i}p" | grep -o '"x_qsur_per_dim":[^,}]*' | cut -d: -f2)
    expect_eq "$got" "$want" "cube $cube: status x_qsur_d of layers.$1.$2 == \`qsur\`"
  done
  # wo alone: 64 rows x 64 dims is singular in both views
  expect_eq "$(site 2 attention.wo.in w_log10 "$T/$cube.json")" "null" "cube $cube: wo's weight QSUR is singular (null)"
done
R=$(grep '"command":"ostquant"' "$T/sym.json" | head -1)
echo "$R" > "$T/model.json"
expect_grep '"qsur_history":[{"step":0,' "$T/model.json" "the model report's history starts at step 0"
expect_grep '},{"step":2,' "$T/model.json" "and has the last step (2)"
x=$(json x_qsur_d_min "$T/model.json")
expect_true "the report gives the final X QSUR^(1/d) min ($x)" awk -v a="$x" 'BEGIN { exit !(a > 0 && a < 1) }'
expect_grep '"x_worst":"L' "$T/model.json" "the report names the worst layer"
expect_grep 'qsur-every=10 qsur-tokens=512' "$T/log_sym.qs" "the saved session replays the QSUR options"

# qsur-every=0: no live QSUR, no table; status still describes the run
"$QSUR_BIN" -c "set format json; model load $M; calib $C seqs=2; quant w4a4kv4; ostquant model steps=1 batch=1 seq-len=32 qsur-every=0; ostquant status" > "$T/off.json" 2>&1
expect_eq "$?" 0 "qsur-every=0 runs"
expect_eq "$(grep -c 'qsur_history' "$T/off.json")" 0 "qsur-every=0: no history"
expect_grep '"measurements":0' "$T/off.json" "qsur-every=0: status counts no measurement"

# status without a run
"$QSUR_BIN" -c "model load $M; ostquant status" > /dev/null 2> "$T/err"
expect_eq "$?" 1 "status without a run fails"
expect_grep "no \`ostquant model|resume\` since the model was loaded" "$T/err" "and says why"
finish
