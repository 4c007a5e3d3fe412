/* Reverse-mode gradients of the Llama forward pass (qsur/llama_train.h):
 * the blocks of llama_train.c in reverse order, every linear's gradients as two
 * sgemm (dW += dY^T X, dX = dY W), fake quantizers through the STE of
 * quant_ste.c, online transforms through their transposes. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama_train.h"
#include "qsur/quant_ste.h"

void qsur_llama_rmsnorm_backward(const float *x, const float *g, const float *dy, int64_t rows,
                                 int64_t n, double eps, float *dx, float *dg)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *dyr = dy + r * n;
        float *dxr = dx + r * n;
        double ss = 0, dot = 0;
        for (int64_t j = 0; j < n; j++) {
            ss += (double)xr[j] * xr[j];
            dot += (double)xr[j] * g[j] * dyr[j];
        }
        double inv = 1.0 / sqrt(ss / (double)n + eps);
        double c = dot * inv * inv * inv / (double)n;
        for (int64_t j = 0; j < n; j++) {
            dxr[j] = (float)(inv * g[j] * dyr[j] - c * xr[j]);
            if (dg)
                dg[j] += (float)(dyr[j] * xr[j] * inv);
        }
    }
}

void qsur_llama_swiglu_backward(const float *a, const float *u, const float *dout, int64_t n,
                                float *da, float *du)
{
    for (int64_t i = 0; i < n; i++) {
        float sg = 1.0f / (1.0f + expf(-a[i]));
        float silu = a[i] * sg;
        float dsilu = sg * (1.0f + a[i] * (1.0f - sg));
        float g = dout[i];
        da[i] = g * u[i] * dsilu;
        du[i] = g * silu;
    }
}

void qsur_llama_attention_head_backward(const float *q, int ldq, const float *k, const float *v,
                                        int ldkv, int T, int hs, const float *p, const float *dout,
                                        int ldo, float *dq, float *dk, float *dv, float *scratch)
{
    float scale = (float)(1.0 / sqrt((double)hs));
    float *ds = scratch; /* T x T */
    /* dP = dO V^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, hs, 1.0f, dout, ldo, v, ldkv, 0.0f,
                ds, T);
    /* dV += P^T dO */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, 1.0f, p, T, dout, ldo, 1.0f, dv,
                ldkv);
    /* softmax backward row by row (P is 0 above the diagonal, so dS is too) */
    for (int t = 0; t < T; t++) {
        const float *pr = p + (size_t)t * T;
        float *dr = ds + (size_t)t * T;
        double dot = 0;
        for (int j = 0; j <= t; j++)
            dot += (double)pr[j] * dr[j];
        for (int j = 0; j <= t; j++)
            dr[j] = pr[j] * (dr[j] - (float)dot);
        for (int j = t + 1; j < T; j++)
            dr[j] = 0.0f;
    }
    /* dQ = scale dS K;  dK += scale dS^T Q */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, hs, T, scale, ds, T, k, ldkv, 0.0f,
                dq, ldq);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, hs, T, scale, ds, T, q, ldq, 1.0f, dk,
                ldkv);
}

/* ---- gradient storage ---------------------------------------------------- */

void qsur_llama_grads_free(qsur_llama_grads *g)
{
    if (!g)
        return;
    free(g->d_tok_embeddings);
    free(g->d_norm);
    free(g->d_output);
    if (g->layers)
        for (int l = 0; l < g->n_layers; l++) {
            qsur_llama_layer_grads *L = &g->layers[l];
            free(L->d_wq);
            free(L->d_wk);
            free(L->d_wv);
            free(L->d_wo);
            free(L->d_w1);
            free(L->d_w2);
            free(L->d_w3);
            free(L->d_attention_norm);
            free(L->d_ffn_norm);
        }
    free(g->layers);
    free(g);
}

