/* Training forward and backward of the Llama runtime on the GPU
 * (qsur_gpu_train_*, qsur/backend.h): src/llama/llama_train.c's forward with
 * its tape and src/llama/llama_backward.c's gradients, in fp32 (every GEMM
 * fp32 with fp32 accumulation, no TF32), with the same hooks: activation and
 * KV fake quantization (straight-through gradients of src/quant_ste.c),
 * online qk / wo_in / w2_in transforms as dense matrices (the backward
 * multiplies by their transposes, which is their inverse for the orthogonal
 * hooks the engine attaches).
 *
 * Layout: wq|wk|wv stacked into one (dim + 2 kv) x dim matrix and w1|w3 into
 * one 2 hidden x dim matrix, as in gpu_model.c, and their gradients likewise
 * (d_wq is the first dim rows of d_wqkv). Attention runs over whole sequences
 * (T x T probabilities per head kept on the tape). Gradients accumulate on the
 * device from qsur_gpu_train_zero to qsur_gpu_train_grads, so a batch can run
 * as micro-batches. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>
#include "gpu_util.h"
#include "kernels.h"
#include "qsur/backend.h"
#include "gpu_train.h"
#include "train_kernels.h"

static int talloc(qsur_gpu_train *t, float **p, size_t floats, qsur_error *err)
{
    if (t->nallocs == t->capallocs) {
        int cap = t->capallocs ? 2 * t->capallocs : 64;
        void **n = realloc(t->allocs, (size_t)cap * sizeof *n);
        if (!n)
            return qsur_fail(err, QSUR_ERR_NOMEM, "gpu train: out of host memory");
        t->allocs = n;
        t->capallocs = cap;
    }
    int rc = qsur_gpu_malloc((void **)p, floats * sizeof(float), "training buffers", err);
    if (!rc) {
        t->allocs[t->nallocs++] = *p;
        t->bytes += (double)floats * sizeof(float);
    }
    return rc;
}

void qsur_gpu_train_free(qsur_gpu_train *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->nallocs; i++)
        cudaFree(t->allocs[i]);
    cudaFree(t->qk);
    cudaFree(t->wo_in);
    cudaFree(t->w2_in);
    cudaFree(t->tok);
    free(t->allocs);
    free(t->L);
    qsur_gpu_ctx_free(&t->ctx);
    free(t);
}

double qsur_gpu_train_bytes(const qsur_gpu_train *t)
{
    return t ? t->bytes : 0;
}

static int alloc_layer(qsur_gpu_train *t, train_layer *L, qsur_error *err)
{
    const qsur_llama_config *c = &t->cfg;
    size_t N = (size_t)t->N, d = (size_t)c->dim, kv = (size_t)c->kv_dim, h = (size_t)c->hidden_dim;
    size_t P = (size_t)t->B * c->n_heads * t->T * t->T;
    struct {
        float **p;
        size_t n;
    } b[] = {
        {&L->wqkv, (d + 2 * kv) * d}, {&L->wo, d * d}, {&L->w13, 2 * h * d}, {&L->w2, d * h},
        {&L->attention_norm, d}, {&L->ffn_norm, d}, {&L->dwqkv, (d + 2 * kv) * d}, {&L->dwo, d * d},
        {&L->dw13, 2 * h * d}, {&L->dw2, d * h}, {&L->dattention_norm, d}, {&L->dffn_norm, d},
        {&L->x_in, N * d}, {&L->xn1, N * d}, {&L->xq1, N * d}, {&L->q, N * d}, {&L->k, N * kv},
        {&L->kq, N * kv}, {&L->v, N * kv}, {&L->vq, N * kv}, {&L->P, P}, {&L->a, N * d},
        {&L->aq, N * d}, {&L->x_mid, N * d}, {&L->xn2, N * d}, {&L->xq2, N * d}, {&L->gu, N * 2 * h},
        {&L->g, N * h}, {&L->gq, N * h},
    };
    int rc = QSUR_OK;
    for (size_t i = 0; i < sizeof b / sizeof b[0] && !rc; i++)
        rc = talloc(t, b[i].p, b[i].n, err);
    return rc;
}

static int alloc_model(qsur_gpu_train *t, qsur_error *err)
{
    const qsur_llama_config *c = &t->cfg;
    size_t N = (size_t)t->N, d = (size_t)c->dim, kv = (size_t)c->kv_dim, h = (size_t)c->hidden_dim;
    size_t V = (size_t)c->vocab_size, wide = h > d ? h : d, half = (size_t)c->head_size / 2;
    int rc = QSUR_OK;
    for (int l = 0; l < c->n_layers && !rc; l++)
        rc = alloc_layer(t, &t->L[l], err);
    struct {
        float **p;
        size_t n;
    } b[] = {
        {&t->emb, V * d}, {&t->norm, d}, {&t->out, V * d}, {&t->demb, V * d}, {&t->dnorm, d},
        {&t->dout, V * d}, {&t->x_final, N * d}, {&t->xnf, N * d}, {&t->logits, N * V},
        {&t->dlogits, N * V}, {&t->rope_cos, (size_t)t->T * half}, {&t->rope_sin, (size_t)t->T * half},
        {&t->ones, N}, {(float **)&t->klrow, 2 * N}, {&t->x, N * d}, {&t->qkv, N * (d + 2 * kv)}, {&t->s1, N * wide},
        {&t->s2, N * wide}, {&t->dgu, N * 2 * h}, {&t->dq, N * d}, {&t->dk, N * kv}, {&t->dv, N * kv},
        {&t->dP, (size_t)c->n_heads * t->T * t->T}, {&t->dgrow, N * d}, {&t->tmp, N * wide},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0] && !rc; i++)
        rc = talloc(t, b[i].p, b[i].n, err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&t->tok, N * sizeof(int), "training buffers", err);
    return rc;
}

int qsur_gpu_train_new(qsur_gpu_train **out, const qsur_llama_config *cfg, int B, int T,
                       qsur_error *err)
{
    *out = NULL;
    if (B < 1 || T < 2 || (int64_t)B * T > (1 << 24))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu train: batch %d x %d tokens out of range", B, T);
    qsur_gpu_train *t = calloc(1, sizeof *t);
    if (!t)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu train: out of memory");
    t->cfg = *cfg;
    t->B = B;
    t->T = T;
    t->N = (int64_t)B * T;
    t->L = calloc((size_t)cfg->n_layers, sizeof *t->L);
    int rc = t->L ? qsur_gpu_ctx_init(&t->ctx, err)
                  : qsur_fail(err, QSUR_ERR_NOMEM, "gpu train: out of memory");
    if (!rc)
        rc = alloc_model(t, err);
    if (!rc)
        rc = qsur_gpu_rope_tables(&t->cfg, T, t->rope_cos, t->rope_sin, err);
    if (!rc) {
        qsur_cu_fill(t->ones, 1.0f, t->N, t->ctx.stream);
        rc = qsur_gpu_check(cudaStreamSynchronize(t->ctx.stream), "gpu train", err);
    }
    if (rc) {
        qsur_gpu_train_free(t);
        return rc;
    }
    *out = t;
    return QSUR_OK;
}

/* ---- upload ----------------------------------------------------------------- */

