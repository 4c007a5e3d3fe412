/* The interactive prompt (GNU readline): used when qsur runs with no -f/-c and
 * standard input is a terminal.
 *
 * - prompt: repl_prompt() shows the current layer and quantizer spec;
 * - history: ~/.qsur_history ($HOME), appended after every line, kept to
 *   REPL_HISTORY_MAX entries; failing to write it only warns (once);
 * - Tab: command names, then per the command's `complete` kind: its words,
 *   workspace tensor names, file paths, or command names (help);
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

/* Completion candidates for the command line `line` when the word being
 * completed starts at byte `start` and reads `text` (what Tab would offer, minus
 * file paths: for a COMPLETE_FILE argument *want_files is set to 1 and NULL is
 * returned). Returns a NULL-terminated array of strdup'ed candidates, sorted,
 * or NULL for none; free with repl_candidates_free. Exposed for tests. */
char **repl_candidates(const session *s, const char *line, int start, const char *text,
                       int *want_files);
void repl_candidates_free(char **c);

#endif
