/* The Llama forward pass over a batch of sequences (llama2.c's forward(), but
 * each linear is ONE sgemm over all B*T tokens and attention is two sgemm per
 * head), with a KV cache for incremental decoding and the quantization and
 * online-rotation hooks of qsur_llama_hooks.
 *
 * Block functions take explicit buffers so that a backward pass can mirror
 * them one by one: rmsnorm -> linears -> rope -> attention -> linear ->
 * residual -> rmsnorm -> linears -> swiglu -> linear -> residual. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qsur/bf16_matvec.h"
#include "qsur/clock.h"
#include "qsur/parallel.h"
#include "llama_sink.h"
#include "qsur/llama.h"

/* Rows of queries per attention block: scores of a block only reach the keys
 * up to its last row, so causal attention does about half the full T x S work. */
#define ATT_BLOCK 32

/* Token rows up to which a bf16 linear is multiplied by qsur_bf16_matvec
 * (each weight read once, 2 bytes, no scratch) instead of being widened for
 * an sgemm (read 2 bytes, write 4, read 4 again): a decoding step or a short
 * prompt. With more rows the sgemm's blocking pays for the widening (a
 * 5632 x 2048 linear on 2 threads: 1 row 2.6 ms against 23 ms, 8 rows 12 ms
 * against 27 ms, even at 16, 32 rows 39 ms against 23 ms). */
#define MATVEC_ROWS 8

/* Threads attention splits its heads over (at most; scratch for each). */
#define ATT_THREADS 4

/* ---- state --------------------------------------------------------------- */

void qsur_llama_state_free(qsur_llama_state *s)
{
    if (!s)
        return;
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->hb);
    free(s->hb2);
    free(s->xq);
    free(s->att);
    free(s->key_cache);
    free(s->value_cache);
    free(s->rope_cos);
    free(s->rope_sin);
    free(s->logits);
    free(s->wbuf);
    free(s);
}

