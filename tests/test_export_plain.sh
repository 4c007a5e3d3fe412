#!/usr/bin/env bash
# Plain exports run exactly in a runtime that knows nothing of qsur: every
# llama2.c and HF export of a rotated, OSTQuant-ed or quantized model scores
# the perplexity qsur scores, when run by tests/plain_llama2c.c (the llama2.c
# and HF reference equations, no hooks). Exports that need an online rotation
# are refused in plain formats (one line naming it and the way out) and leave
# nothing behind.
set -u
. "$(dirname "$0")/lib.sh"
stories_setup
: "${QSUR_PLAIN:?QSUR_PLAIN must point at the plain_llama2c binary (ctest sets it)}"

# name | commands before export (the model as qsur runs it)
cases=(
  "float|"
  "rtn-w4g32|quant w4a16kv16 w:g32"
  "rotate-w4|quant w4a16kv16; rotate model hadamard 3"
  "rotate-gptq-w3|calib $C seqs=2 seqlen=128; quant w3a16kv16; rotate model hadamard 4; gptq model"
  "ostquant-w4|calib $C seqs=4; quant w4a16kv16; ostquant model steps=3 seqs=4 batch=2 seq-len=64"
  "rotate-w4kv4-float-kv|quant w4a16kv4; rotate model hadamard 5; quant w4a16kv16"
)
for c in "${cases[@]}"; do
  name=${c%%|*}; pre=${c#*|}
  "$QSUR_BIN" -c "set format json; model load $M; ${pre:+$pre; }ppl $E seqs=3; export $T/$name format=both" > "$T/$name.json" 2> "$T/$name.err"
  expect_eq "$?" 0 "$name: plain export succeeds ($(head -c 300 "$T/$name.err"))"
  q=$(grep '"command":"ppl"' "$T/$name.json" | grep -o '"ppl":[^,}]*' | cut -d: -f2)
  pb=$("$QSUR_PLAIN" "$T/$name/model.bin" "$E" 256 3 | cut -d' ' -f2)
  ph=$("$QSUR_PLAIN" "$T/$name" "$E" 256 3 | cut -d' ' -f2)
  expect_true "$name: llama2.c pass on model.bin scores qsur's ppl ($pb vs $q)" near "$pb" "$q" 2e-5
  expect_true "$name: HF pass on model.safetensors scores qsur's ppl ($ph vs $q)" near "$ph" "$q" 2e-5
  expect_grep '"online_w2_in": null' "$T/$name/report.json" "$name: no online rotation before w2"
done
# a weight-only rotation fused everything: the plain pass differs from the
# float model only by the quantization, and the rotation is not a no-op
expect_grep '"online_skipped":"w2, qk (weight-only' "$T/rotate-w4.json" "weight-only rotate model leaves the online steps out"

# (b) refusals: QuaRot with activation quantization keeps its online rotations
"$QSUR_BIN" -c "model load $M; quant w4a4kv4; rotate model hadamard 3; export $T/r1 format=llama2c" > /dev/null 2> "$T/err"
expect_eq "$?" 1 "llama2c export of an online-rotated model fails"
expect_grep "format=llama2c cannot carry the online rotation before w2 (random signs (seed 4) then hadamard 172 (williamson 43)) that this model needs" "$T/err" "llama2c refusal names the rotation"
expect_grep "use format=hf runtime=qsur" "$T/err" "llama2c refusal gives the way out"
expect_eq "$(wc -l < "$T/err")" 1 "the refusal is one line"
"$QSUR_BIN" -c "model load $M; quant w4a4kv4; rotate model hadamard 3; export $T/r2" > /dev/null 2> "$T/err"
expect_eq "$?" 1 "plain HF export of an online-rotated model fails"
expect_grep "a plain HF runtime would run this model without the online rotation before w2" "$T/err" "HF refusal names the rotation"
expect_grep "add runtime=qsur" "$T/err" "HF refusal gives the way out"
"$QSUR_BIN" -c "model load $M; quant w4a4kv4; rotate model hadamard 3; export $T/r3 format=both runtime=qsur" > /dev/null 2> "$T/err"
expect_eq "$?" 1 "format=both runtime=qsur is refused (model.bin cannot carry it)"
"$QSUR_BIN" -c "set format json; model load $M; calib $C seqs=4; quant w4a8kv16; ostquant model steps=1 seqs=4 batch=2 seq-len=64; export $T/r4 format=llama2c" > /dev/null 2> "$T/err"
expect_grep "format=llama2c cannot carry the online rotation before w2 (hadamard 172 (williamson 43))" "$T/err" "OSTQuant W4A8 keeps its online w2 rotation and is refused"
for d in r1 r2 r3 r4; do
  expect_true "refused export $d leaves nothing" test ! -e "$T/$d"
done
expect_eq "$(ls -d "$T"/r*.tmp-* 2>/dev/null | wc -l)" 0 "refused exports leave no temporary directory"
"$QSUR_BIN" -c "set format json; model load $M; quant w4a4kv4; rotate model hadamard 3; export $T/r5 runtime=qsur; model load $T/r5" > "$T/r5.json" 2> "$T/err"
expect_eq "$?" 0 "format=hf runtime=qsur writes the online rotations for qsur"
expect_grep 'online rotations and quantizers restored' "$T/r5.json" "model load restores them"
finish
