#!/usr/bin/env bash
# Batch mode: qsur -f / -c / stdin, exit codes, FILE:LINE messages, errexit,
# comments, continuation lines, JSON output, unknown commands and arity.
set -u
. "$(dirname "$0")/lib.sh"
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

# -c with ';' and comments
out=$("$QSUR_BIN" -c 'echo one; echo two # a comment')
expect_eq "$out" $'one\ntwo' "-c runs ;-separated commands and drops comments"

# a script with continuation lines and a failing command on line 4
cat > "$T/s.qs" <<'QS'
# comment line
echo first \
  continued
bogus_command arg
echo never
QS
out=$("$QSUR_BIN" -f "$T/s.qs" 2>"$T/err"); rc=$?
expect_eq "$rc" 1 "script error exits 1"
expect_eq "$out" "first continued" "continuation joins lines; errexit stops before 'never'"
expect_grep "$T/s.qs:4: bogus_command: unknown command" "$T/err" "error names FILE:LINE and command"

# errexit off keeps going but still exits non-zero
printf 'set errexit off\nbogus\necho after\n' > "$T/s2.qs"
out=$("$QSUR_BIN" -f "$T/s2.qs" 2>"$T/err"); rc=$?
expect_eq "$out" "after" "errexit off continues after an error"
expect_eq "$rc" 1 "errexit off still reports failure"
expect_grep "s2.qs:2: bogus: unknown command" "$T/err" "line number with errexit off"

# stdin when not a tty
out=$(printf 'echo from stdin\n' | "$QSUR_BIN"); rc=$?
expect_eq "$out" "from stdin" "stdin is read as a script"
expect_eq "$rc" 0 "stdin success exits 0"
printf 'echo a\nset format nope\n' | "$QSUR_BIN" >/dev/null 2>"$T/err"; rc=$?
expect_eq "$rc" 1 "stdin error exits 1"
expect_grep "<stdin>:2: set: format: expected human or json, got 'nope'" "$T/err" "stdin errors name <stdin>:LINE"

# arity is checked before the handler runs
"$QSUR_BIN" -c 'run' >/dev/null 2>"$T/err"; rc=$?
expect_eq "$rc" 1 "missing argument fails"
expect_grep "run: expected 1 argument, got 0 (usage: run FILE)" "$T/err" "arity message shows usage"

# quoting and unterminated quotes
out=$("$QSUR_BIN" -c "echo 'a b'  \"c;d\"")
expect_eq "$out" "a b c;d" "quotes keep spaces and ';'"
"$QSUR_BIN" -c "echo 'oops" >/dev/null 2>"$T/err"; rc=$?
expect_eq "$rc" 1 "unterminated quote fails"
expect_grep "unterminated ' quote" "$T/err" "unterminated quote message"

# run nests scripts; a missing file is a clear error
printf 'echo inner\n' > "$T/inner.qs"
out=$("$QSUR_BIN" -c "run $T/inner.qs; echo outer")
expect_eq "$out" $'inner\nouter' "run executes a nested script"
"$QSUR_BIN" -c "run $T/missing.qs" >/dev/null 2>"$T/err"; rc=$?
expect_eq "$rc" 1 "run of a missing file fails"
expect_grep "missing.qs: cannot open" "$T/err" "missing script named"
printf 'run %s\n' "$T/self.qs" > "$T/self.qs"
"$QSUR_BIN" -f "$T/self.qs" >/dev/null 2>"$T/err"; rc=$?
expect_eq "$rc" 1 "a script that runs itself stops"
expect_grep "nested more than 16 deep" "$T/err" "recursion guard message"

# JSON: exactly one object per command, errors included
out=$("$QSUR_BIN" --json -c 'echo hi; set outlier_k 5; set' 2>/dev/null)
expect_eq "$(printf '%s\n' "$out" | wc -l)" 3 "one JSON line per command"
expect_eq "$(printf '%s\n' "$out" | sed -n 1p)" '{"command":"echo","ok":true,"text":["hi"]}' "echo as JSON"
printf '%s\n' "$out" | sed -n 3p | grep -q '"outlier_k":5' ; expect_eq $? 0 "set lists the changed value in JSON"
out=$("$QSUR_BIN" --json -c 'set bins -3' 2>/dev/null)
expect_eq "$out" '{"command":"set","ok":false,"error":"set: bins: expected a whole number in 0..10000, got '"'"'-3'"'"'"}' "errors are JSON too"

# help exists for every command in the table
for c in $("$QSUR_BIN" --json -c help | grep -o '"command":"[a-z_]*","summary"' | sed 's/"command":"\([a-z_]*\)".*/\1/'); do
  "$QSUR_BIN" -c "help $c" > "$T/help" 2>&1 || fail "help $c failed"
  grep -q "usage" "$T/help" || fail "help $c has no usage"
done

# save/history: the log holds state-changing commands only
"$QSUR_BIN" -c "set outlier_k 4; echo x; set bins 12; save $T/saved.qs" >/dev/null
expect_eq "$(grep -v '^#' "$T/saved.qs")" $'set outlier_k 4\nset bins 12' "save writes the logged commands"
# options: a missing argument and an unknown option are usage errors (exit 2)
"$QSUR_BIN" -f >/dev/null 2>"$T/err"; rc=$?
expect_eq "$rc" 2 "-f without a file"
expect_grep "qsur: -f needs an argument (a script FILE)" "$T/err" "-f message"
"$QSUR_BIN" --bogus >/dev/null 2>"$T/err"; rc=$?
expect_eq "$rc" 2 "unknown option"
expect_grep "qsur: unknown option '--bogus'" "$T/err" "unknown option message"
# command options: a known KEY= with a bad value is named as such, not as unknown
# (and "seqs=" must not be taken for the key inside "max_seqs=")
"$QSUR_BIN" -f sample_data/sample.qs -c "gptq damp=2" >/dev/null 2>"$T/err"
expect_grep "gptq: bad value in 'damp=2' (act, static-groups, damp=P)" "$T/err" "bad option value"
"$QSUR_BIN" -f sample_data/sample.qs -c "gptq act2" >/dev/null 2>"$T/err"
expect_grep "gptq: unknown option 'act2' (act, static-groups, damp=P)" "$T/err" "unknown command option"
"$QSUR_BIN" -c "model load $QSUR_SHARED/data/stories260K.bin; calib x max_seqs=3" >/dev/null 2>"$T/err"
expect_grep "calib: unknown option 'max_seqs=3'" "$T/err" "a key inside another is not that key"
"$QSUR_BIN" -c "model load $QSUR_SHARED/data/stories260K.bin; ostquant model qsur-every=-1" >/dev/null 2>"$T/err"
expect_grep "ostquant: bad value in 'qsur-every=-1'" "$T/err" "ostquant option value"

# display settings are not part of a replay
"$QSUR_BIN" -c "set format json; set color off; set bins 7; save $T/saved2.qs" >/dev/null
expect_eq "$(grep -v '^#' "$T/saved2.qs")" 'set bins 7' "format/color are not logged"
finish
