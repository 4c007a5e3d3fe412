/* The one line runner: every front end (the REPL, script files and `run`,
 * `qsur -c`, stdin, the TUI's command line and keys) feeds its lines to
 * session_run_line(), as SQLite's shell feeds every source to process_input().
 * A line holds ';'-separated commands and may end in a '#' comment; how
 * errors are shown and whether the rest of the line runs after one depends on
 * where the line came from (run_mode). Output redirection lives here too. */
#ifndef QSUR_UI_RUN_LINE_H
#define QSUR_UI_RUN_LINE_H

struct session;

typedef enum {
    RUN_PROMPT, /* error: "CMD: message" on stderr; the rest of the line is skipped */
    RUN_SCRIPT, /* `set echo on` echoes "qsur> CMD"; error: "ORIGIN:LINE: message" on
                   stderr (s->origin, s->line); the line runs on unless `set errexit on` */
    RUN_CAPTURE /* (the TUI) error: "error: message" in the output; the rest is skipped */
} run_mode;

/* Runs every command of line. With captured != NULL everything the commands
 * write (their results on s->out and anything on stderr) is caught and
 * handed back in *captured (malloc'ed, NUL-terminated; caller frees), so a
 * full-screen front end can show it in a panel. Returns QSUR_OK or the code of
 * the last failed command; `quit` sets s->quit and stops the line. */
int session_run_line(struct session *s, const char *line, run_mode mode, char **captured);

#endif
