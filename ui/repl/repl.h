/* The interactive prompt (GNU readline): used when qsur runs with no -f/-c and
 * standard input is a terminal.
 *
 * - prompt: repl_prompt() shows the current layer and quantizer spec;
 * - history: ~/.qsur_history ($HOME), appended after every line, kept to
 *   REPL_HISTORY_MAX entries; failing to write it only warns (once);
 * - Tab: complete.h's candidates (command names, sub-commands, `key=` options,
 *   words, workspace tensor names, file paths);
 * - errors: one line "CMD: message" on stderr (no FILE:LINE at the prompt);
 * - Ctrl-C at the prompt clears the line; during a command it stops the work
 *   at the next progress tick and the prompt comes back, session intact;
 * - Ctrl-D on an empty line or `quit` leaves.
 * A line may hold several ';'-separated commands and end in '\' to continue. */
#ifndef QSUR_UI_REPL_H
#define QSUR_UI_REPL_H

#include "session.h"

#define REPL_HISTORY_MAX 1000

/* Runs the prompt until Ctrl-D or `quit`. Returns 0 (the REPL's own exit
 * status; failed commands at a prompt are not a failure of the session).
 * Needs progress_line_install(s) to have been called. */
int repl_run(session *s);

/* The prompt for the session's state: "qsur [w2 | W4A4 tok/ch] > " (layer, then
 * W<bits>A<bits> and activation/weight granularity: tok/ch per row, t per
 * tensor, gN per group of N). Caller frees. */
char *repl_prompt(const session *s);

#endif