int qsur_llama_state_new(qsur_llama_state **out, const qsur_llama *m, int max_batch,
                         int max_seq, qsur_error *err)
{
    *out = NULL;
    const qsur_llama_config *c = &m->cfg;
    if (max_batch < 1 || max_seq < 1 || max_batch > (1 << 16) || max_seq > (1 << 20))
        return qsur_fail(err, QSUR_ERR_ARG, "run state: batch %d x seq %d out of range "
                         "(1..65536 x 1..1048576)", max_batch, max_seq);
    if ((int64_t)max_batch * max_seq > INT32_MAX / 64)
        return qsur_fail(err, QSUR_ERR_ARG, "run state: batch %d x seq %d = too many rows for "
                         "BLAS int dimensions", max_batch, max_seq);
    qsur_llama_state *s = calloc(1, sizeof *s);
    if (!s)
        return qsur_fail(err, QSUR_ERR_NOMEM, "run state: out of memory");
    s->max_batch = max_batch;
    s->max_seq = max_seq;
    s->dim = c->dim;
    s->hidden_dim = c->hidden_dim;
    s->kv_dim = c->kv_dim;
    s->n_heads = c->n_heads;
    s->head_size = c->head_size;
    s->n_layers = c->n_layers;
    s->vocab_size = c->vocab_size;
    size_t N = (size_t)max_batch * (size_t)max_seq, S = (size_t)max_seq;
    size_t wide = (size_t)(c->hidden_dim > c->dim ? c->hidden_dim : c->dim);
    size_t cache = (size_t)c->n_layers * N * (size_t)c->kv_dim;
    s->x = qsur_alloc(N, (size_t)c->dim * sizeof(float));
    s->xb = qsur_alloc(N, (size_t)c->dim * sizeof(float));
    s->xb2 = qsur_alloc(N, (size_t)c->dim * sizeof(float));
    s->q = qsur_alloc(N, (size_t)c->dim * sizeof(float));
    s->k = qsur_alloc(N, (size_t)c->kv_dim * sizeof(float));
    s->v = qsur_alloc(N, (size_t)c->kv_dim * sizeof(float));
    s->hb = qsur_alloc(N, (size_t)c->hidden_dim * sizeof(float));
    s->hb2 = qsur_alloc(N, (size_t)c->hidden_dim * sizeof(float));
    s->xq = qsur_alloc(N, wide * sizeof(float));
    s->att = qsur_alloc((size_t)ATT_THREADS * ATT_BLOCK, S * sizeof(float));
    s->key_cache = qsur_alloc(cache, sizeof(float));
    s->value_cache = qsur_alloc(cache, sizeof(float));
    s->rope_cos = qsur_alloc(S, (size_t)(c->head_size / 2) * sizeof(float));
    s->rope_sin = qsur_alloc(S, (size_t)(c->head_size / 2) * sizeof(float));
    s->logits = qsur_alloc(N, (size_t)c->vocab_size * sizeof(float));
    /* weight scratch: the widest matrix (the classifier) or QSUR_WBUF_FLOATS,
     * whichever is smaller, and at least one row of the widest linear */
    int64_t big = (int64_t)c->vocab_size * c->dim, hd = (int64_t)c->hidden_dim * c->dim;
    big = big > hd ? big : hd;
    s->wbuf_floats = big < QSUR_WBUF_FLOATS ? big : QSUR_WBUF_FLOATS;
    if (s->wbuf_floats < (int64_t)wide)
        s->wbuf_floats = (int64_t)wide;
    s->wbuf = qsur_alloc((size_t)s->wbuf_floats, sizeof(float));
    if (!s->x || !s->xb || !s->xb2 || !s->q || !s->k || !s->v || !s->hb || !s->hb2 ||
        !s->xq || !s->att || !s->key_cache || !s->value_cache || !s->rope_cos ||
        !s->rope_sin || !s->logits || !s->wbuf) {
        qsur_llama_state_free(s);
        return qsur_fail(err, QSUR_ERR_NOMEM, "run state: cannot allocate buffers for "
                         "batch %d x seq %d", max_batch, max_seq);
    }
    /* Angles in double: pos * theta^(-2i/hs) loses ~1e-4 rad in float at
     * pos 4096, which is visible in the logits. */
    int half = c->head_size / 2;
    for (int p = 0; p < max_seq; p++)
        for (int i = 0; i < half; i++) {
            double a = p * pow(c->rope_theta, -2.0 * i / c->head_size);
            s->rope_cos[(size_t)p * half + i] = (float)cos(a);
            s->rope_sin[(size_t)p * half + i] = (float)sin(a);
        }
    *out = s;
    return QSUR_OK;
}

/* ---- building blocks ----------------------------------------------------- */

void qsur_llama_rmsnorm(float *out, const float *x, const float *g, int64_t rows,
                        int64_t n, double eps)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        float *o = out + r * n;
        double ss = 0;
        for (int64_t j = 0; j < n; j++)
            ss += (double)xr[j] * xr[j];
        float inv = (float)(1.0 / sqrt(ss / (double)n + eps));
        for (int64_t j = 0; j < n; j++)
            o[j] = xr[j] * inv * g[j];
    }
}

void qsur_llama_rope(float *x, int64_t rows, int n_heads, int head_size, int pos0,
                     const float *cos_t, const float *sin_t)
{
    int half = head_size / 2;
    for (int64_t r = 0; r < rows; r++) {
        const float *c = cos_t + (int64_t)(pos0 + r) * half;
        const float *s = sin_t + (int64_t)(pos0 + r) * half;
        for (int h = 0; h < n_heads; h++) {
            float *v = x + (r * n_heads + h) * head_size;
            for (int i = 0; i < half; i++) {
                float a = v[2 * i], b = v[2 * i + 1];
                v[2 * i] = a * c[i] - b * s[i];
                v[2 * i + 1] = a * s[i] + b * c[i];
            }
        }
    }
}

