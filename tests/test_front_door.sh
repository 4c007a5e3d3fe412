#!/usr/bin/env bash
# `qsur [options] [FILE|DIR]...`: a layer file is loaded and its obvious layer
# selected (one tensor, or a weight/activation pair), a llama2.c file or a
# directory is `model load`ed, paths and -c run in the order given and are
# logged for replay, a single loaded tensor is selected when nothing is,
# --version, and usage errors come before any path is opened.
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
: "${QSUR_SHARED:=../shared}"
M="$QSUR_SHARED/data/stories260K.bin"
val() { awk -v l="$2" 'index($0, "  " l) == 1 { v = $NF } END { print v }' "$1"; }

# the pair in one safetensors file: the same numbers as the sample script's `use W X`
"$QSUR_BIN" sample_data/layer.safetensors -c 'info; qsur; error' > "$T/fd" 2>&1; rc=$?
expect_eq "$rc" 0 "qsur FILE -c ... exits 0"
expect_eq "$(val "$T/fd" "weight (W)")" "W" "the pair's weight is selected"
expect_eq "$(val "$T/fd" "activation (X)")" "X" "the pair's activation is selected"
"$QSUR_BIN" -c 'load sample_data/layer.safetensors; use W X; qsur; error' > "$T/ref" 2>&1
expect_eq "$(val "$T/fd" "layer output error")" "$(val "$T/ref" "layer output error")" \
  "qsur FILE gives the output error of load + use W X"
# two .npy files, in order: W alone first (selected), then the pair
"$QSUR_BIN" sample_data/W.npy sample_data/X.npy -c 'info' > "$T/two" 2>&1
expect_eq "$(val "$T/two" "activation (X)")" "X" "W.npy X.npy selects the pair W X"
# ...also when the weight came first from -c (the workspace's only pair)
"$QSUR_BIN" -c 'load sample_data/W.npy' sample_data/X.npy -c 'info' > "$T/two" 2>&1
expect_eq "$(val "$T/two" "weight (W)") $(val "$T/two" "activation (X)")" "W X" "-c 'load W.npy' X.npy selects W X"
# the file decides, not the workspace: one tensor beside a loaded model is selected
"$QSUR_BIN" "$M" sample_data/W.npy -c 'info' > "$T/mw" 2>&1
expect_eq "$(val "$T/mw" "weight (W)")" "W" "a one-tensor file is selected beside a model's tensors"
# the log replays: load and use are recorded with absolute paths
"$QSUR_BIN" sample_data/layer.safetensors -c "save $T/s.qs" > /dev/null 2>&1
expect_eq "$(grep -v '^#' "$T/s.qs" | sed 's|"/.*/sample_data/|"sample_data/|')" \
  $'load "sample_data/layer.safetensors"\nuse W X' "the session log holds load and use"
# stdin after a path (not a terminal: commands come from it)
out=$(echo 'info' | "$QSUR_BIN" sample_data/W.npy 2>&1)
expect_true "stdin runs after the path ($out)" grep -q "weight (W) *W" <<< "$out"

# a single loaded tensor is selected when nothing is: `load x.npy` then `qsur`
"$QSUR_BIN" -c 'load sample_data/X.npy; qsur' > "$T/one" 2>&1; rc=$?
expect_eq "$rc" 0 "load X.npy; qsur works without use"
expect_true "X alone is taken as the activation" grep -q "X log10 QSUR" "$T/one"
"$QSUR_BIN" -c 'load sample_data/W.npy; stats w top 1' > "$T/one" 2>&1; rc=$?
expect_eq "$rc" 0 "load W.npy; stats w works without use"
# ...but not when the session holds several layers to choose from
"$QSUR_BIN" -c "load $M; qsur" > /dev/null 2> "$T/err"
expect_grep "qsur: no layer selected" "$T/err" "many tensors: no guess"

# a model: llama2.c file and (written here) a Hugging Face directory
"$QSUR_BIN" "$M" -c 'model info' > "$T/m" 2>&1; rc=$?
expect_eq "$rc" 0 "qsur MODEL.bin loads the model"
expect_true "model info names it" grep -q "stories260K.bin" "$T/m"
"$QSUR_BIN" -c "model load $M; model save-hf $T/hf" > /dev/null 2>&1 || mkdir -p "$T/hf"
"$QSUR_BIN" "$T/hf" -c 'model info' > "$T/h" 2>&1; rc=$?
expect_eq "$rc" 0 "qsur DIR loads a Hugging Face directory"
expect_eq "$(val "$T/h" "config")" "$(val "$T/m" "config")" "the directory's config is the model's"

# errors: a missing path (exit 1, named), a bad file, usage errors before any path opens
"$QSUR_BIN" "$T/nope.npy" > /dev/null 2> "$T/err"; rc=$?
expect_eq "$rc" 1 "a missing path exits 1"
expect_grep "qsur: $T/nope.npy: cannot open" "$T/err" "a missing path is named"
printf 'not a tensor' > "$T/junk.npy"
"$QSUR_BIN" "$T/junk.npy" > /dev/null 2> "$T/err"; rc=$?
expect_eq "$rc" 1 "a bad layer file exits 1"
expect_grep "junk.npy" "$T/err" "a bad layer file is named"
"$QSUR_BIN" sample_data/W.npy --bogus > "$T/out" 2> "$T/err"; rc=$?
expect_eq "$rc" 2 "an unknown option after a path is a usage error"
expect_eq "$(cat "$T/out")" "" "nothing was loaded before the usage error"
"$QSUR_BIN" -- sample_data/W.npy > /dev/null 2>&1 < /dev/null; rc=$?
expect_eq "$rc" 0 "-- then a path"
# a .qs path runs as a script
"$QSUR_BIN" sample_data/sample.qs > "$T/qs" 2>&1 < /dev/null; rc=$?
expect_eq "$rc" 0 "qsur SCRIPT.qs runs it"
expect_true "the script's error command ran" grep -q "layer output error" "$T/qs"

# --version: the project's version, the one the manual page carries
v=$("$QSUR_BIN" --version)
expect_true "--version prints 'qsur X.Y.Z' ($v)" grep -qE '^qsur [0-9]+\.[0-9]+\.[0-9]+$' <<< "$v"
expect_true "the manual page carries the same version" grep -qF "\"$v\"" docs/qsur.1
finish
