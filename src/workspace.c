/* The workspace of named tensors: a small owning array, looked up by name. */
#include <stdlib.h>
#include <string.h>
#include "qsur/workspace.h"

void qsur_workspace_init(qsur_workspace *ws)
{
    memset(ws, 0, sizeof *ws);
}

void qsur_workspace_clear(qsur_workspace *ws)
{
    for (int i = 0; i < ws->count; i++)
        qsur_tensor_free(ws->items[i]);
    free(ws->items);
    qsur_workspace_init(ws);
}

static int find_index(const qsur_workspace *ws, const char *name)
{
    for (int i = 0; i < ws->count; i++)
        if (strcmp(ws->items[i]->name, name) == 0)
            return i;
    return -1;
}

int qsur_workspace_put(qsur_workspace *ws, qsur_tensor *t, qsur_error *err)
{
    int i = find_index(ws, t->name);
    if (i >= 0) {
        qsur_tensor_free(ws->items[i]);
        ws->items[i] = t;
        return QSUR_OK;
    }
    if (ws->count == ws->cap) {
        int cap = ws->cap ? ws->cap * 2 : 16;
        qsur_tensor **items = realloc(ws->items, (size_t)cap * sizeof *items);
        if (!items) {
            qsur_tensor_free(t);
            return qsur_fail(err, QSUR_ERR_NOMEM, "workspace: out of memory adding %s", t->name);
        }
        ws->items = items;
        ws->cap = cap;
    }
    ws->items[ws->count++] = t;
    return QSUR_OK;
}

qsur_tensor *qsur_workspace_find(const qsur_workspace *ws, const char *name)
{
    int i = find_index(ws, name);
    if (i < 0 || qsur_tensor_materialize(ws->items[i]) != 0)
        return NULL; /* a view that cannot be materialized reads as missing */
    return ws->items[i];
}

int qsur_workspace_remove(qsur_workspace *ws, const char *name)
{
    int i = find_index(ws, name);
    if (i < 0)
        return -1;
    qsur_tensor_free(ws->items[i]);
    memmove(ws->items + i, ws->items + i + 1, (size_t)(ws->count - i - 1) * sizeof *ws->items);
    ws->count--;
    return 0;
}
