#!/usr/bin/env bash
# online-w2=on: weight-only `rotate model` / `ostquant model` keep the online
# Hadamard before w2 (the OSTQuant and QuaRot code's online_hadamard=down).
# The quant presets turn it on, `quant online-w2=auto` and the commands' own
# online-w2= override it; the model keeps computing the float function (the
# rotation fused into w2 is undone online: with float weights the perplexity
# is the float model's, which it would not be without the hook); the option
# is logged, saved in the state file and restored by `ostquant resume`; the
# export of such a model is refused for plain runtimes (issue 12's check)
# and allowed with runtime=qsur.
set -u
. "$(dirname "$0")/lib.sh"
stories_setup
ppl_of() { grep '"command":"ppl"' "$1" | sed -n "${2:-1}p" | grep -o '"ppl":[^,}]*' | cut -d: -f2; }
field() { grep "\"command\":\"$1\"" "$3" | tail -1 | grep -o "\"$2\":\"[^\"]*\"" | cut -d'"' -f4; }
run() { # name commands
  "$QSUR_BIN" -c "set format json; model load $M; $2" > "$T/$1.json" 2> "$T/$1.err"
  expect_eq "$?" 0 "$1: runs ($(head -c 300 "$T/$1.err"))"
}

# the session setting: the paper presets turn it on, a plain quant keeps it,
# online-w2=auto turns it off
run q "quant w4a16kv16; quant preset=paper-w4a16kv16; quant w4a16kv16; quant online-w2=auto"
expect_eq "$(grep '"command":"quant"' "$T/q.json" | grep -o '"online_w2":"[a-z]*' | cut -d'"' -f4 | tr '\n' ' ')" \
  "auto on on auto " "quant: auto by default, on after the preset, kept by a plain quant, off by online-w2=auto"

# float weights and activations: the model's function is the float one with
# the online rotation on (w2 fused with H, H undone online)
run float "ppl $E seqs=4"
pf=$(ppl_of "$T/float.json")
run rot-on "quant w16a16kv16 online-w2=on; rotate model hadamard 3; ppl $E seqs=4"
expect_eq "$(field rotate online_skipped "$T/rot-on.json")" "qk (KV cache at 16 bits)" "rotate model keeps w2 with online-w2=on"
expect_true "rotate model, online w2, float: the float perplexity ($(ppl_of "$T/rot-on.json") vs $pf)" \
  near "$(ppl_of "$T/rot-on.json")" "$pf" 1e-4
run rot-off "quant w16a16kv16 online-w2=on; rotate model hadamard 3 online-w2=auto"
expect_eq "$(field rotate online_skipped "$T/rot-off.json")" "w2, qk (weight-only: activations and KV cache at 16 bits)" \
  "rotate model online-w2=auto overrides the session"
run ostq-on "calib $C seqs=4; quant w16a16kv16; ostquant model steps=0 seqs=4 batch=2 seq-len=64 smooth=exact online-w2=on; ppl $E seqs=4"
expect_grep '"online":"w2_in: hadamard 172' "$T/ostq-on.json" "ostquant model online-w2=on: the online w2 rotation"
expect_true "ostquant model, online w2, float: the float perplexity ($(ppl_of "$T/ostq-on.json") vs $pf)" \
  near "$(ppl_of "$T/ostq-on.json")" "$pf" 1e-4
run ostq-def "calib $C seqs=4; quant w4a16kv16; ostquant model steps=0 seqs=4 batch=2 seq-len=64"
expect_grep '"online":"w2_in: none' "$T/ostq-def.json" "weight-only ostquant model: no online w2 rotation by default"

# preset=paper (weight-only) turns it on and logs it; the state file keeps it
run paper "calib $C seqs=4; quant w4a16kv16; ostquant model preset=paper steps=1 seqs=4 batch=2 seq-len=64 state=$T/st.safetensors; save $T/s.qs"
expect_grep '"online":"w2_in: hadamard 172' "$T/paper.json" "preset=paper keeps the online w2 rotation weight-only"
expect_grep "online-w2=on" "$T/s.qs" "the log line says online-w2=on"
expect_grep " rhadamard " "$T/s.qs" "weight-only preset=paper starts from Hadamards with random signs (logged)"
run resume "calib $C seqs=4; quant w4a16kv16; ostquant resume $T/st.safetensors steps=1"
expect_grep '"online":"w2_in: hadamard 172' "$T/resume.json" "ostquant resume restores online_w2 from the state file"
run paper-auto "calib $C seqs=4; quant w4a16kv16; ostquant model preset=paper online-w2=auto steps=1 seqs=4 batch=2 seq-len=64"
expect_grep '"online":"w2_in: none' "$T/paper-auto.json" "online-w2=auto overrides preset=paper"

# exports: refused for plain runtimes (llama2c, plain HF), allowed with runtime=qsur
"$QSUR_BIN" -c "model load $M; quant preset=paper-w4a16kv16; rotate model hadamard 3; export $T/x1" > /dev/null 2> "$T/err"
expect_eq "$?" 1 "plain HF export of a weight-only model with the online w2 rotation fails"
expect_grep "a plain HF runtime would run this model without the online rotation before w2" "$T/err" "HF refusal names the rotation"
expect_grep "online-w2=auto" "$T/err" "the refusal names the way to a plain model"
"$QSUR_BIN" -c "model load $M; calib $C seqs=4; quant w4a16kv16 online-w2=on; ostquant model steps=1 seqs=4 batch=2 seq-len=64; export $T/x2 format=llama2c" > /dev/null 2> "$T/err"
expect_eq "$?" 1 "llama2c export of a weight-only OSTQuant model with the online w2 rotation fails"
expect_grep "format=llama2c cannot carry the online rotation before w2 (hadamard 172 (williamson 43))" "$T/err" \
  "llama2c refusal names the rotation"
for d in x1 x2; do
  expect_true "refused export $d leaves nothing" test ! -e "$T/$d"
done
"$QSUR_BIN" -c "model load $M; quant preset=paper-w4a16kv16; rotate model hadamard 3; export $T/x3 runtime=qsur" > /dev/null 2> "$T/err"
expect_eq "$?" 0 "runtime=qsur export of it succeeds ($(head -c 300 "$T/err"))"
finish
