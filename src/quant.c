/* Fake quantization (quantize then dequantize) and the error it causes.
 *
 * Every scale group (whole tensor, one row, or G consecutive columns of a row)
 * is a contiguous span of the row-major matrix, so one kernel handles all three
 * granularities: find the group's range, derive scale (and zero point), map.
 *
 * Rounding is half away from zero (like C's roundf), done without a libm call
 * so the loop vectorizes: t = trunc(v) by float->int conversion, then the
 * fractional part f = v - t (exact in float) decides +-1 when |f| >= 0.5.
 * The product v = x * (1/scale) decides ties, as in PyTorch's fake_quantize;
 * it can differ from x / scale by one ulp, which only matters at exact ties.
 *
 * Hot loops work in chunks of QLANES lanes with a fixed inner trip count so
 * GCC's -O2 (very cheap cost model) SLP-vectorizes them without -ffast-math:
 * min/max reductions are kept per lane and folded at the end. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include "qsur/quant.h"
#include "qsur/tensor.h"
#include "quant_map.h"
#include "quant_round.h"
#include "vector_clones.h"

#define QLANES 16

/* Default clip search grid: 1.00, 0.99, ..., 0.50 (first = no clipping). */
#define CLIP_STEPS 51

static int clip_steps(const qsur_quant_spec *q) { return q->clip_grid > 0 ? q->clip_grid : CLIP_STEPS; }
static double clip_norm(const qsur_quant_spec *q) { return q->clip_norm > 0 ? q->clip_norm : 2.0; }

int qsur_quant_spec_equal(const qsur_quant_spec *a, const qsur_quant_spec *b)
{
    return a->bits == b->bits && a->symmetric == b->symmetric && a->gran == b->gran &&
           (a->gran != QSUR_GRAN_GROUP || a->group == b->group) && a->clip == b->clip &&
           a->clip_search == b->clip_search && (a->symmetric ? a->full == b->full : 1) &&
           clip_norm(a) == clip_norm(b) && clip_steps(a) == clip_steps(b);
}

qsur_quant_spec qsur_quant_default(void)
{
    qsur_quant_spec q = {4, 1, QSUR_GRAN_ROW, 128, 1.0, 0, 0, 0.0, 0, 0};
    return q;
}

int qsur_quant_validate(const qsur_quant_spec *q, int64_t cols, qsur_error *err)
{
    if (!q)
        return qsur_fail(err, QSUR_ERR_ARG, "quantizer: no spec given");
    if (q->bits < 16 && (q->bits < 2 || q->bits > 8))
        return qsur_fail(err, QSUR_ERR_ARG, "quantizer: bits=%d (expected 2..8, or >=16 for none)",
                         q->bits);
    if (q->gran != QSUR_GRAN_TENSOR && q->gran != QSUR_GRAN_ROW && q->gran != QSUR_GRAN_GROUP)
        return qsur_fail(err, QSUR_ERR_ARG, "quantizer: unknown granularity %d", (int)q->gran);
    if (!(q->clip > 0.0 && q->clip <= 1.0))
        return qsur_fail(err, QSUR_ERR_ARG, "quantizer: clip=%g (expected a ratio in (0,1])", q->clip);
    if (q->clip_grid < 0 || q->clip_grid > 100 || !(q->clip_norm >= 0.0 && q->clip_norm <= 16.0))
        return qsur_fail(err, QSUR_ERR_ARG,
                         "quantizer: clip grid %d / norm %g (expected 1..100 candidates, norm in (0,16])",
                         q->clip_grid, q->clip_norm);
    if (q->gran == QSUR_GRAN_GROUP) {
        if (q->group <= 0)
            return qsur_fail(err, QSUR_ERR_ARG, "quantizer: group=%d (expected > 0)", q->group);
        if (cols > 0 && cols % q->group != 0)
            return qsur_fail(err, QSUR_ERR_ARG,
                             "quantizer: group=%d does not divide the %lld columns",
                             q->group, (long long)cols);
    }
    return QSUR_OK;
}

