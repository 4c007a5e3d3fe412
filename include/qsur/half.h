/* IEEE binary16 and bfloat16 <-> float32, exact in the widening direction and
 * round-to-nearest-even in the narrowing one (NaN stays NaN). Shared by the
 * npy (<f2) and safetensors (F16/BF16) readers and writers. */
#ifndef QSUR_HALF_H
#define QSUR_HALF_H

#include <stdint.h>

float qsur_f16_to_f32(uint16_t h);
uint16_t qsur_f32_to_f16(float f);
float qsur_bf16_to_f32(uint16_t h);
uint16_t qsur_f32_to_bf16(float f);

#endif
