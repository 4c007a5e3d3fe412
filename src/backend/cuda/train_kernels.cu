/* The training kernels of the CUDA backend (train_kernels.h): the backward
 * pass of the Llama blocks and the straight-through estimator of fake
 * quantization, each the CPU's rule (src/llama/llama_backward.c,
 * src/quant_ste.c) on device data. Sums the CPU does in double are done in
 * double here. */
#include <cfloat>
#include <cstdint>
#include <cuda_runtime.h>
#include "train_kernels.h"
#include "kernels_common.cuh"

namespace {

struct MinI {
    __device__ long long operator()(long long a, long long b) const { return a < b ? a : b; }
};

/* The first index i of the block's span with pred(xs[i]) (span when none). */
template <typename Pred>
__device__ int64_t first_index(const float *xs, int64_t span, Pred pred, long long *sh)
{
    long long best = span;
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x)
        if (pred(xs[i]) && i < best)
            best = i;
    return block_reduce(best, MinI(), sh, (long long)span);
}

/* One block per span (quant_ste.c's span_backward). */
__global__ void quant_backward_kernel(float *dx, const float *x, const float *dq, int64_t span,
                                      qsur_cu_quant q, int ste_const)
{
    __shared__ double shd[32];
    __shared__ float shf[32];
    __shared__ long long shi[32];
    const int64_t o = (int64_t)blockIdx.x * span;
    const float *xs = x + o, *g = dq + o;
    float *d = dx + o;
    float bad;
    QMap m = fit_span(xs, span, q, &bad);
    if (bad != 0.0f || m.scale == 0.0f) { /* all-zero span: no gradient (NaN: the caller's loss check) */
        for (int64_t i = threadIdx.x; i < span; i += blockDim.x)
            d[i] = bad != 0.0f ? __int_as_float(0x7fc00000) : 0.0f;
        return;
    }
    if (q.symmetric) {
        double a = 0, b = 0;
        float amax = 0.0f;
        for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
            float xv = xs[i], gv = g[i], u = __fmul_rn(xv, m.inv);
            float v = u < m.lo ? m.lo : u;
            v = v > m.hi ? m.hi : v;
            float gin = v == u ? gv : 0.0f, ax = fabsf(xv);
            amax = ax > amax ? ax : amax;
            a += (double)gv * (double)round_half_away(v);
            b += (double)gin * (double)xv;
            d[i] = gin;
        }
        a = block_reduce(a, Sum(), shd, 0.0);
        b = block_reduce(b, Sum(), shd, 0.0);
        amax = block_reduce(amax, Max(), shf, 0.0f);
        int64_t arg = first_index(xs, span, [amax](float v) { return fabsf(v) == amax; }, shi);
        if (threadIdx.x == 0 && arg < span && amax > 0.0f && xs[arg] != 0.0f) {
            double ds = a - b / (double)m.scale;
            d[arg] += (float)(ds * (double)m.scale / (double)xs[arg]);
        }
        return;
    }
    double ds = 0;
    float mn = FLT_MAX, mx = -FLT_MAX;
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
        float xv = xs[i], gv = g[i], u = __fadd_rn(__fmul_rn(xv, m.inv), m.zp);
        float v = u < m.lo ? m.lo : u;
        v = v > m.hi ? m.hi : v;
        float c = round_half_away(v);
        int out = v != u;
        ds += (double)gv * ((double)c - (out ? (double)m.zp : (double)u));
        d[i] = out ? 0.0f : gv;
        mn = xv < mn ? xv : mn;
        mx = xv > mx ? xv : mx;
    }
    ds = block_reduce(ds, Sum(), shd, 0.0);
    mn = block_reduce(mn, Min(), shf, FLT_MAX);
    mx = block_reduce(mx, Max(), shf, -FLT_MAX);
    int64_t imn = first_index(xs, span, [mn](float v) { return v == mn; }, shi);
    int64_t imx = first_index(xs, span, [mx](float v) { return v == mx; }, shi);
    double lo = fmin((double)mn, 0.0), hi = fmax((double)mx, 0.0), w = hi - lo;
    if (threadIdx.x == 0 && w > 0 && !ste_const) {
        if (mx > 0.0f)
            d[imx] += (float)(ds * (double)m.scale / w);
        if (mn < 0.0f)
            d[imn] -= (float)(ds * (double)m.scale / w);
    }
}

__global__ void rmsnorm_backward_kernel(float *dx, float *dgrow, const float *x, const float *g,
                                        const float *dy, int n, double eps)
{
    __shared__ double sh[32];
    const int64_t o = (int64_t)blockIdx.x * n;
    const float *xr = x + o, *dyr = dy + o;
    double ss = 0, dot = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        ss += (double)xr[j] * xr[j];
        dot += (double)xr[j] * g[j] * dyr[j];
    }
    ss = block_reduce(ss, Sum(), sh, 0.0);
    dot = block_reduce(dot, Sum(), sh, 0.0);
    double inv = 1.0 / sqrt(ss / (double)n + eps);
    double c = dot * inv * inv * inv / (double)n;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        dx[o + j] = (float)(inv * g[j] * dyr[j] - c * xr[j]);
        dgrow[o + j] = (float)(__fmul_rn(dyr[j], xr[j]) * inv);
    }
}

