/* OSTQuant's fusion scalings and chain-rule sums on the device
 * (ostq_kernels.h). Products are written with __fmul_rn so nvcc cannot fuse
 * them; the sums the CPU does in double are done in double. */
#include <cstdint>
#include <cuda_runtime.h>
#include "ostq_kernels.h"
#include "kernels_common.cuh"

namespace {

__global__ void scale_rc_kernel(float *w, int64_t rows, int64_t cols, const float *row, const float *col)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= rows * cols)
        return;
    int64_t r = i / cols, c = i % cols;
    float v = w[i];
    if (col)
        v = __fmul_rn(v, col[c]);
    if (row)
        v = __fmul_rn(v, row[r]);
    w[i] = v;
}

/* One block per row. */
__global__ void row_dots_kernel(double *out, const float *g, const float *w, int64_t cols)
{
    __shared__ double sh[32];
    const int64_t o = (int64_t)blockIdx.x * cols;
    double s = 0;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x)
        s += (double)g[o + j] * (double)w[o + j];
    s = block_reduce(s, Sum(), sh, 0.0);
    if (threadIdx.x == 0)
        out[blockIdx.x] = s;
}

/* One thread per column, the rows in order (coalesced across the threads). */
__global__ void col_dots_kernel(double *out, const float *g, const float *w, int64_t rows, int64_t cols)
{
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols)
        return;
    double s = 0;
    for (int64_t i = 0; i < rows; i++)
        s += (double)g[i * cols + j] * (double)w[i * cols + j];
    out[j] += s;
}

} // namespace

extern "C" {

void qsur_cu_scale_rc(float *w, int64_t rows, int64_t cols, const float *row, const float *col,
                      qsur_cu_stream st)
{
    if (rows * cols > 0 && (row || col))
        scale_rc_kernel<<<grid_for(rows * cols), kThreads, 0, st>>>(w, rows, cols, row, col);
}

void qsur_cu_ostq_row_dots(double *out, const float *g, const float *w, int64_t rows, int64_t cols,
                      qsur_cu_stream st)
{
    if (rows > 0)
        row_dots_kernel<<<(unsigned)rows, kThreads, 0, st>>>(out, g, w, cols);
}

void qsur_cu_ostq_col_dots(double *out, const float *g, const float *w, int64_t rows, int64_t cols,
                      qsur_cu_stream st)
{
    if (cols > 0)
        col_dots_kernel<<<grid_for(cols), kThreads, 0, st>>>(out, g, w, rows, cols);
}

} // extern "C"
