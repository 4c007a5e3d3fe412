#!/usr/bin/env bash
# The interactive prompt, driven through a real pseudo-terminal with tmux:
# typing a command, Tab completion (command names, sub-argument words), Up-arrow
# history and the history file, errors as "CMD: message", Ctrl-C at the prompt
# and during a long command (session intact), Ctrl-D and `quit` exit 0.
# Waits poll for the state they check (a prompt, a line, the exit status file)
# instead of sleeping fixed times; their limit (WAIT_S, default 90 s) only
# bounds how long a failing test takes, so a machine loaded by other work just
# makes the test slower.
set -u
. "$(dirname "$0")/lib.sh"
if ! command -v tmux >/dev/null 2>&1; then
  echo "SKIP: tmux is not installed (scripts/deps.sh installs it)"
  exit 0
fi
T=$(mktemp -d)
: "${WAIT_S:=90}"
NSERVER=0
SOCK=qsur-test-$$-0
tm() { tmux -L "$SOCK" -f /dev/null "$@"; }
cleanup() {
  for ((i = 0; i <= NSERVER; i++)); do tmux -L "qsur-test-$$-$i" -f /dev/null kill-server >/dev/null 2>&1; done
  rm -rf "$T"
}
trap cleanup EXIT
mkdir -p "$T/home"