void qsur_llama_swiglu(float *g, const float *u, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* ---- pieces of the forward pass ------------------------------------------ */

/* The input a linear actually sees: `in` itself, or its per-token fake
 * quantization in s->xq when activation quantization is on. */
static int linear_input(const qsur_quant_spec *spec, qsur_llama_state *s, const float *in,
                        int64_t N, int64_t cols, const float **use, qsur_error *err)
{
    *use = in;
    if (spec->bits >= 16)
        return QSUR_OK;
    double t0 = qsur_seconds();
    int rc = qsur_fake_quant(spec, in, N, cols, s->xq, NULL, err);
    s->timers.quant += qsur_seconds() - t0;
    *use = s->xq;
    return rc;
}

typedef struct {
    const qsur_llama_linear *l;
    int64_t r0, r1;
    float *dst;
} rows_job;

static void forward_rows_part(void *ctx, int part, int parts)
{
    const rows_job *j = ctx;
    int64_t a = j->r0 + (j->r1 - j->r0) * part / parts;
    int64_t b = j->r0 + (j->r1 - j->r0) * (part + 1) / parts;
    qsur_llama_linear_forward_rows(j->l, a, b, j->dst + (a - j->r0) * j->l->cols);
}

/* qsur_llama_linear_forward_rows of rows r0..r1-1 into dst, the rows split
 * over `threads` threads: widening or decoding is bound by memory and by one
 * core's loads, and the sgemm that follows waits for it. */
static void forward_rows_split(const qsur_llama_linear *l, int64_t r0, int64_t r1, float *dst,
                               int threads)
{
    rows_job j = {l, r0, r1, dst};
    qsur_parallel((r1 - r0) * l->cols < ((int64_t)1 << 20) ? 1 : threads, forward_rows_part, &j);
}

/* out[N][rows] = in[N][cols] W^T (W row-major rows x cols: the packed codes,
 * wq, or the weights, whichever the forward uses). Float weights are used in
 * place; any other form is converted slice by slice (as many rows as fit in
 * s->wbuf) and each slice is one sgemm writing its columns of out (ldc = rows). */
static void linear(qsur_llama_state *s, const qsur_llama_linear *l, const float *in,
                   int64_t N, float *out)
{
    const float *w = l->qp ? NULL : l->wq ? l->wq : l->w;
    const float *f32 = qsur_llama_linear_f32(l); /* also float32 stored bytes, in place */
    double t0 = qsur_seconds();
    if (!f32 && !l->qp && l->st.data && l->st.dtype == QSUR_DTYPE_BF16 && N <= MATVEC_ROWS &&
        !s->no_matvec) {
        /* a decoding step: straight from the bf16 bytes, nothing widened into wbuf */
        qsur_bf16_matvec(in, (int)N, l->cols, l->st.data, l->rows, l->st.rope_heads, out, l->rows,
                         openblas_get_num_threads());
        s->timers.gemm += qsur_seconds() - t0;
        return;
    }
    if (w) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)l->rows, (int)l->cols,
                    1.0f, in, (int)l->cols, w, (int)l->cols, 0.0f, out, (int)l->rows);
        s->timers.gemm += qsur_seconds() - t0;
        return;
    }
    /* float32 stored weights (a mapped llama2.c file, an F32 safetensors) are
     * read in place but in the same slices as a converted form, so that a
     * model computes the same bits whichever of the two it holds */
    int64_t step = s->wbuf_floats / l->cols;
    for (int64_t r0 = 0; r0 < l->rows; r0 += step) {
        int64_t r1 = r0 + step < l->rows ? r0 + step : l->rows;
        const float *ws = f32 ? f32 + r0 * l->cols : s->wbuf;
        double tc = qsur_seconds();
        if (!f32)
            forward_rows_split(l, r0, r1, s->wbuf, openblas_get_num_threads());
        s->timers.convert += qsur_seconds() - tc;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)(r1 - r0), (int)l->cols,
                    1.0f, in, (int)l->cols, ws, (int)l->cols, 0.0f, out + r0, (int)l->rows);
    }
    s->timers.gemm += qsur_seconds() - t0;
}

