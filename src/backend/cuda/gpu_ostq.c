/* OSTQuant's transform side on the GPU (qsur_gpu_ostq_*, qsur/backend.h):
 * the base model's folded weights stay on the device for the whole run; each
 * step the current R_res, R_ov and scales are fused into the training
 * buffers' weights (cuBLAS fp32 GEMMs, no TF32, and small kernels), RTN'd in
 * place when the weights train quantized, and after the backward the weights'
 * STE and the chain rule to dR_res, dR_ov and the log-scales' gradients run
 * here too. Only the parameters (n x n and vectors) and their gradients cross
 * PCIe. The math is src/ostquant_fuse.c's (qsur_ostq_fuse_linear,
 * qsur_ostq_chain_linear), linear by linear; the scales' gradients are
 * collected as per-row and per-column sums of dW * W in double and mapped to
 * the log-scale layout on the host.
 *
 * This file: setup, the parameters' upload, the fusion; gpu_ostq_chain.c: the
 * STE and the chain rule. Row-major throughout: mm() turns a row-major product into cuBLAS's
 * column-major one (C^T = B^T A^T). Three scratch buffers of the largest
 * linear: fusion temporaries in S1, S2; in the chain rule the fused float
 * weight (when the weights train quantized) in S3. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>
#include "gpu_ostq.h"
#include "ostq_kernels.h"
#include "train_kernels.h"

static int galloc(qsur_gpu_ostq *g, void **p, size_t bytes, qsur_error *err)
{
    int rc = qsur_gpu_malloc(p, bytes, "ostquant transforms", err);
    if (!rc)
        g->bytes += (double)bytes;
    return rc;
}


/* ---- setup ------------------------------------------------------------------ */

static void layouts(qsur_gpu_ostq *g)
{
    int64_t d = g->cfg.dim, kv = g->cfg.kv_dim, h = g->cfg.hidden_dim;
    int64_t vn[V_COUNT] = {d, d, d, kv, kv, d, h, h, d, d}, dn[D_COUNT] = {d, d, d, kv, kv, d, h, h};
    g->vl = g->dl = 0;
    for (int i = 0; i < V_COUNT; i++)
        g->voff[i] = g->vl, g->vl += vn[i];
    for (int i = 0; i < D_COUNT; i++)
        g->doff[i] = g->dl, g->dl += dn[i];
}

/* The base's folded weights onto the device (o->base read through the store,
 * one linear at a time), or random ones (seed != 0, for benchmarks). */
static int upload_base(qsur_gpu_ostq *g, const qsur_ostquant *o, uint64_t seed, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, h = c->hidden_dim, V = c->vocab_size;
    int64_t off[7] = {0, d * d, (d + kv) * d, 0, 0, 0, h * d}; /* wq wk wv wo w1 w2 w3 in their stacks */
    cudaStream_t st = st_of(g);
    float *host = seed ? NULL : malloc((size_t)qsur_ostq_linear_floats(o) * sizeof(float));
    if (!seed && !host)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory");
    int rc = QSUR_OK;
    for (int l = 0; l < c->n_layers && !rc; l++) {
        base_layer *B = &g->A[l];
        float *dst[7] = {B->qkv, B->qkv, B->qkv, B->o, B->w13, B->w2, B->w13};
        for (int i = 0; i < 7 && !rc; i++) {
            int64_t rows, cols;
            qsur_ostq_linear_shape(o, i, &rows, &cols);
            float *at = dst[i] + off[i];
            if (seed) {
                qsur_cu_random(at, 0, rows * cols, 1.0f / sqrtf((float)cols), 0, seed * 7919u + (uint64_t)(7 * l + i),
                               st);
                continue;
            }
            qsur_ostq_folded(o, l, i, host);
            rc = qsur_gpu_check(cudaMemcpy(at, host, (size_t)(rows * cols) * sizeof(float), cudaMemcpyHostToDevice),
                                "base upload", err);
        }
    }
    for (int which = 0; which < 2 && !rc; which++) {
        float *dst = which ? g->C : g->E;
        if (seed) {
            qsur_cu_random(dst, 0, V * d, which ? 1.0f / sqrtf((float)d) : 1.0f, 0, seed * 31u + (uint64_t)which, st);
            continue;
        }
        int64_t step = qsur_ostq_linear_floats(o) / d;
        for (int64_t r0 = 0; r0 < V && !rc; r0 += step) {
            int64_t r1 = r0 + step < V ? r0 + step : V;
            qsur_ostq_folded_vocab(o, which, r0, r1, host);
            rc = qsur_gpu_check(cudaMemcpy(dst + r0 * d, host, (size_t)((r1 - r0) * d) * sizeof(float),
                                           cudaMemcpyHostToDevice), "base upload", err);
        }
    }
    free(host);
    return rc ? rc : qsur_gpu_check(cudaStreamSynchronize(st), "base upload", err);
}