static qsur_cu_quant cu_quant(const qsur_quant_spec *q)
{
    qsur_cu_quant c = {q->bits, q->symmetric, (int)q->gran, q->group, q->clip, q->clip_search};
    return c;
}

/* count linears stacked row-wise into dst (fp32), each through its view. */
static int upload_linears(qsur_gpu_train *t, float *dst, const qsur_llama_linear *const *ls, int count,
                          qsur_error *err)
{
    for (int i = 0; i < count; i++) {
        qsur_weight_view v;
        void *tmp = NULL;
        int rc = qsur_llama_linear_view(ls[i], &v, &tmp, err);
        if (!rc)
            rc = qsur_gpu_upload_convert(&t->ctx, dst, 0, v.data, (int)v.dtype, v.rows * v.cols, err);
        free(tmp);
        if (rc)
            return rc;
        dst += v.rows * v.cols;
    }
    return QSUR_OK;
}

static int upload_floats(float *dst, const float *src, size_t n, qsur_error *err)
{
    return qsur_gpu_check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyHostToDevice), "upload", err);
}

int qsur_gpu_train_hooks(qsur_gpu_train *t, const qsur_llama_hooks *hk, qsur_error *err)
{
    char why[160];
    if (!qsur_gpu_train_supported(hk, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu train: %s", why);
    const qsur_quant_spec *wo = qsur_llama_act_wo(hk);
    t->act = cu_quant(&hk->act);
    t->act_wo = cu_quant(wo);
    t->kv = cu_quant(&hk->kv);
    t->act_sc = hk->act.ste_const;
    t->act_wo_sc = wo->ste_const;
    t->kv_sc = hk->kv.ste_const;
    float **R[3] = {&t->qk, &t->wo_in, &t->w2_in};
    for (int i = 0; i < 3; i++) {
        cudaFree(*R[i]);
        *R[i] = NULL;
    }
    int hs = t->cfg.head_size, rc;
    if ((rc = qsur_gpu_online_matrix(&hk->qk, hs, &t->qk, "q/k online", err)) ||
        (rc = qsur_gpu_online_matrix(&hk->wo_in, hs, &t->wo_in, "wo online", err)))
        return rc;
    return qsur_gpu_online_matrix(&hk->w2_in, t->cfg.hidden_dim, &t->w2_in, "w2 online", err);
}

int qsur_gpu_train_load(qsur_gpu_train *t, const qsur_llama *m, qsur_error *err)
{
    const qsur_llama_config *c = &t->cfg;
    if (m->cfg.dim != c->dim || m->cfg.hidden_dim != c->hidden_dim || m->cfg.n_layers != c->n_layers ||
        m->cfg.kv_dim != c->kv_dim || m->cfg.n_heads != c->n_heads || m->cfg.vocab_size != c->vocab_size)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu train: the model's shape is not the buffers'");
    int rc = qsur_gpu_train_hooks(t, &m->hooks, err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        const qsur_llama_layer *L = &m->layers[l];
        train_layer *G = &t->L[l];
        const qsur_llama_linear *qkv[3] = {&L->wq, &L->wk, &L->wv}, *w13[2] = {&L->w1, &L->w3};
        const qsur_llama_linear *wo = &L->wo, *w2 = &L->w2;
        if ((rc = upload_linears(t, G->wqkv, qkv, 3, err)) || (rc = upload_linears(t, G->wo, &wo, 1, err)) ||
            (rc = upload_linears(t, G->w13, w13, 2, err)) || (rc = upload_linears(t, G->w2, &w2, 1, err)) ||
            (rc = upload_floats(G->attention_norm, L->attention_norm, (size_t)c->dim, err)))
            break;
        rc = upload_floats(G->ffn_norm, L->ffn_norm, (size_t)c->dim, err);
    }
    const qsur_llama_linear *e = &m->embed, *o = &m->output;
    if (!rc)
        rc = upload_linears(t, t->emb, &e, 1, err);
    if (!rc)
        rc = upload_linears(t, t->out, &o, 1, err);
    if (!rc)
        rc = upload_floats(t->norm, m->norm, (size_t)c->dim, err);
    if (!rc)
        rc = qsur_gpu_check(cudaStreamSynchronize(t->ctx.stream), "gpu train upload", err);
    return rc;
}

/* ---- forward ---------------------------------------------------------------- */

/* out[N][rows] (ldc) = in[N][cols] W^T + beta out. */
static int linear(qsur_gpu_train *t, const float *W, int rows, int cols, const float *in, float *out,
                  int ldc, float beta, qsur_error *err)
{
    return qsur_gpu_gemm(&t->ctx, 0, 1, 0, rows, (int)t->N, cols, 1.0f, W, cols, in, cols, beta, out, 0,
                         ldc, err);
}

/* x (rows x n) <- x R (trans = 0) or x R^T (trans = 1), through tmp. */
static int online(qsur_gpu_train *t, const float *R, int n, float *x, int64_t rows, int trans,
                  qsur_error *err)
{
    if (!R)
        return QSUR_OK;
    int rc = qsur_gpu_gemm(&t->ctx, 0, trans, 0, n, (int)rows, n, 1.0f, R, n, x, n, 0.0f, t->tmp, 0, n,
                           err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpyAsync(x, t->tmp, (size_t)rows * n * sizeof(float),
                                            cudaMemcpyDeviceToDevice, t->ctx.stream), "online", err);
    return rc;
}

static int copy(qsur_gpu_train *t, float *dst, const float *src, int64_t n, qsur_error *err)
{
    return qsur_gpu_check(cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice,
                                          t->ctx.stream), "copy", err);
}

/* Query head h = kvh * group + j reads kv head kvh: one strided batch over
 * the kv heads per j. The pointers are sequence b's first rows. */
typedef struct {
    int T, hs, d, kv, group, kvh;
} att_shape;

static att_shape shape_of(const qsur_gpu_train *t)
{
    const qsur_llama_config *c = &t->cfg;
    att_shape s = {t->T, c->head_size, c->dim, c->kv_dim, c->n_heads / c->n_kv_heads, c->n_kv_heads};
    return s;
}

/* P (H x T x T) = causal softmax(scale Q K^T), O = P V, one sequence. */
static int attention_seq(qsur_gpu_train *t, const float *q, const float *k, const float *v, float *P,
                         float *o, qsur_error *err)
{
    att_shape s = shape_of(t);
    const long long TT = (long long)s.T * s.T;
    const float scale = (float)(1.0 / sqrt((double)s.hs));
    int rc = QSUR_OK;
    for (int j = 0; j < s.group && !rc; j++)
        rc = qsur_gpu_gemm_batched(&t->ctx, 0, 1, 0, s.T, s.T, s.hs, scale, k, s.kv, s.hs, q + j * s.hs, s.d,
                                   (long long)s.group * s.hs, 0.0f, P + j * TT, 0, s.T, s.group * TT, s.kvh,
                                   err);
    if (rc)
        return rc;
    qsur_cu_softmax_causal(P, 0, P, t->cfg.n_heads, s.T, s.T, 0, 1.0f, t->ctx.stream);
    for (int j = 0; j < s.group && !rc; j++)
        rc = qsur_gpu_gemm_batched(&t->ctx, 0, 0, 0, s.hs, s.T, s.T, 1.0f, v, s.kv, s.hs, P + j * TT, s.T,
                                   s.group * TT, 0.0f, o + j * s.hs, 0, s.d, (long long)s.group * s.hs,
                                   s.kvh, err);
    return rc;
}

static int layer_forward(qsur_gpu_train *t, train_layer *L, qsur_error *err)
{
    const qsur_llama_config *c = &t->cfg;
    cudaStream_t st = t->ctx.stream;
    const int64_t N = t->N;
    const int d = c->dim, kv = c->kv_dim, hs = c->head_size, h = c->hidden_dim;
    int rc;
    if ((rc = copy(t, L->x_in, t->x, N * d, err)))
        return rc;
    qsur_cu_rmsnorm(L->xn1, 0, t->x, L->attention_norm, N, d, c->norm_eps, st);
    qsur_cu_quant_cast(NULL, 0, L->xq1, L->xn1, N, d, &t->act, st);
    if ((rc = linear(t, L->wqkv, d + 2 * kv, d, L->xq1, t->qkv, d + 2 * kv, 0.0f, err)))
        return rc;
    qsur_cu_split(L->q, L->k, L->v, t->qkv, N, d, kv, st);
    qsur_cu_rope(L->q, N, t->T, d, hs, t->rope_cos, t->rope_sin, 1.0f, st);
    qsur_cu_rope(L->k, N, t->T, kv, hs, t->rope_cos, t->rope_sin, 1.0f, st);
    if ((rc = online(t, t->qk, hs, L->q, N * c->n_heads, 0, err)) ||
        (rc = online(t, t->qk, hs, L->k, N * c->n_kv_heads, 0, err)))
        return rc;
    qsur_cu_quant_cast(NULL, 0, L->kq, L->k, N * kv / hs, hs, &t->kv, st);
    qsur_cu_quant_cast(NULL, 0, L->vq, L->v, N * kv / hs, hs, &t->kv, st);
    const int64_t TT = (int64_t)t->T * t->T;
    for (int b = 0; b < t->B && !rc; b++) {
        int64_t r0 = (int64_t)b * t->T;
        rc = attention_seq(t, L->q + r0 * d, L->kq + r0 * kv, L->vq + r0 * kv,
                           L->P + (int64_t)b * c->n_heads * TT, L->a + r0 * d, err);
    }
    if (rc || (rc = online(t, t->wo_in, hs, L->a, N * c->n_heads, 0, err)))
        return rc;
    qsur_cu_quant_cast(NULL, 0, L->aq, L->a, N, d, &t->act_wo, st);
    if ((rc = linear(t, L->wo, d, d, L->aq, t->x, d, 1.0f, err)) || (rc = copy(t, L->x_mid, t->x, N * d, err)))
        return rc;
    qsur_cu_rmsnorm(L->xn2, 0, t->x, L->ffn_norm, N, d, c->norm_eps, st);
    qsur_cu_quant_cast(NULL, 0, L->xq2, L->xn2, N, d, &t->act, st);
    if ((rc = linear(t, L->w13, 2 * h, d, L->xq2, L->gu, 2 * h, 0.0f, err)))
        return rc;
    qsur_cu_swiglu(L->g, 0, L->gu, N, h, st);
    if ((rc = online(t, t->w2_in, h, L->g, N, 0, err)))
        return rc;
    qsur_cu_quant_cast(NULL, 0, L->gq, L->g, N, h, &t->act, st);
    return linear(t, L->w2, d, h, L->gq, t->x, d, 1.0f, err);
}

int qsur_gpu_train_forward(qsur_gpu_train *t, const int *tokens, float *logits, qsur_error *err)
{
    const qsur_llama_config *c = &t->cfg;
    const int64_t N = t->N;
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return qsur_fail(err, QSUR_ERR_ARG, "gpu train: token %lld = %d out of range 0..%d",
                             (long long)i, tokens[i], c->vocab_size - 1);
    cudaStream_t st = t->ctx.stream;
    int rc = qsur_gpu_check(cudaMemcpyAsync(t->tok, tokens, (size_t)N * sizeof(int),
                                            cudaMemcpyHostToDevice, st), "tokens", err);
    if (!rc)
        qsur_cu_embed(t->x, t->emb, t->tok, N, c->dim, st);
    for (int l = 0; l < c->n_layers && !rc; l++)
        rc = layer_forward(t, &t->L[l], err);
    if (!rc)
        rc = copy(t, t->x_final, t->x, N * c->dim, err);
    if (rc)
        return rc;
    qsur_cu_rmsnorm(t->xnf, 0, t->x_final, t->norm, N, c->dim, c->norm_eps, st);
    rc = linear(t, t->out, c->vocab_size, c->dim, t->xnf, t->logits, c->vocab_size, 0.0f, err);
    if (!rc && logits)
        rc = qsur_gpu_check(cudaMemcpy(logits, t->logits, (size_t)N * c->vocab_size * sizeof(float),
                                       cudaMemcpyDeviceToHost), "logits", err);
    return rc ? rc : qsur_gpu_check(cudaStreamSynchronize(t->ctx.stream), "gpu forward", err);
}

/* ---- backward --------------------------------------------------------------- */

/* For Y = X W^T (W rows x cols): dW += dY^T X; dX = beta dX + dY W. */
static int linear_backward(qsur_gpu_train *t, const float *W, int rows, int cols, const float *x,
                           const float *dy, float *dw, float *dx, float beta, qsur_error *err)
{
    int N = (int)t->N;
    int rc = qsur_gpu_gemm(&t->ctx, 0, 0, 1, cols, rows, N, 1.0f, x, cols, dy, rows, 1.0f, dw, 0, cols, err);
    return rc ? rc
              : qsur_gpu_gemm(&t->ctx, 0, 0, 0, cols, N, rows, 1.0f, W, cols, dy, rows, beta, dx, 0, cols,
                              err);
}

/* RMSNorm backward of rows x (t->N x n) into dxo, its gain's gradient added to dg. */
static int rmsnorm_backward(qsur_gpu_train *t, const float *x, const float *g, const float *dy, float *dxo,
                            float *dg, qsur_error *err)
{
    int n = t->cfg.dim;
    qsur_cu_rmsnorm_backward(dxo, t->dgrow, x, g, dy, t->N, n, t->cfg.norm_eps, t->ctx.stream);
    /* dg += sum over rows of dgrow: dgrow (n x N column-major) times ones */
    return qsur_gpu_gemm(&t->ctx, 0, 0, 0, n, 1, (int)t->N, 1.0f, t->dgrow, n, t->ones, (int)t->N, 1.0f,
                         dg, 0, n, err);
}

/* dO (rows of dn) -> dq, dk += , dv += for one sequence (P, q, kq, vq its rows). */
static int attention_backward_seq(qsur_gpu_train *t, const float *q, const float *kq, const float *vq,
                                  const float *P, const float *dO, float *dq, float *dk, float *dv,
                                  qsur_error *err)
{
    att_shape s = shape_of(t);
    const long long TT = (long long)s.T * s.T, sq = (long long)s.group * s.hs, sp = s.group * TT;
    const float scale = (float)(1.0 / sqrt((double)s.hs));
    int rc = QSUR_OK;
    for (int j = 0; j < s.group && !rc; j++) {
        /* dP = dO V^T;  dV += P^T dO */
        rc = qsur_gpu_gemm_batched(&t->ctx, 0, 1, 0, s.T, s.T, s.hs, 1.0f, vq, s.kv, s.hs, dO + j * s.hs, s.d,
                                   sq, 0.0f, t->dP + j * TT, 0, s.T, sp, s.kvh, err);
        if (!rc)
            rc = qsur_gpu_gemm_batched(&t->ctx, 0, 0, 1, s.hs, s.T, s.T, 1.0f, dO + j * s.hs, s.d, sq,
                                       P + j * TT, s.T, sp, 1.0f, dv, 0, s.kv, s.hs, s.kvh, err);
    }
    if (rc)
        return rc;
    qsur_cu_softmax_backward(t->dP, P, (int64_t)t->cfg.n_heads * s.T, s.T, t->ctx.stream);
    for (int j = 0; j < s.group && !rc; j++) {
        /* dQ = scale dS K;  dK += scale dS^T Q */
        rc = qsur_gpu_gemm_batched(&t->ctx, 0, 0, 0, s.hs, s.T, s.T, scale, kq, s.kv, s.hs, t->dP + j * TT,
                                   s.T, sp, 0.0f, dq + j * s.hs, 0, s.d, sq, s.kvh, err);
        if (!rc)
            rc = qsur_gpu_gemm_batched(&t->ctx, 0, 0, 1, s.hs, s.T, s.T, scale, q + j * s.hs, s.d, sq,
                                       t->dP + j * TT, s.T, sp, 1.0f, dk, 0, s.kv, s.hs, s.kvh, err);
    }
    return rc;
}

/* t->x holds dL/d(residual after the layer) on entry, dL/d(residual before) on exit. */
static int layer_backward(qsur_gpu_train *t, train_layer *L, qsur_error *err)
{
    const qsur_llama_config *c = &t->cfg;
    cudaStream_t st = t->ctx.stream;
    const int64_t N = t->N;
    const int d = c->dim, kv = c->kv_dim, hs = c->head_size, h = c->hidden_dim;
    float *dx = t->x, *s1 = t->s1, *s2 = t->s2;
    int rc;
    /* feed-forward: x += Q(w2_in(silu(h1) h3)) W2^T */
    if ((rc = linear_backward(t, L->w2, d, h, L->gq, dx, L->dw2, s1, 0.0f, err)))
        return rc;
    qsur_cu_quant_backward(s1, L->g, s1, N, h, &t->act, t->act_sc, st);
    if ((rc = online(t, t->w2_in, h, s1, N, 1, err)))
        return rc;
    qsur_cu_swiglu_backward(t->dgu, L->gu, s1, N, h, st);
    if ((rc = linear_backward(t, L->w13, 2 * h, d, L->xq2, t->dgu, L->dw13, s2, 0.0f, err)))
        return rc;
    qsur_cu_quant_backward(s2, L->xn2, s2, N, d, &t->act, t->act_sc, st);
    if ((rc = rmsnorm_backward(t, L->x_mid, L->ffn_norm, s2, s1, L->dffn_norm, err)))
        return rc;
    qsur_cu_add(dx, s1, N * d, st);

    /* attention: x += Q(wo_in(attn)) Wo^T */
    if ((rc = linear_backward(t, L->wo, d, d, L->aq, dx, L->dwo, s2, 0.0f, err)))
        return rc;
    qsur_cu_quant_backward(s2, L->a, s2, N, d, &t->act_wo, t->act_wo_sc, st);
    if ((rc = online(t, t->wo_in, hs, s2, N * c->n_heads, 1, err)))
        return rc;
    if ((rc = qsur_gpu_check(cudaMemsetAsync(t->dk, 0, (size_t)N * kv * sizeof(float), st), "backward", err)) ||
        (rc = qsur_gpu_check(cudaMemsetAsync(t->dv, 0, (size_t)N * kv * sizeof(float), st), "backward", err)))
        return rc;
    const int64_t TT = (int64_t)t->T * t->T;
    for (int b = 0; b < t->B && !rc; b++) {
        int64_t r0 = (int64_t)b * t->T;
        rc = attention_backward_seq(t, L->q + r0 * d, L->kq + r0 * kv, L->vq + r0 * kv,
                                    L->P + (int64_t)b * c->n_heads * TT, s2 + r0 * d, t->dq + r0 * d,
                                    t->dk + r0 * kv, t->dv + r0 * kv, err);
    }
    if (rc)
        return rc;
    qsur_cu_quant_backward(t->dk, L->k, t->dk, N * kv / hs, hs, &t->kv, t->kv_sc, st);
    qsur_cu_quant_backward(t->dv, L->v, t->dv, N * kv / hs, hs, &t->kv, t->kv_sc, st);
    if ((rc = online(t, t->qk, hs, t->dq, N * c->n_heads, 1, err)) ||
        (rc = online(t, t->qk, hs, t->dk, N * c->n_kv_heads, 1, err)))
        return rc;
    /* RoPE is a rotation per pair: its transpose rotates by the opposite angle */
    qsur_cu_rope(t->dq, N, t->T, d, hs, t->rope_cos, t->rope_sin, -1.0f, st);
    qsur_cu_rope(t->dk, N, t->T, kv, hs, t->rope_cos, t->rope_sin, -1.0f, st);
    const float *wk = L->wqkv + (size_t)d * d, *wv = wk + (size_t)kv * d;
    float *dwk = L->dwqkv + (size_t)d * d, *dwv = dwk + (size_t)kv * d;
    if ((rc = linear_backward(t, L->wqkv, d, d, L->xq1, t->dq, L->dwqkv, s2, 0.0f, err)) ||
        (rc = linear_backward(t, wk, kv, d, L->xq1, t->dk, dwk, s2, 1.0f, err)) ||
        (rc = linear_backward(t, wv, kv, d, L->xq1, t->dv, dwv, s2, 1.0f, err)))
        return rc;
    qsur_cu_quant_backward(s2, L->xn1, s2, N, d, &t->act, t->act_sc, st);
    if ((rc = rmsnorm_backward(t, L->x_in, L->attention_norm, s2, s1, L->dattention_norm, err)))
        return rc;
    qsur_cu_add(dx, s1, N * d, st);
    return QSUR_OK;
}

int qsur_gpu_train_kltop(qsur_gpu_train *t, const float *zfp, int topk, double weight, double *kl,
                         qsur_error *err)
{
    const int64_t N = t->N, V = t->cfg.vocab_size;
    int rc = t->zfp ? QSUR_OK : talloc(t, &t->zfp, (size_t)(N * V), err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpyAsync(t->zfp, zfp, (size_t)(N * V) * sizeof(float), cudaMemcpyHostToDevice,
                                            t->ctx.stream), "teacher logits", err);
    if (!rc && qsur_cu_kltop(t->dlogits, t->klrow, t->logits, t->zfp, N, (int)V, topk < 1 ? 1 : topk,
                             weight / (double)N, t->ctx.stream))
        rc = qsur_fail(err, QSUR_ERR_ARG, "gpu train: KL-Top of a %lld vocabulary does not fit the kernel",
                       (long long)V);
    double *h = rc ? NULL : malloc((size_t)N * sizeof(double));
    if (!rc && !h)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "gpu train: out of memory");
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(h, t->klrow, (size_t)N * sizeof(double), cudaMemcpyDeviceToHost), "KL-Top",
                            err);
    if (!rc) {
        double sum = 0;
        for (int64_t i = 0; i < N; i++)
            sum += h[i];
        *kl = sum / (double)N;
    }
    free(h);
    return rc;
}

