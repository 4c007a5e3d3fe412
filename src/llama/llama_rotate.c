/* QuaRot-style equivalent rotations of a whole Llama model (see llama_rotate.h
 * for the algebra of each step). */
#include <stdlib.h>
#include <string.h>
#include "qsur/backend.h"
#include "qsur/llama_edit.h"
#include "qsur/llama_rotate.h"
#include "qsur/tensor.h"

int qsur_llama_online_hadamard_new(qsur_llama_online_hadamard **out, int64_t n, uint64_t seed,
                                   qsur_error *err)
{
    *out = NULL;
    qsur_llama_online_hadamard *h = calloc(1, sizeof *h);
    if (!h)
        return qsur_fail(err, QSUR_ERR_NOMEM, "online hadamard: out of memory");
    qsur_hadamard_opts o = {1, seed};
    int rc = qsur_hadamard_plan_new(&h->plan, n, &o, err);
    if (rc) {
        free(h);
        return rc;
    }
    *out = h;
    return QSUR_OK;
}

void qsur_llama_online_hadamard_free(qsur_llama_online_hadamard *h)
{
    if (!h)
        return;
    qsur_hadamard_plan_free(h->plan);
    free(h);
}

void qsur_llama_online_hadamard_apply(void *ctx, float *rows, int64_t nrows, int64_t n)
{
    qsur_llama_online_hadamard *h = ctx;
    qsur_error e;
    if (n != h->plan->n || qsur_hadamard_plan_apply(h->plan, rows, nrows, NULL, &e) != QSUR_OK)
        h->failures++;
}

/* W[:, j] *= g[j] for a rows x cols matrix. */
static void scale_cols(float *w, int64_t rows, int64_t cols, const float *g)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            w[r * cols + c] *= g[c];
}

/* l's columns scaled by g, one linear in float at a time (copy-on-write,
 * then back to its dtype); the quantized form is dropped (stale). */
static int scale_linear(qsur_llama_edit *e, qsur_llama_linear *l, const float *g, qsur_error *err)
{
    int dt, rc = qsur_llama_edit_linear(e, l, &dt, err);
    if (rc)
        return rc;
    scale_cols(l->w, l->rows, l->cols, g);
    return qsur_llama_linear_edit_end(l, dt, err);
}

/* The plan on the GPU when the edit asks for it (*gr, freed by the caller;
 * NULL: the CPU's fast transform). */
static int gpu_rotation(qsur_llama_edit *e, const qsur_hadamard_plan *Q, qsur_gpu_rotation **gr,
                        qsur_error *err)
{
    *gr = NULL;
    return qsur_llama_edit_gpu(e) ? qsur_gpu_rotation_new(gr, Q, err) : QSUR_OK;
}

/* Every row of l times the plan (x -> x Q on the input side); on the GPU
 * when gr is set. */
static int hadamard_linear(qsur_llama_edit *e, const qsur_hadamard_plan *Q, qsur_gpu_rotation *gr,
                           qsur_llama_linear *l, int64_t nrows, qsur_error *err)
{
    int dt, rc = qsur_llama_edit_linear(e, l, &dt, err);
    if (rc)
        return rc;
    rc = gr ? qsur_gpu_rotation_rows(gr, l->w, nrows, err)
            : qsur_hadamard_plan_apply(Q, l->w, nrows, NULL, err);
    int rc2 = qsur_llama_linear_edit_end(l, dt, err);
    return rc ? rc : rc2;
}

static void fill_ones(float *g, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = 1.0f;
}

int qsur_llama_fuse_norms(qsur_llama *m, qsur_llama_edit *e, qsur_error *err)
{
    /* The classifier must own its weights before the final gain goes into it:
     * the embedding lookup does not pass through that norm. */
    int rc = qsur_llama_edit_save(e, &m->output, err);
    if (!rc)
        rc = qsur_llama_untie_classifier(m, err);
    if (rc)
        return rc;
    const int64_t d = m->cfg.dim;
    for (int i = 0; i < m->cfg.n_layers; i++) {
        qsur_llama_layer *L = &m->layers[i];
        qsur_llama_linear *att[3] = {&L->wq, &L->wk, &L->wv}, *ffn[2] = {&L->w1, &L->w3};
        for (int k = 0; k < 3 && !rc; k++)
            rc = scale_linear(e, att[k], L->attention_norm, err);
        for (int k = 0; k < 2 && !rc; k++)
            rc = scale_linear(e, ffn[k], L->ffn_norm, err);
        if (!rc)
            rc = qsur_llama_edit_floats(e, L->attention_norm, d, err);
        if (!rc)
            rc = qsur_llama_edit_floats(e, L->ffn_norm, d, err);
        if (rc)
            return rc; /* without an edit journal, earlier layers stay fused */
        fill_ones(L->attention_norm, d);
        fill_ones(L->ffn_norm, d);
        if ((rc = qsur_llama_edit_tick(e, (i + 1.0) / (m->cfg.n_layers + 1), "rotate: fuse norms", err)))
            return rc;
    }
    if ((rc = scale_linear(e, &m->output, m->norm, err)) ||
        (rc = qsur_llama_edit_floats(e, m->norm, d, err)))
        return rc;
    fill_ones(m->norm, d);
    return QSUR_OK;
}

