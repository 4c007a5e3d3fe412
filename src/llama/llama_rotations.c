/* Online Hadamard hooks of a rotated model (qsur/llama_rotations.h). */
#include <stdio.h>
#include <stdlib.h>
#include "qsur/llama_rotations.h"

/* The hook signature has no error channel: plan_apply only fails on a scratch
 * allocation (<= ~1 MB); then the rows are left unrotated, which the caller's
 * perplexity would show. */
static void apply_plan(void *ctx, float *rows, int64_t nrows, int64_t n)
{
    (void)n;
    qsur_hadamard_plan_apply(ctx, rows, nrows, NULL, NULL);
}

static void apply_plan_t(void *ctx, float *rows, int64_t nrows, int64_t n)
{
    (void)n;
    qsur_hadamard_plan_apply_transpose(ctx, rows, nrows, NULL, NULL);
}

int qsur_llama_rotations_new(qsur_llama_rotations **out, const qsur_llama_config *c, int w2,
                             int qk, uint64_t seed, qsur_error *err)
{
    *out = NULL;
    qsur_llama_rotations *r = calloc(1, sizeof *r);
    if (!r)
        return qsur_fail(err, QSUR_ERR_NOMEM, "online rotations: out of memory");
    qsur_hadamard_opts o = {0, seed};
    int rc = QSUR_OK;
    if (w2)
        rc = qsur_hadamard_plan_new(&r->w2, c->hidden_dim, &o, err);
    if (!rc && qk)
        rc = qsur_hadamard_plan_new(&r->qk, c->head_size, &o, err);
    if (rc) {
        qsur_llama_rotations_free(r);
        return rc;
    }
    *out = r;
    return QSUR_OK;
}

void qsur_llama_rotations_free(qsur_llama_rotations *r)
{
    if (!r)
        return;
    qsur_hadamard_plan_free(r->w2);
    qsur_hadamard_plan_free(r->qk);
    free(r);
}

void qsur_llama_rotations_attach(const qsur_llama_rotations *r, qsur_llama *m)
{
    m->hooks.w2_in = (qsur_llama_online){r && r->w2 ? apply_plan : NULL, r ? r->w2 : NULL};
    m->hooks.qk = (qsur_llama_online){r && r->qk ? apply_plan : NULL, r ? r->qk : NULL};
}

qsur_llama_online_t qsur_llama_rotations_transpose(const qsur_llama_rotations *r)
{
    qsur_llama_online_t t = {{NULL, NULL}, {NULL, NULL}, {NULL, NULL}};
    if (r && r->w2)
        t.w2_in = (qsur_llama_online){apply_plan_t, r->w2};
    if (r && r->qk)
        t.qk = (qsur_llama_online){apply_plan_t, r->qk};
    return t;
}

void qsur_llama_rotations_describe(const qsur_llama_rotations *r, char *buf, int n)
{
    snprintf(buf, (size_t)n, "w2_in: %s; qk: %s", r && r->w2 ? r->w2->desc : "none",
             r && r->qk ? r->qk->desc : "none");
}
