/* Equivalent-transform steps: building R and s, applying X S^-1 R and W S R. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/orthogonal.h"
#include "qsur/transform.h"

#define MAX_D (INT64_C(1) << 16)
/* Floats of scratch per chunk for dense rotation and the equivalence check. */
#define CHUNK_FLOATS (INT64_C(1) << 20)

const char *qsur_transform_kind_name(qsur_transform_kind k)
{
    switch (k) {
    case QSUR_XF_HADAMARD: return "hadamard";
    case QSUR_XF_RANDOM_ORTHOGONAL: return "random-orthogonal";
    case QSUR_XF_PCA: return "pca";
    case QSUR_XF_SMOOTHQUANT: return "smoothquant";
    case QSUR_XF_SCALE: return "scale";
    case QSUR_XF_DENSE: return "dense";
    }
    return "?";
}

void qsur_transform_free(qsur_transform *t)
{
    if (!t)
        return;
    qsur_hadamard_plan_free(t->plan);
    free(t->rot);
    free(t->scale);
    free(t->eigenvalues);
    free(t);
}

static int xf_alloc(qsur_transform **out, qsur_transform_kind kind, int64_t d, int want_rot,
                    int want_scale, qsur_error *err)
{
    *out = NULL;
    if (d < 1 || d > MAX_D)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: dimension %lld out of range 1..%lld",
                         qsur_transform_kind_name(kind), (long long)d, (long long)MAX_D);
    qsur_transform *t = calloc(1, sizeof *t);
    if (!t)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: no memory", qsur_transform_kind_name(kind));
    t->kind = kind;
    t->d = d;
    if ((want_rot && !(t->rot = qsur_alloc((size_t)(d * d), sizeof(float)))) ||
        (want_scale && !(t->scale = qsur_alloc((size_t)d, sizeof(float))))) {
        qsur_transform_free(t);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s %lld: no memory",
                         qsur_transform_kind_name(kind), (long long)d);
    }
    *out = t;
    return QSUR_OK;
}

static void sum_log_scale(qsur_transform *t, double *smin, double *smax)
{
    double ld = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t j = 0; j < t->d; j++) {
        ld += log((double)t->scale[j]);
        lo = fmin(lo, t->scale[j]);
        hi = fmax(hi, t->scale[j]);
    }
    t->log_det = ld;
    *smin = lo;
    *smax = hi;
}

int qsur_transform_hadamard_new(qsur_transform **out, int64_t d, int randomized,
                                uint64_t seed, qsur_error *err)
{
    qsur_transform *t;
    int rc = xf_alloc(&t, QSUR_XF_HADAMARD, d, 0, 0, err);
    if (rc)
        return rc;
    t->randomized = randomized;
    t->seed = seed;
    qsur_hadamard_opts o = {randomized, seed};
    rc = qsur_hadamard_plan_new(&t->plan, d, &o, err);
    if (rc) {
        qsur_transform_free(t);
        return rc;
    }
    snprintf(t->desc, sizeof t->desc, "rotate hadamard: %s", t->plan->desc);
    *out = t;
    return QSUR_OK;
}

int qsur_transform_random_orthogonal_new(qsur_transform **out, int64_t d, uint64_t seed,
                                         qsur_error *err)
{
    qsur_transform *t;
    int rc = xf_alloc(&t, QSUR_XF_RANDOM_ORTHOGONAL, d, 1, 0, err);
    if (rc)
        return rc;
    t->seed = seed;
    rc = qsur_random_orthogonal_f(d, seed, t->rot, err);
    if (rc) {
        qsur_transform_free(t);
        return rc;
    }
    snprintf(t->desc, sizeof t->desc, "rotate random-orthogonal %lld (seed %llu)", (long long)d,
             (unsigned long long)seed);
    *out = t;
    return QSUR_OK;
}

static int check_finite(const float *x, int64_t n, const char *what, qsur_error *err)
{
    int64_t bad = qsur_find_nonfinite(x, n);
    if (bad >= 0)
        return qsur_fail(err, QSUR_ERR_NUMERIC, "%s: element %lld is not finite (%g)", what,
                         (long long)bad, (double)x[bad]);
    return QSUR_OK;
}

