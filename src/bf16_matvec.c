/* bf16 weights times a few float32 rows (qsur/bf16_matvec.h). */
#include <stdint.h>
#include <string.h>
#include "qsur/bf16_matvec.h"
#include "qsur/parallel.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define HAVE_AVX512_KERNEL 1
#include <immintrin.h>
#endif

/* Row r of the Meta order is this row of the stored data (as llama_store.c). */
static inline int64_t stored_row(int64_t rows, int heads, int64_t r)
{
    if (heads <= 0)
        return r;
    int64_t hs = rows / heads, half = hs / 2, h = r / hs, k = r % hs;
    return h * hs + (k % 2) * half + k / 2;
}

static inline float widen(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

void qsur_bf16_matvec_plain(const float *x, int N, int64_t cols, const void *W, int64_t rows,
                            int rope_heads, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
    const unsigned char *base = W;
    for (int64_t r = r0; r < r1; r++) {
        const unsigned char *w = base + (size_t)stored_row(rows, rope_heads, r) * (size_t)cols * 2;
        for (int n = 0; n < N; n++) {
            const float *xn = x + (int64_t)n * cols;
            float acc = 0;
            for (int64_t c = 0; c < cols; c++) {
                uint16_t h;
                memcpy(&h, w + 2 * c, 2); /* mapped data need not be 2-byte aligned */
                acc += xn[c] * widen(h);
            }
            y[(int64_t)n * ldy + r] = acc;
        }
    }
}

#ifdef HAVE_AVX512_KERNEL
/* Up to 4 inputs per pass over a weight row, two accumulators each (the
 * FMA latency), 32 weights per step widened by a zero-extend and a shift. */
__attribute__((target("avx512f"))) static void rows_avx512(const float *x, int N, int64_t cols,
                                                           const void *W, int64_t rows, int heads,
                                                           int64_t r0, int64_t r1, float *y,
                                                           int64_t ldy)
{
    const unsigned char *base = W;
    int64_t c32 = cols / 32 * 32;
    for (int64_t r = r0; r < r1; r++) {
        const unsigned char *w = base + (size_t)stored_row(rows, heads, r) * (size_t)cols * 2;
        for (int n0 = 0; n0 < N; n0 += 4) {
            int nn = N - n0 < 4 ? N - n0 : 4;
            __m512 a[4][2];
            for (int k = 0; k < 4; k++)
                a[k][0] = a[k][1] = _mm512_setzero_ps();
            for (int64_t c = 0; c < c32; c += 32) {
                __m512i h0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + 2 * c)));
                __m512i h1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + 2 * c + 32)));
                __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(h0, 16));
                __m512 w1 = _mm512_castsi512_ps(_mm512_slli_epi32(h1, 16));
                for (int k = 0; k < nn; k++) {
                    const float *xk = x + (int64_t)(n0 + k) * cols + c;
                    a[k][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xk), a[k][0]);
                    a[k][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xk + 16), a[k][1]);
                }
            }
            for (int k = 0; k < nn; k++) {
                const float *xk = x + (int64_t)(n0 + k) * cols;
                float acc = _mm512_reduce_add_ps(_mm512_add_ps(a[k][0], a[k][1]));
                for (int64_t c = c32; c < cols; c++) {
                    uint16_t h;
                    memcpy(&h, w + 2 * c, 2);
                    acc += xk[c] * widen(h);
                }
                y[(int64_t)(n0 + k) * ldy + r] = acc;
            }
        }
    }
}
#endif

int qsur_bf16_matvec_avx512(void)
{
#ifdef HAVE_AVX512_KERNEL
    return __builtin_cpu_supports("avx512f") ? 1 : 0; /* reads what the runtime found at start */
#else
    return 0;
#endif
}

void qsur_bf16_matvec_rows(const float *x, int N, int64_t cols, const void *W, int64_t rows,
                           int rope_heads, int64_t r0, int64_t r1, float *y, int64_t ldy)
{
#ifdef HAVE_AVX512_KERNEL
    if (qsur_bf16_matvec_avx512()) {
        rows_avx512(x, N, cols, W, rows, rope_heads, r0, r1, y, ldy);
        return;
    }
#endif
    qsur_bf16_matvec_plain(x, N, cols, W, rows, rope_heads, r0, r1, y, ldy);
}

typedef struct {
    const float *x;
    int N, heads;
    int64_t cols, rows, ldy;
    const void *W;
    float *y;
} product;

static void run_part(void *ctx, int part, int parts)
{
    const product *p = ctx;
    qsur_bf16_matvec_rows(p->x, p->N, p->cols, p->W, p->rows, p->heads, p->rows * part / parts,
                          p->rows * (part + 1) / parts, p->y, p->ldy);
}

void qsur_bf16_matvec(const float *x, int N, int64_t cols, const void *W, int64_t rows,
                      int rope_heads, float *y, int64_t ldy, int threads)
{
    /* a thread costs tens of microseconds: only for matrices worth it */
    if (threads < 2 || rows * cols < ((int64_t)1 << 20) || rows < threads) {
        qsur_bf16_matvec_rows(x, N, cols, W, rows, rope_heads, 0, rows, y, ldy);
        return;
    }
    product p = {x, N, rope_heads, cols, rows, ldy, W, y};
    qsur_parallel(threads, run_part, &p);
}
