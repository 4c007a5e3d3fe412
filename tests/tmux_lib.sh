# tmux helpers of the full-screen tests (test_tui.sh, test_tui_ostquant.sh): a
# private server named $SOCK with one session "qsur", screens captured into
# $T/screen. Set SOCK and T before sourcing; CAPTURE_ARGS adds capture-pane
# options (e.g. "-J -S -200" to read the scrollback too).
#
# Waits poll for the state they check, never for a fixed time: a limit only
# bounds how long a failing test takes (WAIT_S seconds, default 90, so a
# machine loaded by other work just takes longer). A screen can be caught
# half-drawn (the terminal receives a frame in pieces), so checks of what a
# key changed wait for a whole frame drawn after the key: the TUI shows a
# redraw counter "frame N" in its bottom-right corner when QSUR_TUI_FRAMES is
# set, the last cells curses sends for a frame.
: "${WAIT_S:=90}"
tm() { tmux -L "$SOCK" -f /dev/null "$@"; }
# shellcheck disable=SC2086 # CAPTURE_ARGS is a list of options
cap() { tm capture-pane -p ${CAPTURE_ARGS:-} -t qsur "$@"; }
show_screen() { # why
  echo "--- screen while waiting for [$1]:" >&2; grep -v '^$' "$T/screen" | tail -40 >&2
}
# wait_for FIXED-STRING [SECONDS]: poll the screen until it holds the string
wait_for() {
  local limit=$((${2:-$WAIT_S} * 20)) i=0
  while [ $i -lt $limit ]; do
    cap > "$T/screen" 2>/dev/null && grep -qF -- "$1" "$T/screen" && return 0
    sleep 0.05; i=$((i + 1))
  done
  show_screen "$1"
  return 1
}
# wait_gone FIXED-STRING [SECONDS]: until the string has left the screen
wait_gone() {
  local limit=$((${2:-$WAIT_S} * 20)) i=0
  while [ $i -lt $limit ]; do
    cap > "$T/screen" 2>/dev/null && ! grep -qF -- "$1" "$T/screen" && return 0
    sleep 0.05; i=$((i + 1))
  done
  return 1
}
# wait_true DESCRIPTION COMMAND...: until COMMAND (reading $T/screen) succeeds
# on a fresh capture, e.g. a count of table rows that is drawn line by line
wait_true() {
  local what=$1 limit=$((WAIT_S * 20)) i=0; shift
  while [ $i -lt $limit ]; do
    cap > "$T/screen" 2>/dev/null && "$@" && return 0
    sleep 0.05; i=$((i + 1))
  done
  show_screen "$what"
  return 1
}
keys() { tm send-keys -t qsur "$@"; }
# The redraw counter on the screen now (0 when none is shown).
frame_on_screen() {
  local f; f=$(grep -o 'frame [0-9][0-9]* *$' "$T/screen" | tail -1) # -J keeps trailing blanks
  f=${f#frame }; f=${f%% *}; echo "${f:-0}"
}
# press KEY...: note the frame on the screen (the TUI is idle: every earlier
# step waited for its frame), then send the keys.
FRAME0=0
press() { cap > "$T/screen" 2>/dev/null; FRAME0=$(frame_on_screen); [ $# -eq 0 ] || keys "$@"; }
# wait_frame FIXED-STRING [SECONDS]: until a whole frame drawn after the last
# press (counter above FRAME0) is on the screen and holds the string
wait_frame() {
  local limit=$((${2:-$WAIT_S} * 20)) i=0 f
  while [ $i -lt $limit ]; do
    if cap > "$T/screen" 2>/dev/null; then
      f=$(frame_on_screen)
      [ "$f" -gt "$FRAME0" ] && grep -qF -- "$1" "$T/screen" && return 0
    fi
    sleep 0.05; i=$((i + 1))
  done
  show_screen "$1 (a frame after $FRAME0)"
  return 1
}