/* Long on purpose: one pass (mean, chunked covariance, eigen, ordering) over buffers freed at one
 * exit. */
int qsur_transform_pca_new(qsur_transform **out, const float *X, int64_t n, int64_t d,
                           const qsur_progress *prog, qsur_error *err)
{
    *out = NULL;
    if (!X || n < 2)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "pca: needs activations X with at least 2 tokens (got %lld)",
                         X ? (long long)n : 0LL);
    qsur_transform *t;
    int rc = xf_alloc(&t, QSUR_XF_PCA, d, 1, 0, err);
    if (rc)
        return rc;
    rc = check_finite(X, n * d, "pca: X", err);
    int64_t chunk = CHUNK_FLOATS / d < 1 ? 1 : CHUNK_FLOATS / d;
    if (chunk > n)
        chunk = n;
    double *mu = qsur_alloc((size_t)d, sizeof(double));
    double *C = qsur_alloc((size_t)(d * d), sizeof(double));
    double *A = qsur_alloc((size_t)(chunk * d), sizeof(double));
    t->eigenvalues = qsur_alloc((size_t)d, sizeof(double));
    if (!rc && (!mu || !C || !A || !t->eigenvalues))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "pca %lld x %lld: no memory", (long long)n,
                       (long long)d);
    if (!rc) {
        memset(mu, 0, sizeof(double) * (size_t)d);
        memset(C, 0, sizeof(double) * (size_t)(d * d));
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < d; j++)
                mu[j] += X[i * d + j];
        for (int64_t j = 0; j < d; j++)
            mu[j] /= (double)n;
        /* S = (1/n) sum (x - mu)(x - mu)^T, centred before the product so large
         * means do not cancel away the spread (design doc, QSUR section). */
        for (int64_t r0 = 0; r0 < n && !rc; r0 += chunk) {
            int64_t nr = n - r0 < chunk ? n - r0 : chunk;
            for (int64_t i = 0; i < nr; i++)
                for (int64_t j = 0; j < d; j++)
                    A[i * d + j] = (double)X[(r0 + i) * d + j] - mu[j];
            /* Row-major A (nr x d): C += A^T A / n, upper triangle. */
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)nr, 1.0 / (double)n,
                        A, (int)d, 1.0, C, (int)d);
            rc = qsur_progress_tick(prog, 0.5 * (double)(r0 + nr) / (double)n, "pca covariance",
                                    NAN, err);
        }
    }
    if (!rc) {
        /* Row-major d x d, upper triangle; eigenvalues ascending, eigenvector i
         * is column i of C afterwards. */
        lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)d, C,
                                         (lapack_int)d, mu);
        if (info != 0)
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "pca %lld: dsyevd failed, info=%d",
                           (long long)d, (int)info);
    }
    if (!rc) {
        for (int64_t k = 0; k < d; k++) {
            int64_t src = d - 1 - k; /* descending */
            t->eigenvalues[k] = mu[src];
            int64_t arg = 0;
            for (int64_t r = 1; r < d; r++)
                if (fabs(C[r * d + src]) > fabs(C[arg * d + src]))
                    arg = r;
            double sg = C[arg * d + src] < 0 ? -1.0 : 1.0;
            for (int64_t r = 0; r < d; r++)
                t->rot[r * d + k] = (float)(sg * C[r * d + src]);
        }
        snprintf(t->desc, sizeof t->desc,
                 "rotate pca %lld (eigenvectors of cov X, %lld tokens; eigenvalues %.3g .. %.3g)",
                 (long long)d, (long long)n, t->eigenvalues[0], t->eigenvalues[d - 1]);
        rc = qsur_progress_tick(prog, 1.0, "pca", NAN, err);
    }
    free(mu);
    free(C);
    free(A);
    if (rc) {
        qsur_transform_free(t);
        return rc;
    }
    *out = t;
    return QSUR_OK;
}

