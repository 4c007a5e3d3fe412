#!/usr/bin/env bash
# The ncurses TUI, driven for real in tmux: the sample layer's outlier channels
# are marked (reverse-video '!' under the right columns), the metrics panel
# shows exactly what batch `qsur`/`error` print before and after a key's
# command (b, h, u), the command line runs commands with Tab completion, the
# progress bar lets Esc stop long work, the teaching view updates QSUR, a
# resize below 80x24 shows only the too-small message and back restores the
# panels, `save` from the TUI replays in batch mode, TERM=screen/linux and
# NO_COLOR + an ASCII locale work, and quitting leaves a sane terminal.
# The TUI opens the way the README's first command does (`qsur --tui FILE`).
# Every check of what a key changed waits for a whole frame drawn after the
# key (the redraw counter of QSUR_TUI_FRAMES, see tmux_lib.sh), never for time.
set -u
. "$(dirname "$0")/lib.sh"
command -v tmux >/dev/null || { echo "tmux is missing (scripts/deps.sh installs it)" >&2; exit 1; }
T=$(mktemp -d)
SOCK=qsur-tui-$$
trap 'tmux -L "$SOCK" kill-server 2>/dev/null; rm -rf "$T"' EXIT
. "$(dirname "$0")/tmux_lib.sh"
# The value batch mode prints for LABEL (last field of the line starting with it).
value() { awk -v l="$2" 'index($0, l) == 1 || index($0, "  " l) == 1 { v = $NF } END { print v }' "$1"; }
# The metrics row for LABEL must read: LABEL BEFORE NOW.
expect_row() { # label before now message
  local got
  got=$(grep -o -- "$1 *[^ ]* *[^ ]*" "$T/screen" | head -1 | awk '{print $(NF-1), $NF}')
  expect_eq "$got" "$2 $3" "$4"
}
LABELS=("X log10 QSUR" "X QSUR^(1/d)" "W log10 QSUR" "W QSUR^(1/d)" "X MSE" "X SQNR (dB)" "W MSE" "W SQNR (dB)")
batch() { "$QSUR_BIN" -f sample_data/sample.qs -c "$1" > "$2" 2>&1; }
check_rows() { # batch-file-before batch-file-now message
  for l in "${LABELS[@]}"; do
    expect_row "$l" "$(value "$1" "$l")" "$(value "$2" "$l")" "$3: $l"
  done
  local ob on
  ob=$(value "$1" "layer output error"); on=$(value "$2" "layer output error")
  expect_row "output error" "$ob" "$on" "$3: output error"
}

# ---------------------------------------------------------------- reference
batch "outliers; qsur; error" "$T/base"
batch "quant w3a3; qsur; error" "$T/w3a3"
outliers=$("$QSUR_BIN" -f sample_data/sample.qs -c 'set format json; outliers' | tail -1 |
  grep -o '"channel":[0-9]*' | cut -d: -f2 | tr '\n' ' ' | sed 's/ $//')
expect_true "the sample layer has outlier channels" test -n "$outliers"

# ------------------------------------------------------- start in a shell pane
tm new-session -d -s qsur -x 120 -y 40 -e LANG=C.UTF-8 -e LC_ALL=C.UTF-8 -e TERM=xterm-256color \
  "env PS1='qsur-test\$ ' bash --norc --noprofile -i"
wait_for 'qsur-test$' || { fail "the shell did not start"; finish; exit 1; }
FRAME0=0
keys "cd '$PWD' && QSUR_TUI_FRAMES=1 TERM=xterm-256color '$QSUR_BIN' --tui sample_data/layer.safetensors; echo EXIT=\$?" Enter
if ! wait_frame "QSUR and quantization error"; then fail "the TUI did not open"; finish; exit 1; fi
wait_frame "output error"
expect_true "UTF-8 box drawing under a UTF-8 locale" grep -q '┌─ layers' "$T/screen"

# metrics before any transform: before = now = batch values
check_rows "$T/base" "$T/base" "initial metrics"

# ------------------------------------------------------------- outlier marks
expect_true "the outlier channels are listed as \`outliers\` finds them ($outliers)" \
  grep -qF "ch $outliers" "$T/screen"
# Marker row: '!' exactly under the columns holding outlier channels. Layout at
# 120 columns: the distribution panel starts at column 30 (cols/4), its bars at
# 30 + 1 (border) + 8 (axis labels) = 39; channel j of 256 pools into column
# j * 80 / 256 (plot.c's rule, which the REPL's plots use too).
marker=$(grep -n '!' "$T/screen" | grep -v 'help' | tail -1)
line=${marker#*:}
want=""
ncol=80; nchan=256
for j in $outliers; do
  c=$((j * ncol / nchan))
  case " $want " in *" $((39 + c)) "*) ;; *) want="$want $((39 + c))" ;; esac
