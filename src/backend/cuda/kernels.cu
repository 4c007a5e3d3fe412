/* The CUDA backend's small kernels (everything that is not a cuBLAS GEMM):
 * norms, RoPE, SwiGLU, fake quantization, causal softmax, the loss, GPTQ's
 * in-block column loop. Arithmetic that the CPU does in float is done here
 * with explicit _rn intrinsics where nvcc would otherwise contract a*b+c into
 * an FMA, so fake-quant codes agree with src/quant.c bit for bit. */
#include <cfloat>
#include <cstdint>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include "kernels.h" /* quant_map.h: the grid map, shared with src/quant.c */
#include "../../quant_round.h" /* its rounding, likewise */

#include "kernels_common.cuh"

namespace {

/* One block per span of `span` values. NaN/Inf propagate as NaN (the caller's
 * loss check reports them). */
template <typename T>
__global__ void quant_span_kernel(T *out, float *out_f32, const float *x, int64_t span,
                                  qsur_cu_quant q)
{
    const float *xs = x + (int64_t)blockIdx.x * span;
    float bad;
    QMap m = fit_span(xs, span, q, &bad);
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
        float v = bad != 0.0f ? __int_as_float(0x7fc00000) : quant_one(xs[i], m);
        if (out_f32)
            out_f32[(int64_t)blockIdx.x * span + i] = v;
        else
            out[(int64_t)blockIdx.x * span + i] = from_f<T>(v);
    }
}

template <typename T>
__global__ void cast_kernel(T *out, const float *x, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = from_f<T>(x[i]);
}

__global__ void embed_kernel(float *x, const float *emb, const int *tok, int dim)
{
    int64_t r = blockIdx.x;
    const float *e = emb + (int64_t)tok[r] * dim;
    for (int j = threadIdx.x; j < dim; j += blockDim.x)
        x[r * dim + j] = e[j];
}

template <typename T>
__global__ void rmsnorm_kernel(T *out, const float *x, const float *g, int n, double eps)
{
    __shared__ double sh[32];
    const float *xr = x + (int64_t)blockIdx.x * n;
    double ss = 0;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        ss += (double)xr[j] * xr[j];
    ss = block_reduce(ss, Sum(), sh, 0.0);
    float inv = (float)(1.0 / sqrt(ss / (double)n + eps));
    T *o = out + (int64_t)blockIdx.x * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        o[j] = from_f<T>(__fmul_rn(__fmul_rn(xr[j], inv), g[j]));
}

template <typename T, typename TI>
__global__ void split_rope_kernel(T *q, T *k, T *v, const TI *qkv, int T_, int dim, int kv,
                                  int hs, const float *cos_t, const float *sin_t)
{
    int64_t r = blockIdx.x;
    int t = (int)(r % T_), half = hs / 2, ld = dim + 2 * kv;
    const TI *src = qkv + r * ld;
    const float *c = cos_t + (int64_t)t * half, *s = sin_t + (int64_t)t * half;
    /* pairs of q then k (RoPE), then plain copies of v */
    for (int p = threadIdx.x; p < (dim + kv) / 2; p += blockDim.x) {
        int col = 2 * p, i = (col % hs) / 2;
        float a = to_f(src[col]), b = to_f(src[col + 1]);
        float ra = __fsub_rn(__fmul_rn(a, c[i]), __fmul_rn(b, s[i]));
        float rb = __fadd_rn(__fmul_rn(a, s[i]), __fmul_rn(b, c[i]));
        T *dst = col < dim ? q + r * dim + col : k + r * kv + (col - dim);
        dst[0] = from_f<T>(ra);
        dst[1] = from_f<T>(rb);
    }
    for (int j = threadIdx.x; j < kv; j += blockDim.x)
        v[r * kv + j] = from_f<T>(to_f(src[dim + kv + j]));
}

template <typename T, typename TI>
__global__ void swiglu_kernel(T *out, const TI *gu, int64_t N, int h)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= N * h)
        return;
    int64_t r = i / h, j = i % h;
    float g = to_f(gu[r * 2 * h + j]), u = to_f(gu[r * 2 * h + h + j]);
    out[i] = from_f<T>(__fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), u));
}

