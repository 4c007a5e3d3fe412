/* A layer's transform stack, created from the workspace tensors at the first
 * transform (so layers nobody transforms cost no copies). */
#include <math.h>
#include <stdlib.h>
#include "layer_transform.h"
#include "session.h"

void layer_transform_free(layer_state *l)
{
    qsur_stack_free(l->stack);
    l->stack = NULL;
    layer_metrics_forget(l, 0); /* cached by stack state id, which a new stack reuses */
}

void layer_transform_current(layer_state *l, const float **x, const float **w)
{
    if (!l->stack)
        return;
    if (*x)
        *x = qsur_stack_x(l->stack);
    if (*w)
        *w = qsur_stack_w(l->stack);
}

void layer_transform_logdet_shift(const layer_state *l, double *dx, double *dw)
{
    double ld = l->stack ? qsur_stack_log_det(l->stack) : 0.0;
    *dx = -2.0 * ld;
    *dw = 2.0 * ld;
}

int layer_transform_depth(const layer_state *l)
{
    return l->stack ? qsur_stack_depth(l->stack) : 0;
}

int layer_transform_push(session *s, layer_state *l, qsur_transform *t, qsur_error *err)
{
    if (!l->stack) {
        layer_view v;
        int rc = layer_view_get(s, l, 1, &v, err);
        if (rc == QSUR_OK)
            rc = qsur_stack_new(&l->stack, v.x, v.n, v.w, v.m, v.d, err);
        if (rc != QSUR_OK) {
            qsur_transform_free(t);
            return rc;
        }
    }
    return qsur_stack_push(l->stack, t, &s->progress, err);
}

int layer_transform_equivalence(session *s, layer_state *l, double *out, qsur_error *err)
{
    *out = NAN;
    layer_view c;
    int rc = layer_view_get(s, l, 0, &c, err);
    if (rc != QSUR_OK || !c.x || !c.w)
        return rc;
    /* Same token sample and reference as the output error: a full check of a
     * 4096-channel layer costs two 170-GFLOP products per transform. */
    int64_t k = layer_error_tokens(s, &c);
    const float *y;
    if ((rc = layer_reference_get(s, l, k, &y, err)) != QSUR_OK)
        return rc;
    layer_metrics_cache *memo = layer_metrics_cached(s, l); /* undo/redo: known */
    if (memo && memo->has_eq) {
        *out = memo->eq;
        return QSUR_OK;
    }
    float *cs = layer_sample_rows(c.x, c.n, c.d, k);
    if (!cs)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory for the equivalence-error sample");
    rc = qsur_output_error_ref(y, cs, c.w, k, c.d, c.m, out, err);
    free(cs);
    if (rc == QSUR_OK && memo) {
        memo->has_eq = 1;
        memo->eq = *out;
    }
    return rc;
}
