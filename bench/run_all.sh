#!/usr/bin/env bash
# Runs every benchmark once and writes their raw output, with the exact
# command and the machine's state, to docs/bench_output.md. docs/performance.md
# quotes these figures. Takes ~10-15 minutes on 2 cores; run it on an idle machine.
# Usage: bash bench/run_all.sh [BUILD_DIR]   (default build)
set -euo pipefail
cd "$(dirname "$0")/.."
b=${1:-build}
shared=${QSUR_SHARED:-../shared}
out=docs/bench_output.md
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
{
  echo "# Benchmark output"
  echo
  echo "Raw output of \`bash bench/run_all.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores,"
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load average before: $(cut -d' ' -f1-3 /proc/loadavg))."
  echo "Interpretation and goals: [performance.md](performance.md)."
} > "$tmp"
run() {
  echo "running: $*" >&2
  # Progress lines ("ostq 12/150 ... loss ...") are for a terminal, not for the record.
  { echo; echo "## \`$*\`"; echo; echo '```'; "$@" 2>&1 | tr '\r' '\n' | sed -E 's/ostq (layer )?[0-9]+\/[0-9]+ +(kl=[^ ]+ sel=[^ ]+ )?loss [^ ]+ *//g' | grep -v '^ *$'; echo '```'; } >> "$tmp"
}
run "$b/bench_qsur"
run "$b/bench_layer_update"
run "$b/bench_rotate"
run "$b/bench_quant"
run "$b/bench_wquant"
run "$b/bench_llama" "$shared" 8 1
run "$b/bench_tokenizer" "$shared" 2
[ -x "$b/bench_ostquant" ] && run "$b/bench_ostquant" "$shared" && run "$b/bench_ostquant" layer
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out"
