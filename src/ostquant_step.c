/* OSTQuant's training passes over the fused model without holding it
 * (ostquant_fuse.h): the runtime's training forward and backward ask a source
 * for each linear when they reach it (qsur_llama_source), the source folds it
 * from the base (read through the store), fuses and fake-quantizes it into
 * one linear's scratch, and the backward's chain rule to R_res, R_ov and the
 * scales runs right after each linear's gradient. The weights are made twice
 * per step (forward, backward) instead of being kept: memory grows with one
 * linear, not with the model. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama_store.h"
#include "qsur/quant_ste.h"
#include "ostquant_fuse.h"

static int source_linear(void *ctx, int l, int i, const qsur_llama_linear **w, qsur_error *err)
{
    qsur_ostq_fused *z = ctx;
    int64_t rows, cols;
    qsur_ostq_linear_shape(z->o, i, &rows, &cols);
    qsur_ostq_folded(z->o, l, i, z->A);
    qsur_ostq_fuse_linear(z->o, &z->f, l, i, z->A, z->W);
    z->lin.rows = rows;
    z->lin.cols = cols;
    z->lin.w = z->W;
    z->lin.wq = z->wquant ? z->Wq : NULL;
    *w = &z->lin;
    return z->wquant ? qsur_fake_quant(&z->ws, z->W, rows, cols, z->Wq, NULL, err) : QSUR_OK;
}

/* The STE from the quantized weights the pass used to the fused floats, then
 * the chain rule (z->A still holds this linear's folded weights). */
static int source_grad(void *ctx, int l, int i, const qsur_llama_linear *w, float *dw, qsur_error *err)
{
    qsur_ostq_fused *z = ctx;
    int rc = z->wquant ? qsur_fake_quant_backward(&z->ws, w->w, w->rows, w->cols, dw, dw, err) : QSUR_OK;
    return rc ? rc : qsur_ostq_chain_linear(z->o, &z->f, l, i, z->A, w->w, dw, z->dR, z->d_r_ov, z->d_ls, err);
}

qsur_quant_spec qsur_ostq_train_wspec(const qsur_ostquant *o)
{
    qsur_quant_spec q = o->wspec;
    if (o->opts.wquant_code) {
        q.clip_norm = 2.0;
        q.ste_const = 1;
    }
    return q;
}

void qsur_ostq_fused_free(qsur_ostq_fused *z)
{
    qsur_ostq_scratch_free(&z->f);
    float *bufs[] = {z->A, z->W, z->cbuf, z->dcbuf, z->xe, z->x0, z->dh, z->dR, z->src.dw};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(bufs[i]);
    free(z->d_r_ov);
    free(z->d_ls);
    qsur_llama_grads_free(z->gn);
    memset(z, 0, sizeof *z);
}

int qsur_ostq_fused_new(qsur_ostq_fused *z, const qsur_ostquant *o, const qsur_llama *fm, int64_t N, int wquant,
                        qsur_error *err)
{
    memset(z, 0, sizeof *z);
    z->o = o;
    z->fm = fm;
    z->wquant = wquant;
    z->ws = qsur_ostq_train_wspec(o);
    int64_t lf = qsur_ostq_linear_floats(o), d = o->cfg.dim;
    int bad = qsur_ostq_scratch_new(o, &z->f) != 0;
    z->f.train = 1; /* the training-time function (sov_train) */
    z->A = qsur_alloc((size_t)lf, sizeof(float));
    z->W = qsur_alloc((size_t)lf, sizeof(float));
    /* the quantized copy is dead before the chain rule uses tmp2 */
    z->Wq = wquant ? z->f.tmp2 : NULL;
    z->src.dw = qsur_alloc((size_t)lf, sizeof(float));
    z->cbuf = qsur_alloc((size_t)(z->f.vrows * d), sizeof(float));
    z->dcbuf = qsur_alloc((size_t)(z->f.vrows * d), sizeof(float));
    z->xe = qsur_alloc((size_t)(N * d), sizeof(float));
    z->x0 = qsur_alloc((size_t)(N * d), sizeof(float));
    z->dh = qsur_alloc((size_t)(N * d), sizeof(float));
    z->dR = qsur_alloc((size_t)(d * d), sizeof(float));
    z->d_r_ov = malloc((size_t)qsur_ostq_r_ov_size(o) * sizeof(double));
    z->d_ls = malloc((size_t)o->n_ls * sizeof(double));
    bad |= !z->A || !z->W || (wquant && !z->Wq) || !z->src.dw || !z->cbuf || !z->dcbuf || !z->xe || !z->x0 ||
           !z->dh || !z->dR || !z->d_r_ov || !z->d_ls;
    int rc = bad ? qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for one linear's scratch (%lld floats)",
                             (long long)lf)
                 : qsur_llama_grads_new_norms(&z->gn, fm, err);
    if (rc) {
        qsur_ostq_fused_free(z);
        return rc;
    }
    z->src.linear = source_linear;
    z->src.grad = source_grad;
    z->src.ctx = z;
    return QSUR_OK;
}

/* Rows r0..r1-1 of the fused classifier into z->cbuf. */
static void classifier_rows(qsur_ostq_fused *z, int64_t r0, int64_t r1)
{
    qsur_ostq_fuse_vocab(z->o, &z->f, 1, r0, r1, z->cbuf);
}

