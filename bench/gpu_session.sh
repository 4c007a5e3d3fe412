#!/usr/bin/env bash
# A session's GPU work in one device call (docs/gpu.md): build with CUDA, the
# gpu-labelled tests, bench_gpu, the command-language comparison; every log
# under $OUT (the device tool returns at most 8 files from there).
#
# 1. Here, on the CPU machine (needs apt-get download and ../shared), once:
#        bash bench/gpu_session.sh prepare
#    fills .gpu_carry/ (ignored through .git/info/exclude): debs/ (the -dev
#    packages the device image lacks: OpenBLAS, LAPACKE, ncursesw, readline;
#    scripts/build_private_deps.sh's list) and shared/data (stories260K and the
#    tokenizers the tests and benchmarks read), about 30 MB.
# 2. The device call (one, at most 600 s):
#        run  command="bash bench/gpu_session.sh run"  carry=[".gpu_carry"]
#    Phases in order, each given what is left of GPU_SESSION_SECONDS (default
#    560, so the call ends inside the tool's 600 s limit and $OUT comes back):
#      build     system packages when pkg-config finds them, else
#                scripts/build_private_deps.sh with .gpu_carry/debs
#      tests     ctest -L gpu: gpu_rotate and gpu_stiefel first (new), test_stiefel
#                (its 2 x 2 step through the GPU solve), then the others
#      bench     bench_gpu 8 32 16 $BENCH_CALIB $BENCH_OSTQ $BENCH_OSTQ_STEPS (defaults 32, 2, 2)
#      ostq      (not in the default list) the tests $OSTQ_TESTS (default
#                gpu_ostq_step gpu_ostquant), then bench_gpu 8 32 16 0 0
#                $BENCH_OSTQ_STEPS (0: no bench): OSTQuant's GPU step alone
#      commands  bench/gpu_commands.sh (calib, generate, rotate model; gpu and cpu)
#      seeds     bench/gpu_ostq_seeds.sh (stories260K W4A4KV4 OSTQuant, seeds 1-3, gpu
#                and cpu; not in the default list: name it)
#      sweep     bench/ostq_sweep.sh on every core of the host (CPU runs judged on
#                calib; VARIANTS, SEEDS, QPRESET from the environment; not in the
#                default list)
#    (QSUR_PRIVATE_DEPS=1: the private prefix even where the system has them.)
#    `run build tests` (or any phases named) runs only those; a later call on
#    the still-warm machine finds the build directory and skips the build.
# Output: $OUT/summary.txt (machine, versions, each phase's exit code and
# seconds), build.log, tests.log, bench.log, commands.log.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
C=$ROOT/.gpu_carry
SHARED_SRC=${QSUR_SHARED:-../shared} # where prepare copies from (QSUR_SHARED is reset below)

prepare() {
  set -e
  mkdir -p "$C/debs" "$C/shared/data/tokenizers"
  local ex
  ex=$(git rev-parse --git-path info/exclude)
  grep -qx '/.gpu_carry/' "$ex" 2>/dev/null || echo '/.gpu_carry/' >> "$ex"
  # the list in scripts/build_private_deps.sh's header
  (cd "$C/debs" && apt-get download libopenblas-dev libopenblas0-pthread libopenblas-pthread-dev \
    liblapacke liblapacke-dev libncurses-dev libncursesw6 libncurses6 libreadline-dev libreadline8 \
    libtinfo6 pkgconf pkgconf-bin libpkgconf3 libgfortran5 liblapack3 libblas3 libtmglib3)
  S=$SHARED_SRC
  cp "$S"/data/stories260K.bin "$S"/data/stories260K.calib.u16 "$S"/data/stories260K.eval.u16 \
    "$C/shared/data/"
  cp "$S"/data/tokenizers/sp32k-tokenizer.json "$S"/data/tokenizers/llama2c-tokenizer.bin \
    "$C/shared/data/tokenizers/"
  du -sh "$C"
}

# a helper's copy of its worktree inside .gpu_carry/NAME (the device tool sends
# the session's own checkout): the carry folder is the parent
[ -d "$C" ] || { [ -d "$ROOT/../debs" ] && C=$(cd "$ROOT/.." && pwd); }
B=$ROOT/build-gpu
export PATH=/usr/local/cuda/bin:$PATH # nvcc, where the CUDA image keeps it
SHARED=$C/shared
[ -f "$SHARED/data/stories260K.bin" ] || SHARED=$(cd .. && pwd)/shared
export QSUR_SHARED=$SHARED

have_system_deps() {
  pkg-config --exists openblas ncursesw 2>/dev/null && [ -f /usr/include/readline/readline.h ] &&
    { [ -f /usr/include/lapacke.h ] || [ -f /usr/include/x86_64-linux-gnu/lapacke.h ]; }
}

