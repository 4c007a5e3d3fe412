/* Gradient checks of every block OSTQuant differentiates through: RMSNorm,
 * SwiGLU, causal attention, RoPE, the STE of fake quantization, the whole
 * model (GQA, online hooks), the transform-pair chain rule, the losses, and the
 * Cayley-Adam optimiser's orthogonality. Central differences are taken on
 * double-precision references written here (blocks) or on the float model with
 * double loss accumulation (whole model); tolerances are far below what a
 * wrong sign or transposition produces (relative errors of order 1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/llama_train.h"
#include "qsur/orthogonal.h"
#include "qsur/ostquant.h"
#include "qsur/quant_ste.h"
#include "qsur/rng.h"
#include "qsur/stiefel.h"

static double rel_err(const double *a, const double *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1e-300));
}

static void fill(qsur_rng *r, float *x, int64_t n, double s)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(s * qsur_rng_normal(r));
}

/* ---- RMSNorm: L = sum_ij c_ij y_ij in double ---- */
static double rms_ref(const double *x, const double *g, const double *c, int rows, int n)
{
    double L = 0;
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int j = 0; j < n; j++)
            ss += x[r * n + j] * x[r * n + j];
        double inv = 1.0 / sqrt(ss / n + 1e-5);
        for (int j = 0; j < n; j++)
            L += c[r * n + j] * x[r * n + j] * inv * g[j];
    }
    return L;
}

static void test_rmsnorm(qsur_rng *rng)
{
    enum { R = 3, N = 10 };
    float x[R * N], g[N], c[R * N], dx[R * N], dg[N] = {0};
    fill(rng, x, R * N, 1.0);
    fill(rng, g, N, 1.0);
    fill(rng, c, R * N, 1.0);
    qsur_llama_rmsnorm_backward(x, g, c, R, N, 1e-5, dx, dg);
    double xd[R * N], gd[N], cd[R * N], fdx[R * N], fdg[N], ax[R * N], ag[N];
    for (int i = 0; i < R * N; i++) {
        xd[i] = x[i];
        cd[i] = c[i];
        ax[i] = dx[i];
    }
    for (int i = 0; i < N; i++) {
        gd[i] = g[i];
        ag[i] = dg[i];
    }
    double h = 1e-6;
    for (int i = 0; i < R * N; i++) {
        double o = xd[i];
        xd[i] = o + h;
        double p = rms_ref(xd, gd, cd, R, N);
        xd[i] = o - h;
        double m = rms_ref(xd, gd, cd, R, N);
        xd[i] = o;
        fdx[i] = (p - m) / (2 * h);
    }
    for (int i = 0; i < N; i++) {
        double o = gd[i];
        gd[i] = o + h;
        double p = rms_ref(xd, gd, cd, R, N);
        gd[i] = o - h;
        double m = rms_ref(xd, gd, cd, R, N);
        gd[i] = o;
        fdg[i] = (p - m) / (2 * h);
    }
    CHECK_MSG(rel_err(ax, fdx, R * N) < 1e-5, "rmsnorm dx rel err %g", rel_err(ax, fdx, R * N));
    CHECK_MSG(rel_err(ag, fdg, N) < 1e-5, "rmsnorm dg rel err %g", rel_err(ag, fdg, N));
}

static void test_swiglu(qsur_rng *rng)
{
    enum { N = 40 };
    float a[N], u[N], c[N], da[N], du[N];
    fill(rng, a, N, 2.0);
    fill(rng, u, N, 1.0);
    fill(rng, c, N, 1.0);
    qsur_llama_swiglu_backward(a, u, c, N, da, du);
    double fa[N], fu[N], ga[N], gu[N], h = 1e-6;
    for (int i = 0; i < N; i++) {
        double A = a[i], U = u[i];
#define F(A_, U_) ((A_) / (1.0 + exp(-(A_))) * (U_) * c[i])
        fa[i] = (F(A + h, U) - F(A - h, U)) / (2 * h);
        fu[i] = (F(A, U + h) - F(A, U - h)) / (2 * h);
#undef F
        ga[i] = da[i];
        gu[i] = du[i];
    }
    CHECK_MSG(rel_err(ga, fa, N) < 1e-5, "swiglu da rel err %g", rel_err(ga, fa, N));
    CHECK_MSG(rel_err(gu, fu, N) < 1e-5, "swiglu du rel err %g", rel_err(gu, fu, N));
}

/* ---- causal attention of one head: L = sum c .* O ---- */
enum { AT = 7, AH = 4 };
static double att_ref(const double *q, const double *k, const double *v, const double *c)
{
    double L = 0, sc = 1.0 / sqrt((double)AH);
    for (int t = 0; t < AT; t++) {
        double s[AT], mx = -1e300, sum = 0;
        for (int j = 0; j <= t; j++) {
            s[j] = 0;
            for (int i = 0; i < AH; i++)
                s[j] += q[t * AH + i] * k[j * AH + i] * sc;
            mx = fmax(mx, s[j]);
        }
        for (int j = 0; j <= t; j++)
            sum += (s[j] = exp(s[j] - mx));
        for (int i = 0; i < AH; i++) {
            double o = 0;
            for (int j = 0; j <= t; j++)
                o += s[j] / sum * v[j * AH + i];
            L += c[t * AH + i] * o;
        }
    }
    return L;
}

static void test_attention(qsur_rng *rng)
{
    float q[AT * AH], k[AT * AH], v[AT * AH], c[AT * AH], p[AT * AT], o[AT * AH];
    float dq[AT * AH], dk[AT * AH] = {0}, dv[AT * AH] = {0}, scr[AT * AT];
    fill(rng, q, AT * AH, 1.0);
    fill(rng, k, AT * AH, 1.0);
    fill(rng, v, AT * AH, 1.0);
    fill(rng, c, AT * AH, 1.0);
    qsur_llama_attention_head(q, AH, k, v, AH, AT, AH, p, o, AH);
    qsur_llama_attention_head_backward(q, AH, k, v, AH, AT, AH, p, c, AH, dq, dk, dv, scr);
    double X[3][AT * AH], cd[AT * AH], an[3][AT * AH], fd[3][AT * AH], h = 1e-6;
    for (int i = 0; i < AT * AH; i++) {
        X[0][i] = q[i];
        X[1][i] = k[i];
        X[2][i] = v[i];
        cd[i] = c[i];
        an[0][i] = dq[i];
        an[1][i] = dk[i];
        an[2][i] = dv[i];
    }
    /* forward check too: O against the reference, one element */
    double ref_o0 = 0;
    {
        double cc[AT * AH] = {0};
        cc[5 * AH + 2] = 1;
        ref_o0 = att_ref(X[0], X[1], X[2], cc);
    }
    CHECK_NEAR(o[5 * AH + 2], ref_o0, 1e-5);
    for (int w = 0; w < 3; w++) {
        for (int i = 0; i < AT * AH; i++) {
            double s = X[w][i];
            X[w][i] = s + h;
            double P = att_ref(X[0], X[1], X[2], cd);
            X[w][i] = s - h;
            double M = att_ref(X[0], X[1], X[2], cd);
            X[w][i] = s;
            fd[w][i] = (P - M) / (2 * h);
        }
        CHECK_MSG(rel_err(an[w], fd[w], AT * AH) < 1e-5, "attention d%c rel err %g", "qkv"[w],
                  rel_err(an[w], fd[w], AT * AH));
    }
}

