/* The Llama forward pass and perplexity on the GPU (qsur/backend.h).
 *
 * Layout on the device, per layer: wq|wk|wv stacked into one (dim + 2 kv) x dim
 * matrix and w1|w3 into one 2 hidden x dim matrix, so the projections sharing
 * an input are one GEMM each; all weights in the compute type ("ct": fp32 or
 * bf16), norms and embeddings in fp32. A forward pass of B x T tokens:
 *     x = emb[tok]                                  fp32 residual stream
 *     per layer: xn = rmsnorm(x); in = ct(Qa(xn)); qkv = in Wqkv^T (fp32 out)
 *                q, k, v = split + RoPE; q, k <- q R_qk, k R_qk; k, v <- Qkv
 *                per sequence and chunk of query rows: S = q k^T (ct), causal
 *                softmax in place, o = P v (fp32) -> o R_wo -> ct(Qa) -> x += o Wo^T
 *                xn = rmsnorm(x); gu = ct(Qa(xn)) W13^T; h = silu(g) u -> h R_w2
 *                -> ct(Qa) -> x += h W2^T
 *     logits = ct(rmsnorm(x)) Wout^T (fp32)
 * The residual additions are the GEMMs' beta = 1. Attention runs per sequence
 * in chunks of query rows so only the causal part of the scores is computed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include "../../llama/llama_sink.h"
#include "gpu_model.h"
#include "kernels.h"
#include "qsur/backend.h"
#include "qsur/clock.h"
#include "qsur/tensor.h"

static int gpu_alloc(qsur_gpu_model *g, void **p, size_t bytes, const char *what, qsur_error *err)
{
    int rc = qsur_gpu_malloc(p, bytes, what, err);
    if (!rc)
        g->bytes += (double)bytes;
    return rc;
}

static qsur_cu_quant cu_quant(const qsur_quant_spec *q)
{
    qsur_cu_quant c = {q->bits, q->symmetric, (int)q->gran, q->group, q->clip, q->clip_search};
    return c;
}

/* Uploads `count` views stacked row-wise into one ct matrix at dst. */
/* Uploads count linears one after another into dst (stacked rows), each
 * through its view (qsur_llama_linear_view: mapped bytes in their dtype, or
 * float32 materialised one linear at a time). */
static int upload_stacked(qsur_gpu_model *g, void *dst, const qsur_llama_linear *const *ls,
                          int count, qsur_error *err)
{
    char *d = dst;
    for (int i = 0; i < count; i++) {
        qsur_weight_view v;
        void *tmp = NULL;
        int rc = qsur_llama_linear_view(ls[i], &v, &tmp, err);
        if (!rc)
            rc = qsur_gpu_upload_convert(&g->ctx, d, g->bf16, v.data, (int)v.dtype,
                                         v.rows * v.cols, err);
        free(tmp);
        if (rc)
            return rc;
        d += (size_t)(v.rows * v.cols) * g->esz;
    }
    return QSUR_OK;
}

static int upload_f32(qsur_gpu_model *g, float **dst, const float *src, size_t n, const char *what,
                      qsur_error *err)
{
    int rc = gpu_alloc(g, (void **)dst, n * sizeof(float), what, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(*dst, src, n * sizeof(float), cudaMemcpyHostToDevice), what, err);
    return rc;
}

/* The dense matrix of an online hook (qsur_gpu_online_matrix), counted in g's bytes. */
static int upload_online(qsur_gpu_model *g, gpu_online *o, const qsur_llama_online *h, int n,
                         const char *what, qsur_error *err)
{
    o->n = n;
    int rc = qsur_gpu_online_matrix(h, n, &o->R, what, err);
    if (!rc && o->R)
        g->bytes += (double)n * n * sizeof(float);
    return rc;
}

