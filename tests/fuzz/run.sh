#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan with float-cast-overflow) in
# build-fuzz and runs each one for a bounded time on its corpus
# (tests/fuzz/corpus/NAME/), two at a time, printing each one's execution count.
# A crash (sanitizer report, broken invariant, leak, timeout, out-of-memory) is
# copied into the corpus as crash-SHA1 -- the regression input that
# ctest fuzz_corpus_NAME replays in every build from then on -- and printed as
# base64 so a CI log is enough to reproduce it; the script then fails.
#   tests/fuzz/run.sh                   every target, $FUZZ_SECONDS (default 30) s each
#   FUZZ_SECONDS=600 tests/fuzz/run.sh npy tokens    longer, chosen targets
# tests/run_all.sh (CI) runs it after the test suites. See docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${FUZZ_SECONDS:-30}
jobs=$(nproc 2>/dev/null || echo 2)
[ "$jobs" -gt 2 ] && jobs=2
build=build-fuzz

echo "== build $build (clang, libFuzzer, ASan + UBSan)"
# -DQSUR_CUDA=OFF: nvcc takes neither the fuzz flags nor libFuzzer links, and no target needs the GPU
CC=clang cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQSUR_FUZZ=ON -DQSUR_CUDA=OFF >/dev/null
cmake --build "$build" -j"$jobs" --target fuzz_all >/dev/null

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in tests/fuzz/fuzz_*.c; do
    n=${f##*/fuzz_}
    targets+=("${n%.c}")
  done
fi

work="$build/fuzz-work"
rm -rf "$work"
mkdir -p "$work"
export OPENBLAS_NUM_THREADS=1
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() { # NAME: fuzz it into $work/NAME (new inputs, crashes, log)
  local name=$1 dir="$work/$1"
  mkdir -p "$dir/new" "$dir/crashes"
  set +e
  "$build/fuzz_$name" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$dir/crashes/" "$dir/new" "tests/fuzz/corpus/$name" > "$dir/log" 2>&1
  echo $? > "$dir/rc"
}

built=()
for t in "${targets[@]}"; do
  [ -f "tests/fuzz/fuzz_$t.c" ] || { echo "no target $t (tests/fuzz/fuzz_$t.c)"; exit 2; }
  if [ -x "$build/fuzz_$t" ]; then
    built+=("$t")
  else # fuzz.cmake skips a target whose engine header is not in the tree yet
    echo "$t: skipped (not built: the engine header it includes is not in this tree)"
  fi
done
targets=("${built[@]}")
echo "== fuzz ${#targets[@]} targets, ${secs} s each, $jobs at a time"
running=0
for t in "${targets[@]}"; do
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait

failed=0
total=0
for t in "${targets[@]}"; do
  dir="$work/$t"
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$dir/log" | grep -o '[0-9]*$' || echo 0)
  total=$((total + ${execs:-0}))
  seeds=$(find "tests/fuzz/corpus/$t" -type f | wc -l)
  grown=$(find "$dir/new" -type f | wc -l)
  if [ "$(cat "$dir/rc")" = 0 ]; then
    printf '%-16s %10s executions in %s s  (corpus %d + %d new inputs)  ok\n' "$t" "$execs" "$secs" "$seeds" "$grown"
    continue
  fi
  failed=$((failed + 1))
  printf '%-16s %10s executions: FAILED (exit %s)\n' "$t" "$execs" "$(cat "$dir/rc")"
  grep -E 'ERROR|SUMMARY|runtime error|invariant broken|==[0-9]+==' "$dir/log" | head -20 || true
  for a in "$dir"/crashes/*; do
    [ -f "$a" ] || continue
    sha=$(sha1sum "$a" | cut -c1-40)
    cp "$a" "tests/fuzz/corpus/$t/crash-$sha"
    echo "  regression input: tests/fuzz/corpus/$t/crash-$sha ($(stat -c %s "$a") bytes; base64 below)"
    base64 -w 0 "$a" | head -c 20000
    echo
  done
  echo "  log: $dir/log"
done
echo "fuzz: $total executions in all, $failed of ${#targets[@]} targets failed"
[ "$failed" -eq 0 ]