static int grads_alloc(qsur_llama_grads **out, const qsur_llama *m, int weights, qsur_error *err)
{
    *out = NULL;
    const qsur_llama_config *c = &m->cfg;
    qsur_llama_grads *g = calloc(1, sizeof *g);
    if (!g)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gradients: out of memory");
    g->n_layers = c->n_layers;
    size_t d = (size_t)c->dim, kv = (size_t)c->kv_dim, h = (size_t)c->hidden_dim,
           V = (size_t)c->vocab_size;
    g->d_tok_embeddings = weights ? calloc(V * d, sizeof(float)) : NULL;
    g->d_norm = calloc(d, sizeof(float));
    g->d_output = weights ? calloc(V * d, sizeof(float)) : NULL;
    g->layers = calloc((size_t)c->n_layers, sizeof *g->layers);
    int ok = (g->d_tok_embeddings || !weights) && g->d_norm && (g->d_output || !weights) && g->layers;
    for (int l = 0; ok && l < c->n_layers; l++) {
        qsur_llama_layer_grads *L = &g->layers[l];
        L->d_attention_norm = calloc(d, sizeof(float));
        L->d_ffn_norm = calloc(d, sizeof(float));
        ok = L->d_attention_norm && L->d_ffn_norm;
        if (!weights || !ok)
            continue;
        L->d_wq = calloc(d * d, sizeof(float));
        L->d_wk = calloc(kv * d, sizeof(float));
        L->d_wv = calloc(kv * d, sizeof(float));
        L->d_wo = calloc(d * d, sizeof(float));
        L->d_w1 = calloc(h * d, sizeof(float));
        L->d_w2 = calloc(d * h, sizeof(float));
        L->d_w3 = calloc(h * d, sizeof(float));
        ok = L->d_wq && L->d_wk && L->d_wv && L->d_wo && L->d_w1 && L->d_w2 && L->d_w3;
    }
    if (!ok) {
        qsur_llama_grads_free(g);
        return qsur_fail(err, QSUR_ERR_NOMEM, "gradients: out of memory for the model's shape");
    }
    *out = g;
    return QSUR_OK;
}

int qsur_llama_grads_new(qsur_llama_grads **out, const qsur_llama *m, qsur_error *err)
{
    return grads_alloc(out, m, 1, err);
}

int qsur_llama_grads_new_norms(qsur_llama_grads **out, const qsur_llama *m, qsur_error *err)
{
    return grads_alloc(out, m, 0, err);
}

/* memset of n floats when p is set (a gradients object of norms only has no others). */
static void zero(float *p, size_t n)
{
    if (p)
        memset(p, 0, n * sizeof(float));
}

void qsur_llama_grads_zero(qsur_llama_grads *g, const qsur_llama *m)
{
    const qsur_llama_config *c = &m->cfg;
    size_t d = (size_t)c->dim, kv = (size_t)c->kv_dim, h = (size_t)c->hidden_dim,
           V = (size_t)c->vocab_size;
    zero(g->d_tok_embeddings, V * d);
    zero(g->d_norm, d);
    zero(g->d_output, V * d);
    for (int l = 0; l < c->n_layers; l++) {
        qsur_llama_layer_grads *L = &g->layers[l];
        zero(L->d_wq, d * d);
        zero(L->d_wk, kv * d);
        zero(L->d_wv, kv * d);
        zero(L->d_wo, d * d);
        zero(L->d_w1, h * d);
        zero(L->d_w2, d * h);
        zero(L->d_w3, h * d);
        zero(L->d_attention_norm, d);
        zero(L->d_ffn_norm, d);
    }
}

/* ---- the backward pass ---------------------------------------------------- */

/* dW += dY^T X (dW rows x cols), dX (=|+=) dY W for a linear Y = X W^T. */
static void linear_backward(const qsur_llama_tape *t, const qsur_llama_linear *l, const float *x,
                            const float *dy, int64_t N, float *dw, float *dx, float beta)
{
    const float *w = qsur_llama_tape_weights(t, l);
    int R = (int)l->rows, C = (int)l->cols;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, R, C, (int)N, 1.0f, dy, R, x, C, 1.0f, dw,
                C);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, C, R, 1.0f, dy, R, w, C, beta,
                dx, C);
}

/* linear_backward of linear i (wq wk wv wo w1 w2 w3) of block l: the model's
 * own, its gradient added to G; or the tape's source's, remade for this
 * product, its gradient handed to the source. */
