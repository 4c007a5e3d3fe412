/* Internal (not installed): the grid map of one scale group, from the group's
 * range, in one place for the CPU (quant.c) and the CUDA kernels
 * (backend/cuda/kernels.cu), so both fit the same scale, zero point and
 * inverse bit for bit (the formulas are in qsur/quant.h's header comment).
 * Plain C; under nvcc the function is __host__ __device__. Everything is
 * computed in double and rounded to float once, as the CPU always did. */
#ifndef QSUR_QUANT_MAP_H
#define QSUR_QUANT_MAP_H

#include <float.h>
#include <math.h>

#ifdef __CUDACC__
#define QSUR_MAP_FN static inline __host__ __device__
#else
#include "vector_clones.h"
#define QSUR_MAP_FN QSUR_INLINE static /* forced inline: each vector clone gets its own copy */
#endif

/* code c = clamp(round(x * inv + zp), lo, hi); value = (c - zp) * scale */
typedef struct {
    float inv, scale, zp, lo, hi;
} qsur_qmap;

/* The map of a span whose values lie in [mn, mx], clip ratio `ratio`:
 * symmetric (full: with the code -2^(b-1)) or asymmetric with min/max widened
 * to include 0. An all-zero span, or one so tiny that 1/scale overflows
 * float, maps everything to 0 (scale = inv = 0). */
QSUR_MAP_FN qsur_qmap qsur_qmap_from_range(int bits, int symmetric, int full, float mn, float mx,
                                           double ratio)
{
    qsur_qmap m;
    if (symmetric && full) {
        double qmax = (double)((1 << (bits - 1)) - 1);
        double neg = -fmin((double)mn, 0.0) / (qmax + 1.0), pos = fmax((double)mx, 0.0) / qmax;
        m.scale = (float)(ratio * fmax(neg, pos));
        m.zp = 0.0f;
        m.lo = (float)-(qmax + 1.0);
        m.hi = (float)qmax;
    } else if (symmetric) {
        double qmax = (double)((1 << (bits - 1)) - 1);
        double absmax = fmax(fabs((double)mn), fabs((double)mx));
        m.scale = (float)(ratio * absmax / qmax);
        m.zp = 0.0f;
        m.lo = (float)-qmax;
        m.hi = (float)qmax;
    } else {
        double levels = (double)((1 << bits) - 1);
        double lo = fmin((double)mn, 0.0), hi = fmax((double)mx, 0.0);
        double scale = ratio * (hi - lo) / levels;
        m.scale = (float)scale;
        m.zp = scale > 0 ? (float)round(-ratio * lo / scale) : 0.0f;
        m.lo = 0.0f;
        m.hi = (float)levels;
    }
    double inv = m.scale > 0.0f ? 1.0 / (double)m.scale : 0.0;
    if (!(inv < (double)FLT_MAX)) {
        m.scale = 0.0f;
        m.zp = 0.0f;
        inv = 0.0;
    }
    m.inv = (float)inv;
    return m;
}

#endif