done
# positions in characters (the line has multi-byte box characters; bash
# indexes characters under a UTF-8 locale)
got=$(LC_ALL=C.UTF-8 bash -c 'l=$1; for ((i = 0; i < ${#l}; i++)); do [ "${l:i:1}" = "!" ] && printf " %d" $i; done' _ "$line")
expect_eq "$got" "$want" "'!' markers sit under the outlier channels' columns"
cap -e > "$T/screen_e"
marks=$(grep -o $'\e\\[[0-9;]*7[0-9;]*m\\(\e\\[[0-9;]*m\\)*!' "$T/screen_e" | wc -l)
expect_eq "$marks" "$(echo $outliers | wc -w)" "every outlier marker is drawn in reverse video"

# --------------------------------- Right: the next channel's full statistics
# (the bars need only absmax; std and kurtosis are computed for the selected
# channel when it is selected: they must be numbers, not the placeholders)
press Right
if wait_frame "kurtosis"; then
  st=$(grep -o 'channel [0-9]*: absmax [^ ]*  std [^ ]*  kurtosis [^ ]*' "$T/screen" | head -1)
  expect_true "the selected channel's std and kurtosis are finite ($st)" \
    awk -v l="$st" 'BEGIN { n = split(l, f, " "); exit !(f[6] + 0 > 0 && f[8] != "nan" && f[8] != "-nan") }'
else
  fail "Right shows the next channel's statistics"
fi

# ------------------------------------------------ b: fewer bits via `quant`
press b
wait_frame "W: int3"
expect_true "the output shows the key's command" grep -qF "> quant w3a3" "$T/screen"
check_rows "$T/w3a3" "$T/w3a3" "after b (quant w3a3)"
press B
wait_frame "W: int4" && pass || fail "B goes back to 4 bits"
check_rows "$T/base" "$T/base" "after B (quant w4a4)"

# ------------------------------------------- h: rotate hadamard, u: undo
if "$QSUR_BIN" -f sample_data/sample.qs -c 'rotate hadamard; qsur; error' > "$T/had" 2>&1; then
  press h
  wait_frame "stack 1"
  expect_true "the output shows the key's command" grep -qF "> rotate hadamard" "$T/screen"
  # the stack panel lists the steps from the layer's stack, current marked
  grep -qF "> 1. rotate hadamard" "$T/screen" && pass || fail "stack panel shows step 1 as current"
  check_rows "$T/base" "$T/had" "after h (rotate hadamard)"
  q0=$(value "$T/base" "X log10 QSUR"); q1=$(value "$T/had" "X log10 QSUR")
  e0=$(value "$T/base" "layer output error"); e1=$(value "$T/had" "layer output error")
  expect_true "hadamard raises X QSUR ($q0 -> $q1)" awk -v a="$q0" -v b="$q1" 'BEGIN { exit !(b > a) }'
  expect_true "hadamard lowers the output error ($e0 -> $e1)" awk -v a="$e0" -v b="$e1" 'BEGIN { exit !(b < a) }'
  press u
  wait_frame "stack 0"
  grep -qF "  1. rotate hadamard" "$T/screen" && pass || fail "stack panel marks the undone step"
  check_rows "$T/base" "$T/base" "after u (undo)"
else
  echo "SKIP: h/u (batch \`rotate hadamard\` fails: $(head -1 "$T/had"))" >&2
fi

# ------------------------------------------- the help screen and the F-key bar (one key table)
wait_for "F5Undo" 2 && pass || fail "the function-key bar labels F5 from the key table"
keys F1
wait_for "u F5        undo" 3 && pass || fail "F1 shows the help screen from the key table"
wait_for "h           rotate hadamard" 1 && pass || fail "the help lists the letter keys"
keys x
wait_gone "Any key closes this help." 3 && pass || fail "any key closes the help"

# ------------------------------------------------------------ command line
press :
wait_frame ":"
press q s u r Enter
wait_frame "ok: qsur"
qline=$(grep '^  X log10 QSUR' "$T/base" | head -1 | sed 's/ *$//')
expect_true "the command line runs qsur: [${qline}] in the output" grep -qF "${qline#  }" "$T/screen"
# (capture-pane trims trailing blanks: type on after Tab to see the space)
press : h e l Tab q s Tab e
wait_frame ":help qsur e" && pass || fail "Tab completes hel to help and qs to qsur (with the spaces)"
press C-u h e l p Enter
wait_frame "help NAME shows a command's usage and details." && pass || fail "the command line runs help"
press : b o g u s Enter
wait_frame "error: bogus: unknown command" && pass || fail "errors of the command line are shown"
# the output log scrolls by pages (its own state) and comes back to the bottom
press PPage
wait_frame "output (scrolled" && pass || fail "PgUp scrolls the output log"
press NPage
wait_frame "error: bogus: unknown command" && ! grep -qF "output (scrolled" "$T/screen" && pass ||
  fail "PgDn scrolls the output log back to its last lines"
