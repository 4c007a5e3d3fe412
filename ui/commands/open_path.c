/* Opening the paths given on the command line (see open_path.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "command.h"
#include "layer_pick.h"
#include "layer_state.h"
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

/* A workspace entry before a load: its address and a copy of its name (the
 * entry may be freed by the load, replaced under the same name). */
typedef struct {
    const qsur_tensor *t;
    char name[QSUR_NAME_MAX];
} ws_entry;

/* The tensors the last load brought: those whose (address, name) was not in
 * the workspace before. A replaced tensor is allocated before its old copy is
 * freed, so it never has its own old address; another tensor of the file may
 * reuse that address, but not with that name. Fills t, returns the count. */
static int loaded_since(const session *s, const ws_entry *before, int nbefore, qsur_tensor **t)
{
    int n = 0;
    for (int i = 0; i < s->ws.count; i++) {
        const qsur_tensor *it = s->ws.items[i];
        int old = 0;
        for (int j = 0; j < nbefore && !old; j++)
            old = before[j].t == it && !strcmp(before[j].name, it->name);
        if (!old)
            t[n++] = s->ws.items[i];
    }
    return n;
}

/* After a layer file: select its layer when the file makes it obvious. A lone
 * activation (or weight) joins the current layer's weight (activation) when
 * their widths match, or the workspace's only other tensor when the two are a
 * pair, so `qsur W.npy X.npy` ends on the pair W X. */
static int select_obvious(session *s, qsur_tensor **t, int n, qsur_error *err)
{
    char w[QSUR_NAME_MAX], x[QSUR_NAME_MAX];
    if (!layer_pick_obvious(t, n, w, x, sizeof w))
        return QSUR_OK;
    const layer_state *cur = s->current >= 0 && s->current < s->nlayers ? &s->layers[s->current] : NULL;
    const qsur_tensor *other = !cur ? NULL
                               : !w[0] && cur->w_name[0] && !cur->x_name[0] ? qsur_workspace_find(&s->ws, cur->w_name)
                               : !x[0] && cur->x_name[0] && !cur->w_name[0] ? qsur_workspace_find(&s->ws, cur->x_name)
                                                                            : NULL;
    char ww[QSUR_NAME_MAX], wx[QSUR_NAME_MAX];
    if (other && other->ndim == 2 && qsur_tensor_cols(other) == qsur_tensor_cols(t[0]))
        snprintf(w[0] ? x : w, sizeof w, "%s", other->name);
    else if ((!w[0] || !x[0]) && layer_pick_obvious(s->ws.items, s->ws.count, ww, wx, sizeof ww) && ww[0] &&
             wx[0] && (!strcmp(ww, w) || !strcmp(wx, x))) {
        memcpy(w, ww, sizeof w); /* the workspace's only pair */
        memcpy(x, wx, sizeof x);
    }
    char *qw = command_quote(w), *qx = command_quote(x), *line = NULL;
    int len = !qw || !qx ? -1
              : w[0] && x[0] ? asprintf(&line, "use %s %s", qw, qx)
              : w[0] ? asprintf(&line, "use %s", qw)
                     : asprintf(&line, "use -x %s", qx);
    int rc = len < 0 ? qsur_fail(err, QSUR_ERR_NOMEM, "out of memory") : command_execute(s, line, err);
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
    int nbefore = s->ws.count;
    ws_entry *before = malloc(((size_t)nbefore + 1) * sizeof *before);
    if (!before)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    for (int i = 0; i < nbefore; i++) {
        before[i].t = s->ws.items[i];
        snprintf(before[i].name, sizeof before[i].name, "%s", s->ws.items[i]->name);
    }
    rc = run_with_path(s, "load", path, err);
    qsur_tensor **loaded = rc == QSUR_OK ? malloc(((size_t)s->ws.count + 1) * sizeof *loaded) : NULL;
    if (rc == QSUR_OK && !loaded)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    if (rc == QSUR_OK)
        rc = select_obvious(s, loaded, loaded_since(s, before, nbefore, loaded), err);
    free(loaded);
    free(before);
    return rc;
}
