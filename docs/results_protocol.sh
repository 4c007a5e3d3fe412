#!/usr/bin/env bash
# Reruns the "OSTQuant under the official protocol" measurements of
# docs/results.md and rewrites only the text between the lines
# `<!-- protocol:begin -->` and `<!-- protocol:end -->`.
#
#     cmake -S . -B build && cmake --build build -j2 && bash docs/results_protocol.sh
#
# Environment: QSUR_BIN (default ./build/qsur), QSUR_SHARED (default ../shared),
# SEEDS (default "1 2 3"), W16_SEEDS (the W4A16KV16 OSTQuant seeds, default
# SEEDS), ABL_BATCH (batch of the ablation runs, default 8), RESULTS_TMP,
# RESULTS_LIST (both below),
# ABLATIONS (default "full exact init ste-const qk-off no-scale womi sov-qsur no-stab"), JOBS (runs
# at a time, default 2). Every cell is one fresh `qsur -c '...'` run with BLAS on
# one thread; the exact scripts are printed in the document. Every quantized run
# prints the perplexity on the calibration stream (the training data: what
# choices were made on) before the one on the eval stream. The protocol's
# quantizers are `quant preset=paper-w4a4kv4|paper-w4a16kv16`, its training
# `ostquant model preset=paper` and GPTQ `gptq model float-acts` (64
# calibration sequences), docs/ostquant.md lists them line by line. About 30
# CPU minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
Q=${QSUR_BIN:-./build/qsur}
S=${QSUR_SHARED:-../shared}
read -r -a SEEDS <<< "${SEEDS:-1 2 3}"
read -r -a W16_SEEDS <<< "${W16_SEEDS:-${SEEDS[*]}}"
ABL_BATCH=${ABL_BATCH:-8}
read -r -a ABLATIONS <<< "${ABLATIONS-full exact init ste-const qk-off no-scale womi sov-qsur no-stab}"
JOBS=${JOBS:-2}
. docs/results_lib.sh
results_setup results_protocol.sh protocol # <!-- protocol:begin --> ... <!-- protocol:end -->
# RESULTS_TMP=DIR keeps the runs' outputs there (and reuses finished runs)
if [ -n "${RESULTS_TMP:-}" ]; then TMP=$RESULTS_TMP; mkdir -p "$TMP"; else TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT; fi

PPL="ppl $E seqs=64"
PPL2="ppl $C seqs=64; $PPL" # calib, then eval
HEAD="model load $M; calib $C seqs=64"
declare -A qpreset=([W4A4KV4]="quant preset=paper-w4a4kv4" [W4A16KV16]="quant preset=paper-w4a16kv16")
declare -A abl_args=([full]="" [exact]="smooth=exact" [init]="steps=0" [ste-const]="ste=const" [qk-off]="qk-scale=off"
  [no-scale]="no-scale" [klt]="klt" [keep-best]="keep=best" [no-womi]="no-womi" [sov-code]="sov-order=code" [no-stab]="stabilize=0"
  [womi]="womi" [sov-qsur]="sov-order=qsur" [sov-train]="sov-train=code" [sov-exact]="sov-train=exact")
declare -A abl_label=(
  [full]="**OSTQuant, protocol** (batch $ABL_BATCH)"
  [exact]="S_ud, S_qk as exact equivalences (qsur before)"
  [init]="init only (the preset's start, steps=0)"
  [ste-const]="asymmetric STE with a constant scale (qsur before)"
  [qk-off]="no S_qk"
  [no-scale]="no learned scales"
  [klt]="KLT start (the paper code's) instead of WOMI"
  [keep-best]="keep the best selection-batch step"
  [no-womi]="Hadamard start"
  [sov-code]="S_ov before R_ov, v' = (v / s) R_ov (the paper code's order)"
  [no-stab]="no momentum doubling every 10 steps (qsur before the fourth pass)"
  [womi]="WOMI start (qsur's) instead of the code's KLT"
  [sov-qsur]="S_ov after R_ov, v' = (v R_ov) / s (qsur's order)"
  [sov-train]="S_ov trained on wo's rows, as the code's training forward (fifth pass)"
  [sov-exact]="S_ov trained as the exact equivalence (qsur before the fifth pass)")
