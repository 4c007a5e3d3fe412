/* The CUDA backend's device context, errors, uploads and GEMM wrappers. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "gpu_util.h"
#include "kernels.h"
#include "qsur/safetensors.h"

#define STAGING_BYTES ((size_t)64 << 20)

int qsur_gpu_check(cudaError_t e, const char *what, qsur_error *err)
{
    if (e == cudaSuccess)
        return QSUR_OK;
    return qsur_fail(err, e == cudaErrorMemoryAllocation ? QSUR_ERR_NOMEM : QSUR_ERR_NUMERIC,
                     "gpu: %s: %s", what, cudaGetErrorString(e));
}

int qsur_gpu_blas_check(cublasStatus_t s, const char *what, qsur_error *err)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return QSUR_OK;
    return qsur_fail(err, s == CUBLAS_STATUS_ALLOC_FAILED ? QSUR_ERR_NOMEM : QSUR_ERR_NUMERIC,
                     "gpu: %s: cuBLAS %s", what, cublasGetStatusString(s));
}

int qsur_gpu_malloc(void **p, size_t bytes, const char *what, qsur_error *err)
{
    *p = NULL;
    if (bytes == 0)
        return QSUR_OK;
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        *p = NULL;
        (void)cudaGetLastError(); /* clear the sticky-free error state */
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu: cannot allocate %.2f GiB for %s: %s",
                         (double)bytes / (1 << 30), what, cudaGetErrorString(e));
    }
    return QSUR_OK;
}

int qsur_gpu_ctx_init(qsur_gpu_ctx *c, qsur_error *err)
{
    memset(c, 0, sizeof *c);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        (void)cudaGetLastError();
        return qsur_fail(err, QSUR_ERR_ARG, "gpu: no usable GPU (%s); use `set device cpu`",
                         e != cudaSuccess ? cudaGetErrorString(e) : "none found");
    }
    int rc = qsur_gpu_check(cudaSetDevice(0), "select device 0", err);
    if (!rc)
        /* a blocking stream: plain cudaMemcpy calls (legacy stream) are ordered
         * after the kernels queued here, and before the ones queued after them */
        rc = qsur_gpu_check(cudaStreamCreate(&c->stream), "stream", err);
    if (!rc)
        rc = qsur_gpu_blas_check(cublasCreate(&c->blas), "create handle", err);
    if (!rc)
        rc = qsur_gpu_blas_check(cublasSetStream(c->blas, c->stream), "set stream", err);
    if (rc)
        qsur_gpu_ctx_free(c);
    return rc;
}

void qsur_gpu_ctx_free(qsur_gpu_ctx *c)
{
    if (c->blas)
        cublasDestroy(c->blas);
    if (c->stream)
        cudaStreamDestroy(c->stream);
    cudaFree(c->staging);
    memset(c, 0, sizeof *c);
}

int qsur_gpu_upload_convert(qsur_gpu_ctx *c, void *dst, int bf16, const void *src, int src_dtype,
                            int64_t n, qsur_error *err)
{
    if (n <= 0)
        return QSUR_OK;
    if (src_dtype != QSUR_DTYPE_F32 && src_dtype != QSUR_DTYPE_BF16 && src_dtype != QSUR_DTYPE_F16)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu: weights of dtype %d cannot be uploaded (F32, F16, BF16)",
                         src_dtype);
    size_t esz = src_dtype == QSUR_DTYPE_F32 ? 4 : 2;
    int code = src_dtype == QSUR_DTYPE_F32 ? 0 : src_dtype == QSUR_DTYPE_BF16 ? 1 : 2; /* kernels.h */
    if (!bf16 && src_dtype == QSUR_DTYPE_F32)
        return qsur_gpu_check(cudaMemcpy(dst, src, (size_t)n * 4, cudaMemcpyHostToDevice), "upload", err);
    if (!c->staging) {
        int rc = qsur_gpu_malloc(&c->staging, STAGING_BYTES, "upload staging", err);
        if (rc)
            return rc;
        c->staging_bytes = STAGING_BYTES;
    }
    int64_t per = (int64_t)(c->staging_bytes / esz);
    for (int64_t i = 0; i < n; i += per) {
        int64_t k = n - i < per ? n - i : per;
        /* synchronous copy: the staging buffer is reused by the next chunk */
        int rc = qsur_gpu_check(cudaStreamSynchronize(c->stream), "upload", err);
        if (!rc)
            rc = qsur_gpu_check(cudaMemcpy(c->staging, (const char *)src + (size_t)i * esz,
                                           (size_t)k * esz, cudaMemcpyHostToDevice), "upload", err);
        if (rc)
            return rc;
        qsur_cu_convert((char *)dst + (size_t)i * (bf16 ? 2 : 4), bf16, c->staging, code, k,
                        c->stream);
    }
    return qsur_gpu_check(cudaStreamSynchronize(c->stream), "upload", err);
}