static void capture(qsur_llama_state *s, int kind, int layer, const float *x, int64_t cols)
{
    if (s->capture)
        qsur_llama_sink_rows(s->capture, kind, layer, x, cols);
}

static float *cache_row(const qsur_llama_state *s, float *cache, int layer, int b, int p)
{
    return cache + (((size_t)layer * s->max_batch + b) * s->max_seq + p) * s->kv_dim;
}

/* One head h of sequence b: q [T][dim] against the cached K/V of positions
 * 0..pos+T-1 -> its columns of out [T][dim]. Query head h reads kv head
 * h / (n_heads / n_kv_heads) (grouped-query). att: ATT_BLOCK x S scratch. */
static void attend_head(const qsur_llama *m, const qsur_llama_state *s, int layer, int b, int h,
                        int T, int pos, float *att, float *out)
{
    const qsur_llama_config *c = &m->cfg;
    int hs = c->head_size, g = h / (c->n_heads / c->n_kv_heads);
    float scale = (float)(1.0 / sqrt((double)hs)), inv_sum[ATT_BLOCK];
    const float *kc = cache_row(s, s->key_cache, layer, b, 0);
    const float *vc = cache_row(s, s->value_cache, layer, b, 0);
    for (int r0 = 0; r0 < T; r0 += ATT_BLOCK) {
        int R = T - r0 < ATT_BLOCK ? T - r0 : ATT_BLOCK;
        int S = pos + r0 + R; /* keys 0..S-1 are visible to some row of the block */
        const float *qh = s->q + ((size_t)b * T + r0) * c->dim + (size_t)h * hs;
        /* att[R][S] = scale * Q_h K_g^T (row-major; lda = dim, ldb = kv_dim) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, S, hs, scale, qh, c->dim,
                    kc + (size_t)g * hs, c->kv_dim, 0.0f, att, S);
        for (int t = 0; t < R; t++) {
            float *a = att + (size_t)t * S;
            int last = pos + r0 + t; /* causal: keys 0..last */
            float mx = a[0];
            for (int j = 1; j <= last; j++)
                mx = a[j] > mx ? a[j] : mx;
            float sum = 0;
            for (int j = 0; j <= last; j++) {
                a[j] = expf(a[j] - mx);
                sum += a[j];
            }
            inv_sum[t] = 1.0f / sum;
            for (int j = last + 1; j < S; j++)
                a[j] = 0.0f;
        }
        /* out_h[R][hs] = P[R][S] V_g[S][hs] (ldc = dim: heads side by side),
         * with the softmax normalisation applied to the R x hs result
         * instead of the R x S probabilities. */
        float *oh = out + ((size_t)b * T + r0) * c->dim + (size_t)h * hs;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, R, hs, S, 1.0f, att, S,
                    vc + (size_t)g * hs, c->kv_dim, 0.0f, oh, c->dim);
        for (int t = 0; t < R; t++)
            for (int i = 0; i < hs; i++)
                oh[(size_t)t * c->dim + i] *= inv_sum[t];
    }
}

typedef struct {
    const qsur_llama *m;
    const qsur_llama_state *s;
    int layer, B, T, pos;
    float *out;
} att_job;

/* Heads part, part + parts, ... of every sequence, with this part's scratch. */
static void attend_part(void *ctx, int part, int parts)
{
    const att_job *j = ctx;
    int H = j->m->cfg.n_heads;
    float *att = j->s->att + (size_t)part * ATT_BLOCK * j->s->max_seq;
    for (int i = part; i < j->B * H; i += parts)
        attend_head(j->m, j->s, j->layer, i / H, i % H, j->T, j->pos, att, j->out);
}

/* Causal attention of every head of the current call into out [B*T][dim].
 * The heads are independent and their products small (a block of 32 query
 * rows against at most S keys of one head): rather than each sgemm waking
 * the BLAS threads, the heads are split over that many threads, each
 * running single-threaded sgemm (numbers unchanged: each head's products are
 * the same calls). */