static int alloc_buffers(qsur_gpu_model *g, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    size_t N = (size_t)g->max_batch * g->max_seq, S = (size_t)g->max_seq, half = c->head_size / 2;
    size_t wide = (size_t)(c->hidden_dim > c->dim ? c->hidden_dim : c->dim);
    size_t chunk = S < ATT_CHUNK ? S : ATT_CHUNK;
    struct {
        void **p;
        size_t bytes;
    } b[] = {
        {(void **)&g->x, N * c->dim * 4},
        {(void **)&g->xn, N * c->dim * 4},
        {(void **)&g->qkv, N * (c->dim + 2 * c->kv_dim) * 4},
        {(void **)&g->q, N * c->dim * 4},
        {(void **)&g->k, N * c->kv_dim * 4},
        {(void **)&g->v, N * c->kv_dim * 4},
        {(void **)&g->att, N * c->dim * 4},
        {(void **)&g->gu, N * 2 * c->hidden_dim * 4},
        {(void **)&g->h, N * c->hidden_dim * 4},
        {(void **)&g->tmp, N * wide * 4},
        {(void **)&g->logits, N * c->vocab_size * 4},
        {(void **)&g->rope_cos, S * half * 4},
        {(void **)&g->rope_sin, S * half * 4},
        {&g->in_ct, N * wide * g->esz},
        {&g->q_ct, N * c->dim * g->esz},
        {&g->k_ct, N * c->kv_dim * g->esz},
        {&g->v_ct, N * c->kv_dim * g->esz},
        {(void **)&g->scores, (size_t)c->n_heads * chunk * S * 4},
        {&g->probs, g->bf16 ? (size_t)c->n_heads * chunk * S * 2 : 0},
        {(void **)&g->tok, N * sizeof(int)},
        {(void **)&g->nll, N * sizeof(double)},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        int rc = gpu_alloc(g, b[i].p, b[i].bytes, "run buffers", err);
        if (rc)
            return rc;
    }
    return qsur_gpu_rope_tables(c, (int)S, g->rope_cos, g->rope_sin, err);
}

static int alloc_weights(qsur_gpu_model *g, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    size_t d = (size_t)c->dim, h = (size_t)c->hidden_dim, kv = (size_t)c->kv_dim;
    g->layers = calloc((size_t)c->n_layers, sizeof *g->layers);
    if (!g->layers)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu: out of memory");
    int rc = QSUR_OK;
    for (int l = 0; l < c->n_layers && !rc; l++) {
        gpu_layer *L = &g->layers[l];
        if ((rc = gpu_alloc(g, &L->wqkv, (d + 2 * kv) * d * g->esz, "weights", err)) ||
            (rc = gpu_alloc(g, &L->wo, d * d * g->esz, "weights", err)) ||
            (rc = gpu_alloc(g, &L->w13, 2 * h * d * g->esz, "weights", err)) ||
            (rc = gpu_alloc(g, &L->w2, d * h * g->esz, "weights", err)) ||
            (rc = gpu_alloc(g, (void **)&L->attention_norm, d * 4, "weights", err)))
            break;
        rc = gpu_alloc(g, (void **)&L->ffn_norm, d * 4, "weights", err);
    }
    if (!rc)
        rc = gpu_alloc(g, (void **)&g->tok_embeddings, (size_t)c->vocab_size * d * 4, "weights", err);
    if (!rc)
        rc = gpu_alloc(g, (void **)&g->norm, d * 4, "weights", err);
    if (!rc)
        rc = gpu_alloc(g, &g->output, (size_t)c->vocab_size * d * g->esz, "weights", err);
    return rc;
}

static int model_begin(qsur_gpu_model **out, const qsur_llama_config *cfg, qsur_gpu_precision prec,
                       int max_batch, int max_seq, qsur_error *err)
{
    *out = NULL;
    if (max_batch < 1 || max_seq < 2 || (int64_t)max_batch * max_seq > (1 << 26))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu: batch %d x seq %d out of range", max_batch, max_seq);
    qsur_gpu_model *g = calloc(1, sizeof *g);
    if (!g)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu: out of memory");
    g->cfg = *cfg;
    g->bf16 = prec == QSUR_GPU_BF16;
    g->esz = g->bf16 ? 2 : 4;
    g->max_batch = max_batch;
    g->max_seq = max_seq;
    g->att_chunk = ATT_CHUNK;
    g->cap_point = -1;
    qsur_quant_spec off = {16, 1, QSUR_GRAN_ROW, 0, 1.0, 0, 0, 0.0, 0, 0};
    g->act = g->kv = cu_quant(&off);
    int rc = qsur_gpu_ctx_init(&g->ctx, err);
    if (!rc)
        rc = alloc_weights(g, err);
    if (!rc)
        rc = alloc_buffers(g, err);
    if (rc) {
        qsur_gpu_model_free(g);
        return rc;
    }
    *out = g;
    return QSUR_OK;
}

