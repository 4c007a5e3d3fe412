/* Private to the CUDA backend: GPTQ on device-resident data, shared by the
 * one-linear entry (qsur_gpu_gptq) and the whole-model pass (gpu_calib.c). */
#ifndef QSUR_CUDA_GPU_GPTQ_H
#define QSUR_CUDA_GPU_GPTQ_H

#include <cusolverDn.h>
#include "gpu_util.h"
#include "qsur/gptq.h"
#include "qsur/quant.h"

typedef struct {
    qsur_gpu_ctx *ctx;
    cusolverDnHandle_t sol;
} qsur_gpu_solver;

int qsur_gpu_solver_init(qsur_gpu_solver *s, qsur_gpu_ctx *ctx, qsur_error *err);
void qsur_gpu_solver_free(qsur_gpu_solver *s);

/* GPTQ of W (device fp32 row-major m x n; dead columns are zeroed in place)
 * with H (device n x n double X^T X; destroyed: damped, then U). Q (device
 * fp32 row-major m x n) receives the dequantized weight. No act order, no
 * clip search (the caller checks). */
int qsur_gpu_gptq_run(qsur_gpu_solver *s, float *W, int64_t m, int64_t n, double *H,
                      const qsur_quant_spec *spec, const qsur_gptq_opts *o, float *Q,
                      qsur_error *err);

/* sqrt(tr((W-Q) H (W-Q)^T) / tr(W H W^T)) = ||X W^T - X Q^T|| / ||X W^T|| for
 * H = X^T X (device); Q NULL: W itself (returns 1). */
int qsur_gpu_output_error(qsur_gpu_ctx *c, const float *W, const float *Q, int64_t m, int64_t n,
                          const double *H, double *out, qsur_error *err);

/* H (device n x n double) += X^T X of X (device fp32 rows x n), through the
 * double scratch Xd (rows x n); beta 0 on the first call sets H. */
int qsur_gpu_gram_add(qsur_gpu_ctx *c, const float *X, int64_t rows, int64_t n, double *Xd,
                      double *H, int first, qsur_error *err);

#endif