static void attention(const qsur_llama *m, qsur_llama_state *s, int layer, int B, int T,
                      int pos, float *out)
{
    double t0 = qsur_seconds();
    int threads = openblas_get_num_threads();
    int parts = threads < ATT_THREADS ? threads : ATT_THREADS;
    if (parts > B * m->cfg.n_heads)
        parts = B * m->cfg.n_heads;
    att_job j = {m, s, layer, B, T, pos, out};
    if (parts > 1)
        openblas_set_num_threads(1);
    qsur_parallel(parts, attend_part, &j);
    if (parts > 1)
        openblas_set_num_threads(threads);
    s->timers.attention += qsur_seconds() - t0;
}

/* K and V of the current call -> (fake-quantized) -> cache positions pos.. */
static int store_kv(const qsur_llama *m, qsur_llama_state *s, int layer, int B, int T,
                    int pos, qsur_error *err)
{
    int64_t N = (int64_t)B * T, kv = m->cfg.kv_dim, hs = m->cfg.head_size;
    if (m->hooks.kv.bits < 16) {
        double t0 = qsur_seconds();
        /* rows of head_size: QSUR_GRAN_ROW = one scale per head per token */
        int rc = qsur_fake_quant(&m->hooks.kv, s->k, N * kv / hs, hs, s->k, NULL, err);
        if (!rc)
            rc = qsur_fake_quant(&m->hooks.kv, s->v, N * kv / hs, hs, s->v, NULL, err);
        s->timers.quant += qsur_seconds() - t0;
        if (rc)
            return rc;
    }
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            size_t r = ((size_t)b * T + t) * kv;
            memcpy(cache_row(s, s->key_cache, layer, b, pos + t), s->k + r, kv * sizeof(float));
            memcpy(cache_row(s, s->value_cache, layer, b, pos + t), s->v + r, kv * sizeof(float));
        }
    return QSUR_OK;
}

static int layer_forward(const qsur_llama *m, qsur_llama_state *s, int l, int B, int T,
                         int pos, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    const qsur_llama_layer *L = &m->layers[l];
    int64_t N = (int64_t)B * T, d = c->dim, h = c->hidden_dim;
    const float *in;
    int rc;

    /* attention block */
    qsur_llama_rmsnorm(s->xb, s->x, L->attention_norm, N, d, c->norm_eps);
    capture(s, QSUR_CAP_ATTN_IN, l, s->xb, d);
    if ((rc = linear_input(&m->hooks.act, s, s->xb, N, d, &in, err)))
        return rc;
    linear(s, &L->wq, in, N, s->q);
    linear(s, &L->wk, in, N, s->k);
    linear(s, &L->wv, in, N, s->v);
    for (int b = 0; b < B; b++) { /* row b*T + t sits at position pos + t */
        qsur_llama_rope(s->q + (size_t)b * T * d, T, c->n_heads, c->head_size, pos,
                        s->rope_cos, s->rope_sin);
        qsur_llama_rope(s->k + (size_t)b * T * c->kv_dim, T, c->n_kv_heads, c->head_size, pos,
                        s->rope_cos, s->rope_sin);
    }
    if (m->hooks.qk.apply) {
        m->hooks.qk.apply(m->hooks.qk.ctx, s->q, N * c->n_heads, c->head_size);
        m->hooks.qk.apply(m->hooks.qk.ctx, s->k, N * c->n_kv_heads, c->head_size);
    }
    capture(s, QSUR_CAP_K, l, s->k, c->kv_dim);
    capture(s, QSUR_CAP_V, l, s->v, c->kv_dim);
    if ((rc = store_kv(m, s, l, B, T, pos, err)))
        return rc;
    attention(m, s, l, B, T, pos, s->xb);
    if (m->hooks.wo_in.apply)
        m->hooks.wo_in.apply(m->hooks.wo_in.ctx, s->xb, N * c->n_heads, c->head_size);
    capture(s, QSUR_CAP_WO_IN, l, s->xb, d);
    if ((rc = linear_input(qsur_llama_act_wo(&m->hooks), s, s->xb, N, d, &in, err)))
        return rc;
    linear(s, &L->wo, in, N, s->xb2);
    for (int64_t i = 0; i < N * d; i++)
        s->x[i] += s->xb2[i];

    /* feed-forward block: w2(silu(w1 x) * w3 x) */
    qsur_llama_rmsnorm(s->xb, s->x, L->ffn_norm, N, d, c->norm_eps);
    capture(s, QSUR_CAP_FFN_IN, l, s->xb, d);
    if ((rc = linear_input(&m->hooks.act, s, s->xb, N, d, &in, err)))
        return rc;
    linear(s, &L->w1, in, N, s->hb);
    linear(s, &L->w3, in, N, s->hb2);
    qsur_llama_swiglu(s->hb, s->hb2, N * h);
    if (m->hooks.w2_in.apply)
        m->hooks.w2_in.apply(m->hooks.w2_in.ctx, s->hb, N, h);
    capture(s, QSUR_CAP_W2_IN, l, s->hb, h);
    if ((rc = linear_input(&m->hooks.act, s, s->hb, N, h, &in, err)))
        return rc;
    linear(s, &L->w2, in, N, s->xb2);
    for (int64_t i = 0; i < N * d; i++)
        s->x[i] += s->xb2[i];
    return QSUR_OK;
}

