/* Live QSUR of every transformed layer (qsur/llama_qsur.h, qsur_ostquant_qsur)
 * against independent computations on stories260K:
 *  - identity transforms on a model with unit norm gains give the QSUR of the
 *    untransformed model's captured activations and weights (bit for bit up
 *    to the first w2, whose online Hadamard changes the rounding); the w2
 *    input is that activation times the online Hadamard;
 *  - random R_res, R_ov and scales on the real model: every site's activation
 *    and weight QSUR equals qsur_compute on the base model's captures and
 *    weights transformed in double by the layout of ostquant.h (gain folded,
 *    x R S^-1, v_g R_g S_g^-1, h / S_ud H; W diag(g) R S, ...);
 *  - training logs the start point, every qsur_every steps and the last step,
 *    the start row equals a direct measurement, a too-small probe gives
 *    singular w2 sites left out of the summary, and the log survives the
 *    state file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/llama.h"
#include "qsur/llama_qsur.h"
#include "qsur/ostquant.h"
#include "qsur/workspace.h"

/* The first T tokens of each of the first k sequences (as the probe cuts them). */
static qsur_tokens probe_tokens(const qsur_tokens *t, int T, int k)
{
    qsur_tokens p = {malloc((size_t)k * T * sizeof(int)), (int64_t)k * T, T};
    for (int b = 0; p.ids && b < k; b++)
        memcpy(p.ids + (size_t)b * T, t->ids + (size_t)b * t->seq_len, (size_t)T * sizeof(int));
    return p;
}

/* The base model's float captures of the probe. */
static int capture(const qsur_llama *m, const qsur_tokens *p, qsur_workspace *ws, qsur_error *err)
{
    qsur_workspace_init(ws);
    return qsur_llama_capture(m, NULL, p, p->seq_len, (int)(p->n / p->seq_len), 8, 0, 1, ws, NULL, NULL, err);
}

static const float *cap(const qsur_workspace *ws, int layer, const char *what, int64_t *rows)
{
    char name[96];
    snprintf(name, sizeof name, "layers.%d.%s", layer, what);
    const qsur_tensor *t = qsur_workspace_find(ws, name);
    *rows = t ? qsur_tensor_rows(t) : 0;
    return t ? t->data : NULL;
}

static qsur_result q_of(const float *x, int64_t n, int64_t d)
{
    qsur_options opt = qsur_options_default();
    qsur_result r;
    qsur_error err;
    memset(&r, 0, sizeof r);
    if (qsur_compute(x, n, d, &opt, &r, NULL, &err) != QSUR_OK)
        r.log10_qsur = NAN;
    return r;
}

/* out[n][k] = a[n][m] b[m][k] in double (naive, the test's own product). */
static void matmul(const double *a, const double *b, double *out, int64_t n, int64_t m, int64_t k)
{
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < k; j++) {
            double s = 0;
            for (int64_t l = 0; l < m; l++)
                s += a[i * m + l] * b[l * k + j];
            out[i * k + j] = s;
        }
}

static double *to_d(const float *x, int64_t n)
{
    double *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; y && i < n; i++)
        y[i] = x[i];
    return y;
}

static float *to_f(const double *x, int64_t n)
{
    float *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; y && i < n; i++)
        y[i] = (float)x[i];
    return y;
}

/* A random orthogonal n x n matrix: Gram-Schmidt (twice) of Gaussian rows. */
static void random_orthogonal(double *q, int n)
{
    for (int i = 0; i < n * n; i++)
        q[i] = check_gauss();
    for (int i = 0; i < n; i++)
        for (int pass = 0; pass < 2; pass++) {
            for (int j = 0; j < i; j++) {
                double dot = 0;
                for (int k = 0; k < n; k++)
                    dot += q[i * n + k] * q[j * n + k];
                for (int k = 0; k < n; k++)
                    q[i * n + k] -= dot * q[j * n + k];
            }
            double nn = 0;
            for (int k = 0; k < n; k++)
                nn += q[i * n + k] * q[i * n + k];
            for (int k = 0; k < n; k++)
                q[i * n + k] /= sqrt(nn);
        }
}

static const qsur_site_qsur *site(const qsur_llama_qsur *q, int layer, int s)
{
    return &q->sites[layer * QSUR_SITE_COUNT + s];
}

