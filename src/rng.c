/* xoshiro256** with splitmix64 seeding, Box–Muller normals. */
#include <math.h>
#include "qsur/rng.h"

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void qsur_rng_seed(qsur_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
    /* splitmix64 never yields four zero words in a row, so the xoshiro state
     * is never the all-zero fixed point. */
    r->has_spare = 0;
    r->spare = 0.0;
}

uint64_t qsur_rng_next(qsur_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double qsur_rng_uniform(qsur_rng *r)
{
    return (double)(qsur_rng_next(r) >> 11) * 0x1.0p-53;
}

double qsur_rng_normal(qsur_rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    /* u1 in (0, 1] so log(u1) is finite. */
    double u1 = 1.0 - qsur_rng_uniform(r);
    double u2 = qsur_rng_uniform(r);
    double rad = sqrt(-2.0 * log(u1));
    double th = 2.0 * M_PI * u2;
    r->spare = rad * sin(th);
    r->has_spare = 1;
    return rad * cos(th);
}

float qsur_rng_sign(qsur_rng *r)
{
    return (qsur_rng_next(r) >> 63) ? -1.0f : 1.0f;
}

uint64_t qsur_rng_below(qsur_rng *r, uint64_t n)
{
    /* Rejection of the top partial bucket keeps the result exactly uniform. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do {
        x = qsur_rng_next(r);
    } while (x >= limit);
    return x % n;
}