void qsur_quant_describe(const qsur_quant_spec *q, char *buf, int n)
{
    if (!buf || n <= 0)
        return;
    if (q->bits >= 16) {
        snprintf(buf, (size_t)n, "none (fp32)");
        return;
    }
    char gran[32];
    if (q->gran == QSUR_GRAN_TENSOR)
        snprintf(gran, sizeof gran, "tensor");
    else if (q->gran == QSUR_GRAN_ROW)
        snprintf(gran, sizeof gran, "row");
    else
        snprintf(gran, sizeof gran, "group%d", q->group);
    const char *kind = q->symmetric ? (q->full ? "sym-full" : "sym") : "asym";
    if (q->clip_search && (q->clip_grid > 0 && q->clip_grid != CLIP_STEPS))
        snprintf(buf, (size_t)n, "int%d %s %s clip=search(norm %g, down to %.2f)", q->bits, kind, gran,
                 clip_norm(q), 1.0 - 0.01 * (clip_steps(q) - 1));
    else if (q->clip_search && clip_norm(q) != 2.0)
        snprintf(buf, (size_t)n, "int%d %s %s clip=search(norm %g)", q->bits, kind, gran, clip_norm(q));
    else if (q->clip_search)
        snprintf(buf, (size_t)n, "int%d %s %s clip=search", q->bits, kind, gran);
    else
        snprintf(buf, (size_t)n, "int%d %s %s clip=%.2f", q->bits, kind, gran, q->clip);
}

/* The affine map of one scale group: q = clamp(round(x*inv) + zp, lo, hi),
 * x_hat = (q - zp) * scale. */
typedef qsur_qmap qmap;

typedef struct {
    float mn, mx;
    int finite;
} span_range;

QSUR_INLINE
static span_range range_of(const float *x, int64_t n)
{
    float mn[QLANES], mx[QLANES], nanacc[QLANES];
    for (int l = 0; l < QLANES; l++) {
        mn[l] = x[0];
        mx[l] = x[0];
        nanacc[l] = 0.0f;
    }
    int64_t i = 0;
    for (; i + QLANES <= n; i += QLANES)
        for (int l = 0; l < QLANES; l++) {
            float v = x[i + l];
            mn[l] = v < mn[l] ? v : mn[l];
            mx[l] = v > mx[l] ? v : mx[l];
            nanacc[l] += v * 0.0f; /* inf*0 and nan*0 are nan: a lane-wise finiteness test */
        }
    span_range r = {mn[0], mx[0], 1};
    for (int l = 0; l < QLANES; l++) {
        r.mn = mn[l] < r.mn ? mn[l] : r.mn;
        r.mx = mx[l] > r.mx ? mx[l] : r.mx;
        if (nanacc[l] != 0.0f)
            r.finite = 0;
    }
    for (; i < n; i++) {
        float v = x[i];
        r.mn = v < r.mn ? v : r.mn;
        r.mx = v > r.mx ? v : r.mx;
        if (!isfinite(v))
            r.finite = 0;
    }
    return r;
}

/* Scale and zero point from the header's formulas (quant_map.h, shared with the GPU). */
QSUR_INLINE
static qmap map_for(const qsur_quant_spec *q, span_range r, double ratio)
{
    return qsur_qmap_from_range(q->bits, q->symmetric, q->full, r.mn, r.mx, ratio);
}

QSUR_INLINE
static float quant_one(float x, qmap m)
{
    /* Clamping before rounding is the same as after: lo and hi are integers. */
    float v = x * m.inv + m.zp;
    v = v < m.lo ? m.lo : v; /* not fmaxf: without -ffast-math that is a libm call */
    v = v > m.hi ? m.hi : v;
    return (round_half_away(v) - m.zp) * m.scale;
}