/* Activation: x' = (x / g) R diag(1/s)  (g may be NULL: 1). */
static double *act_transform(const float *x, int64_t n, int64_t d, const float *g, const double *R,
                             const double *s)
{
    double *a = to_d(x, n * d), *o = malloc((size_t)(n * d) * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            a[i * d + j] /= g ? g[j] : 1.0;
    matmul(a, R, o, n, d, d);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            o[i * d + j] /= s[j];
    free(a);
    return o;
}

/* ------------------------------------------------------------ identity */

static void test_identity(qsur_llama *m, const qsur_tokens *calib)
{
    qsur_error err;
    const qsur_llama_config *c = &m->cfg;
    int L = c->n_layers, d = c->dim, hd = c->hidden_dim;
    /* unit norm gains: then folding the gains changes nothing, and with
     * R = I, S = 1 the fused model is the base model plus w2's Hadamard */
    for (int l = 0; l < L; l++)
        for (int j = 0; j < d; j++)
            m->layers[l].attention_norm[j] = m->layers[l].ffn_norm[j] = 1.0f;
    qsur_quant_spec w4 = qsur_quant_default(), off = qsur_quant_default();
    off.bits = 16;
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.seq_len = 64;
    op.qsur_tokens = 512;
    qsur_ostquant *o = NULL;
    CHECK_OK(qsur_ostquant_new(&o, m, &op, &w4, &w4, &off, &err), err);
    if (!o)
        return;
    int hs = c->head_size;
    memset(o->r_res, 0, (size_t)d * d * sizeof(double));
    for (int i = 0; i < d; i++)
        o->r_res[i * d + i] = 1;
    memset(o->r_ov, 0, (size_t)L * c->n_kv_heads * hs * hs * sizeof(double));
    for (int g = 0; g < L * c->n_kv_heads; g++)
        for (int i = 0; i < hs; i++)
            o->r_ov[(size_t)g * hs * hs + i * hs + i] = 1;
    memset(o->ls, 0, (size_t)o->n_ls * sizeof(double));
    qsur_llama_qsur q;
    CHECK_OK(qsur_ostquant_qsur(o, calib, &q, &err), err);
    CHECK(q.nsites == L * QSUR_SITE_COUNT && q.n_tokens == 512 && q.step == 0);

    qsur_tokens p = probe_tokens(calib, 64, 8);
    qsur_workspace ws;
    CHECK_OK(capture(m, &p, &ws, &err), err);
    float *H = malloc((size_t)hd * hd * sizeof(float));
    qsur_hadamard_plan_dense(o->rot->w2, H);
    double *Hd = to_d(H, (int64_t)hd * hd);
    double *ones = malloc((size_t)hd * sizeof(double));
    for (int j = 0; j < hd; j++)
        ones[j] = 1;
    int exact = 1, wexact = 1, nchecked = 0;
    for (int l = 0; l < L && q.sites; l++) {
        int64_t n;
        const char *in[3] = {"attention.in", "attention.wo.in", "feed_forward.in"};
        for (int s = 0; s < 3; s++) {
            const float *x = cap(&ws, l, in[s], &n);
            qsur_result r = q_of(x, n, d);
            /* layer 0 comes before any w2, whose online Hadamard changes
             * the rounding of its output: exact there, ~1e-7 relative after */
            if (l == 0)
                exact &= site(&q, l, s)->x_log10 == r.log10_qsur && site(&q, l, s)->x_per_dim == r.per_dim;
            else
                exact &= fabs(site(&q, l, s)->x_log10 - r.log10_qsur) <= 1e-6 * fabs(r.log10_qsur);
            nchecked++;
        }
        const float *x2 = cap(&ws, l, "feed_forward.w2.in", &n);
        double *xh = act_transform(x2, n, hd, NULL, Hd, ones);
        float *xf = to_f(xh, n * hd);
        qsur_result r2 = q_of(xf, n, hd);
        CHECK_NEAR(site(&q, l, QSUR_SITE_DOWN)->x_log10, r2.log10_qsur, 1e-6 * fabs(r2.log10_qsur));
        free(xh);
        free(xf);
        /* weights: wq;wk;wv stacked, wo, w1;w3, w2 H */
        const qsur_llama_layer *B = &m->layers[l];
        int64_t kv = c->kv_dim;
        float *qkv = malloc((size_t)(d + 2 * kv) * d * sizeof(float));
        memcpy(qkv, B->wq.w, (size_t)d * d * sizeof(float));
        memcpy(qkv + (size_t)d * d, B->wk.w, (size_t)kv * d * sizeof(float));
        memcpy(qkv + (size_t)(d + kv) * d, B->wv.w, (size_t)kv * d * sizeof(float));
        qsur_result wr = q_of(qkv, d + 2 * kv, d);
        wexact &= site(&q, l, QSUR_SITE_QKV)->w_log10 == wr.log10_qsur && site(&q, l, QSUR_SITE_QKV)->w_rows == d + 2 * kv;
        float *up = malloc((size_t)2 * hd * d * sizeof(float));
        memcpy(up, B->w1.w, (size_t)hd * d * sizeof(float));
        memcpy(up + (size_t)hd * d, B->w3.w, (size_t)hd * d * sizeof(float));
        wr = q_of(up, 2 * hd, d);
        wexact &= site(&q, l, QSUR_SITE_UP)->w_log10 == wr.log10_qsur;
        /* wo: 64 x 64 rows -> singular, as the workbench says */
        CHECK(site(&q, l, QSUR_SITE_O)->w_singular && site(&q, l, QSUR_SITE_O)->w_per_dim == 0);
        CHECK(site(&q, l, QSUR_SITE_DOWN)->w_singular);
        free(qkv);
        free(up);
    }
    CHECK_MSG(exact && nchecked == 3 * L, "identity transforms: q/k/v, wo and w1/w3 input QSUR == the base "
              "model's captured activations (bit for bit in layer 0, 1e-6 relative after the first w2)");
    CHECK_MSG(wexact, "identity transforms: stacked wq;wk;wv and w1;w3 QSUR == the base weights', bit for bit");
    /* the summary: mean over the 20 activation sites, worst by QSUR^(1/d) */
    double sum = 0, mn = INFINITY;
    int worst = -1;
    for (int i = 0; i < q.nsites; i++) {
        sum += q.sites[i].x_log10;
        if (q.sites[i].x_per_dim < mn) {
            mn = q.sites[i].x_per_dim;
            worst = i;
        }
    }
    CHECK_NEAR(q.x_log10_mean, sum / q.nsites, 1e-9 * fabs(sum));
    CHECK(q.x_worst == worst && q.x_pd_min == mn && q.x_nsingular == 0);
    CHECK(q.w_nsingular == 2 * L && q.w_worst >= 0 && q.sites[q.w_worst].site != QSUR_SITE_O);
    qsur_workspace_clear(&ws);
    free(H);
    free(Hd);
    free(ones);
    free(p.ids);
    qsur_llama_qsur_free(&q);
    qsur_ostquant_free(o);
}

/* -------------------------------------------------------- random transforms */

static void test_random(const qsur_llama *m, const qsur_tokens *calib)
{
    qsur_error err;
    const qsur_llama_config *c = &m->cfg;
    int L = c->n_layers, d = c->dim, hd = c->hidden_dim, hs = c->head_size, kv = c->kv_dim;
    int group = c->n_heads / c->n_kv_heads;
    qsur_quant_spec w4 = qsur_quant_default(), a4 = qsur_quant_default();
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.seq_len = 128;
    op.qsur_tokens = 400; /* ceil(400 / 128) = 4 sequences */
    qsur_ostquant *o = NULL;
    CHECK_OK(qsur_ostquant_new(&o, m, &op, &w4, &a4, &a4, &err), err);
    if (!o)
        return;
    check_seed(11);
    random_orthogonal(o->r_res, d);
    for (int g = 0; g < L * c->n_kv_heads; g++)
        random_orthogonal(o->r_ov + (size_t)g * hs * hs, hs);
    for (int64_t i = 0; i < o->n_ls; i++)
        o->ls[i] = 0.8 * (check_uniform() - 0.5);
    o->step = 7;
    qsur_llama_qsur q;
    CHECK_OK(qsur_ostquant_qsur(o, calib, &q, &err), err);
    CHECK(q.step == 7 && q.n_tokens == 4 * 128);
    if (!q.sites) {
        qsur_ostquant_free(o);
        return;
    }
    qsur_tokens p = probe_tokens(calib, 128, 4);
    qsur_workspace ws;
    CHECK_OK(capture(m, &p, &ws, &err), err);
    /* the layout's pieces, in double; scales s = exp(ls) in o->ls's groups */
    const double *R = o->r_res;
    float *H = malloc((size_t)hd * hd * sizeof(float));
    qsur_hadamard_plan_dense(o->rot->w2, H);
    double *Hd = to_d(H, (int64_t)hd * hd), *ones = malloc((size_t)hd * sizeof(double));
    for (int j = 0; j < hd; j++)
        ones[j] = 1;
    double worst_x = 0, worst_w = 0;
    for (int l = 0; l < L; l++) {
        const qsur_llama_layer *B = &m->layers[l];
        double sa[64], sf[64], so[64], su[512];
        for (int j = 0; j < d; j++) {
            sa[j] = exp(o->ls[(size_t)l * d + j]);
            sf[j] = exp(o->ls[(size_t)L * (d + kv) + (size_t)l * d + j]);
        }
        for (int j = 0; j < kv; j++)
            so[j] = exp(o->ls[(size_t)L * d + (size_t)l * kv + j]);
        for (int j = 0; j < hd; j++)
            su[j] = exp(o->ls[(size_t)L * (2 * d + kv) + (size_t)l * hd + j]);
        int64_t n;
        /* qkv: x' = (x / g_att) R / s_att */
        const float *x = cap(&ws, l, "attention.in", &n);
        double *xa = act_transform(x, n, d, B->attention_norm, R, sa);
        float *xf = to_f(xa, n * d);
        qsur_result r = q_of(xf, n, d);
        double e = fabs(site(&q, l, QSUR_SITE_QKV)->x_log10 - r.log10_qsur);
        worst_x = e > worst_x ? e : worst_x;
        free(xa);
        free(xf);
        /* o: per head h of group g: o_h R_g / s_ov,g */
        x = cap(&ws, l, "attention.wo.in", &n);
        double *xo = to_d(x, n * d), *blk = malloc((size_t)n * hs * sizeof(double)),
               *ob = malloc((size_t)n * hs * sizeof(double));
        for (int h = 0; h < c->n_heads; h++) {
            int g = h / group;
            const double *Rg = o->r_ov + ((size_t)l * c->n_kv_heads + g) * hs * hs;
            for (int64_t i = 0; i < n; i++)
                for (int j = 0; j < hs; j++)
                    blk[i * hs + j] = xo[i * d + h * hs + j];
            matmul(blk, Rg, ob, n, hs, hs);
            for (int64_t i = 0; i < n; i++)
                for (int j = 0; j < hs; j++)
                    xo[i * d + h * hs + j] = ob[i * hs + j] / so[g * hs + j];
        }
        xf = to_f(xo, n * d);
        r = q_of(xf, n, d);
        e = fabs(site(&q, l, QSUR_SITE_O)->x_log10 - r.log10_qsur);
        worst_x = e > worst_x ? e : worst_x;
        free(xo);
        free(xf);
        free(blk);
        free(ob);
        /* up: (x / g_ffn) R / s_ffn */
        x = cap(&ws, l, "feed_forward.in", &n);
        double *xu = act_transform(x, n, d, B->ffn_norm, R, sf);
        xf = to_f(xu, n * d);
        r = q_of(xf, n, d);
        e = fabs(site(&q, l, QSUR_SITE_UP)->x_log10 - r.log10_qsur);
        worst_x = e > worst_x ? e : worst_x;
        free(xu);
        free(xf);
        /* down: (h / s_ud) H */
        x = cap(&ws, l, "feed_forward.w2.in", &n);
        double *xs = to_d(x, n * hd), *xd = malloc((size_t)n * hd * sizeof(double));
        for (int64_t i = 0; i < n; i++)
            for (int j = 0; j < hd; j++)
                xs[i * hd + j] /= su[j];
        matmul(xs, Hd, xd, n, hd, hd);
        xf = to_f(xd, n * hd);
        r = q_of(xf, n, hd);
        e = fabs(site(&q, l, QSUR_SITE_DOWN)->x_log10 - r.log10_qsur);
        worst_x = e > worst_x ? e : worst_x;
        free(xs);
        free(xd);
        free(xf);

        /* weights: qkv = [A_q R S; A_k R S; S_ov^-1 R_g^T (A_v R S)_g] */
        int64_t rows = d + 2 * kv;
        double *A = malloc((size_t)rows * d * sizeof(double)), *AR = malloc((size_t)rows * d * sizeof(double));
        const float *src[3] = {B->wq.w, B->wk.w, B->wv.w};
        int64_t nr[3] = {d, kv, kv}, at = 0;
        for (int k = 0; k < 3; k++)
            for (int64_t i = 0; i < nr[k]; i++, at++)
                for (int j = 0; j < d; j++)
                    A[at * d + j] = (double)src[k][i * d + j] * B->attention_norm[j];
        matmul(A, R, AR, rows, d, d);
        for (int64_t i = 0; i < rows; i++)
            for (int j = 0; j < d; j++)
                AR[i * d + j] *= sa[j];
        double *V = AR + (size_t)(d + kv) * d, *Vn = malloc((size_t)kv * d * sizeof(double));
        for (int g = 0; g < c->n_kv_heads; g++) {
            const double *Rg = o->r_ov + ((size_t)l * c->n_kv_heads + g) * hs * hs;
            for (int i = 0; i < hs; i++)
                for (int j = 0; j < d; j++) {
                    double s = 0;
                    for (int k = 0; k < hs; k++)
                        s += Rg[k * hs + i] * V[(size_t)(g * hs + k) * d + j];
                    Vn[(size_t)(g * hs + i) * d + j] = s / so[g * hs + i];
                }
        }
        memcpy(V, Vn, (size_t)kv * d * sizeof(double));
        float *wf = to_f(AR, rows * d);
        r = q_of(wf, rows, d);
        e = fabs(site(&q, l, QSUR_SITE_QKV)->w_log10 - r.log10_qsur);
        worst_w = e > worst_w ? e : worst_w;
        free(A);
        free(AR);
        free(Vn);
        free(wf);
        /* up = [A1 R S_f; S_u^-1 A3 R S_f] */
        rows = 2 * hd;
        A = malloc((size_t)rows * d * sizeof(double));
        AR = malloc((size_t)rows * d * sizeof(double));
        for (int64_t i = 0; i < rows; i++)
            for (int j = 0; j < d; j++)
                A[i * d + j] = (double)(i < hd ? B->w1.w[i * d + j] : B->w3.w[(i - hd) * d + j]) * B->ffn_norm[j];
        matmul(A, R, AR, rows, d, d);
        for (int64_t i = 0; i < rows; i++)
            for (int j = 0; j < d; j++)
                AR[i * d + j] *= sf[j] / (i < hd ? 1.0 : su[i - hd]);
        wf = to_f(AR, rows * d);
        r = q_of(wf, rows, d);
        e = fabs(site(&q, l, QSUR_SITE_UP)->w_log10 - r.log10_qsur);
        worst_w = e > worst_w ? e : worst_w;
        free(A);
        free(AR);
        free(wf);
    }
    CHECK_MSG(worst_x < 2e-4, "random transforms: every site's activation log10 QSUR matches the independently "
              "transformed base capture (worst |diff| %.3g)", worst_x);
    CHECK_MSG(worst_w < 2e-5, "random transforms: the q/k/v and w1/w3 weight log10 QSUR match W diag(g) R S "
              "computed in double (worst |diff| %.3g)", worst_w);
    qsur_workspace_clear(&ws);
    free(H);
    free(Hd);
    free(ones);
    free(p.ids);
    qsur_llama_qsur_free(&q);
    qsur_ostquant_free(o);
}

/* ------------------------------------------------------------ training log */

static void test_train_log(const qsur_llama *m, const qsur_tokens *calib)
{
    qsur_error err;
    qsur_quant_spec w4 = qsur_quant_default(), a4 = qsur_quant_default();
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.steps = 3;
    op.batch = 1;
    op.seq_len = 32;
    op.max_seqs = 4;
    op.qsur_tokens = 100; /* probe: ceil(100 / 32) = 4 sequences = 128 tokens < hidden 172 */
    op.qsur_every = 2;
    op.seed = 3;
    qsur_ostquant *o = NULL, *fresh = NULL, *back = NULL;
    CHECK_OK(qsur_ostquant_new(&o, m, &op, &w4, &a4, &a4, &err), err);
    CHECK_OK(qsur_ostquant_new(&fresh, m, &op, &w4, &a4, &a4, &err), err);
    if (!o || !fresh)
        return;
    qsur_llama_qsur start;
    CHECK_OK(qsur_ostquant_qsur(fresh, calib, &start, &err), err);
    CHECK_OK(qsur_ostquant_train(o, m, calib, NULL, NULL, &err), err);
    CHECK_MSG(o->nqlog == 3 && o->qlog[0].step == 0 && o->qlog[1].step == 2 && o->qlog[2].step == 3,
              "measured at steps 0, 2 (every 2) and 3 (the last): %d tables", o->nqlog);
    CHECK(o->time.qsur > 0);
    if (o->nqlog >= 1 && start.sites) {
        int same = o->qlog[0].nsites == start.nsites;
        for (int i = 0; same && i < start.nsites; i++)
            same = o->qlog[0].sites[i].x_log10 == start.sites[i].x_log10 &&
                   o->qlog[0].sites[i].w_log10 == start.sites[i].w_log10;
        CHECK_MSG(same, "the step-0 table is the measurement of the initial transforms");
        const qsur_llama_qsur *q = &o->qlog[0];
        CHECK(q->n_tokens == 128);
        int down_sing = 1;
        for (int l = 0; l < q->n_layers; l++)
            down_sing &= site(q, l, QSUR_SITE_DOWN)->x_singular && !site(q, l, QSUR_SITE_QKV)->x_singular;
        CHECK_MSG(down_sing && q->x_nsingular == q->n_layers && q->sites[q->x_worst].site != QSUR_SITE_DOWN,
                  "128 probe tokens < 172 dims: the w2 inputs are singular and left out of the summary");
        CHECK(o->qlog[1].x_log10_mean != o->qlog[0].x_log10_mean); /* training moved the transforms */
    }
    /* the state file keeps the QSUR log (F32) */
    char path[4096];
    snprintf(path, sizeof path, "%s/ostq_qsur.safetensors", check_tmpdir());
    CHECK_OK(qsur_ostquant_save(o, path, &err), err);
    CHECK_OK(qsur_ostquant_load(&back, m, path, &err), err);
    if (back) {
        int same = back->nqlog == o->nqlog && back->opts.qsur_every == 2 && back->opts.qsur_tokens == 100;
        for (int i = 0; same && i < o->nqlog; i++) {
            same = back->qlog[i].step == o->qlog[i].step && back->qlog[i].x_worst == o->qlog[i].x_worst;
            for (int j = 0; same && j < o->qlog[i].nsites; j++) {
                const qsur_site_qsur *a = &o->qlog[i].sites[j], *b = &back->qlog[i].sites[j];
                same = (float)a->x_log10 == (float)b->x_log10 && (float)a->w_per_dim == (float)b->w_per_dim &&
                       a->x_singular == b->x_singular && a->d == b->d && a->w_rows == b->w_rows;
            }
        }
        CHECK_MSG(same, "save + load keeps every QSUR table (as F32)");
        /* a resumed run does not measure its start again (step 3 is logged) */
        back->opts.steps = 4;
        CHECK_OK(qsur_ostquant_train(back, m, calib, NULL, NULL, &err), err);
        CHECK(back->nqlog == 4 && back->qlog[3].step == 4);
    }
    qsur_llama_qsur_free(&start);
    qsur_ostquant_free(o);
    qsur_ostquant_free(fresh);
    qsur_ostquant_free(back);
}

int main(void)
{
    qsur_error err;
    qsur_llama *m = NULL;
    qsur_tokens calib;
    memset(&calib, 0, sizeof calib);
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    if (m) /* float weights: the test reads and edits w */
        CHECK_OK(qsur_llama_own_all(m, &err), err);
    if (!m)
        return check_done();
    CHECK_OK(qsur_tokens_load(&calib, check_shared("data/stories260K.calib.u16"), 256, m->cfg.vocab_size, &err),
             err);
    test_random(m, &calib);
    test_train_log(m, &calib);
    test_identity(m, &calib); /* last: it sets the norm gains to 1 */
    qsur_tokens_free(&calib);
    qsur_llama_free(m);
    return check_done();
}