int qsur_transform_smoothquant_new(qsur_transform **out, const float *X, int64_t n,
                                   const float *W, int64_t m, int64_t d, double alpha,
                                   qsur_error *err)
{
    *out = NULL;
    if (!X || !W || n < 1 || m < 1)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "smoothquant: needs both activations X and weights W (X %s, W %s)",
                         X && n > 0 ? "given" : "missing", W && m > 0 ? "given" : "missing");
    if (!(alpha >= 0.0 && alpha <= 1.0))
        return qsur_fail(err, QSUR_ERR_ARG, "smoothquant: alpha %g outside [0, 1]", alpha);
    qsur_transform *t;
    int rc = xf_alloc(&t, QSUR_XF_SMOOTHQUANT, d, 0, 1, err);
    if (rc)
        return rc;
    t->alpha = alpha;
    if ((rc = check_finite(X, n * d, "smoothquant: X", err)) ||
        (rc = check_finite(W, m * d, "smoothquant: W", err))) {
        qsur_transform_free(t);
        return rc;
    }
    double *ax = calloc((size_t)d, sizeof(double)), *aw = calloc((size_t)d, sizeof(double));
    if (!ax || !aw) {
        free(ax);
        free(aw);
        qsur_transform_free(t);
        return qsur_fail(err, QSUR_ERR_NOMEM, "smoothquant %lld: no memory", (long long)d);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            ax[j] = fmax(ax[j], fabs(X[i * d + j]));
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < d; j++)
            aw[j] = fmax(aw[j], fabs(W[i * d + j]));
    int64_t dead = 0;
    for (int64_t j = 0; j < d; j++) {
        double s = 1.0;
        if (ax[j] > 0 && aw[j] > 0)
            s = pow(ax[j], alpha) / pow(aw[j], 1.0 - alpha);
        float sf = (float)s;
        if (!(sf > 0.0f) || !isfinite(sf)) {
            /* Only reachable with magnitudes near the float range limits. */
            rc = qsur_fail(err, QSUR_ERR_NUMERIC,
                           "smoothquant: scale of channel %lld is %g (max|X|=%g, max|W|=%g)",
                           (long long)j, s, ax[j], aw[j]);
            free(ax);
            free(aw);
            qsur_transform_free(t);
            return rc;
        }
        dead += !(ax[j] > 0 && aw[j] > 0);
        t->scale[j] = sf;
    }
    free(ax);
    free(aw);
    double lo, hi;
    sum_log_scale(t, &lo, &hi);
    int len = snprintf(t->desc, sizeof t->desc,
                       "scale smoothquant alpha=%.2f (s in [%.3g, %.3g], sum ln s = %.4g)", alpha,
                       lo, hi, t->log_det);
    if (dead && len > 0 && (size_t)len < sizeof t->desc)
        snprintf(t->desc + len, sizeof t->desc - (size_t)len, "; %lld zero channel%s kept s=1",
                 (long long)dead, dead == 1 ? "" : "s");
    *out = t;
    return QSUR_OK;
}

int qsur_transform_scale_new(qsur_transform **out, const float *s, int64_t d,
                             const char *source, qsur_error *err)
{
    const char *src = source && *source ? source : "vector";
    *out = NULL;
    if (!s)
        return qsur_fail(err, QSUR_ERR_ARG, "scale: no vector given");
    for (int64_t j = 0; j < d; j++)
        if (!(s[j] > 0.0f) || !isfinite(s[j]))
            return qsur_fail(err, QSUR_ERR_ARG,
                             "scale %s: entry %lld is %g; every s_j must be finite and > 0", src,
                             (long long)j, (double)s[j]);
    qsur_transform *t;
    int rc = xf_alloc(&t, QSUR_XF_SCALE, d, 0, 1, err);
    if (rc)
        return rc;
    memcpy(t->scale, s, sizeof(float) * (size_t)d);
    snprintf(t->source, sizeof t->source, "%s", source ? source : "");
    double lo, hi;
    sum_log_scale(t, &lo, &hi);
    snprintf(t->desc, sizeof t->desc, "scale from %s (%lld channels, s in [%.3g, %.3g], sum ln s = %.4g)",
             src, (long long)d, lo, hi, t->log_det);
    *out = t;
    return QSUR_OK;
}