int qsur_llama_forward(const qsur_llama *m, qsur_llama_state *s, const int *tokens,
                       int B, int T, int pos, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    if (s->dim != c->dim || s->hidden_dim != c->hidden_dim || s->kv_dim != c->kv_dim ||
        s->n_heads != c->n_heads || s->head_size != c->head_size ||
        s->n_layers != c->n_layers || s->vocab_size != c->vocab_size)
        return qsur_fail(err, QSUR_ERR_ARG, "forward: run state was made for another model shape");
    if (B < 1 || B > s->max_batch || T < 1 || pos < 0 || pos + T > s->max_seq)
        return qsur_fail(err, QSUR_ERR_ARG, "forward: batch %d x %d tokens at position %d "
                         "exceeds the run state (batch %d, seq %d)", B, T, pos, s->max_batch,
                         s->max_seq);
    if (pos > 0 && pos != s->pos)
        return qsur_fail(err, QSUR_ERR_ARG, "forward: position %d but the KV cache holds %d",
                         pos, s->pos);
    int64_t N = (int64_t)B * T;
    for (int64_t i = 0; i < N; i++)
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return qsur_fail(err, QSUR_ERR_ARG, "forward: token %lld = %d out of range 0..%d",
                             (long long)i, tokens[i], c->vocab_size - 1);
    double t0 = qsur_seconds();
    qsur_llama_timers before = s->timers;
    s->pos = 0; /* the cache is invalid until this call completes */
    qsur_llama_embed_rows(m, tokens, N, s->x);
    int rc = QSUR_OK, layers = s->run_layers > 0 && s->run_layers < c->n_layers ? s->run_layers
                                                                                : c->n_layers;
    for (int l = 0; l < layers && !rc; l++)
        rc = layer_forward(m, s, l, B, T, pos, err);
    if (!rc && layers < c->n_layers) {
        /* a capture that needs only the first layers: the cache is incomplete */
        s->pos = 0;
    } else if (!rc) {
        qsur_llama_rmsnorm(s->x, s->x, m->norm, N, c->dim, c->norm_eps);
        if (!s->capture)
            linear(s, &m->output, s->x, N, s->logits);
        s->pos = pos + T;
    }
    double spent = qsur_seconds() - t0;
    s->timers.other += spent - (s->timers.gemm - before.gemm) -
                       (s->timers.attention - before.attention) -
                       (s->timers.quant - before.quant);
    return rc;
}