template <typename T>
__global__ void softmax_kernel(const float *scores, T *probs, int R, int S, int r0, float scale)
{
    __shared__ float sh[32];
    int64_t row = blockIdx.x;
    int t = (int)(row % R), last = r0 + t;
    const float *a = scores + row * S;
    T *p = probs + row * S;
    float mx = -FLT_MAX;
    for (int j = threadIdx.x; j <= last; j += blockDim.x) {
        float v = a[j] * scale;
        mx = v > mx ? v : mx;
    }
    mx = block_reduce(mx, Max(), sh, -FLT_MAX);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= last; j += blockDim.x)
        sum += expf(a[j] * scale - mx);
    sum = block_reduce(sum, Sum(), sh, 0.0f);
    float inv = 1.0f / sum;
    for (int j = threadIdx.x; j < S; j += blockDim.x)
        p[j] = from_f<T>(j <= last ? expf(a[j] * scale - mx) * inv : 0.0f); /* a may alias p */
}

__global__ void nll_kernel(double *nll, const float *logits, const int *tok, int T, int V)
{
    __shared__ double shd[32];
    __shared__ float shf[32];
    int b = blockIdx.x / (T - 1), p = blockIdx.x % (T - 1);
    const float *lg = logits + ((int64_t)b * T + p) * V;
    float mx = lg[0];
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        mx = lg[j] > mx ? lg[j] : mx;
    mx = block_reduce(mx, Max(), shf, -FLT_MAX);
    double sum = 0;
    for (int j = threadIdx.x; j < V; j += blockDim.x)
        sum += exp((double)lg[j] - mx);
    sum = block_reduce(sum, Sum(), shd, 0.0);
    if (threadIdx.x == 0) {
        int next = tok[(int64_t)b * T + p + 1];
        nll[blockIdx.x] = log(sum) + mx - lg[next];
    }
}

template <typename T>
__global__ void convert_kernel(T *dst, const void *src, int dtype, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    float v;
    if (dtype == 0)
        v = ((const float *)src)[i];
    else if (dtype == 1)
        v = __bfloat162float(((const __nv_bfloat16 *)src)[i]);
    else
        v = __half2float(((const __half *)src)[i]);
    dst[i] = from_f<T>(v);
}

__device__ inline uint64_t splitmix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

template <typename T>
__global__ void random_kernel(T *dst, int64_t n, float a, float value, uint64_t seed)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n)
        return;
    if (a == 0.0f) {
        dst[i] = from_f<T>(value);
        return;
    }
    float u = (float)(splitmix(seed * 0x100000001b3ULL + (uint64_t)i) >> 40) * (1.0f / 16777216.0f);
    dst[i] = from_f<T>((2.0f * u - 1.0f) * a);
}

__global__ void to_double_kernel(double *x, const float *f, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = f[i];
}

/* GPTQ's in-block loop, one thread per output row (see gpu_gptq.c). */
__global__ void gptq_block_kernel(double *W1, double *E1, const double *U, int64_t n, int64_t m,
                                  int64_t i1, int64_t nb, const qsur_cu_qmap *maps,
                                  int map_stride, qsur_cu_quant q, int64_t G, float *Q)
{
    int64_t r = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= m)
        return;
    QMap cur;
    if (G == 0) {
        const qsur_cu_qmap *p = maps + (int64_t)map_stride * r;
        cur = *p;
    }
    for (int64_t i = 0; i < nb; i++) {
        const int64_t j = i1 + i;
        if (G > 0 && j % G == 0 && maps) { /* static groups: fitted on the original W */
            const qsur_cu_qmap *p = maps + (int64_t)map_stride * r + j / G;
            cur = *p;
        } else if (G > 0 && j % G == 0) {
            float mn = (float)W1[i * m + r], mx = mn;
            for (int64_t k = 1; k < G; k++) {
                float v = (float)W1[(i + k) * m + r];
                mn = v < mn ? v : mn;
                mx = v > mx ? v : mx;
            }
            cur = map_for(q, mn, mx, q.clip);
        }
        const double d = U[j * n + j];
        double x = W1[i * m + r];
        float c = quant_code((float)x, cur.inv, cur.zp, cur.lo, cur.hi);
        float qv = __fmul_rn(__fsub_rn(c, cur.zp), cur.scale);
        Q[r * n + j] = qv;
        double e = (x - (double)qv) / d;
        E1[i * m + r] = e;
        const double *u = U + j * n + i1;
        for (int64_t k = i + 1; k < nb; k++)
            W1[k * m + r] -= e * u[k];
    }
}