/* The dense w2 Hadamard of the fusion: the online w2_in hook's (the same
 * plan, already on the device) or, for code_smooth without it, ud_had's. */
static int dense_w2(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    int64_t h = g->cfg.hidden_dim;
    if (o->rot->w2) {
        g->H = g->t->w2_in;
        return g->H ? QSUR_OK
                    : qsur_fail(err, QSUR_ERR_ARG, "gpu ostquant: the training hooks lack the online w2 Hadamard");
    }
    if (!o->ud_had)
        return QSUR_OK;
    float *I = calloc((size_t)(h * h), sizeof(float));
    if (!I)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory for the w2 Hadamard");
    for (int64_t i = 0; i < h; i++)
        I[i * h + i] = 1.0f;
    int rc = qsur_hadamard_plan_apply(o->ud_had, I, h, NULL, err);
    if (!rc && !(rc = galloc(g, (void **)&g->H, (size_t)(h * h) * sizeof(float), err)))
        rc = qsur_gpu_check(cudaMemcpy(g->H, I, (size_t)(h * h) * sizeof(float), cudaMemcpyHostToDevice), "w2 Hadamard",
                            err);
    g->H_own = g->H != NULL;
    free(I);
    return rc;
}

static int alloc_all(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    size_t d = (size_t)c->dim, kv = (size_t)c->kv_dim, h = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t L = (size_t)c->n_layers, big = (size_t)qsur_ostq_linear_floats(o), nov = (size_t)qsur_ostq_r_ov_size(o);
    g->A = calloc(L, sizeof *g->A);
    g->hR = malloc(d * d * sizeof(float));
    g->hRov = malloc(nov * sizeof(float));
    g->hvec = malloc(L * (size_t)g->vl * sizeof(float));
    g->hdn = malloc(2 * L * d * sizeof(float));
    g->hdots = malloc(L * (size_t)g->dl * sizeof(double));
    if (!g->A || !g->hR || !g->hRov || !g->hvec || !g->hdn || !g->hdots)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory");
    int rc = QSUR_OK;
    for (size_t l = 0; l < L && !rc; l++) {
        base_layer *B = &g->A[l];
        if (!(rc = galloc(g, (void **)&B->qkv, (d + 2 * kv) * d * 4, err)) &&
            !(rc = galloc(g, (void **)&B->o, d * d * 4, err)) && !(rc = galloc(g, (void **)&B->w13, 2 * h * d * 4, err)))
            rc = galloc(g, (void **)&B->w2, d * h * 4, err);
    }
    struct {
        void **p;
        size_t bytes;
    } b[] = {
        {(void **)&g->E, V * d * 4}, {(void **)&g->C, V * d * 4}, {(void **)&g->R, d * d * 4},
        {(void **)&g->Rov, nov * 4}, {(void **)&g->vec, L * (size_t)g->vl * 4}, {(void **)&g->S1, big * 4},
        {(void **)&g->S2, big * 4}, {(void **)&g->S3, big * 4}, {(void **)&g->dR, d * d * 4},
        {(void **)&g->dRov, nov * 4}, {(void **)&g->dots, L * (size_t)g->dl * 8},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0] && !rc; i++)
        rc = galloc(g, b[i].p, b[i].bytes, err);
    return rc;
}

void qsur_gpu_ostq_free(qsur_gpu_ostq *g)
{
    if (!g)
        return;
    for (int l = 0; g->A && l < g->cfg.n_layers; l++) {
        cudaFree(g->A[l].qkv);
        cudaFree(g->A[l].o);
        cudaFree(g->A[l].w13);
        cudaFree(g->A[l].w2);
    }
    void *dev[] = {g->E, g->C, g->R, g->Rov, g->vec, g->S1, g->S2, g->S3, g->dR, g->dRov, g->dots};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    if (g->H_own)
        cudaFree(g->H);
    free(g->A);
    free(g->hR);
    free(g->hRov);
    free(g->hvec);
    free(g->hdn);
    free(g->hdots);
    free(g);
}

double qsur_gpu_ostq_bytes(const qsur_gpu_ostq *g)
{
    return g ? g->bytes : 0;
}

