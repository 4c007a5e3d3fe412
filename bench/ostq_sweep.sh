#!/usr/bin/env bash
# A hyper-parameter sweep of `ostquant model` under the official protocol
# (docs/ostquant.md), judged on the calibration stream only: every run is
#     model load stories260K.bin; calib stories260K.calib.u16 seqs=64
#     quant preset=$QPRESET; ostquant model preset=paper WORDS seed=S
#     ppl calib (RTN weights); gptq model float-acts; ppl calib (GPTQ weights)
# on the CPU (`set device cpu`) with one BLAS thread, or with DEVICE=gpu on the
# GPU (training in fp32, `ppl` in the GPU's default bf16); JOBS runs at a time,
# the seeds of every variant interleaved so that a cut-short sweep still
# compares the variants on the same seeds. The eval stream is read only with
# EVAL=1 (for the final numbers of a choice already made: `ppl eval` after
# each calib ppl, its columns after the calib ones).
#
#     VARIANTS='base=;lrs2=lr-scale=0.00358' SEEDS='1 2 3 4' JOBS=16 \
#         bash bench/ostq_sweep.sh [QSUR] [SHARED] [OUTDIR]
#
# VARIANTS: NAME=WORDS separated by ";". Prints, and writes to OUTDIR/sweep.md,
# one line per variant: calib perplexity of RTN and GPTQ weights (mean ± sd over
# the seeds that finished, then each seed) and the mean training wall time;
# then the runs that did not finish (their NAME-sSEED.err says why).
set -uo pipefail
Q=${1:-build/qsur}; S=${2:-../shared}; O=${3:-$(mktemp -d)}
mkdir -p "$O"
QPRESET=${QPRESET:-paper-w4a4kv4}
read -r -a SEEDS <<< "${SEEDS:-1 2 3}"
JOBS=${JOBS:-2}
IFS=';' read -r -a VARS <<< "${VARIANTS:-base=}"
M=$S/data/stories260K.bin; C=$S/data/stories260K.calib.u16
P="ppl $C seqs=64"
[ -n "${EVAL:-}" ] && P="$P; ppl $S/data/stories260K.eval.u16 seqs=64"
NP=$([ -n "${EVAL:-}" ] && echo 4 || echo 2) # perplexities a run prints

run_one() { # NAME WORDS SEED
  local f=$O/$1-s$3
  [ -s "$f.json" ] && [ "$(grep -c '"ppl"' "$f.json")" = "$NP" ] && return 0
  OPENBLAS_NUM_THREADS=1 "$Q" -c "set format json; set device ${DEVICE:-cpu}; model load $M; calib $C seqs=64;
    quant preset=$QPRESET; ostquant model preset=paper $2 seed=$3; $P;
    gptq model float-acts; $P" > "$f.json" 2> "$f.err"
}
for sd in "${SEEDS[@]}"; do
  [ -n "${TABLE_ONLY:-}" ] && break # TABLE_ONLY=1: the table of the runs already in OUTDIR
  for v in "${VARS[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
    run_one "${v%%=*}" "${v#*=}" "$sd" &
  done
done
wait
# nth NAME SEED N: the N-th perplexity of that run (calib RTN, [eval RTN,]
# calib GPTQ[, eval GPTQ])
nth() { grep -o '"ppl":[^,}]*' "$O/$1-s$2.json" 2>/dev/null | sed -n "${3}p" | cut -d: -f2; }
wall() { grep -o '"train_seconds":[^,}]*' "$O/$1-s$2.json" 2>/dev/null | tail -1 | cut -d: -f2; }
stats() { awk '{ n = NF; for (i = 1; i <= n; i++) { s += $i; q += $i * $i }
  if (n == 0) { printf "-"; exit } m = s / n; v = n > 1 ? (q - n * m * m) / (n - 1) : 0
  printf "%.1f ± %.1f (n %d)", m, sqrt(v < 0 ? 0 : v), n }'; }
{
  k=$((NP / 2)) # the GPTQ calib perplexity is number k + 1
  echo "| variant | words | calib RTN | calib GPTQ | GPTQ per seed | train s |${EVAL:+ eval RTN | eval GPTQ |}"
  echo "|---|---|---|---|---|---|${EVAL:+---|---|}"
  for v in "${VARS[@]}"; do
    n=${v%%=*}; r=(); g=(); w=(); er=(); eg=()
    for sd in "${SEEDS[@]}"; do
      x=$(nth "$n" "$sd" $((k + 1)))
      [ -n "$x" ] && [ -n "$(nth "$n" "$sd" "$NP")" ] || continue
      r+=("$(nth "$n" "$sd" 1)"); g+=("$x"); w+=("$(wall "$n" "$sd")")
      [ -n "${EVAL:-}" ] && er+=("$(nth "$n" "$sd" 2)") && eg+=("$(nth "$n" "$sd" 4)")
    done
    printf '| %s | `%s` | %s | %s | %s | %s |' "$n" "${v#*=}" "$(echo "${r[*]}" | stats)" \
      "$(echo "${g[*]}" | stats)" "$( ((${#g[@]})) && printf '%.1f ' "${g[@]}")" \
      "$(echo "${w[*]}" | awk '{ for (i = 1; i <= NF; i++) s += $i; if (NF) printf "%.0f", s / NF }')"
    [ -n "${EVAL:-}" ] && printf ' %s | %s |' "$(echo "${er[*]}" | stats)" "$(echo "${eg[*]}" | stats)"
    echo
  done
  miss=()
  for sd in "${SEEDS[@]}"; do
    for v in "${VARS[@]}"; do
      [ -n "$(nth "${v%%=*}" "$sd" "$NP")" ] || miss+=("${v%%=*}-s$sd")
    done
  done
  ((${#miss[@]})) && echo && echo "not finished: ${miss[*]}"
} | tee "$O/sweep.md"