# id -> script; every quantized script prints calib and eval perplexity of RTN
# weights, then of GPTQ weights
declare -A script
ids=(FP)
script[FP]="model load $M; $PPL"
for c in W4A4KV4 W4A16KV16; do
  ids+=("none/$c")
  script["none/$c"]="$HEAD; ${qpreset[$c]}; $PPL2; gptq model float-acts; $PPL2"
  for sd in "${SEEDS[@]}"; do
    ids+=("quarot-s$sd/$c")
    script["quarot-s$sd/$c"]="$HEAD; ${qpreset[$c]}; rotate model hadamard $sd; $PPL2; gptq model float-acts; $PPL2"
  done
  oseeds=("${SEEDS[@]}")
  [ "$c" = W4A16KV16 ] && oseeds=("${W16_SEEDS[@]}")
  for sd in "${oseeds[@]}"; do
    ids+=("ostq-s$sd/$c")
    script["ostq-s$sd/$c"]="$HEAD; ${qpreset[$c]}; ostquant model preset=paper seed=$sd; $PPL2; gptq model float-acts; $PPL2"
  done
done
# preset=paper-tuned: the learning rates chosen on calib (W4A4KV4; weight-only
# it is preset=paper)
for sd in "${SEEDS[@]}"; do
  ids+=("tuned-s$sd/W4A4KV4")
  script["tuned-s$sd/W4A4KV4"]="$HEAD; ${qpreset[W4A4KV4]}; ostquant model preset=paper-tuned seed=$sd; $PPL2; gptq model float-acts; $PPL2"
done
for v in "${ABLATIONS[@]}"; do
  for sd in "${SEEDS[@]}"; do
    a=${abl_args[$v]}
    ids+=("abl-$v-s$sd")
    script["abl-$v-s$sd"]="$HEAD; ${qpreset[W4A4KV4]}; ostquant model preset=paper batch=$ABL_BATCH ${a:+$a }seed=$sd; $PPL2; gptq model float-acts; $PPL2"
  done
done
# the training time on both cores: seed 1 of W4A4KV4 again with the batch split
# over two threads (threads=2; the same math up to float rounding)
ids+=("ostq-t2-s1/W4A4KV4")
script["ostq-t2-s1/W4A4KV4"]="$HEAD; ${qpreset[W4A4KV4]}; ostquant model preset=paper threads=2 seed=1; $PPL2; gptq model float-acts; $PPL2"
file_of() { echo "$TMP/${1//\//_}"; }
# nth_ppl ID N: the N-th perplexity the run printed (FP: 1; the others: 1 calib
# RTN, 2 eval RTN, 3 calib GPTQ, 4 eval GPTQ)
nth_ppl() { grep -o '"ppl":[^,}]*' "$(file_of "$1").json" | sed -n "${2}p" | cut -d: -f2; }
val() { grep -o "\"$1\":[^,}]*" "$(file_of "$2").json" | tail -1 | cut -d: -f2 | tr -d '"'; }
run_one() {
  local f
  f=$(file_of "$1")
  [ -s "$f.json" ] && [ ! -f "$f.failed" ] && grep -q '"ppl"' "$f.json" && return 0 # kept from before
  echo "${script[$1]}" > "$f.cmd"
  "$Q" -c "set format json; ${script[$1]}" > "$f.json" 2> "$f.err" || echo failed > "$f.failed"
  cut -d' ' -f1-3 /proc/loadavg > "$f.load" # the load the timed runs saw, kept with them
}
# RESULTS_LIST=1: print each run as "ID<tab>SCRIPT" and stop (to run them elsewhere
# into RESULTS_TMP, as ID.json / ID.cmd with "/" as "_")
if [ -n "${RESULTS_LIST:-}" ]; then
  for id in "${ids[@]}"; do printf '%s\t%s\n' "$id" "${script[$id]}"; done
  exit 0
fi
# longest first: the batch-32 trainings, then the rest
order=()
for id in "${ids[@]}"; do case $id in ostq-* | tuned-*) order+=("$id") ;; esac; done
for id in "${ids[@]}"; do case $id in ostq-* | tuned-*) ;; *) order+=("$id") ;; esac; done
n=0
for id in "${order[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  n=$((n + 1))
  printf '[%2d/%d] %s\n' "$n" "${#order[@]}" "$id" >&2
  run_one "$id" &
