/* `tui`: open the full-screen workbench on the running session (from the
 * REPL, or `qsur --tui`). Not logged: it changes nothing by itself, and the
 * commands run inside it are logged one by one. */
#include "commands.h"
#include "tui.h"

int cmd_tui(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    /* Anything a report printed earlier must reach the terminal before the
     * screen takes it over. */
    fflush(s->out);
    int rc = tui_run(s, err);
    if (rc == QSUR_OK)
        rep_str(r, "tui", "tui", "closed");
    return rc;
}