int qsur_gpu_model_new(qsur_gpu_model **out, const qsur_llama *m, qsur_gpu_precision prec,
                       int max_batch, int max_seq, const qsur_progress *prog, qsur_error *err)
{
    *out = NULL;
    const qsur_llama_hooks *hk = &m->hooks;
    char why[160];
    if (!qsur_gpu_hooks_supported(hk, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu: %s", why);
    qsur_gpu_model *g;
    int rc = model_begin(&g, &m->cfg, prec, max_batch, max_seq, err);
    if (rc)
        return rc;
    const qsur_llama_config *c = &m->cfg;
    g->act = cu_quant(&hk->act);
    g->kv = cu_quant(&hk->kv);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        const qsur_llama_layer *L = &m->layers[l];
        gpu_layer *G = &g->layers[l];
        const qsur_llama_linear *qkv[3] = {&L->wq, &L->wk, &L->wv}, *w13[2] = {&L->w1, &L->w3};
        const qsur_llama_linear *wo = &L->wo, *w2 = &L->w2;
        if ((rc = upload_stacked(g, G->wqkv, qkv, 3, err)) ||
            (rc = upload_stacked(g, G->wo, &wo, 1, err)) ||
            (rc = upload_stacked(g, G->w13, w13, 2, err)) ||
            (rc = upload_stacked(g, G->w2, &w2, 1, err)))
            break;
        rc = qsur_gpu_check(cudaMemcpy(G->attention_norm, L->attention_norm, (size_t)c->dim * 4,
                                       cudaMemcpyHostToDevice), "norms", err);
        if (!rc)
            rc = qsur_gpu_check(cudaMemcpy(G->ffn_norm, L->ffn_norm, (size_t)c->dim * 4,
                                           cudaMemcpyHostToDevice), "norms", err);
        if (!rc)
            rc = qsur_progress_tick(prog, (l + 1.0) / (c->n_layers + 1.0), "upload", NAN, err);
    }
    if (!rc) { /* float32 on the device, from the embeddings in whatever form */
        qsur_weight_view v;
        void *tmp = NULL;
        rc = qsur_llama_linear_view(&m->embed, &v, &tmp, err);
        if (!rc)
            rc = qsur_gpu_upload_convert(&g->ctx, g->tok_embeddings, 0, v.data, (int)v.dtype,
                                         v.rows * v.cols, err);
        free(tmp);
    }
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->norm, m->norm, (size_t)c->dim * 4, cudaMemcpyHostToDevice),
                            "norms", err);
    const qsur_llama_linear *ov = &m->output;
    if (!rc)
        rc = upload_stacked(g, g->output, &ov, 1, err);
    if (!rc)
        rc = upload_online(g, &g->qk, &hk->qk, c->head_size, "q/k online", err);
    if (!rc)
        rc = upload_online(g, &g->wo_in, &hk->wo_in, c->head_size, "wo online", err);
    if (!rc)
        rc = upload_online(g, &g->w2_in, &hk->w2_in, c->hidden_dim, "w2 online", err);
    if (!rc)
        rc = qsur_gpu_check(cudaDeviceSynchronize(), "upload", err);
    if (rc) {
        qsur_gpu_model_free(g);
        return rc;
    }
    *out = g;
    return QSUR_OK;
}

