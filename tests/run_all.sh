#!/usr/bin/env bash
# The whole test suite: installs missing packages, then builds and runs every
# ctest test (fast and slow labels) twice: a normal optimised build, and a
# build with AddressSanitizer + UndefinedBehaviorSanitizer (optimised too, so the
# slow tests fit the CI budget; -g keeps the reports readable); then fuzzes every
# parser for a bounded time (tests/fuzz/run.sh: clang + libFuzzer, $FUZZ_SECONDS
# per target, default 30).
# This is the README's second command and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
jobs=$(nproc 2>/dev/null || echo 2)

run_suite() {
  local dir=$1; shift
  echo "== build $dir ($*)"
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  echo "== test $dir"
  ctest --test-dir "$dir" --output-on-failure -j"$jobs"
}

run_suite build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSUR_SANITIZE=OFF
run_suite build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSUR_SANITIZE=ON
echo "== fuzz (tests/fuzz/run.sh)"
bash tests/fuzz/run.sh
