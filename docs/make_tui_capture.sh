#!/usr/bin/env bash
# Regenerates the screen pictures in docs/tui.md from the real binary:
# runs `qsur --tui -f sample_data/sample.qs` in a private tmux server at
# 120x40 (UTF-8 locale), presses the keys of each picture, and puts the
# `tmux capture-pane -p` text between the <!-- capture:NAME --> markers.
# Usage: docs/make_tui_capture.sh [QSUR_BIN]   (default: build/qsur)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-${QSUR_BIN:-build/qsur}}")
SOCK=qsur-doc-$$
T=$(mktemp -d)
trap 'tmux -L "$SOCK" kill-server 2>/dev/null || true; rm -rf "$T"' EXIT

# capture NAME KEYS...: a fresh TUI, the keys (each followed by a pause), the screen.
capture() {
  local name=$1; shift
  tmux -L "$SOCK" kill-server 2>/dev/null || true
  tmux -L "$SOCK" new-session -d -s doc -x 120 -y 40 -e LANG=C.UTF-8 -e LC_ALL=C.UTF-8 \
    -e TERM=xterm-256color "cd '$PWD' && '$BIN' --tui -f sample_data/sample.qs; sleep 5"
  for i in $(seq 100); do
    tmux -L "$SOCK" capture-pane -p -t doc | grep -q "output error" && break
    sleep 0.1
  done
  for k in "$@"; do
    tmux -L "$SOCK" send-keys -t doc "$k"
    sleep 0.7
  done
  tmux -L "$SOCK" capture-pane -p -t doc | sed 's/[[:space:]]*$//' > "$T/$name"
}

capture main
# After the Hadamard rotation when the build has it (else the plain screen again).
if "$BIN" -f sample_data/sample.qs -c 'rotate hadamard' >/dev/null 2>&1; then
  capture rotated h
else
  cp "$T/main" "$T/rotated"
fi
capture demo t Left Left

# Replace each marked block of docs/tui.md.
out=$T/tui.md
awk -v dir="$T" '
  /^<!-- capture:[a-z]+ -->$/ { name = $0; sub(/^<!-- capture:/, "", name); sub(/ -->$/, "", name)
    print; print "```"; while ((getline line < (dir "/" name)) > 0) print line; print "```"; skip = 1; next }
  /^<!-- capture:end -->$/ { skip = 0 }
  !skip { print }' docs/tui.md > "$out"
mv "$out" docs/tui.md
echo "docs/tui.md: pictures regenerated"
