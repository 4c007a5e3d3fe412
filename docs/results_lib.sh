# Shared by docs/results_ostquant.sh and docs/results_protocol.sh (sourced).

# splice_section SECTION DOC BEGIN END: prints DOC with its lines from BEGIN to END
# (both included) replaced by the file SECTION (tests/test_results_doc.sh runs it)
splice_section() {
  awk -v b="$3" -v e="$4" -v f="$1" '
    $0 == b { while ((getline l < f) > 0) print l; skip = 1; next }
    $0 == e { skip = 0; next }
    !skip { print }' "$2"
}

# commands_block ID...: the section's closing part: the script of each run ID
# ($TMP/ID.cmd, "/" in IDs as "_") with the shared folder shortened to $SHARED,
# in a code block, then the END marker
commands_block() {
  local pre id s
  pre=$(dirname "$(dirname "$M")")
  echo "Exact commands (paths shortened to \$SHARED, the shared data directory: \$QSUR_SHARED, default ../shared):"
  echo
  echo '```'
  for id in "$@"; do
    s=$(cat "$TMP/${id//\//_}.cmd")
    printf '%-26s %s\n' "$id" "${s//$pre/\$SHARED}"
  done
  echo '```'
  echo
  echo "$END"
}

# results_setup NAME MARKER: checks $Q, sets M C E (the model and token files
# under $S/data, absolute), OUT, BEGIN and END (the "<!-- MARKER:begin -->" lines
# that must be in $OUT) and pins BLAS to one thread
results_setup() {
  [ -x "$Q" ] || { echo "$1: $Q not found; build first (cmake -S . -B build && cmake --build build -j2)" >&2; exit 1; }
  M=$(realpath "$S/data/stories260K.bin")
  C=$(realpath "$S/data/stories260K.calib.u16")
  E=$(realpath "$S/data/stories260K.eval.u16")
  export OPENBLAS_NUM_THREADS=1
  OUT=docs/results.md
  BEGIN="<!-- $2:begin -->"
  END="<!-- $2:end -->"
  grep -qx -- "$BEGIN" "$OUT" && grep -qx -- "$END" "$OUT" ||
    { echo "$1: $OUT has no '$BEGIN' ... '$END' lines; run docs/results.sh first" >&2; exit 1; }
}

# write_section WHAT: $TMP/section.md replaces the BEGIN..END block of $OUT
write_section() {
  splice_section "$TMP/section.md" "$OUT" "$BEGIN" "$END" > "$OUT.tmp"
  mv "$OUT.tmp" "$OUT"
  echo "wrote the $1 section of $OUT ($n runs, ${SECONDS}s)" >&2
}