done
wait
for id in "${ids[@]}"; do
  if [ -f "$(file_of "$id").failed" ]; then
    echo "results_protocol.sh: run $id failed: $(tail -c 400 "$(file_of "$id").err")" >&2
    exit 1
  fi
done
# ms PREFIX SUFFIX N: "mean ± sd" of the N-th perplexity of runs PREFIX-sSEED SUFFIX
# over the seeds that ran (n = 1: the value alone)
ms() {
  local v=()
  for sd in "${SEEDS[@]}"; do [ -f "$(file_of "$1-s$sd$2").json" ] && v+=("$(nth_ppl "$1-s$sd$2" "$3")"); done
  printf '%s\n' "${v[*]}" | awk '{ n = NF; for (i = 1; i <= n; i++) { s += $i; q += $i * $i }
    m = s / n; var = n > 1 ? (q - n * m * m) / (n - 1) : 0; if (var < 0) var = 0
    if (n > 1) printf "%.1f ± %.1f", m, sqrt(var); else printf "%.1f (1 seed)", m }'
}
msval() { # ms of a report key
  local v=()
  for sd in "${SEEDS[@]}"; do [ -f "$(file_of "$1-s$sd$3").json" ] && v+=("$(val "$2" "$1-s$sd$3")"); done
  printf '%s\n' "${v[*]}" | awk '{ n = NF; for (i = 1; i <= n; i++) { s += $i; q += $i * $i }
    m = s / n; var = n > 1 ? (q - n * m * m) / (n - 1) : 0; if (var < 0) var = 0
    if (n > 1) printf "%.1f ± %.1f", m, sqrt(var); else printf "%.1f (1 seed)", m }'
}
f1() { awk -v v="$1" 'BEGIN { printf "%.1f", v }'; }
{
  echo "$BEGIN"
  echo
  echo "Generated by \`bash docs/results_protocol.sh\` ($(date -u +%Y-%m-%d); do not edit by hand)."
  echo "qsur under the OSTQuant code's protocol (docs/ostquant.md, \"The official protocol\"):"
  echo "quantizers \`quant preset=paper-w4a4kv4\` / \`paper-w4a16kv16\` (both keep the online Hadamard"
  echo "before w2 in weight-only runs too, \`online-w2=on\`, as the code does), training \`ostquant model"
  echo "preset=paper\` on all 64 x 256 sequences of stories260K.calib.u16, GPTQ \`gptq model"
  echo "float-acts\` on the same 64 sequences; perplexity on the 64 x 256 sequences of"
  echo "stories260K.eval.u16, each sequence on its own (fp32 float: $(f1 "$(nth_ppl FP 1)")). qsur: mean ± sd"
  echo "over seeds ${SEEDS[*]} (the seed sets the batch order and the random Hadamard signs)."
  echo "Official code: the PyTorch code of the OSTQuant authors run once (seed 42) on an H200 on"
  echo "this model converted to a Hugging Face directory, same data and evaluation, its scripts'"
  echo "defaults (issue 14 of this project records the run)."
  echo
  echo "| config | official code (eval) | qsur, eval | qsur, calib (training data) |"
  echo "|---|---|---|---|"
  echo "| no transform, RTN, W4A4KV4 | 813.6 | $(f1 "$(nth_ppl none/W4A4KV4 2)") | $(f1 "$(nth_ppl none/W4A4KV4 1)") |"
  echo "| QuaRot-style, RTN, W4A4KV4 | 443.9 | $(ms quarot /W4A4KV4 2) | $(ms quarot /W4A4KV4 1) |"
  echo "| QuaRot-style, GPTQ, W4A4KV4 | 362.7 | $(ms quarot /W4A4KV4 4) | $(ms quarot /W4A4KV4 3) |"
  echo "| OSTQuant, RTN, W4A4KV4 | 362.4 | $(ms ostq /W4A4KV4 2) | $(ms ostq /W4A4KV4 1) |"
  echo "| **OSTQuant, GPTQ, W4A4KV4** | **270.3** | **$(ms ostq /W4A4KV4 4)** | $(ms ostq /W4A4KV4 3) |"
  echo "| OSTQuant \`preset=paper-tuned\` (lrs chosen on calib), RTN, W4A4KV4 | — | $(ms tuned /W4A4KV4 2) | $(ms tuned /W4A4KV4 1) |"
  echo "| **OSTQuant \`preset=paper-tuned\`, GPTQ, W4A4KV4** | — | **$(ms tuned /W4A4KV4 4)** | $(ms tuned /W4A4KV4 3) |"
  echo "| no transform, RTN / GPTQ, W4A16KV16 | 335.9 / 173.4 | $(f1 "$(nth_ppl none/W4A16KV16 2)") / $(f1 "$(nth_ppl none/W4A16KV16 4)") | $(f1 "$(nth_ppl none/W4A16KV16 1)") / $(f1 "$(nth_ppl none/W4A16KV16 3)") |"
  echo "| QuaRot-style, RTN, W4A16KV16 | — | $(ms quarot /W4A16KV16 2) | $(ms quarot /W4A16KV16 1) |"
  echo "| QuaRot-style, GPTQ, W4A16KV16 | 105.2 | $(ms quarot /W4A16KV16 4) | $(ms quarot /W4A16KV16 3) |"
  echo "| OSTQuant, RTN, W4A16KV16 | — | $(ms ostq /W4A16KV16 2) | $(ms ostq /W4A16KV16 1) |"
  echo "| **OSTQuant, GPTQ, W4A16KV16** | **91.0** | **$(ms ostq /W4A16KV16 4)** | $(ms ostq /W4A16KV16 3) |"
  echo
  echo "Training time of \`ostquant model preset=paper\` (one BLAS thread; wall and process CPU"
  echo "seconds, mean ± sd over the seeds; runs $JOBS at a time on a shared 2-core machine, load"
  echo "average at the end of the last seed's W4A4KV4 run $(cat "$(file_of "ostq-s${SEEDS[-1]}/W4A4KV4").load" 2>/dev/null || echo unknown)): W4A4KV4 (3,200 sequence-steps) wall"
  echo "$(msval ostq train_seconds /W4A4KV4), CPU $(msval ostq train_cpu_seconds /W4A4KV4); W4A16KV16 (1,600 sequence-steps,"
  echo "weights fake-quantized every step) wall $(msval ostq train_seconds /W4A16KV16), CPU $(msval ostq train_cpu_seconds /W4A16KV16). The official code: 14.3 s"
  echo "and 108 s on one H200. The same W4A4KV4 training (seed 1) with the batch split over both"
  echo "cores (\`threads=2\`): wall $(f1 "$(val train_seconds ostq-t2-s1/W4A4KV4)") s, CPU $(f1 "$(val train_cpu_seconds ostq-t2-s1/W4A4KV4)") s (GPTQ eval perplexity"
  echo "$(f1 "$(nth_ppl ostq-t2-s1/W4A4KV4 4)") against $(f1 "$(nth_ppl ostq-s1/W4A4KV4 4)") on one thread); at that machine load the wall time is"
  echo "not the 2-core figure (see docs/ostquant.md, Performance)."
  echo
  if [ ${#ABLATIONS[@]} -gt 0 ]; then
    echo "**Ablations under the protocol** (W4A4KV4, \`ostquant model preset=paper batch=$ABL_BATCH\`"
    echo "plus the variant's words: the same 100 steps with $ABL_BATCH instead of 32 sequences per"
    echo "step, to fit the CPU budget; perplexity on the calibration stream (the training data, what"
    echo "choices were made on) and on the eval stream, mean ± sd over seeds ${SEEDS[*]}):"
    echo
    echo "| variant | words | RTN, calib | GPTQ, calib | RTN, eval | GPTQ, eval |"
    echo "|---|---|---|---|---|---|"
    for v in "${ABLATIONS[@]}"; do
      echo "| ${abl_label[$v]} | \`${abl_args[$v]:-—}\` | $(ms "abl-$v" "" 1) | $(ms "abl-$v" "" 3) | $(ms "abl-$v" "" 2) | $(ms "abl-$v" "" 4) |"
    done
    echo
  fi
  commands_block "${ids[@]}"
} > "$TMP/section.md"
write_section protocol
