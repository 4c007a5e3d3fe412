/* The workspace: named float32 tensors a session works on.
 * It owns its tensors; lookups return borrowed pointers valid until the
 * tensor is removed or replaced. Names are unique. */
#ifndef QSUR_WORKSPACE_H
#define QSUR_WORKSPACE_H

#include "qsur/tensor.h"

typedef struct {
    qsur_tensor **items;
    int count, cap;
} qsur_workspace;

void qsur_workspace_init(qsur_workspace *ws);
void qsur_workspace_clear(qsur_workspace *ws);  /* frees every tensor */

/* Takes ownership of t. A tensor with the same name is replaced (freed). */
int qsur_workspace_put(qsur_workspace *ws, qsur_tensor *t, qsur_error *err);
/* A view (qsur_tensor_view_new) is materialized here, on first lookup; NULL
 * also when that runs out of memory. */
qsur_tensor *qsur_workspace_find(const qsur_workspace *ws, const char *name);
/* Removes and frees; returns 0 when found, -1 otherwise. */
int qsur_workspace_remove(qsur_workspace *ws, const char *name);

#endif