QSUR_INLINE
static void apply_map(const float *x, float *out, int64_t n, qmap m)
{
    int64_t i = 0;
    for (; i + QLANES <= n; i += QLANES) {
        /* Through a local block: out may alias x, and reading the whole chunk
         * before writing it lets the compiler vectorize without a runtime alias check. */
        float tmp[QLANES];
        for (int l = 0; l < QLANES; l++)
            tmp[l] = quant_one(x[i + l], m);
        memcpy(out + i, tmp, sizeof tmp);
    }
    for (; i < n; i++)
        out[i] = quant_one(x[i], m);
}

/* Squared error the map would cause on the span (accumulated per lane in float,
 * folded in double: the search compares candidates, it does not report it). */
QSUR_INLINE
static double map_sse(const float *x, int64_t n, qmap m)
{
    float acc[QLANES] = {0};
    double total = 0.0;
    int64_t i = 0;
    for (; i + QLANES <= n; i += QLANES) {
        for (int l = 0; l < QLANES; l++) {
            float e = x[i + l] - quant_one(x[i + l], m);
            acc[l] += e * e;
        }
        if (((i / QLANES) & 255) == 255) { /* keep float partial sums short */
            for (int l = 0; l < QLANES; l++) {
                total += acc[l];
                acc[l] = 0.0f;
            }
        }
    }
    for (int l = 0; l < QLANES; l++)
        total += acc[l];
    for (; i < n; i++) {
        double e = (double)x[i] - (double)quant_one(x[i], m);
        total += e * e;
    }
    return total;
}

/* sum |x - Q(x)|^p over the span (the clip search of the GPTQ/QuaRot code
 * uses p = 2.4); a plain loop: only weights take this path. */
static double map_err_p(const float *x, int64_t n, qmap m, double p)
{
    double total = 0.0;
    for (int64_t i = 0; i < n; i++)
        total += pow(fabs((double)x[i] - (double)quant_one(x[i], m)), p);
    return total;
}

/* The map of one span, clip search included; 0 when the span holds NaN/Inf. */
QSUR_INLINE
static int fit_span(const qsur_quant_spec *q, const float *x, int64_t n, qmap *out)
{
    span_range r = range_of(x, n);
    if (!r.finite)
        return 0;
    qmap best = map_for(q, r, q->clip_search ? 1.0 : q->clip);
    if (q->clip_search && best.scale > 0.0f) {
        /* Strictly smaller wins, so ties keep the larger ratio and the result
         * is never worse than clip = 1 (the first candidate). */
        double p = clip_norm(q);
        double best_sse = p == 2.0 ? map_sse(x, n, best) : map_err_p(x, n, best, p);
        for (int k = 1; k < clip_steps(q); k++) {
            qmap m = map_for(q, r, 1.0 - 0.01 * k);
            double s = p == 2.0 ? map_sse(x, n, m) : map_err_p(x, n, m, p);
            if (s < best_sse) {
                best_sse = s;
                best = m;
            }
        }
    }
    *out = best;
    return 1;
}

/* apply_map that also sums x^2 and (x - Q(x))^2 into sums[0], sums[1]: per
 * lane in double (so the totals are as good as a sequential double sum), on
 * values already in registers, so measuring costs no second pass. out may be
 * NULL (measure only) or equal x. */
QSUR_INLINE
static void apply_map_measure(const float *x, float *out, int64_t n, qmap m, double *sums)
{
    double ax[QLANES] = {0}, ae[QLANES] = {0};
    int64_t i = 0;
    for (; i + QLANES <= n; i += QLANES) {
        float tmp[QLANES];
        for (int l = 0; l < QLANES; l++)
            tmp[l] = quant_one(x[i + l], m);
        for (int l = 0; l < QLANES; l++) {
            double a = x[i + l], e = a - (double)tmp[l];
            ax[l] += a * a;
            ae[l] += e * e;
        }
        if (out)
            memcpy(out + i, tmp, sizeof tmp);
    }
    double tx = 0.0, te = 0.0;
    for (int l = 0; l < QLANES; l++) {
        tx += ax[l];
        te += ae[l];
    }
    for (; i < n; i++) {
        float v = quant_one(x[i], m);
        double a = x[i], e = a - (double)v;
        tx += a * a;
        te += e * e;
        if (out)
            out[i] = v;
    }
    sums[0] += tx;
    sums[1] += te;
}