int qsur_gpu_model_random(qsur_gpu_model **out, const qsur_llama_config *cfg,
                          qsur_gpu_precision prec, uint64_t seed, int max_batch, int max_seq,
                          qsur_error *err)
{
    qsur_gpu_model *g;
    int rc = model_begin(&g, cfg, prec, max_batch, max_seq, err);
    if (rc)
        return rc;
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, h = c->hidden_dim, kv = c->kv_dim;
    float ad = 1.0f / sqrtf((float)d), ah = 1.0f / sqrtf((float)h);
    cudaStream_t st = g->ctx.stream;
    for (int l = 0; l < c->n_layers; l++) {
        gpu_layer *L = &g->layers[l];
        uint64_t s = seed * 1000003u + (uint64_t)l * 8u;
        qsur_cu_random(L->wqkv, g->bf16, (d + 2 * kv) * d, ad, 0, s + 1, st);
        qsur_cu_random(L->wo, g->bf16, d * d, ad, 0, s + 2, st);
        qsur_cu_random(L->w13, g->bf16, 2 * h * d, ad, 0, s + 3, st);
        qsur_cu_random(L->w2, g->bf16, d * h, ah, 0, s + 4, st);
        qsur_cu_random(L->attention_norm, 0, d, 0, 1.0f, 0, st);
        qsur_cu_random(L->ffn_norm, 0, d, 0, 1.0f, 0, st);
    }
    qsur_cu_random(g->tok_embeddings, 0, (int64_t)c->vocab_size * d, 1.0f, 0, seed + 5, st);
    qsur_cu_random(g->norm, 0, d, 0, 1.0f, 0, st);
    qsur_cu_random(g->output, g->bf16, (int64_t)c->vocab_size * d, ad, 0, seed + 6, st);
    rc = qsur_gpu_check(cudaDeviceSynchronize(), "random weights", err);
    if (rc) {
        qsur_gpu_model_free(g);
        return rc;
    }
    *out = g;
    return QSUR_OK;
}

void qsur_gpu_model_free(qsur_gpu_model *g)
{
    if (!g)
        return;
    if (g->layers)
        for (int l = 0; l < g->cfg.n_layers; l++) {
            gpu_layer *L = &g->layers[l];
            cudaFree(L->wqkv), cudaFree(L->wo), cudaFree(L->w13), cudaFree(L->w2);
            cudaFree(L->attention_norm), cudaFree(L->ffn_norm);
        }
    free(g->layers);
    void *bufs[] = {g->tok_embeddings, g->norm, g->output, g->qk.R, g->wo_in.R, g->w2_in.R,
                    g->x, g->xn, g->qkv, g->q, g->k, g->v, g->att, g->gu, g->h, g->tmp,
                    g->logits, g->rope_cos, g->rope_sin, g->in_ct, g->q_ct, g->k_ct, g->v_ct,
                    g->scores, g->probs, g->tok, g->nll};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        cudaFree(bufs[i]);
    free(g->sink_host);
    qsur_gpu_ctx_free(&g->ctx);
    free(g);
}

double qsur_gpu_model_bytes(const qsur_gpu_model *g)
{
    return g ? g->bytes : 0;
}

int qsur_gpu_model_set_att_chunk(qsur_gpu_model *g, int rows, qsur_error *err)
{
    if (rows < 1 || rows > ATT_CHUNK)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu attention chunk: %d rows, expected 1..%d", rows,
                         ATT_CHUNK);
    g->att_chunk = rows;
    return QSUR_OK;
}

/* ---- forward ---------------------------------------------------------------- */

/* out[N][rows] (fp32, ldc) = in[N][cols] (ct) W^T (ct rows x cols), + beta out. */
static int linear(qsur_gpu_model *g, const void *W, int rows, int cols, const void *in, int64_t N,
                  float *out, int ldc, float beta, qsur_error *err)
{
    return qsur_gpu_gemm(&g->ctx, g->bf16, 1, 0, rows, (int)N, cols, 1.0f, W, cols, in, cols, beta,
                         out, 0, ldc, err);
}

/* The same with out in ct: in bf16 mode the wide q|k|v and gate|up outputs are
 * written and read back at half the bytes when nothing needs them in fp32. */
static int linear_ct(qsur_gpu_model *g, const void *W, int rows, int cols, const void *in, int64_t N,
                     void *out, qsur_error *err)
{
    return qsur_gpu_gemm(&g->ctx, g->bf16, 1, 0, rows, (int)N, cols, 1.0f, W, cols, in, cols, 0.0f,
                         out, 1, rows, err);
}

