#!/usr/bin/env bash
# Live QSUR of `ostquant model` on a real terminal (tmux), checked against a
# batch run with the same seed:
#  - REPL: one line per measurement (start point, every qsur-every steps, the
#    last step) with the step's KL-Top and the mean log10 QSUR the batch
#    history reports for that step;
#  - TUI: while training runs, the live panel shows the loss and the table of
#    every transformed layer (X and W blocks, 5 layers, wo/w2 weights
#    singular) whose L0 qkv cell and summary are the batch run's step-0
#    numbers; Esc stops training and, with keep-partial=1, keeps the best
#    transforms (status "ok"),
#    the panels come back and `ostquant status` prints the per-layer table.
set -u
. "$(dirname "$0")/lib.sh"
command -v tmux >/dev/null || { echo "tmux is missing (scripts/deps.sh installs it)" >&2; exit 1; }
: "${QSUR_SHARED:=../shared}"
D=$(cd "$QSUR_SHARED/data" && pwd)
M="$D/stories260K.bin"; C="$D/stories260K.calib.u16"
T=$(mktemp -d)
SOCK=qsur-ostq-$$
# The REPL and the TUI get a tmux server each: killing the first one's only
# session makes that server exit, and a new session started on the same
# socket meanwhile fails ("server exited unexpectedly").
SOCK_REPL=qsur-ostq-repl-$$; SOCK_TUI=qsur-ostq-tui-$$
trap 'tmux -L "$SOCK_REPL" kill-server 2>/dev/null; tmux -L "$SOCK_TUI" kill-server 2>/dev/null; rm -rf "$T"' EXIT
SOCK=$SOCK_REPL
export OPENBLAS_NUM_THREADS=1
CAPTURE_ARGS="-J -S -200"
. "$(dirname "$0")/tmux_lib.sh"
PRE="model load $M; calib $C seqs=2; quant w4a4kv4"
RUN="ostquant model steps=3 seq-len=64 qsur-every=2 seed=1"

# ---------------------------------------------------------------- reference
"$QSUR_BIN" -c "set format json; $PRE; $RUN; ostquant status" > "$T/ref.json" 2>&1
ST=$(grep '"command":"ostquant"' "$T/ref.json" | tail -1)
hist() { echo "$ST" | grep -o "{\"step\":$1,[^}]*" | grep -o "\"$2\":[^,}]*" | cut -d: -f2; }
mean0=$(printf '%.2f' "$(hist 0 x_log10_mean)"); mean2=$(printf '%.2f' "$(hist 2 x_log10_mean)")
mean3=$(printf '%.2f' "$(hist 3 x_log10_mean)"); pd0=$(printf '%.4f' "$(hist 0 x_qsur_d_mean)")
q0=$(printf '%.2f' "$(echo "$ST" | grep -o '{"layer":0,"input":"attention.in"[^}]*' | grep -o '"x_log10_start":[^,]*' | cut -d: -f2)")
expect_true "the batch reference has steps 0, 2 and 3 ($mean0 $mean2 $mean3)" test -n "$(hist 3 x_log10_mean)"

# -------------------------------------------------------------------- REPL
tm new-session -d -s qsur -x 200 -y 50 -e LANG=C.UTF-8 -e LC_ALL=C.UTF-8 -e TERM=xterm-256color \
  "cd '$T' && env HOME='$T' OPENBLAS_NUM_THREADS=1 '$QSUR_BIN'; echo EXIT=\$?; sleep 60"
wait_for "qsur [" || { fail "the REPL did not start"; finish; exit 1; }
keys "$PRE; $RUN" Enter
# the command is over when a second, empty prompt is the last line (the first
# one holds the typed command; right after Enter it may still look empty)
prompt_back() {
  [ "$(grep -c '^qsur \[' "$T/screen")" -ge 2 ] && grep -v '^ *$' "$T/screen" | tail -1 | grep -q '^qsur \[.*\] > *$'
}
wait_true "the prompt after the run" prompt_back
expect_true "the REPL prints the last step's QSUR line" grep -qF "ostq 3/3 " "$T/screen"
expect_true "start line: mean log10 QSUR $mean0 as the batch history" \
  grep -qF "ostq 0/3 start | X log10 QSUR mean $mean0, ^(1/d) mean $pd0" "$T/screen"
