/* `tui`: open the full-screen workbench on the running session (from the
 * REPL, or `qsur --tui`). Not logged: it changes nothing by itself, and the
 * commands run inside it are logged one by one. The TUI itself sits above
 * the command layer: main.c hands it over as s->open_tui. */
#include "commands.h"

int cmd_tui(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    /* Anything a report printed earlier must reach the terminal before the
     * screen takes it over. */
    if (!s->open_tui)
        return qsur_fail(err, QSUR_ERR_ARG, "no full-screen front end in this program");
    fflush(s->out);
    int rc = s->open_tui(s, err);
    if (rc == QSUR_OK)
        rep_str(r, "tui", "tui", "closed");
    return rc;
}