/* RoPE with -sin is the transpose: <rope(x), y> = <x, rope^T(y)> */
static void test_rope(qsur_rng *rng)
{
    enum { R = 5, H = 2, HS = 6 };
    float cs[R * HS / 2], sn[R * HS / 2], nsn[R * HS / 2], x[R * H * HS], y[R * H * HS];
    for (int i = 0; i < R * HS / 2; i++) {
        double a = qsur_rng_uniform(rng) * 6.28;
        cs[i] = (float)cos(a);
        sn[i] = (float)sin(a);
        nsn[i] = -sn[i];
    }
    fill(rng, x, R * H * HS, 1.0);
    fill(rng, y, R * H * HS, 1.0);
    float rx[R * H * HS], ry[R * H * HS];
    memcpy(rx, x, sizeof x);
    memcpy(ry, y, sizeof y);
    qsur_llama_rope(rx, R, H, HS, 0, cs, sn);
    qsur_llama_rope(ry, R, H, HS, 0, cs, nsn);
    double a = 0, b = 0, wrong = 0;
    for (int i = 0; i < R * H * HS; i++) {
        a += (double)rx[i] * y[i];
        b += (double)x[i] * ry[i];
    }
    qsur_llama_rope(y, R, H, HS, 0, cs, sn); /* the forward again: not the transpose */
    for (int i = 0; i < R * H * HS; i++)
        wrong += (double)x[i] * y[i];
    CHECK_NEAR(a, b, 1e-5);
    CHECK_MSG(fabs(a - wrong) > 1e-3, "rope is not its own transpose (%g vs %g)", a, wrong);
}

/* ---- STE: the exact derivative of the frozen-residual surrogate ---- */
static void test_ste(qsur_rng *rng)
{
    qsur_error err;
    enum { R = 3, C = 16 };
    float x[R * C], c[R * C], dx[R * C];
    /* mode 2: symmetric on the full grid -8..7, s = clip max(-min/8, max/7) */
    for (int mode = 2; mode >= 0; mode--)
        for (int clipped = 0; clipped <= 1; clipped++) {
            int sym = mode >= 1, full = mode == 2;
            qsur_quant_spec q = qsur_quant_default();
            q.symmetric = sym;
            q.full = full;
            q.clip = clipped ? 0.7 : 1.0;
            q.gran = QSUR_GRAN_GROUP;
            q.group = 8;
            fill(rng, x, R * C, 1.0);
            fill(rng, c, R * C, 1.0);
            CHECK_OK(qsur_fake_quant_backward(&q, x, R, C, c, dx, &err), err);
            /* surrogate per group: q~(x) = x + s(x) r (unclamped), c s(x) (clamped),
             * s = clip absmax / qmax (sym), clip (max - min) / (2^b - 1) (asym) */
            double an[R * C], fd[R * C];
            for (int i = 0; i < R * C; i++)
                an[i] = dx[i];
            for (int i = 0; i < R * C; i++) {
                int g0 = i / 8 * 8;
                qsur_qparams p;
                qsur_qparams_fit(&q, x + g0, 8, &p, &err);
                double code[8], res[8];
                int clampd[8];
                for (int j = 0; j < 8; j++) {
                    double u = (double)x[g0 + j] * p.inv + p.zero;
                    clampd[j] = u < p.lo || u > p.hi;
                    code[j] = qsur_qparams_code(&p, x[g0 + j]);
                    res[j] = code[j] - x[g0 + j] / (double)p.scale - (sym ? 0 : p.zero);
                }
                double h = 1e-6, Ls[2];
                for (int side = 0; side < 2; side++) {
                    double xs[8], amax = 0, mn = 0, mx = 0;
                    for (int j = 0; j < 8; j++)
                        xs[j] = x[g0 + j] + ((g0 + j == i) ? (side ? -h : h) : 0);
                    for (int j = 0; j < 8; j++) {
                        amax = fmax(amax, fabs(xs[j]));
                        mn = fmin(mn, xs[j]);
                        mx = fmax(mx, xs[j]);
                    }
                    /* asym: s = clip (max - min) / 15, z the integer of the evaluation point */
                    double s = full  ? q.clip * fmax(-mn / 8.0, mx / 7.0)
                               : sym ? q.clip * amax / 7.0
                                     : q.clip * (mx - mn) / 15.0;
                    double L = 0;
                    for (int j = 0; j < 8; j++) {
                        double qv = clampd[j] ? (code[j] - p.zero) * s : xs[j] + s * res[j];
                        L += c[g0 + j] * qv;
                    }
                    Ls[side] = L;
                }
                fd[i] = (Ls[0] - Ls[1]) / (2 * h);
            }
            CHECK_MSG(rel_err(an, fd, R * C) < 1e-4, "STE sym=%d full=%d clip=%d rel err %g", sym, full, clipped,
                      rel_err(an, fd, R * C));
        }
}

/* ---- STE with a constant asymmetric scale (ste_const): identity inside, 0 outside ---- */
static void test_ste_const(qsur_rng *rng)
{
    qsur_error err;
    enum { C = 16 };
    float x[C], c[C], dx[C];
    qsur_quant_spec q = qsur_quant_default();
    q.symmetric = 0;
    q.clip = 0.6;
    q.ste_const = 1;
    fill(rng, x, C, 1.0);
    fill(rng, c, C, 1.0);
    CHECK_OK(qsur_fake_quant_backward(&q, x, 1, C, c, dx, &err), err);
    qsur_qparams p;
    qsur_qparams_fit(&q, x, C, &p, &err);
    int clamped = 0;
    for (int i = 0; i < C; i++) {
        float u = x[i] * p.inv + p.zero;
        int out = u < p.lo || u > p.hi;
        clamped += out;
        CHECK(dx[i] == (out ? 0.0f : c[i]));
    }
    CHECK_MSG(clamped > 0, "clip 0.6 clamps something");
    /* symmetric (plain and full grid) with ste_const: no term for the absmax
     * element either; without it that element's gradient differs */
    for (int full = 0; full < 2; full++) {
        q.symmetric = 1;
        q.full = full;
        q.ste_const = 1;
        CHECK_OK(qsur_fake_quant_backward(&q, x, 1, C, c, dx, &err), err);
        qsur_qparams_fit(&q, x, C, &p, &err);
        int out_n = 0, same = 0;
        for (int i = 0; i < C; i++) {
            float u = x[i] * p.inv;
            int out = u < p.lo || u > p.hi;
            out_n += out;
            same += dx[i] == (out ? 0.0f : c[i]);
        }
        CHECK_MSG(same == C && out_n > 0, "sym full=%d ste_const: identity inside, 0 outside (%d of %d)", full, same,
                  C);
        float dy[C];
        q.ste_const = 0;
        CHECK_OK(qsur_fake_quant_backward(&q, x, 1, C, c, dy, &err), err);
        int differ = 0;
        for (int i = 0; i < C; i++)
            differ += dy[i] != dx[i];
        CHECK_MSG(differ == 1, "sym full=%d: the scale term moves exactly one element (%d)", full, differ);
    }
}

/* ---- rand_signs: the Hadamard start with random signs ---- */
static void test_rand_signs(qsur_rng *rng);
/* ---- wquant_code: the OSTQuant code's training-time weight quantizer ---- */
static void test_wquant_code(qsur_rng *rng);
static void test_sov_train(qsur_rng *rng);

/* ---- a tiny random model ---- */
static qsur_llama *tiny_model(qsur_rng *rng)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 16;
    c.hidden_dim = 24;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.vocab_size = 32;
    c.seq_len = 16;
    c.shared_classifier = 0;
    qsur_llama *m = NULL;
    qsur_error err;
    if (qsur_llama_new(&m, &c, &err))
        return NULL;
    c = m->cfg;
    fill(rng, m->tok_embeddings, (int64_t)c.vocab_size * c.dim, 1.0);
    fill(rng, m->output.w, (int64_t)c.vocab_size * c.dim, 0.3);
    for (int i = 0; i < c.dim; i++)
        m->norm[i] = (float)(1.0 + 0.2 * qsur_rng_normal(rng));
    for (int l = 0; l < c.n_layers; l++) {
        qsur_llama_layer *L = &m->layers[l];
        for (int i = 0; i < c.dim; i++) {
            L->attention_norm[i] = (float)(1.0 + 0.2 * qsur_rng_normal(rng));
            L->ffn_norm[i] = (float)(1.0 + 0.2 * qsur_rng_normal(rng));
        }
        qsur_llama_linear *lin[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        for (int i = 0; i < 7; i++)
            fill(rng, lin[i]->w, lin[i]->rows * lin[i]->cols, 0.8 / sqrt((double)lin[i]->cols));
    }
    return m;
}

