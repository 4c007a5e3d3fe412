/* The Stiefel optimiser's Cayley retraction on the GPU (qsur_gpu_cayley_*,
 * qsur_stiefel_adam_use_gpu) against the CPU's (label gpu; exit 77 = skipped
 * when no GPU is usable). Written without a GPU at hand: not yet run on one
 * (docs/gpu.md).
 *  - one retraction, n = 64, 172, 1024: the GPU's R within 1e-12 of the
 *    CPU's, orthogonal to 1e-12, and solving the Cayley system itself:
 *    max |(I + a/2 D) R' - (I - a/2 D) R| <= 1e-12 (computed here in double);
 *  - five Cayley-Adam steps (n = 256, the same seeded gradients) with the
 *    solve on the GPU and on the CPU: R within 1e-10. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "gpu_common.h"
#include "qsur/backend.h"
#include "qsur/clock.h"
#include "qsur/stiefel.h"

/* a random skew n x n matrix, entries in +-s */
static void skew(double *D, int64_t n, double s)
{
    for (int64_t i = 0; i < n; i++) {
        D[i * n + i] = 0.0;
        for (int64_t j = i + 1; j < n; j++) {
            double v = (2.0 * check_uniform() - 1.0) * s;
            D[i * n + j] = v;
            D[j * n + i] = -v;
        }
    }
}

static double max_diff(const double *a, const double *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

/* max |(I + a/2 D) X - (I - a/2 D) R| */
static double cayley_residual(const double *X, const double *R, const double *D, double a, int64_t n)
{
    double worst = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double l = X[i * n + j], r = R[i * n + j];
            for (int64_t k = 0; k < n; k++) {
                l += 0.5 * a * D[i * n + k] * X[k * n + j];
                r -= 0.5 * a * D[i * n + k] * R[k * n + j];
            }
            worst = fmax(worst, fabs(l - r));
        }
    return worst;
}

static void one(int64_t n)
{
    qsur_error err;
    size_t nn = (size_t)(n * n);
    double *R = malloc(nn * sizeof *R), *Rc = malloc(nn * sizeof *Rc), *Rg = malloc(nn * sizeof *Rg);
    double *D = malloc(nn * sizeof *D), *work = malloc(2 * nn * sizeof *work);
    int *ipiv = malloc((size_t)n * sizeof *ipiv);
    qsur_gpu_cayley *g = NULL;
    if (!R || !Rc || !Rg || !D || !work || !ipiv) {
        CHECK(0);
        goto out;
    }
    check_seed(21 + (uint64_t)n);
    /* R: a random rotation (the Cayley transform of a random skew matrix) */
    memset(R, 0, nn * sizeof *R);
    for (int64_t i = 0; i < n; i++)
        R[i * n + i] = 1.0;
    skew(D, n, 1.0 / sqrt((double)n));
    CHECK_OK(qsur_cayley_apply(n, R, D, 1.0, work, ipiv, &err), err);
    skew(D, n, 1.0);
    const double a = 0.05;
    memcpy(Rc, R, nn * sizeof *R);
    memcpy(Rg, R, nn * sizeof *R);
    double t0 = qsur_seconds();
    CHECK_OK(qsur_cayley_apply(n, Rc, D, a, work, ipiv, &err), err);
    double t1 = qsur_seconds();
    CHECK_OK(qsur_gpu_cayley_new(&g, n, &err), err);
    if (!g)
        goto out;
    CHECK_OK(qsur_gpu_cayley_apply(g, Rg, D, a, &err), err);
    double t2 = qsur_seconds();
    double d = max_diff(Rg, Rc, (int64_t)nn), o = qsur_orthogonality_error(Rg, n);
    double res = cayley_residual(Rg, R, D, a, n);
    printf("cayley n=%lld: |gpu - cpu| %.3g, orthogonality %.3g, residual %.3g (cpu %.3f s, gpu %.3f s with setup)\n",
           (long long)n, d, o, res, t1 - t0, t2 - t1);
    CHECK(d <= 1e-12);
    CHECK(o <= 1e-12);
    CHECK(res <= 1e-12);
out:
    qsur_gpu_cayley_free(g);
    free(R), free(Rc), free(Rg), free(D), free(work), free(ipiv);
}

static void steps(int64_t n)
{
    qsur_error err;
    size_t nn = (size_t)(n * n);
    qsur_stiefel_adam *oc = NULL, *og = NULL;
    double *Rc = calloc(nn, sizeof *Rc), *Rg = calloc(nn, sizeof *Rg), *G = malloc(nn * sizeof *G);
    CHECK_OK(qsur_stiefel_adam_new(&oc, n, &err), err);
    CHECK_OK(qsur_stiefel_adam_new(&og, n, &err), err);
    if (!oc || !og || !Rc || !Rg || !G) {
        CHECK(0);
        goto out;
    }
    CHECK_OK(qsur_stiefel_adam_use_gpu(og, 1, &err), err);
    CHECK(og->gpu != NULL);
    for (int64_t i = 0; i < n; i++)
        Rc[i * n + i] = Rg[i * n + i] = 1.0;
    check_seed(31);
    for (int s = 0; s < 5; s++) {
        for (size_t i = 0; i < nn; i++)
            G[i] = 2.0 * check_uniform() - 1.0;
        CHECK_OK(qsur_stiefel_adam_step(oc, Rc, G, 1e-2, &err), err);
        CHECK_OK(qsur_stiefel_adam_step(og, Rg, G, 1e-2, &err), err);
    }
    double d = max_diff(Rg, Rc, (int64_t)nn), moved = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            moved = fmax(moved, fabs(Rc[i * n + j] - (i == j)));
    printf("5 Cayley-Adam steps n=%lld: |gpu - cpu| %.3g (R moved %.3g from I), orthogonality %.3g\n",
           (long long)n, d, moved, qsur_orthogonality_error(Rg, n));
    CHECK(moved > 1e-3); /* the steps did something */
    CHECK(d <= 1e-10);
    CHECK(qsur_orthogonality_error(Rg, n) <= 1e-12);
out:
    qsur_stiefel_adam_free(oc);
    qsur_stiefel_adam_free(og);
    free(Rc), free(Rg), free(G);
}

int main(void)
{
    if (gpu_skip())
        return 77;
    one(64);
    one(172);
    one(1024);
    steps(256);
    return check_done();
}
