#!/usr/bin/env bash
# The whole-model commands from the command line: model load, calib, quant,
# ppl, rotate model, smoothquant, gptq model; JSON numbers; save + replay gives
# the same perplexity; bad inputs fail with the command's name and the reason.
set -u
. "$(dirname "$0")/lib.sh"
stories_setup
json() { # key file -> the value of "key": in the last JSON line holding it
  grep -o "\"$1\":[^,}]*" "$2" | tail -1 | cut -d: -f2
}
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

# float and W4A16 RTN perplexity on 8 eval sequences
"$QSUR_BIN" -c "set format json; model load $M; calib $C seqs=4; ppl $E seqs=8; quant w4a16; ppl $E seqs=8" > "$T/a.json"; rc=$?
expect_eq "$rc" 0 "model load / calib / quant / ppl succeed"
fp=$(grep '"command":"ppl"' "$T/a.json" | head -1 | grep -o '"ppl":[^,}]*' | cut -d: -f2)
w4=$(json ppl "$T/a.json")
expect_true "float ppl on 8 eval seqs is about 14.2 (got $fp)" near "$fp" 14.23 0.01
expect_true "w4a16 RTN raises perplexity ($fp -> $w4)" lt "$(awk -v f="$fp" 'BEGIN{print 3*f}')" "$w4"
expect_grep '"tokens":1024' "$T/a.json" "calib seqs=4 captures 4 x 256 tokens"

# use pairs a model weight with its captured input
"$QSUR_BIN" -c "model load $M; calib $C seqs=2; use layers.1.feed_forward.w2" > "$T/use.txt" 2>&1
expect_grep "layers.1.feed_forward.w2.in" "$T/use.txt" "use pairs w2 with its captured input"

# QuaRot and SmoothQuant keep the float perplexity; gptq model beats RTN
"$QSUR_BIN" -c "set format json; model load $M; calib $C seqs=4; rotate model hadamard 3; ppl $E seqs=8" > "$T/r.json"
rot=$(json ppl "$T/r.json")
expect_true "rotate model keeps float ppl ($fp vs $rot)" near "$rot" "$fp" 1e-4
"$QSUR_BIN" -c "set format json; model load $M; calib $C seqs=4; smoothquant 0.5; ppl $E seqs=8" > "$T/s.json"
sq=$(json ppl "$T/s.json")
expect_true "smoothquant keeps float ppl ($fp vs $sq)" near "$sq" "$fp" 1e-4
"$QSUR_BIN" -c "set format json; model load $M; calib $C seqs=4 seqlen=128; quant w3a16; gptq model; ppl $E seqs=8" > "$T/g.json"
g=$(json ppl "$T/g.json")
"$QSUR_BIN" -c "set format json; model load $M; quant w3a16; ppl $E seqs=8" > "$T/g0.json"
g0=$(json ppl "$T/g0.json")
expect_true "gptq model beats RTN at w3a16 ($g0 -> $g)" lt "$g" "$g0"

# save + replay reproduces the numbers (explicit seed, absolute paths)
"$QSUR_BIN" -c "model load $M; calib $C seqs=2; quant w4a8kv4; rotate model hadamard; save $T/s.qs" > /dev/null
expect_grep "rotate model hadamard 1 steps=norm,resid,w2,heads,qk" "$T/s.qs" "rotate logged with its seed"
expect_grep "calib \"" "$T/s.qs" "calib logged"
"$QSUR_BIN" -c "set format json; run $T/s.qs; ppl $E seqs=4" > "$T/rep1.json"
"$QSUR_BIN" -c "set format json; model load $M; calib $C seqs=2; quant w4a8kv4; rotate model hadamard 1; ppl $E seqs=4" > "$T/rep2.json"
expect_eq "$(json ppl "$T/rep1.json")" "$(json ppl "$T/rep2.json")" "replayed script gives the same perplexity"