/* A fixed orthogonal online transform for the hooks: rows x -> x Q. */
typedef struct {
    int n;
    float q[64 * 64];
    int transpose;
} online_mat;

static void online_apply(void *ctx, float *rows, int64_t nrows, int64_t n)
{
    online_mat *o = ctx;
    float tmp[64];
    for (int64_t r = 0; r < nrows; r++) {
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < n; i++)
                s += rows[r * n + i] * (o->transpose ? o->q[j * n + i] : o->q[i * n + j]);
            tmp[j] = (float)s;
        }
        memcpy(rows + r * n, tmp, (size_t)n * sizeof(float));
    }
}

static double model_loss(const qsur_llama *m, qsur_llama_tape *t, const int *tok, const float *c)
{
    qsur_error err;
    if (qsur_llama_train_forward(m, t, tok, t->B, t->T, &err))
        return NAN;
    double L = 0;
    for (int64_t i = 0; i < t->N * t->vocab_size; i++)
        L += (double)c[i] * t->logits[i];
    return L;
}

static void dir_check(const char *what, float *w, const float *g, int64_t n, const qsur_llama *m,
                      qsur_llama_tape *t, const int *tok, const float *c, qsur_rng *rng)
{
    /* directional derivative along a random direction D vs <g, D> */
    float *D = malloc((size_t)n * sizeof(float)), *w0 = malloc((size_t)n * sizeof(float));
    fill(rng, D, n, 1.0);
    memcpy(w0, w, (size_t)n * sizeof(float));
    double an = 0, h = 2e-3;
    for (int64_t i = 0; i < n; i++)
        an += (double)g[i] * D[i];
    for (int64_t i = 0; i < n; i++)
        w[i] = w0[i] + (float)h * D[i];
    double P = model_loss(m, t, tok, c);
    for (int64_t i = 0; i < n; i++)
        w[i] = w0[i] - (float)h * D[i];
    double M = model_loss(m, t, tok, c);
    memcpy(w, w0, (size_t)n * sizeof(float));
    double fd = (P - M) / (2 * h);
    CHECK_MSG(fabs(an - fd) <= 2e-3 * fmax(fabs(fd), 1.0), "model grad %s: analytic %.8g fd %.8g", what,
              an, fd);
    free(D);
    free(w0);
}

static void test_model(qsur_rng *rng)
{
    qsur_error err;
    qsur_llama *m = tiny_model(rng);
    CHECK(m != NULL);
    if (!m)
        return;
    static online_mat w2f, w2t, qkf, qkt;
    double Q[64 * 64];
    qsur_random_orthogonal(24, 5, Q, &err);
    w2f.n = w2t.n = 24;
    for (int i = 0; i < 24 * 24; i++)
        w2f.q[i] = w2t.q[i] = (float)Q[i];
    w2t.transpose = 1;
    qsur_random_orthogonal(4, 6, Q, &err);
    qkf.n = qkt.n = 4;
    for (int i = 0; i < 16; i++)
        qkf.q[i] = qkt.q[i] = (float)Q[i];
    qkt.transpose = 1;
    m->hooks.w2_in = (qsur_llama_online){online_apply, &w2f};
    m->hooks.qk = (qsur_llama_online){online_apply, &qkf};
    qsur_llama_online_t ot = {{online_apply, &qkt}, {NULL, NULL}, {online_apply, &w2t}};
    int B = 2, T = 9;
    qsur_llama_tape *t = NULL;
    qsur_llama_grads *g = NULL;
    CHECK_OK(qsur_llama_tape_new(&t, m, B, T, &err), err);
    CHECK_OK(qsur_llama_grads_new(&g, m, &err), err);
    int tok[18];
    for (int i = 0; i < B * T; i++)
        tok[i] = (int)qsur_rng_below(rng, 32);
    float *c = malloc((size_t)(B * T * 32) * sizeof(float));
    fill(rng, c, B * T * 32, 1.0);
    /* forward agrees with the inference forward */
    qsur_llama_state *st = NULL;
    CHECK_OK(qsur_llama_state_new(&st, m, B, T, &err), err);
    CHECK_OK(qsur_llama_forward(m, st, tok, B, T, 0, &err), err);
    model_loss(m, t, tok, c);
    double md = 0;
    for (int i = 0; i < B * T * 32; i++)
        md = fmax(md, fabs(st->logits[i] - t->logits[i]));
    CHECK_MSG(md < 1e-4, "train forward vs inference forward: max diff %g", md);
    qsur_llama_state_free(st);
    model_loss(m, t, tok, c);
    qsur_llama_grads_zero(g, m);
    CHECK_OK(qsur_llama_backward(m, t, c, &ot, g, &err), err);
    const qsur_llama_config *cf = &m->cfg;
    int64_t d = cf->dim, h = cf->hidden_dim, kv = cf->kv_dim;
    dir_check("tok_embeddings", m->tok_embeddings, g->d_tok_embeddings, 32 * d, m, t, tok, c, rng);
    dir_check("output", m->output.w, g->d_output, 32 * d, m, t, tok, c, rng);
    dir_check("norm", m->norm, g->d_norm, d, m, t, tok, c, rng);
    for (int l = 0; l < 2; l++) {
        qsur_llama_layer *L = &m->layers[l];
        qsur_llama_layer_grads *G = &g->layers[l];
        dir_check("attention_norm", L->attention_norm, G->d_attention_norm, d, m, t, tok, c, rng);
        dir_check("ffn_norm", L->ffn_norm, G->d_ffn_norm, d, m, t, tok, c, rng);
        dir_check("wq", L->wq.w, G->d_wq, d * d, m, t, tok, c, rng);
        dir_check("wk", L->wk.w, G->d_wk, kv * d, m, t, tok, c, rng);
        dir_check("wv", L->wv.w, G->d_wv, kv * d, m, t, tok, c, rng);
        dir_check("wo", L->wo.w, G->d_wo, d * d, m, t, tok, c, rng);
        dir_check("w1", L->w1.w, G->d_w1, h * d, m, t, tok, c, rng);
        dir_check("w2", L->w2.w, G->d_w2, d * h, m, t, tok, c, rng);
        dir_check("w3", L->w3.w, G->d_w3, h * d, m, t, tok, c, rng);
    }
    free(c);
    qsur_llama_tape_free(t);
    qsur_llama_grads_free(g);
    qsur_llama_free(m);
}

/* ---- the transform-pair chain rule: f(theta) = sum <C_X, fused X> ---- */
static double fused_dot(const qsur_ostquant *o, qsur_llama *fm, const qsur_llama_grads *C)
{
    qsur_error err;
    CHECK_OK(qsur_ostquant_fuse_into(o, fm, &err), err);
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, V = c->vocab_size;
    double s = 0;
#define DOT(a, b, n)                       \
    for (int64_t i_ = 0; i_ < (n); i_++)   \
        s += (double)(a)[i_] * (b)[i_];
    DOT(fm->tok_embeddings, C->d_tok_embeddings, V * d)
    DOT(fm->output.w, C->d_output, V * d)
    for (int l = 0; l < c->n_layers; l++) {
        qsur_llama_layer *L = &fm->layers[l];
        const qsur_llama_layer_grads *G = &C->layers[l];
        DOT(L->attention_norm, G->d_attention_norm, d)
        DOT(L->ffn_norm, G->d_ffn_norm, d)
        DOT(L->wq.w, G->d_wq, L->wq.rows * d)
        DOT(L->wk.w, G->d_wk, L->wk.rows * d)
        DOT(L->wv.w, G->d_wv, L->wv.rows * d)
        DOT(L->wo.w, G->d_wo, d * d)
        DOT(L->w1.w, G->d_w1, L->w1.rows * d)
        DOT(L->w2.w, G->d_w2, d * c->hidden_dim)
        DOT(L->w3.w, G->d_w3, L->w3.rows * d)
    }
#undef DOT
    return s;
}

