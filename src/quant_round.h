/* Internal (not installed): the rounding every quantizer kernel uses, so
 * fake quant (quant.c), its straight-through gradient (quant_ste.c) and the
 * CUDA kernels (backend/cuda/kernels.cu; __host__ __device__ under nvcc)
 * agree on each code bit for bit. */
#ifndef QSUR_QUANT_ROUND_H
#define QSUR_QUANT_ROUND_H

#include <stdint.h>
#ifdef __CUDACC__
#define QSUR_ROUND_FN static inline __host__ __device__
#else
#include "vector_clones.h"
#define QSUR_ROUND_FN QSUR_INLINE static
#endif

/* Round half away from zero (like roundf) for |v| < 2^31 (callers clamp
 * first), without a libm call so loops around it vectorise: t = trunc(v) by
 * float->int conversion, then the exact fractional part f = v - t decides
 * +-1 when |f| >= 0.5. A difference and a sum, no product: no compiler can
 * contract them into an FMA, on either side. */
QSUR_ROUND_FN float round_half_away(float v)
{
    float t = (float)(int32_t)v;
    float f = v - t;
    return t + (float)((f >= 0.5f) - (f <= -0.5f));
}

#endif
