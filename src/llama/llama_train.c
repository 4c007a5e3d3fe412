/* Training forward pass of the Llama runtime: llama_forward.c's layer structure
 * and public blocks, keeping every intermediate on a tape for llama_backward.c.
 * Attention runs over whole sequences from position 0 (no KV cache). */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama_train.h"

void qsur_llama_tape_free(qsur_llama_tape *t)
{
    if (!t)
        return;
    float **bufs[] = {&t->x_in, &t->xn1, &t->xq1, &t->q, &t->k, &t->kq, &t->v, &t->vq, &t->p,
                      &t->a, &t->aq, &t->x_mid, &t->xn2, &t->xq2, &t->h1, &t->h3, &t->g, &t->gq,
                      &t->x_final, &t->xnf, &t->logits, &t->rope_cos, &t->rope_sin,
                      &t->rope_nsin, &t->s1, &t->s2, &t->s3, &t->s4, &t->sp, &t->wbuf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        free(*bufs[i]);
    free(t->tokens);
    free(t);
}

int qsur_llama_tape_new(qsur_llama_tape **out, const qsur_llama *m, int B, int T,
                        qsur_error *err)
{
    *out = NULL;
    const qsur_llama_config *c = &m->cfg;
    if (B < 1 || T < 1 || T > c->seq_len || (int64_t)B * T > (1 << 22) ||
        (int64_t)B * c->n_heads * T * T > ((int64_t)1 << 31) / 8)
        return qsur_fail(err, QSUR_ERR_ARG, "training tape: batch %d x %d tokens out of range "
                         "(T <= seq_len %d, B*H*T*T < 2^28)", B, T, c->seq_len);
    qsur_llama_tape *t = calloc(1, sizeof *t);
    if (!t)
        return qsur_fail(err, QSUR_ERR_NOMEM, "training tape: out of memory");
    t->B = B;
    t->T = T;
    t->N = (int64_t)B * T;
    t->n_layers = c->n_layers;
    t->dim = c->dim;
    t->hidden_dim = c->hidden_dim;
    t->kv_dim = c->kv_dim;
    t->n_heads = c->n_heads;
    t->n_kv_heads = c->n_kv_heads;
    t->head_size = c->head_size;
    t->vocab_size = c->vocab_size;
    size_t L = (size_t)c->n_layers, N = (size_t)t->N, d = (size_t)c->dim, kv = (size_t)c->kv_dim,
           h = (size_t)c->hidden_dim, V = (size_t)c->vocab_size, half = (size_t)c->head_size / 2;
    size_t wide = h > d ? h : d;
    t->tokens = calloc(N, sizeof(int));
    t->x_in = qsur_alloc(L * N, d * sizeof(float));
    t->xn1 = qsur_alloc(L * N, d * sizeof(float));
    t->xq1 = qsur_alloc(L * N, d * sizeof(float));
    t->q = qsur_alloc(L * N, d * sizeof(float));
    t->k = qsur_alloc(L * N, kv * sizeof(float));
    t->kq = qsur_alloc(L * N, kv * sizeof(float));
    t->v = qsur_alloc(L * N, kv * sizeof(float));
    t->vq = qsur_alloc(L * N, kv * sizeof(float));
    t->p = qsur_alloc(L * (size_t)B * (size_t)c->n_heads, (size_t)T * (size_t)T * sizeof(float));
    t->a = qsur_alloc(L * N, d * sizeof(float));
    t->aq = qsur_alloc(L * N, d * sizeof(float));
    t->x_mid = qsur_alloc(L * N, d * sizeof(float));
    t->xn2 = qsur_alloc(L * N, d * sizeof(float));
    t->xq2 = qsur_alloc(L * N, d * sizeof(float));
    t->h1 = qsur_alloc(L * N, h * sizeof(float));
    t->h3 = qsur_alloc(L * N, h * sizeof(float));
    t->g = qsur_alloc(L * N, h * sizeof(float));
    t->gq = qsur_alloc(L * N, h * sizeof(float));
    t->x_final = qsur_alloc(N, d * sizeof(float));
    t->xnf = qsur_alloc(N, d * sizeof(float));
    t->logits = qsur_alloc(N, V * sizeof(float));
    t->rope_cos = qsur_alloc((size_t)T, half * sizeof(float));
    t->rope_sin = qsur_alloc((size_t)T, half * sizeof(float));
    t->rope_nsin = qsur_alloc((size_t)T, half * sizeof(float));
    t->s1 = qsur_alloc(N, wide * sizeof(float));
    t->s2 = qsur_alloc(N, wide * sizeof(float));
    t->s3 = qsur_alloc(N, wide * sizeof(float));
    t->s4 = qsur_alloc(N, wide * sizeof(float));
    t->sp = qsur_alloc((size_t)T, (size_t)T * sizeof(float));
    if (!t->tokens || !t->x_in || !t->xn1 || !t->xq1 || !t->q || !t->k || !t->kq || !t->v ||
        !t->vq || !t->p || !t->a || !t->aq || !t->x_mid || !t->xn2 || !t->xq2 || !t->h1 ||
        !t->h3 || !t->g || !t->gq || !t->x_final || !t->xnf || !t->logits || !t->rope_cos ||
        !t->rope_sin || !t->rope_nsin || !t->s1 || !t->s2 || !t->s3 || !t->s4 || !t->sp) {
        qsur_llama_tape_free(t);
        return qsur_fail(err, QSUR_ERR_NOMEM, "training tape: cannot allocate activations for "
                         "%d x %d tokens", B, T);
    }
    /* The same tables as qsur_llama_state_new (angles in double). */
    for (int p = 0; p < T; p++)
        for (size_t i = 0; i < half; i++) {
            double a = p * pow(c->rope_theta, -2.0 * (double)i / c->head_size);
            t->rope_cos[(size_t)p * half + i] = (float)cos(a);
            t->rope_sin[(size_t)p * half + i] = (float)sin(a);
            t->rope_nsin[(size_t)p * half + i] = -(float)sin(a);
        }
    *out = t;
    return QSUR_OK;
}

static int held_as_floats(const qsur_llama_linear *l)
{
    return !l->qp && (l->wq || l->w);
}

const float *qsur_llama_tape_weights(const qsur_llama_tape *t, const qsur_llama_linear *l)
{
    if (held_as_floats(l))
        return l->wq ? l->wq : l->w;
    qsur_llama_linear_forward_rows(l, 0, l->rows, t->wbuf);
    return t->wbuf;
}

/* wbuf for the largest per-layer linear of m not held as floats (the
 * classifier goes through it in slices). */
static int tape_wbuf(qsur_llama_tape *t, const qsur_llama *m, qsur_error *err)
{
    int64_t need = 0;
    for (int i = 0; i < qsur_llama_linear_count((qsur_llama *)m) && !t->src; i++) {
        const qsur_llama_linear *l = qsur_llama_linear_at((qsur_llama *)m, i);
        if (!held_as_floats(l) && l->rows * l->cols > need)
            need = l->rows * l->cols;
    }
    if (!held_as_floats(&m->output) && m->output.cols > need)
        need = m->output.cols;
    if (need <= t->wbuf_floats)
        return QSUR_OK;
    free(t->wbuf);
    t->wbuf_floats = 0;
    if (!(t->wbuf = qsur_alloc((size_t)need, sizeof(float))))
        return qsur_fail(err, QSUR_ERR_NOMEM, "training tape: cannot allocate %lld floats of weights",
                         (long long)need);
    t->wbuf_floats = need;
    return QSUR_OK;
}

/* out[N][rows] = in[N][cols] W^T with the weight the forward pass uses: in
 * place when held as floats, else converted into wbuf as many rows at a time
 * as fit (a per-layer linear at once). */
static void linear(const qsur_llama_tape *t, const qsur_llama_linear *l, const float *in, int64_t N,
                   float *out)
{
    if (held_as_floats(l)) {
        const float *w = l->wq ? l->wq : l->w;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)l->rows, (int)l->cols, 1.0f,
                    in, (int)l->cols, w, (int)l->cols, 0.0f, out, (int)l->rows);
        return;
    }
    int64_t step = t->wbuf_floats / l->cols;
    for (int64_t r0 = 0; r0 < l->rows; r0 += step) {
        int64_t r1 = r0 + step < l->rows ? r0 + step : l->rows;
        qsur_llama_linear_forward_rows(l, r0, r1, t->wbuf);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)(r1 - r0), (int)l->cols,
                    1.0f, in, (int)l->cols, t->wbuf, (int)l->cols, 0.0f, out + r0, (int)l->rows);
    }
}

