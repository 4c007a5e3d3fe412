/* Whole-model edits with a way back (src/llama_edit.c): `rotate model`'s
 * steps and SmoothQuant, stopped by the progress callback at every block
 * boundary in turn, then undone, leave the model bit for bit as a second
 * copy that was never touched (weights in every storage form: float,
 * owned bf16, mapped-like borrowed; quantized forms: packed codes and float
 * copies; gains, embeddings, hooks, the classifier's tying) and its
 * perplexity the same; an edit that runs through gives the same weights
 * as the same steps without a journal. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/llama.h"
#include "qsur/llama_edit.h"
#include "qsur/llama_rotate.h"
#include "qsur/llama_smooth.h"
#include "qsur/llama_wquant.h"
#include "qsur/safetensors.h"

static qsur_tokens ev, cal;

static double ppl(const qsur_llama *m)
{
    qsur_error err;
    qsur_llama_ppl p;
    int rc = qsur_llama_perplexity(m, NULL, &ev, 128, 4, 4, NULL, &p, &err);
    CHECK_OK(rc, err);
    return rc ? NAN : p.ppl;
}

/* a and b hold the same bits everywhere the forward pass or an export reads. */
static int same_model(qsur_llama *a, qsur_llama *b)
{
    const qsur_llama_config *c = &a->cfg;
    int same = a->cfg.shared_classifier == b->cfg.shared_classifier &&
               a->hooks.w2_in.apply == b->hooks.w2_in.apply && a->hooks.qk.apply == b->hooks.qk.apply &&
               !memcmp(a->norm, b->norm, sizeof(float) * (size_t)c->dim);
    for (int l = 0; l < c->n_layers; l++)
        same &= !memcmp(a->layers[l].attention_norm, b->layers[l].attention_norm, sizeof(float) * (size_t)c->dim) &&
                !memcmp(a->layers[l].ffn_norm, b->layers[l].ffn_norm, sizeof(float) * (size_t)c->dim);
    int n = qsur_llama_linear_count(a);
    for (int i = -1; i <= n && same; i++) { /* -1: the embeddings (any form) */
        qsur_llama_linear *la = i < 0 ? &a->embed : i < n ? qsur_llama_linear_at(a, i) : &a->output;
        qsur_llama_linear *lb = i < 0 ? &b->embed : i < n ? qsur_llama_linear_at(b, i) : &b->output;
        size_t sz = (size_t)(la->rows * la->cols);
        float *x = malloc(sz * sizeof(float)), *y = malloc(sz * sizeof(float));
        qsur_llama_linear_read_rows(la, 0, la->rows, x);
        qsur_llama_linear_read_rows(lb, 0, lb->rows, y);
        same &= !memcmp(x, y, sz * sizeof(float));
        qsur_llama_linear_forward_rows(la, 0, la->rows, x);
        qsur_llama_linear_forward_rows(lb, 0, lb->rows, y);
        same &= !memcmp(x, y, sz * sizeof(float));
        same &= (la->qp != NULL) == (lb->qp != NULL) && (la->wq != NULL) == (lb->wq != NULL) &&
                (la->w != NULL) == (lb->w != NULL) && la->st.dtype == lb->st.dtype &&
                qsur_llama_linear_dtype(la) == qsur_llama_linear_dtype(lb);
        if (!same)
            printf("  first difference at %s\n", la->name);
        free(x), free(y);
    }
    return same;
}

typedef struct {
    int ticks, stop_at;
} stopper;

static int stop_fn(void *ctx, double done, const char *what, double value)
{
    (void)done, (void)what, (void)value;
    stopper *s = ctx;
    return ++s->ticks >= s->stop_at;
}

/* rotate model's steps (norm, resid, w2, heads) with edit e; the plans and
 * hooks are the caller's. */
static int rotate_all(qsur_llama *m, qsur_llama_edit *e, qsur_hadamard_plan *Q, qsur_hadamard_plan *H,
                      qsur_llama_online_hadamard *h2, qsur_error *err)
{
    int rc;
    qsur_llama_edit_range(e, 0, 0.25);
    if ((rc = qsur_llama_fuse_norms(m, e, err)))
        return rc;
    qsur_llama_edit_range(e, 0.25, 0.5);
    if ((rc = qsur_llama_rotate_residual(m, Q, e, err)))
        return rc;
    qsur_llama_edit_range(e, 0.5, 0.75);
    if ((rc = qsur_llama_rotate_w2(m, h2, e, err)))
        return rc;
    qsur_llama_edit_range(e, 0.75, 1);
    return qsur_llama_rotate_heads(m, H, e, err);
}

