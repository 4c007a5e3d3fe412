/* STE backward of fake quantization (see qsur/quant_ste.h for the exact rule). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "qsur/quant_ste.h"

/* Round half away from zero for |v| < 2^31, the rounding qsur_qparams_code
 * applies (quant.h); written out here so the loop below makes no call per
 * element (the per-element qsur_qparams_code call was most of the backward). */
static inline float round_half_away(float v)
{
    float t = (float)(int32_t)v;
    float f = v - t;
    return t + (float)((f >= 0.5f) - (f <= -0.5f));
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
        /* scale and zero point constant: identity inside the range, zero outside */
        for (int64_t i = 0; i < n; i++) {
            float u = x[i] * p.inv + p.zero;
            dx[i] = (u < p.lo || u > p.hi) ? 0.0f : dq[i];
        }
        return QSUR_OK;
    }
    double ds = 0.0; /* dL/ds accumulated over the group */
    int64_t arg = 0;
    float amax = -1.0f;
    double scale = p.scale;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > amax) {
            amax = a;
            arg = i;
        }
        float u = x[i] * p.inv + p.zero;
        float g = dq[i];
        if (u < p.lo || u > p.hi) {
            ds += (double)g * ((u < p.lo ? p.lo : p.hi) - p.zero);
            dx[i] = 0.0f;
        } else {
            ds += (double)g * ((double)round_half_away(u) - (double)x[i] / scale);
            dx[i] = g;
        }
    }
    if (amax > 0.0f)
        /* s = ratio * absmax / qmax  =>  ds/d|x_arg| = s / absmax */
        dx[arg] += (float)(ds * (double)p.scale / (double)amax) * (x[arg] < 0 ? -1.0f : 1.0f);
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
