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