static void chain_check(const char *what, double *p, const double *g, int64_t n, qsur_ostquant *o,
                        qsur_llama *fm, const qsur_llama_grads *C, qsur_rng *rng)
{
    double *D = malloc((size_t)n * sizeof(double)), an = 0, h = 1e-3;
    for (int64_t i = 0; i < n; i++) {
        D[i] = qsur_rng_normal(rng);
        an += g[i] * D[i];
        p[i] += h * D[i];
    }
    double P = fused_dot(o, fm, C);
    for (int64_t i = 0; i < n; i++)
        p[i] -= 2 * h * D[i];
    double M = fused_dot(o, fm, C);
    for (int64_t i = 0; i < n; i++)
        p[i] += h * D[i];
    double fd = (P - M) / (2 * h);
    CHECK_MSG(fabs(an - fd) <= 2e-3 * fmax(fabs(fd), 1.0), "chain rule %s: analytic %.8g fd %.8g", what,
              an, fd);
    free(D);
}

/* code_smooth: the w2 columns scaled after the fused Hadamard, the wk/wq rows
 * one scale each: against the same fusion with those scales at 1, times the
 * scales (a closed form of the layout the OSTQuant code uses). Weight-only
 * (o->ud_had, no online Hadamard): w2' = (w2'_1 H) S H^T instead. */
static void check_code_layout(qsur_ostquant *o, qsur_llama *fm)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hd = c->hidden_dim, kv = c->kv_dim, hs = c->head_size;
    int64_t ud0 = c->n_layers * (2 * d + kv), qk0 = c->n_layers * (2 * d + kv + hd);
    qsur_llama *ref = NULL;
    qsur_error err;
    CHECK_OK(qsur_llama_new(&ref, c, &err), err);
    double *keep = malloc((size_t)o->n_ls * sizeof(double));
    memcpy(keep, o->ls, (size_t)o->n_ls * sizeof(double));
    for (int64_t i = ud0; i < o->n_ls; i++) /* S_ud and S_qk at 1 */
        o->ls[i] = 0.0;
    CHECK_OK(qsur_ostquant_fuse_into(o, ref, &err), err);
    memcpy(o->ls, keep, (size_t)o->n_ls * sizeof(double));
    CHECK_OK(qsur_ostquant_fuse_into(o, fm, &err), err);
    double e = 0, e2 = 0;
    int group = c->n_heads / c->n_kv_heads;
    if (o->ud_had) /* ref w2 -> ref w2 H (then S, then H^T below) */
        for (int l = 0; l < c->n_layers; l++)
            CHECK_OK(qsur_hadamard_plan_apply(o->ud_had, ref->layers[l].w2.w, d, NULL, &err), err);
    for (int l = 0; l < c->n_layers && o->ud_had; l++) {
        const double *su = keep + ud0 + (int64_t)l * hd;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < hd; j++)
                ref->layers[l].w2.w[i * hd + j] *= (float)exp(su[j]);
        CHECK_OK(qsur_hadamard_plan_apply_transpose(o->ud_had, ref->layers[l].w2.w, d, NULL, &err), err);
    }
    for (int l = 0; l < c->n_layers; l++) {
        const double *su = keep + ud0 + (int64_t)l * hd, *sq = keep + qk0 + (int64_t)l * kv;
        const qsur_llama_layer *A = &fm->layers[l], *B = &ref->layers[l];
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < hd; j++)
                e2 = fmax(e2, fabs(A->w2.w[i * hd + j] - B->w2.w[i * hd + j] * (o->ud_had ? 1.0 : exp(su[j]))));
        for (int64_t r = 0; r < kv; r++)
            for (int64_t j = 0; j < d; j++)
                e = fmax(e, fabs(A->wk.w[r * d + j] - B->wk.w[r * d + j] * exp(sq[r])));
        for (int64_t r = 0; r < d; r++) {
            int64_t kr = (r / hs / group) * hs + r % hs;
            for (int64_t j = 0; j < d; j++)
                e = fmax(e, fabs(A->wq.w[r * d + j] - B->wq.w[r * d + j] / exp(sq[kr])));
        }
    }
    CHECK_MSG(e < 1e-5, "smooth=code layout: max diff %g from the closed form (w2 %g)", e, e2);
    free(keep);
    qsur_llama_free(ref);
}

/* The fused float model equals the original (the transforms are exact
 * equivalences, online rotations on, activation and KV quantizers off). */
static void check_fused_equivalent(const qsur_ostquant *o, const qsur_llama *m, qsur_rng *rng)
{
    qsur_error err;
    qsur_llama *fz = NULL;
    qsur_llama_rotations *rot = NULL;
    CHECK_OK(qsur_ostquant_fuse(o, &fz, &rot, &err), err);
    if (!fz)
        return;
    fz->hooks.act.bits = fz->hooks.act_wo.bits = fz->hooks.kv.bits = 16;
    qsur_llama_state *s1 = NULL, *s2 = NULL;
    int tok[12];
    for (int i = 0; i < 12; i++)
        tok[i] = (int)qsur_rng_below(rng, 32);
    qsur_llama_state_new(&s1, m, 1, 12, &err);
    qsur_llama_state_new(&s2, fz, 1, 12, &err);
    CHECK_OK(qsur_llama_forward(m, s1, tok, 1, 12, 0, &err), err);
    CHECK_OK(qsur_llama_forward(fz, s2, tok, 1, 12, 0, &err), err);
    double md = 0;
    for (int i = 0; i < 12 * 32; i++)
        md = fmax(md, fabs(s1->logits[i] - s2->logits[i]));
    CHECK_MSG(md < 1e-4, "fused float model vs original: max logit diff %g", md);
    qsur_llama_state_free(s1);
    qsur_llama_state_free(s2);
    qsur_llama_free(fz);
    qsur_llama_rotations_free(rot);
}

/* fm = o fused; the returned model = o fused with S_ov at 1 (the reference of
 * the S_ov layout checks); *keep = a copy of o's log-scales (caller frees both). */
static qsur_llama *fuse_with_unit_sov(qsur_ostquant *o, qsur_llama *fm, double **keep)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t ov0 = c->n_layers * c->dim;
    qsur_llama *ref = NULL;
    qsur_error err;
    CHECK_OK(qsur_llama_new(&ref, c, &err), err);
    *keep = malloc((size_t)o->n_ls * sizeof(double));
    memcpy(*keep, o->ls, (size_t)o->n_ls * sizeof(double));
    for (int64_t i = ov0; i < ov0 + c->n_layers * c->kv_dim; i++) /* S_ov at 1 */
        o->ls[i] = 0.0;
    CHECK_OK(qsur_ostquant_fuse_into(o, ref, &err), err);
    memcpy(o->ls, *keep, (size_t)o->n_ls * sizeof(double));
    CHECK_OK(qsur_ostquant_fuse_into(o, fm, &err), err);
    return ref;
}

