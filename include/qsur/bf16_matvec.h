/* Products of a few float32 rows with a bf16 matrix, straight from the
 * stored bf16 weights: what a decoding step (one token per sequence) needs,
 * where widening the whole linear to float32 first would cost more than the
 * product itself (it reads 2 bytes per weight and writes 4, then the sgemv
 * reads those 4 again).
 *
 *     y[n][r] = sum_c x[n][c] * W[row(r)][c]     n < N, r0 <= r < r1
 *
 * W is rows x cols bf16 (row-major; row(r) = r, or HF's rotate-half order of
 * q/k heads when rope_heads > 0, as qsur/llama_store.h). Each weight is
 * widened exactly (bf16 is the top half of a float32) and multiplied in
 * float32, so the result is the float32 product up to the order of the
 * additions. The activations are not rounded to bf16: AVX512-BF16's dot
 * product instruction would do that, so the kernel widens instead (the step
 * is bound by reading the weights, not by the arithmetic). An AVX-512F
 * kernel is picked at run time where the CPU has it; a plain C one
 * elsewhere. */
#ifndef QSUR_BF16_MATVEC_H
#define QSUR_BF16_MATVEC_H

#include <stdint.h>

/* N x cols inputs x (row stride cols), outputs y (row stride ldy). Splits the
 * rows over `threads` threads (1: the caller's thread only). */
void qsur_bf16_matvec(const float *x, int N, int64_t cols, const void *W, int64_t rows,
                      int rope_heads, float *y, int64_t ldy, int threads);

/* The same on rows r0..r1-1 with the plain C kernel / the dispatched one
 * (for tests and the benchmark). */
void qsur_bf16_matvec_plain(const float *x, int N, int64_t cols, const void *W, int64_t rows,
                            int rope_heads, int64_t r0, int64_t r1, float *y, int64_t ldy);
void qsur_bf16_matvec_rows(const float *x, int N, int64_t cols, const void *W, int64_t rows,
                           int rope_heads, int64_t r0, int64_t r1, float *y, int64_t ldy);
/* 1 when the AVX-512 kernel is the one in use. */
int qsur_bf16_matvec_avx512(void);

#endif
