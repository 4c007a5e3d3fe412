#!/usr/bin/env bash
# stories260K W4A4KV4 OSTQuant on the GPU and on the CPU, seeds 1-3
# (results.md's command: quant w4a4kv4; ostquant model ... lr=0.01 steps=150
# seed=S; ppl on eval): the GPU runs one after another, the CPU runs side by
# side with one BLAS thread each; each prints the training wall time, where the
# passes ran and the eval perplexity.
# Usage: bench/gpu_ostq_seeds.sh [QSUR] [SHARED]
Q=${1:-build/qsur}; S=${2:-../shared}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
run() { # DEVICE SEED
  OPENBLAS_NUM_THREADS=1 "$Q" -c "set device $1" -c "model load $S/data/stories260K.bin" -c 'quant w4a4kv4' \
    -c "ostquant model calib=$S/data/stories260K.calib.u16 lr=0.01 steps=150 seed=$2" \
    -c "ppl $S/data/stories260K.eval.u16 seqs=64" > "$T/$1_$2" 2>&1
}
for s in 1 2 3; do run cpu $s & done
for s in 1 2 3; do run gpu $s; done
wait
for d in gpu cpu; do
  for s in 1 2 3; do
    printf '%s seed %s: ' "$d" "$s"
    grep -E 'training wall time|training forward|^ *device|perplexity' "$T/${d}_$s" | tr -s ' ' | tr '\n' ';'
    echo
  done
done