/* Interrupts the rotation after every possible tick; each time undone and
 * compared with ref. Then a run to the end equals the journal-free one. */
static int64_t rotations_undone(const char *what, qsur_llama *m, qsur_llama *ref)
{
    qsur_error err;
    const qsur_llama_config *c = &m->cfg;
    qsur_hadamard_plan *Q = NULL, *H = NULL;
    qsur_llama_online_hadamard *h2 = NULL, *h2r = NULL;
    qsur_hadamard_opts o = {1, 5};
    CHECK_OK(qsur_hadamard_plan_new(&Q, c->dim, &o, &err), err);
    CHECK_OK(qsur_hadamard_plan_new(&H, c->head_size, &o, &err), err);
    CHECK_OK(qsur_llama_online_hadamard_new(&h2, c->hidden_dim, 6, &err), err);
    CHECK_OK(qsur_llama_online_hadamard_new(&h2r, c->hidden_dim, 6, &err), err);
    double p0 = ppl(m);
    int total = 4 * c->n_layers, undone = 0, same = 0;
    int64_t journal = 0;
    for (int k = 1; k <= total; k++) {
        stopper st = {0, k};
        qsur_progress prog = {stop_fn, &st};
        qsur_llama_edit *e = NULL;
        CHECK_OK(qsur_llama_edit_new(&e, m, &prog, &err), err);
        int rc = rotate_all(m, e, Q, H, h2, &err);
        CHECK_MSG(rc == QSUR_ERR_INTERRUPTED, "%s: stop at tick %d: rc %d (%s)", what, k, rc, err.msg);
        journal = qsur_llama_edit_bytes(e) > journal ? qsur_llama_edit_bytes(e) : journal;
        CHECK_OK(qsur_llama_edit_undo(e, &err), err);
        undone++;
        same += same_model(m, ref);
        /* a tied classifier borrows the embeddings again, in their form */
        same -= m->cfg.shared_classifier &&
                !(m->output.w == m->embed.w && m->tok_embeddings == m->embed.w &&
                  m->output.st.owned == NULL &&
                  (m->embed.w ? !m->output.st.data : m->output.st.data == m->embed.st.data));
    }
    double p1 = ppl(m);
    printf("%s: %d interrupted rotations undone, %d identical to the untouched copy; "
           "ppl %.6f -> %.6f; journal up to %.1f KiB\n", what, undone, same, p0, p1, journal / 1024.0);
    CHECK(same == undone);
    CHECK(p1 == p0);
    /* to the end: the same as without a journal */
    qsur_llama_edit *e = NULL;
    CHECK_OK(qsur_llama_edit_new(&e, m, NULL, &err), err);
    CHECK_OK(rotate_all(m, e, Q, H, h2, &err), err);
    qsur_llama_edit_keep(e);
    CHECK_OK(rotate_all(ref, NULL, Q, H, h2r, &err), err);
    m->hooks.w2_in.ctx = ref->hooks.w2_in.ctx; /* the same plan, another object */
    CHECK(same_model(m, ref));
    CHECK(ppl(m) == ppl(ref));
    m->hooks = ref->hooks = qsur_llama_hooks_none();
    qsur_hadamard_plan_free(Q);
    qsur_hadamard_plan_free(H);
    qsur_llama_online_hadamard_free(h2);
    qsur_llama_online_hadamard_free(h2r);
    return journal;
}

static void smoothquant_undone(qsur_llama *m, qsur_llama *ref)
{
    qsur_error err;
    qsur_workspace cap;
    qsur_workspace_init(&cap);
    CHECK_OK(qsur_llama_capture(m, NULL, &cal, 128, 4, 4, 0, 1, &cap, NULL, NULL, &err), err);
    int same = 0;
    for (int k = 1; k <= m->cfg.n_layers; k++) {
        stopper st = {0, k};
        qsur_progress prog = {stop_fn, &st};
        qsur_llama_edit *e = NULL;
        CHECK_OK(qsur_llama_edit_new(&e, m, &prog, &err), err);
        CHECK(qsur_llama_smoothquant(m, &cap, 0.5, e, NULL, &err) == QSUR_ERR_INTERRUPTED);
        CHECK_OK(qsur_llama_edit_undo(e, &err), err);
        same += same_model(m, ref);
    }
    printf("smoothquant: %d of %d interrupted runs undone to the untouched model\n", same,
           m->cfg.n_layers);
    CHECK(same == m->cfg.n_layers);
    qsur_workspace_clear(&cap);
}