/* Returns 0, or -1 when the span holds a NaN/Inf (the caller names it).
 * sums == NULL: plain fake quant; else also measure (apply_map_measure). */
QSUR_INLINE
static int quant_span(const qsur_quant_spec *q, const float *x, float *out, int64_t n,
                      double *sums)
{
    qmap best;
    if (!fit_span(q, x, n, &best))
        return -1;
    if (sums)
        apply_map_measure(x, out, n, best, sums);
    else
        apply_map(x, out, n, best);
    return 0;
}

/* A block of consecutive spans (whole rows), one call through the ifunc per
 * block rather than per group of G. */
QSUR_VECTOR_CLONES
static int quant_spans(const qsur_quant_spec *q, const float *x, float *out, int64_t n,
                       int64_t span, double *sums)
{
    for (int64_t i = 0; i < n; i += span)
        if (quant_span(q, x + i, out ? out + i : NULL, span, sums) != 0)
            return -1;
    return 0;
}

static int nonfinite_error(const float *x, int64_t n, int64_t cols, qsur_error *err)
{
    int64_t i = qsur_find_nonfinite(x, n);
    return qsur_fail(err, QSUR_ERR_NUMERIC,
                     "fake quant: non-finite value at row %lld, column %lld (NaN/Inf cannot be quantized)",
                     (long long)(i / cols), (long long)(i % cols));
}

/* The driver of qsur_fake_quant and qsur_fake_quant_measure: sums == NULL
 * quantizes only; otherwise out may be NULL and sums gets sum x^2, sum e^2. */
static int fake_quant_run(const qsur_quant_spec *q, const float *x, int64_t rows, int64_t cols,
                          float *out, double *sums, const qsur_progress *prog, qsur_error *err)
{
    if (rows < 0 || cols < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "fake quant: bad shape %lldx%lld",
                         (long long)rows, (long long)cols);
    int rc = qsur_quant_validate(q, cols, err);
    if (rc != QSUR_OK)
        return rc;
    int64_t n = rows * cols;
    if (n == 0)
        return QSUR_OK;
    if (q->bits >= 16) {
        if (out && out != x)
            memcpy(out, x, (size_t)n * sizeof(float));
        if (sums) {
            if (qsur_find_nonfinite(x, n) >= 0)
                return nonfinite_error(x, n, cols, err);
            for (int64_t i = 0; i < n; i++)
                sums[0] += (double)x[i] * (double)x[i];
        }
        return QSUR_OK;
    }
    if (q->gran == QSUR_GRAN_TENSOR)
        return quant_spans(q, x, out, n, n, sums) == 0 ? QSUR_OK : nonfinite_error(x, n, cols, err);
    int64_t span = q->gran == QSUR_GRAN_ROW ? cols : q->group;
    /* Tick about every 1M elements; a stop leaves x intact (out may be partial,
     * and when out == x the caller asked for in-place and owns that risk). */
    int64_t tick_rows = (1 << 20) / cols + 1;
    for (int64_t r = 0; r < rows; r += tick_rows) {
        rc = qsur_progress_tick(prog, (double)r / (double)rows, "quantize", NAN, err);
        if (rc != QSUR_OK)
            return rc;
        int64_t nr = rows - r < tick_rows ? rows - r : tick_rows;
        if (quant_spans(q, x + r * cols, out ? out + r * cols : NULL, nr * cols, span, sums) != 0)
            return nonfinite_error(x, n, cols, err);
    }
    return QSUR_OK;
}

int qsur_fake_quant(const qsur_quant_spec *q, const float *x, int64_t rows,
                    int64_t cols, float *out, const qsur_progress *prog,
                    qsur_error *err)
{
    return fake_quant_run(q, x, rows, cols, out, NULL, prog, err);
}

