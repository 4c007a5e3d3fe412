/* qsur: command-line entry point. Decides which front end runs the session:
 * a script (-f), a command string (-c), standard input when it is not a
 * terminal, the REPL on a terminal, and the TUI with --tui. */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "command.h"
#include "command_doc.h"
#include "progress_line.h"
#include "repl.h"
#include "script.h"
#include "session.h"
#include "tui.h"

static void usage(FILE *fp)
{
    fputs("usage: qsur [-f SCRIPT]... [-c 'CMD; CMD']... [--tui] [--json]\n"
          "  -f FILE   run the commands in FILE (errors: FILE:LINE: message)\n"
          "  -c CMDS   run the ';'-separated commands\n"
          "  --json    machine-readable output: one JSON object per command\n"
          "  --tui     open the full-screen workbench after the scripts\n"
          "  --commands-md  print the command reference (docs/commands.md)\n"
          "With no -f/-c: reads commands from standard input, or opens the\n"
          "interactive prompt when standard input is a terminal.\n"
          "Exit status: 0 on success, 1 when a command failed.\n", fp);
}

int main(int argc, char **argv)
{
    setlocale(LC_ALL, "");
    session s;
    session_init(&s, stdout);
    s.open_tui = tui_run;
    progress_line_install(&s);
    const char *codeset = setlocale(LC_CTYPE, NULL);
    s.set.utf8 = codeset && (strstr(codeset, "UTF-8") || strstr(codeset, "utf8"));
    s.set.color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");

    int ran_script = 0, rc = 0, want_tui = 0;
    for (int i = 1; i < argc && rc == 0 && !s.quit; i++) {
        if ((!strcmp(argv[i], "-f") || !strcmp(argv[i], "-c")) && i + 1 < argc) {
            ran_script = 1;
            if (argv[i][1] == 'f') {
                qsur_error err;
                if (script_run_file(&s, argv[++i], &err) != QSUR_OK) {
                    if (strstr(err.msg, "stopped at an error") == NULL)
                        fprintf(stderr, "qsur: %s\n", err.msg);
                    rc = 1;
                }
            } else {
                rc = script_run_string(&s, argv[++i], "-c") != QSUR_OK;
            }
        } else if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "-c")) {
            fprintf(stderr, "qsur: %s needs an argument (%s)\n", argv[i],
                    argv[i][1] == 'f' ? "a script FILE" : "'CMD; CMD'");
            session_free(&s);
            return 2;
        } else if (!strcmp(argv[i], "--json")) {
            s.set.format = FORMAT_JSON;
        } else if (!strcmp(argv[i], "--tui")) {
            want_tui = 1;
        } else if (!strcmp(argv[i], "--commands-md")) {
            command_doc_markdown(stdout);
            session_free(&s);
            return 0;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            session_free(&s);
            return 0;
        } else {
            fprintf(stderr, "qsur: unknown option '%s'\n", argv[i]);
            usage(stderr);
            session_free(&s);
            return 2;
        }
    }
    if (want_tui && rc == 0 && !s.quit) {
        /* The scripts ran first (their output is already on the terminal);
         * the TUI then opens on the session they built. */
        qsur_error err;
        fflush(stdout);
        if (tui_run(&s, &err) != QSUR_OK) {
            fprintf(stderr, "qsur: --tui: %s\n", err.msg);
            rc = 1;
        }
    } else if (!ran_script && rc == 0) {
        if (isatty(STDIN_FILENO))
            rc = repl_run(&s);
        else
            rc = script_run_stream(&s, stdin, "<stdin>") != QSUR_OK;
    }
    session_free(&s);
    return rc;
}
