/* OSTQuant on one layer (qsur/ostquant_layer.h).
 *
 * Cost of one step (r = X rows + W rows of the minibatch, b the block size):
 * the four rn x wm x d products of the loss and its gradient, and three sets of
 * nb block products of r x b x b (forward tr = pre B, dpre = dtr B^T, and
 * P = pre^T dpre). P = (dL/dB) B^T is what the Cayley-Adam step needs, so it is
 * formed from dpre (needed anyway for the scales) instead of forming dL/dB and
 * multiplying by B^T in double: that drops an n^3 product per block. X rows and
 * W rows share every buffer (X rows first), so each block product is one GEMM
 * over all r rows rather than two. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/clock.h"
#include "qsur/ostquant_layer.h"
#include "qsur/quant_ste.h"
#include "qsur/rng.h"
#include "qsur/stiefel.h"
#include "qsur/tensor.h"
#include "vector_clones.h"

qsur_ostquant_layer_opts qsur_ostquant_layer_default(void)
{
    qsur_ostquant_layer_opts o = {100, 0.005, 0.05, 64, 256, 128, 1, 1};
    return o;
}

/* The float forward and backward of one minibatch: the parameters it reads and
 * every buffer, allocated once for up to cap rows (X rows + W rows). */
typedef struct {
    int64_t d, b, nb, cap, dqcap;
    const qsur_hadamard_plan *H;
    const float *B;      /* nb blocks of b x b (borrowed) */
    float *es, *eis;     /* e^ls and e^-ls per column */
    float *pre;          /* cap x d: the scaled rows times H (input of the blocks) */
    float *tr;           /* cap x d: pre B, what gets quantized */
    float *qt;           /* cap x d: Q(tr); in the backward dL/dpre */
    float *dq;           /* dqcap x d: dL/dtr; in the evaluation Q_w(W'') */
    float *Y;            /* ycap: X W^T, then the error E */
    float *Pf;           /* nb*b*b */
    double *acc;         /* 2d column sums of the scale gradient */
    qsur_ostquant_layer_timing *time;
} layer_work;

static void work_free(layer_work *w)
{
    free(w->es);
    free(w->eis);
    free(w->pre);
    free(w->tr);
    free(w->qt);
    free(w->dq);
    free(w->Y);
    free(w->Pf);
    free(w->acc);
}

static int work_init(layer_work *w, const qsur_hadamard_plan *H, int64_t b, int64_t cap,
                     int64_t dqcap, int64_t ycap, qsur_ostquant_layer_timing *time, qsur_error *err)
{
    int64_t d = H->n;
    memset(w, 0, sizeof *w);
    w->d = d;
    w->b = b;
    w->nb = d / b;
    w->cap = cap;
    w->dqcap = dqcap > cap ? dqcap : cap;
    w->H = H;
    w->time = time;
    w->es = malloc((size_t)d * sizeof(float));
    w->eis = malloc((size_t)d * sizeof(float));
    w->pre = qsur_alloc((size_t)(cap * d), sizeof(float));
    w->tr = qsur_alloc((size_t)(cap * d), sizeof(float));
    w->qt = qsur_alloc((size_t)(cap * d), sizeof(float));
    w->dq = qsur_alloc((size_t)(w->dqcap * d), sizeof(float));
    w->Y = qsur_alloc((size_t)ycap, sizeof(float));
    w->Pf = qsur_alloc((size_t)(d * b), sizeof(float));
    w->acc = malloc((size_t)(2 * d) * sizeof(double));
    if (!w->es || !w->eis || !w->pre || !w->tr || !w->qt || !w->dq || !w->Y || !w->Pf || !w->acc) {
        work_free(w);
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant layer: out of memory for %lld rows x %lld "
                         "channels", (long long)cap, (long long)d);
    }
    return QSUR_OK;
}

