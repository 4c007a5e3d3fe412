/* The full-screen workbench (ncursesw): a layer list, the channel
 * distribution, QSUR and quantization error before/after the transform stack,
 * the stack itself, a command line with an output log, and a teaching view.
 *
 * Every action — keys included — runs a command line through
 * command_execute(), so the session log (and `save FILE`) records exactly what
 * was done and replays it in batch mode. */
#ifndef QSUR_UI_TUI_H
#define QSUR_UI_TUI_H

#include "qsur/error.h"

struct session;

/* Opens the screen on the controlling terminal (stdin/stdout must be ttys),
 * runs until `q`, F10 or `quit`, restores the terminal (endwin) and returns.
 * Fails with err filled when there is no terminal, TERM is unknown or a TUI
 * is already open. */
int tui_run(struct session *s, qsur_error *err);

/* 1 while a TUI runs on this session (its progress callback is installed);
 * the `tui` command refuses to nest. */
int tui_active(const struct session *s);

#endif
