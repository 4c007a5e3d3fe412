#!/usr/bin/env bash
# The GPU from the command language (label gpu; exit 77 = skipped without a
# GPU): `set device gpu`, `ppl` on the GPU in fp32 equal to the CPU's to 1e-4
# relative, `gptq model` with its solves on the GPU giving the CPU's
# perplexity to 1e-3 (its calibration captured on the GPU), `model info`
# naming the GPU; `rotate model` on the GPU giving the CPU-rotated model's
# perplexity to 1e-5 (added without a GPU: not yet run on one).
set -euo pipefail
QSUR=${QSUR_BIN:-./build/qsur}
D=${QSUR_SHARED:-../shared}/data
if ! "$QSUR" -c 'set device gpu' >/dev/null 2>&1; then
  echo "skipped: no GPU"
  exit 77
fi
# need TEXT PATTERN WHAT: fails the test with "FAIL: WHAT" unless TEXT matches
need() { echo "$1" | grep -q "$2" || { echo "FAIL: $3"; exit 1; }; }
num() { sed -n "s/.*\"command\":\"$1\".*\"$2\":\([-0-9.e+]*\).*/\1/p" | tail -1; }
run() {
  "$QSUR" -c 'set format json' -c "model load $D/stories260K.bin" -c "$1" \
    -c "ppl $D/stories260K.eval.u16 seqlen=256 dtype=fp32" \
    -c 'calib '"$D"'/stories260K.calib.u16 seqs=16 seqlen=256' -c 'quant w4a16' -c 'gptq model' \
    -c "ppl $D/stories260K.eval.u16 seqlen=256 dtype=fp32" -c 'model info'
}
cpu=$(run 'set device cpu')
gpu=$(run 'set device gpu')
need "$gpu" '"device":"gpu (' "ppl did not run on the GPU"
need "$gpu" '"command":"gptq".*"device":"gpu (captures' "gptq solves not on the GPU"
need "$gpu" '"command":"calib".*"device":"gpu (' "calib did not capture on the GPU"
need "$gpu" 'upload it to the GPU' "model info does not name the GPU"
c1=$(echo "$cpu" | grep '"command":"ppl"' | head -1 | num ppl ppl)
g1=$(echo "$gpu" | grep '"command":"ppl"' | head -1 | num ppl ppl)
c2=$(echo "$cpu" | grep '"command":"ppl"' | tail -1 | num ppl ppl)
g2=$(echo "$gpu" | grep '"command":"ppl"' | tail -1 | num ppl ppl)
echo "float ppl cpu $c1 gpu $g1; after gptq model cpu $c2 gpu $g2"
awk -v a="$c1" -v b="$g1" -v c="$c2" -v d="$g2" 'BEGIN {
  r1 = (a - b) / a; if (r1 < 0) r1 = -r1
  r2 = (c - d) / c; if (r2 < 0) r2 = -r2
  if (a == "" || c == "" || r1 > 1e-4 || r2 > 1e-3) { print "FAIL: rel diffs " r1 " " r2; exit 1 }
  print "ok: rel diffs " r1 " " r2 }'
# rotate model (written without a GPU, docs/gpu.md): its rotations on the GPU,
# the report says so, and the rotated model's ppl equals the CPU-rotated one's
# to 1e-5 (the weights agree to float rounding); smoothquant says it stays on the CPU
rot() {
  "$QSUR" -c 'set format json' -c "model load $D/stories260K.bin" -c "$1" -c 'rotate model hadamard 5' \
    -c "ppl $D/stories260K.eval.u16 seqlen=256 dtype=fp32" \
    -c "calib $D/stories260K.calib.u16 seqs=4 seqlen=256" -c 'smoothquant 0.5'
}
cpu=$(rot 'set device cpu')
gpu=$(rot 'set device gpu')
need "$gpu" '"command":"rotate".*"device":"gpu (dense' "rotate model did not run on the GPU"
need "$cpu" '"command":"rotate".*"device":"cpu"' "rotate model under set device cpu"
need "$gpu" '"command":"smoothquant".*"device":"cpu (' "smoothquant does not say it ran on the CPU"
c3=$(echo "$cpu" | grep '"command":"ppl"' | num ppl ppl)
g3=$(echo "$gpu" | grep '"command":"ppl"' | num ppl ppl)
echo "rotated ppl cpu $c3 gpu $g3"
awk -v a="$c3" -v b="$g3" 'BEGIN { r = (a - b) / a; if (r < 0) r = -r
  if (a == "" || r > 1e-5) { print "FAIL: rotated rel diff " r; exit 1 }
  print "ok: rotated rel diff " r }'