# start HOME: a fresh server and pane running qsur under sh, so its exit status
# lands in $T/status (the pane then lingers so the screen can still be read).
# Each start gets a server of its own: a new session on the socket of a server
# that is still exiting fails ("server exited unexpectedly").
start() {
  tm kill-server >/dev/null 2>&1
  NSERVER=$((NSERVER + 1))
  SOCK=qsur-test-$$-$NSERVER
  rm -f "$T/status"
  tm new-session -d -x 120 -y 40 \
    "cd '$T' && env -u COLUMNS HOME='$1' LC_ALL=C.UTF-8 '$QSUR_BIN'; echo \$? > '$T/status'; sleep 60"
}
screen() { tm capture-pane -p -J -S -300 2>/dev/null; }
keys() { tm send-keys "$@"; }
# wait_for FIXED-STRING [SECONDS]: until it is on the screen
wait_for() {
  local deadline=$((SECONDS + ${2:-$WAIT_S}))
  while [ $SECONDS -lt $deadline ]; do
    screen | grep -qF -- "$1" && return 0
    sleep 0.05
  done
  return 1
}
# wait_lines FIXED-LINE COUNT: until COUNT lines equal FIXED-LINE exactly
wait_lines() {
  local deadline=$((SECONDS + WAIT_S))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(screen | grep -cxF -- "$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
  return 1
}
wait_status() {
  local deadline=$((SECONDS + WAIT_S))
  while [ $SECONDS -lt $deadline ]; do
    [ -s "$T/status" ] && return 0
    sleep 0.05
  done
  return 1
}
show() { echo "--- screen:" >&2; screen | grep -v '^$' | tail -25 >&2; }
check() { # message command...
  local msg=$1; shift
  if "$@"; then pass; else fail "$msg"; show; fi
}

PROMPT='qsur [W4A4 tok/ch] > '
start "$T/home"
check "the prompt shows the quantizer spec" wait_for "$PROMPT"

# a command and its output
keys 'echo hello-repl' Enter
check "typed command runs" wait_lines 'hello-repl' 1

# Tab: a command name (unique prefix), then a command name as help's argument
keys 'hel' Tab 'sav' Tab Enter
check "Tab completes 'hel' -> help and 'sav' -> save" wait_for "${PROMPT}help save "
check "help save ran" wait_for "save FILE"

# Tab: a sub-argument word of set
keys 'set outl' Tab '3' Enter
check "Tab completes set's word outlier_k" wait_for "${PROMPT}set outlier_k 3"
keys 'set' Enter
check "the completed command took effect" wait_for "outlier_k                  3"
# Tab: workspace tensor names (use completes tensors); the prompt then shows the layer
MODEL="${QSUR_SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared}/data/stories260K.bin"
HAVE_MODEL=0
if [ -f "$MODEL" ]; then
  HAVE_MODEL=1
  keys "load $MODEL" Enter
  check "model loaded" wait_for "stories260K.bin"
  keys 'use layers.1.att' Tab
  # (layers.1.attention.* and layers.1.attention_norm share "layers.1.attention")
  check "Tab extends to the common prefix of the tensor names" wait_for "${PROMPT}use layers.1.attention"
  keys '.wo' Tab Enter
  check "Tab completes the tensor name" wait_for "${PROMPT}use layers.1.attention.wo "
  check "the prompt shows the current layer" wait_for "qsur [layers.1.attention.wo | W4A4 tok/ch] > "
  keys 'quant w8a16' Enter
  check "the prompt follows the quantizer" wait_for "qsur [layers.1.attention.wo | W8A16 tok/ch] > "
  PROMPT='qsur [layers.1.attention.wo | W8A16 tok/ch] > '
else
  fail "shared model missing: $MODEL"
fi

# an error is one line "CMD: message", no FILE:LINE
keys 'bogus_cmd' Enter
check "error line at the prompt" wait_lines 'bogus_cmd: unknown command (try `help`)' 1

# history: Up recalls the previous line
keys 'echo again-1' Enter
check "echo again-1" wait_lines 'again-1' 1
keys Up Enter
check "Up + Enter runs the last line again" wait_lines 'again-1' 2
check "history file written after each line" grep -qxF 'echo again-1' "$T/home/.qsur_history"

# Ctrl-C at the prompt drops the line, the prompt stays
# (wait until the text is echoed: a SIGINT flushes the tty's unread input)
keys 'echo should-not-run'
check "typed text shown" wait_for "${PROMPT}echo should-not-run"
keys C-c
check "^C shown" wait_for 'echo should-not-run^C'
keys 'echo after-ctrl-c' Enter
check "prompt usable after ^C" wait_lines 'after-ctrl-c' 1
expect_eq "$(screen | grep -cxF 'should-not-run')" 0 "the cleared line did not run"

# Ctrl-C during a long command: back at the prompt quickly, session intact
keys 'sleep 30' Enter
check "sleep shows progress" wait_for '% sleep'
t0=$(date +%s.%N)
keys C-c
check "sleep interrupted" wait_for 'sleep: interrupted during sleep'
t1=$(date +%s.%N)
elapsed=$(echo "$t1 - $t0" | bc)
# how fast depends on the machine's load; it must not be the 30 s of the sleep
check "interrupt took ${elapsed}s (well before the 30 s sleep would end)" test "$(echo "$elapsed < 20" | bc)" -eq 1
keys 'echo still-alive; set' Enter
check "commands run after the interrupt" wait_lines 'still-alive' 1
check "settings survived the interrupt" wait_lines '  outlier_k                  3' 2
# several commands on one line, continuation lines
keys 'echo a-1 \' Enter
check "continuation prompt" wait_for '   ...> '
keys 'b-2; echo c-3' Enter
check "continued line joined, ';' splits" wait_lines 'a-1 b-2' 1
check "second command of the line" wait_lines 'c-3' 1

# Ctrl-D leaves with status 0
keys C-d
check "Ctrl-D exits" wait_status
expect_eq "$(cat "$T/status" 2>/dev/null)" 0 "Ctrl-D exit status"

# the history persists: a new session recalls the last line with Up; quit exits 0
PROMPT='qsur [W4A4 tok/ch] > '
start "$T/home"
check "second session prompt" wait_for "$PROMPT"
keys Up
check "Up recalls the previous session's last line" wait_for "${PROMPT}echo a-1  b-2; echo c-3"
keys C-u 'quit' Enter
check "quit exits" wait_status
expect_eq "$(cat "$T/status" 2>/dev/null)" 0 "quit exit status"
expect_eq "$(grep -c . "$T/home/.qsur_history")" $((11 + 3 * HAVE_MODEL)) "history file: one line per entered line"
expect_eq "$(grep -cxF 'echo again-1' "$T/home/.qsur_history")" 1 "a repeated line is kept once"

# an unwritable history file only warns, once (a directory in its place stops
# even root from writing it)
mkdir -p "$T/ro/.qsur_history"
start "$T/ro"
check "prompt without a writable HOME" wait_for "$PROMPT"
keys 'echo x-1' Enter 'echo x-2' Enter
check "commands still run" wait_lines 'x-2' 1
expect_eq "$(screen | grep -c 'cannot write history')" 1 "one warning"
keys C-d
check "exit" wait_status
expect_eq "$(cat "$T/status" 2>/dev/null)" 0 "exit status with an unwritable HOME"
finish