__global__ void swiglu_backward_kernel(float *dgu, const float *gu, const float *dout, int64_t N, int h)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * h)
        return;
    int64_t r = i / h, j = i % h;
    float a = gu[r * 2 * h + j], u = gu[r * 2 * h + h + j], g = dout[i];
    float sg = 1.0f / (1.0f + expf(-a));
    float silu = a * sg, dsilu = sg * (1.0f + a * (1.0f - sg));
    dgu[r * 2 * h + j] = g * u * dsilu;
    dgu[r * 2 * h + h + j] = g * silu;
}

__global__ void softmax_backward_kernel(float *dp, const float *p, int T)
{
    __shared__ double sh[32];
    int64_t row = blockIdx.x;
    int t = (int)(row % T);
    float *dr = dp + row * T;
    const float *pr = p + row * T;
    double dot = 0;
    for (int j = threadIdx.x; j <= t; j += blockDim.x)
        dot += (double)pr[j] * dr[j];
    dot = block_reduce(dot, Sum(), sh, 0.0);
    float fd = (float)dot;
    for (int j = threadIdx.x; j < T; j += blockDim.x)
        dr[j] = j <= t ? pr[j] * (dr[j] - fd) : 0.0f;
}

__global__ void rope_kernel(float *x, int T, int width, int hs, const float *cos_t,
                            const float *sin_t, float sign)
{
    int64_t r = blockIdx.x;
    int t = (int)(r % T), half = hs / 2;
    float *row = x + r * width;
    const float *c = cos_t + (int64_t)t * half, *s = sin_t + (int64_t)t * half;
    for (int p = threadIdx.x; p < width / 2; p += blockDim.x) {
        int col = 2 * p, i = (col % hs) / 2;
        float a = row[col], b = row[col + 1], sn = sign * s[i];
        row[col] = __fsub_rn(__fmul_rn(a, c[i]), __fmul_rn(b, sn));
        row[col + 1] = __fadd_rn(__fmul_rn(a, sn), __fmul_rn(b, c[i]));
    }
}

__global__ void split_kernel(float *q, float *k, float *v, const float *qkv, int dim, int kv)
{
    int64_t r = blockIdx.x;
    int ld = dim + 2 * kv;
    const float *src = qkv + r * ld;
    for (int j = threadIdx.x; j < ld; j += blockDim.x) {
        float a = src[j];
        if (j < dim)
            q[r * dim + j] = a;
        else if (j < dim + kv)
            k[r * kv + j - dim] = a;
        else
            v[r * kv + j - dim - kv] = a;
    }
}

__global__ void add_kernel(float *y, const float *x, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] += x[i];
}

/* One block per vocabulary row v: dE[v] += the dx rows of the tokens equal to
 * v, in row order (deterministic, the CPU's order; no atomics). */
__global__ void embed_backward_kernel(float *dE, const float *dx, const int *tok, int64_t rows, int dim)
{
    const int v = blockIdx.x;
    float *e = dE + (int64_t)v * dim;
    for (int64_t r = 0; r < rows; r++)
        if (tok[r] == v)
            for (int j = threadIdx.x; j < dim; j += blockDim.x)
                e[j] += dx[r * dim + j];
}

__global__ void fill_kernel(float *x, float v, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = v;
}


/* (value, index) pairs: the larger value wins, the lower index on ties. */
__device__ inline void best_of(float &v, int &i, float v2, int i2)
{
    if (v2 > v || (v2 == v && i2 < i))
        v = v2, i = i2;
}

/* One block per token row: K = the top-k indices of the teacher row fr (all
 * of them when k >= V), p = softmax(fr[K]), q = softmax(z[K]) (renormalised
 * over K, exponentials and sums in double), kl[row] = sum_K p log(p/q),
 * dz = (q - p) * scale on K, 0 elsewhere. Dynamic shared memory: the taken
 * bitmask (ceil(V/32) words) then k indices. */