static void transpose(const float *a, int64_t rows, int64_t cols, float *t)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            t[c * rows + r] = a[r * cols + c];
}

/* W (rows x cols) <- blockdiag(R)^T W where R (n x n) acts on consecutive
 * blocks of n rows: computed as (W^T blockdiag(R))^T, i.e. the plan applied to
 * the rows of W^T split into blocks of n. tmp holds rows*cols floats. */
static int rotate_rows_left(qsur_llama_edit *e, const qsur_hadamard_plan *R, qsur_gpu_rotation *gr,
                            qsur_llama_linear *l, float *tmp, qsur_error *err)
{
    int dt, rc = qsur_llama_edit_linear(e, l, &dt, err);
    if (rc)
        return rc;
    int64_t rows = l->rows, cols = l->cols;
    if (gr) {
        rc = qsur_gpu_rotation_left(gr, l->w, rows, cols, err);
    } else {
        transpose(l->w, rows, cols, tmp);
        rc = qsur_hadamard_plan_apply(R, tmp, cols * (rows / R->n), NULL, err);
        if (!rc)
            transpose(tmp, cols, rows, l->w);
    }
    int rc2 = qsur_llama_linear_edit_end(l, dt, err);
    return rc ? rc : rc2;
}

static int not_one(const float *g, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (g[i] != 1.0f)
            return 1;
    return 0;
}

/* Scratch for the largest transposed linear of a layer. */
static float *layer_scratch(const qsur_llama *m, qsur_error *err)
{
    int64_t big = (int64_t)m->cfg.dim * (m->cfg.hidden_dim > m->cfg.dim ? m->cfg.hidden_dim
                                                                         : m->cfg.dim);
    float *tmp = qsur_alloc((size_t)big, sizeof(float));
    if (!tmp)
        qsur_fail(err, QSUR_ERR_NOMEM, "rotate: cannot allocate %lld floats", (long long)big);
    return tmp;
}

/* What rotate_rows_left needs: the plan on the GPU (gpu_rotation), or else the
 * CPU's transpose scratch (*tmp); the caller frees both. */
static int rows_left_setup(const qsur_llama *m, qsur_llama_edit *e, const qsur_hadamard_plan *Q,
                           qsur_gpu_rotation **gr, float **tmp, qsur_error *err)
{
    *tmp = NULL;
    int rc = gpu_rotation(e, Q, gr, err);
    if (!rc && !*gr && !(*tmp = layer_scratch(m, err)))
        rc = QSUR_ERR_NOMEM;
    return rc;
}

int qsur_llama_rotate_residual(qsur_llama *m, const qsur_hadamard_plan *Q, qsur_llama_edit *e,
                               qsur_error *err)
{
    const int64_t d = m->cfg.dim;
    if (Q->n != d)
        return qsur_fail(err, QSUR_ERR_ARG, "rotate residual: plan has size %lld, model dim is %lld",
                         (long long)Q->n, (long long)d);
    int bad = not_one(m->norm, d);
    for (int i = 0; i < m->cfg.n_layers && !bad; i++)
        bad = not_one(m->layers[i].attention_norm, d) || not_one(m->layers[i].ffn_norm, d);
    if (bad)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "rotate residual: RMSNorm gains are not 1 (fuse the norms into the linears first)");
    qsur_gpu_rotation *gr;
    float *tmp;
    int rc = rows_left_setup(m, e, Q, &gr, &tmp, err);
    if (rc)
        return rc;
    /* Without an edit journal, a failure (memory, or Ctrl-C) part-way leaves
     * earlier linears rotated: the caller treats it as "model unusable". The
     * embeddings go through the journal like any linear (float while rotated,
     * back in their dtype); a tied classifier borrows them and follows them
     * (qsur_llama_embed_sync, which the journal's undo calls too). */
    rc = qsur_llama_edit_save(e, &m->output, err);
    if (!rc)
        rc = hadamard_linear(e, Q, gr, &m->embed, m->cfg.vocab_size, err);
    qsur_llama_embed_sync(m);
    if (!rc && !m->cfg.shared_classifier)
        rc = hadamard_linear(e, Q, gr, &m->output, m->output.rows, err);
    qsur_llama_linear_drop_quant(&m->output);
    for (int i = 0; i < m->cfg.n_layers && !rc; i++) {
        qsur_llama_layer *L = &m->layers[i];
        qsur_llama_linear *readers[5] = {&L->wq, &L->wk, &L->wv, &L->w1, &L->w3};
        for (int k = 0; k < 5 && !rc; k++)
            rc = hadamard_linear(e, Q, gr, readers[k], readers[k]->rows, err);
        qsur_llama_linear *writers[2] = {&L->wo, &L->w2};
        for (int k = 0; k < 2 && !rc; k++)
            rc = rotate_rows_left(e, Q, gr, writers[k], tmp, err);
        if (!rc)
            rc = qsur_llama_edit_tick(e, (i + 1.0) / m->cfg.n_layers, "rotate: residual", err);
    }
    free(tmp);
    qsur_gpu_rotation_free(gr);
    return rc;
}