/* e^(+-ls) once per parameter update, not once per element */
static void work_set_scales(layer_work *w, const double *ls)
{
    for (int64_t j = 0; j < w->d; j++) {
        w->es[j] = (float)exp(ls[j]);
        w->eis[j] = (float)exp(-ls[j]);
    }
}

/* The two element-wise loops below go in fixed 16-wide chunks: GCC's -O2
 * vectorizer only takes loops it needs no remainder code for. */
enum { LANES = 16 };

/* out = in * s element-wise (a row times the per-column scales) */
QSUR_VECTOR_CLONES
static void scale_row(const float *restrict in, const float *restrict sc, float *restrict out, int64_t n)
{
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++)
            out[j + l] = in[j + l] * sc[j + l];
    for (; j < n; j++)
        out[j] = in[j] * sc[j];
}

/* acc += a * b element-wise, the products rounded to float, summed in double */
QSUR_VECTOR_CLONES
static void acc_products(const float *restrict a, const float *restrict b, double *restrict acc, int64_t n)
{
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES)
        for (int l = 0; l < LANES; l++)
            acc[j + l] += (double)(a[j + l] * b[j + l]);
    for (; j < n; j++)
        acc[j] += (double)(a[j] * b[j]);
}

/* adds the time since *t to *slot and restarts *t */
static void lap(double *t, double *slot)
{
    double now = qsur_seconds();
    *slot += now - *t;
    *t = now;
}

/* pre = [X S^-1; W S] H and tr = pre B for rn rows of X and wm rows of W */
static int forward(layer_work *w, const float *X, int64_t rn, const float *W, int64_t wm,
                   qsur_error *err)
{
    int64_t d = w->d, b = w->b, r = rn + wm;
    for (int64_t i = 0; i < rn; i++)
        scale_row(X + i * d, w->eis, w->pre + i * d, d);
    for (int64_t i = 0; i < wm; i++)
        scale_row(W + i * d, w->es, w->pre + (rn + i) * d, d);
    int rc = qsur_hadamard_plan_apply(w->H, w->pre, r, NULL, err);
    if (rc)
        return rc;
    for (int64_t k = 0; k < w->nb; k++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, (int)b, (int)b, 1.0f,
                    w->pre + k * b, (int)d, w->B + k * b * b, (int)b, 0.0f, w->tr + k * b, (int)d);
    return QSUR_OK;
}

/* qt = [Q_a(X'); Q_w(W')] from tr */
static int quantize(layer_work *w, int64_t rn, int64_t wm, const qsur_quant_spec *wq,
                    const qsur_quant_spec *aq, qsur_error *err)
{
    int64_t d = w->d;
    int rc = qsur_fake_quant(aq, w->tr, rn, d, w->qt, NULL, err);
    return rc ? rc : qsur_fake_quant(wq, w->tr + rn * d, wm, d, w->qt + rn * d, NULL, err);
}

/* sum of squares in double */
static double sumsq(const float *y, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)y[i] * y[i];
    return s;
}

/* The loss on rn rows X and wm rows W at the current B, scales; P (nb*b*b)
 * and gls (d; NULL: skip the scales' backward) as in
 * qsur_ostquant_layer_loss_grad. */
