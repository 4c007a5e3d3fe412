/* Seeded pseudo-random numbers for the engine.
 *
 * xoshiro256** (Blackman & Vigna) seeded through splitmix64, so any 64-bit
 * seed (including 0) gives a well-mixed state and the same seed gives the same
 * stream on every machine. Normals come from Box–Muller (both values used).
 * The generator is a plain value owned by the caller: no global state. */
#ifndef QSUR_RNG_H
#define QSUR_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
    int has_spare;   /* Box–Muller makes normals in pairs; the second waits here */
    double spare;
} qsur_rng;

void qsur_rng_seed(qsur_rng *r, uint64_t seed);
uint64_t qsur_rng_next(qsur_rng *r);       /* uniform 64-bit word */
double qsur_rng_uniform(qsur_rng *r);      /* uniform in [0, 1), 53 bits */
double qsur_rng_normal(qsur_rng *r);       /* standard normal N(0, 1) */
float qsur_rng_sign(qsur_rng *r);          /* +1 or -1 with probability 1/2 each */
uint64_t qsur_rng_below(qsur_rng *r, uint64_t n); /* uniform in [0, n), n > 0; unbiased */

#endif
