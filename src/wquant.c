/* The layer-wise problem shared by the weight quantizers: checks, the Gram
 * matrix H = X^T X and the objective tr((W-Q) H (W-Q)^T). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "qsur/tensor.h"
#include "qsur/wquant.h"

/* Tokens (or weight rows) per BLAS call: bounds scratch to ROW_BLOCK x cols doubles. */
#define ROW_BLOCK 256

int qsur_wquant_check(const qsur_wquant_layer *L, const char *who, qsur_error *err)
{
    if (!L || !L->W)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: no weight given", who);
    if (L->rows <= 0 || L->cols <= 0 || L->rows > INT32_MAX || L->cols > INT32_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: bad weight shape %lldx%lld", who,
                         (long long)L->rows, (long long)L->cols);
    if (!L->H && !L->X)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "%s: needs calibration activations X or their Gram matrix H", who);
    if (L->X && (L->n <= 0 || L->n > INT32_MAX))
        return qsur_fail(err, QSUR_ERR_ARG, "%s: X has %lld tokens (expected > 0)", who,
                         (long long)L->n);
    int64_t bad = qsur_find_nonfinite(L->W, L->rows * L->cols);
    if (bad >= 0)
        return qsur_fail(err, QSUR_ERR_NUMERIC, "%s: W[%lld][%lld] is not finite", who,
                         (long long)(bad / L->cols), (long long)(bad % L->cols));
    if (L->X) {
        bad = qsur_find_nonfinite(L->X, L->n * L->cols);
        if (bad >= 0)
            return qsur_fail(err, QSUR_ERR_NUMERIC, "%s: X[%lld][%lld] is not finite", who,
                             (long long)(bad / L->cols), (long long)(bad % L->cols));
    }
    if (L->H) {
        for (int64_t i = 0; i < L->cols * L->cols; i++)
            if (!isfinite(L->H[i]))
                return qsur_fail(err, QSUR_ERR_NUMERIC, "%s: H[%lld][%lld] is not finite", who,
                                 (long long)(i / L->cols), (long long)(i % L->cols));
    }
    return QSUR_OK;
}

int qsur_gram_acc_init(qsur_gram_acc *g, int64_t cols, double *H, qsur_error *err)
{
    memset(g, 0, sizeof *g);
    if (!H || cols <= 0 || cols > INT32_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "gram: bad width %lld", (long long)cols);
    g->buf = qsur_alloc((size_t)(QSUR_GRAM_BLOCK * cols), sizeof(double));
    if (!g->buf)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gram: cannot allocate %dx%lld scratch",
                         QSUR_GRAM_BLOCK, (long long)cols);
    g->cols = cols;
    g->H = H;
    return QSUR_OK;
}

/* H += buf^T buf for the waiting rows (the first block sets H: beta 0). */
static void gram_flush(qsur_gram_acc *g)
{
    if (g->fill == 0)
        return;
    int c = (int)g->cols;
    /* Row-major, upper triangle: H += Xb^T Xb with Xb fill x cols. */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, c, g->fill, 1.0, g->buf, c,
                g->n == g->fill ? 0.0 : 1.0, g->H, c);
    g->fill = 0;
}

void qsur_gram_acc_rows(qsur_gram_acc *g, const float *X, int64_t n)
{
    for (int64_t r = 0; r < n; r++) {
        double *dst = g->buf + (int64_t)g->fill * g->cols;
        const float *src = X + r * g->cols;
        for (int64_t j = 0; j < g->cols; j++)
            dst[j] = src[j];
        g->fill++;
        g->n++;
        if (g->fill == QSUR_GRAM_BLOCK)
            gram_flush(g);
    }
}

void qsur_gram_acc_finish(qsur_gram_acc *g)
{
    gram_flush(g);
    int64_t cols = g->cols;
    if (g->n == 0)
        memset(g->H, 0, (size_t)(cols * cols) * sizeof *g->H);
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < i; j++)
            g->H[i * cols + j] = g->H[j * cols + i];
}

void qsur_gram_acc_free(qsur_gram_acc *g)
{
    free(g->buf);
    memset(g, 0, sizeof *g);
}

int qsur_gram(const float *X, int64_t n, int64_t cols, double *H,
              const qsur_progress *prog, qsur_error *err)
{
    if (!X || !H || n <= 0 || cols <= 0 || n > INT32_MAX || cols > INT32_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "gram: bad shape X %lldx%lld", (long long)n,
                         (long long)cols);
    qsur_gram_acc g;
    int rc = qsur_gram_acc_init(&g, cols, H, err);
    for (int64_t t0 = 0; t0 < n && !rc; t0 += QSUR_GRAM_BLOCK) {
        rc = qsur_progress_tick(prog, (double)t0 / (double)n, "gram", NAN, err);
        if (!rc)
            qsur_gram_acc_rows(&g, X + t0 * cols, n - t0 < QSUR_GRAM_BLOCK ? n - t0 : QSUR_GRAM_BLOCK);
    }
    if (!rc)
        qsur_gram_acc_finish(&g);
    qsur_gram_acc_free(&g);
    return rc;
}

int qsur_wquant_objective(const float *W, const float *Q, int64_t rows, int64_t cols,
                          const double *H, double *out, qsur_error *err)
{
    if (!W || !Q || !H || !out || rows <= 0 || cols <= 0 || rows > INT32_MAX || cols > INT32_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "objective: bad arguments (W %lldx%lld)",
                         (long long)rows, (long long)cols);
    int64_t rb = rows < ROW_BLOCK ? rows : ROW_BLOCK;
    double *d = qsur_alloc((size_t)(rb * cols), sizeof(double));
    double *p = qsur_alloc((size_t)(rb * cols), sizeof(double));
    if (!d || !p) {
        free(d);
        free(p);
        return qsur_fail(err, QSUR_ERR_NOMEM, "objective: cannot allocate %lldx%lld scratch",
                         (long long)rb, (long long)cols);
    }
    double total = 0.0;
    int c = (int)cols;
    for (int64_t r0 = 0; r0 < rows; r0 += rb) {
        int nb = (int)(rows - r0 < rb ? rows - r0 : rb);
        for (int64_t i = 0; i < (int64_t)nb * cols; i++)
            d[i] = (double)W[r0 * cols + i] - (double)Q[r0 * cols + i];
        /* Row-major: P (nb x cols) = D (nb x cols) * H (cols x cols, symmetric). */
        cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, nb, c, 1.0, H, c, d, c, 0.0, p, c);
        for (int64_t i = 0; i < (int64_t)nb * cols; i++)
            total += d[i] * p[i];
    }
    free(d);
    free(p);
    *out = total;
    return QSUR_OK;
}

int qsur_wquant_hessian(const qsur_wquant_layer *L, double *H, const qsur_progress *prog,
                        qsur_error *err)
{
    if (L->H) {
        memcpy(H, L->H, (size_t)(L->cols * L->cols) * sizeof *H);
        return QSUR_OK;
    }
    return qsur_gram(L->X, L->n, L->cols, H, prog, err);
}
