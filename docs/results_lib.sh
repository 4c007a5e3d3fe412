# Shared by docs/results_ostquant.sh and docs/results_protocol.sh (sourced).

# splice_section SECTION DOC BEGIN END: prints DOC with its lines from BEGIN to END
# (both included) replaced by the file SECTION (tests/test_results_doc.sh runs it)
splice_section() {
  awk -v b="$3" -v e="$4" -v f="$1" '
    $0 == b { while ((getline l < f) > 0) print l; skip = 1; next }
    $0 == e { skip = 0; next }
    !skip { print }' "$2"
}

# print_commands PATH_PREFIX ID...: the script of each run ID ($TMP/ID.cmd, "/"
# in IDs as "_") with PATH_PREFIX shortened to $SHARED, one line each
print_commands() {
  local pre=$1 id s
  shift
  for id in "$@"; do
    s=$(cat "$TMP/${id//\//_}.cmd")
    printf '%-26s %s\n' "$id" "${s//$pre/\$SHARED}"
  done
}
