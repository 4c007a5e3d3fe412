#!/usr/bin/env bash
# Token files from the command line (docs/model.md, "Token files"): the same
# tokens as .u16, .u32 and int32 .npy give the same perplexity and the same
# calibration; an id beyond the vocabulary is a one-line error naming the file.
set -u
. "$(dirname "$0")/lib.sh"
stories_setup

# .u32: every uint16 widened; .npy: a v1 header for '<i4' of shape (64, 256), then the same bytes
perl -e 'local $/; my $b = <STDIN>; print pack("V*", unpack("v*", $b))' < "$E" > "$T/eval.u32"
perl -e 'local $/; my $b = <STDIN>; my $d = "{'"'"'descr'"'"': '"'"'<i4'"'"', '"'"'fortran_order'"'"': False, '"'"'shape'"'"': (64, 256), }";
         $d .= " " x (64 - (10 + length($d) + 1) % 64) if (10 + length($d) + 1) % 64; $d .= "\n";
         print "\x93NUMPY\x01\x00", pack("v", length($d)), $d, pack("V*", unpack("v*", $b))' < "$E" > "$T/eval.npy"
perl -e 'local $/; my $b = <STDIN>; print pack("V*", unpack("v*", $b))' < "$C" > "$T/calib.u32"
expect_eq "$(stat -c %s "$T/eval.u32")" 65536 ".u32 file is twice the .u16 one"

for f in "$E" "$T/eval.u32" "$T/eval.npy"; do
  "$QSUR_BIN" -c "set format json; model load $M; ppl $f seqs=4" > "$T/out" 2> "$T/err"
  expect_eq "$?" 0 "ppl on $(basename "$f") succeeds ($(head -c 300 "$T/err"))"
  grep -o '"ppl":[^,}]*' "$T/out" | tail -1 >> "$T/ppls"
done
expect_eq "$(sort -u "$T/ppls" | wc -l)" 1 "the three formats give one perplexity: $(tr '\n' ' ' < "$T/ppls")"

# calib and gptq model from a .u32 file equal those from the .u16 one
for f in "$C" "$T/calib.u32"; do
  "$QSUR_BIN" -c "set format json; model load $M; calib $f seqs=2 seqlen=128; quant w4a16; gptq model; ppl $E seqs=4" > "$T/g" 2> "$T/err"
  expect_eq "$?" 0 "calib + gptq from $(basename "$f") succeed ($(head -c 300 "$T/err"))"
  grep -o '"ppl":[^,}]*' "$T/g" | tail -1 >> "$T/gppl"
done
expect_eq "$(sort -u "$T/gppl" | wc -l)" 1 "gptq calibrated on .u16 and .u32 agree: $(tr '\n' ' ' < "$T/gppl")"

# an id >= vocab (512): the file, the token index and value are named
perl -e 'print pack("V*", (1) x 255, 70000)' > "$T/big.u32"
"$QSUR_BIN" -c "model load $M; ppl $T/big.u32" > /dev/null 2> "$T/err"; rc=$?
expect_true "ppl with id 70000 fails" [ "$rc" -ne 0 ]
expect_grep "big.u32: token 255 = 70000 is not in [0, 512)" "$T/err" "the bad id is named"
expect_eq "$(wc -l < "$T/err")" 1 "one line"
"$QSUR_BIN" -c "model load $M; calib $T/big.u32 seqlen=128" > /dev/null 2> "$T/err"
expect_grep "token 255 = 70000" "$T/err" "calib names it too"
finish
