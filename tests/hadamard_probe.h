/* Shared by test_hadamard.c (n <= 1024) and slow_hadamard_plans.c (n <= 4096). */
#ifndef HADAMARD_PROBE_H
#define HADAMARD_PROBE_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/hadamard.h"
#include "qsur/rng.h"

static void probe_fill_normal(float *x, int64_t n, uint64_t seed)
{
    qsur_rng r;
    qsur_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)qsur_rng_normal(&r);
}

/* Every n in 1..limit with a true Hadamard plan (and every 2^k): the fast plan
 * preserves norms and inner products of random probes and its transpose
 * inverts it. For a fixed matrix M, x M M^T = x for random x fails with
 * probability 0 unless M M^T = I (Freivalds), so this checks R^T R = I for each
 * n at O(n (k + m)) cost instead of O(n^3). */
static int hadamard_probe_all(int64_t limit)
{
    qsur_error err;
    int tested = 0;
    double worst = 0;
    for (int64_t n = 1; n <= limit; n++) {
        if (!qsur_hadamard_factor(n, NULL, NULL, NULL, NULL))
            continue;
        qsur_hadamard_opts o = {(int)(n % 2 == 0 && n % 3 == 0), (uint64_t)n};
        qsur_hadamard_plan *p = NULL;
        int rc = qsur_hadamard_plan_new(&p, n, &o, &err);
        CHECK_OK(rc, err);
        if (rc)
            continue;
        tested++;
        float *x = malloc(sizeof(float) * 2 * n), *y = malloc(sizeof(float) * 2 * n);
        probe_fill_normal(x, 2 * n, 7 * (uint64_t)n);
        memcpy(y, x, sizeof(float) * 2 * n);
        CHECK_OK(qsur_hadamard_plan_apply(p, y, 2, NULL, &err), err);
        double d0 = 0, d1 = 0, n0 = 0, n1 = 0, m0 = 0, m1 = 0;
        for (int64_t i = 0; i < n; i++) {
            d0 += (double)x[i] * x[n + i];
            d1 += (double)y[i] * y[n + i];
            n0 += (double)x[i] * x[i];
            n1 += (double)y[i] * y[i];
            m0 += (double)x[n + i] * x[n + i];
            m1 += (double)y[n + i] * y[n + i];
        }
        double e = fmax(fabs(n1 - n0) / n0, fmax(fabs(m1 - m0) / m0, fabs(d1 - d0) / sqrt(n0 * m0)));
        CHECK_MSG(e < 1e-5, "n=%lld (%s): inner products changed by %g", (long long)n, p->desc, e);
        CHECK_OK(qsur_hadamard_plan_apply_transpose(p, y, 2, NULL, &err), err);
        double back = 0;
        for (int64_t i = 0; i < 2 * n; i++)
            back = fmax(back, fabs((double)x[i] - y[i]));
        CHECK_MSG(back < 1e-5, "n=%lld (%s): x R R^T != x, err %g", (long long)n, p->desc, back);
        worst = fmax(worst, fmax(e, back));
        free(x);
        free(y);
        qsur_hadamard_plan_free(p);
    }
    printf("plans checked: every n <= %lld with a Hadamard plan, %d sizes, worst error %.3g\n",
           (long long)limit, tested, worst);
    return tested;
}

#endif
