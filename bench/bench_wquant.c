/* Time per layer of GPTQ, QuantEase (3 sweeps), AWQ (21-point grid) and CQE+
 * (STEPS Adam steps, band 1, full rank: the SVD plus 3 GEMMs of n^3 per step) on a
 * synthetic 4096 x 4096 layer with 4096 heavy-tailed calibration tokens and
 * outlier channels, as ratios against GPTQ measured in the same run.
 * Usage: bench_wquant [dim] [tokens] [cqe steps]   (defaults 4096 4096 5; int4 sym group128) */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "qsur/awq.h"
#include "qsur/cqe.h"
#include "qsur/gptq.h"
#include "qsur/quant.h"
#include "qsur/rng.h"
#include "qsur/quantease.h"
#include "qsur/tensor.h"
#include "qsur/wquant.h"

/* Benchmark data from the engine's seeded generator (one stream). */
static qsur_rng bench_rng;
static double gauss(void)
{
    return qsur_rng_normal(&bench_rng);
}
/* Student t with 3 degrees of freedom: heavy tails. */
static double t3(void)
{
    double c = 0;
    for (int k = 0; k < 3; k++) {
        double g = gauss();
        c += g * g;
    }
    return gauss() / sqrt(c / 3.0);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int fail(const char *what, qsur_error *err)
{
    fprintf(stderr, "bench_wquant: %s: %s\n", what, err->msg);
    return 1;
}

int main(int argc, char **argv)
{
    qsur_rng_seed(&bench_rng, 42);
    int64_t n = argc > 1 ? atoll(argv[1]) : 4096, ntok = argc > 2 ? atoll(argv[2]) : 4096;
    int cqe_steps = argc > 3 ? atoi(argv[3]) : 5;
    int64_t m = n;
    if (n < 128 || n % 128 || ntok < 1) {
        fprintf(stderr, "usage: bench_wquant [dim (multiple of 128)] [tokens]\n");
        return 2;
    }
    float *W = qsur_alloc((size_t)(m * n), sizeof(float));
    float *X = qsur_alloc((size_t)(ntok * n), sizeof(float));
    float *Q = qsur_alloc((size_t)(m * n), sizeof(float));
    double *H = qsur_alloc((size_t)(n * n), sizeof(double));
    if (!W || !X || !Q || !H) {
        fprintf(stderr, "bench_wquant: out of memory\n");
        return 1;
    }
    for (int64_t i = 0; i < m * n; i++)
        W[i] = (float)(0.02 * t3());
    double *chan = malloc((size_t)n * sizeof *chan);
    for (int64_t j = 0; j < n; j++) /* every 97th channel is an outlier channel */
        chan[j] = (j % 97 == 5 ? 30.0 : 1.0) * exp(0.5 * gauss());
    for (int64_t t = 0; t < ntok; t++)
        for (int64_t j = 0; j < n; j++)
            X[t * n + j] = (float)(chan[j] * t3());
    free(chan);

    qsur_error err;
    qsur_quant_spec q = qsur_quant_default();
    q.gran = QSUR_GRAN_GROUP;
    q.group = 128;
    char desc[64];
    qsur_quant_describe(&q, desc, sizeof desc);
    printf("layer %lldx%lld, %lld tokens, %s\n", (long long)m, (long long)n, (long long)ntok, desc);

    double t0 = now();
    if (qsur_gram(X, ntok, n, H, NULL, &err))
        return fail("gram", &err);
    double t_gram = now() - t0;
    qsur_wquant_layer LH = {W, m, n, NULL, 0, H}; /* GPTQ and QuantEase from the shared H */
    qsur_wquant_layer LX = {W, m, n, X, ntok, NULL}; /* AWQ needs X's statistics */

    double ref, e;
    for (int64_t i = 0; i < m * n; i++)
        Q[i] = 0.0f;
    if (qsur_wquant_objective(W, Q, m, n, H, &ref, &err))
        return fail("objective", &err);
    if (qsur_fake_quant(&q, W, m, n, Q, NULL, &err) ||
        qsur_wquant_objective(W, Q, m, n, H, &e, &err))
        return fail("rtn", &err);
    printf("%-22s %8s %8s  rel output error %.4f\n", "rtn", "", "", sqrt(e / ref));
    printf("%-22s %7.2fs\n", "gram X^T X", t_gram);

    t0 = now();
    qsur_gptq_opts go = qsur_gptq_default();
    if (qsur_gptq(&LH, &q, &go, Q, NULL, NULL, &err))
        return fail("gptq", &err);
    double t_gptq = now() - t0;
    if (qsur_wquant_objective(W, Q, m, n, H, &e, &err))
        return fail("objective", &err);
    printf("%-22s %7.2fs %7.2fx  rel output error %.4f\n", "gptq", t_gptq, 1.0, sqrt(e / ref));

    t0 = now();
    qsur_quantease_opts qo = qsur_quantease_default();
    qo.sweeps = 3;
    double f[4];
    if (qsur_quantease(&LH, &q, &qo, Q, NULL, NULL, f, NULL, &err))
        return fail("quantease", &err);
    double t_qe = now() - t0;
    printf("%-22s %7.2fs %7.2fx  rel output error %.4f (sweeps: %.4f %.4f %.4f %.4f)\n",
           "quantease 3 sweeps", t_qe, t_qe / t_gptq, sqrt(f[3] / ref), sqrt(f[0] / ref),
           sqrt(f[1] / ref), sqrt(f[2] / ref), sqrt(f[3] / ref));

    t0 = now();
    qsur_awq_opts ao = qsur_awq_default();
    qsur_awq_result ar;
    if (qsur_awq(&LX, &q, &ao, Q, NULL, NULL, &ar, NULL, &err))
        return fail("awq", &err);
    double t_awq = now() - t0;
    printf("%-22s %7.2fs %7.2fx  rel output error %.4f (a=%.2f)\n", "awq 21-point grid", t_awq,
           t_awq / t_gptq, ar.error, ar.alpha);

    t0 = now();
    qsur_cqe_opts co = qsur_cqe_default();
    co.steps = cqe_steps < 0 ? 0 : cqe_steps;
    qsur_cqe_result cr;
    if (qsur_cqe(&LH, &q, &co, Q, NULL, NULL, &cr, NULL, &err))
        return fail("cqe", &err);
    double t_cqe = now() - t0;
    char label[32];
    snprintf(label, sizeof label, "cqe+ %d steps", co.steps);
    printf("%-22s %7.2fs %7.2fx  rel output error %.4f (best step %d)\n", label, t_cqe, t_cqe / t_gptq,
           sqrt(cr.loss / ref), cr.best_step);
    free(W);
    free(X);
    free(Q);
    free(H);
    return 0;
}
