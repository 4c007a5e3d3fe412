#!/usr/bin/env bash
# Ctrl-C during `rotate model` and `smoothquant` (a real SIGINT through the
# program's handler, raised at an exact progress tick by
# QSUR_TEST_SIGINT_AT_TICK=LABEL:N so a loaded machine cannot make it early or
# late): the command fails saying the model is the one from before, the
# perplexity and `model info` afterwards are those from before, the session
# log has no line for it, and the same command then runs through and gives
# what it gives on an untouched model.
set -u
. "$(dirname "$0")/lib.sh"
stories_setup
val() { awk -v l="$2" 'index($0, "  " l) == 1 { v = $NF } END { print v }' "$1"; }
ppls() { grep '^  perplexity' "$1" | awk '{print $NF}' | tr '\n' ' ' | sed 's/ $//'; }

# label:tick | command | its name in messages | what model info then says
for case in "rotate: residual:3|rotate model hadamard 3|rotate model|rotations" \
            "rotate: heads:2|rotate model hadamard 3|rotate model|rotations" \
            "smoothquant:4|smoothquant 0.5|smoothquant|smoothquant"; do
  IFS='|' read -r at cmd name field <<< "$case"
  PRE="set errexit off; model load $M; calib $C seqs=4 seqlen=128; quant w4a8"
  QSUR_TEST_SIGINT_AT_TICK="$at" "$QSUR_BIN" -c "$PRE; ppl $E seqs=4; $cmd; ppl $E seqs=4; model info; save $T/log.qs" \
    > "$T/out" 2> "$T/err"; rc=$?
  expect_eq "$rc" 1 "$cmd interrupted at '$at' is a failed command"
  expect_eq "$(tail -1 "$T/err")" "-c:1: $name: interrupted: the model is the one from before the command" \
    "$cmd: the message says the model is unchanged"
  p=($(ppls "$T/out"))
  expect_eq "${#p[@]}" 2 "$cmd: ppl ran before and after"
  expect_eq "${p[1]:-}" "${p[0]:-x}" "$cmd: the perplexity after the interrupt is the one from before"
  expect_eq "$(val "$T/out" "$field")" "none" "$cmd: model info says $field none"
  expect_true "$cmd: the log has no line for it" bash -c "! grep -q '^$name' '$T/log.qs'"
  # then the command runs through on the restored model as on a fresh one
  QSUR_TEST_SIGINT_AT_TICK="$at" "$QSUR_BIN" -c "$PRE; $cmd; $cmd; ppl $E seqs=4" > "$T/again" 2> "$T/err2"
  "$QSUR_BIN" -c "$PRE; $cmd; ppl $E seqs=4" > "$T/fresh" 2> /dev/null
  expect_eq "$(ppls "$T/again")" "$(ppls "$T/fresh")" "$cmd after an interrupted one = on an untouched model"
done
finish
