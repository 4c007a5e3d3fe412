#!/usr/bin/env bash
# GPU against CPU from the command language on a 2-layer Llama-2-7B-shape bf16
# checkpoint (bench/make_checkpoint; per-layer figures, the 32-layer model
# takes about 16x): `calib` (8 x 2048 tokens, every capture point of both
# layers), greedy `generate` of 32 tokens, `rotate model hadamard`, each in a
# fresh process under `set device gpu` and `set device cpu` (wall time of the
# whole process, model load included; `model info` alone is the baseline).
# Usage: bench/gpu_commands.sh [QSUR] [MAKE_CHECKPOINT] [SHARED] [DIR] [SEQS]
Q=${1:-build/qsur}; MK=${2:-build/make_checkpoint}; S=${3:-../shared}; D=${4:-/tmp/qsur_l2_7b}; N=${5:-8}
[ -d "$D" ] || "$MK" llama2-7b "$D" layers=2 dtype=bf16 >/dev/null || exit 1
cp "$S/data/tokenizers/sp32k-tokenizer.json" "$D/tokenizer.json" || exit 1
TIMEFORMAT='%R s'
for dev in gpu cpu; do
  for c in "model info" "calib $S/data/stories260K.calib.u16 seqs=$N seqlen=2048" \
           'generate "Once upon a time" n=32' 'rotate model hadamard'; do
    echo "== $dev: $c"
    { time "$Q" -c 'set format json' -c "set device $dev" -c "model load $D" -c "$c" 2>&1 |
      grep -vE '"command":"(set|model)"' | cut -c1-500; } 2>&1
  done
done