int qsur_gpu_ostq_new(qsur_gpu_ostq **out, qsur_gpu_train *t, const qsur_ostquant *o, const qsur_llama_hooks *hooks,
                      const qsur_quant_spec *wspec, uint64_t random_seed, qsur_error *err)
{
    *out = NULL;
    const qsur_llama_config *c = &o->cfg;
    if (c->dim != t->cfg.dim || c->hidden_dim != t->cfg.hidden_dim || c->n_layers != t->cfg.n_layers ||
        c->kv_dim != t->cfg.kv_dim || c->vocab_size != t->cfg.vocab_size)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu ostquant: the training buffers' shape is not the model's");
    char why[160];
    if (wspec && wspec->bits < 16 && !qsur_gpu_quant_supported(wspec, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu ostquant: weights: %s", why);
    qsur_gpu_ostq *g = calloc(1, sizeof *g);
    if (!g)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory");
    g->t = t;
    g->cfg = *c;
    g->group = c->n_heads / c->n_kv_heads;
    g->sov_code = o->opts.sov_code;
    g->code_smooth = o->opts.code_smooth;
    g->learn_qk = o->opts.learn_qk;
    g->ud = o->ud_had != NULL && !o->rot->w2;
    g->wquant = wspec && wspec->bits < 16;
    if (g->wquant) {
        qsur_cu_quant q = {wspec->bits, wspec->symmetric, (int)wspec->gran, wspec->group, wspec->clip,
                           wspec->clip_search};
        g->wq = q;
        g->w_ste_const = wspec->ste_const;
    }
    layouts(g);
    int rc = qsur_gpu_train_hooks(t, hooks, err);
    if (!rc)
        rc = alloc_all(g, o, err);
    if (!rc)
        rc = dense_w2(g, o, err);
    if (!rc)
        rc = upload_base(g, o, random_seed, err);
    if (rc) {
        qsur_gpu_ostq_free(g);
        return rc;
    }
    *out = g;
    return QSUR_OK;
}

/* ---- parameters ------------------------------------------------------------- */

/* Layer l's vectors from s = e^ls (floats, as qsur_ostq_scratch_params). */
static void layer_vectors(const qsur_gpu_ostq *g, const qsur_ostquant *o, const float *s, int l, float *v)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, h = c->hidden_dim, hs = c->head_size;
    const float *sa = s + qsur_ostq_ls_attn(o, l), *sf = s + qsur_ostq_ls_ffn(o, l);
    const float *so = s + qsur_ostq_ls_ov(o, l), *su = s + qsur_ostq_ls_ud(o, l);
    const float *sqk = g->learn_qk ? s + qsur_ostq_ls_qk(o, l) : NULL;
    float *at[V_COUNT];
    for (int i = 0; i < V_COUNT; i++)
        at[i] = v + g->voff[i];
    for (int64_t j = 0; j < d; j++) {
        at[V_SA][j] = sa[j];
        at[V_SF][j] = sf[j];
        at[V_NA][j] = 1.0f / sa[j];
        at[V_NF][j] = 1.0f / sf[j];
        int64_t kr = (j / hs / g->group) * hs + j % hs; /* the kv row matching q row j */
        at[V_QROW][j] = sqk ? 1.0f / sqk[qk_index(g, kr)] : 1.0f;
        at[V_SOCOL][j] = so[(j / hs / g->group) * hs + j % hs];
    }
    for (int64_t r = 0; r < kv; r++) {
        at[V_KROW][r] = sqk ? sqk[qk_index(g, r)] : 1.0f;
        at[V_OVINV][r] = 1.0f / so[r];
    }
    for (int64_t r = 0; r < h; r++) {
        at[V_SU][r] = su[r];
        at[V_SUINV][r] = 1.0f / su[r];
    }
}

static int upload_params(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    int64_t d = g->cfg.dim, nov = qsur_ostq_r_ov_size(o);
    float *s = malloc((size_t)o->n_ls * sizeof(float));
    if (!s)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory");
    for (int64_t i = 0; i < o->n_ls; i++)
        s[i] = (float)exp(o->ls[i]);
    for (int64_t i = 0; i < d * d; i++)
        g->hR[i] = (float)o->r_res[i];
    for (int64_t i = 0; i < nov; i++)
        g->hRov[i] = (float)o->r_ov[i];
    for (int l = 0; l < g->cfg.n_layers; l++)
        layer_vectors(g, o, s, l, g->hvec + (int64_t)l * g->vl);
    free(s);
    int rc = qsur_gpu_check(cudaMemcpy(g->R, g->hR, (size_t)(d * d) * 4, cudaMemcpyHostToDevice), "parameters", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->Rov, g->hRov, (size_t)nov * 4, cudaMemcpyHostToDevice), "parameters", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->vec, g->hvec, (size_t)(g->cfg.n_layers * g->vl) * 4, cudaMemcpyHostToDevice),
                            "parameters", err);
    return rc;
}