/* x (rows x n fp32) <- x R in place, through tmp. */
static int online(qsur_gpu_model *g, const gpu_online *o, float *x, int64_t rows, qsur_error *err)
{
    if (!o->R)
        return QSUR_OK;
    int rc = qsur_gpu_gemm(&g->ctx, 0, 0, 0, o->n, (int)rows, o->n, 1.0f, o->R, o->n, x, o->n, 0.0f,
                           g->tmp, 0, o->n, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpyAsync(x, g->tmp, (size_t)rows * o->n * 4,
                                            cudaMemcpyDeviceToDevice, g->ctx.stream), "online", err);
    return rc;
}

/* Attention of B sequences of T rows: q_ct, k_ct, v_ct -> out ([N][dim], fp32,
 * or ct when out_ct). */
static int attention(qsur_gpu_model *g, int B, int T, void *out, int out_ct, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    const int hs = c->head_size, group = c->n_heads / c->n_kv_heads, dim = c->dim, kv = c->kv_dim;
    const float scale = (float)(1.0 / sqrt((double)hs));
    const size_t e = g->esz;
    int rc = QSUR_OK;
    for (int b = 0; b < B && !rc; b++)
        for (int r0 = 0; r0 < T && !rc; r0 += g->att_chunk) {
            int R = T - r0 < g->att_chunk ? T - r0 : g->att_chunk, S = r0 + R;
            const char *qb = (const char *)g->q_ct + ((size_t)b * T + r0) * dim * e;
            const char *kb = (const char *)g->k_ct + (size_t)b * T * kv * e;
            const char *vb = (const char *)g->v_ct + (size_t)b * T * kv * e;
            /* Query head h = kvh * group + j reads kv head kvh: one strided batch
             * over the kv heads per j. scores[h][t][s] (ct, row stride S). */
            for (int j = 0; j < group && !rc; j++)
                rc = qsur_gpu_gemm_batched(&g->ctx, g->bf16, 1, 0, S, R, hs, scale, kb, kv,
                                           (long long)hs, qb + (size_t)j * hs * e, dim,
                                           (long long)group * hs, 0.0f,
                                           g->scores + (size_t)j * R * S, 0, S,
                                           (long long)group * R * S, c->n_kv_heads, err);
            if (rc)
                break;
            void *P = g->bf16 ? g->probs : (void *)g->scores;
            qsur_cu_softmax_causal(P, g->bf16, g->scores, c->n_heads, R, S, r0, 1.0f, g->ctx.stream);
            char *ob = (char *)out + ((size_t)b * T + r0) * dim * (out_ct ? e : 4);
            for (int j = 0; j < group && !rc; j++)
                rc = qsur_gpu_gemm_batched(&g->ctx, g->bf16, 0, 0, hs, R, S, 1.0f, vb, kv, (long long)hs,
                                           (const char *)P + (size_t)j * R * S * e, S,
                                           (long long)group * R * S, 0.0f, ob + (size_t)j * hs * (out_ct ? e : 4), out_ct, dim,
                                           (long long)group * hs, c->n_kv_heads, err);
        }
    return rc;
}

static int sink_wants(const qsur_gpu_model *g, int point)
{
    return g->sink && qsur_llama_sink_wants(g->sink, point, g->cur_layer);
}

/* Capture point `point` (QSUR_CAP_*) with its fp32 rows x: X^T X added to
 * g->cap_H when it is the one asked for; the rows copied to the host sink
 * when it keeps them. */
static int capture(qsur_gpu_model *g, int point, const float *x, int64_t N, int cols, qsur_error *err)
{
    int rc = QSUR_OK;
    if (g->cap_point == point) {
        rc = qsur_gpu_gram_add(&g->ctx, x, N, cols, g->cap_Xd, g->cap_H, g->cap_first, err);
        g->cap_first = 0;
    }
    if (!rc && sink_wants(g, point)) {
        rc = qsur_gpu_check(cudaMemcpy(g->sink_host, x, (size_t)N * cols * sizeof(float),
                                       cudaMemcpyDeviceToHost), "capture", err);
        if (!rc)
            qsur_llama_sink_rows(g->sink, point, g->cur_layer, g->sink_host, cols);
    }
    return rc;
}

/* The normed (or SwiGLU) input of a linear as the GEMM reads it: when no fake
 * quantization, transform or capture needs the fp32 value, kernels write
 * in_ct directly (one pass less over the activation each). */
