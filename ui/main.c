/* qsur: command-line entry point. Opens the paths given (a model, a layer
 * file), runs scripts (-f) and command strings (-c) in the order given, then
 * decides which front end runs the session: standard input when it is not a
 * terminal, the REPL on a terminal, and the TUI with --tui. */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "command.h"
#include "command_doc.h"
#include "open_path.h"
#include "progress_line.h"
#include "repl.h"
#include "script.h"
#include "session.h"
#include "tui.h"

static void usage(FILE *fp)
{
    fputs("usage: qsur [-f SCRIPT]... [-c 'CMD; CMD']... [--tui] [--json] [FILE|DIR]...\n"
          "  FILE|DIR  a model (llama2.c file, Hugging Face directory): `model load`;\n"
          "            a layer file (.npy, .safetensors): `load`, and `use` when it\n"
          "            holds one tensor or a weight/activation pair; a .qs script: run\n"
          "  -f FILE   run the commands in FILE (errors: FILE:LINE: message)\n"
          "  -c CMDS   run the ';'-separated commands\n"
          "  --json    machine-readable output: one JSON object per command\n"
          "  --tui     open the full-screen workbench after the paths and scripts\n"
          "  --commands-md  print the command reference (docs/commands.md)\n"
          "  --version print the version\n"
          "Paths, -f and -c run in the order given. With no -f/-c: reads commands\n"
          "from standard input, or opens the interactive prompt when standard\n"
          "input is a terminal.\n"
          "Exit status: 0 on success, 1 when a command failed, 2 on a usage error.\n", fp);
}

/* Options that end the program at once (--help, --version, --commands-md) or
 * a usage error: checked before any path or script runs, so a typo does not
 * surface only after a model has loaded. Returns -1 to go on, else the exit
 * status. */
static int early_options(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--"))
            break;
        if (a[0] != '-' || !strcmp(a, "--json") || !strcmp(a, "--tui"))
            continue;
        if (!strcmp(a, "-f") || !strcmp(a, "-c")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "qsur: %s needs an argument (%s)\n", a,
                        a[1] == 'f' ? "a script FILE" : "'CMD; CMD'");
                return 2;
            }
            i++;
        } else if (!strcmp(a, "--version")) {
            printf("qsur %s\n", QSUR_VERSION);
            return 0;
        } else if (!strcmp(a, "--commands-md")) {
            command_doc_markdown(stdout);
            return 0;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "qsur: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    return -1;
}

/* Prints a failed path's or script's message (a script already printed its
 * FILE:LINE errors). */
static void report_failure(const qsur_error *err)
{
    if (strstr(err->msg, "stopped at an error") == NULL)
        fprintf(stderr, "qsur: %s\n", err->msg);
}

int main(int argc, char **argv)
{
    int early = early_options(argc, argv);
    if (early >= 0)
        return early;
    setlocale(LC_ALL, "");
    session s;
    session_init(&s, stdout);
    s.open_tui = tui_run;
    progress_line_install(&s);
    const char *codeset = setlocale(LC_CTYPE, NULL);
    s.set.utf8 = codeset && (strstr(codeset, "UTF-8") || strstr(codeset, "utf8"));
    s.set.color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");

    int ran_script = 0, rc = 0, want_tui = 0, paths_only = 0;
    for (int i = 1; i < argc && rc == 0 && !s.quit; i++) {
        qsur_error err;
        const char *a = argv[i];
        if (paths_only || a[0] != '-') {
            if (session_open_path(&s, a, &err) != QSUR_OK) {
                report_failure(&err);
                rc = 1;
            }
        } else if (!strcmp(a, "--")) {
            paths_only = 1;
        } else if (!strcmp(a, "-f")) {
            ran_script = 1;
            if (script_run_file(&s, argv[++i], &err) != QSUR_OK) {
                report_failure(&err);
                rc = 1;
            }
        } else if (!strcmp(a, "-c")) {
            ran_script = 1;
            rc = script_run_string(&s, argv[++i], "-c") != QSUR_OK;
        } else if (!strcmp(a, "--json")) {
            s.set.format = FORMAT_JSON;
        } else if (!strcmp(a, "--tui")) {
            want_tui = 1;
        }
    }
    if (want_tui && rc == 0 && !s.quit) {
        /* The paths and scripts ran first (their output is already on the
         * terminal); the TUI then opens on the session they built. */
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