static void metrics_from_sums(double sx, double se, int64_t n, qsur_error_metrics *m)
{
    m->mse = n > 0 ? se / (double)n : 0.0;
    if (se == 0.0) {
        m->rel_fro = 0.0;
        m->sqnr_db = INFINITY;
    } else if (sx == 0.0) {
        m->rel_fro = INFINITY;
        m->sqnr_db = -INFINITY;
    } else {
        m->rel_fro = sqrt(se / sx);
        m->sqnr_db = 10.0 * log10(sx / se);
    }
}

int qsur_fake_quant_measure(const qsur_quant_spec *q, const float *x, int64_t rows,
                            int64_t cols, float *out, qsur_error_metrics *m,
                            const qsur_progress *prog, qsur_error *err)
{
    double sums[2] = {0.0, 0.0};
    int rc = fake_quant_run(q, x, rows, cols, out, sums, prog, err);
    if (rc == QSUR_OK)
        metrics_from_sums(sums[0], sums[1], rows * cols, m);
    return rc;
}

/* The public per-span map (quant.h): the same fit and the same arithmetic as
 * the fake-quant kernel above, so column-wise methods land on its grid. */
int qsur_qparams_fit(const qsur_quant_spec *q, const float *x, int64_t n,
                     qsur_qparams *p, qsur_error *err)
{
    int rc = qsur_quant_validate(q, 0, err);
    if (rc != QSUR_OK)
        return rc;
    if (!x || !p || n <= 0 || q->bits >= 16)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "quant params: need n > 0 values and bits 2..8 (n=%lld bits=%d)",
                         (long long)n, q->bits);
    qmap m;
    if (!fit_span(q, x, n, &m))
        return qsur_fail(err, QSUR_ERR_NUMERIC,
                         "quant params: non-finite value in a span of %lld (NaN or Inf cannot be quantized)",
                         (long long)n);
    p->inv = m.inv;
    p->scale = m.scale;
    p->zero = m.zp;
    p->lo = m.lo;
    p->hi = m.hi;
    return QSUR_OK;
}

float qsur_qparams_code(const qsur_qparams *p, float x)
{
    float v = x * p->inv + p->zero;
    v = v < p->lo ? p->lo : v;
    v = v > p->hi ? p->hi : v;
    return round_half_away(v);
}

float qsur_qparams_value(const qsur_qparams *p, float c)
{
    return (c - p->zero) * p->scale;
}

float qsur_qparams_apply(const qsur_qparams *p, float x)
{
    qmap m = {p->inv, p->scale, p->zero, p->lo, p->hi};
    return quant_one(x, m);
}

void qsur_error_metrics_compute(const float *x, const float *q, int64_t n,
                                qsur_error_metrics *m)
{
    double sx = 0.0, se = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double a = x[i], e = (double)x[i] - (double)q[i];
        sx += a * a;
        se += e * e;
    }
    metrics_from_sums(sx, se, n, m);
}

/* Rows of X processed per sgemm call: bounds the scratch to 2 * BLOCK * m floats. */
#define OUT_BLOCK 256

