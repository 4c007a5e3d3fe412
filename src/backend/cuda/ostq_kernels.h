/* Private to the CUDA backend: the small kernels of OSTQuant's transform side
 * on the GPU (gpu_ostq.c): the scalings of the fusion and the per-row and
 * per-column sums of dW * W its chain rule needs for the scales' gradients.
 * Row-major fp32 matrices, all on `stream`, nothing returned. */
#ifndef QSUR_CUDA_OSTQ_KERNELS_H
#define QSUR_CUDA_OSTQ_KERNELS_H

#include <stdint.h>
#include "kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* w[i][j] = (w[i][j] * col[j]) * row[i] (rows x cols; col or row NULL: 1). */
void qsur_cu_scale_rc(float *w, int64_t rows, int64_t cols, const float *row, const float *col,
                      qsur_cu_stream st);
/* out[i] = sum_j g[i][j] w[i][j] in double (rows x cols). */
void qsur_cu_ostq_row_dots(double *out, const float *g, const float *w, int64_t rows, int64_t cols,
                      qsur_cu_stream st);
/* out[j] += sum_i g[i][j] w[i][j] in double, rows in order (deterministic). */
void qsur_cu_ostq_col_dots(double *out, const float *g, const float *w, int64_t rows, int64_t cols,
                      qsur_cu_stream st);

#ifdef __cplusplus
}
#endif

#endif
