/* The Cayley retraction on the GPU (qsur_gpu_cayley_*, qsur/backend.h).
 *
 * Row-major host matrices read as their transposes in cuBLAS's column-major
 * view (gpu_util.h): the uploaded R, D and M are R^T, D^T, M^T there.
 *   N (column-major) = op_T(R^T) = R                       (DGEAM)
 *   N -= a/2 op_T(D^T) op_T(R^T) = a/2 D R                 (DGEMM)
 *   LU of M^T (getrf), then getrs with op T: M X = N       (X column-major)
 *   R^T (column-major) = op_T(X), i.e. X row-major          (DGEAM), down.
 * DGEAM with beta = 0 still reads B: B is the source itself (finite), never
 * the uninitialised output. */
#include <cusolverDn.h>
#include <stdlib.h>
#include "gpu_util.h"
#include "qsur/backend.h"
#include "qsur/tensor.h"

struct qsur_gpu_cayley {
    qsur_gpu_ctx c;
    cusolverDnHandle_t sol;
    int64_t n;
    double *M, *N, *D, *R, *work; /* device: n*n each, getrf's workspace */
    int *ipiv, *info;             /* device */
    int lwork;
    double *host;                 /* n*n: M built on the host */
};

static int sol_check(cusolverStatus_t s, const char *what, qsur_error *err)
{
    if (s == CUSOLVER_STATUS_SUCCESS)
        return QSUR_OK;
    const char *why = qsur_gpu_libs_error();
    return qsur_fail(err, s == CUSOLVER_STATUS_ALLOC_FAILED ? QSUR_ERR_NOMEM : QSUR_ERR_NUMERIC,
                     "gpu cayley: %s: cuSOLVER status %d%s%s", what, (int)s, why ? ": " : "", why ? why : "");
}

void qsur_gpu_cayley_free(qsur_gpu_cayley *g)
{
    if (!g)
        return;
    if (g->sol)
        cusolverDnDestroy(g->sol);
    cudaFree(g->M), cudaFree(g->N), cudaFree(g->D), cudaFree(g->R), cudaFree(g->work);
    cudaFree(g->ipiv), cudaFree(g->info);
    qsur_gpu_ctx_free(&g->c);
    free(g->host);
    free(g);
}

int qsur_gpu_cayley_new(qsur_gpu_cayley **out, int64_t n, qsur_error *err)
{
    *out = NULL;
    if (n < 1 || n > 65536)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu cayley: size %lld out of range 1..65536", (long long)n);
    qsur_gpu_cayley *g = calloc(1, sizeof *g);
    if (!g)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu cayley: out of memory");
    g->n = n;
    size_t nn = (size_t)(n * n) * sizeof(double);
    int rc = (g->host = qsur_alloc((size_t)(n * n), sizeof(double))) ? QSUR_OK
             : qsur_fail(err, QSUR_ERR_NOMEM, "gpu cayley: out of memory for %lld x %lld", (long long)n, (long long)n);
    if (!rc)
        rc = qsur_gpu_ctx_init(&g->c, err);
    if (!rc)
        rc = sol_check(cusolverDnCreate(&g->sol), "create", err);
    if (!rc)
        rc = sol_check(cusolverDnSetStream(g->sol, g->c.stream), "set stream", err);
    double **bufs[4] = {&g->M, &g->N, &g->D, &g->R};
    for (int k = 0; k < 4 && !rc; k++)
        rc = qsur_gpu_malloc((void **)bufs[k], nn, "cayley", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&g->ipiv, (size_t)n * sizeof(int), "cayley pivots", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&g->info, sizeof(int), "cayley info", err);
    if (!rc)
        rc = sol_check(cusolverDnDgetrf_bufferSize(g->sol, (int)n, (int)n, g->M, (int)n, &g->lwork),
                       "getrf buffer size", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&g->work, (size_t)(g->lwork > 0 ? g->lwork : 1) * sizeof(double),
                             "cayley workspace", err);
    if (rc) {
        qsur_gpu_cayley_free(g);
        return rc;
    }
    *out = g;
    return QSUR_OK;
}

/* *info of the last solver call (device) is 0. */
static int info_ok(qsur_gpu_cayley *g, const char *what, qsur_error *err)
{
    int info = 0;
    int rc = qsur_gpu_check(cudaMemcpy(&info, g->info, sizeof info, cudaMemcpyDeviceToHost), what, err);
    if (!rc && info != 0)
        rc = qsur_fail(err, QSUR_ERR_NUMERIC, "cayley retraction: %s info %d on a %lld x %lld system "
                       "(non-finite gradient?)", what, info, (long long)g->n, (long long)g->n);
    return rc;
}

int qsur_gpu_cayley_apply(qsur_gpu_cayley *g, double *R, const double *D, double a, qsur_error *err)
{
    const int64_t n = g->n;
    const int ni = (int)n;
    const size_t nn = (size_t)(n * n) * sizeof(double);
    /* M = I + a/2 D, the CPU's operations (qsur_cayley_apply) */
    for (int64_t i = 0; i < n * n; i++)
        g->host[i] = 0.5 * a * D[i];
    for (int64_t i = 0; i < n; i++)
        g->host[i * n + i] += 1.0;
    int rc = qsur_gpu_check(cudaMemcpy(g->M, g->host, nn, cudaMemcpyHostToDevice), "cayley upload", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->D, D, nn, cudaMemcpyHostToDevice), "cayley upload", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->R, R, nn, cudaMemcpyHostToDevice), "cayley upload", err);
    const double one = 1.0, zero = 0.0, mhalf = -0.5 * a;
    if (!rc)
        rc = qsur_gpu_blas_check(cublasDgeam(g->c.blas, CUBLAS_OP_T, CUBLAS_OP_N, ni, ni, &one, g->R, ni, &zero,
                                             g->R, ni, g->N, ni), "cayley transpose", err);
    if (!rc)
        rc = qsur_gpu_blas_check(cublasDgemm(g->c.blas, CUBLAS_OP_T, CUBLAS_OP_T, ni, ni, ni, &mhalf, g->D, ni,
                                             g->R, ni, &one, g->N, ni), "cayley D R", err);
    if (!rc)
        rc = sol_check(cusolverDnDgetrf(g->sol, ni, ni, g->M, ni, g->work, g->ipiv, g->info), "getrf", err);
    if (!rc)
        rc = info_ok(g, "getrf", err);
    if (!rc)
        rc = sol_check(cusolverDnDgetrs(g->sol, CUBLAS_OP_T, ni, ni, g->M, ni, g->ipiv, g->N, ni, g->info),
                       "getrs", err);
    if (!rc)
        rc = info_ok(g, "getrs", err);
    if (!rc)
        rc = qsur_gpu_blas_check(cublasDgeam(g->c.blas, CUBLAS_OP_T, CUBLAS_OP_N, ni, ni, &one, g->N, ni, &zero,
                                             g->N, ni, g->R, ni), "cayley transpose", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(R, g->R, nn, cudaMemcpyDeviceToHost), "cayley download", err);
    return rc;
}