int qsur_gpu_train_backward(qsur_gpu_train *t, const float *dlogits, qsur_error *err)
{
    const qsur_llama_config *c = &t->cfg;
    const int d = c->dim, V = c->vocab_size;
    int rc = dlogits ? qsur_gpu_check(cudaMemcpyAsync(t->dlogits, dlogits, (size_t)t->N * V * sizeof(float),
                                                      cudaMemcpyHostToDevice, t->ctx.stream), "dlogits", err)
                     : QSUR_OK;
    /* classifier and final norm */
    if (!rc)
        rc = linear_backward(t, t->out, V, d, t->xnf, t->dlogits, t->dout, t->s2, 0.0f, err);
    if (!rc)
        rc = rmsnorm_backward(t, t->x_final, t->norm, t->s2, t->x, t->dnorm, err);
    for (int l = c->n_layers - 1; l >= 0 && !rc; l--)
        rc = layer_backward(t, &t->L[l], err);
    if (!rc)
        qsur_cu_embed_backward(t->demb, t->x, t->tok, t->N, d, V, t->ctx.stream);
    return rc ? rc : qsur_gpu_check(cudaStreamSynchronize(t->ctx.stream), "gpu backward", err);
}

/* ---- gradients ------------------------------------------------------------- */

/* Every gradient buffer with its size (floats) and host destination in g
 * (NULL g: only the sizes). Returns the count. */
