# tmux helpers of the full-screen tests (test_tui.sh, test_tui_ostquant.sh): a
# private server named $SOCK with one session "qsur", screens captured into
# $T/screen. Set SOCK and T before sourcing; CAPTURE_ARGS adds capture-pane
# options (e.g. "-J -S -200" to read the scrollback too).
tm() { tmux -L "$SOCK" -f /dev/null "$@"; }
# shellcheck disable=SC2086 # CAPTURE_ARGS is a list of options
cap() { tm capture-pane -p ${CAPTURE_ARGS:-} -t qsur "$@"; }
# wait_for FIXED-STRING [SECONDS]: poll the screen until it holds the string
# (no fixed sleeps: a slow machine just takes longer).
wait_for() {
  local limit=$((${2:-10} * 20)) i=0
  while [ $i -lt $limit ]; do
    cap > "$T/screen" 2>/dev/null && grep -qF -- "$1" "$T/screen" && return 0
    sleep 0.05; i=$((i + 1))
  done
  echo "--- screen while waiting for [$1]:" >&2; grep -v '^$' "$T/screen" | tail -40 >&2
  return 1
}
# wait_gone FIXED-STRING [SECONDS]: until the string has left the screen
wait_gone() {
  local limit=$((${2:-10} * 20)) i=0
  while [ $i -lt $limit ]; do
    cap > "$T/screen" 2>/dev/null && ! grep -qF -- "$1" "$T/screen" && return 0
    sleep 0.05; i=$((i + 1))
  done
  return 1
}
keys() { tm send-keys -t qsur "$@"; }