static int direct_input(const qsur_gpu_model *g, int point)
{
    return g->act.bits >= 16 && g->cap_point != point && !sink_wants(g, point);
}

static int attention_block(qsur_gpu_model *g, const gpu_layer *L, int B, int T, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    cudaStream_t st = g->ctx.stream;
    const int64_t N = (int64_t)B * T;
    const int d = c->dim, kv = c->kv_dim, hs = c->head_size;
    const qsur_cu_quant off = {16, 1, 1, 0, 1.0, 0};
    int rc;
    if (direct_input(g, QSUR_CAP_ATTN_IN)) {
        qsur_cu_rmsnorm(g->in_ct, g->bf16, g->x, L->attention_norm, N, d, c->norm_eps, st);
    } else {
        qsur_cu_rmsnorm(g->xn, 0, g->x, L->attention_norm, N, d, c->norm_eps, st);
        if ((rc = capture(g, QSUR_CAP_ATTN_IN, g->xn, N, d, err)))
            return rc;
        qsur_cu_quant_cast(g->in_ct, g->bf16, NULL, g->xn, N, d, &g->act, st);
    }
    int direct = !g->qk.R && g->kv.bits >= 16 && !sink_wants(g, QSUR_CAP_K) && !sink_wants(g, QSUR_CAP_V);
    rc = direct ? linear_ct(g, L->wqkv, d + 2 * kv, d, g->in_ct, N, g->qkv, err)
                : linear(g, L->wqkv, d + 2 * kv, d, g->in_ct, N, g->qkv, d + 2 * kv, 0.0f, err);
    if (rc)
        return rc;
    if (direct) {
        qsur_cu_split_rope(g->q_ct, g->k_ct, g->v_ct, g->bf16, g->qkv, 1, N, T, d, kv, hs, g->rope_cos,
                           g->rope_sin, st);
    } else {
        qsur_cu_split_rope(g->q, g->k, g->v, 0, g->qkv, 0, N, T, d, kv, hs, g->rope_cos, g->rope_sin, st);
        if ((rc = online(g, &g->qk, g->q, N * c->n_heads, err)) ||
            (rc = online(g, &g->qk, g->k, N * c->n_kv_heads, err)) ||
            (rc = capture(g, QSUR_CAP_K, g->k, N, kv, err)) || (rc = capture(g, QSUR_CAP_V, g->v, N, kv, err)))
            return rc;
        /* K/V fake quant on rows of head_size, then every operand to ct */
        qsur_cu_quant_cast(NULL, 0, g->k, g->k, N * kv / hs, hs, &g->kv, st);
        qsur_cu_quant_cast(NULL, 0, g->v, g->v, N * kv / hs, hs, &g->kv, st);
        qsur_cu_quant_cast(g->q_ct, g->bf16, g->bf16 ? NULL : g->q_ct, g->q, N, d, &off, st);
        qsur_cu_quant_cast(g->k_ct, g->bf16, g->bf16 ? NULL : g->k_ct, g->k, N, kv, &off, st);
        qsur_cu_quant_cast(g->v_ct, g->bf16, g->bf16 ? NULL : g->v_ct, g->v, N, kv, &off, st);
    }
    if (!g->wo_in.R && direct_input(g, QSUR_CAP_WO_IN)) {
        if ((rc = attention(g, B, T, g->in_ct, 1, err)))
            return rc;
    } else {
        if ((rc = attention(g, B, T, g->att, 0, err)) || (rc = online(g, &g->wo_in, g->att, N * c->n_heads, err)) ||
            (rc = capture(g, QSUR_CAP_WO_IN, g->att, N, d, err)))
            return rc;
        qsur_cu_quant_cast(g->in_ct, g->bf16, NULL, g->att, N, d, &g->act, st);
    }
    return linear(g, L->wo, d, d, g->in_ct, N, g->x, d, 1.0f, err);
}