int qsur_layer_output_error(const float *X, const float *Xq, const float *W,
                            const float *Wq, int64_t n, int64_t d, int64_t m,
                            double *out, qsur_error *err)
{
    if (n <= 0 || d <= 0 || m <= 0 || !X || !W || !out)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "layer output error: bad shapes X %lldx%lld, W %lldx%lld",
                         (long long)n, (long long)d, (long long)m, (long long)d);
    if (n > INT32_MAX || d > INT32_MAX || m > INT32_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "layer output error: dimensions exceed BLAS int range");
    *out = 0.0;
    if (!Xq && !Wq)
        return QSUR_OK; /* nothing quantized: Y - Y_hat is exactly zero */
    const float *xq = Xq ? Xq : X, *wq = Wq ? Wq : W;
    int64_t blk = n < OUT_BLOCK ? n : OUT_BLOCK;
    float *y = qsur_alloc((size_t)(blk * m), sizeof(float));
    float *yq = qsur_alloc((size_t)(blk * m), sizeof(float));
    if (!y || !yq) {
        free(y);
        free(yq);
        return qsur_fail(err, QSUR_ERR_NOMEM, "layer output error: cannot allocate %lldx%lld output",
                         (long long)blk, (long long)m);
    }
    double num = 0.0, den = 0.0;
    for (int64_t r0 = 0; r0 < n; r0 += blk) {
        int nb = (int)(n - r0 < blk ? n - r0 : blk);
        /* Row-major: Y (nb x m) = X_block (nb x d) * W^T, W stored m x d. */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, (int)m, (int)d, 1.0f,
                    X + r0 * d, (int)d, W, (int)d, 0.0f, y, (int)m);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, (int)m, (int)d, 1.0f,
                    xq + r0 * d, (int)d, wq, (int)d, 0.0f, yq, (int)m);
        for (int64_t i = 0; i < (int64_t)nb * m; i++) {
            double a = y[i], e = (double)y[i] - (double)yq[i];
            den += a * a;
            num += e * e;
        }
    }
    free(y);
    free(yq);
    if (num == 0.0)
        *out = 0.0;
    else if (den == 0.0)
        *out = INFINITY;
    else
        *out = sqrt(num / den);
    return QSUR_OK;
}

/* A_block B^T for the rows r0 .. r0+nb of A: the one product both functions
 * below use, so equal inputs give bit-equal outputs. */
static void block_product(const float *A, const float *B, int64_t r0, int nb, int64_t d, int64_t m,
                          float *out)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, (int)m, (int)d, 1.0f, A + r0 * d,
                (int)d, B, (int)d, 0.0f, out, (int)m);
}

int qsur_output_product(const float *A, const float *B, int64_t n, int64_t d, int64_t m, float *Y,
                        qsur_error *err)
{
    if (n <= 0 || d <= 0 || m <= 0 || !Y || !A || !B)
        return qsur_fail(err, QSUR_ERR_ARG, "output product: bad shapes A %lldx%lld, B %lldx%lld",
                         (long long)n, (long long)d, (long long)m, (long long)d);
    if (n > INT32_MAX || d > INT32_MAX || m > INT32_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "output product: dimensions exceed BLAS int range");
    for (int64_t r0 = 0; r0 < n; r0 += OUT_BLOCK)
        block_product(A, B, r0, (int)(n - r0 < OUT_BLOCK ? n - r0 : OUT_BLOCK), d, m, Y + r0 * m);
    return QSUR_OK;
}

int qsur_output_error_ref(const float *Y, const float *A, const float *B, int64_t n, int64_t d,
                          int64_t m, double *out, qsur_error *err)
{
    if (n <= 0 || d <= 0 || m <= 0 || !Y || !A || !B || !out)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "output error: bad shapes Y %lldx%lld, A %lldx%lld, B %lldx%lld",
                         (long long)n, (long long)m, (long long)n, (long long)d, (long long)m,
                         (long long)d);
    if (n > INT32_MAX || d > INT32_MAX || m > INT32_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "output error: dimensions exceed BLAS int range");
    int64_t blk = n < OUT_BLOCK ? n : OUT_BLOCK;
    float *yq = qsur_alloc((size_t)(blk * m), sizeof(float));
    if (!yq)
        return qsur_fail(err, QSUR_ERR_NOMEM, "output error: cannot allocate %lldx%lld output",
                         (long long)blk, (long long)m);
    double num = 0.0, den = 0.0;
    for (int64_t r0 = 0; r0 < n; r0 += blk) {
        int nb = (int)(n - r0 < blk ? n - r0 : blk);
        block_product(A, B, r0, nb, d, m, yq);
        const float *y = Y + r0 * m;
        for (int64_t i = 0; i < (int64_t)nb * m; i++) {
            double a = y[i], e = (double)y[i] - (double)yq[i];
            den += a * a;
            num += e * e;
        }
    }
    free(yq);
    *out = num == 0.0 ? 0.0 : den == 0.0 ? INFINITY : sqrt(num / den);
    return QSUR_OK;
}