static int loss_grad(layer_work *w, const float *X, int64_t rn, const float *W, int64_t wm,
                     const qsur_quant_spec *wq, const qsur_quant_spec *aq, double *loss, double *P,
                     double *gls, qsur_error *err)
{
    int64_t d = w->d, b = w->b, r = rn + wm;
    qsur_ostquant_layer_timing *tm = w->time;
    double t = qsur_seconds();
    int rc = forward(w, X, rn, W, wm, err);
    lap(&t, &tm->transform);
    if (rc || (rc = quantize(w, rn, wm, wq, aq, err)))
        return rc;
    lap(&t, &tm->quant);
    /* E = Q(X') Q(W')^T - X W^T (rn x wm); L = ||E||^2 / ||X W^T||^2 */
    float *xq = w->qt, *wqm = w->qt + rn * d;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, (int)wm, (int)d, 1.0f, X, (int)d, W,
                (int)d, 0.0f, w->Y, (int)wm);
    double den = sumsq(w->Y, rn * wm);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, (int)wm, (int)d, 1.0f, xq, (int)d,
                wqm, (int)d, -1.0f, w->Y, (int)wm);
    *loss = den > 0 ? sumsq(w->Y, rn * wm) / den : 0.0;
    /* dY = 2E/den; dQ(X') = dY Q(W'), dQ(W') = dY^T Q(X') */
    float c = den > 0 ? (float)(2.0 / den) : 0.0f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rn, (int)d, (int)wm, c, w->Y, (int)wm,
                wqm, (int)d, 0.0f, w->dq, (int)d);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)wm, (int)d, (int)rn, c, w->Y, (int)wm, xq,
                (int)d, 0.0f, w->dq + rn * d, (int)d);
    lap(&t, &tm->gemm);
    if ((rc = qsur_fake_quant_backward(aq, w->tr, rn, d, w->dq, w->dq, err)) ||
        (rc = qsur_fake_quant_backward(wq, w->tr + rn * d, wm, d, w->dq + rn * d, w->dq + rn * d, err)))
        return rc;
    lap(&t, &tm->quant);
    /* per block: dpre_k = dtr_k B_k^T, P_k = pre_k^T dpre_k = (pre_k^T dtr_k) B_k^T */
    float *dpre = w->qt;
    for (int64_t k = 0; k < w->nb; k++) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)r, (int)b, (int)b, 1.0f, w->dq + k * b,
                    (int)d, w->B + k * b * b, (int)b, 0.0f, dpre + k * b, (int)d);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)b, (int)b, (int)r, 1.0f, w->pre + k * b,
                    (int)d, dpre + k * b, (int)d, 0.0f, w->Pf + k * b * b, (int)b);
    }
    for (int64_t i = 0; i < d * b; i++)
        P[i] = w->Pf[i];
    if (gls) {
        /* through H^T, then the scales: U = X e^-ls gives dls_j -= sum_i dU_ij U_ij,
         * V = W e^ls gives dls_j += sum_i dV_ij V_ij */
        if ((rc = qsur_hadamard_plan_apply_transpose(w->H, dpre, r, NULL, err)))
            return rc;
        double *ax = w->acc, *aw = w->acc + d;
        memset(w->acc, 0, (size_t)(2 * d) * sizeof(double));
        for (int64_t i = 0; i < rn; i++)
            acc_products(dpre + i * d, X + i * d, ax, d);
        for (int64_t i = 0; i < wm; i++)
            acc_products(dpre + (rn + i) * d, W + i * d, aw, d);
        for (int64_t j = 0; j < d; j++)
            gls[j] = -ax[j] * w->eis[j] + aw[j] * w->es[j];
    }
    lap(&t, &tm->backward);
    return QSUR_OK;
}

/* the largest divisor of d that is <= block */
static int64_t block_size(int64_t d, int64_t block)
{
    for (int64_t b = block < d ? block : d; b > 1; b--)
        if (d % b == 0)
            return b;
    return 1;
}

int qsur_ostquant_layer_loss_grad(const qsur_hadamard_plan *H, int64_t b, const float *B,
                                  const double *ls, const float *X, int64_t r, const float *W,
                                  int64_t q, const qsur_quant_spec *wq, const qsur_quant_spec *aq,
                                  double *loss, double *P, double *gls, qsur_error *err)
{
    if (!H || !B || !ls || !X || !W || r < 1 || q < 1 || b < 1 || H->n % b != 0)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant layer gradient: needs a plan, blocks of a size "
                         "dividing d = %lld (got %lld) and r, q >= 1 rows (got %lld, %lld)",
                         (long long)(H ? H->n : 0), (long long)b, (long long)r, (long long)q);
    int rc;
    if ((rc = qsur_quant_validate(wq, H->n, err)) || (rc = qsur_quant_validate(aq, H->n, err)))
        return rc;
    qsur_ostquant_layer_timing tm = {0};
    layer_work w;
    if ((rc = work_init(&w, H, b, r + q, 0, r * q, &tm, err)))
        return rc;
    w.B = B;
    work_set_scales(&w, ls);
    rc = loss_grad(&w, X, r, W, q, wq, aq, loss, P, gls, err);
    work_free(&w);
    return rc;
}