# bad inputs: the command name and the engine's reason
"$QSUR_BIN" -c "model load $T/missing.bin" > /dev/null 2> "$T/err"; rc=$?
expect_eq "$rc" 1 "missing model fails"
expect_grep "model: $T/missing.bin: " "$T/err" "missing model names command and file"
mkdir -p "$T/hf" && printf '{"hidden_size": 64,' > "$T/hf/config.json"
"$QSUR_BIN" -c "model load $T/hf" > /dev/null 2> "$T/err"; rc=$?
expect_eq "$rc" 1 "malformed config.json fails"
expect_grep "model: $T/hf/config.json: malformed JSON" "$T/err" "malformed config.json is named"
"$QSUR_BIN" -c "ppl $E" > /dev/null 2> "$T/err"
expect_grep "ppl: no model loaded" "$T/err" "ppl without a model"
"$QSUR_BIN" -c "model load $M; ppl $T/nope.u16" > /dev/null 2> "$T/err"
expect_grep "ppl: $T/nope.u16: cannot open" "$T/err" "ppl of a missing token file"
printf 'abc' > "$T/odd.u16"
"$QSUR_BIN" -c "model load $M; calib $T/odd.u16" > /dev/null 2> "$T/err"
expect_grep "calib: $T/odd.u16" "$T/err" "calib of an odd-sized token file names it"
"$QSUR_BIN" -c "model load $M; gptq model" > /dev/null 2> "$T/err"
expect_grep "gptq: needs calibration data: run \`calib FILE\` first" "$T/err" "gptq model needs calib"
"$QSUR_BIN" -c "model load $M; smoothquant 2" > /dev/null 2> "$T/err"
expect_grep "smoothquant: ALPHA: expected a number in [0, 1], got '2'" "$T/err" "smoothquant alpha range"
"$QSUR_BIN" -c "model load $M; rotate model hadamard 1 steps=w2; rotate model hadamard 2 steps=w2" > /dev/null 2> "$T/err"
expect_grep "rotate: the model already has an online rotation before w2" "$T/err" "second online w2 rotation refused"
"$QSUR_BIN" -c "model load $M; quant w4a4 a:g32" > /dev/null 2> "$T/err"; rc=$?
expect_eq "$rc" 1 "activation group that does not divide hidden_dim fails"