expect_true "step 2 line with its KL-Top and mean $mean2" grep -qE "^ostq 2/3 kl [0-9.]+ \| X log10 QSUR mean $mean2," "$T/screen"
expect_true "step 3 line with mean $mean3" grep -qF "X log10 QSUR mean $mean3," "$T/screen"
expect_eq "$(grep -c '^ostq [0-9]/3 ' "$T/screen")" 3 "one line per measurement (steps 0, 2, 3), none for step 1"
expect_true "the line names the worst layer" grep -qE '^ostq 3/3 .* min [0-9.]+ \(L[0-9] [a-z]+\) \| W \^\(1/d\) mean' "$T/screen"
keys "quit" Enter
wait_for "EXIT=0" && pass || fail "the REPL quits"
SOCK=$SOCK_TUI

# --------------------------------------------------------------------- TUI
tm new-session -d -s qsur -x 120 -y 40 -e LANG=C.UTF-8 -e LC_ALL=C.UTF-8 -e TERM=xterm-256color \
  "cd '$T' && env HOME='$T' OPENBLAS_NUM_THREADS=1 QSUR_TUI_FRAMES=1 '$QSUR_BIN' --tui -c '$PRE'; echo EXIT=\$?; sleep 60"
wait_frame "layers (" || { fail "the TUI did not open"; finish; exit 1; }
# a long run whose only measurement is step 0: the table stays at the start point
press : "ostquant model steps=100000 seq-len=64 qsur-every=100000 seed=1 keep-partial=1" Enter
wait_for "OSTQuant live: step" && pass || fail "the live panel opens while training runs"
wait_for "kl " && pass || fail "the live panel shows the loss"
# the progress callback redraws the panel while training runs: wait until the
# whole table is on the screen (the terminal may get a redraw in pieces)
rows_drawn() {
  grep -qF "X log10 mean $mean0  ^(1/d) mean $pd0" "$T/screen" || return 1
  for l in 0 1 2 3 4; do [ "$(grep -c "│L$l  " "$T/screen")" -eq 2 ] || return 1; done
  [ "$(grep -o 'sing\.' "$T/screen" | wc -l)" -eq 10 ]
}
wait_true "the whole live table" rows_drawn
expect_true "the live table is the step-0 measurement" grep -qF "QSUR of every transformed layer, step 0: log10 ^(1/d)" "$T/screen"
for l in 0 1 2 3 4; do
  expect_eq "$(grep -c "│L$l  " "$T/screen")" 2 "layer $l has an X row and a W row"
done
cell=$(grep -o '│L0 .*' "$T/screen" | head -1 | awk '{print $2}')
expect_eq "$cell" "$q0" "X L0 qkv log10 QSUR == the batch run's step-0 value"
expect_true "X summary == the batch history at step 0" \
  grep -qF "X log10 mean $mean0  ^(1/d) mean $pd0" "$T/screen"
expect_eq "$(grep -o 'sing\.' "$T/screen" | wc -l)" 10 "wo and w2 weights are singular in every layer (n <= d)"
expect_true "the columns are the four sites" grep -qE 'X +qkv +o +up +down' "$T/screen"
press Escape
wait_frame "ok: ostquant model" && pass || fail "Esc stops training and keep-partial=1 keeps the best transforms"
expect_true "the panels come back after the run" bash -c "! grep -qF 'OSTQuant live' '$T/screen'"
expect_true "no capture warning after Esc" bash -c "! grep -qF 'interrupted during capture' '$T/screen'"
press : "ostquant status" Enter
wait_frame "feed_forward.w2.in" && pass || fail "ostquant status prints the per-layer table"
keys q
wait_for "EXIT=0" && pass || fail "q leaves the TUI"
finish
