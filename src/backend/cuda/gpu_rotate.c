/* The weight rotations of `rotate model` on the GPU (qsur_gpu_rotation_*,
 * qsur/backend.h): R dense on the device, one fp32 GEMM per weight.
 *
 * Row-major in cuBLAS's column-major view (gpu_util.h): a row-major a x b
 * matrix is its b x a transpose there, so the device copy of R (row-major)
 * reads as R^T.
 *   rows:  Y = X R for X nrows x n:   Y^T = R^T X^T,
 *          gemm(N, N, m = n, n = nrows, k = n, A = R (read as R^T), B = X).
 *   left:  Z_b = R^T W_b for each n x cols block W_b:  Z_b^T = W_b^T R,
 *          gemm(N, T, m = cols, n = n, k = n, A = W_b (read as W_b^T),
 *          B = R (read as R^T, op T gives R)), batched over the blocks. */
#include <stdlib.h>
#include "gpu_util.h"
#include "qsur/backend.h"
#include "qsur/tensor.h"

struct qsur_gpu_rotation {
    qsur_gpu_ctx c;
    int64_t n;
    float *R;        /* device, n x n row-major */
    float *X, *Y;    /* device, cap floats each */
    int64_t cap;
};

int qsur_gpu_rotation_new(qsur_gpu_rotation **out, const qsur_hadamard_plan *R, qsur_error *err)
{
    *out = NULL;
    const int64_t n = R->n;
    qsur_gpu_rotation *r = calloc(1, sizeof *r);
    float *I = qsur_alloc((size_t)(n * n), sizeof(float));
    if (!r || !I) {
        free(r), free(I);
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu rotate: cannot build the %lld x %lld rotation",
                         (long long)n, (long long)n);
    }
    r->n = n;
    for (int64_t i = 0; i < n * n; i++)
        I[i] = 0.0f;
    for (int64_t i = 0; i < n; i++)
        I[i * n + i] = 1.0f;
    int rc = qsur_hadamard_plan_apply(R, I, n, NULL, err);
    if (!rc)
        rc = qsur_gpu_ctx_init(&r->c, err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&r->R, (size_t)(n * n) * sizeof(float), "rotation", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(r->R, I, (size_t)(n * n) * sizeof(float),
                                       cudaMemcpyHostToDevice), "rotation upload", err);
    free(I);
    if (rc) {
        qsur_gpu_rotation_free(r);
        return rc;
    }
    *out = r;
    return QSUR_OK;
}

void qsur_gpu_rotation_free(qsur_gpu_rotation *r)
{
    if (!r)
        return;
    cudaFree(r->R), cudaFree(r->X), cudaFree(r->Y);
    qsur_gpu_ctx_free(&r->c);
    free(r);
}

/* Device buffers for `elems` floats each (grown, never shrunk). */
static int reserve(qsur_gpu_rotation *r, int64_t elems, qsur_error *err)
{
    if (elems <= r->cap)
        return QSUR_OK;
    cudaFree(r->X), cudaFree(r->Y);
    r->X = r->Y = NULL;
    r->cap = 0;
    int rc = qsur_gpu_malloc((void **)&r->X, (size_t)elems * sizeof(float), "rotate", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&r->Y, (size_t)elems * sizeof(float), "rotate", err);
    if (!rc)
        r->cap = elems;
    return rc;
}

/* w -> X, then after the GEMM queued by the caller, Y -> w. */
static int up(qsur_gpu_rotation *r, const float *w, int64_t elems, qsur_error *err)
{
    int rc = reserve(r, elems, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(r->X, w, (size_t)elems * sizeof(float),
                                       cudaMemcpyHostToDevice), "rotate upload", err);
    return rc;
}

static int down(qsur_gpu_rotation *r, float *w, int64_t elems, qsur_error *err)
{
    /* the blocking stream orders this copy after the GEMM (gpu_util.c) */
    return qsur_gpu_check(cudaMemcpy(w, r->Y, (size_t)elems * sizeof(float), cudaMemcpyDeviceToHost),
                          "rotate download", err);
}

int qsur_gpu_rotation_rows(qsur_gpu_rotation *r, float *w, int64_t nrows, qsur_error *err)
{
    const int64_t n = r->n;
    if (nrows < 0 || nrows > 0x7fffffff)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu rotate: %lld rows", (long long)nrows);
    if (nrows == 0)
        return QSUR_OK;
    int rc = up(r, w, nrows * n, err);
    if (!rc)
        rc = qsur_gpu_gemm(&r->c, 0, 0, 0, (int)n, (int)nrows, (int)n, 1.0f, r->R, (int)n, r->X,
                           (int)n, 0.0f, r->Y, 0, (int)n, err);
    if (!rc)
        rc = down(r, w, nrows * n, err);
    return rc;
}

int qsur_gpu_rotation_left(qsur_gpu_rotation *r, float *w, int64_t rows, int64_t cols,
                           qsur_error *err)
{
    const int64_t n = r->n;
    if (rows % n || cols < 1 || cols > 0x7fffffff || rows / n > 0x7fffffff)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu rotate: %lld x %lld is not in blocks of %lld rows",
                         (long long)rows, (long long)cols, (long long)n);
    if (rows == 0)
        return QSUR_OK;
    int rc = up(r, w, rows * cols, err);
    if (!rc)
        rc = qsur_gpu_gemm_batched(&r->c, 0, 0, 1, (int)cols, (int)n, (int)n, 1.0f, r->X, (int)cols,
                                   (long long)(n * cols), r->R, (int)n, 0, 0.0f, r->Y, 0, (int)cols,
                                   (long long)(n * cols), (int)(rows / n), err);
    if (!rc)
        rc = down(r, w, rows * cols, err);
    return rc;
}
