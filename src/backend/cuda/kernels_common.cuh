/* Private to the CUDA backend's .cu files: the device helpers every kernel
 * file shares (block reductions, the fake-quant grid map and its fit, clip
 * search included), so the forward kernels (kernels.cu) and the training
 * kernels (train_kernels.cu) fit the same map bit for bit. Each including
 * file gets its own copy (anonymous namespace). */
#ifndef QSUR_CUDA_KERNELS_COMMON_CUH
#define QSUR_CUDA_KERNELS_COMMON_CUH

#include <cfloat>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include "kernels.h"
#include "../../quant_round.h"

namespace {

constexpr int kThreads = 256;

template <typename T> __device__ inline T from_f(float v);
template <> __device__ inline float from_f<float>(float v) { return v; }
template <> __device__ inline __nv_bfloat16 from_f<__nv_bfloat16>(float v)
{
    return __float2bfloat16_rn(v);
}

__device__ inline float to_f(float v) { return v; }
__device__ inline float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }

inline unsigned grid_for(int64_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

/* Block-wide reductions over kThreads threads (shared scratch of 32 slots). */
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T *sh, T identity)
{
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    __syncthreads(); /* sh may still be read by a previous reduction */
    if (lane == 0)
        sh[warp] = v;
    __syncthreads();
    int nw = (blockDim.x + 31) >> 5;
    v = threadIdx.x < nw ? sh[threadIdx.x] : identity;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1)
            v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    if (threadIdx.x == 0)
        sh[0] = v;
    __syncthreads();
    return sh[0];
}

struct Sum {
    template <typename T> __device__ T operator()(T a, T b) const { return a + b; }
};
struct Max {
    __device__ float operator()(float a, float b) const { return a > b ? a : b; }
};
struct Min {
    __device__ float operator()(float a, float b) const { return a < b ? a : b; }
};

/* ---- fake quantization (src/quant.c's map_for / quant_one) --------------- */

typedef qsur_qmap QMap;

/* The GPU kernels have no full symmetric grid (qsur_gpu_quant_supported refuses it). */
__device__ QMap map_for(const qsur_cu_quant &q, float fmn, float fmx, double ratio)
{
    return qsur_qmap_from_range(q.bits, q.symmetric, 0, fmn, fmx, ratio);
}

__device__ inline float quant_code(float x, float inv, float zp, float lo, float hi)
{
    float v = __fadd_rn(__fmul_rn(x, inv), zp);
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return round_half_away(v);
}

__device__ inline float quant_one(float x, const QMap &m)
{
    return __fmul_rn(__fsub_rn(quant_code(x, m.inv, m.zp, m.lo, m.hi), m.zp), m.scale);
}

/* Squared error of the map over a span, summed in double (block-wide). */
__device__ double span_sse(const float *xs, int64_t span, const QMap &m, double *sh)
{
    double e = 0;
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
        double d = (double)xs[i] - (double)quant_one(xs[i], m);
        e += d * d;
    }
    return block_reduce(e, Sum(), sh, 0.0);
}

/* The map of the span xs (block-wide; every thread gets it), clip search
 * included, as src/quant.c's fit_span; *bad != 0 when the span holds NaN/Inf. */
__device__ QMap fit_span(const float *xs, int64_t span, const qsur_cu_quant &q, float *bad_out)
{
    __shared__ float sh[32];
    float mn = xs[0], mx = xs[0], bad = 0.0f;
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
        float v = xs[i];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
        bad += v * 0.0f;
    }
    mn = block_reduce(mn, Min(), sh, FLT_MAX);
    mx = block_reduce(mx, Max(), sh, -FLT_MAX);
    bad = block_reduce(bad, Sum(), sh, 0.0f);
    QMap m = map_for(q, mn, mx, q.clip_search ? 1.0 : q.clip);
    if (q.clip_search && m.scale > 0.0f && bad == 0.0f) {
        /* src/quant.c's search: strictly smaller error wins, so ties keep the larger ratio */
        __shared__ double shd[32];
        double best = span_sse(xs, span, m, shd);
        for (int k = 1; k < 51; k++) {
            QMap c = map_for(q, mn, mx, 1.0 - 0.01 * k);
            double e = span_sse(xs, span, c, shd);
            if (e < best)
                best = e, m = c;
        }
    }
    *bad_out = bad;
    return m;
}

} // namespace

#endif
