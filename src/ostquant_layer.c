/* OSTQuant on one layer (qsur/ostquant_layer.h). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qsur/hadamard.h"
#include "qsur/ostquant_layer.h"
#include "qsur/quant_ste.h"
#include "qsur/rng.h"
#include "qsur/stiefel.h"
#include "qsur/tensor.h"

qsur_ostquant_layer_opts qsur_ostquant_layer_default(void)
{
    qsur_ostquant_layer_opts o = {100, 0.02, 0.01, 256, 256, 256, 1, 1};
    return o;
}

typedef struct {
    int64_t d, b, nb;          /* channels, block size, blocks */
    qsur_hadamard_plan *H;
    double *B;                 /* nb blocks of b*b (double) */
    float *Bf;                 /* float copy */
    double *ls;                /* d log scales */
} layer_params;

/* out[r][d] = (in[r][d] scaled) H B: in is scaled by e^(sign*ls) per column first.
 * keeps the pre-B matrix in pre (for the B gradient). */
static int transform_rows(const layer_params *p, const float *in, int64_t r, int sign, float *pre,
                          float *out, qsur_error *err)
{
    int64_t d = p->d, b = p->b;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < d; j++)
            pre[i * d + j] = in[i * d + j] * (float)exp(sign * p->ls[j]);
    int rc = qsur_hadamard_plan_apply(p->H, pre, r, NULL, err);
    if (rc)
        return rc;
    for (int64_t k = 0; k < p->nb; k++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)r, (int)b, (int)b, 1.0f,
                    pre + k * b, (int)d, p->Bf + k * b * b, (int)b, 0.0f, out + k * b, (int)d);
    return QSUR_OK;
}

static double rel_out_err(const float *X, const float *W, const float *Xq, const float *Wq,
                          int64_t n, int64_t m, int64_t d, float *Y)
{
    double num = 0, den = 0;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)m, (int)d, 1.0f, X, (int)d, W,
                (int)d, 0.0f, Y, (int)m);
    for (int64_t i = 0; i < n * m; i++)
        den += (double)Y[i] * Y[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)m, (int)d, 1.0f, Xq, (int)d, Wq,
                (int)d, -1.0f, Y, (int)m);
    for (int64_t i = 0; i < n * m; i++)
        num += (double)Y[i] * Y[i];
    return den > 0 ? sqrt(num / den) : 0.0;
}