/* sov_code: the fused wv and wo against a closed form from the same fusion
 * with S_ov at 1 (ref: wv_ref_g = R_g^T wv''_g, wo_ref_h = Y_h R_g): the code's
 * order gives R_g wv'_g = S_g^-1 R_g wv_ref_g (rows) and wo'_h R_g^T =
 * (wo_ref_h R_g^T) S_g (columns); qsur's order would give wv'_g = S_g^-1
 * wv_ref_g, which must differ (the two orders are different functions once
 * quantized). */
static void check_sov_layout(qsur_ostquant *o, qsur_llama *fm)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, kv = c->kv_dim, hs = c->head_size;
    int64_t ov0 = c->n_layers * d;
    int group = c->n_heads / c->n_kv_heads;
    double *keep = NULL;
    qsur_llama *ref = fuse_with_unit_sov(o, fm, &keep);
    double ev = 0, eo = 0, qsur_order = 0, big = 0;
    for (int l = 0; l < c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++) {
            const double *Rg = o->r_ov + ((size_t)l * c->n_kv_heads + g) * hs * hs, *so = keep + ov0 + l * kv + g * hs;
            const float *V = fm->layers[l].wv.w + g * hs * d, *Vr = ref->layers[l].wv.w + g * hs * d;
            for (int64_t i = 0; i < hs; i++)
                for (int64_t j = 0; j < d; j++) {
                    double a = 0, b = 0; /* (R_g wv')_ij, (R_g wv_ref)_ij */
                    for (int64_t k = 0; k < hs; k++) {
                        a += Rg[i * hs + k] * V[k * d + j];
                        b += Rg[i * hs + k] * Vr[k * d + j];
                    }
                    ev = fmax(ev, fabs(a - b / exp(so[i])));
                    qsur_order = fmax(qsur_order, fabs(V[i * d + j] - Vr[i * d + j] / exp(so[i])));
                    big = fmax(big, fabs(V[i * d + j]));
                }
            for (int h = g * group; h < (g + 1) * group; h++) {
                const float *W = fm->layers[l].wo.w, *Wr = ref->layers[l].wo.w;
                for (int64_t i = 0; i < d; i++)
                    for (int64_t j = 0; j < hs; j++) {
                        double a = 0, b = 0; /* (wo'_h R_g^T)_ij, (wo_ref_h R_g^T)_ij */
                        for (int64_t k = 0; k < hs; k++) {
                            a += W[i * d + h * hs + k] * Rg[j * hs + k];
                            b += Wr[i * d + h * hs + k] * Rg[j * hs + k];
                        }
                        eo = fmax(eo, fabs(a - b * exp(so[j])));
                    }
            }
        }
    CHECK_MSG(ev < 1e-5 && eo < 1e-5, "sov-order=code layout: max diff wv %g wo %g from the closed form", ev, eo);
    CHECK_MSG(qsur_order > 1e-2 * big, "sov-order=code: wv differs from qsur's order (%g of %g)", qsur_order, big);
    free(keep);
    qsur_llama_free(ref);
}

/* sov_train: the training-time wo (qsur_ostquant_fuse_into) against a closed
 * form: with P = R_res wo' blockdiag(R_g)^T (in double) and P_ref the same of
 * the fusion with S_ov at 1 (= the folded wo), P_ij = s_row(i) P_ref_ij, the
 * row i of wo scaled by S_ov expanded to the query heads (s[g hs + i % hs],
 * g = (i / hs) / group), not its columns. */
static void check_sov_train_layout(qsur_ostquant *o, qsur_llama *fm)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, kv = c->kv_dim, hs = c->head_size, ov0 = c->n_layers * d;
    int group = c->n_heads / c->n_kv_heads;
    double *keep = NULL;
    qsur_llama *ref = fuse_with_unit_sov(o, fm, &keep);
    double *P = malloc((size_t)(2 * d * d) * sizeof(double)), *Pr = P + d * d, e = 0, big = 0, moved = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const float *W[2] = {fm->layers[l].wo.w, ref->layers[l].wo.w};
        for (int w = 0; w < 2; w++) /* (R_res W)_ik, then each head block times R_g^T */
            for (int64_t i = 0; i < d; i++)
                for (int h = 0; h < c->n_heads; h++) {
                    const double *Rg = o->r_ov + ((size_t)l * c->n_kv_heads + h / group) * hs * hs;
                    for (int64_t j = 0; j < hs; j++) {
                        double a = 0;
                        for (int64_t k = 0; k < hs; k++) {
                            double rw = 0;
                            for (int64_t m = 0; m < d; m++)
                                rw += o->r_res[i * d + m] * W[w][m * d + h * hs + k];
                            a += rw * Rg[j * hs + k];
                        }
                        (w ? Pr : P)[i * d + h * hs + j] = a;
                    }
                }
        for (int64_t i = 0; i < d; i++) {
            double s = exp(keep[ov0 + l * kv + (i / hs / group) * hs + i % hs]);
            for (int64_t j = 0; j < d; j++) {
                e = fmax(e, fabs(P[i * d + j] - s * Pr[i * d + j]));
                big = fmax(big, fabs(P[i * d + j]));
                moved = fmax(moved, fabs(P[i * d + j] - Pr[i * d + j]));
            }
        }
    }
    CHECK_MSG(e < 1e-5 * fmax(big, 1.0), "sov-train=code: training-time wo differs by %g from the row-scaled closed form",
              e);
    CHECK_MSG(moved > 1e-2 * big, "sov-train=code: S_ov changed the training-time wo (%g of %g)", moved, big);
    free(P);
    free(keep);
    qsur_llama_free(ref);
}

/* code = 1: smooth=code with the online w2 Hadamard on (activations quantized),
 * code = 2: smooth=code weight-only (the Hadamard fused offline);
 * sov bit 1: S_ov before R_ov (the OSTQuant code's order); bit 2: S_ov
 * trained as the code's training forward uses it (sov_train): the finite
 * differences then check the training-time function, the float equivalence
 * the deployed one */
