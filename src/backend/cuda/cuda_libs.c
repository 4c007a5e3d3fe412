/* cuBLAS and cuSOLVER, loaded on first use.
 *
 * Why: linking libcublas/libcusolver made every qsur process map and relocate
 * ~900 MB of shared libraries at start (peak RSS 6.7 MB -> 265 MB, start-up
 * 0.03 s -> 0.4 s) even when no GPU is ever used, which is every CPU session,
 * every test process and every CPU benchmark's RSS figure. The CUDA runtime
 * (~1 MB, the same shared one cuBLAS uses) stays linked, and the 15 library
 * functions the backend calls are defined here with the headers' own
 * prototypes, forwarding to the real ones found with dlopen/dlsym the first
 * time any of them is called. Call sites stay plain cuBLAS/cuSOLVER calls.
 *
 * The library names come from the headers' major versions (libcublas.so.13,
 * libcusolver.so.12 for CUDA 13), so a build always loads the ABI it was
 * compiled against. They are looked up the loader's way first, then beside
 * the CUDA runtime this process linked (a toolkit whose lib directory is not
 * in the loader's path: the runtime was found through the build's RPATH).
 * When a library cannot be loaded every forwarder returns NOT_INITIALIZED and
 * qsur_gpu_libs_error() says why (the dlerror text). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr */
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <cublas_v2.h>
#include <cusolverDn.h>
#include "gpu_util.h"

#define STR_(x) #x
#define XSTR(x) STR_(x) /* expands macros first: cublasCreate -> "cublasCreate_v2" */
#define PTR_(x) p_##x
#define PTR(x) PTR_(x) /* the pointer of the expanded name: p_cublasCreate_v2 */

/* Each entry: return type, name (as the header spells the call), parameters, arguments. */
#define CUBLAS_FUNCS(X)                                                                         \
    X(cublasCreate, (cublasHandle_t * h), (h))                                                  \
    X(cublasDestroy, (cublasHandle_t h), (h))                                                   \
    X(cublasSetStream, (cublasHandle_t h, cudaStream_t s), (h, s))                              \
    X(cublasDgeam,                                                                              \
      (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,              \
       const double *alpha, const double *A, int lda, const double *beta, const double *B,     \
       int ldb, double *C, int ldc),                                                            \
      (h, ta, tb, m, n, alpha, A, lda, beta, B, ldb, C, ldc))                                   \
    X(cublasDgemm,                                                                              \
      (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,       \
       const double *alpha, const double *A, int lda, const double *B, int ldb,                \
       const double *beta, double *C, int ldc),                                                 \
      (h, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc))                                \
    X(cublasGemmEx,                                                                             \
      (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,       \
       const void *alpha, const void *A, cudaDataType At, int lda, const void *B,              \
       cudaDataType Bt, int ldb, const void *beta, void *C, cudaDataType Ct, int ldc,           \
       cublasComputeType_t ct, cublasGemmAlgo_t algo),                                          \
      (h, ta, tb, m, n, k, alpha, A, At, lda, B, Bt, ldb, beta, C, Ct, ldc, ct, algo))          \
    X(cublasGemmStridedBatchedEx,                                                               \
      (cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,       \
       const void *alpha, const void *A, cudaDataType At, int lda, long long sA,               \
       const void *B, cudaDataType Bt, int ldb, long long sB, const void *beta, void *C,       \
       cudaDataType Ct, int ldc, long long sC, int count, cublasComputeType_t ct,              \
       cublasGemmAlgo_t algo),                                                                  \
      (h, ta, tb, m, n, k, alpha, A, At, lda, sA, B, Bt, ldb, sB, beta, C, Ct, ldc, sC, count, \
       ct, algo))

