/* Script files and command strings: comments (#), line continuation (\ at the
 * end of a line), several commands per line separated by ';', and
 * `set errexit on|off`. Errors are reported as FILE:LINE: message. */
#ifndef QSUR_UI_SCRIPT_H
#define QSUR_UI_SCRIPT_H

#include <stdio.h>
#include "qsur/error.h"

struct session;

/* Runs every command from fp; origin names it in messages ("script.qs",
 * "<stdin>", "-c"). Errors are printed to stderr as ORIGIN:LINE: message.
 * Returns QSUR_OK, or the first error's code when errexit is on (it stops
 * there); with errexit off it runs on and returns the last error's code. */
int script_run_stream(struct session *s, FILE *fp, const char *origin);
int script_run_file(struct session *s, const char *path, qsur_error *err);
int script_run_string(struct session *s, const char *text, const char *origin);

/* Reads one logical line into *buf (grown as needed; *cap its size), joining
 * lines that end in a backslash. Returns the number of physical lines
 * consumed, 0 at end of file. */
int script_read_line(FILE *fp, char **buf, size_t *cap);

/* Splits one logical line at ';' outside quotes and strips a '#' comment;
 * calls fn for each non-empty piece. Returns the first non-zero fn result. */
int script_split_line(const char *line, int (*fn)(void *ctx, const char *cmd), void *ctx);

#endif