/* *out = ||Yref - Q_a(X'') Q_w(W'')^T|| / ||Yref|| (den = ||Yref||^2) over en tokens
 * and em weight rows, X'' = X S^-1 R and W'' = W S R at the work's parameters
 * (plain: X and W themselves). Q_w(W'') is kept in dq (em rows), the tokens go
 * through in chunks of the training minibatch's size: no buffer of the
 * evaluation's size beyond those (first touches of fresh pages are slow). */
static int eval_error(layer_work *w, const float *X, int64_t en, const float *W, int64_t em, int plain,
                      const float *Yref, double den, const qsur_quant_spec *wq,
                      const qsur_quant_spec *aq, double *out, qsur_error *err)
{
    int64_t d = w->d;
    int rc = QSUR_OK;
    for (int64_t i0 = 0; i0 < em && !rc; i0 += w->cap) {
        int64_t c = em - i0 < w->cap ? em - i0 : w->cap;
        if (plain)
            rc = qsur_fake_quant(wq, W + i0 * d, c, d, w->dq + i0 * d, NULL, err);
        else if (!(rc = forward(w, NULL, 0, W + i0 * d, c, err)))
            rc = qsur_fake_quant(wq, w->tr, c, d, w->dq + i0 * d, NULL, err);
    }
    double num = 0.0;
    for (int64_t i0 = 0; i0 < en && !rc; i0 += w->cap) {
        int64_t c = en - i0 < w->cap ? en - i0 : w->cap;
        if (plain)
            rc = qsur_fake_quant(aq, X + i0 * d, c, d, w->qt, NULL, err);
        else if (!(rc = forward(w, X + i0 * d, c, NULL, 0, err)))
            rc = qsur_fake_quant(aq, w->tr, c, d, w->qt, NULL, err);
        if (rc)
            break;
        memcpy(w->Y, Yref + i0 * em, (size_t)(c * em) * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c, (int)em, (int)d, -1.0f, w->qt, (int)d,
                    w->dq, (int)d, 1.0f, w->Y, (int)em);
        num += sumsq(w->Y, c * em);
    }
    *out = den > 0 ? sqrt(num / den) : 0.0;
    return rc;
}

/* R = H diag(B_k) as a dense d x d row-major matrix: R^T = diag(B_k^T) H^T is
 * d rows through the fast transposed plan, then transposed in place. */
static int fuse_rotation(const qsur_hadamard_plan *H, int64_t b, const float *Bf, float *R,
                         qsur_error *err)
{
    int64_t d = H->n;
    for (int64_t i = 0; i < d; i++) {
        int64_t k = i / b, c = i - k * b;
        const float *Bk = Bf + k * b * b;
        float *row = R + i * d;
        memset(row, 0, (size_t)d * sizeof(float));
        for (int64_t j = 0; j < b; j++)
            row[k * b + j] = Bk[j * b + c];
    }
    int rc = qsur_hadamard_plan_apply_transpose(H, R, d, NULL, err);
    if (rc)
        return rc;
    enum { T = 64 };
    for (int64_t i0 = 0; i0 < d; i0 += T)
        for (int64_t j0 = i0; j0 < d; j0 += T)
            for (int64_t i = i0; i < d && i < i0 + T; i++)
                for (int64_t j = (j0 == i0 ? i + 1 : j0); j < d && j < j0 + T; j++) {
                    float t = R[i * d + j];
                    R[i * d + j] = R[j * d + i];
                    R[j * d + i] = t;
                }
    return QSUR_OK;
}

