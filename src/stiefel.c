/* Cayley-Adam on the orthogonal group and element-wise Adam (qsur/stiefel.h). */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/backend.h"
#include "qsur/stiefel.h"
#include "qsur/tensor.h"

/* a <- a^T for n x n (in place, in 32 x 32 tiles) */
static void transpose_inplace(double *a, int64_t n)
{
    for (int64_t i0 = 0; i0 < n; i0 += 32)
        for (int64_t j0 = i0; j0 < n; j0 += 32)
            for (int64_t i = i0; i < n && i < i0 + 32; i++)
                for (int64_t j = (j0 == i0 ? i + 1 : j0); j < n && j < j0 + 32; j++) {
                    double t = a[i * n + j];
                    a[i * n + j] = a[j * n + i];
                    a[j * n + i] = t;
                }
}

int qsur_stiefel_adam_new(qsur_stiefel_adam **out, int64_t n, qsur_error *err)
{
    *out = NULL;
    if (n < 1 || n > 65536)
        return qsur_fail(err, QSUR_ERR_ARG, "stiefel optimiser: size %lld out of range 1..65536",
                         (long long)n);
    qsur_stiefel_adam *o = calloc(1, sizeof *o);
    if (!o)
        return qsur_fail(err, QSUR_ERR_NOMEM, "stiefel optimiser: out of memory");
    o->n = n;
    o->b1 = 0.9;
    o->b2 = 0.999;
    o->eps = 1e-8;
    o->m = qsur_alloc((size_t)(n * n), sizeof(double));
    o->work = qsur_alloc((size_t)(3 * n * n), sizeof(double));
    o->ipiv = qsur_alloc((size_t)n, sizeof(int));
    if (!o->m || !o->work || !o->ipiv) {
        qsur_stiefel_adam_free(o);
        return qsur_fail(err, QSUR_ERR_NOMEM, "stiefel optimiser: out of memory for %lld x %lld",
                         (long long)n, (long long)n);
    }
    memset(o->m, 0, (size_t)(n * n) * sizeof(double));
    *out = o;
    return QSUR_OK;
}

void qsur_stiefel_adam_free(qsur_stiefel_adam *o)
{
    if (!o)
        return;
    qsur_gpu_cayley_free(o->gpu);
    free(o->m);
    free(o->work);
    free(o->ipiv);
    free(o);
}

int qsur_stiefel_adam_use_gpu(qsur_stiefel_adam *o, int on, qsur_error *err)
{
    if (!on) {
        qsur_gpu_cayley_free(o->gpu);
        o->gpu = NULL;
        return QSUR_OK;
    }
    return o->gpu ? QSUR_OK : qsur_gpu_cayley_new(&o->gpu, o->n, err);
}

int qsur_cayley_apply(int64_t n, double *R, const double *D, double a, double *work,
                      int *ipiv, qsur_error *err)
{
    double *M = work, *N = work + n * n;
    /* M = I + a/2 D;  N = (I - a/2 D) R = R - a/2 D R */
    for (int64_t i = 0; i < n * n; i++)
        M[i] = 0.5 * a * D[i];
    for (int64_t i = 0; i < n; i++)
        M[i * n + i] += 1.0;
    memcpy(N, R, (size_t)(n * n) * sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, -0.5 * a, D,
                (int)n, R, (int)n, 1.0, N, (int)n);
    /* Solve M X = N column-major on buffers transposed in place: row-major
     * LAPACKE would make the same transposes through freshly allocated copies
     * (page faults on every call), so this is the same computation, bit for bit.
     * I + skew is never singular (eigenvalues 1 + i*t), so info > 0 means NaN got in. */
    transpose_inplace(M, n);
    transpose_inplace(N, n);
    lapack_int info = LAPACKE_dgesv(LAPACK_COL_MAJOR, (lapack_int)n, (lapack_int)n, M, (lapack_int)n,
                                    ipiv, N, (lapack_int)n);
    if (info != 0)
        return qsur_fail(err, QSUR_ERR_NUMERIC, "cayley retraction: dgesv info %d on a %lld x %lld "
                         "system (non-finite gradient?)", (int)info, (long long)n, (long long)n);
    transpose_inplace(N, n);
    memcpy(R, N, (size_t)(n * n) * sizeof(double));
    return QSUR_OK;
}