int qsur_transform_dense_new(qsur_transform **out, const float *R, int64_t d,
                             const char *source, qsur_error *err)
{
    const char *src = source && *source ? source : "matrix";
    *out = NULL;
    if (!R)
        return qsur_fail(err, QSUR_ERR_ARG, "dense rotation: no matrix given");
    qsur_transform *t;
    int rc = xf_alloc(&t, QSUR_XF_DENSE, d, 1, 0, err);
    if (rc)
        return rc;
    if ((rc = check_finite(R, d * d, src, err))) {
        qsur_transform_free(t);
        return rc;
    }
    memcpy(t->rot, R, sizeof(float) * (size_t)(d * d));
    /* Equivalence needs R R^T = I; check in double so the verdict is not float noise. */
    double *A = qsur_alloc((size_t)(d * d), sizeof(double));
    double *G = qsur_alloc((size_t)(d * d), sizeof(double));
    if (!A || !G) {
        free(A);
        free(G);
        qsur_transform_free(t);
        return qsur_fail(err, QSUR_ERR_NOMEM, "dense rotation %lld: no memory", (long long)d);
    }
    for (int64_t i = 0; i < d * d; i++)
        A[i] = R[i];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0, A, (int)d,
                A, (int)d, 0.0, G, (int)d);
    double e = 0;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++)
            e = fmax(e, fabs(G[i * d + j] - (i == j ? 1.0 : 0.0)));
    free(A);
    free(G);
    if (e > 1e-4) {
        qsur_transform_free(t);
        return qsur_fail(err, QSUR_ERR_ARG,
                         "dense rotation %s: not orthogonal, max|R^T R - I| = %.3g (limit 1e-4)",
                         src, e);
    }
    snprintf(t->source, sizeof t->source, "%s", source ? source : "");
    snprintf(t->desc, sizeof t->desc, "rotate dense %lld from %s (max|R^T R - I| = %.2g)",
             (long long)d, src, e);
    *out = t;
    return QSUR_OK;
}

/* out <- in S^(sign) R for rows in row chunks: each chunk is scaled (or copied)
 * into out, then rotated there while it is still in cache. in may equal out;
 * when it does not, in is never written, so an interrupted apply leaves it
 * intact (out is then partial). tmp holds chunk * d floats (dense R only). */
static int apply_side(const qsur_transform *t, const float *in, float *out, int64_t rows,
                      int divide, float *tmp, int64_t chunk, const qsur_progress *prog,
                      double done0, double span, qsur_error *err)
{
    const int64_t d = t->d;
    int rc = QSUR_OK;
    for (int64_t r0 = 0; r0 < rows && !rc; r0 += chunk) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        const float *src = in + r0 * d;
        float *dst = out + r0 * d;
        if (t->scale) {
            /* Divide rather than multiply by 1/s: X S^-1 then rounds once per entry. */
            for (int64_t i = 0; i < nr; i++)
                for (int64_t j = 0; j < d; j++)
                    dst[i * d + j] = divide ? src[i * d + j] / t->scale[j]
                                            : src[i * d + j] * t->scale[j];
            src = dst;
        }
        if (t->plan) {
            if (src != dst)
                memcpy(dst, src, sizeof(float) * (size_t)(nr * d));
            rc = qsur_hadamard_plan_apply(t->plan, dst, nr, NULL, err);
        } else if (t->rot) {
            /* sgemm must not write its input: through tmp when they coincide. */
            float *gout = src == dst ? tmp : dst;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)d, (int)d, 1.0f,
                        src, (int)d, t->rot, (int)d, 0.0f, gout, (int)d);
            if (gout != dst)
                memcpy(dst, gout, sizeof(float) * (size_t)(nr * d));
        } else if (src != dst) {
            memcpy(dst, src, sizeof(float) * (size_t)(nr * d));
        }
        if (!rc)
            rc = qsur_progress_tick(prog, done0 + span * (double)(r0 + nr) / (double)rows,
                                    qsur_transform_kind_name(t->kind), NAN, err);
    }
    return rc;
}

