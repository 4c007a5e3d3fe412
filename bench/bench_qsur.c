/* Full vs incremental QSUR on a heavy-tailed activation of d = 4096 channels.
 * n = 5120 tokens, not 4096: with n <= d the centred covariance is singular
 * and QSUR is 0 by definition (the engine short-circuits that case).
 * Data: Student-t (3 dof) per entry, channel scales log-normal, 8 outlier
 * channels at 50x, and a shared low-rank component so S is not diagonal.
 * Usage: bench_qsur [n d] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "qsur/qsur.h"
#include "qsur/tensor.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t rs = 2463534242ull;
static double urand(void)
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return ((double)(rs >> 11) + 0.5) / 9007199254740992.0;
}
static double nrand(void)
{
    return sqrt(-2.0 * log(urand())) * cos(2.0 * M_PI * urand());
}

/* Records when the eigen/Cholesky stage starts, to split the full time. */
typedef struct {
    double t_start, t_eigen;
} split;
static int on_tick(void *ctx, double done, const char *what, double value)
{
    (void)done, (void)value;
    split *sp = ctx;
    if (what[0] != 'c' && sp->t_eigen == 0)
        sp->t_eigen = now();
    return 0;
}

int main(int argc, char **argv)
{
    int64_t n = argc > 2 ? atoll(argv[1]) : 5120, d = argc > 2 ? atoll(argv[2]) : 4096;
    float *x = qsur_alloc((size_t)(n * d), sizeof(float));
    float *y = qsur_alloc((size_t)(n * d), sizeof(float));
    double *scale = malloc((size_t)d * sizeof(double)), *dir = malloc((size_t)d * sizeof(double));
    float *s = malloc((size_t)d * sizeof(float));
    if (!x || !y || !scale || !dir || !s)
        return 1;
    for (int64_t j = 0; j < d; j++) {
        scale[j] = exp(0.5 * nrand()) * (j % 512 == 7 ? 50.0 : 1.0);
        dir[j] = nrand();
    }
    for (int64_t r = 0; r < n; r++) {
        double shared = nrand();
        for (int64_t j = 0; j < d; j++) {
            double z = nrand(), a = nrand(), b = nrand(), c = nrand();
            double t = z / sqrt((a * a + b * b + c * c) / 3.0);
            x[r * d + j] = (float)(scale[j] * (t + 0.5 * shared * dir[j]) + 0.1);
        }
    }
    qsur_error err;
    qsur_method methods[3] = {QSUR_METHOD_EIG_DOUBLE, QSUR_METHOD_EIG_FLOAT, QSUR_METHOD_CHOLESKY};
    double tfull[3];
    qsur_result res[3];
    qsur_state *st = NULL;
    printf("activation %lldx%lld, heavy-tailed\n", (long long)n, (long long)d);
    for (int m = 0; m < 3; m++) {
        qsur_options o = qsur_options_default();
        o.method = methods[m];
        qsur_state *cur = NULL;
        if (qsur_state_new(&cur, d, &o, &err) != QSUR_OK)
            return 1;
        split sp = {now(), 0};
        qsur_progress prog = {on_tick, &sp};
        double t0 = sp.t_start;
        if (qsur_state_full(cur, x, n, &res[m], &prog, &err) != QSUR_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        tfull[m] = now() - t0;
        printf("full %-10s %7.3f s (moments+covariance %.3f s, decomposition %.3f s)\n"
               "     log10 QSUR %.6f  per-dim %.6f  ln det %.6f  lambda %.3g..%.3g %s\n",
               qsur_method_name(methods[m]), tfull[m], sp.t_eigen - t0, now() - sp.t_eigen, res[m].log10_qsur, res[m].per_dim,
               res[m].log_det, res[m].lambda_min, res[m].lambda_max, res[m].reason);
        if (m == 0)
            st = cur;
        else
            qsur_state_free(cur);
    }
    /* Incremental: X' = X S^-1 with s_j = absmax-like channel scale (a
     * SmoothQuant-style equaliser); the update needs only X' and -2 sum ln s. */
    for (int64_t j = 0; j < d; j++)
        s[j] = (float)scale[j];
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < d; j++)
            y[r * d + j] = x[r * d + j] / s[j];
    double delta = qsur_log_det_change(s, d, 0);
    qsur_result inc;
    int reps = 5;
    double t0 = now();
    for (int k = 0; k < reps; k++) {
        if (qsur_state_update(st, y, n, k == 0 ? delta : 0.0, &inc, &err) != QSUR_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    }
    double tinc = (now() - t0) / reps;
    printf("incremental          %7.3f s  log10 QSUR %.6f  per-dim %.6f  (after scaling by 1/s)\n",
           tinc, inc.log10_qsur, inc.per_dim);
    printf("summary: full eig-double %.2f s, eig-float %.2f s, cholesky %.2f s, incremental %.3f s, "
           "full/incremental %.0fx\n",
           tfull[0], tfull[1], tfull[2], tinc, tfull[0] / tinc);
    qsur_state_free(st);
    free(x), free(y), free(scale), free(dir), free(s);
    return 0;
}