__global__ void fit_maps_kernel(qsur_cu_qmap *maps, const float *W, int64_t span, qsur_cu_quant q)
{
    __shared__ float sh[32];
    const float *xs = W + (int64_t)blockIdx.x * span;
    float mn = xs[0], mx = xs[0];
    for (int64_t i = threadIdx.x; i < span; i += blockDim.x) {
        float v = xs[i];
        mn = v < mn ? v : mn;
        mx = v > mx ? v : mx;
    }
    mn = block_reduce(mn, Min(), sh, FLT_MAX);
    mx = block_reduce(mx, Max(), sh, -FLT_MAX);
    if (threadIdx.x == 0) {
        QMap m = map_for(q, mn, mx, q.clip);
        maps[blockIdx.x] = m;
    }
}

__global__ void gptq_prepare_kernel(float *W, int64_t rows, int64_t cols, double *H, double add)
{
    int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols)
        return;
    double *d = H + j * cols + j;
    if (*d == 0.0) {
        for (int64_t r = 0; r < rows; r++)
            W[r * cols + j] = 0.0f;
        *d = 1.0;
    }
    *d += add;
}

__global__ void row_dots_kernel(double *out, const double *A, const double *B, int64_t n)
{
    __shared__ double sh[32];
    const double *a = A + (int64_t)blockIdx.x * n, *b = B + (int64_t)blockIdx.x * n;
    double s = 0;
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x)
        s += a[j] * b[j];
    s = block_reduce(s, Sum(), sh, 0.0);
    if (threadIdx.x == 0)
        out[blockIdx.x] = s;
}

__global__ void diff_double_kernel(double *d, const float *a, const float *b, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        d[i] = b ? (double)a[i] - (double)b[i] : (double)a[i];
}

} // namespace