/* ---- fusion ----------------------------------------------------------------- */

/* dst[rows][d] = (A R) diag(col), then rows times row (NULL: 1). */
int gpu_ostq_fuse_input(qsur_gpu_ostq *g, const float *A, int64_t rows, const float *row, const float *col, float *dst,
                      qsur_error *err)
{
    int64_t d = g->cfg.dim;
    int rc = mm(g, 0, 0, rows, d, d, A, d, g->R, d, 0.0f, dst, d, err);
    if (!rc)
        qsur_cu_scale_rc(dst, rows, d, row, col, st_of(g));
    return rc;
}

/* wv'_g = S_g^-1 R_g^T wv''_g (sov_code: R_g^T S_g^-1 wv''_g), wv'' in S1. */
static int fuse_wv(qsur_gpu_ostq *g, int l, float *dst, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, hs = c->head_size;
    int rc = gpu_ostq_fuse_input(g, g->A[l].qkv + (d + kv) * d, kv, NULL, vec_at(g, l, V_SA), g->S1, err);
    if (!rc && g->sov_code)
        qsur_cu_scale_rc(g->S1, kv, d, vec_at(g, l, V_OVINV), NULL, st_of(g));
    if (!rc)
        rc = mmb(g, 1, 0, hs, d, hs, rov_at(g, l), hs, hs * hs, g->S1, d, hs * d, 0.0f, dst, d, hs * d, c->n_kv_heads,
                 err);
    if (!rc && !g->sov_code)
        qsur_cu_scale_rc(dst, kv, d, vec_at(g, l, V_OVINV), NULL, st_of(g));
    return rc;
}

/* Y = R^T wo in S1; head h's columns Y_h R_g S_g (sov_code: Y_h S_g R_g). */
static int fuse_wo(qsur_gpu_ostq *g, int l, float *dst, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, hs = c->head_size, gs = (int64_t)g->group * hs;
    int rc = mm(g, 1, 0, d, d, d, g->R, d, g->A[l].o, d, 0.0f, g->S1, d, err);
    if (!rc && g->sov_code)
        qsur_cu_scale_rc(g->S1, d, d, NULL, vec_at(g, l, V_SOCOL), st_of(g));
    for (int j = 0; j < g->group && !rc; j++) /* heads g * group + j, batched over g */
        rc = mmb(g, 0, 0, d, hs, hs, g->S1 + j * hs, d, gs, rov_at(g, l), hs, hs * hs, 0.0f, dst + j * hs, d, gs,
                 c->n_kv_heads, err);
    if (!rc && !g->sov_code)
        qsur_cu_scale_rc(dst, d, d, NULL, vec_at(g, l, V_SOCOL), st_of(g));
    return rc;
}

/* w2' = (R^T w2) S_ud H, or with code_smooth (R^T w2) H S_ud (then H^T for ud). */
static int fuse_w2(qsur_gpu_ostq *g, int l, float *dst, qsur_error *err)
{
    int64_t d = g->cfg.dim, h = g->cfg.hidden_dim;
    const float *su = vec_at(g, l, V_SU);
    cudaStream_t st = st_of(g);
    if (!g->H) { /* no Hadamard: R^T w2 S_ud in either order */
        int rc = mm(g, 1, 0, d, h, d, g->R, d, g->A[l].w2, h, 0.0f, dst, h, err);
        if (!rc)
            qsur_cu_scale_rc(dst, d, h, NULL, su, st);
        return rc;
    }
    int rc = mm(g, 1, 0, d, h, d, g->R, d, g->A[l].w2, h, 0.0f, g->S1, h, err);
    if (rc)
        return rc;
    if (!g->code_smooth) {
        qsur_cu_scale_rc(g->S1, d, h, NULL, su, st);
        return mm(g, 0, 0, d, h, h, g->S1, h, g->H, h, 0.0f, dst, h, err);
    }
    float *zh = g->ud ? g->S2 : dst;
    if ((rc = mm(g, 0, 0, d, h, h, g->S1, h, g->H, h, 0.0f, zh, h, err)))
        return rc;
    qsur_cu_scale_rc(zh, d, h, NULL, su, st);
    return g->ud ? mm(g, 0, 1, d, h, h, zh, h, g->H, h, 0.0f, dst, h, err) : QSUR_OK;
}

