/* Haar-random orthogonal matrices: sign-fixed QR of a Gaussian matrix. */
#include <lapacke.h>
#include <stdlib.h>
#include "qsur/orthogonal.h"
#include "qsur/rng.h"
#include "qsur/tensor.h"

int qsur_random_orthogonal(int64_t n, uint64_t seed, double *Q, qsur_error *err)
{
    if (n < 1 || n > 65536)
        return qsur_fail(err, QSUR_ERR_ARG, "random orthogonal: size %lld out of range 1..65536",
                         (long long)n);
    size_t nn = (size_t)n * (size_t)n;
    double *tau = qsur_alloc((size_t)n, sizeof(double));
    if (!tau)
        return qsur_fail(err, QSUR_ERR_NOMEM, "random orthogonal %lld: no memory", (long long)n);
    qsur_rng rng;
    qsur_rng_seed(&rng, seed);
    for (size_t i = 0; i < nn; i++)
        Q[i] = qsur_rng_normal(&rng);
    lapack_int N = (lapack_int)n;
    /* Row-major n x n, leading dimension n. */
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, N, N, Q, N, tau);
    if (info != 0) {
        free(tau);
        return qsur_fail(err, QSUR_ERR_NUMERIC, "random orthogonal %lld: dgeqrf info=%d",
                         (long long)n, (int)info);
    }
    /* diag(R) sits on Q's diagonal until dorgqr overwrites it: keep its signs. */
    double *sgn = qsur_alloc((size_t)n, sizeof(double));
    if (!sgn) {
        free(tau);
        return qsur_fail(err, QSUR_ERR_NOMEM, "random orthogonal %lld: no memory", (long long)n);
    }
    for (int64_t j = 0; j < n; j++)
        sgn[j] = Q[j * n + j] < 0 ? -1.0 : 1.0;
    info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, N, N, N, Q, N, tau);
    free(tau);
    if (info != 0) {
        free(sgn);
        return qsur_fail(err, QSUR_ERR_NUMERIC, "random orthogonal %lld: dorgqr info=%d",
                         (long long)n, (int)info);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            Q[i * n + j] *= sgn[j];
    free(sgn);
    return QSUR_OK;
}

int qsur_random_orthogonal_f(int64_t n, uint64_t seed, float *Q, qsur_error *err)
{
    if (n < 1 || n > 65536)
        return qsur_fail(err, QSUR_ERR_ARG, "random orthogonal: size %lld out of range 1..65536",
                         (long long)n);
    double *tmp = qsur_alloc((size_t)n * (size_t)n, sizeof(double));
    if (!tmp)
        return qsur_fail(err, QSUR_ERR_NOMEM, "random orthogonal %lld: no memory", (long long)n);
    int rc = qsur_random_orthogonal(n, seed, tmp, err);
    if (rc == QSUR_OK)
        for (size_t i = 0; i < (size_t)n * (size_t)n; i++)
            Q[i] = (float)tmp[i];
    free(tmp);
    return rc;
}