extern "C" {

void qsur_cu_fit_maps(qsur_cu_qmap *maps, const float *W, int64_t n, int64_t span,
                      const qsur_cu_quant *q, qsur_cu_stream st)
{
    fit_maps_kernel<<<(unsigned)(n / span), kThreads, 0, st>>>(maps, W, span, *q);
}

void qsur_cu_gptq_prepare(float *W, int64_t rows, int64_t cols, double *H, double add,
                          qsur_cu_stream st)
{
    gptq_prepare_kernel<<<grid_for(cols), kThreads, 0, st>>>(W, rows, cols, H, add);
}

void qsur_cu_row_dots(double *out, const double *A, const double *B, int64_t rows, int64_t n,
                      qsur_cu_stream st)
{
    row_dots_kernel<<<(unsigned)rows, kThreads, 0, st>>>(out, A, B, n);
}

void qsur_cu_diff_double(double *d, const float *a, const float *b, int64_t n, qsur_cu_stream st)
{
    diff_double_kernel<<<grid_for(n), kThreads, 0, st>>>(d, a, b, n);
}

void qsur_cu_embed(float *x, const float *emb, const int *tok, int64_t rows, int dim,
                   qsur_cu_stream st)
{
    embed_kernel<<<(unsigned)rows, kThreads, 0, st>>>(x, emb, tok, dim);
}

void qsur_cu_rmsnorm(void *out, int bf16, const float *x, const float *g, int64_t rows, int n,
                     double eps, qsur_cu_stream st)
{
    if (bf16)
        rmsnorm_kernel<<<(unsigned)rows, kThreads, 0, st>>>((__nv_bfloat16 *)out, x, g, n, eps);
    else
        rmsnorm_kernel<<<(unsigned)rows, kThreads, 0, st>>>((float *)out, x, g, n, eps);
}

void qsur_cu_quant_cast(void *out, int bf16, float *out_f32, const float *x, int64_t rows,
                        int64_t cols, const qsur_cu_quant *q, qsur_cu_stream st)
{
    int64_t n = rows * cols;
    if (q->bits >= 16) {
        if (out_f32) {
            if (out_f32 != x)
                cudaMemcpyAsync(out_f32, x, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, st);
        } else if (bf16) {
            cast_kernel<<<grid_for(n), kThreads, 0, st>>>((__nv_bfloat16 *)out, x, n);
        } else if (out != x) {
            cudaMemcpyAsync(out, x, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice, st);
        }
        return;
    }
    int64_t span = q->gran == 0 ? n : q->gran == 1 ? cols : q->group;
    unsigned spans = (unsigned)(n / span);
    if (bf16 && !out_f32)
        quant_span_kernel<<<spans, kThreads, 0, st>>>((__nv_bfloat16 *)out, nullptr, x, span, *q);
    else
        quant_span_kernel<<<spans, kThreads, 0, st>>>((float *)out, out_f32, x, span, *q);
}

void qsur_cu_split_rope(void *q, void *k, void *v, int bf16, const void *qkv, int in_ct, int64_t N,
                        int T, int dim, int kv, int hs, const float *cos_t, const float *sin_t,
                        qsur_cu_stream st)
{
    typedef __nv_bfloat16 bf;
    if (bf16 && in_ct)
        split_rope_kernel<<<(unsigned)N, kThreads, 0, st>>>((bf *)q, (bf *)k, (bf *)v, (const bf *)qkv, T,
                                                            dim, kv, hs, cos_t, sin_t);
    else if (bf16)
        split_rope_kernel<<<(unsigned)N, kThreads, 0, st>>>((bf *)q, (bf *)k, (bf *)v, (const float *)qkv,
                                                            T, dim, kv, hs, cos_t, sin_t);
    else
        split_rope_kernel<<<(unsigned)N, kThreads, 0, st>>>((float *)q, (float *)k, (float *)v,
                                                            (const float *)qkv, T, dim, kv, hs, cos_t,
                                                            sin_t);
}

void qsur_cu_swiglu(void *out, int bf16, const float *gu, int64_t N, int h, qsur_cu_stream st)
{
    if (bf16)
        swiglu_kernel<<<grid_for(N * h), kThreads, 0, st>>>((__nv_bfloat16 *)out, gu, N, h);
    else
        swiglu_kernel<<<grid_for(N * h), kThreads, 0, st>>>((float *)out, gu, N, h);
}

void qsur_cu_swiglu_bf16(void *out, const void *gu, int64_t N, int h, qsur_cu_stream st)
{
    swiglu_kernel<<<grid_for(N * h), kThreads, 0, st>>>((__nv_bfloat16 *)out, (const __nv_bfloat16 *)gu,
                                                        N, h);
}

void qsur_cu_softmax_causal(void *probs, int bf16, const float *scores, int heads, int R, int S,
                            int r0, float scale, qsur_cu_stream st)
{
    unsigned rows = (unsigned)heads * (unsigned)R;
    if (bf16)
        softmax_kernel<<<rows, kThreads, 0, st>>>(scores, (__nv_bfloat16 *)probs, R, S, r0, scale);
    else
        softmax_kernel<<<rows, kThreads, 0, st>>>(scores, (float *)probs, R, S, r0, scale);
}

void qsur_cu_nll(double *nll, const float *logits, const int *tok, int B, int T, int V,
                 qsur_cu_stream st)
{
    nll_kernel<<<(unsigned)B * (unsigned)(T - 1), kThreads, 0, st>>>(nll, logits, tok, T, V);
}

void qsur_cu_convert(void *dst, int bf16, const void *src, int src_dtype, int64_t n,
                     qsur_cu_stream st)
{
    if (bf16)
        convert_kernel<<<grid_for(n), kThreads, 0, st>>>((__nv_bfloat16 *)dst, src, src_dtype, n);
    else
        convert_kernel<<<grid_for(n), kThreads, 0, st>>>((float *)dst, src, src_dtype, n);
}

void qsur_cu_random(void *dst, int bf16, int64_t n, float a, float value, uint64_t seed,
                    qsur_cu_stream st)
{
    if (bf16)
        random_kernel<<<grid_for(n), kThreads, 0, st>>>((__nv_bfloat16 *)dst, n, a, value, seed);
    else
        random_kernel<<<grid_for(n), kThreads, 0, st>>>((float *)dst, n, a, value, seed);
}

void qsur_cu_to_double(double *x, const float *f, int64_t n, qsur_cu_stream st)
{
    to_double_kernel<<<grid_for(n), kThreads, 0, st>>>(x, f, n);
}

void qsur_cu_gptq_block(double *W1, double *E1, const double *U, int64_t n, int64_t m,
                        int64_t i1, int64_t nb, const qsur_cu_qmap *maps, int map_stride,
                        const qsur_cu_quant *q, int64_t G, float *Q, qsur_cu_stream st)
{
    gptq_block_kernel<<<(unsigned)((m + 127) / 128), 128, 0, st>>>(W1, E1, U, n, m, i1, nb, maps,
                                                                  map_stride, *q, G, Q);
}

} // extern "C"
