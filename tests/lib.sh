# Helpers for the shell tests: expectations that count and keep going, and a
# closing "N passed, N failed" line like the C tests.
: "${QSUR_BIN:?QSUR_BIN must point at the qsur binary (ctest sets it)}"
passed=0
failed=0
fail() { echo "FAIL: $*" >&2; failed=$((failed + 1)); }
pass() { passed=$((passed + 1)); }
expect_eq() { # actual expected message
  if [ "$1" == "$2" ]; then pass; else fail "$3: got [$1], expected [$2]"; fi
}
expect_grep() { # pattern file message
  if grep -qF -- "$1" "$2"; then pass; else fail "$3: [$1] not in $2: $(head -c 400 "$2")"; fi
}
expect_true() { # message command...
  local msg=$1; shift
  if "$@"; then pass; else fail "$msg"; fi
}
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}
# stories_setup: the shared stories260K model and its token streams as $M, $C,
# $E (in $D), a scratch directory $T removed on exit, and BLAS on one thread
# (the tests compare perplexities that must not depend on the thread count).
stories_setup() {
  : "${QSUR_SHARED:=../shared}"
  D="$QSUR_SHARED/data"
  M="$D/stories260K.bin"; C="$D/stories260K.calib.u16"; E="$D/stories260K.eval.u16"
  T=$(mktemp -d)
  trap 'rm -rf "$T"' EXIT
  export OPENBLAS_NUM_THREADS=1
}
# near A B TOL: |A - B| <= TOL * B
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= t * b) }'; }