static int grad_list(qsur_gpu_train *t, qsur_llama_grads *g, float **dev, float **host, size_t *n)
{
    const qsur_llama_config *c = &t->cfg;
    size_t d = (size_t)c->dim, kv = (size_t)c->kv_dim, h = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    int k = 0;
#define G(D, H, S) (dev[k] = (D), host[k] = g ? (H) : NULL, n[k] = (S), k++)
    G(t->demb, g ? g->d_tok_embeddings : NULL, V * d);
    G(t->dnorm, g ? g->d_norm : NULL, d);
    G(t->dout, g ? g->d_output : NULL, V * d);
    for (int l = 0; l < c->n_layers; l++) {
        train_layer *L = &t->L[l];
        qsur_llama_layer_grads *H = g ? &g->layers[l] : NULL;
        G(L->dwqkv, H ? H->d_wq : NULL, d * d);
        G(L->dwqkv + d * d, H ? H->d_wk : NULL, kv * d);
        G(L->dwqkv + d * d + kv * d, H ? H->d_wv : NULL, kv * d);
        G(L->dwo, H ? H->d_wo : NULL, d * d);
        G(L->dw13, H ? H->d_w1 : NULL, h * d);
        G(L->dw13 + h * d, H ? H->d_w3 : NULL, h * d);
        G(L->dw2, H ? H->d_w2 : NULL, d * h);
        G(L->dattention_norm, H ? H->d_attention_norm : NULL, d);
        G(L->dffn_norm, H ? H->d_ffn_norm : NULL, d);
    }
#undef G
    return k;
}