# the OSTQuant code's quantizers: presets, wo's own per-head quantizer, later words override
"$QSUR_BIN" -c "model load $M; quant preset=paper-w4a4kv4" > "$T/p.txt" 2>&1; rc=$?
expect_eq "$rc" 0 "quant preset=paper-w4a4kv4"
expect_grep "int4 sym-full row clip=search(norm 2.4, down to 0.21)" "$T/p.txt" "paper weights: full grid, clip norm 2.4 down to 0.21"
expect_grep "wo input quantizer         int4 asym group8" "$T/p.txt" "paper: wo's input per head (head_size 8)"
expect_grep "KV-cache quantizer         int4 asym row" "$T/p.txt" "paper: KV asymmetric per head"
"$QSUR_BIN" -c "model load $M; quant preset=paper-w4a4kv4 ao:same a:sym" > "$T/p2.txt" 2>&1
expect_grep "activation quantizer       int4 sym row" "$T/p2.txt" "words after the preset override it"
expect_true "ao:same drops wo's own quantizer" sh -c "! grep -q 'wo input' '$T/p2.txt'"
"$QSUR_BIN" -c "model load $M; quant a:sym preset=paper-w4a4kv4" > "$T/p4.txt" 2>&1
expect_grep "activation quantizer       int4 sym row" "$T/p4.txt" "a word before preset= overrides it too (the preset comes first)"
"$QSUR_BIN" -c "quant ao:head" > /dev/null 2> "$T/err"; rc=$?
expect_eq "$rc" 1 "ao:head without a model fails"
expect_grep "ao:head needs a model" "$T/err" "ao:head names what it needs"
"$QSUR_BIN" -c "quant preset=nope" > /dev/null 2> "$T/err"
expect_grep "quant: unknown preset 'nope' (expected paper-w4a4kv4|paper-w4a16kv16" "$T/err" "unknown preset is named, with the known ones"
# W4A16 RTN with the code's weight grid reproduces its 335.9 on the 64 eval sequences
"$QSUR_BIN" -c "set format json; model load $M; quant preset=paper-w4a16kv16; ppl $E seqs=64" > "$T/p3.json"
expect_true "paper-w4a16kv16 RTN ppl 335.88 (got $(json ppl "$T/p3.json"))" near "$(json ppl "$T/p3.json")" 335.88 0.001
# gptq model float-acts is logged as such
"$QSUR_BIN" -c "model load $M; calib $C seqs=2 seqlen=64; quant preset=paper-w4a4kv4; gptq model float-acts; save $T/g.qs" > /dev/null 2>&1
expect_grep "gptq model damp=0.01 float-acts" "$T/g.qs" "gptq model float-acts logged"
# ostquant model preset=paper: 1 step on 2 short sequences, its options in the log
"$QSUR_BIN" -c "model load $M; quant preset=paper-w4a4kv4; ostquant model preset=paper steps=1 batch=2 seqs=2 seq-len=32 qsur-every=0 calib=$C; save $T/o.qs" > "$T/o.txt" 2>&1; rc=$?
expect_eq "$rc" 0 "ostquant model preset=paper runs"
expect_grep "womi klt qk-scale=on ste=minmax wquant=off clip-grad=1 lr-decay=linear adam-norm=canonical stabilize=10 keep=last shuffle=epoch smooth=code sov-order=code sov-train=exact online-w2=on calib=" "$T/o.qs" "preset=paper logs every protocol option"
# the code's choices (fifth pass): its KLT start with quantized activations and its S_ov order
expect_grep " seed=1 womi klt qk-scale" "$T/o.qs" "W4A4KV4 preset=paper starts from the code's KLT"
expect_grep " sov-order=code " "$T/o.qs" "W4A4KV4 preset=paper takes the code's S_ov order"
# threads=2 is logged (it can change the last bits), threads=1 is not
"$QSUR_BIN" -c "model load $M; quant preset=paper-w4a4kv4; ostquant model preset=paper steps=1 batch=2 seqs=2 seq-len=32 qsur-every=0 threads=2 calib=$C; save $T/o2.qs" > "$T/o2.txt" 2>&1; rc=$?
expect_eq "$rc" 0 "ostquant model threads=2 runs"
expect_grep "smooth=code sov-order=code sov-train=exact online-w2=on threads=2 calib=" "$T/o2.qs" "threads=2 logged"
# weight-only with online-w2=auto: the code's smoothing too, fused offline (no
# online rotation; preset=paper alone keeps the w2 one: tests/test_online_w2.sh)
"$QSUR_BIN" -c "model load $M; quant preset=paper-w4a16kv16; ostquant model preset=paper online-w2=auto steps=1 batch=2 seqs=2 seq-len=32 qsur-every=0 calib=$C; save $T/o3.qs" > "$T/o3.txt" 2>&1; rc=$?
expect_eq "$rc" 0 "ostquant model preset=paper weight-only runs"
expect_grep "smooth=code sov-order=code sov-train=exact online-w2=auto calib=" "$T/o3.qs" "weight-only preset=paper logs smooth=code and the code's S_ov order"
expect_grep " seed=1 rhadamard qk-scale" "$T/o3.qs" "weight-only preset=paper starts from random-sign Hadamards, not KLT"
expect_grep "w2_in: none; qk: none" "$T/o3.txt" "weight-only smooth=code keeps no online rotation"
expect_grep "lr=0.01689753172873217 lr-scale=0.0017898822675917248 loss=kltop topk=1000" "$T/o.qs" "preset=paper logs the code's lrs and the full KL"
# preset=paper-tuned: preset=paper with the lrs chosen on calib at W4A4KV4 (x1.5,
# x3), the code's weight-only; every other option as preset=paper's
tuned_line() { # CONFIG OUT: the ostquant line of a 1-step paper-tuned run
  "$QSUR_BIN" -c "model load $M; quant preset=paper-$1; ostquant model preset=paper-tuned steps=1 batch=2 seqs=2 seq-len=32 qsur-every=0 calib=$C; save $T/$2.qs" > "$T/$2.txt" 2>&1
  grep -o 'ostquant model .*' "$T/$2.qs"
}
blank_lr() { grep -o 'ostquant model .*' "$1" | sed -E 's/ lr=[^ ]+ lr-scale=[^ ]+ / LR /'; }
tuned_line w4a4kv4 t44 > "$T/t44.line"
expect_grep " lr=0.0254 lr-scale=0.00537 " "$T/t44.line" "W4A4KV4 preset=paper-tuned takes lr x1.5 and lr-scale x3"
expect_eq "$(blank_lr "$T/t44.qs")" "$(blank_lr "$T/o.qs")" "preset=paper-tuned differs from preset=paper in the lrs only"
tuned_line w4a16kv16 t16 > "$T/t16.line"
expect_grep " lr=0.01689753172873217 lr-scale=0.0017898822675917248 " "$T/t16.line" "weight-only preset=paper-tuned keeps the code's lrs"

# save-hf round trip: the exported model gives the same float perplexity
"$QSUR_BIN" -c "set format json; model load $M; rotate model hadamard 4 steps=norm,resid,heads; model save-hf $T/out; model load $T/out; ppl $E seqs=8" > "$T/hf.json"; rc=$?
expect_eq "$rc" 0 "save-hf and reload"
expect_true "rotated model exported to HF keeps ppl" near "$(json ppl "$T/hf.json")" "$fp" 1e-4
finish
