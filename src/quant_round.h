/* Internal (not installed): the rounding every quantizer kernel uses, so
 * fake quant (quant.c) and its straight-through gradient (quant_ste.c) agree
 * on each code bit for bit. */
#ifndef QSUR_QUANT_ROUND_H
#define QSUR_QUANT_ROUND_H

#include <stdint.h>
#include "vector_clones.h"

/* Round half away from zero (like roundf) for |v| < 2^31 (callers clamp
 * first), without a libm call so loops around it vectorise: t = trunc(v) by
 * float->int conversion, then the exact fractional part f = v - t decides
 * +-1 when |f| >= 0.5. */
QSUR_INLINE
static float round_half_away(float v)
{
    float t = (float)(int32_t)v;
    float f = v - t;
    return t + (float)((f >= 0.5f) - (f <= -0.5f));
}

#endif