/* A <- Cayley-Adam direction from P = G R^T (in place), then the retraction. */
static int adam_cayley(qsur_stiefel_adam *o, double *R, double *A, double lr, qsur_error *err)
{
    int64_t n = o->n;
    /* A = P - P^T = G R^T - R G^T (exactly skew: each pair is one difference) */
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++) {
            double s = A[i * n + j] - A[j * n + i];
            A[i * n + j] = s;
            A[j * n + i] = -s;
            ss += (i == j ? 0.0 : 2.0 * s * s);
        }
    if (!isfinite(ss))
        return qsur_fail(err, QSUR_ERR_NUMERIC, "stiefel step: non-finite gradient (%lld x %lld)",
                         (long long)n, (long long)n);
    o->t++;
    o->v = o->b2 * o->v + (1.0 - o->b2) * (o->canonical ? 0.5 * ss : ss / (double)(n * n));
    double c1 = 1.0 - pow(o->b1, (double)o->t), c2 = 1.0 - pow(o->b2, (double)o->t);
    double denom = (sqrt(o->v / c2) + o->eps) / (o->canonical ? 2.0 : 1.0);
    for (int64_t i = 0; i < n * n; i++) {
        o->m[i] = o->b1 * o->m[i] + (1.0 - o->b1) * A[i];
        A[i] = o->m[i] / c1 / denom;
    }
    /* D = A; descend: R <- cay(-lr D) R, i.e. a = lr with the sign in the formula */
    int rc = o->gpu ? qsur_gpu_cayley_apply(o->gpu, R, A, lr, err)
                    : qsur_cayley_apply(n, R, A, lr, o->work, o->ipiv, err);
    /* geoopt's stabilize: exp_avg <- proju(x, exp_avg) = 2 exp_avg (see stiefel.h);
     * its other half, x <- polar(x), is a no-op to rounding here (R in double) */
    if (!rc && o->stabilize > 0 && o->t % o->stabilize == 0)
        for (int64_t i = 0; i < n * n; i++)
            o->m[i] *= 2.0;
    return rc;
}

int qsur_stiefel_adam_step(qsur_stiefel_adam *o, double *R, const double *G, double lr,
                           qsur_error *err)
{
    int64_t n = o->n;
    double *A = o->work + 2 * n * n;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)n, 1.0, G, (int)n,
                R, (int)n, 0.0, A, (int)n);
    return adam_cayley(o, R, A, lr, err);
}

int qsur_stiefel_adam_step_left(qsur_stiefel_adam *o, double *R, const double *P, double lr,
                                qsur_error *err)
{
    int64_t n = o->n;
    double *A = o->work + 2 * n * n;
    memcpy(A, P, (size_t)(n * n) * sizeof(double));
    return adam_cayley(o, R, A, lr, err);
}

double qsur_orthogonality_error(const double *R, int64_t n)
{
    double *P = malloc((size_t)(n * n) * sizeof(double));
    if (!P)
        return INFINITY;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0, R, (int)n,
                R, (int)n, 0.0, P, (int)n);
    double e = 0.0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            e = fmax(e, fabs(P[i * n + j] - (i == j ? 1.0 : 0.0)));
    free(P);
    return e;
}

int qsur_adam_new(qsur_adam **out, int64_t n, qsur_error *err)
{
    *out = NULL;
    qsur_adam *o = calloc(1, sizeof *o);
    if (!o || n < 1)
        return free(o), qsur_fail(err, n < 1 ? QSUR_ERR_ARG : QSUR_ERR_NOMEM,
                                  "adam: cannot create an optimiser for %lld values", (long long)n);
    o->n = n;
    o->b1 = 0.9;
    o->b2 = 0.999;
    o->eps = 1e-8;
    o->m = calloc((size_t)n, sizeof(double));
    o->v = calloc((size_t)n, sizeof(double));
    if (!o->m || !o->v) {
        qsur_adam_free(o);
        return qsur_fail(err, QSUR_ERR_NOMEM, "adam: out of memory for %lld values", (long long)n);
    }
    *out = o;
    return QSUR_OK;
}

void qsur_adam_free(qsur_adam *o)
{
    if (!o)
        return;
    free(o->m);
    free(o->v);
    free(o);
}

void qsur_adam_step(qsur_adam *o, double *theta, const double *g, double lr)
{
    o->t++;
    double c1 = 1.0 - pow(o->b1, (double)o->t), c2 = 1.0 - pow(o->b2, (double)o->t);
    for (int64_t i = 0; i < o->n; i++) {
        o->m[i] = o->b1 * o->m[i] + (1.0 - o->b1) * g[i];
        o->v[i] = o->b2 * o->v[i] + (1.0 - o->b2) * g[i] * g[i];
        theta[i] -= lr * (o->m[i] / c1) / (sqrt(o->v[i] / c2) + o->eps);
    }
}