static void test_chain(qsur_rng *rng, int code, int sov)
{
    qsur_error err;
    qsur_llama *m = tiny_model(rng);
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.learn_qk = 1; /* S_qk too: its chain rule and the exact q.k through RoPE */
    op.code_smooth = code;
    op.sov_code = sov & 1;
    op.sov_train = (sov & 2) != 0;
    qsur_quant_spec w4 = qsur_quant_default(), off = qsur_quant_default();
    off.bits = 16;
    qsur_ostquant *o = NULL;
    CHECK_OK(qsur_ostquant_new(&o, m, &op, &w4, code == 1 ? &w4 : &off, &off, &err), err);
    if (!o)
        return;
    for (int64_t i = 0; i < o->n_ls; i++)
        o->ls[i] = 0.3 * qsur_rng_normal(rng);
    qsur_llama_grads *C = NULL;
    qsur_llama *fm = NULL, *fm0 = NULL; /* float models of the fused weights */
    CHECK_OK(qsur_llama_new(&fm, &o->cfg, &err), err);
    CHECK_OK(qsur_llama_new(&fm0, &o->cfg, &err), err);
    CHECK_OK(qsur_llama_grads_new(&C, fm0, &err), err);
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, V = c->vocab_size, hd = c->hidden_dim, kv = c->kv_dim;
    fill(rng, C->d_tok_embeddings, V * d, 1.0);
    fill(rng, C->d_output, V * d, 1.0);
    for (int l = 0; l < c->n_layers; l++) {
        qsur_llama_layer_grads *G = &C->layers[l];
        fill(rng, G->d_attention_norm, d, 1.0);
        fill(rng, G->d_ffn_norm, d, 1.0);
        fill(rng, G->d_wq, d * d, 1.0);
        fill(rng, G->d_wk, kv * d, 1.0);
        fill(rng, G->d_wv, kv * d, 1.0);
        fill(rng, G->d_wo, d * d, 1.0);
        fill(rng, G->d_w1, hd * d, 1.0);
        fill(rng, G->d_w2, d * hd, 1.0);
        fill(rng, G->d_w3, hd * d, 1.0);
    }
    int64_t nov = (int64_t)c->n_layers * c->n_kv_heads * c->head_size * c->head_size;
    double *dr = malloc((size_t)(d * d) * sizeof(double)), *dov = malloc((size_t)nov * sizeof(double));
    double *dls = malloc((size_t)o->n_ls * sizeof(double));
    CHECK_OK(qsur_ostquant_fuse_into(o, fm0, &err), err);
    CHECK_OK(qsur_ostquant_param_grads(o, fm0, C, dr, dov, dls, &err), err);
    chain_check("R_res", o->r_res, dr, d * d, o, fm, C, rng);
    chain_check("R_ov", o->r_ov, dov, nov, o, fm, C, rng);
    chain_check("log scales", o->ls, dls, o->n_ls, o, fm, C, rng);
    /* each scale group alone, so one wrong group cannot hide behind the others */
    const char *names[5] = {"S_attn", "S_ov", "S_ffn", "S_ud", "S_qk"};
    int64_t off4[6] = {0, c->n_layers * d, c->n_layers * (d + kv), c->n_layers * (2 * d + kv),
                       c->n_layers * (2 * d + kv + hd), o->n_ls};
    CHECK(o->n_ls == c->n_layers * (2 * d + kv + hd + (code ? kv : kv / 2)));
    for (int k = 0; k < 5; k++)
        chain_check(names[k], o->ls + off4[k], dls + off4[k], off4[k + 1] - off4[k], o, fm, C, rng);
    if (code) { /* not an equivalence: the layout against its closed form instead */
        CHECK(code == 1 ? o->rot->w2 != NULL && !o->ud_had : !o->rot->w2 && o->ud_had != NULL);
        check_code_layout(o, fm);
    } else {
        check_fused_equivalent(o, m, rng);
    }
    if (sov == 1)
        check_sov_layout(o, fm);
    if (sov & 2)
        check_sov_train_layout(o, fm);
    free(dr);
    free(dov);
    free(dls);
    qsur_llama_free(fm);
    qsur_llama_free(fm0);
    qsur_llama_grads_free(C);
    qsur_ostquant_free(o);
    qsur_llama_free(m);
}

/* ---- losses: dz against central differences of the returned loss ---- */
static void test_losses(qsur_rng *rng)
{
    enum { B = 2, T = 3, V = 12 };
    float z[B * T * V], zf[B * T * V], dz[B * T * V];
    int tok[B * T];
    fill(rng, z, B * T * V, 2.0);
    fill(rng, zf, B * T * V, 2.0);
    for (int i = 0; i < B * T; i++)
        tok[i] = (int)qsur_rng_below(rng, V);
    for (int kind = 0; kind < 3; kind++) {
        double kl;
        qsur_ostquant_loss_eval((qsur_ostquant_loss)kind, 5, z, zf, tok, B, T, V, dz, &kl);
        double an[B * T * V], fd[B * T * V];
        for (int i = 0; i < B * T * V; i++) {
            float o = z[i];
            double h = 1e-2;
            z[i] = o + (float)h;
            double P = qsur_ostquant_loss_eval((qsur_ostquant_loss)kind, 5, z, zf, tok, B, T, V, NULL, &kl);
            z[i] = o - (float)h;
            double M = qsur_ostquant_loss_eval((qsur_ostquant_loss)kind, 5, z, zf, tok, B, T, V, NULL, &kl);
            z[i] = o;
            fd[i] = (P - M) / (2 * h);
            an[i] = dz[i];
        }
        CHECK_MSG(rel_err(an, fd, B * T * V) < 1e-3, "loss %s: dz rel err %g",
                  qsur_ostquant_loss_name((qsur_ostquant_loss)kind), rel_err(an, fd, B * T * V));
    }
    /* k >= V: the full KL(softmax(zf) || softmax(z)), against a plain sum, and its dz */
    double full = 0;
    for (int t = 0; t < B * T; t++) {
        double sf = 0, sz = 0;
        for (int j = 0; j < V; j++)
            sf += exp(zf[t * V + j]), sz += exp(z[t * V + j]);
        for (int j = 0; j < V; j++) {
            double p = exp(zf[t * V + j]) / sf, q = exp(z[t * V + j]) / sz;
            full += p * log(p / q) / (B * T);
        }
    }
    double klf, Lf = qsur_ostquant_loss_eval(QSUR_OSTQ_KLTOP, 1000, z, zf, tok, B, T, V, dz, &klf);
    CHECK_MSG(fabs(Lf - full) < 1e-9 && fabs(klf - full) < 1e-9, "KL-Top k >= V: %.12g, full KL %.12g", Lf,
              full);
    double an2[B * T * V], fd2[B * T * V];
    for (int i = 0; i < B * T * V; i++) {
        float o = z[i];
        double h = 1e-2, kk;
        z[i] = o + (float)h;
        double P = qsur_ostquant_loss_eval(QSUR_OSTQ_KLTOP, 1000, z, zf, tok, B, T, V, NULL, &kk);
        z[i] = o - (float)h;
        double M = qsur_ostquant_loss_eval(QSUR_OSTQ_KLTOP, 1000, z, zf, tok, B, T, V, NULL, &kk);
        z[i] = o;
        fd2[i] = (P - M) / (2 * h);
        an2[i] = dz[i];
    }
    CHECK_MSG(rel_err(an2, fd2, B * T * V) < 1e-3, "full KL: dz rel err %g", rel_err(an2, fd2, B * T * V));
    /* KL-Top of identical logits is 0; k = V equals the full KL */
    double kl;
    double L = qsur_ostquant_loss_eval(QSUR_OSTQ_KLTOP, 5, zf, zf, tok, B, T, V, NULL, &kl);
    CHECK_NEAR(L, 0.0, 1e-12);
}

/* ---- Cayley-Adam: orthogonal after many steps, and it descends ---- */
static void test_stiefel(qsur_rng *rng)
{
    qsur_error err;
    enum { N = 12 };
    double R[N * N], Q[N * N], G[N * N];
    qsur_random_orthogonal(N, 11, Q, &err);
    for (int i = 0; i < N * N; i++)
        R[i] = (i % (N + 1)) == 0;
    qsur_stiefel_adam *o = NULL;
    CHECK_OK(qsur_stiefel_adam_new(&o, N, &err), err);
    /* Procrustes: f(R) = ||R - Q||^2 / 2, G = R - Q; minimum at R = Q */
    double f0 = 0, f1 = 0, worst = 0;
    for (int i = 0; i < N * N; i++)
        f0 += 0.5 * (R[i] - Q[i]) * (R[i] - Q[i]);
    for (int step = 0; step < 3000; step++) {
        for (int i = 0; i < N * N; i++)
            G[i] = R[i] - Q[i] + 0.01 * qsur_rng_normal(rng);
        qsur_stiefel_adam_step(o, R, G, step < 2000 ? 0.05 : 0.005, &err);
        if (step % 100 == 0)
            worst = fmax(worst, qsur_orthogonality_error(R, N));
    }
    for (int i = 0; i < N * N; i++)
        f1 += 0.5 * (R[i] - Q[i]) * (R[i] - Q[i]);
    worst = fmax(worst, qsur_orthogonality_error(R, N));
    CHECK_MSG(worst < 1e-10, "R^T R - I after 3000 Cayley steps: %g", worst);
    /* det Q may be -1 (unreachable from I on SO(n)): compare with the best in SO(n)
     * loosely — the loss must have dropped a lot */
    CHECK_MSG(f1 < 0.2 * f0, "Cayley-Adam descends: f %g -> %g", f0, f1);
    qsur_stiefel_adam_free(o);
}

