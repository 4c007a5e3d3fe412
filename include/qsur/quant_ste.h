/* Backward pass of fake quantization: the straight-through estimator (STE).
 *
 * Forward (qsur_fake_quant): per scale group, q = (c - z) s with the code
 * c = clamp(round(x/s + z), lo, hi). Rounding has zero derivative almost
 * everywhere, so training methods (LSQ, OmniQuant, SpinQuant, OSTQuant)
 * replace it by the identity — what autograd computes for
 *     q = s * (u + stopgrad(round(u) - u)),  u = x/s + z.
 * What this file does, exactly:
 *   - rounding: identity (STE); clamping: an element whose u falls outside
 *     [lo, hi] gets no gradient through x (the clamp's true derivative);
 *   - symmetric quantizers: the scale s = clip * absmax / qmax is NOT treated as
 *     a constant — dq/ds = c - x/s for an unclamped element (the frozen rounding
 *     residual) and c for a clamped one, and ds/dx = s/absmax * sign(x) goes to
 *     the element holding the absmax (the first one on ties; with a `full`
 *     grid, to the minimum or maximum that sets max(-min/(qmax+1), max/qmax),
 *     again ds/dx = s/x there); the clipping ratio
 *     (fixed, or the one clip search chose) is a constant; with spec.ste_const
 *     the scale is a constant too (the OSTQuant code's training-time weight
 *     quantizer, whose clip search runs on detached values);
 *   - asymmetric quantizers: the zero point z is an integer constant, the
 *     scale s = clip (max - min) / (2^b - 1) (min, max widened to 0) is not:
 *     dq/ds = c - u for an unclamped element (u = x/s + z, the frozen rounding
 *     residual) and c - z for a clamped one; ds/dx = s / (max - min) goes to
 *     the first maximum (when > 0) and -s / (max - min) to the first minimum
 *     (when < 0) — what autograd gives for a dynamic per-token quantizer whose
 *     scale is computed from x (OmniQuant's / OSTQuant's round_ste quantizer);
 *     with spec.ste_const the scale is a constant instead (identity inside the
 *     range, zero outside: qsur's rule before issue 14, kept for ablations).
 * The gradient is therefore the exact derivative of the surrogate
 *     q~(x) = x + s(x) r  (unclamped),  q~(x) = (c - z) s(x)  (clamped)
 * with r = c - x/s - z frozen at the evaluation point, which the tests
 * differentiate numerically. */
#ifndef QSUR_QUANT_STE_H
#define QSUR_QUANT_STE_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/quant.h"

/* dx = STE-backward of q = Q(x) for a rows x cols row-major matrix, given the
 * upstream gradient dq (same shape). dx may equal dq (in place). bits >= 16:
 * dx = dq. Groups are found exactly as qsur_fake_quant does. */
int qsur_fake_quant_backward(const qsur_quant_spec *q, const float *x, int64_t rows,
                             int64_t cols, const float *dq, float *dx, qsur_error *err);

#endif
