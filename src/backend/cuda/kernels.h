/* Private to the CUDA backend: launchers of the small kernels (kernels.cu).
 * Plain C declarations on device pointers; every launcher runs on `stream`
 * and returns nothing (errors surface at the next synchronisation).
 * `bf16` selects the element type of the buffers marked "ct" (the GEMM
 * operand type): 0 float, 1 __nv_bfloat16. */
#ifndef QSUR_CUDA_KERNELS_H
#define QSUR_CUDA_KERNELS_H

#include <stdint.h>
#include "../../quant_map.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct CUstream_st *qsur_cu_stream;

/* The fake quantizer of one spec (bits >= 16: off), fields as qsur_quant_spec. */
typedef struct {
    int bits, symmetric, gran, group;
    double clip;
    int clip_search; /* per span: the ratio 1.00 .. 0.50 with the least squared error */
} qsur_cu_quant;

/* x[r][:] = emb[tok[r]][:] (fp32). */
void qsur_cu_embed(float *x, const float *emb, const int *tok, int64_t rows, int dim,
                   qsur_cu_stream st);
/* out (ct) = x / sqrt(mean(x^2) + eps) * g per row (sum of squares in double). */
void qsur_cu_rmsnorm(void *out, int bf16, const float *x, const float *g, int64_t rows, int n,
                     double eps, qsur_cu_stream st);
/* out (ct) = Q(x) (or x when q->bits >= 16), rows x cols fp32 in; spans as
 * qsur_fake_quant (tensor, row, group). out_f32 != NULL: fp32 output instead
 * (may equal x). */
void qsur_cu_quant_cast(void *out, int bf16, float *out_f32, const float *x, int64_t rows,
                        int64_t cols, const qsur_cu_quant *q, qsur_cu_stream st);
/* From qkv [N][ld] (q | k | v; fp32, or ct when in_ct): q [N][dim], k [N][kv],
 * v [N][kv] (ct), RoPE on q and k (adjacent pairs, in fp32), row b*T + t at
 * position t; cos/sin [T][hs/2]. */
void qsur_cu_split_rope(void *q, void *k, void *v, int bf16, const void *qkv, int in_ct, int64_t N,
                        int T, int dim, int kv, int hs, const float *cos_t, const float *sin_t,
                        qsur_cu_stream st);
/* out (ct, [N][h]) = silu(gu[:, :h]) * gu[:, h:2h]. */
void qsur_cu_swiglu(void *out, int bf16, const float *gu, int64_t N, int h, qsur_cu_stream st);
/* The same with gu and out in bf16 (the product in fp32). */
void qsur_cu_swiglu_bf16(void *out, const void *gu, int64_t N, int h, qsur_cu_stream st);
/* Causal softmax of R query rows (global positions r0 + t) against S keys, for
 * `heads` blocks of R x S fp32 scores (row stride S, block stride R*S), into
 * probs (ct, same layout; may alias scores when fp32):
 * p = exp(scale*s - max) / sum over keys 0..r0+t, 0 after. */
void qsur_cu_softmax_causal(void *probs, int bf16, const float *scores, int heads, int R, int S,
                            int r0, float scale, qsur_cu_stream st);
/* nll[b*(T-1) + p] = logsumexp(logits row b*T+p) - logits[next] in double. */
void qsur_cu_nll(double *nll, const float *logits, const int *tok, int B, int T, int V,
                 qsur_cu_stream st);
/* Element conversions for uploads: dst (ct) = src fp32 / bf16 / f16 (dtype 0/1/2). */
void qsur_cu_convert(void *dst, int bf16, const void *src, int src_dtype, int64_t n,
                     qsur_cu_stream st);
/* dst (ct) = uniform(-a, a) from a hash of (seed, index); fill with value when a == 0. */
void qsur_cu_random(void *dst, int bf16, int64_t n, float a, float value, uint64_t seed,
                    qsur_cu_stream st);
/* x (double) = f (float), n values. */
void qsur_cu_to_double(double *x, const float *f, int64_t n, qsur_cu_stream st);

/* GPTQ block: see gpu_gptq.c. W1 column-major (m x nb, ld m) double, E1 likewise;
 * U row-major n x n (upper factor). G == 0: one map per row (map_stride 1) or
 * one for the tensor (0). G > 0: with maps, static groups (maps[r * map_stride
 * + j / G], map_stride = n / G); without, each group's map is fitted at its
 * first column from the error-fed values. Writes codes-decoded values into Q
 * (row-major m x n). */
typedef qsur_qmap qsur_cu_qmap;
void qsur_cu_gptq_block(double *W1, double *E1, const double *U, int64_t n, int64_t m,
                        int64_t i1, int64_t nb, const qsur_cu_qmap *maps, int map_stride,
                        const qsur_cu_quant *q, int64_t G, float *Q, qsur_cu_stream st);

/* maps[s] = the fake-quant map of span s (span values each) of W (fp32),
 * exactly as qsur_qparams_fit (no clip search). */
void qsur_cu_fit_maps(qsur_cu_qmap *maps, const float *W, int64_t n, int64_t span,
                      const qsur_cu_quant *q, qsur_cu_stream st);
/* W[r][j] = 0 (rows x cols row-major fp32) for every dead column, H[j][j] == 0;
 * then H[j][j] = (H[j][j] == 0 ? 1 : H[j][j]) + add. */
void qsur_cu_gptq_prepare(float *W, int64_t rows, int64_t cols, double *H, double add,
                          qsur_cu_stream st);
/* out[i] = sum over j of A[i*n + j] * B[i*n + j] (rows of length n), in double;
 * then the caller sums out. A row-major. */
void qsur_cu_row_dots(double *out, const double *A, const double *B, int64_t rows, int64_t n,
                      qsur_cu_stream st);
/* d (double, rows x cols row-major) = a - b (fp32; b may be NULL: d = a). */
void qsur_cu_diff_double(double *d, const float *a, const float *b, int64_t n, qsur_cu_stream st);

#ifdef __cplusplus
}
#endif

#endif