/* dst = the fused float weights of linear i (QSUR_OSTQ_*) of layer l. */
int gpu_ostq_fuse_linear(qsur_gpu_ostq *g, int l, int i, float *dst, qsur_error *err)
{
    int64_t d = g->cfg.dim, kv = g->cfg.kv_dim, h = g->cfg.hidden_dim;
    const base_layer *B = &g->A[l];
    switch (i) {
    case QSUR_OSTQ_WQ:
        return gpu_ostq_fuse_input(g, B->qkv, d, g->learn_qk ? vec_at(g, l, V_QROW) : NULL, vec_at(g, l, V_SA), dst, err);
    case QSUR_OSTQ_WK:
        return gpu_ostq_fuse_input(g, B->qkv + d * d, kv, g->learn_qk ? vec_at(g, l, V_KROW) : NULL, vec_at(g, l, V_SA), dst,
                          err);
    case QSUR_OSTQ_WV:
        return fuse_wv(g, l, dst, err);
    case QSUR_OSTQ_WO:
        return fuse_wo(g, l, dst, err);
    case QSUR_OSTQ_W1:
        return gpu_ostq_fuse_input(g, B->w13, h, NULL, vec_at(g, l, V_SF), dst, err);
    case QSUR_OSTQ_W3:
        return gpu_ostq_fuse_input(g, B->w13 + h * d, h, vec_at(g, l, V_SUINV), vec_at(g, l, V_SF), dst, err);
    default:
        return fuse_w2(g, l, dst, err);
    }
}

/* Where linear i of layer l lives in the training buffers (weights or their
 * gradients), and its shape. */
float *gpu_ostq_train_slot(const qsur_gpu_ostq *g, int l, int i, int grad, int64_t *rows, int64_t *cols)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, h = c->hidden_dim;
    const train_layer *L = &g->t->L[l];
    float *qkv = grad ? L->dwqkv : L->wqkv, *w13 = grad ? L->dw13 : L->w13;
    *cols = i == QSUR_OSTQ_W2 ? h : d;
    switch (i) {
    case QSUR_OSTQ_WQ:
        *rows = d;
        return qkv;
    case QSUR_OSTQ_WK:
        *rows = kv;
        return qkv + d * d;
    case QSUR_OSTQ_WV:
        *rows = kv;
        return qkv + (d + kv) * d;
    case QSUR_OSTQ_WO:
        *rows = d;
        return grad ? L->dwo : L->wo;
    case QSUR_OSTQ_W1:
        *rows = h;
        return w13;
    case QSUR_OSTQ_W3:
        *rows = h;
        return w13 + h * d;
    default:
        *rows = d;
        return grad ? L->dw2 : L->w2;
    }
}

int qsur_gpu_ostq_fuse(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, V = c->vocab_size;
    cudaStream_t st = st_of(g);
    int rc = upload_params(g, o, err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        train_layer *L = &g->t->L[l];
        if ((rc = qsur_gpu_check(cudaMemcpyAsync(L->attention_norm, vec_at(g, l, V_NA), (size_t)d * 4,
                                                 cudaMemcpyDeviceToDevice, st), "norms", err)) ||
            (rc = qsur_gpu_check(cudaMemcpyAsync(L->ffn_norm, vec_at(g, l, V_NF), (size_t)d * 4,
                                                 cudaMemcpyDeviceToDevice, st), "norms", err)))
            break;
        for (int i = 0; i < 7 && !rc; i++) {
            int64_t rows, cols;
            float *w = gpu_ostq_train_slot(g, l, i, 0, &rows, &cols);
            rc = gpu_ostq_fuse_linear(g, l, i, w, err);
            if (!rc && g->wquant) /* RTN in place: the passes use Q(W) */
                qsur_cu_quant_cast(NULL, 0, w, w, rows, cols, &g->wq, st);
        }
    }
    if (!rc)
        rc = mm(g, 0, 0, V, d, d, g->E, d, g->R, d, 0.0f, g->t->emb, d, err);
    if (!rc)
        rc = mm(g, 0, 0, V, d, d, g->C, d, g->R, d, 0.0f, g->t->out, d, err);
    if (!rc)
        qsur_cu_fill(g->t->norm, 1.0f, d, st);
    return rc ? rc : qsur_gpu_check(cudaStreamSynchronize(st), "gpu ostquant fuse", err);
}
