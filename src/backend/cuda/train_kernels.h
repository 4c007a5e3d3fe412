/* Private to the CUDA backend: launchers of the training kernels
 * (train_kernels.cu), the backward pass of src/llama/llama_backward.c and
 * src/quant_ste.c on device pointers. All fp32, all on `stream`, nothing
 * returned (errors surface at the next synchronisation). */
#ifndef QSUR_CUDA_TRAIN_KERNELS_H
#define QSUR_CUDA_TRAIN_KERNELS_H

#include <stdint.h>
#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dx = STE backward of Q(x) (qsur_fake_quant_backward: spans of the
 * quantizer's granularity, the same map and clip search as the forward; the
 * scale's gradient to its extreme element unless ste_const on an asymmetric
 * grid). dx may equal dq. bits >= 16: dx = dq. */
void qsur_cu_quant_backward(float *dx, const float *x, const float *dq, int64_t rows, int64_t cols,
                            const qsur_cu_quant *q, int ste_const, qsur_cu_stream st);
/* RMSNorm backward per row (qsur_llama_rmsnorm_backward): dx = r g dy - x r^3/n
 * sum_j x_j g_j dy_j; dgrow[r][j] = dy x r (the caller sums the rows). */
void qsur_cu_rmsnorm_backward(float *dx, float *dgrow, const float *x, const float *g,
                              const float *dy, int64_t rows, int n, double eps, qsur_cu_stream st);
/* From gu [N][2h] (w1 | w3 outputs) and dout [N][h]: dgu [N][2h] = (d w1-out | d w3-out). */
void qsur_cu_swiglu_backward(float *dgu, const float *gu, const float *dout, int64_t N, int h,
                             qsur_cu_stream st);
/* Causal softmax backward in place: rows of dP (R x S blocks, row t's keys
 * 0..t valid) become dS = P (dP - sum_j dP_j P_j), 0 above the diagonal. */
void qsur_cu_softmax_backward(float *dp, const float *p, int64_t rows, int T, qsur_cu_stream st);
/* RoPE in place on x [N][width] (heads of hs side by side), row r at position
 * r % T, rotating by sign * angle (sign -1: the transpose, for the backward). */
void qsur_cu_rope(float *x, int64_t N, int T, int width, int hs, const float *cos_t,
                  const float *sin_t, float sign, qsur_cu_stream st);
/* x (fp32) from q, k, v: the inverse of split: qkv [N][dim + 2kv] -> q, k, v
 * fp32 without RoPE (the caller ropes in place). */
void qsur_cu_split(float *q, float *k, float *v, const float *qkv, int64_t N, int dim, int kv,
                   qsur_cu_stream st);
/* y += x (n values). */
void qsur_cu_add(float *y, const float *x, int64_t n, qsur_cu_stream st);
/* dE[tok[r]][:] += dx[r][:] (rows r of dim values, ids < vocab), in row
 * order: deterministic. */
void qsur_cu_embed_backward(float *dE, const float *dx, const int *tok, int64_t rows, int dim, int vocab,
                            qsur_cu_stream st);
/* KL-Top per token row (qsur_ostquant_loss_eval's, qsur/ostquant.h): K = the
 * top-k of the teacher row zfp (ties: the lower index; all V when k >= V),
 * kl[row] = KL(softmax(zfp[K]) || softmax(z[K])), dz = scale (q - p) on K and
 * 0 elsewhere. -1 (nothing launched) when the vocabulary's bitmask and the k
 * indices exceed 48 KiB of shared memory. */
int qsur_cu_kltop(float *dz, double *kl, const float *z, const float *zfp, int64_t rows, int V, int k,
                  double scale, qsur_cu_stream st);
/* x[i] = v for n values. */
void qsur_cu_fill(float *x, float v, int64_t n, qsur_cu_stream st);

#ifdef __cplusplus
}
#endif

#endif