int qsur_transform_apply_into(const qsur_transform *t, const float *X, float *Xout, int64_t n,
                              const float *W, float *Wout, int64_t m,
                              const qsur_progress *prog, qsur_error *err)
{
    const int64_t d = t->d;
    if ((X && n < 0) || (W && m < 0))
        return qsur_fail(err, QSUR_ERR_ARG, "%s: negative row count",
                         qsur_transform_kind_name(t->kind));
    if ((X && !Xout) || (W && !Wout))
        return qsur_fail(err, QSUR_ERR_ARG, "%s: no output buffer",
                         qsur_transform_kind_name(t->kind));
    if (!X)
        n = 0;
    if (!W)
        m = 0;
    if (n + m == 0)
        return QSUR_OK;
    /* Hadamard / scaling: a few hundred KB per chunk, so the rows are still in
     * cache when the next pass reads them. Dense R: bigger chunks, as sgemm
     * runs faster on taller panels. */
    int64_t per = t->rot ? CHUNK_FLOATS : CHUNK_FLOATS / 4;
    int64_t chunk = per / d < 1 ? 1 : per / d;
    float *tmp = NULL;
    if (t->rot && ((n && X == Xout) || (m && W == Wout) || t->scale)) {
        tmp = qsur_alloc((size_t)(chunk * d), sizeof(float));
        if (!tmp)
            return qsur_fail(err, QSUR_ERR_NOMEM, "%s %lld x %lld: no memory",
                             qsur_transform_kind_name(t->kind), (long long)(n + m), (long long)d);
    }
    double fx = (double)n / (double)(n + m);
    int rc = apply_side(t, X, Xout, n, 1, tmp, chunk, prog, 0.0, fx, err);
    if (!rc)
        rc = apply_side(t, W, Wout, m, 0, tmp, chunk, prog, fx, 1.0 - fx, err);
    free(tmp);
    return rc;
}

int qsur_transform_apply(const qsur_transform *t, float *X, int64_t n, float *W, int64_t m,
                         const qsur_progress *prog, qsur_error *err)
{
    return qsur_transform_apply_into(t, X, X, n, W, W, m, prog, err);
}

void qsur_transform_rotation_dense(const qsur_transform *t, float *R)
{
    const int64_t d = t->d;
    if (t->plan) {
        qsur_hadamard_plan_dense(t->plan, R);
    } else if (t->rot) {
        memcpy(R, t->rot, sizeof(float) * (size_t)(d * d));
    } else {
        memset(R, 0, sizeof(float) * (size_t)(d * d));
        for (int64_t i = 0; i < d; i++)
            R[i * d + i] = 1.0f;
    }
}

int qsur_transform_equivalence_error(const float *X, const float *W, const float *X2,
                                     const float *W2, int64_t n, int64_t m, int64_t d,
                                     double *out, qsur_error *err)
{
    *out = NAN;
    if (!X || !W || !X2 || !W2 || n < 1 || m < 1 || d < 1)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "equivalence error: needs X, W, X', W' with positive sizes");
    int64_t chunk = CHUNK_FLOATS / m < 1 ? 1 : CHUNK_FLOATS / m;
    if (chunk > n)
        chunk = n;
    float *Y = qsur_alloc((size_t)(chunk * m), sizeof(float));
    float *Y2 = qsur_alloc((size_t)(chunk * m), sizeof(float));
    if (!Y || !Y2) {
        free(Y);
        free(Y2);
        return qsur_fail(err, QSUR_ERR_NOMEM, "equivalence error %lld x %lld: no memory",
                         (long long)n, (long long)m);
    }
    double num = 0, den = 0;
    for (int64_t r0 = 0; r0 < n; r0 += chunk) {
        int64_t nr = n - r0 < chunk ? n - r0 : chunk;
        /* Row-major: Y (nr x m) = X (nr x d) W^T, W is m x d. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)m, (int)d, 1.0f,
                    X + r0 * d, (int)d, W, (int)d, 0.0f, Y, (int)m);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)m, (int)d, 1.0f,
                    X2 + r0 * d, (int)d, W2, (int)d, 0.0f, Y2, (int)m);
        for (int64_t i = 0; i < nr * m; i++) {
            double a = Y[i], b = (double)Y[i] - (double)Y2[i];
            den += a * a;
            num += b * b;
        }
    }
    free(Y);
    free(Y2);
    *out = den > 0 ? sqrt(num / den) : (num > 0 ? INFINITY : 0.0);
    return QSUR_OK;
}
