#!/bin/bash
# The layers of docs/architecture.md hold: a ui/ file includes headers of its
# own folder or of a folder below it only (output < session < commands <
# repl, tui < main.c; repl and tui do not include each other), and the engine
# (src/, include/) includes no UI header, ncurses or readline.
cd "${QSUR_SOURCE:-.}" || exit 1
fails=0
rank() {
  case "$1" in
    output) echo 1 ;; session) echo 2 ;; commands) echo 3 ;; repl|tui) echo 4 ;; ui) echo 5 ;; *) echo 0 ;;
  esac
}
for f in ui/*.c ui/*/*.c ui/*/*.h; do
  [ -e "$f" ] || continue
  dir=$(basename "$(dirname "$f")")
  r=$(rank "$dir")
  for h in $(grep -o '^#include "[a-z0-9_]*\.h"' "$f" | sed 's/#include "//; s/"//'); do
    where=$(ls ui/*/"$h" 2>/dev/null | head -1)
    [ -n "$where" ] || continue # a header of the engine or of tests
    hdir=$(basename "$(dirname "$where")")
    hr=$(rank "$hdir")
    if [ "$hr" -gt "$r" ] || { [ "$hr" -eq "$r" ] && [ "$hdir" != "$dir" ]; }; then
      echo "FAIL: $f ($dir) includes $h ($hdir): points up or sideways"
      fails=$((fails + 1))
    fi
  done
done
n=$(ls ui/*.c | grep -vc '^ui/main\.c$')
[ "$n" -eq 0 ] || { echo "FAIL: ui/ holds $n source files outside the layer folders"; fails=$((fails + 1)); }
if grep -rlE '^#include (<(n?curses|readline)|"(\.\./)*ui/)' src include; then
  echo "FAIL: the engine includes UI, ncurses or readline headers (files above)"
  fails=$((fails + 1))
fi
[ "$(ls src/llama_*.c 2>/dev/null | wc -l)" -eq 0 ] || { echo "FAIL: llama_* files outside src/llama/"; fails=$((fails + 1)); }
if [ "$fails" -eq 0 ]; then echo "ok: layers hold"; else echo "$fails failure(s)"; exit 1; fi