/* linear() of linear i (wq wk wv wo w1 w2 w3) of block l: the model's own,
 * or the tape's source's, made for this product. */
static int block_linear(const qsur_llama_tape *t, const qsur_llama_layer *L, int l, int i, const float *in,
                        float *out, qsur_error *err)
{
    const qsur_llama_linear *own[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3}, *w = own[i];
    int rc = t->src ? t->src->linear(t->src->ctx, l, i, &w, err) : QSUR_OK;
    if (!rc)
        linear(t, w, in, t->N, out);
    return rc;
}

void qsur_llama_attention_head(const float *q, int ldq, const float *k, const float *v, int ldkv,
                               int T, int hs, float *p, float *o, int ldo)
{
    float scale = (float)(1.0 / sqrt((double)hs));
    /* p[T][T] = scale Q K^T (row-major; lda = ldq, ldb = ldkv) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, scale, q, ldq, k, ldkv, 0.0f,
                p, T);
    for (int t = 0; t < T; t++) {
        float *a = p + (size_t)t * T;
        float mx = a[0];
        for (int j = 1; j <= t; j++)
            mx = a[j] > mx ? a[j] : mx;
        float sum = 0;
        for (int j = 0; j <= t; j++) {
            a[j] = expf(a[j] - mx);
            sum += a[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j <= t; j++)
            a[j] *= inv;
        for (int j = t + 1; j < T; j++)
            a[j] = 0.0f;
    }
    /* o[T][hs] = P V (ldc = ldo: heads side by side) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, 1.0f, p, T, v, ldkv, 0.0f, o,
                ldo);
}

static int act_quant(const qsur_quant_spec *spec, const float *x, int64_t N, int64_t cols, float *out,
                     qsur_error *err)
{
    return qsur_fake_quant(spec, x, N, cols, out, NULL, err);
}

static int tape_fits(const qsur_llama *m, const qsur_llama_tape *t, int B, int T, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    if (c->dim != t->dim || c->hidden_dim != t->hidden_dim || c->n_layers != t->n_layers ||
        c->kv_dim != t->kv_dim || c->n_heads != t->n_heads || c->vocab_size != t->vocab_size)
        return qsur_fail(err, QSUR_ERR_ARG, "train forward: tape was made for another model shape");
    if (B != t->B || T != t->T)
        return qsur_fail(err, QSUR_ERR_ARG, "train forward: batch %d x %d but the tape holds %d x %d",
                         B, T, t->B, t->T);
    return QSUR_OK;
}

/* Every block of m on the residual stream x = t->s4 ([N][dim], in place),
 * keeping the tape; t->x_final gets the result. */
static int run_blocks(const qsur_llama *m, qsur_llama_tape *t, int B, int T, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    int64_t N = t->N, d = c->dim, kv = c->kv_dim, hd = c->hidden_dim, hs = c->head_size;
    float *x = t->s4; /* the running residual stream */
    int rc, group = c->n_heads / c->n_kv_heads;
    for (int l = 0; l < c->n_layers; l++) {
        const qsur_llama_layer *L = &m->layers[l];
        size_t od = (size_t)l * N * d, okv = (size_t)l * N * kv, oh = (size_t)l * N * hd;
        float *xin = t->x_in + od, *xn1 = t->xn1 + od, *xq1 = t->xq1 + od, *q = t->q + od;
        float *k = t->k + okv, *kq = t->kq + okv, *v = t->v + okv, *vq = t->vq + okv;
        float *a = t->a + od, *aq = t->aq + od, *xmid = t->x_mid + od;
        float *xn2 = t->xn2 + od, *xq2 = t->xq2 + od;
        float *h1 = t->h1 + oh, *h3 = t->h3 + oh, *g = t->g + oh, *gq = t->gq + oh;
        float *P = t->p + (size_t)l * B * c->n_heads * T * T;

        memcpy(xin, x, (size_t)(N * d) * sizeof(float));
        qsur_llama_rmsnorm(xn1, x, L->attention_norm, N, d, c->norm_eps);
        if ((rc = act_quant(&m->hooks.act, xn1, N, d, xq1, err)))
            return rc;
        if ((rc = block_linear(t, L, l, 0, xq1, q, err)) || (rc = block_linear(t, L, l, 1, xq1, k, err)) ||
            (rc = block_linear(t, L, l, 2, xq1, v, err)))
            return rc;
        for (int b = 0; b < B; b++) {
            qsur_llama_rope(q + (size_t)b * T * d, T, c->n_heads, (int)hs, 0, t->rope_cos,
                            t->rope_sin);
            qsur_llama_rope(k + (size_t)b * T * kv, T, c->n_kv_heads, (int)hs, 0, t->rope_cos,
                            t->rope_sin);
        }
        if (m->hooks.qk.apply) {
            m->hooks.qk.apply(m->hooks.qk.ctx, q, N * c->n_heads, hs);
            m->hooks.qk.apply(m->hooks.qk.ctx, k, N * c->n_kv_heads, hs);
        }
        if ((rc = qsur_fake_quant(&m->hooks.kv, k, N * kv / hs, hs, kq, NULL, err)) ||
            (rc = qsur_fake_quant(&m->hooks.kv, v, N * kv / hs, hs, vq, NULL, err)))
            return rc;
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < c->n_heads; hh++) {
                int gg = hh / group;
                size_t r0 = (size_t)b * T;
                qsur_llama_attention_head(q + r0 * d + (size_t)hh * hs, (int)d,
                                          kq + r0 * kv + (size_t)gg * hs,
                                          vq + r0 * kv + (size_t)gg * hs, (int)kv, T, (int)hs,
                                          P + ((size_t)b * c->n_heads + hh) * T * T,
                                          a + r0 * d + (size_t)hh * hs, (int)d);
            }
        if (m->hooks.wo_in.apply)
            m->hooks.wo_in.apply(m->hooks.wo_in.ctx, a, N * c->n_heads, hs);
        if ((rc = act_quant(qsur_llama_act_wo(&m->hooks), a, N, d, aq, err)))
            return rc;
        if ((rc = block_linear(t, L, l, 3, aq, t->s1, err)))
            return rc;
        for (int64_t i = 0; i < N * d; i++)
            x[i] += t->s1[i];
        memcpy(xmid, x, (size_t)(N * d) * sizeof(float));

        qsur_llama_rmsnorm(xn2, x, L->ffn_norm, N, d, c->norm_eps);
        if ((rc = act_quant(&m->hooks.act, xn2, N, d, xq2, err)))
            return rc;
        if ((rc = block_linear(t, L, l, 4, xq2, h1, err)) || (rc = block_linear(t, L, l, 6, xq2, h3, err)))
            return rc;
        memcpy(g, h1, (size_t)(N * hd) * sizeof(float));
        qsur_llama_swiglu(g, h3, N * hd);
        if (m->hooks.w2_in.apply)
            m->hooks.w2_in.apply(m->hooks.w2_in.ctx, g, N, hd);
        if ((rc = act_quant(&m->hooks.act, g, N, hd, gq, err)))
            return rc;
        if ((rc = block_linear(t, L, l, 5, gq, t->s1, err)))
            return rc;
        for (int64_t i = 0; i < N * d; i++)
            x[i] += t->s1[i];
    }
    memcpy(t->x_final, x, (size_t)(N * d) * sizeof(float));
    return QSUR_OK;
}

