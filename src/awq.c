/* AWQ: activation-aware per-channel scaling searched over a grid of exponents.
 * See include/qsur/awq.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "qsur/awq.h"
#include "qsur/tensor.h"

/* Tokens per sgemm when measuring the output error: bounds scratch to
 * TOKEN_BLOCK x rows floats. */
#define TOKEN_BLOCK 256

qsur_awq_opts qsur_awq_default(void)
{
    qsur_awq_opts o = {20};
    return o;
}

/* ||X D^T||_F^2 with D = W - Q, over token blocks (X path). Not
 * qsur_layer_output_error: that recomputes X W^T on every call, and the
 * reference output is the same for every a. */
static double output_sq_error_x(const float *X, int64_t ntok, const float *D, int64_t m,
                                int64_t n, float *E)
{
    double total = 0.0;
    for (int64_t t0 = 0; t0 < ntok; t0 += TOKEN_BLOCK) {
        int nb = (int)(ntok - t0 < TOKEN_BLOCK ? ntok - t0 : TOKEN_BLOCK);
        /* Row-major: E (nb x m) = X_block (nb x n) * D^T, D stored m x n. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, (int)m, (int)n, 1.0f,
                    X + t0 * n, (int)n, D, (int)n, 0.0f, E, (int)m);
        for (int64_t i = 0; i < (int64_t)nb * m; i++)
            total += (double)E[i] * (double)E[i];
    }
    return total;
}

void qsur_awq_scales(const double *stat, int64_t n, double a, float *s)
{
    /* pow(x, 0) == 1 for every x (C11 F.10.4.4), so a = 0 gives s = 1 exactly.
     * The 1e-4 floor (as in the AWQ reference code) keeps dead channels finite. */
    double vmax = 0.0, vmin = INFINITY;
    for (int64_t j = 0; j < n; j++) {
        double v = fmax(pow(stat[j], a), 1e-4);
        vmax = fmax(vmax, v);
        vmin = fmin(vmin, v);
    }
    const double norm = sqrt(vmax * vmin);
    for (int64_t j = 0; j < n; j++)
        s[j] = (float)(fmax(pow(stat[j], a), 1e-4) / norm);
}

int qsur_awq_apply(const float *W, int64_t rows, int64_t cols, const float *s,
                   const qsur_quant_spec *spec, float *Q, qsur_error *err)
{
    if (!W || !s || !Q || Q == W || rows <= 0 || cols <= 0)
        return qsur_fail(err, QSUR_ERR_ARG, "awq apply: bad arguments (W %lldx%lld)",
                         (long long)rows, (long long)cols);
    for (int64_t j = 0; j < cols; j++)
        if (!(s[j] > 0.0f) || !isfinite(s[j]))
            return qsur_fail(err, QSUR_ERR_ARG, "awq apply: scale s[%lld]=%g (expected > 0)",
                             (long long)j, (double)s[j]);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            Q[i * cols + j] = W[i * cols + j] * s[j];
    int rc = qsur_fake_quant(spec, Q, rows, cols, Q, NULL, err);
    if (rc != QSUR_OK)
        return rc;
    /* Division, not multiplication by 1/s: s = 1 must give back Q exactly. */
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            Q[i * cols + j] /= s[j];
    return QSUR_OK;
}

typedef struct {
    double *stat;
    float *sc, *Qa, *D, *E, *zero;
} awq_work;

static void work_free(awq_work *w)
{
    free(w->stat);
    free(w->sc);
    free(w->Qa);
    free(w->D);
    free(w->E);
    free(w->zero);
}

/* Squared output error of weight difference (W - Qa), by X or by H. */
static int sq_error(const qsur_wquant_layer *L, awq_work *w, const float *Qa, double *out,
                    qsur_error *err)
{
    const int64_t m = L->rows, n = L->cols;
    if (L->X) {
        for (int64_t p = 0; p < m * n; p++)
            w->D[p] = L->W[p] - Qa[p];
        *out = output_sq_error_x(L->X, L->n, w->D, m, n, w->E);
        return QSUR_OK;
    }
    return qsur_wquant_objective(L->W, Qa, m, n, L->H, out, err);
}

/* Long on purpose: the scale grid search shares its workspace (statistics, scales, quantized copy)
 * with the setup and one cleanup. */
int qsur_awq(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
             const qsur_awq_opts *opt, float *Q, float *s, double *errors,
             qsur_awq_result *res, const qsur_progress *prog, qsur_error *err)
{
    int rc = qsur_wquant_check(L, "awq", err);
    if (rc != QSUR_OK)
        return rc;
    rc = qsur_quant_validate(spec, L->cols, err);
    if (rc != QSUR_OK)
        return rc;
    qsur_awq_opts o = opt ? *opt : qsur_awq_default();
    if (o.grid < 1 || o.grid > 10000)
        return qsur_fail(err, QSUR_ERR_ARG, "awq: grid=%d (expected 1..10000 steps of a)", o.grid);
    if (!Q || Q == L->W)
        return qsur_fail(err, QSUR_ERR_ARG, "awq: output Q must be a separate rows x cols buffer");
    const int64_t m = L->rows, n = L->cols;
    qsur_awq_result r = {0.0, 0.0, 0.0};
    if (spec->bits >= 16) {
        memcpy(Q, L->W, (size_t)(m * n) * sizeof *Q);
        for (int64_t j = 0; s && j < n; j++)
            s[j] = 1.0f;
        for (int g = 0; errors && g <= o.grid; g++)
            errors[g] = 0.0;
        if (res)
            *res = r;
        return QSUR_OK;
    }

    awq_work w;
    memset(&w, 0, sizeof w);
    w.stat = malloc((size_t)n * sizeof *w.stat);
    w.sc = malloc((size_t)n * sizeof *w.sc);
    w.Qa = qsur_alloc((size_t)(m * n), sizeof(float));
    if (L->X) {
        w.D = qsur_alloc((size_t)(m * n), sizeof(float));
        w.E = qsur_alloc((size_t)(TOKEN_BLOCK * m), sizeof(float));
    } else {
        w.zero = qsur_alloc((size_t)(m * n), sizeof(float));
    }
    if (!w.stat || !w.sc || !w.Qa || (L->X ? !w.D || !w.E : !w.zero)) {
        work_free(&w);
        return qsur_fail(err, QSUR_ERR_NOMEM, "awq: cannot allocate work for a %lldx%lld layer",
                         (long long)m, (long long)n);
    }

    /* Activation statistic per input channel. */
    if (L->X) {
        for (int64_t j = 0; j < n; j++)
            w.stat[j] = 0.0;
        for (int64_t t = 0; t < L->n; t++)
            for (int64_t j = 0; j < n; j++)
                w.stat[j] += fabs((double)L->X[t * n + j]);
        for (int64_t j = 0; j < n; j++)
            w.stat[j] /= (double)L->n;
    } else {
        for (int64_t j = 0; j < n; j++)
            w.stat[j] = sqrt(fmax(L->H[j * n + j], 0.0));
    }

    /* Reference energy ||X W^T||^2 (the error of Q = 0). */
    double ref;
    if (L->X) {
        ref = output_sq_error_x(L->X, L->n, L->W, m, n, w.E);
    } else {
        memset(w.zero, 0, (size_t)(m * n) * sizeof(float));
        rc = qsur_wquant_objective(L->W, w.zero, m, n, L->H, &ref, err);
        if (rc != QSUR_OK) {
            work_free(&w);
            return rc;
        }
    }

    double best = INFINITY;
    for (int g = 0; g <= o.grid; g++) {
        rc = qsur_progress_tick(prog, (double)g / (double)(o.grid + 1), "awq", best, err);
        if (rc != QSUR_OK) {
            work_free(&w);
            return rc;
        }
        const double a = (double)g / (double)o.grid;
        qsur_awq_scales(w.stat, n, a, w.sc);
        rc = qsur_awq_apply(L->W, m, n, w.sc, spec, w.Qa, err);
        if (rc != QSUR_OK) {
            work_free(&w);
            return rc;
        }
        double e2;
        rc = sq_error(L, &w, w.Qa, &e2, err);
        if (rc != QSUR_OK) {
            work_free(&w);
            return rc;
        }
        const double e = ref > 0.0 ? sqrt(fmax(e2, 0.0) / ref) : (e2 > 0.0 ? INFINITY : 0.0);
        if (errors)
            errors[g] = e;
        if (g == 0)
            r.rtn_error = e;
        if (e < best) { /* strict: ties keep the smaller a */
            best = e;
            r.alpha = a;
            r.error = e;
            memcpy(Q, w.Qa, (size_t)(m * n) * sizeof *Q);
            if (s)
                memcpy(s, w.sc, (size_t)n * sizeof *s);
        }
    }
    if (res)
        *res = r;
    work_free(&w);
    return qsur_progress_tick(prog, 1.0, "awq", best, err);
}