int qsur_ostquant_layer(const float *X, int64_t n, const float *W, int64_t m, int64_t d,
                        const qsur_quant_spec *wq, const qsur_quant_spec *aq,
                        const qsur_ostquant_layer_opts *o, float *R, float *s,
                        qsur_ostquant_layer_result *res, const qsur_progress *prog,
                        qsur_error *err)
{
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    memset(res, 0, sizeof *res);
    if (!X || !W || n < 1 || m < 1 || d < 1 || o->steps < 0 || o->block < 1 || o->rows < 1 ||
        o->wrows < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant layer: needs X (n x d) and W (m x d), "
                         "steps >= 0, block/rows >= 1 (got n=%lld m=%lld d=%lld)", (long long)n,
                         (long long)m, (long long)d);
    int rc;
    if ((rc = qsur_quant_validate(wq, d, err)) || (rc = qsur_quant_validate(aq, d, err)))
        return rc;
    layer_params p = {d, d, 1, NULL, NULL, NULL, NULL};
    /* blocks: the largest divisor of d that is <= block */
    for (int64_t b = o->block < d ? o->block : d; b >= 1; b--)
        if (d % b == 0) {
            p.b = b;
            break;
        }
    p.nb = d / p.b;
    int64_t b = p.b, rn = o->rows < n ? o->rows : n, wm = o->wrows < m ? o->wrows : m;
    int64_t en = n < 1024 ? n : 1024, em = m < 1024 ? m : 1024;
    int64_t big = (rn > en ? rn : en) + (wm > em ? wm : em);
    qsur_hadamard_opts ho = {0, o->seed};
    if ((rc = qsur_hadamard_plan_new(&p.H, d, &ho, err)))
        return rc;
    snprintf(res->hadamard, sizeof res->hadamard, "%s", p.H->desc);
    p.B = calloc((size_t)(p.nb * b * b), sizeof(double));
    p.Bf = malloc((size_t)(p.nb * b * b) * sizeof(float));
    p.ls = calloc((size_t)d, sizeof(double));
    double *bestB = malloc((size_t)(p.nb * b * b) * sizeof(double));
    double *bestls = calloc((size_t)d, sizeof(double)), *gB = malloc((size_t)(b * b) * sizeof(double));
    double *gls = malloc((size_t)d * sizeof(double));
    float *sub = qsur_alloc((size_t)(big * d), sizeof(float)), *pre = qsur_alloc((size_t)(big * d), sizeof(float));
    float *tr = qsur_alloc((size_t)(big * d), sizeof(float)), *qt = qsur_alloc((size_t)(big * d), sizeof(float));
    float *dq = qsur_alloc((size_t)(big * d), sizeof(float));
    float *Y = qsur_alloc((size_t)((rn > en ? rn : en) * (wm > em ? wm : em)), sizeof(float));
    float *gBf = malloc((size_t)(b * b) * sizeof(float));
    qsur_stiefel_adam **opt = calloc((size_t)p.nb, sizeof *opt);
    qsur_adam *opt_s = NULL;
    if (!p.B || !p.Bf || !p.ls || !bestB || !bestls || !gB || !gls || !sub || !pre || !tr || !qt ||
        !dq || !Y || !gBf || !opt) {
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "ostquant layer: out of memory for d = %lld", (long long)d);
        goto done;
    }
    for (int64_t k = 0; k < p.nb; k++)
        for (int64_t i = 0; i < b; i++)
            p.B[k * b * b + i * b + i] = 1.0;
    for (int64_t i = 0; i < p.nb * b * b; i++)
        p.Bf[i] = (float)p.B[i];
    memcpy(bestB, p.B, (size_t)(p.nb * b * b) * sizeof(double));
    for (int64_t k = 0; k < p.nb && !rc; k++)
        rc = qsur_stiefel_adam_new(&opt[k], b, err);
    if (rc || (rc = qsur_adam_new(&opt_s, d, err)))
        goto done;

    /* error before: plain quantization (R = I, S = I) on the evaluation subset */
    float *eX = sub, *eW = sub + en * d;
    memcpy(eX, X, (size_t)(en * d) * sizeof(float));
    memcpy(eW, W, (size_t)(em * d) * sizeof(float));
    if ((rc = qsur_fake_quant(aq, eX, en, d, qt, NULL, err)) ||
        (rc = qsur_fake_quant(wq, eW, em, d, qt + en * d, NULL, err)))
        goto done;
    res->err_before = rel_out_err(eX, eW, qt, qt + en * d, en, em, d, Y);

    qsur_rng rng;
    qsur_rng_seed(&rng, o->seed);
    double ema = NAN, best = INFINITY;
    for (int step = 0; step < o->steps; step++) {
        float *xb = sub, *wb = sub + rn * d;
        for (int64_t i = 0; i < rn; i++)
            memcpy(xb + i * d, X + (rn == n ? i : (int64_t)qsur_rng_below(&rng, (uint64_t)n)) * d,
                   (size_t)d * sizeof(float));
        for (int64_t i = 0; i < wm; i++)
            memcpy(wb + i * d, W + (wm == m ? i : (int64_t)qsur_rng_below(&rng, (uint64_t)m)) * d,
                   (size_t)d * sizeof(float));
        /* forward: X' = (X S^-1 H) B, W' = (W S H) B, quantized */
        float *xpre = pre, *wpre = pre + rn * d, *xt = tr, *wt = tr + rn * d;
        float *xq = qt, *wqm = qt + rn * d, *dxq = dq, *dwq = dq + rn * d;
        if ((rc = transform_rows(&p, xb, rn, -1, xpre, xt, err)) ||
            (rc = transform_rows(&p, wb, wm, +1, wpre, wt, err)) ||
            (rc = qsur_fake_quant(aq, xt, rn, d, xq, NULL, err)) ||
            (rc = qsur_fake_quant(wq, wt, wm, d, wqm, NULL, err)))
            goto done;
        /* E = Xq Wq^T - X W^T (rn x wm); L = ||E||^2 / ||X W^T||^2 */
        double den = 0, num = 0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, (int)wm, (int)d, 1.0f, xb, (int)d,
                    wb, (int)d, 0.0f, Y, (int)wm);
        for (int64_t i = 0; i < rn * wm; i++)
            den += (double)Y[i] * Y[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rn, (int)wm, (int)d, 1.0f, xq, (int)d,
                    wqm, (int)d, -1.0f, Y, (int)wm);
        for (int64_t i = 0; i < rn * wm; i++)
            num += (double)Y[i] * Y[i];
        double loss = den > 0 ? num / den : 0.0;
        if (step == 0)
            res->loss_first = loss;
        ema = isnan(ema) ? loss : 0.9 * ema + 0.1 * loss;
        if (ema < best) {
            best = ema;
            res->best_step = step;
            memcpy(bestB, p.B, (size_t)(p.nb * b * b) * sizeof(double));
            memcpy(bestls, p.ls, (size_t)d * sizeof(double));
        }
        /* backward: dY = 2E/den; dXq = dY Wq; dWq = dY^T Xq */
        float c = den > 0 ? (float)(2.0 / den) : 0.0f;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rn, (int)d, (int)wm, c, Y, (int)wm,
                    wqm, (int)d, 0.0f, dxq, (int)d);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)wm, (int)d, (int)rn, c, Y, (int)wm, xq,
                    (int)d, 0.0f, dwq, (int)d);
        if ((rc = qsur_fake_quant_backward(aq, xt, rn, d, dxq, dxq, err)) ||
            (rc = qsur_fake_quant_backward(wq, wt, wm, d, dwq, dwq, err)))
            goto done;
        /* blocks: dB_k = pre_k^T d'_k (X and W rows); d pre_k = d'_k B_k^T */
        float *dpre = xq; /* reuse: rn+wm rows */
        for (int64_t k = 0; k < p.nb; k++) {
            float *Bk = p.Bf + k * b * b;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)b, (int)b, (int)rn, 1.0f, xpre + k * b,
                        (int)d, dxq + k * b, (int)d, 0.0f, gBf, (int)b);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)b, (int)b, (int)wm, 1.0f, wpre + k * b,
                        (int)d, dwq + k * b, (int)d, 1.0f, gBf, (int)b);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(rn + wm), (int)b, (int)b, 1.0f,
                        dq + k * b, (int)d, Bk, (int)b, 0.0f, dpre + k * b, (int)d);
            for (int64_t i = 0; i < b * b; i++)
                gB[i] = gBf[i];
            if ((rc = qsur_stiefel_adam_step(opt[k], p.B + k * b * b, gB, o->lr, err)))
                goto done;
        }
        /* through H^T, then the scales: U = X e^-ls (dls -= dU U), V = W e^ls (dls += dV V) */
        if ((rc = qsur_hadamard_plan_apply_transpose(p.H, dpre, rn + wm, NULL, err)))
            goto done;
        memset(gls, 0, (size_t)d * sizeof(double));
        for (int64_t i = 0; i < rn; i++)
            for (int64_t j = 0; j < d; j++)
                gls[j] -= (double)dpre[i * d + j] * xb[i * d + j] * exp(-p.ls[j]);
        for (int64_t i = 0; i < wm; i++)
            for (int64_t j = 0; j < d; j++)
                gls[j] += (double)dpre[(rn + i) * d + j] * wb[i * d + j] * exp(p.ls[j]);
        if (o->learn_scales)
            qsur_adam_step(opt_s, p.ls, gls, o->lr_scale);
        for (int64_t i = 0; i < p.nb * b * b; i++)
            p.Bf[i] = (float)p.B[i];
        char what[48];
        snprintf(what, sizeof what, "ostq layer %d/%d", step + 1, o->steps);
        if ((rc = qsur_progress_tick(prog, (double)(step + 1) / o->steps, what, loss, err)))
            break;
    }
    /* the best parameters, fused into a dense R = H B */
    memcpy(p.B, bestB, (size_t)(p.nb * b * b) * sizeof(double));
    memcpy(p.ls, bestls, (size_t)d * sizeof(double));
    for (int64_t i = 0; i < p.nb * b * b; i++)
        p.Bf[i] = (float)p.B[i];
    res->loss_best = best;
    {
        float *Hd = qsur_alloc((size_t)(d * d), sizeof(float));
        if (!Hd) {
            if (!rc)
                rc = qsur_fail(err, QSUR_ERR_NOMEM, "ostquant layer: out of memory for the dense R");
            goto done;
        }
        qsur_hadamard_plan_dense(p.H, Hd);
        for (int64_t k = 0; k < p.nb; k++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)b, (int)b, 1.0f, Hd + k * b,
                        (int)d, p.Bf + k * b * b, (int)b, 0.0f, R + k * b, (int)d);
        free(Hd);
    }
    for (int64_t j = 0; j < d; j++)
        s[j] = (float)exp(p.ls[j]);
    /* error after on the evaluation subset */
    {
        int rc2;
        float *ex = tr, *ew = tr + en * d;
        if (!(rc2 = transform_rows(&p, X, en, -1, pre, ex, err)) &&
            !(rc2 = transform_rows(&p, W, em, +1, pre, ew, err)) &&
            !(rc2 = qsur_fake_quant(aq, ex, en, d, qt, NULL, err)) &&
            !(rc2 = qsur_fake_quant(wq, ew, em, d, qt + en * d, NULL, err)))
            res->err_after = rel_out_err(ex, ew, qt, qt + en * d, en, em, d, Y);
        if (!rc)
            rc = rc2;
    }
done:;
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    res->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (opt)
        for (int64_t k = 0; k < p.nb; k++)
            qsur_stiefel_adam_free(opt[k]);
    free(opt);
    qsur_adam_free(opt_s);
    qsur_hadamard_plan_free(p.H);
    free(p.B);
    free(p.Bf);
    free(p.ls);
    free(bestB);
    free(bestls);
    free(gB);
    free(gls);
    free(sub);
    free(pre);
    free(tr);
    free(qt);
    free(dq);
    free(Y);
    free(gBf);
    return rc;
}