int qsur_llama_train_forward(const qsur_llama *m, qsur_llama_tape *t, const int *tokens,
                             int B, int T, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    int rc = tape_fits(m, t, B, T, err);
    if (rc || (rc = tape_wbuf(t, m, err)))
        return rc;
    int64_t N = t->N, d = c->dim;
    for (int64_t i = 0; i < N; i++) {
        if (tokens[i] < 0 || tokens[i] >= c->vocab_size)
            return qsur_fail(err, QSUR_ERR_ARG, "train forward: token %lld = %d out of range 0..%d",
                             (long long)i, tokens[i], c->vocab_size - 1);
        t->tokens[i] = tokens[i];
    }
    qsur_llama_embed_rows(m, tokens, N, t->s4);
    if ((rc = run_blocks(m, t, B, T, err)))
        return rc;
    qsur_llama_rmsnorm(t->xnf, t->x_final, m->norm, N, d, c->norm_eps);
    linear(t, &m->output, t->xnf, N, t->logits);
    return QSUR_OK;
}

int qsur_llama_train_blocks(const qsur_llama *m, qsur_llama_tape *t, const float *x0, int B, int T,
                            qsur_error *err)
{
    int rc = tape_fits(m, t, B, T, err);
    if (rc || (rc = tape_wbuf(t, m, err)))
        return rc;
    memcpy(t->s4, x0, (size_t)(t->N * m->cfg.dim) * sizeof(float));
    return run_blocks(m, t, B, T, err);
}
