#!/usr/bin/env bash
# The whole test suite: installs missing packages, then builds and runs every
# ctest test (fast and slow labels) twice: a normal optimised build, and a
# build with AddressSanitizer + UndefinedBehaviorSanitizer (optimised too, so the
# slow tests fit the CI budget; -g keeps the reports readable). Then two more
# compilers' views of the code: a Release build with gcc (-O3 finds warnings
# -O2 does not) and a clang build that also runs the fast tests. Every build
# here treats warnings as errors (QSUR_WERROR); users' builds do not. Last it
# fuzzes every parser for a bounded time (tests/fuzz/run.sh: clang + libFuzzer,
# $FUZZ_SECONDS per target, default 30).
# This is the README's second command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
jobs=$(nproc 2>/dev/null || echo 2)

build() {
  local dir=$1; shift
  echo "== build $dir ($*)"
  cmake -S . -B "$dir" -DQSUR_WERROR=ON "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
}
run_suite() {
  local dir=$1 label=$2; shift 2
  build "$dir" "$@"
  echo "== test $dir${label:+ (label $label)}"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" ${label:+-L "$label"}
}

run_suite build "" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSUR_SANITIZE=OFF
run_suite build-asan "" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSUR_SANITIZE=ON
build build-release -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=gcc
run_suite build-clang fast -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang
echo "== fuzz (tests/fuzz/run.sh)"
bash tests/fuzz/run.sh