/* ---- wo's own input quantizer (hooks.act_wo, per head) ---- */
static void test_act_wo(qsur_rng *rng)
{
    qsur_error err;
    qsur_llama *m = tiny_model(rng);
    if (!m)
        return;
    qsur_llama_hooks none = qsur_llama_hooks_none();
    CHECK(qsur_llama_act_wo(&none) == &none.act);
    m->hooks.act = qsur_quant_default();
    m->hooks.act.symmetric = 0;
    m->hooks.act_wo = m->hooks.act;
    m->hooks.act_wo.gran = QSUR_GRAN_GROUP;
    m->hooks.act_wo.group = m->cfg.head_size;
    CHECK(qsur_llama_act_wo(&m->hooks) == &m->hooks.act_wo);
    int B = 2, T = 7, tok[14], V = m->cfg.vocab_size;
    for (int i = 0; i < B * T; i++)
        tok[i] = (int)qsur_rng_below(rng, (uint64_t)V);
    qsur_llama_tape *t = NULL;
    qsur_llama_state *st = NULL;
    CHECK_OK(qsur_llama_tape_new(&t, m, B, T, &err), err);
    CHECK_OK(qsur_llama_state_new(&st, m, B, T, &err), err);
    if (t && st) {
        /* the training forward quantizes wo's input the same way as inference */
        CHECK_OK(qsur_llama_forward(m, st, tok, B, T, 0, &err), err);
        CHECK_OK(qsur_llama_train_forward(m, t, tok, B, T, &err), err);
        double md = 0, moved = 0;
        for (int i = 0; i < B * T * V; i++)
            md = fmax(md, fabs(st->logits[i] - t->logits[i]));
        CHECK_MSG(md < 1e-4, "act_wo: train vs inference forward max diff %g", md);
        /* the tape's aq is the per-head quantization of a: check one head of one row by hand */
        qsur_qparams p;
        int hs = m->cfg.head_size;
        const float *a = t->a + 3 * m->cfg.dim + hs, *aq = t->aq + 3 * m->cfg.dim + hs;
        CHECK_OK(qsur_qparams_fit(&m->hooks.act_wo, a, hs, &p, &err), err);
        for (int j = 0; j < hs; j++)
            CHECK(aq[j] == qsur_qparams_apply(&p, a[j]));
        /* per token (follow act) gives other logits */
        float *before = malloc((size_t)(B * T * V) * sizeof(float));
        if (before) {
            memcpy(before, st->logits, (size_t)(B * T * V) * sizeof(float));
            m->hooks.act_wo.bits = 0;
            CHECK_OK(qsur_llama_forward(m, st, tok, B, T, 0, &err), err);
            for (int i = 0; i < B * T * V; i++)
                moved = fmax(moved, fabs(st->logits[i] - before[i]));
            CHECK_MSG(moved > 1e-6, "act_wo per head vs per token: logits equal (%g)", moved);
            free(before);
        }
    }
    qsur_llama_tape_free(t);
    qsur_llama_state_free(st);
    qsur_llama_free(m);
}

/* nseq random sequences of 8 tokens of the tiny model's vocabulary in ids. */
static qsur_tokens random_tokens(qsur_rng *rng, int *ids, int nseq)
{
    for (int i = 0; i < nseq * 8; i++)
        ids[i] = (int)qsur_rng_below(rng, 32);
    qsur_tokens t = {ids, (int64_t)nseq * 8, 8};
    return t;
}

/* ---- phase timers of the training loop ---- */
static void test_train_timing(qsur_rng *rng)
{
    qsur_error err;
    qsur_llama *m = tiny_model(rng);
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.steps = 3;
    op.batch = 2;
    qsur_quant_spec w4 = qsur_quant_default(), a4 = qsur_quant_default(), off = qsur_quant_default();
    off.bits = 16;
    qsur_ostquant *o = NULL;
    CHECK_OK(qsur_ostquant_new(&o, m, &op, &w4, &a4, &off, &err), err);
    int ids[4 * 8];
    qsur_tokens cal = random_tokens(rng, ids, 4);
    if (o) {
        CHECK_OK(qsur_ostquant_train(o, m, &cal, NULL, NULL, &err), err);
        const qsur_ostquant_timing *t = &o->time;
        double phases[] = {t->fuse, t->wquant, t->forward, t->teacher, t->loss, t->backward,
                           t->ste, t->chain, t->optim, t->select, t->eval};
        double sum = 0, mn = 0;
        for (size_t i = 0; i < sizeof phases / sizeof *phases; i++) {
            sum += phases[i];
            mn = fmin(mn, phases[i]);
        }
        CHECK_MSG(o->step == 3, "3 steps done, got %d", o->step);
        CHECK_MSG(mn >= 0 && t->forward > 0 && t->backward > 0 && t->select > 0,
                  "phase timers positive: min %g forward %g backward %g select %g", mn, t->forward,
                  t->backward, t->select);
        /* the phases are disjoint laps inside the call: they cannot exceed its total */
        CHECK_MSG(t->total > 0 && sum <= t->total * (1 + 1e-9) + 1e-9, "phases %g <= total %g", sum, t->total);
        CHECK_MSG(t->eval == 0, "no eval stream: eval time %g", t->eval);
        /* cumulative across calls: more steps only add */
        double before = t->total;
        o->opts.steps = 4;
        CHECK_OK(qsur_ostquant_train(o, m, &cal, NULL, NULL, &err), err);
        CHECK_MSG(o->time.total > before, "timers accumulate: %g -> %g", before, o->time.total);
    }
    qsur_ostquant_free(o);
    qsur_llama_free(m);
}

/* ---- threads=N: the batch split over threads gives the 1-thread step ----
 * W4A4KV4 (asymmetric act/KV), one step from the same start, batch 5 in parts
 * of 3 + 2 and 2 + 2 + 1 (unequal weights B_p / B). Compared: the loss and the
 * step's gradients themselves (Adam's first moment after one step is 0.1 x the
 * gradient, before any normalisation; no clipping). A part's GEMMs round their
 * last bits differently and one activation crossing a rounding threshold moves
 * the asymmetric STE's scale term (c - u jumps by 1), so the gradients agree to
 * ~1e-3, not to float accuracy; a wrong part weighting is off by tens of %. */
static double rel_diff(const double *a, const double *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / fmax(den, 1e-300));
}

static void test_train_threads(qsur_rng *rng)
{
    qsur_error err;
    qsur_llama *m = tiny_model(rng);
    int ids[6 * 8];
    qsur_tokens cal = random_tokens(rng, ids, 6);
    qsur_quant_spec w4 = qsur_quant_default(), a4 = qsur_quant_default();
    a4.symmetric = 0;
    qsur_ostquant *o[3] = {NULL, NULL, NULL};
    const int threads[3] = {1, 2, 3};
    for (int k = 0; k < 3; k++) {
        qsur_ostquant_opts op = qsur_ostquant_default();
        op.steps = 1;
        op.batch = 5;
        op.threads = threads[k];
        op.learn_qk = 1;
        op.keep_last = 1;
        CHECK_OK(qsur_ostquant_new(&o[k], m, &op, &w4, &a4, &a4, &err), err);
        if (o[k])
            CHECK_OK(qsur_ostquant_train(o[k], m, &cal, NULL, NULL, &err), err);
    }
    for (int k = 1; k < 3 && o[0] && o[k]; k++) {
        int64_t d = o[0]->cfg.dim;
        double el = fabs(o[k]->log[0].loss - o[0]->log[0].loss) / o[0]->log[0].loss;
        double gs = rel_diff(o[k]->opt_ls->m, o[0]->opt_ls->m, o[0]->n_ls);
        double gr = rel_diff(o[k]->opt_res->m, o[0]->opt_res->m, d * d);
        CHECK_MSG(o[k]->nlog == 1 && el < 1e-6 && gs < 1e-2 && gr < 1e-2,
                  "threads=%d vs 1: loss %g, scale gradient %g, R_res gradient %g (relative)", threads[k], el, gs,
                  gr);
    }
    for (int k = 0; k < 3; k++)
        qsur_ostquant_free(o[k]);
    qsur_llama_free(m);
}