/* Returns the most the rotation's journal held. */
static int64_t both(const char *what, qsur_llama *a, qsur_llama *b)
{
    CHECK(same_model(a, b));
    smoothquant_undone(a, b);
    return rotations_undone(what, a, b);
}

int main(void)
{
    qsur_error err;
    char path[4096];
    snprintf(path, sizeof path, "%s", check_shared("data/stories260K.bin"));
    CHECK_OK(qsur_tokens_load(&ev, check_shared("data/stories260K.eval.u16"), 256, 512, &err), err);
    CHECK_OK(qsur_tokens_load(&cal, check_shared("data/stories260K.calib.u16"), 256, 512, &err), err);
    qsur_quant_spec q = qsur_quant_default();
    q.bits = 4, q.gran = QSUR_GRAN_GROUP, q.group = 32;

    /* float weights, tied classifier, packed codes from RTN */
    qsur_llama *a = NULL, *b = NULL;
    CHECK_OK(qsur_llama_load(&a, path, NULL, &err), err);
    CHECK_OK(qsur_llama_load(&b, path, NULL, &err), err);
    CHECK_OK(qsur_llama_quantize_rtn(a, &q, NULL, &err), err);
    CHECK_OK(qsur_llama_quantize_rtn(b, &q, NULL, &err), err);
    both("stories260K float, packed w4", a, b);
    qsur_llama_free(a), qsur_llama_free(b);

    /* weights owned in bf16 (as after an edit of a bf16 checkpoint), float
     * fake-quantized copies */
    CHECK_OK(qsur_llama_load(&a, path, NULL, &err), err);
    CHECK_OK(qsur_llama_load(&b, path, NULL, &err), err);
    for (int i = -1; i < qsur_llama_linear_count(a); i++) { /* -1: the embeddings */
        qsur_llama_linear *la = i < 0 ? &a->embed : qsur_llama_linear_at(a, i);
        qsur_llama_linear *lb = i < 0 ? &b->embed : qsur_llama_linear_at(b, i);
        CHECK_OK(qsur_llama_linear_own(la, &err), err);
        CHECK_OK(qsur_llama_linear_own(lb, &err), err);
        CHECK_OK(qsur_llama_linear_store_back(la, QSUR_DTYPE_BF16, &err), err);
        CHECK_OK(qsur_llama_linear_store_back(lb, QSUR_DTYPE_BF16, &err), err);
    }
    qsur_llama_embed_sync(a), qsur_llama_embed_sync(b);
    CHECK(a->layers[0].wq.w == NULL && a->layers[0].wq.st.owned != NULL);
    /* owned bf16 embeddings under a tied classifier: output.st borrows them
     * (st.owned NULL but not mapped from any file); a rotation stopped by
     * Ctrl-C must put them back and leave the classifier borrowing */
    CHECK(a->cfg.shared_classifier && a->tok_embeddings == NULL && a->embed.st.owned != NULL &&
          a->output.st.data == a->embed.st.data && a->output.st.owned == NULL);
    q.gran = QSUR_GRAN_ROW;
    CHECK_OK(qsur_llama_quantize_weights(a, &q, NULL, &err), err);
    CHECK_OK(qsur_llama_quantize_weights(b, &q, NULL, &err), err);
    CHECK(a->layers[0].wq.wq != NULL);
    both("stories260K bf16, float wq", a, b);
    qsur_llama_free(a), qsur_llama_free(b);

    /* weights mapped from a bf16 checkpoint: the journal keeps nothing of
     * them, their pages leave the process once edited and come back from
     * the file on undo */
    const char *dir = check_subdir("bf16");
    CHECK_OK(qsur_llama_load(&a, path, NULL, &err), err);
    CHECK_OK(qsur_llama_save_hf(a, dir, "BF16", &err), err);
    qsur_llama_free(a);
    CHECK_OK(qsur_llama_load(&a, dir, NULL, &err), err);
    CHECK_OK(qsur_llama_load(&b, dir, NULL, &err), err);
    CHECK(a->layers[0].w2.st.data != NULL && a->layers[0].w2.st.owned == NULL);
    const qsur_llama_config *c = &a->cfg;
    int64_t floats = ((int64_t)c->vocab_size * c->dim + (2 * c->n_layers + 1) * (int64_t)c->dim) * 4;
    int64_t journal = both("stories260K mapped bf16", a, b);
    CHECK_MSG(journal <= floats, "the journal of a mapped model holds only embeddings and gains: %lld > %lld",
              (long long)journal, (long long)floats);
    qsur_llama_free(a), qsur_llama_free(b);
    qsur_tokens_free(&ev), qsur_tokens_free(&cal);
    return check_done();
}
