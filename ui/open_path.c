/* Opening the paths given on the command line (see open_path.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "command.h"
#include "layer_pick.h"
#include "open_path.h"
#include "qsur/loader.h"
#include "script.h"
#include "session.h"

/* Runs "HEAD ARG" with ARG quoted as the tokenizer reads it back. */
static int run_with_path(session *s, const char *head, const char *path, qsur_error *err)
{
    char *q = command_quote(path);
    char *line = NULL;
    if (!q || asprintf(&line, "%s %s", head, q) < 0) {
        free(q);
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    }
    int rc = command_execute(s, line, err);
    free(line);
    free(q);
    return rc;
}

static int has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* After a layer file: select the layer when the workspace makes it obvious. */
static int select_obvious(session *s, qsur_error *err)
{
    char w[QSUR_NAME_MAX], x[QSUR_NAME_MAX];
    if (!layer_pick_obvious(&s->ws, w, x, sizeof w))
        return QSUR_OK;
    char *qw = command_quote(w), *qx = command_quote(x), *line = NULL;
    int n = !qw || !qx ? -1
            : w[0] && x[0] ? asprintf(&line, "use %s %s", qw, qx)
            : w[0] ? asprintf(&line, "use %s", qw)
                   : asprintf(&line, "use -x %s", qx);
    int rc = n < 0 ? qsur_fail(err, QSUR_ERR_NOMEM, "out of memory") : command_execute(s, line, err);
    free(line);
    free(qw);
    free(qx);
    return rc;
}

int session_open_path(session *s, const char *path, qsur_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode))
        return run_with_path(s, "model load", path, err);
    if (has_suffix(path, ".qs"))
        return script_run_file(s, path, err);
    qsur_file_format fmt;
    int rc = qsur_detect_format(path, &fmt, err);
    if (rc != QSUR_OK)
        return rc;
    if (fmt == QSUR_FORMAT_LLAMA2C)
        return run_with_path(s, "model load", path, err);
    if ((rc = run_with_path(s, "load", path, err)) != QSUR_OK)
        return rc;
    return select_obvious(s, err);
}