static void test_rand_signs(qsur_rng *rng)
{
    qsur_error err;
    qsur_llama *m = tiny_model(rng);
    qsur_quant_spec w4 = qsur_quant_default(), off = qsur_quant_default();
    off.bits = 16;
    qsur_ostquant *o[3] = {NULL, NULL, NULL}; /* plain, random signs seed 1, seed 2 */
    for (int k = 0; k < 3; k++) {
        qsur_ostquant_opts op = qsur_ostquant_default();
        op.womi = 0;
        op.rand_signs = k > 0;
        op.seed = k == 2 ? 2 : 1;
        CHECK_OK(qsur_ostquant_new(&o[k], m, &op, &w4, &off, &off, &err), err);
    }
    if (o[0] && o[1] && o[2]) {
        int64_t d = o[0]->cfg.dim, hs = o[0]->cfg.head_size;
        /* a Hadamard matrix with random column signs: every entry +-1/sqrt(n),
         * the same magnitudes as the plain start, orthogonal; the signs differ */
        int hadamard = 1, plain_diff = 0, seed_diff = 0, ov_diff = 0;
        for (int64_t i = 0; i < d * d; i++) {
            hadamard &= fabs(fabs(o[1]->r_res[i]) - 1.0 / sqrt((double)d)) < 1e-6;
            plain_diff += o[1]->r_res[i] != o[0]->r_res[i];
            seed_diff += o[1]->r_res[i] != o[2]->r_res[i];
        }
        double orth = 0;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                double s = 0;
                for (int64_t k = 0; k < d; k++)
                    s += o[1]->r_res[i * d + k] * o[1]->r_res[j * d + k];
                orth = fmax(orth, fabs(s - (i == j)));
            }
        for (int64_t i = 0; i < hs * hs; i++)
            ov_diff += o[1]->r_ov[i] != o[1]->r_ov[hs * hs + i];
        CHECK_MSG(hadamard && orth < 1e-9, "rand_signs: R_res is a signed Hadamard (orthogonality %g)", orth);
        CHECK_MSG(plain_diff > 0 && seed_diff > 0, "rand_signs: differs from the plain start (%d) and by seed (%d)",
                  plain_diff, seed_diff);
        CHECK_MSG(ov_diff > 0, "rand_signs: each R_ov has its own signs");
    }
    for (int k = 0; k < 3; k++)
        qsur_ostquant_free(o[k]);
    qsur_llama_free(m);
}

static void test_wquant_code(qsur_rng *rng)
{
    qsur_error err;
    qsur_llama *m = tiny_model(rng);
    int ids[4 * 8];
    qsur_tokens cal = random_tokens(rng, ids, 4);
    qsur_quant_spec w4 = qsur_quant_default(), off = qsur_quant_default();
    w4.full = 1;
    w4.clip_search = 1;
    w4.clip_norm = 2.4;
    off.bits = 16;
    qsur_ostquant *o[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        qsur_ostquant_opts op = qsur_ostquant_default();
        op.steps = 1;
        op.batch = 4;
        op.keep_last = 1;
        op.wquant_code = k;
        CHECK_OK(qsur_ostquant_new(&o[k], m, &op, &w4, &off, &off, &err), err);
        if (o[k])
            CHECK_OK(qsur_ostquant_train(o[k], m, &cal, NULL, NULL, &err), err);
    }
    if (o[0] && o[1]) {
        /* the session's quantizer is untouched; the training one differs in its
         * clip search (the first forward's loss) and in the STE (the step) */
        CHECK(o[1]->wspec.clip_norm == 2.4 && !o[1]->wspec.ste_const);
        double gr = rel_diff(o[1]->opt_res->m, o[0]->opt_res->m, o[0]->cfg.dim * o[0]->cfg.dim);
        CHECK_MSG(o[1]->log[0].loss != o[0]->log[0].loss && gr > 1e-6,
                  "wquant_code changes the training forward (loss %.9g vs %.9g) and gradient (%g)", o[1]->log[0].loss,
                  o[0]->log[0].loss, gr);
    }
    for (int k = 0; k < 2; k++)
        qsur_ostquant_free(o[k]);
    qsur_llama_free(m);
}

int main(void)
{
    qsur_rng rng;
    qsur_rng_seed(&rng, 42);
    test_rmsnorm(&rng);
    test_swiglu(&rng);
    test_attention(&rng);
    test_rope(&rng);
    test_ste(&rng);
    test_ste_const(&rng);
    test_model(&rng);
    test_chain(&rng, 0, 0);
    test_chain(&rng, 1, 0);
    test_chain(&rng, 2, 0);
    test_chain(&rng, 0, 1);
    test_chain(&rng, 1, 1);
    test_losses(&rng);
    test_stiefel(&rng);
    test_train_timing(&rng);
    test_train_threads(&rng);
    test_act_wo(&rng);
    test_rand_signs(&rng);
    test_wquant_code(&rng);
    test_sov_train(&rng);
    /* last, so the random draws of the tests above stay as they were (the
     * threads test's tolerance is tight for its tiny model's rounding flips) */
    test_chain(&rng, 0, 3);
    test_chain(&rng, 1, 2);
    return check_done();
}

/* Training W4A4KV4 with either order: both start alike (scales at 1), the
 * quantizers then see another basis, so the later steps' losses part; the
 * trained sov_code transforms still fuse into a float model equal to the
 * base (an exact equivalence whatever training made of the parameters). */
static void test_sov_train(qsur_rng *rng)
{
    qsur_error err;
    qsur_llama *m = tiny_model(rng);
    int ids[4 * 8];
    qsur_tokens cal = random_tokens(rng, ids, 4);
    qsur_quant_spec w4 = qsur_quant_default(), a4 = qsur_quant_default();
    a4.symmetric = 0;
    qsur_ostquant *o[2] = {NULL, NULL};
    for (int k = 0; k < 2; k++) {
        qsur_ostquant_opts op = qsur_ostquant_default();
        op.steps = 4;
        op.batch = 4;
        op.keep_last = 1;
        op.no_wquant = 1;
        op.lr_scale = 0.05; /* scales well away from 1 in a few steps */
        op.sov_code = k;
        CHECK_OK(qsur_ostquant_new(&o[k], m, &op, &w4, &a4, &a4, &err), err);
        if (o[k])
            CHECK_OK(qsur_ostquant_train(o[k], m, &cal, NULL, NULL, &err), err);
    }
    if (o[0] && o[1]) {
        const qsur_llama_config *c = &o[1]->cfg;
        int64_t ov0 = c->n_layers * c->dim, nov = c->n_layers * c->kv_dim;
        double moved = 0;
        for (int64_t i = ov0; i < ov0 + nov; i++)
            moved = fmax(moved, fabs(o[1]->ls[i]));
        CHECK_MSG(o[1]->log[0].loss == o[0]->log[0].loss && o[1]->log[3].loss != o[0]->log[3].loss,
                  "sov_code: the first step's loss equal (%.9g, %.9g), a later one differs (%.9g, %.9g)",
                  o[1]->log[0].loss, o[0]->log[0].loss, o[1]->log[3].loss, o[0]->log[3].loss);
        CHECK_MSG(moved > 1e-2, "sov_code: training moved S_ov (max |log s| %g)", moved);
        check_fused_equivalent(o[1], m, rng);
    }
    for (int k = 0; k < 2; k++)
        qsur_ostquant_free(o[k]);
    qsur_llama_free(m);
}