static int block_linear_backward(const qsur_llama_tape *t, const qsur_llama_layer *L, qsur_llama_layer_grads *G,
                                 int l, int i, const float *x, const float *dy, float *dx, float beta,
                                 qsur_error *err)
{
    const qsur_llama_linear *own[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
    float *dws[7] = {G->d_wq, G->d_wk, G->d_wv, G->d_wo, G->d_w1, G->d_w2, G->d_w3};
    const qsur_llama_source *src = t->src;
    if (!src) {
        linear_backward(t, own[i], x, dy, t->N, dws[i], dx, beta);
        return QSUR_OK;
    }
    const qsur_llama_linear *w;
    int rc = src->linear(src->ctx, l, i, &w, err);
    if (rc)
        return rc;
    memset(src->dw, 0, (size_t)(w->rows * w->cols) * sizeof(float));
    linear_backward(t, w, x, dy, t->N, src->dw, dx, beta);
    return src->grad(src->ctx, l, i, w, src->dw, err);
}

/* Layers last..first (descending) of the backward: dx ([N][dim], t->s4) holds
 * dL/d(residual after layer `last`) on entry and dL/d(residual entering `first`)
 * on exit. buf: scratch as allocated by the callers. */
static int layers_backward(const qsur_llama *m, const qsur_llama_tape *t, const qsur_llama_online_t *ot,
                           qsur_llama_grads *g, int first, int last, float *buf, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    int B = t->B, T = t->T, group = c->n_heads / c->n_kv_heads;
    int64_t N = t->N, d = c->dim, kv = c->kv_dim, hd = c->hidden_dim, hs = c->head_size;
    float *dx = t->s4, *dn = t->s1, *dh1 = t->s2, *dh3 = t->s3;
    float *dwide = buf, *dq = buf + N * (hd > d ? hd : d), *dk = dq + N * d, *dv = dk + N * kv;
    int rc = QSUR_OK;
    for (int l = last; l >= first && !rc; l--) {
        const qsur_llama_layer *L = &m->layers[l];
        qsur_llama_layer_grads *G = &g->layers[l];
        size_t od = (size_t)l * N * d, okv = (size_t)l * N * kv, oh = (size_t)l * N * hd;
        const float *P = t->p + (size_t)l * B * c->n_heads * T * T;

        /* feed-forward: x += Q(w2_in(silu(h1) h3)) W2^T */
        if ((rc = block_linear_backward(t, L, G, l, 5, t->gq + oh, dx, dwide, 0.0f, err)))
            break;
        if ((rc = qsur_fake_quant_backward(&m->hooks.act, t->g + oh, N, hd, dwide, dwide, err)))
            break;
        if (m->hooks.w2_in.apply)
            ot->w2_in.apply(ot->w2_in.ctx, dwide, N, hd);
        qsur_llama_swiglu_backward(t->h1 + oh, t->h3 + oh, dwide, N * hd, dh1, dh3);
        if ((rc = block_linear_backward(t, L, G, l, 4, t->xq2 + od, dh1, dn, 0.0f, err)) ||
            (rc = block_linear_backward(t, L, G, l, 6, t->xq2 + od, dh3, dn, 1.0f, err)))
            break;
        if ((rc = qsur_fake_quant_backward(&m->hooks.act, t->xn2 + od, N, d, dn, dn, err)))
            break;
        qsur_llama_rmsnorm_backward(t->x_mid + od, L->ffn_norm, dn, N, d, c->norm_eps, dwide,
                                    G->d_ffn_norm);
        for (int64_t i = 0; i < N * d; i++)
            dx[i] += dwide[i];

        /* attention: x += Q(wo_in(attn)) Wo^T */
        if ((rc = block_linear_backward(t, L, G, l, 3, t->aq + od, dx, dn, 0.0f, err)))
            break;
        if ((rc = qsur_fake_quant_backward(qsur_llama_act_wo(&m->hooks), t->a + od, N, d, dn, dn, err)))
            break;
        if (m->hooks.wo_in.apply)
            ot->wo_in.apply(ot->wo_in.ctx, dn, N * c->n_heads, hs);
        memset(dk, 0, (size_t)(2 * N * kv) * sizeof(float));
        const float *q = t->q + od, *kq = t->kq + okv, *vq = t->vq + okv;
        for (int b = 0; b < B; b++)
            for (int hh = 0; hh < c->n_heads; hh++) {
                size_t r0 = (size_t)b * T, gg = (size_t)(hh / group);
                qsur_llama_attention_head_backward(
                    q + r0 * d + (size_t)hh * hs, (int)d, kq + r0 * kv + gg * hs,
                    vq + r0 * kv + gg * hs, (int)kv, T, (int)hs,
                    P + ((size_t)b * c->n_heads + hh) * T * T, dn + r0 * d + (size_t)hh * hs,
                    (int)d, dq + r0 * d + (size_t)hh * hs, dk + r0 * kv + gg * hs,
                    dv + r0 * kv + gg * hs, t->sp);
            }
        if ((rc = qsur_fake_quant_backward(&m->hooks.kv, t->k + okv, N * kv / hs, hs, dk, dk, err)) ||
            (rc = qsur_fake_quant_backward(&m->hooks.kv, t->v + okv, N * kv / hs, hs, dv, dv, err)))
            break;
        if (m->hooks.qk.apply) {
            ot->qk.apply(ot->qk.ctx, dq, N * c->n_heads, hs);
            ot->qk.apply(ot->qk.ctx, dk, N * c->n_kv_heads, hs);
        }
        /* RoPE is a rotation per pair: its transpose rotates by the opposite angle. */
        for (int b = 0; b < B; b++) {
            qsur_llama_rope(dq + (size_t)b * T * d, T, c->n_heads, (int)hs, 0, t->rope_cos,
                            t->rope_nsin);
            qsur_llama_rope(dk + (size_t)b * T * kv, T, c->n_kv_heads, (int)hs, 0, t->rope_cos,
                            t->rope_nsin);
        }
        if ((rc = block_linear_backward(t, L, G, l, 0, t->xq1 + od, dq, dn, 0.0f, err)) ||
            (rc = block_linear_backward(t, L, G, l, 1, t->xq1 + od, dk, dn, 1.0f, err)) ||
            (rc = block_linear_backward(t, L, G, l, 2, t->xq1 + od, dv, dn, 1.0f, err)))
            break;
        if ((rc = qsur_fake_quant_backward(&m->hooks.act, t->xn1 + od, N, d, dn, dn, err)))
            break;
        qsur_llama_rmsnorm_backward(t->x_in + od, L->attention_norm, dn, N, d, c->norm_eps, dwide,
                                    G->d_attention_norm);
        for (int64_t i = 0; i < N * d; i++)
            dx[i] += dwide[i];
    }
    return rc;
}

/* Checks the tape's shape and that every set online hook has its transpose. */
static int backward_check(const qsur_llama *m, const qsur_llama_tape *t, const qsur_llama_online_t *ot,
                          qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    if (c->dim != t->dim || c->hidden_dim != t->hidden_dim || c->n_layers != t->n_layers)
        return qsur_fail(err, QSUR_ERR_ARG, "backward: tape was made for another model shape");
    if ((m->hooks.qk.apply && (!ot || !ot->qk.apply)) ||
        (m->hooks.wo_in.apply && (!ot || !ot->wo_in.apply)) ||
        (m->hooks.w2_in.apply && (!ot || !ot->w2_in.apply)))
        return qsur_fail(err, QSUR_ERR_ARG, "backward: an online hook is set without its transpose");
    return QSUR_OK;
}

static float *backward_buf(const qsur_llama *m, const qsur_llama_tape *t)
{
    int64_t N = t->N, d = m->cfg.dim, kv = m->cfg.kv_dim, hd = m->cfg.hidden_dim;
    return malloc((size_t)(N * (hd > d ? hd : d) + N * d + 2 * N * kv) * sizeof(float));
}

int qsur_llama_backward_hidden(const qsur_llama *m, const qsur_llama_tape *t, int first, int last,
                               const float *dh, const qsur_llama_online_t *ot, qsur_llama_grads *g,
                               qsur_error *err)
{
    int rc = backward_check(m, t, ot, err);
    if (rc)
        return rc;
    if (first < 0 || last < first || last >= m->cfg.n_layers)
        return qsur_fail(err, QSUR_ERR_ARG, "backward: layer range %d..%d outside 0..%d", first, last,
                         m->cfg.n_layers - 1);
    float *buf = backward_buf(m, t);
    if (!buf)
        return qsur_fail(err, QSUR_ERR_NOMEM, "backward: out of memory for %lld tokens", (long long)t->N);
    memcpy(t->s4, dh, (size_t)(t->N * m->cfg.dim) * sizeof(float));
    rc = layers_backward(m, t, ot, g, first, last, buf, err);
    free(buf);
    return rc;
}

int qsur_llama_backward(const qsur_llama *m, const qsur_llama_tape *t, const float *dlogits,
                        const qsur_llama_online_t *ot, qsur_llama_grads *g, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    int rc = backward_check(m, t, ot, err);
    if (rc)
        return rc;
    int64_t N = t->N, d = c->dim;
    int64_t V = c->vocab_size;
    float *dx = t->s4, *dn = t->s1;
    float *buf = backward_buf(m, t);
    if (!buf)
        return qsur_fail(err, QSUR_ERR_NOMEM, "backward: out of memory for %lld tokens", (long long)N);

    /* classifier and final norm (held as floats: the whole matrix in one product) */
    const float *wout = m->output.qp ? NULL : m->output.wq ? m->output.wq : m->output.w;
    if (!wout) {
        free(buf);
        return qsur_fail(err, QSUR_ERR_ARG, "backward: the classifier is not held as float32 weights");
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)V, (int)d, (int)N, 1.0f, dlogits,
                (int)V, t->xnf, (int)d, 1.0f, g->d_output, (int)d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)d, (int)V, 1.0f, dlogits,
                (int)V, wout, (int)d, 0.0f, dn, (int)d);
    qsur_llama_rmsnorm_backward(t->x_final, m->norm, dn, N, d, c->norm_eps, dx, g->d_norm);

    rc = layers_backward(m, t, ot, g, 0, c->n_layers - 1, buf, err);
    if (!rc)
        for (int64_t i = 0; i < N; i++) {
            float *row = g->d_tok_embeddings + (size_t)t->tokens[i] * d;
            for (int64_t j = 0; j < d; j++)
                row[j] += dx[i * d + j];
        }
    free(buf);
    return rc;
}