# history: Up recalls the previous line
press : Up
wait_frame ":bogus" && pass || fail "Up recalls the last command"
press Escape
wait_gone ":bogus"

# ------------------------------------------- long work: progress bar and Esc
press : s l e e p ' ' 3 0 Enter
wait_for "Esc: stop" && pass || fail "a progress bar shows while a long command runs"
press Escape
wait_frame "interrupted: sleep 30" && pass || fail "Esc stops the long command"

# ------------------------------------------------------------ teaching view
d0=$("$QSUR_BIN" -c 'demo' | awk '/QSUR = area/ {print $NF}')
d1=$("$QSUR_BIN" -c 'demo; demo rotate 5' | awk '/QSUR = area/ {print $NF}')
press t
wait_frame "QSUR        $d0" && pass || fail "teaching view shows the demo's QSUR $d0"
press Left
wait_frame "QSUR        $d1" && pass || fail "Left rotates by 5 degrees: QSUR $d1 as \`demo rotate 5\`"
press t
wait_frame "QSUR and quantization error"

# ------------------------------------------------------------------ resize
press # only notes the frame: the resize is the key
tm resize-window -t qsur -x 60 -y 20
wait_frame "terminal too small (need 80x24)"
msg_line=$(grep -F "terminal too small" "$T/screen")
expect_eq "$msg_line" "$(printf '%*s%s' 14 '' 'terminal too small (need 80x24)')" "too-small message centred"
expect_eq "$(grep -c '[┌│]' "$T/screen")" 0 "no panels while too small"
press
tm resize-window -t qsur -x 120 -y 40
wait_frame "QSUR and quantization error" && pass || fail "panels come back at 120x40"

# ------------------------------------------------------ save replays in batch
press b
wait_frame "W: int3"
press : "save $T/saved.qs" Enter
wait_frame "ok: save"
expect_true "save wrote the script" test -s "$T/saved.qs"
"$QSUR_BIN" -f "$T/saved.qs" -c 'qsur; error' > "$T/replay" 2>&1
expect_eq "$(value "$T/replay" "layer output error")" "$(value "$T/w3a3" "layer output error")" \
  "the saved script replays to the numbers the TUI showed"
expect_true "the log holds the key's command" grep -q '^quant w3a3$' "$T/saved.qs"

# -------------------------------------------------------------------- quit
keys q
wait_for "EXIT=0" && pass || fail "q leaves with exit status 0"
wait_gone "QSUR and quantization error" && pass || fail "the screen is restored after quitting"
keys "stty -a | tr ' ;' '\\n\\n' | grep -x -e echo -e icanon -e -echo -e -icanon | sort | tr '\\n' ,; echo" Enter
wait_for "echo,icanon," && pass || fail "the terminal is back in cooked mode with echo (stty)"

# ------------------------------------------ other terminals, ASCII, NO_COLOR
for term in screen linux; do
  keys clear Enter
  FRAME0=0
  keys "TERM=$term NO_COLOR=1 LC_ALL=C LANG=C QSUR_TUI_FRAMES=1 '$QSUR_BIN' --tui -f sample_data/sample.qs; echo EXIT=\$?" Enter
  if wait_frame "+- layers"; then
    pass
    # a whole frame is on the screen: its marker row too
    expect_true "ASCII marker row under TERM=$term" grep -qE '^\|.*\|\| +!' "$T/screen"
    cap -e > "$T/screen_e"
    if grep -q $'\e\\[[0-9;]*3[0-7]m' "$T/screen_e"; then fail "NO_COLOR: colour codes on the screen ($term)"; else pass; fi
  else
    fail "TERM=$term with an ASCII locale did not draw ASCII boxes"
  fi
  keys F10
  wait_for "EXIT=0" && pass || fail "F10 quits under TERM=$term"
done

# ------------------------------------------------ the `tui` command in the REPL
keys clear Enter
keys "HOME='$T' QSUR_TUI_FRAMES=1 '$QSUR_BIN'; echo EXIT=\$?" Enter
wait_for "qsur ["
keys "run sample_data/sample.qs" Enter
wait_for "layer output error"
FRAME0=0
keys "tui" Enter
wait_frame "QSUR and quantization error" && pass || fail "\`tui\` at the prompt opens the TUI on the session"
keys q
wait_for "tui                        closed" && pass || fail "q returns to the REPL"
keys "echo back at the prompt" Enter
wait_for "back at the prompt" && pass || fail "the REPL reads commands again after the TUI"
keys "quit" Enter
wait_for "EXIT=0" && pass || fail "the REPL exits cleanly after using the TUI"

finish