/* g == NULL: zero the device gradients; else copy them to g. */
static int grads_xfer(qsur_gpu_train *t, qsur_llama_grads *g, qsur_error *err)
{
    int cnt = 3 + 9 * t->cfg.n_layers, rc = QSUR_OK;
    float **dev = malloc((size_t)cnt * sizeof(float *)), **host = malloc((size_t)cnt * sizeof(float *));
    size_t *n = malloc((size_t)cnt * sizeof(size_t));
    if (!dev || !host || !n)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "gpu train: out of memory");
    else
        cnt = grad_list(t, g, dev, host, n);
    for (int i = 0; i < cnt && !rc; i++)
        rc = g ? qsur_gpu_check(cudaMemcpy(host[i], dev[i], n[i] * sizeof(float), cudaMemcpyDeviceToHost),
                                "gradients", err)
               : qsur_gpu_check(cudaMemsetAsync(dev[i], 0, n[i] * sizeof(float), t->ctx.stream), "zero", err);
    free(dev);
    free(host);
    free(n);
    return rc;
}

int qsur_gpu_train_zero(qsur_gpu_train *t, qsur_error *err)
{
    return grads_xfer(t, NULL, err);
}

int qsur_gpu_train_grads(qsur_gpu_train *t, qsur_llama_grads *g, qsur_error *err)
{
    return grads_xfer(t, g, err);
}