build() {
  if [ -x "$B/qsur" ] && [ -x "$B/gpu_rotate" ]; then
    cmake --build "$B" -j"$(nproc)" && return 0
  fi
  if [ -z "${QSUR_PRIVATE_DEPS:-}" ] && have_system_deps; then
    cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSUR_CUDA=ON \
      -DQSUR_SHARED_DIR="$QSUR_SHARED" && cmake --build "$B" -j"$(nproc)"
  else
    [ -d "$C/debs" ] || { echo "no system -dev packages and no .gpu_carry/debs (run prepare here, carry .gpu_carry)"; return 1; }
    QSUR_CMAKE_ARGS="-DQSUR_SHARED_DIR=$QSUR_SHARED" scripts/build_private_deps.sh "$C/debs" "$B"
  fi
}

case ${1:-} in
  prepare) prepare; exit ;;
  _build) build; exit ;; # the build phase, under the run's timeout
  run) shift ;;
  *) echo "usage: bash bench/gpu_session.sh prepare | run [build] [tests] [bench] [commands] [ostq]"; exit 2 ;;
esac
PHASES=${*:-build tests bench commands}
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT"
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-8}
START=$(date +%s)
LIMIT=${GPU_SESSION_SECONDS:-560}
SUM=$OUT/summary.txt
left() { echo $((LIMIT - ($(date +%s) - START))); }
note() { echo "$*" | tee -a "$SUM"; }

{
  echo "gpu_session $(date -u +%FT%TZ), phases: $PHASES, limit ${LIMIT}s"
  echo "git: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed files"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
  nvcc --version 2>&1 | tail -1
  (command -v gcc && gcc --version | head -1) 2>&1
  echo "cores $(nproc); shared data: $QSUR_SHARED"
} > "$SUM"

# phase NAME LOG COMMAND...: runs it under what is left of the limit, logs, notes rc and time
phase() {
  local name=$1 log=$2
  shift 2
  local t0 rc budget
  budget=$(left)
  if [ "$budget" -lt 20 ]; then
    note "$name: not run (${budget}s left)"
    return 1
  fi
  t0=$(date +%s)
  echo "== $name: $*" >> "$log"
  timeout --kill-after=5 "$budget" "$@" >> "$log" 2>&1
  rc=$?
  note "$name: rc $rc, $(($(date +%s) - t0))s$([ $rc = 124 ] && echo ' (TIMED OUT)')"
  return $rc
}

# the private prefix's libraries, when the build used it
use_private_libs() {
  [ -e /tmp/qsurdeps/.done ] || return 0
  LD_LIBRARY_PATH=$(scripts/build_private_deps.sh --libs)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export LD_LIBRARY_PATH
}
use_private_libs

for p in $PHASES; do
  case $p in
    build)
      phase build "$OUT/build.log" bash "$0" _build || { note "build failed: see build.log"; break; }
      use_private_libs
      ;;
    tests)
      # the tests written without a GPU first, then the ones that passed on an H200 before
      phase "tests new" "$OUT/tests.log" ctest --test-dir "$B" -L gpu -R '^gpu_(rotate|stiefel)$' --output-on-failure
      phase "tests stiefel cpu" "$OUT/tests.log" ctest --test-dir "$B" -R '^test_stiefel$' --output-on-failure
      phase "tests other gpu" "$OUT/tests.log" ctest --test-dir "$B" -L gpu -E '^gpu_(rotate|stiefel)$' --output-on-failure
      ;;
    bench)
      phase bench "$OUT/bench.log" "$B/bench_gpu" 8 32 16 "${BENCH_CALIB:-32}" "${BENCH_OSTQ:-2}" \
        "${BENCH_OSTQ_STEPS:-2}"
      ;;
    ostq)
      # OSTQuant's transform side on the GPU: one step's gradients GPU vs CPU,
      # the 10-step losses, then bench_gpu's whole 7B-shape step (section 6)
      # without the GPTQ model pass and the separate passes (sections 4, 5)
      for t in ${OSTQ_TESTS:-gpu_ostq_step gpu_ostquant}; do
        phase "tests $t" "$OUT/tests.log" ctest --test-dir "$B" -R "^$t\$" -V # -V: the measured numbers come back too
      done
      [ "${BENCH_OSTQ_STEPS:-2}" -gt 0 ] &&
        phase "bench ostq step" "$OUT/bench.log" "$B/bench_gpu" 8 32 16 0 0 "${BENCH_OSTQ_STEPS:-2}"
      ;;
    seeds)
      phase seeds "$OUT/seeds.log" bash bench/gpu_ostq_seeds.sh "$B/qsur" "$QSUR_SHARED"
      ;;
    sweep)
      # bench/ostq_sweep.sh on the host's cores (CPU runs, calib only):
      # VARIANTS, SEEDS, QPRESET from the environment
      phase sweep "$OUT/sweep.log" env JOBS="$(nproc)" bash bench/ostq_sweep.sh "$B/qsur" "$QSUR_SHARED" "$OUT/sweep"
      ;;
    commands)
      phase commands "$OUT/commands.log" bash bench/gpu_commands.sh "$B/qsur" "$B/make_checkpoint" \
        "$QSUR_SHARED" /tmp/qsur_l2_7b 8
      ;;
    *) note "unknown phase $p" ;;
  esac
done
note "total $(($(date +%s) - START))s"
