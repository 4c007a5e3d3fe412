#!/usr/bin/env bash
# Ctrl-C during `ostquant model` (a real SIGINT through the program's handler,
# raised at an exact training step by QSUR_TEST_SIGINT_AT_STEP so a loaded
# machine cannot make it early or late):
#  - by default the session keeps the model from before the command: the
#    command fails with a message that says so (and where the state went), the
#    perplexity and `model info` afterwards are those from before, the session
#    log has no ostquant line, and `ostquant resume` continues from the state;
#  - with keep-partial=1 the best transforms so far replace the model and the
#    report says so.
set -u
. "$(dirname "$0")/lib.sh"
stories_setup
PRE="set errexit off; model load $M; calib $C seqs=4; quant w4a4kv4"
RUN="ostquant model steps=1000 seqs=4 batch=2 seq-len=64 seed=3"
val() { awk -v l="$2" 'index($0, "  " l) == 1 { v = $NF } END { print v }' "$1"; }
ppls() { grep '^  perplexity' "$1" | awk '{print $NF}' | tr '\n' ' ' | sed 's/ $//'; }

# default: the model from before stays
QSUR_TEST_SIGINT_AT_STEP=3 "$QSUR_BIN" -c "$PRE; ppl $E seqs=4; $RUN state=$T/st.safetensors; ppl $E seqs=4; model info; save $T/log.qs" \
  > "$T/out" 2> "$T/err"; rc=$?
expect_eq "$rc" 1 "an interrupted ostquant model is a failed command"
expect_eq "$(tail -1 "$T/err")" "-c:1: ostquant: interrupted at step 3 of 1000: the model is the one from before the command (keep-partial=1 keeps the best transforms so far); state saved to $T/st.safetensors" \
  "the message says the model is unchanged and where the state went"
p=($(ppls "$T/out"))
expect_eq "${#p[@]}" 2 "ppl ran before and after"
expect_eq "${p[1]:-}" "${p[0]:-x}" "the perplexity after the interrupt is the one from before"
expect_eq "$(val "$T/out" rotations)" "none" "model info: no ostquant rotation"
expect_true "the log has no ostquant line" bash -c "! grep -q ostquant '$T/log.qs'"
expect_true "the state was saved" test -s "$T/st.safetensors"
"$QSUR_BIN" -c "set format json; $PRE; ostquant resume $T/st.safetensors steps=1" > "$T/res" 2>&1
expect_true "ostquant resume continues from it (step 3)" grep -q '"resumed_from":3' "$T/res"
# the same through keep-partial=0 (explicit)
QSUR_TEST_SIGINT_AT_STEP=2 "$QSUR_BIN" -c "$PRE; $RUN keep-partial=0" > /dev/null 2> "$T/err"
expect_true "keep-partial=0 is the default behaviour" grep -q "interrupted at step 2 of 1000: the model is the one from before" "$T/err"

# keep-partial=1: the best transforms so far replace the model
QSUR_TEST_SIGINT_AT_STEP=3 "$QSUR_BIN" -c "$PRE; ppl $E seqs=4; $RUN keep-partial=1; ppl $E seqs=4; model info" \
  > "$T/out" 2> "$T/err"; rc=$?
expect_eq "$rc" 0 "keep-partial=1: the interrupted run succeeds"
expect_eq "$(val "$T/out" "steps done")" 3 "it stopped at step 3"
expect_true "the report says the best transforms were kept" \
  grep -q "kept (keep-partial=1) *the best transforms so far replace the model" "$T/out"
p=($(ppls "$T/out"))
expect_true "the model changed (ppl ${p[0]:-} -> ${p[1]:-})" test "${p[0]:-x}" != "${p[1]:-x}"
expect_true "model info: the ostquant rotation" grep -q "rotations *ostquant (3 steps" "$T/out"
finish
