/* Whether a GPU is usable, and the bf16 GEMM peak benchmarks compare against. */
#include <stdio.h>
#include <string.h>
#include "gpu_util.h"
#include "kernels.h"
#include "qsur/backend.h"

void qsur_gpu_probe(qsur_gpu_info *info)
{
    memset(info, 0, sizeof *info);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        (void)cudaGetLastError();
        snprintf(info->why, sizeof info->why, "%s",
                 e != cudaSuccess ? cudaGetErrorString(e) : "no CUDA device");
        return;
    }
    struct cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, 0) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(info->why, sizeof info->why, "cannot read device 0's properties");
        return;
    }
    info->count = n;
    snprintf(info->name, sizeof info->name, "%.127s", p.name);
    info->mem_gib = (double)p.totalGlobalMem / (double)(1 << 30);
}

int qsur_gpu_bf16_peak(int n, int reps, double *tflops, qsur_error *err)
{
    *tflops = 0;
    qsur_gpu_ctx c;
    int rc = qsur_gpu_ctx_init(&c, err);
    if (rc)
        return rc;
    void *A = NULL, *B = NULL, *C = NULL;
    size_t nn = (size_t)n * n;
    cudaEvent_t e0 = NULL, e1 = NULL;
    if (!(rc = qsur_gpu_malloc(&A, nn * 2, "peak", err)) && !(rc = qsur_gpu_malloc(&B, nn * 2, "peak", err)))
        rc = qsur_gpu_malloc(&C, nn * 4, "peak", err);
    if (!rc) {
        /* random data: zeros run faster than real operands on this hardware */
        qsur_cu_random(A, 1, (int64_t)nn, 1.0f, 0, 11, c.stream);
        qsur_cu_random(B, 1, (int64_t)nn, 1.0f, 0, 12, c.stream);
        rc = qsur_gpu_check(cudaEventCreate(&e0), "event", err);
    }
    if (!rc)
        rc = qsur_gpu_check(cudaEventCreate(&e1), "event", err);
    for (int i = 0; i < 3 && !rc; i++)
        rc = qsur_gpu_gemm(&c, 1, 1, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, 0, n, err);
    if (!rc)
        rc = qsur_gpu_check(cudaEventRecord(e0, c.stream), "event", err);
    for (int i = 0; i < reps && !rc; i++)
        rc = qsur_gpu_gemm(&c, 1, 1, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, 0, n, err);
    if (!rc)
        rc = qsur_gpu_check(cudaEventRecord(e1, c.stream), "event", err);
    float ms = 0;
    if (!rc)
        rc = qsur_gpu_check(cudaEventSynchronize(e1), "event", err);
    if (!rc)
        rc = qsur_gpu_check(cudaEventElapsedTime(&ms, e0, e1), "event", err);
    if (!rc)
        *tflops = 2.0 * n * (double)n * n * reps / (ms * 1e-3) / 1e12;
    if (e0)
        cudaEventDestroy(e0);
    if (e1)
        cudaEventDestroy(e1);
    cudaFree(A), cudaFree(B), cudaFree(C);
    qsur_gpu_ctx_free(&c);
    return rc;
}
