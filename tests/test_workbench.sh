#!/usr/bin/env bash
# The layer workbench end to end in batch mode on the bundled sample layer and
# the real stories260K checkpoint: numbers that can be checked independently
# of the engine's own code paths (sums, orderings, invariants).
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
J() { "$QSUR_BIN" --json -c "$1" 2>"$T/err"; }
field() { grep -oE "\"$1\":-?[0-9.eE+-]+" | head -1 | cut -d: -f2; }

# hist: counts add up to the number of values, edges are one more than counts
out=$(J "load sample_data/layer.safetensors; use W X; hist x all 32" | tail -1)
counts=$(printf '%s' "$out" | grep -o '"counts":\[[0-9,]*\]' | tr -dc '0-9,' )
sum=$(printf '%s' "$counts" | tr ',' '\n' | awk '{s+=$1} END {print s}')
expect_eq "$sum" $((512 * 256)) "histogram counts sum to tokens x channels"
expect_eq "$(printf '%s\n' "$counts" | tr ',' '\n' | wc -l)" 32 "32 bins as asked"

# outliers: the four planted channels of the generator
out=$(J "load sample_data/layer.safetensors; use W X; outliers" | tail -1)
expect_eq "$(printf '%s' "$out" | grep -o '"channel":[0-9]*' | cut -d: -f2 | tr '\n' ' ')" "17 90 151 230 " "outlier channels of the sample"

# compare: before/after a Hadamard; QSUR up, output error down, W and X both
out=$(J "load sample_data/layer.safetensors; use W X; quant w4a4; rotate hadamard 1; compare" | tail -1)
xq=$(printf '%s' "$out" | grep -o '{"metric":"X log10 QSUR"[^}]*}')
before=$(printf '%s' "$xq" | field before); after=$(printf '%s' "$xq" | field after)
expect_true "X log10 QSUR rises after hadamard ($before -> $after)" awk -v a="$before" -v b="$after" 'BEGIN{exit !(b > a + 100)}'
oe=$(printf '%s' "$out" | grep -o '{"metric":"output error"[^}]*}')
expect_true "output error falls after hadamard ($oe)" awk -v a="$(printf '%s' "$oe" | field before)" -v b="$(printf '%s' "$oe" | field after)" 'BEGIN{exit !(b < a)}'

# equivalence error of every transform kind is tiny (float32)
for step in "rotate hadamard 2" "rotate rhadamard 2" "rotate random 2" "rotate pca" "scale smooth 0.5"; do
  eq=$(J "load sample_data/layer.safetensors; use W X; $step" | tail -1 | field equivalence_error)
  expect_true "$step: equivalence error $eq < 1e-5" awk -v e="$eq" 'BEGIN{exit !(e < 1e-5)}'
done

# scale file: a vector of ones changes nothing; a wrong length is refused with the file named
printf '\x93NUMPY\x01\x00v\x00{"descr": "<f4", "fortran_order": False, "shape": (256,), }' > "$T/ones.npy"
pad=$((128 - 10 - $(printf '{"descr": "<f4", "fortran_order": False, "shape": (256,), }' | wc -c) - 1))
head -c "$pad" /dev/zero | tr '\0' ' ' >> "$T/ones.npy"; printf '\n' >> "$T/ones.npy"
for i in $(seq 256); do printf '\x00\x00\x80\x3f'; done >> "$T/ones.npy"
a=$(J "load sample_data/layer.safetensors; use W X; qsur" | tail -1 | field x_log10_qsur)
b=$(J "load sample_data/layer.safetensors; use W X; scale file $T/ones.npy; qsur" | tail -1 | field x_log10_qsur)
expect_eq "$b" "$a" "scaling by ones leaves QSUR unchanged"
"$QSUR_BIN" -c "load sample_data/layer.safetensors; use W; scale file sample_data/W.npy" >/dev/null 2>"$T/err"
expect_grep "W.npy: expected one tensor of 256 scales" "$T/err" "wrong scale vector length is named"

# the real checkpoint: w2's input size 172 = 4 x 43 takes the Williamson Hadamard matrix
out=$(J "load $QSUR_SHARED/data/stories260K.bin; use layers.0.feed_forward.w2; stats w; qsur; rotate hadamard 9" )
printf '%s' "$out" | grep -q 'hadamard 172 (williamson 43)'; expect_eq $? 0 "172-channel Williamson block described"
printf '%s' "$out" | grep -q '"w_singular_reason":"covariance is singular: n=64 samples <= d=172 dimensions"'; expect_eq $? 0 "singular weight QSUR says why"

# the three log-det methods agree on the sample layer (cholesky and eig-float are the fast paths)
for m in eig-float cholesky; do
  v=$(J "load sample_data/layer.safetensors; use W X; set qsur_method $m; qsur" | tail -1 | field x_log10_qsur)
  expect_true "qsur_method $m: $v vs eig-double $a" awk -v x="$v" -v y="$a" 'BEGIN{d=x-y; if(d<0)d=-d; exit !(d < 1e-6 * (y<0?-y:y))}'
done

# weight quantizers on the layer: each reports RTN and its own output error, and beats RTN
for m in "gptq" "gptq act" "quantease 2" "quantease 2 outliers=0.01" "awq 10" "cqe steps=10"; do
  out=$(J "load sample_data/layer.safetensors; use W X; quant w4; $m" | tail -1)
  ratio=$(printf '%s' "$out" | field ratio)
  expect_true "$m: output error ratio vs RTN $ratio < 1" awk -v r="$ratio" 'BEGIN{exit !(r > 0 && r < 1)}'
done
"$QSUR_BIN" -c "load sample_data/layer.safetensors; use W X; cqe window=2" >/dev/null 2>"$T/err"
expect_grep "cqe: window=K (cross-layer learning) needs model mode" "$T/err" "cqe window without model"
"$QSUR_BIN" -c "load sample_data/layer.safetensors; use W; gptq" >/dev/null 2>"$T/err"
expect_grep "gptq needs a weight and its activations" "$T/err" "gptq without activations"

# JSON readers get an object even for errors found before a handler runs
out=$("$QSUR_BIN" --json -c "bogus" 2>/dev/null)
expect_eq "$out" '{"command":"bogus","ok":false,"error":"bogus: unknown command (try `help`)"}' "unknown command as JSON"

# no layer selected: a clear message
"$QSUR_BIN" -c "qsur" >/dev/null 2>"$T/err"
expect_grep "qsur: no layer selected" "$T/err" "qsur without a layer"
"$QSUR_BIN" -c "load sample_data/layer.safetensors; use W nope" >/dev/null 2>"$T/err"
expect_grep "use: no tensor named 'nope'" "$T/err" "unknown tensor named"
"$QSUR_BIN" -c "load sample_data/layer.safetensors; use X W" >/dev/null 2>"$T/err"; rc=$?
expect_eq "$rc" 0 "X as weight and W as activation have matching columns (256)"
finish