int qsur_llama_rotate_w2(qsur_llama *m, qsur_llama_online_hadamard *h, qsur_llama_edit *e,
                         qsur_error *err)
{
    if (h->plan->n != m->cfg.hidden_dim)
        return qsur_fail(err, QSUR_ERR_ARG, "rotate w2: plan has size %lld, hidden_dim is %d",
                         (long long)h->plan->n, m->cfg.hidden_dim);
    if (m->hooks.w2_in.apply)
        return qsur_fail(err, QSUR_ERR_ARG, "rotate w2: the model already has an online transform before w2");
    qsur_gpu_rotation *gr = NULL;
    int rc = gpu_rotation(e, h->plan, &gr, err);
    for (int i = 0; i < m->cfg.n_layers && !rc; i++) {
        qsur_llama_linear *w2 = &m->layers[i].w2;
        rc = hadamard_linear(e, h->plan, gr, w2, w2->rows, err);
        if (!rc)
            rc = qsur_llama_edit_tick(e, (i + 1.0) / m->cfg.n_layers, "rotate: w2", err);
    }
    qsur_gpu_rotation_free(gr);
    if (!rc)
        m->hooks.w2_in = (qsur_llama_online){qsur_llama_online_hadamard_apply, h};
    return rc;
}

int qsur_llama_rotate_heads(qsur_llama *m, const qsur_hadamard_plan *H, qsur_llama_edit *e,
                            qsur_error *err)
{
    const int64_t hs = m->cfg.head_size;
    if (H->n != hs)
        return qsur_fail(err, QSUR_ERR_ARG, "rotate heads: plan has size %lld, head_size is %lld",
                         (long long)H->n, (long long)hs);
    qsur_gpu_rotation *gr;
    float *tmp;
    int rc = rows_left_setup(m, e, H, &gr, &tmp, err);
    if (rc)
        return rc;
    for (int i = 0; i < m->cfg.n_layers && !rc; i++) {
        qsur_llama_layer *L = &m->layers[i];
        /* wv (kv_dim x dim): each kv head's hs rows -> H^T wv_g */
        rc = rotate_rows_left(e, H, gr, &L->wv, tmp, err);
        /* wo (dim x n_heads*hs): every head's block of columns -> wo_h H */
        if (!rc)
            rc = hadamard_linear(e, H, gr, &L->wo, L->wo.rows * (L->wo.cols / hs), err);
        if (!rc)
            rc = qsur_llama_edit_tick(e, (i + 1.0) / m->cfg.n_layers, "rotate: heads", err);
    }
    free(tmp);
    qsur_gpu_rotation_free(gr);
    return rc;
}

int qsur_llama_rotate_qk(qsur_llama *m, qsur_llama_online_hadamard *h, qsur_error *err)
{
    if (h->plan->n != m->cfg.head_size)
        return qsur_fail(err, QSUR_ERR_ARG, "rotate qk: plan has size %lld, head_size is %d",
                         (long long)h->plan->n, m->cfg.head_size);
    if (m->hooks.qk.apply)
        return qsur_fail(err, QSUR_ERR_ARG, "rotate qk: the model already has an online q/k transform");
    m->hooks.qk = (qsur_llama_online){qsur_llama_online_hadamard_apply, h};
    return QSUR_OK;
}