__global__ void kltop_kernel(float *dz, double *kl, const float *z, const float *zfp, int V, int k,
                             double scale)
{
    extern __shared__ unsigned smem[];
    unsigned *taken = smem;
    int words = (V + 31) / 32, full = k >= V;
    int *idx = (int *)(smem + words);
    __shared__ float shv[32];
    __shared__ int shi[32];
    __shared__ double shd[32];
    const int64_t row = blockIdx.x;
    const float *zr = z + row * V, *fr = zfp + row * V;
    float *d = dz + row * V;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        d[j] = 0.0f;
    for (int w = threadIdx.x; w < words; w += blockDim.x)
        taken[w] = 0u;
    __syncthreads();
    int K = full ? V : k;
    for (int s = 0; s < K && !full; s++) {
        float bv = -FLT_MAX;
        int bi = V;
        for (int j = threadIdx.x; j < V; j += blockDim.x)
            if (!(taken[j >> 5] & (1u << (j & 31))))
                best_of(bv, bi, fr[j], j);
        for (int o = 16; o > 0; o >>= 1)
            best_of(bv, bi, __shfl_xor_sync(0xffffffffu, bv, o), __shfl_xor_sync(0xffffffffu, bi, o));
        int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        if (lane == 0)
            shv[warp] = bv, shi[warp] = bi;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < (int)(blockDim.x >> 5); w++)
                best_of(bv, bi, shv[w], shi[w]);
            idx[s] = bi;
            taken[bi >> 5] |= 1u << (bi & 31);
        }
        __syncthreads();
    }
    /* maxima over K: the teacher's is its first pick */
    float mq = -FLT_MAX, mp = -FLT_MAX;
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
        int c = full ? j : idx[j];
        mq = zr[c] > mq ? zr[c] : mq;
        mp = fr[c] > mp ? fr[c] : mp;
    }
    mq = block_reduce(mq, Max(), shv, -FLT_MAX);
    mp = block_reduce(mp, Max(), shv, -FLT_MAX);
    double sp = 0, sq = 0;
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
        int c = full ? j : idx[j];
        sp += exp((double)fr[c] - mp);
        sq += exp((double)zr[c] - mq);
    }
    sp = block_reduce(sp, Sum(), shd, 0.0);
    sq = block_reduce(sq, Sum(), shd, 0.0);
    double klt = 0;
    for (int j = threadIdx.x; j < K; j += blockDim.x) {
        int c = full ? j : idx[j];
        double p = exp((double)fr[c] - mp) / sp, q = exp((double)zr[c] - mq) / sq;
        klt += p > 0 ? p * (log(p) - log(q)) : 0.0;
        d[c] = (float)((q - p) * scale);
    }
    klt = block_reduce(klt, Sum(), shd, 0.0);
    if (threadIdx.x == 0)
        kl[row] = klt;
}

} // namespace

extern "C" {

void qsur_cu_quant_backward(float *dx, const float *x, const float *dq, int64_t rows, int64_t cols,
                            const qsur_cu_quant *q, int ste_const, qsur_cu_stream st)
{
    int64_t n = rows * cols;
    if (q->bits >= 16) {
        if (dx != dq)
            cudaMemcpyAsync(dx, dq, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, st);
        return;
    }
    int64_t span = q->gran == 0 ? n : q->gran == 1 ? cols : q->group;
    quant_backward_kernel<<<(unsigned)(n / span), kThreads, 0, st>>>(dx, x, dq, span, *q, ste_const);
}

void qsur_cu_rmsnorm_backward(float *dx, float *dgrow, const float *x, const float *g,
                              const float *dy, int64_t rows, int n, double eps, qsur_cu_stream st)
{
    rmsnorm_backward_kernel<<<(unsigned)rows, kThreads, 0, st>>>(dx, dgrow, x, g, dy, n, eps);
}

void qsur_cu_swiglu_backward(float *dgu, const float *gu, const float *dout, int64_t N, int h,
                             qsur_cu_stream st)
{
    swiglu_backward_kernel<<<grid_for(N * h), kThreads, 0, st>>>(dgu, gu, dout, N, h);
}

void qsur_cu_softmax_backward(float *dp, const float *p, int64_t rows, int T, qsur_cu_stream st)
{
    softmax_backward_kernel<<<(unsigned)rows, kThreads, 0, st>>>(dp, p, T);
}

void qsur_cu_rope(float *x, int64_t N, int T, int width, int hs, const float *cos_t,
                  const float *sin_t, float sign, qsur_cu_stream st)
{
    rope_kernel<<<(unsigned)N, kThreads, 0, st>>>(x, T, width, hs, cos_t, sin_t, sign);
}

void qsur_cu_split(float *q, float *k, float *v, const float *qkv, int64_t N, int dim, int kv,
                   qsur_cu_stream st)
{
    split_kernel<<<(unsigned)N, kThreads, 0, st>>>(q, k, v, qkv, dim, kv);
}

void qsur_cu_add(float *y, const float *x, int64_t n, qsur_cu_stream st)
{
    add_kernel<<<grid_for(n), kThreads, 0, st>>>(y, x, n);
}

void qsur_cu_embed_backward(float *dE, const float *dx, const int *tok, int64_t rows, int dim, int vocab,
                            qsur_cu_stream st)
{
    embed_backward_kernel<<<(unsigned)vocab, kThreads, 0, st>>>(dE, dx, tok, rows, dim);
}

void qsur_cu_fill(float *x, float v, int64_t n, qsur_cu_stream st)
{
    fill_kernel<<<grid_for(n), kThreads, 0, st>>>(x, v, n);
}

int qsur_cu_kltop(float *dz, double *kl, const float *z, const float *zfp, int64_t rows, int V, int k,
                  double scale, qsur_cu_stream st)
{
    int K = k < V ? k : V;
    size_t shared = (size_t)((V + 31) / 32) * 4 + (size_t)(k < V ? K : 0) * 4;
    if (shared > 48 * 1024)
        return -1;
    kltop_kernel<<<(unsigned)rows, kThreads, shared, st>>>(dz, kl, z, zfp, V, k, scale);
    return 0;
}

} // extern "C"