/* Long on purpose: the training state (B, Adam moments, best blocks, minibatch buffers) lives from
 * setup through the steps to the fuse, freed at one exit. */
int qsur_ostquant_layer(const float *X, int64_t n, const float *W, int64_t m, int64_t d,
                        const qsur_quant_spec *wq, const qsur_quant_spec *aq,
                        const qsur_ostquant_layer_opts *o, float *R, float *s,
                        qsur_ostquant_layer_result *res, const qsur_progress *prog,
                        qsur_error *err)
{
    double t0 = qsur_seconds();
    memset(res, 0, sizeof *res);
    if (!X || !W || n < 1 || m < 1 || d < 1 || o->steps < 0 || o->block < 1 || o->rows < 1 ||
        o->wrows < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant layer: needs X (n x d) and W (m x d), "
                         "steps >= 0, block/rows >= 1 (got n=%lld m=%lld d=%lld)", (long long)n,
                         (long long)m, (long long)d);
    int rc;
    if ((rc = qsur_quant_validate(wq, d, err)) || (rc = qsur_quant_validate(aq, d, err)))
        return rc;
    qsur_ostquant_layer_timing *tm = &res->time;
    int64_t b = block_size(d, o->block), nb = d / b, bb = nb * b * b;
    int64_t rn = o->rows < n ? o->rows : n, wm = o->wrows < m ? o->wrows : m;
    int64_t en = n < 1024 ? n : 1024, em = m < 1024 ? m : 1024;
    int64_t cap = rn + wm, ycap = rn * wm > cap * em ? rn * wm : cap * em;
    qsur_hadamard_plan *H = NULL;
    qsur_hadamard_opts ho = {0, o->seed};
    if ((rc = qsur_hadamard_plan_new(&H, d, &ho, err)))
        return rc;
    snprintf(res->hadamard, sizeof res->hadamard, "%s", H->desc);
    layer_work w;
    if ((rc = work_init(&w, H, b, cap, em, ycap, tm, err))) {
        qsur_hadamard_plan_free(H);
        return rc;
    }
    /* B in double for Cayley-Adam; the best blocks are kept as the float copy the
     * loss was evaluated with, which is all the fused R needs */
    double *B = calloc((size_t)bb, sizeof(double));
    float *bestBf = malloc((size_t)bb * sizeof(float));
    double *ls = calloc((size_t)d, sizeof(double)), *bestls = calloc((size_t)d, sizeof(double));
    double *P = malloc((size_t)bb * sizeof(double)), *gls = malloc((size_t)d * sizeof(double));
    float *Bf = malloc((size_t)bb * sizeof(float));
    float *sub = qsur_alloc((size_t)((rn + wm) * d), sizeof(float));
    float *Yref = qsur_alloc((size_t)(en * em), sizeof(float));
    qsur_stiefel_adam **opt = calloc((size_t)nb, sizeof *opt);
    qsur_adam *opt_s = NULL;
    if (!B || !bestBf || !ls || !bestls || !P || !gls || !Bf || !sub || !Yref || !opt) {
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "ostquant layer: out of memory for d = %lld", (long long)d);
        goto done;
    }
    for (int64_t k = 0; k < nb; k++)
        for (int64_t i = 0; i < b; i++)
            B[k * b * b + i * b + i] = 1.0;
    for (int64_t i = 0; i < bb; i++)
        Bf[i] = (float)B[i];
    memcpy(bestBf, Bf, (size_t)bb * sizeof(float));
    w.B = Bf;
    work_set_scales(&w, ls);
    for (int64_t k = 0; k < nb && !rc; k++)
        rc = qsur_stiefel_adam_new(&opt[k], b, err);
    if (rc || (rc = qsur_adam_new(&opt_s, d, err)))
        goto done;

    /* error before: plain quantization (R = I, S = I) on the evaluation subset
     * (the first en tokens, em rows); the reference X W^T is kept for "after" */
    double t = qsur_seconds(), eden;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)en, (int)em, (int)d, 1.0f, X, (int)d, W,
                (int)d, 0.0f, Yref, (int)em);
    eden = sumsq(Yref, en * em);
    if ((rc = eval_error(&w, X, en, W, em, 1, Yref, eden, wq, aq, &res->err_before, err)))
        goto done;
    lap(&t, &tm->eval);

    qsur_rng rng;
    qsur_rng_seed(&rng, o->seed);
    double ema = NAN, best = INFINITY;
    for (int step = 0; step < o->steps; step++) {
        /* the minibatch: rn tokens and wm weight rows (all of them when few) */
        const float *xb = X, *wb = W;
        if (rn < n) {
            for (int64_t i = 0; i < rn; i++)
                memcpy(sub + i * d, X + (int64_t)qsur_rng_below(&rng, (uint64_t)n) * d,
                       (size_t)d * sizeof(float));
            xb = sub;
        }
        if (wm < m) {
            for (int64_t i = 0; i < wm; i++)
                memcpy(sub + (rn + i) * d, W + (int64_t)qsur_rng_below(&rng, (uint64_t)m) * d,
                       (size_t)d * sizeof(float));
            wb = sub + rn * d;
        }
        double loss;
        if ((rc = loss_grad(&w, xb, rn, wb, wm, wq, aq, &loss, P, o->learn_scales ? gls : NULL, err)))
            goto done;
        t = qsur_seconds();
        if (step == 0)
            res->loss_first = loss;
        ema = isnan(ema) ? loss : 0.9 * ema + 0.1 * loss;
        if (ema < best) {
            best = ema;
            res->best_step = step;
            memcpy(bestBf, Bf, (size_t)bb * sizeof(float));
            memcpy(bestls, ls, (size_t)d * sizeof(double));
        }
        for (int64_t k = 0; k < nb; k++)
            if ((rc = qsur_stiefel_adam_step_left(opt[k], B + k * b * b, P + k * b * b, o->lr, err)))
                goto done;
        if (o->learn_scales) {
            qsur_adam_step(opt_s, ls, gls, o->lr_scale);
            work_set_scales(&w, ls);
        }
        for (int64_t i = 0; i < bb; i++)
            Bf[i] = (float)B[i];
        lap(&t, &tm->step);
        char what[48];
        snprintf(what, sizeof what, "ostq layer %d/%d", step + 1, o->steps);
        if ((rc = qsur_progress_tick(prog, (double)(step + 1) / o->steps, what, loss, err)))
            break;
    }
    /* the best parameters, fused into a dense R = H B */
    t = qsur_seconds();
    memcpy(Bf, bestBf, (size_t)bb * sizeof(float));
    work_set_scales(&w, bestls);
    res->loss_best = best;
    {
        int rc2 = fuse_rotation(H, b, Bf, R, err);
        if (!rc2) {
            for (int64_t j = 0; j < d; j++)
                s[j] = (float)exp(bestls[j]);
            /* error after on the evaluation subset */
            rc2 = eval_error(&w, X, en, W, em, 0, Yref, eden, wq, aq, &res->err_after, err);
        }
        if (!rc)
            rc = rc2;
    }
    lap(&t, &tm->eval);
done:
    res->seconds = qsur_seconds() - t0;
    tm->total = res->seconds;
    if (opt)
        for (int64_t k = 0; k < nb; k++)
            qsur_stiefel_adam_free(opt[k]);
    free(opt);
    qsur_adam_free(opt_s);
    work_free(&w);
    qsur_hadamard_plan_free(H);
    free(B);
    free(bestBf);
    free(ls);
    free(bestls);
    free(P);
    free(gls);
    free(Bf);
    free(sub);
    free(Yref);
    return rc;
}
