#!/usr/bin/env bash
# docs/commands.md must be exactly what the command table generates.
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
"$QSUR_BIN" --commands-md > "$T/commands.md"
if diff -u docs/commands.md "$T/commands.md" > "$T/diff"; then pass; else
  fail "docs/commands.md drifted from the command table; regenerate with: ./build/qsur --commands-md > docs/commands.md"; head -40 "$T/diff" >&2; fi
# every command in the table has a section
for c in $(grep -o '^## [a-z_]*' "$T/commands.md" | cut -c4-); do
  grep -q "^## $c\$" docs/commands.md && pass || fail "docs/commands.md lacks $c"
done
finish
