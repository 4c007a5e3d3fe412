#!/usr/bin/env bash
# Inputs that once succeeded silently or said the wrong thing, each with the
# one-line error it must give now (exit status 1): `run DIR`, `ppl DIR`,
# `ppl seqs=0`, seqlen beyond the model's context, a perplexity that
# overflows (huge finite weights), more sequences than the token file holds,
# an option given twice, a bad quantizer value, doubled "CMD: CMD:" prefixes;
# and tensor names with terminal escapes (ESC, BEL) shown escaped everywhere
# a person reads them.
set -u
. "$(dirname "$0")/lib.sh"
stories_setup
# fails CMDS EXPECTED-MESSAGE: the commands exit 1 and stderr's last line is the message
fails() {
  "$QSUR_BIN" -c "$1" > "$T/out" 2> "$T/err"; local rc=$?
  expect_eq "$rc" 1 "exit status of [$1]"
  expect_eq "$(tail -1 "$T/err")" "$2" "message of [$1]"
}
mkdir "$T/dir"

# a directory where a file belongs
fails "run $T/dir" "-c:1: run: $T/dir: is a directory (expected a script of commands)"
fails "model load $M; ppl $T/dir" "-c:1: ppl: $T/dir: not a regular file (expected a token file)"
fails "model load $M; calib $T/dir" "-c:1: calib: $T/dir: not a regular file (expected a token file)"
# counts: 0 sequences, more than the file holds, beyond the model's context (512)
fails "model load $M; ppl $E seqs=0" "-c:1: ppl: bad value in 'seqs=0' (seqs=N, seqlen=N, batch=N, max-tokens=N, dtype=bf16|fp32)"
fails "model load $M; calib $C seqs=0" "-c:1: calib: bad value in 'seqs=0' (samples=N, seqs=N, seqlen=N, max_tokens=N, seed=N, layers=A-B, only=NAME)"
fails "model load $M; calib $C seqs=1000000" "-c:1: calib: seqs=1000000: $C holds 64 sequences of 256 tokens"
"$QSUR_BIN" -c "model load $M; set errexit off; calib $C seqs=1000000; save $T/log.qs" > /dev/null 2>&1
expect_true "the refused calib is not in the session log" bash -c "! grep -q 'calib' '$T/log.qs'"
fails "model load $M; ppl $E seqs=1000" "-c:1: ppl: seqs=1000: $E holds 64 sequences of 256 tokens"
fails "model load $M; ppl $E seqlen=1024" "-c:1: ppl: seqlen=1024 is beyond the model's context of 512 tokens"
fails "model load $M; calib $C seqlen=1024" "-c:1: calib: seqlen=1024 is beyond the model's context of 512 tokens"
"$QSUR_BIN" -c "model load $M; ppl $E seqs=2 seqlen=512" > /dev/null 2>&1
expect_eq "$?" 0 "seqlen equal to the context is fine"

# huge finite weights: the final norm's gains set to 1e30 (float32 0x7149f2ca)
# in a copy of the checkpoint; the logits are ~1e30 and exp(mean NLL) is inf.
# llama2.c layout: 7 int32 header, then tok_embeddings, rms_att, wq, wk, wv, wo,
# rms_ffn, w1, w2, w3 (dim 64, kv_dim 32, hidden 172, 5 layers, vocab 512).
off=$((28 + 4 * (512*64 + 5*64 + 5*64*64 + 2*5*64*32 + 5*64*64 + 5*64 + 3*5*172*64)))
cp "$M" "$T/huge.bin" && chmod u+w "$T/huge.bin"
yes $'\xca\xf2\x49\x71' | tr -d '\n' | head -c 256 | dd of="$T/huge.bin" bs=1 seek="$off" conv=notrunc status=none
fails "model load $T/huge.bin; ppl $E seqs=2" \
  "-c:1: ppl: the perplexity is not finite (mean NLL 1.02e+30 nats/token): the logits are far too large; the largest weight is |w| = 1e+30 in norm"

# an option given twice would silently take the last
fails "model load $M; calib $C seqs=4 seqs=8" "-c:1: calib: option 'seqs=' given twice ('seqs=4', then 'seqs=8'): give it once"
fails "quant w:sym w:g64" "-c:1: quant: option 'w:' given twice ('w:sym', then 'w:g64'): give it once"
fails "model load $M; ostquant model no-scale no-scale" \
  "-c:1: ostquant: option 'no-scale' given twice ('no-scale', then 'no-scale'): give it once"
fails "quant w:sym,asym" "-c:1: quant: 'asym' sets the symmetry a second time in one spec"
out=$("$QSUR_BIN" -c 'echo a=1 a=1' 2>&1)
expect_eq "$out" "a=1 a=1" "free text (echo) may repeat words"
# a known quantizer option with a bad value
fails "quant w:clip=0" "-c:1: quant: bad value in 'clip=0' (clip=R: a ratio R in [0.01, 1], or clip=search)"
fails "quant a:g0" "-c:1: quant: bad value in 'g0' (gN: a group of N = 1..1048576 columns)"
fails "quant w:bogus" "-c:1: quant: unknown quantizer option 'bogus' (sym, sym-full, asym, tensor, row, token, gN, clip=R, clip=search, clip-norm=P, clip-grid=N)"
# one command prefix, never two
fails "export $T/x" "-c:1: export: no model loaded (use \`model load PATH\`)"
fails "model load $M; ostquant status" "-c:1: ostquant status: no \`ostquant model|resume\` since the model was loaded"

# ---- names with terminal escapes: a safetensors header with \u001b and \u0007
hdr='{"a\u001b[31mred\u0007":{"dtype":"F32","shape":[1,2],"data_offsets":[0,8]}}'
{ printf "\\x$(printf %02x ${#hdr})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$hdr"
  printf '\x00\x00\x80\x3f\x00\x00\x00\x40'; } > "$T/esc.safetensors"
"$QSUR_BIN" -c "load $T/esc.safetensors; layers; info; outliers x" > "$T/out" 2> "$T/err"
cat "$T/out" "$T/err" > "$T/all"
expect_true "no raw ESC or BEL byte reaches the terminal" bash -c "! grep -q \$'[\\x07\\x1b]' '$T/all'"
if grep -q 'safetensors' "$T/err"; then
  pass # the name was refused at load: the refusal is escaped too (checked above)
else
  expect_true "\`layers\` shows the name escaped" grep -qF 'a\x1b[31mred\x07' "$T/out"
  expect_true "\`info\` shows the name escaped" grep -qF 'layer                      a\x1b[31mred\x07' "$T/out"
  expect_eq "$(tail -1 "$T/err")" '-c:1: outliers: layer a\x1b[31mred\x07 has no activations' "errors show the name escaped"
  # JSON readers get the exact name (JSON's own \u escapes)
  "$QSUR_BIN" --json -c "load $T/esc.safetensors; layers" > "$T/json" 2>&1
  expect_true "JSON keeps the name exactly" grep -qF '"name":"a\u001b[31mred\u0007"' "$T/json"
fi
finish
