/* Private to the CUDA backend: the device context (stream, cuBLAS handle,
 * upload staging buffer), error translation, and the GEMM wrappers every
 * whole-model kernel uses. Row-major callers use the usual trick: a row-major
 * matrix is its transpose in cuBLAS's column-major view. */
#ifndef QSUR_CUDA_GPU_UTIL_H
#define QSUR_CUDA_GPU_UTIL_H

#include <stddef.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include "qsur/error.h"
#include "qsur/llama.h"

typedef struct {
    cudaStream_t stream;
    cublasHandle_t blas;
    void *staging;        /* device bytes for uploads that need a conversion */
    size_t staging_bytes;
} qsur_gpu_ctx;

/* Picks device 0, creates the stream and the cuBLAS handle. */
int qsur_gpu_ctx_init(qsur_gpu_ctx *c, qsur_error *err);
void qsur_gpu_ctx_free(qsur_gpu_ctx *c);

/* QSUR_OK, or the CUDA error as a one-line message naming `what`. */
int qsur_gpu_check(cudaError_t e, const char *what, qsur_error *err);
int qsur_gpu_blas_check(cublasStatus_t s, const char *what, qsur_error *err);
/* NULL when cuBLAS and cuSOLVER were loaded (src/backend/cuda/cuda_libs.c loads
 * them on first use), else why not. */
const char *qsur_gpu_libs_error(void);
/* cudaMalloc with a message naming what and how much when it fails. */
int qsur_gpu_malloc(void **p, size_t bytes, const char *what, qsur_error *err);

/* dst (ct: fp32, or bf16 when bf16) = n host values of src_dtype (qsur_dtype:
 * F32, F16 or BF16). */
int qsur_gpu_upload_convert(qsur_gpu_ctx *c, void *dst, int bf16, const void *src, int src_dtype,
                            int64_t n, qsur_error *err);

/* C (m x n, column-major, ldc; fp32, or ct when c_ct) = alpha op(A) op(B) + beta C,
 * A and B in ct (bf16 when bf16), fp32 accumulation (no TF32). */
int qsur_gpu_gemm(qsur_gpu_ctx *c, int bf16, int transa, int transb, int m, int n, int k,
                  float alpha, const void *A, int lda, const void *B, int ldb, float beta, void *C,
                  int c_ct, int ldc, qsur_error *err);
/* The same for `batch` problems at element strides sA, sB, sC. */
int qsur_gpu_gemm_batched(qsur_gpu_ctx *c, int bf16, int transa, int transb, int m, int n, int k,
                          float alpha, const void *A, int lda, long long sA, const void *B, int ldb,
                          long long sB, float beta, void *C, int c_ct, int ldc, long long sC,
                          int batch, qsur_error *err);

/* *R = a new device fp32 n x n matrix of the online hook h (its apply on the
 * identity: x R is what the hook does to a row x), or NULL when h is unset. */
int qsur_gpu_online_matrix(const qsur_llama_online *h, int n, float **R, const char *what,
                           qsur_error *err);

/* cos_d, sin_d (device, T x head_size/2 each) = the RoPE tables of positions
 * 0..T-1 as the CPU makes them (angles in double, rounded to float). */
int qsur_gpu_rope_tables(const qsur_llama_config *c, int T, float *cos_d, float *sin_d, qsur_error *err);

#endif
