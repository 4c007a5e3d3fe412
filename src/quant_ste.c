/* STE backward of fake quantization (see qsur/quant_ste.h for the exact rule). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "qsur/quant_ste.h"
#include "quant_round.h"
#include "vector_clones.h"

/* Symmetric span (zero point 0): dx = dq inside the range, 0 outside, and the
 * two sums of dL/ds = sum_i dq_i (c_i - [i inside] x_i / s):
 *     *sgc = sum_i dq_i c_i,   *sgx = sum_{i inside} dq_i x_i
 * (products exact in double; 8 partial sums, so the loop vectorizes). */
QSUR_VECTOR_CLONES
static void sym_kernel(const float *x, const float *dq, float *dx, int64_t n, float inv, float lo,
                       float hi, double *sgc, double *sgx, float *amax)
{
    enum { L = 8 };
    double a[L] = {0}, b[L] = {0};
    float m[L] = {0};
    int64_t i = 0;
    for (; i + L <= n; i += L) {
        /* through a local block: dx may alias dq */
        float tmp[L];
        for (int l = 0; l < L; l++) {
            float xv = x[i + l], g = dq[i + l], u = xv * inv;
            float v = u < lo ? lo : u;
            v = v > hi ? hi : v;
            float gin = v == u ? g : 0.0f, ax = fabsf(xv);
            m[l] = ax > m[l] ? ax : m[l];
            a[l] += (double)g * (double)round_half_away(v);
            b[l] += (double)gin * (double)xv;
            tmp[l] = gin;
        }
        memcpy(dx + i, tmp, sizeof tmp);
    }
    for (; i < n; i++) {
        float xv = x[i], g = dq[i], u = xv * inv;
        float v = u < lo ? lo : u;
        v = v > hi ? hi : v;
        float gin = v == u ? g : 0.0f, ax = fabsf(xv);
        m[0] = ax > m[0] ? ax : m[0];
        a[0] += (double)g * (double)round_half_away(v);
        b[0] += (double)gin * (double)xv;
        dx[i] = gin;
    }
    *amax = 0.0f;
    for (int l = 0; l < L; l++)
        *amax = m[l] > *amax ? m[l] : *amax;
    *sgc = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    *sgx = ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
}

/* The absmax element (the first one on ties): it sets a plain symmetric scale. */
static int64_t absmax_arg(const float *x, int64_t n, float amax)
{
    int64_t arg = 0;
    while (arg < n - 1 && fabsf(x[arg]) != amax)
        arg++;
    return arg;
}

/* The element that sets a full-grid scale max(-min / (qmax + 1), max / qmax)
 * (qmax = hi): the first minimum when the negative side wins (ties too, as
 * fmax in quant.c then returns either value: the same scale), else the first
 * maximum. */
static int64_t full_scale_arg(const float *x, int64_t n, float hi)
{
    int64_t imn = 0, imx = 0;
    for (int64_t i = 1; i < n; i++) {
        if (x[i] < x[imn])
            imn = i;
        if (x[i] > x[imx])
            imx = i;
    }
    double neg = -fmin((double)x[imn], 0.0) / ((double)hi + 1.0), pos = fmax((double)x[imx], 0.0) / hi;
    return neg >= pos ? imn : imx;
}

/* One scale group of n values: x, upstream dq -> dx (dx may alias dq). */
static int span_backward(const qsur_quant_spec *q, const float *x, const float *dq, float *dx,
                         int64_t n, qsur_error *err)
{
    qsur_qparams p;
    int rc = qsur_qparams_fit(q, x, n, &p, err);
    if (rc != QSUR_OK)
        return rc;
    if (p.scale == 0.0f) { /* all-zero group: q = 0 whatever x does nearby (to first order) */
        memset(dx, 0, (size_t)n * sizeof(float));
        return QSUR_OK;
    }
    if (!q->symmetric) {
        /* identity inside the range, zero outside; the scale s = ratio (max - min)
         * / levels moves with the extremes (the zero point is an integer constant):
         * dL/ds = sum_in dq (c - u) + sum_out dq (c - z), u = x/s + z */
        double ds = 0.0;
        int64_t imn = 0, imx = 0;
        for (int64_t i = 0; i < n; i++) {
            float u = x[i] * p.inv + p.zero, g = dq[i];
            float v = u < p.lo ? p.lo : u;
            v = v > p.hi ? p.hi : v;
            float c = round_half_away(v); /* qsur_qparams_code */
            int out = v != u;
            ds += (double)g * ((double)c - (out ? (double)p.zero : (double)u));
            dx[i] = out ? 0.0f : g;
            imn = x[i] < x[imn] ? i : imn;
            imx = x[i] > x[imx] ? i : imx;
        }
        /* s = ratio (mx - mn) / hi with mn = min(x, 0), mx = max(x, 0):
         * ds/dx_max = s / (mx - mn), ds/dx_min = -s / (mx - mn) */
        double mn = fmin((double)x[imn], 0.0), mx = fmax((double)x[imx], 0.0), w = mx - mn;
        if (w > 0 && !q->ste_const) {
            if (x[imx] > 0.0f)
                dx[imx] += (float)(ds * (double)p.scale / w);
            if (x[imn] < 0.0f)
                dx[imn] -= (float)(ds * (double)p.scale / w);
        }
        return QSUR_OK;
    }
    double sgc, sgx;
    float amax;
    sym_kernel(x, dq, dx, n, p.inv, p.lo, p.hi, &sgc, &sgx, &amax);
    double ds = sgc - sgx / (double)p.scale;
    int64_t arg = q->full ? full_scale_arg(x, n, p.hi) : absmax_arg(x, n, amax);
    /* s is proportional to x_arg (s = ratio |x_arg| / qmax, or / (qmax + 1)
     * for the negative extreme of a full grid): ds/dx_arg = s / x_arg */
    if (amax > 0.0f && x[arg] != 0.0f && !q->ste_const)
        dx[arg] += (float)(ds * (double)p.scale / (double)x[arg]);
    return QSUR_OK;
}

int qsur_fake_quant_backward(const qsur_quant_spec *q, const float *x, int64_t rows,
                             int64_t cols, const float *dq, float *dx, qsur_error *err)
{
    if (rows < 0 || cols < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "fake-quant backward: bad shape %lld x %lld",
                         (long long)rows, (long long)cols);
    if (q->bits >= 16) {
        if (dx != dq)
            memmove(dx, dq, (size_t)(rows * cols) * sizeof(float));
        return QSUR_OK;
    }
    int rc = qsur_quant_validate(q, cols, err);
    if (rc != QSUR_OK)
        return rc;
    if (rows == 0 || cols == 0)
        return QSUR_OK;
    if (q->gran == QSUR_GRAN_TENSOR)
        return span_backward(q, x, dq, dx, rows * cols, err);
    int64_t g = q->gran == QSUR_GRAN_GROUP ? q->group : cols;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c0 = 0; c0 < cols; c0 += g) {
            int64_t o = r * cols + c0;
            if ((rc = span_backward(q, x + o, dq + o, dx + o, g, err)) != QSUR_OK)
                return rc;
        }
    return QSUR_OK;
}