/* x0 = the fused embeddings of the batch's tokens, E' = E R made a slice of
 * rows at a time like the fused model's table (so a vocabulary of one slice
 * gives the same bits as the whole fused model), only the slices the batch
 * uses. */
static void embed_fused(qsur_ostq_fused *z, const int *tok, int64_t N)
{
    int64_t d = z->o->cfg.dim, V = z->o->cfg.vocab_size;
    for (int64_t r0 = 0; r0 < V; r0 += z->f.vrows) {
        int64_t r1 = r0 + z->f.vrows < V ? r0 + z->f.vrows : V, made = 0;
        for (int64_t i = 0; i < N; i++) {
            if (tok[i] < r0 || tok[i] >= r1)
                continue;
            if (!made)
                qsur_ostq_fuse_vocab(z->o, &z->f, 0, r0, r1, z->cbuf);
            made = 1;
            memcpy(z->x0 + i * d, z->cbuf + (tok[i] - r0) * d, (size_t)d * sizeof(float));
        }
    }
}

int qsur_ostq_forward(qsur_ostq_fused *z, qsur_llama_tape *t, const int *tok, int B, int T, qsur_error *err)
{
    const qsur_llama_config *c = &z->o->cfg;
    int64_t N = (int64_t)B * T, d = c->dim, V = c->vocab_size;
    for (int64_t i = 0; i < N; i++)
        if (tok[i] < 0 || tok[i] >= c->vocab_size)
            return qsur_fail(err, QSUR_ERR_ARG, "ostquant forward: token %lld = %d out of range 0..%d",
                             (long long)i, tok[i], c->vocab_size - 1);
    qsur_llama_embed_rows(z->o->base, tok, N, z->xe); /* E[tok], for the backward */
    embed_fused(z, tok, N);
    t->src = &z->src;
    int rc = qsur_llama_train_blocks(z->fm, t, z->x0, B, T, err);
    if (rc)
        return rc;
    qsur_llama_rmsnorm(t->xnf, t->x_final, z->fm->norm, N, d, c->norm_eps);
    for (int64_t r0 = 0; r0 < V; r0 += z->f.vrows) {
        int64_t r1 = r0 + z->f.vrows < V ? r0 + z->f.vrows : V;
        classifier_rows(z, r0, r1);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)(r1 - r0), (int)d, 1.0f, t->xnf, (int)d,
                    z->cbuf, (int)d, 0.0f, t->logits + r0, (int)V);
    }
    return QSUR_OK;
}

/* The classifier's backward: dn = dz C' (N x dim, in z->dh's place first), and
 * C' = C R: dR += C^T dC' with dC' = dz^T xnf, a slice of rows at a time. */
static void classifier_backward(qsur_ostq_fused *z, const qsur_llama_tape *t, const float *dz, float *dn)
{
    int64_t N = t->N, d = z->o->cfg.dim, V = z->o->cfg.vocab_size;
    for (int64_t r0 = 0; r0 < V; r0 += z->f.vrows) {
        int64_t r1 = r0 + z->f.vrows < V ? r0 + z->f.vrows : V, n = r1 - r0;
        classifier_rows(z, r0, r1); /* z->f.vbuf: the folded rows, z->cbuf: the fused ones */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)d, (int)N, 1.0f, dz + r0, (int)V, t->xnf,
                    (int)d, 0.0f, z->dcbuf, (int)d);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)d, (int)n, 1.0f, dz + r0, (int)V,
                    z->cbuf, (int)d, r0 ? 1.0f : 0.0f, dn, (int)d);
        qsur_ostq_chain_rows(z->o, z->f.vbuf, z->dcbuf, n, z->dR);
    }
}

int qsur_ostq_backward(qsur_ostq_fused *z, qsur_llama_tape *t, const float *dz, const qsur_llama_online_t *ot,
                       qsur_error *err)
{
    const qsur_ostquant *o = z->o;
    const qsur_llama_config *c = &o->cfg;
    int64_t N = t->N, d = c->dim;
    memset(z->dR, 0, (size_t)(d * d) * sizeof(float));
    memset(z->d_r_ov, 0, (size_t)qsur_ostq_r_ov_size(o) * sizeof(double));
    memset(z->d_ls, 0, (size_t)o->n_ls * sizeof(double));
    qsur_llama_grads_zero(z->gn, z->fm);
    float *dn = t->s1; /* free until the blocks' backward */
    classifier_backward(z, t, dz, dn);
    qsur_llama_rmsnorm_backward(t->x_final, z->fm->norm, dn, N, d, c->norm_eps, z->dh, z->gn->d_norm);
    t->src = &z->src;
    int rc = qsur_llama_backward_hidden(z->fm, t, 0, c->n_layers - 1, z->dh, ot, z->gn, err);
    if (rc)
        return rc;
    /* E' = E R over the batch's rows: dR += E[tok]^T dx0 (t->s4) */
    qsur_ostq_chain_rows(o, z->xe, t->s4, N, z->dR);
    for (int l = 0; l < c->n_layers; l++)
        qsur_ostq_chain_norms(o, l, z->fm->layers[l].attention_norm, z->fm->layers[l].ffn_norm,
                              z->gn->layers[l].d_attention_norm, z->gn->layers[l].d_ffn_norm, z->d_ls);
    return QSUR_OK;
}
