#!/usr/bin/env bash
# `cmake --install` puts the program and its manual page under the prefix
# (into a staging DESTDIR here); the installed program runs, and the page
# renders without warnings (groff -ww; `man -l` when man is installed) and
# documents every option `qsur --help` lists.
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
BUILD=$(dirname "$QSUR_BIN")
DESTDIR="$T/stage" cmake --install "$BUILD" --prefix /usr/local > "$T/log" 2>&1; rc=$?
expect_eq "$rc" 0 "cmake --install into a DESTDIR ($(tail -2 "$T/log"))"
BIN="$T/stage/usr/local/bin/qsur"
MAN="$T/stage/usr/local/share/man/man1/qsur.1"
expect_true "the binary is installed" test -x "$BIN"
expect_true "the manual page is installed" test -s "$MAN"
expect_eq "$("$BIN" --version 2>&1)" "$("$QSUR_BIN" --version)" "the installed binary runs"
if command -v groff > /dev/null; then
  groff -man -Tutf8 -ww -z "$MAN" > "$T/gw" 2>&1
  expect_eq "$(cat "$T/gw")" "" "groff renders the page without warnings"
  groff -man -Tascii "$MAN" 2> /dev/null | col -b > "$T/page" 2> /dev/null ||
    groff -man -Tascii "$MAN" 2> /dev/null | sed 's/.\x08//g' > "$T/page"
  expect_true "the rendered page has its sections" grep -q "^SYNOPSIS" "$T/page"
  # every option of the usage text is documented
  for o in $("$QSUR_BIN" --help | grep -oE '^ +-[-a-z]+' | tr -d ' '); do
    expect_true "the page documents $o" grep -qF -- "$o" "$T/page"
  done
else
  echo "SKIP: groff is not installed: the page is not rendered" >&2
fi
if command -v man > /dev/null; then
  MANWIDTH=80 man -l "$MAN" > "$T/man" 2> "$T/manerr"
  expect_true "man -l renders the page" grep -q "qsur" "$T/man"
fi
finish