static int ffn_block(qsur_gpu_model *g, const gpu_layer *L, int B, int T, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    cudaStream_t st = g->ctx.stream;
    const int64_t N = (int64_t)B * T;
    const int d = c->dim, h = c->hidden_dim;
    int rc;
    if (direct_input(g, QSUR_CAP_FFN_IN)) {
        qsur_cu_rmsnorm(g->in_ct, g->bf16, g->x, L->ffn_norm, N, d, c->norm_eps, st);
    } else {
        qsur_cu_rmsnorm(g->xn, 0, g->x, L->ffn_norm, N, d, c->norm_eps, st);
        if ((rc = capture(g, QSUR_CAP_FFN_IN, g->xn, N, d, err)))
            return rc;
        qsur_cu_quant_cast(g->in_ct, g->bf16, NULL, g->xn, N, d, &g->act, st);
    }
    int direct = !g->w2_in.R && direct_input(g, QSUR_CAP_W2_IN);
    rc = direct && g->bf16 ? linear_ct(g, L->w13, 2 * h, d, g->in_ct, N, g->gu, err)
                           : linear(g, L->w13, 2 * h, d, g->in_ct, N, g->gu, 2 * h, 0.0f, err);
    if (rc)
        return rc;
    if (direct && g->bf16) {
        qsur_cu_swiglu_bf16(g->in_ct, g->gu, N, h, st);
    } else if (direct) {
        qsur_cu_swiglu(g->in_ct, g->bf16, g->gu, N, h, st);
    } else {
        qsur_cu_swiglu(g->h, 0, g->gu, N, h, st);
        if ((rc = online(g, &g->w2_in, g->h, N, err)) || (rc = capture(g, QSUR_CAP_W2_IN, g->h, N, h, err)))
            return rc;
        qsur_cu_quant_cast(g->in_ct, g->bf16, NULL, g->h, N, h, &g->act, st);
    }
    return linear(g, L->w2, d, h, g->in_ct, N, g->x, d, 1.0f, err);
}

int qsur_gpu_layer_forward(qsur_gpu_model *g, int l, int B, int T, qsur_error *err)
{
    g->cur_layer = l;
    int rc = attention_block(g, &g->layers[l], B, T, err);
    return rc ? rc : ffn_block(g, &g->layers[l], B, T, err);
}

/* The embeddings of B x T tokens (host ids) into g->x; g->tok holds the ids. */
static int embed(qsur_gpu_model *g, const int *tokens, int B, int T, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    if (B < 1 || B > g->max_batch || T < 1 || T > g->max_seq)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu forward: batch %d x %d tokens exceeds the model's "
                         "buffers (batch %d, seq %d)", B, T, g->max_batch, g->max_seq);
    const int64_t N = (int64_t)B * T;
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return qsur_fail(err, QSUR_ERR_ARG, "gpu forward: token %lld = %d out of range 0..%d",
                             (long long)i, tokens[i], c->vocab_size - 1);
    cudaStream_t st = g->ctx.stream;
    int rc = qsur_gpu_check(cudaMemcpyAsync(g->tok, tokens, (size_t)N * sizeof(int),
                                            cudaMemcpyHostToDevice, st), "tokens", err);
    if (!rc)
        qsur_cu_embed(g->x, g->tok_embeddings, g->tok, N, c->dim, st);
    return rc;
}

/* Logits of B x T tokens (host ids) into g->logits. */
static int forward(qsur_gpu_model *g, const int *tokens, int B, int T, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    cudaStream_t st = g->ctx.stream;
    const int64_t N = (int64_t)B * T;
    int rc = embed(g, tokens, B, T, err);
    for (int l = 0; l < c->n_layers && !rc; l++)
        rc = qsur_gpu_layer_forward(g, l, B, T, err);
    if (rc)
        return rc;
    qsur_cu_rmsnorm(g->in_ct, g->bf16, g->x, g->norm, N, c->dim, c->norm_eps, st);
    return linear(g, g->output, c->vocab_size, c->dim, g->in_ct, N, g->logits, c->vocab_size, 0.0f, err);
}