int qsur_gpu_train_random(qsur_gpu_train *t, const qsur_llama_hooks *hooks, uint64_t seed,
                          qsur_error *err)
{
    const qsur_llama_config *c = &t->cfg;
    int64_t d = c->dim, h = c->hidden_dim, kv = c->kv_dim, V = c->vocab_size;
    float ad = 1.0f / sqrtf((float)d), ah = 1.0f / sqrtf((float)h);
    cudaStream_t st = t->ctx.stream;
    int rc = qsur_gpu_train_hooks(t, hooks, err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        train_layer *L = &t->L[l];
        uint64_t s = seed * 1000003u + (uint64_t)l * 8u;
        qsur_cu_random(L->wqkv, 0, (d + 2 * kv) * d, ad, 0, s + 1, st);
        qsur_cu_random(L->wo, 0, d * d, ad, 0, s + 2, st);
        qsur_cu_random(L->w13, 0, 2 * h * d, ad, 0, s + 3, st);
        qsur_cu_random(L->w2, 0, d * h, ah, 0, s + 4, st);
        qsur_cu_fill(L->attention_norm, 1.0f, d, st);
        qsur_cu_fill(L->ffn_norm, 1.0f, d, st);
    }
    if (rc)
        return rc;
    qsur_cu_random(t->emb, 0, V * d, 1.0f, 0, seed + 5, st);
    qsur_cu_fill(t->norm, 1.0f, d, st);
    qsur_cu_random(t->out, 0, V * d, ad, 0, seed + 6, st);
    return qsur_gpu_check(cudaStreamSynchronize(st), "random weights", err);
}

int qsur_gpu_quant_backward(const qsur_quant_spec *q, const float *x, int64_t rows, int64_t cols,
                            const float *dq, float *dx, qsur_error *err)
{
    char why[160];
    if (!qsur_gpu_quant_supported(q, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu: %s", why);
    size_t bytes = (size_t)(rows * cols) * sizeof(float);
    float *dx_d = NULL, *dq_d = NULL;
    int rc = qsur_gpu_malloc((void **)&dx_d, bytes, "quant backward", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&dq_d, bytes, "quant backward", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(dx_d, x, bytes, cudaMemcpyHostToDevice), "quant backward", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(dq_d, dq, bytes, cudaMemcpyHostToDevice), "quant backward", err);
    if (!rc) {
        qsur_cu_quant c = cu_quant(q);
        qsur_cu_quant_backward(dq_d, dx_d, dq_d, rows, cols, &c, q->ste_const, 0);
        rc = qsur_gpu_check(cudaMemcpy(dx, dq_d, bytes, cudaMemcpyDeviceToHost), "quant backward", err);
    }
    cudaFree(dx_d);
    cudaFree(dq_d);
    return rc;
}
