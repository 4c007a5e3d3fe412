/* The one line runner (ui/commands/run_line.c) in its three modes: which commands of a
 * ';' line run after an error, where errors go, echo, and the capture of
 * stdout results and stderr that the TUI shows in its output panel. */
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "run_line.h"
#include "session.h"

static session s;

static char *run(const char *line, run_mode mode, int *rc)
{
    char *out = NULL;
    *rc = session_run_line(&s, line, mode, &out);
    return out ? out : strdup("");
}

int main(void)
{
    session_init(&s, stdout);
    int rc;
    char *o = run("echo a; bogus; echo b # a comment; echo c", RUN_PROMPT, &rc);
    /* the prompt skips the rest of the line after an error; the message has no FILE:LINE */
    CHECK_MSG(rc == QSUR_ERR_ARG && !strcmp(o, "a\nbogus: unknown command (try `help`)\n"), "[%s]", o);
    free(o);
    s.origin = "t.qs";
    s.line = 7;
    s.set.errexit = 0;
    o = run("echo a; bogus; echo b", RUN_SCRIPT, &rc);
    /* a script runs on (errexit off) and names ORIGIN:LINE (results first:
     * the capture appends stderr after the output) */
    CHECK_MSG(rc == QSUR_ERR_ARG && !strcmp(o, "a\nb\nt.qs:7: bogus: unknown command (try `help`)\n"), "[%s]", o);
    free(o);
    o = run("set errexit on; bogus; echo b", RUN_SCRIPT, &rc);
    CHECK_MSG(rc == QSUR_ERR_ARG && !strstr(o, "b\n"), "[%s]", o);
    free(o);
    o = run("set errexit off; set echo on; echo e", RUN_SCRIPT, &rc);
    CHECK_MSG(rc == QSUR_OK && strstr(o, "qsur> echo e\ne\n"), "[%s]", o);
    free(o);
    o = run("set echo off; echo x; bogus 'q;q'; echo y", RUN_CAPTURE, &rc);
    /* the TUI: errors into the output, the rest skipped */
    CHECK_MSG(rc == QSUR_ERR_ARG && !strcmp(o, "x\nerror: bogus: unknown command (try `help`)\n"), "[%s]", o);
    free(o);
    o = run("echo 'a;b' ; quit; echo never", RUN_CAPTURE, &rc);
    CHECK_MSG(rc == QSUR_OK && s.quit == 1 && !strcmp(o, "a;b\n"), "[%s]", o);
    free(o);
    s.quit = 0;
    CHECK(s.out == stdout);
    session_free(&s);
    return check_done();
}