int qsur_gpu_forward_sink(qsur_gpu_model *g, const int *tokens, int B, int T, int run_layers,
                          struct qsur_llama_capture_sink *sink, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    if (run_layers < 1 || run_layers > c->n_layers)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu capture: %d layers of %d", run_layers, c->n_layers);
    if (!g->sink_host) {
        size_t wide = (size_t)(c->hidden_dim > c->dim ? c->hidden_dim : c->dim);
        g->sink_host = qsur_alloc((size_t)g->max_batch * g->max_seq * wide, sizeof(float));
        if (!g->sink_host)
            return qsur_fail(err, QSUR_ERR_NOMEM, "gpu capture: out of host memory for %d x %d x %zu",
                             g->max_batch, g->max_seq, wide);
    }
    int rc = embed(g, tokens, B, T, err);
    g->sink = sink;
    for (int l = 0; l < run_layers && !rc; l++)
        rc = qsur_gpu_layer_forward(g, l, B, T, err);
    g->sink = NULL;
    return rc;
}

int qsur_gpu_last_logits(qsur_gpu_model *g, const int *tokens, int T, float *logits,
                         qsur_error *err)
{
    const int64_t V = g->cfg.vocab_size;
    int rc = forward(g, tokens, 1, T, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(logits, g->logits + (int64_t)(T - 1) * V, (size_t)V * 4,
                                       cudaMemcpyDeviceToHost), "logits", err);
    return rc;
}

int qsur_gpu_forward_logits(qsur_gpu_model *g, const int *tokens, int B, int T, float *logits,
                            qsur_error *err)
{
    int rc = forward(g, tokens, B, T, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(logits, g->logits, (size_t)B * T * g->cfg.vocab_size * 4,
                                       cudaMemcpyDeviceToHost), "logits", err);
    return rc;
}

int qsur_gpu_perplexity(qsur_gpu_model *g, const qsur_tokens *t, int seq_len, int max_seqs,
                        int batch, const qsur_progress *prog, qsur_llama_ppl *out,
                        qsur_gpu_timing *timing, qsur_error *err)
{
    memset(out, 0, sizeof *out);
    if (timing)
        memset(timing, 0, sizeof *timing);
    int n_seqs = max_seqs;
    if (batch <= 0 || batch > g->max_batch)
        batch = g->max_batch;
    int rc = qsur_llama_plan_sequences(t, &seq_len, &n_seqs, &batch, err);
    if (rc)
        return rc;
    if (seq_len > g->max_seq)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu perplexity: sequences of %d exceed the model's %d "
                         "positions", seq_len, g->max_seq);
    double *nll_h = malloc((size_t)batch * (seq_len - 1) * sizeof(double));
    if (!nll_h)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu perplexity: out of memory");
    double nll = 0, t0 = qsur_seconds();
    int64_t count = 0;
    for (int first = 0; first < n_seqs && !rc; first += batch) {
        int B = n_seqs - first < batch ? n_seqs - first : batch;
        const int *tok = t->ids + (int64_t)first * seq_len;
        if ((rc = forward(g, tok, B, seq_len, err)))
            break;
        qsur_cu_nll(g->nll, g->logits, g->tok, B, seq_len, g->cfg.vocab_size, g->ctx.stream);
        rc = qsur_gpu_check(cudaMemcpy(nll_h, g->nll, (size_t)B * (seq_len - 1) * sizeof(double),
                                       cudaMemcpyDeviceToHost), "perplexity", err);
        if (rc)
            break;
        for (int64_t i = 0; i < (int64_t)B * (seq_len - 1); i++)
            nll += nll_h[i];
        count += (int64_t)B * (seq_len - 1);
        if (!isfinite(nll)) {
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "gpu perplexity: non-finite loss in sequences "
                           "%d..%d", first, first + B - 1);
            break;
        }
        char what[64];
        snprintf(what, sizeof what, "ppl %.0f tok/s",
                 (double)(first + B) * seq_len / (qsur_seconds() - t0));
        rc = qsur_progress_tick(prog, (double)(first + B) / n_seqs, what, exp(nll / count), err);
    }
    free(nll_h);
    if (rc)
        return rc;
    if (timing) {
        timing->seconds = qsur_seconds() - t0;
        timing->tokens = (int64_t)n_seqs * seq_len;
    }
    out->nll = nll / (double)count;
    out->ppl = exp(out->nll);
    out->n_predicted = count;
    out->n_seqs = n_seqs;
    return QSUR_OK;
}