static cublasOperation_t op(int t)
{
    return t ? CUBLAS_OP_T : CUBLAS_OP_N;
}

int qsur_gpu_gemm(qsur_gpu_ctx *c, int bf16, int transa, int transb, int m, int n, int k,
                  float alpha, const void *A, int lda, const void *B, int ldb, float beta, void *C,
                  int c_ct, int ldc, qsur_error *err)
{
    cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F, ct = bf16 && c_ct ? CUDA_R_16BF : CUDA_R_32F;
    return qsur_gpu_blas_check(cublasGemmEx(c->blas, op(transa), op(transb), m, n, k, &alpha, A, ab,
                                            lda, B, ab, ldb, &beta, C, ct, ldc, CUBLAS_COMPUTE_32F,
                                            CUBLAS_GEMM_DEFAULT),
                               "gemm", err);
}

int qsur_gpu_gemm_batched(qsur_gpu_ctx *c, int bf16, int transa, int transb, int m, int n, int k,
                          float alpha, const void *A, int lda, long long sA, const void *B, int ldb,
                          long long sB, float beta, void *C, int c_ct, int ldc, long long sC,
                          int batch, qsur_error *err)
{
    cudaDataType_t ab = bf16 ? CUDA_R_16BF : CUDA_R_32F, ct = bf16 && c_ct ? CUDA_R_16BF : CUDA_R_32F;
    return qsur_gpu_blas_check(cublasGemmStridedBatchedEx(c->blas, op(transa), op(transb), m, n, k,
                                                          &alpha, A, ab, lda, sA, B, ab, ldb, sB,
                                                          &beta, C, ct, ldc, sC, batch,
                                                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                               "batched gemm", err);
}

int qsur_gpu_online_matrix(const qsur_llama_online *h, int n, float **R, const char *what,
                           qsur_error *err)
{
    *R = NULL;
    if (!h->apply)
        return QSUR_OK;
    float *I = calloc((size_t)n * n, sizeof(float));
    if (!I)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu: cannot build the %s transform (%d x %d)", what, n, n);
    for (int i = 0; i < n; i++)
        I[(size_t)i * n + i] = 1.0f;
    h->apply(h->ctx, I, n, n);
    int rc = qsur_gpu_malloc((void **)R, (size_t)n * n * sizeof(float), what, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(*R, I, (size_t)n * n * sizeof(float), cudaMemcpyHostToDevice),
                            what, err);
    free(I);
    return rc;
}

int qsur_gpu_rope_tables(const qsur_llama_config *c, int T, float *cos_d, float *sin_d, qsur_error *err)
{
    size_t half = (size_t)c->head_size / 2, S = (size_t)T;
    float *cs = malloc(2 * S * half * sizeof(float));
    if (!cs)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu: out of memory for the RoPE tables");
    for (size_t p = 0; p < S; p++)
        for (size_t i = 0; i < half; i++) {
            double a = (double)p * pow(c->rope_theta, -2.0 * (double)i / c->head_size);
            cs[p * half + i] = (float)cos(a);
            cs[S * half + p * half + i] = (float)sin(a);
        }
    int rc = qsur_gpu_check(cudaMemcpy(cos_d, cs, S * half * 4, cudaMemcpyHostToDevice), "rope", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(sin_d, cs + S * half, S * half * 4, cudaMemcpyHostToDevice), "rope", err);
    free(cs);
    return rc;
}