#define CUSOLVER_FUNCS(X)                                                                       \
    X(cusolverDnCreate, (cusolverDnHandle_t * h), (h))                                          \
    X(cusolverDnDestroy, (cusolverDnHandle_t h), (h))                                           \
    X(cusolverDnSetStream, (cusolverDnHandle_t h, cudaStream_t s), (h, s))                      \
    X(cusolverDnDpotrf_bufferSize,                                                              \
      (cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *A, int lda, int *lwork),     \
      (h, uplo, n, A, lda, lwork))                                                              \
    X(cusolverDnDpotrf,                                                                         \
      (cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *A, int lda, double *work,    \
       int lwork, int *info),                                                                   \
      (h, uplo, n, A, lda, work, lwork, info))                                                  \
    X(cusolverDnDpotri_bufferSize,                                                              \
      (cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *A, int lda, int *lwork),     \
      (h, uplo, n, A, lda, lwork))                                                              \
    X(cusolverDnDpotri,                                                                         \
      (cusolverDnHandle_t h, cublasFillMode_t uplo, int n, double *A, int lda, double *work,    \
       int lwork, int *info),                                                                   \
      (h, uplo, n, A, lda, work, lwork, info))                                                  \
    X(cusolverDnDgetrf_bufferSize,                                                              \
      (cusolverDnHandle_t h, int m, int n, double *A, int lda, int *lwork),                     \
      (h, m, n, A, lda, lwork))                                                                 \
    X(cusolverDnDgetrf,                                                                         \
      (cusolverDnHandle_t h, int m, int n, double *A, int lda, double *work, int *ipiv,         \
       int *info),                                                                              \
      (h, m, n, A, lda, work, ipiv, info))                                                      \
    X(cusolverDnDgetrs,                                                                         \
      (cusolverDnHandle_t h, cublasOperation_t trans, int n, int nrhs, const double *A, int lda, \
       const int *ipiv, double *B, int ldb, int *info),                                         \
      (h, trans, n, nrhs, A, lda, ipiv, B, ldb, info))

/* The table of resolved pointers, filled once. */
#define DECLARE_PTR(name, params, args) static void *PTR(name);
CUBLAS_FUNCS(DECLARE_PTR)
CUSOLVER_FUNCS(DECLARE_PTR)

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_error[256]; /* empty when both libraries and every symbol were found */

/* name in the directory of the linked libcudart, or NULL. */
static void *open_beside_runtime(const char *name)
{
    Dl_info info;
    if (!dladdr((void *)cudaMalloc, &info) || !info.dli_fname)
        return NULL;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash)
        return NULL;
    char path[1024];
    int n = snprintf(path, sizeof path, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, name);
    return n > 0 && (size_t)n < sizeof path ? dlopen(path, RTLD_NOW | RTLD_LOCAL) : NULL;
}

static void *open_lib(const char *name)
{
    void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    char first[200];
    snprintf(first, sizeof first, "%s", h ? "" : dlerror());
    if (!h)
        h = open_beside_runtime(name);
    if (!h && !load_error[0])
        snprintf(load_error, sizeof load_error, "cannot load %s: %s", name, first);
    return h;
}

static void *find(void *lib, const char *sym)
{
    void *p = lib ? dlsym(lib, sym) : NULL;
    if (lib && !p && !load_error[0])
        snprintf(load_error, sizeof load_error, "%s not found in the CUDA libraries", sym);
    return p;
}

static void load_libs(void)
{
    void *blas = open_lib("libcublas.so." XSTR(CUBLAS_VER_MAJOR));
    void *solver = open_lib("libcusolver.so." XSTR(CUSOLVER_VER_MAJOR));
#define RESOLVE_BLAS(name, params, args) PTR(name) = find(blas, XSTR(name));
#define RESOLVE_SOLVER(name, params, args) PTR(name) = find(solver, XSTR(name));
    CUBLAS_FUNCS(RESOLVE_BLAS)
    CUSOLVER_FUNCS(RESOLVE_SOLVER)
}

const char *qsur_gpu_libs_error(void)
{
    pthread_once(&load_once, load_libs);
    return load_error[0] ? load_error : NULL;
}

#define FORWARD_BLAS(name_, params_, args_) FORWARD_ONE(cublasStatus_t, CUBLAS_STATUS_NOT_INITIALIZED, name_, params_, args_)
#define FORWARD_SOLVER(name_, params_, args_) FORWARD_ONE(cusolverStatus_t, CUSOLVER_STATUS_NOT_INITIALIZED, name_, params_, args_)
#define FORWARD_ONE(status_t, fail, name, params, args)                                         \
    status_t name params                                                                        \
    {                                                                                           \
        pthread_once(&load_once, load_libs);                                                    \
        if (!PTR(name))                                                                         \
            return fail;                                                                        \
        return ((status_t(*) params)PTR(name)) args;                                            \
    }
CUBLAS_FUNCS(FORWARD_BLAS)
CUSOLVER_FUNCS(FORWARD_SOLVER)

/* The one call whose failure cannot be a status: a message for any status,
 * without needing the library (its strings are the enum names). */
const char *cublasGetStatusString(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return qsur_gpu_libs_error() ? qsur_gpu_libs_error() : "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    }
    return "unknown cuBLAS status";
}
