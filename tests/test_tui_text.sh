#!/usr/bin/env bash
# Text commands from the binary: a hand-written SentencePiece tokenizer.json
# of 512 ids (every id printable) beside stories260K, `tokenizer load`,
# `tokenize`, `detokenize`, `generate` streaming at the prompt (batch) and in
# the TUI's output panel (tmux), and the session log replaying `tokenizer load`.
set -u
. "$(dirname "$0")/lib.sh"
command -v tmux >/dev/null || { echo "tmux is missing (scripts/deps.sh installs it)" >&2; exit 1; }
T=$(mktemp -d)
SOCK=qsur-tuitext-$$
trap 'tmux -L "$SOCK" kill-server 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT
. "$(dirname "$0")/tmux_lib.sh"
S=${QSUR_SHARED:-../shared}

# ids: <unk> <s> </s>, ▁ (3), a..z (4..29), ▁a..▁z (30..55), w56..w511
{
  printf '{"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"\\u2581"},'
  printf '{"type":"Replace","pattern":{"String":" "},"content":"\\u2581"}]},'
  printf '"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"\\u2581"},"content":" "},'
  printf '{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},'
  printf '"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},'
  printf '{"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},'
  printf '"added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},'
  printf '{"id":2,"content":"</s>","special":true}],'
  printf '"model":{"type":"BPE","unk_token":"<unk>","vocab":{"<unk>":0,"<s>":1,"</s>":2,"\\u2581":3'
  i=4; for c in a b c d e f g h i j k l m n o p q r s t u v w x y z; do printf ',"%s":%d' $c $i; i=$((i + 1)); done
  for c in a b c d e f g h i j k l m n o p q r s t u v w x y z; do printf ',"\\u2581%s":%d' $c $i; i=$((i + 1)); done
  while [ $i -lt 512 ]; do printf ',"w%d":%d' $i $i; i=$((i + 1)); done
  printf '},"merges":['
  sep=''; for c in a b c d e f g h i j k l m n o p q r s t u v w x y z; do printf '%s"\\u2581 %s"' "$sep" $c; sep=','; done
  printf ']}}\n'
} > "$T/tokenizer.json"

run() { "$QSUR_BIN" -c "model load $S/data/stories260K.bin" -c "tokenizer load $T/tokenizer.json" "$@" > "$T/out" 2>&1; }
run -c 'tokenize "a bc"' -c "detokenize 30,31,6"
expect_grep "ids                        512" "$T/out" "tokenizer load describes the file"
expect_grep "BOS                        1 <s>" "$T/out" "the post-processor's BOS"
expect_grep "tokens                     3" "$T/out" "\"a bc\" -> ▁a ▁b c"
expect_grep "text                       a bc" "$T/out" "detokenize 30,31,6"
run -c 'generate "the cat" n=12'
expect_grep "generated tokens           12" "$T/out" "generate runs n tokens"
expect_true "the streamed text starts with the prompt" grep -q '^the cat' "$T/out"
run -c 'set format json' -c 'generate "the cat" n=5 temp=0.8 seed=3'
expect_grep '"tokens":5' "$T/out" "generate in JSON"
expect_grep '"seed":3' "$T/out" "the seed is reported"
"$QSUR_BIN" -c "tokenizer load $T/tokenizer.json" -c "save $T/s.qs" > /dev/null 2>&1
expect_grep "tokenizer load \"$T/tokenizer.json\"" "$T/s.qs" "the session log replays tokenizer load"
run -c 'generate "the cat" n=600'
expect_grep "exceed the model's 512 positions" "$T/out" "too long a generation is refused"

# ------------------------------------------------------------- the TUI
printf 'model load "%s"\ntokenizer load "%s"\n' "$S/data/stories260K.bin" "$T/tokenizer.json" > "$T/start.qs"
tm new-session -d -s qsur -x 120 -y 40 -e LANG=C.UTF-8 -e LC_ALL=C.UTF-8 -e TERM=xterm-256color \
  "env PS1='qsur-test\$ ' bash --norc --noprofile -i"
wait_for 'qsur-test$' 5 || { fail "the shell did not start"; finish; exit 1; }
keys "cd '$PWD' && TERM=xterm-256color '$QSUR_BIN' --tui -f '$T/start.qs'; echo EXIT=\$?" Enter
if ! wait_for "QSUR and quantization error" 15; then fail "the TUI did not open"; finish; exit 1; fi
keys ':'
keys 'generate "once upon" n=20' Enter
if wait_for "generated tokens" 15; then pass; else fail "generate finished in the TUI"; fi
expect_true "the streamed text is in the output panel" grep -q 'once upon' "$T/screen"
keys q
wait_for "EXIT=0" 10 && pass || fail "the TUI quit cleanly"
finish
