/* The Cayley retraction against a naive double-precision solve written here,
 * and Cayley-Adam given P = G R^T against the same optimiser given G.
 * (Descent and orthogonality over thousands of steps: test_ostquant_grad.c.) */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/orthogonal.h"
#include "qsur/stiefel.h"

/* X = M^-1 B by Gauss-Jordan with partial pivoting (n x n, row-major, destroys M) */
static void naive_solve(double *M, double *B, int n)
{
    for (int c = 0; c < n; c++) {
        int p = c;
        for (int r = c + 1; r < n; r++)
            if (fabs(M[r * n + c]) > fabs(M[p * n + c]))
                p = r;
        for (int j = 0; j < n; j++) {
            double t = M[c * n + j];
            M[c * n + j] = M[p * n + j];
            M[p * n + j] = t;
            t = B[c * n + j];
            B[c * n + j] = B[p * n + j];
            B[p * n + j] = t;
        }
        for (int r = 0; r < n; r++) {
            if (r == c)
                continue;
            double f = M[r * n + c] / M[c * n + c];
            for (int j = 0; j < n; j++) {
                M[r * n + j] -= f * M[c * n + j];
                B[r * n + j] -= f * B[c * n + j];
            }
        }
    }
    for (int r = 0; r < n; r++)
        for (int j = 0; j < n; j++)
            B[r * n + j] /= M[r * n + r];
}

static void random_skew(double *D, int n, double s)
{
    for (int i = 0; i < n; i++) {
        D[i * n + i] = 0;
        for (int j = i + 1; j < n; j++) {
            D[i * n + j] = s * check_gauss();
            D[j * n + i] = -D[i * n + j];
        }
    }
}

/* R' = (I + a/2 D)^-1 (I - a/2 D) R, the textbook form, for n not a multiple
 * of the 32-wide tiles and a step large enough that a wrong sign shows */
static void test_cayley(int n, double a)
{
    qsur_error err;
    double *R = malloc((size_t)(n * n) * sizeof(double)), *D = malloc((size_t)(n * n) * sizeof(double));
    double *M = malloc((size_t)(n * n) * sizeof(double)), *N = malloc((size_t)(n * n) * sizeof(double));
    double *work = malloc((size_t)(2 * n * n) * sizeof(double));
    int *ipiv = malloc((size_t)n * sizeof(int));
    CHECK_OK(qsur_random_orthogonal(n, 3, R, &err), err);
    random_skew(D, n, 1.0 / sqrt((double)n));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double dr = 0;
            for (int k = 0; k < n; k++)
                dr += D[i * n + k] * R[k * n + j];
            N[i * n + j] = R[i * n + j] - 0.5 * a * dr;
            M[i * n + j] = (i == j) + 0.5 * a * D[i * n + j];
        }
    naive_solve(M, N, n);
    CHECK_OK(qsur_cayley_apply(n, R, D, a, work, ipiv, &err), err);
    double worst = 0, moved = 0;
    for (int i = 0; i < n * n; i++)
        worst = fmax(worst, fabs(R[i] - N[i]));
    CHECK_MSG(worst < 1e-12, "cayley n=%d a=%g: max |R' - naive| = %g", n, a, worst);
    CHECK_MSG(qsur_orthogonality_error(R, n) < 1e-13, "cayley n=%d: R'^T R' = I (%g)", n,
              qsur_orthogonality_error(R, n));
    /* the step really moves R (a do-nothing retraction would pass the checks above
     * only if the naive reference were also the identity) */
    CHECK_OK(qsur_random_orthogonal(n, 3, M, &err), err);
    for (int i = 0; i < n * n; i++)
        moved = fmax(moved, fabs(R[i] - M[i]));
    CHECK_MSG(moved > 0.05, "cayley n=%d moved R by %g", n, moved);
    free(R);
    free(D);
    free(M);
    free(N);
    free(work);
    free(ipiv);
}

/* step_left(P = G R^T) is the same optimiser as step(G) */
static void test_step_left(void)
{
    enum { N = 37 };
    qsur_error err;
    double R1[N * N], R2[N * N], G[N * N], P[N * N];
    CHECK_OK(qsur_random_orthogonal(N, 5, R1, &err), err);
    memcpy(R2, R1, sizeof R1);
    qsur_stiefel_adam *o1 = NULL, *o2 = NULL;
    CHECK_OK(qsur_stiefel_adam_new(&o1, N, &err), err);
    CHECK_OK(qsur_stiefel_adam_new(&o2, N, &err), err);
    double worst = 0, moved = 0;
    for (int step = 0; step < 20 && o1 && o2; step++) {
        for (int i = 0; i < N * N; i++)
            G[i] = check_gauss();
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                double s = 0;
                for (int k = 0; k < N; k++)
                    s += G[i * N + k] * R2[j * N + k];
                P[i * N + j] = s;
            }
        CHECK_OK(qsur_stiefel_adam_step(o1, R1, G, 0.05, &err), err);
        CHECK_OK(qsur_stiefel_adam_step_left(o2, R2, P, 0.05, &err), err);
    }
    for (int i = 0; i < N * N; i++)
        worst = fmax(worst, fabs(R1[i] - R2[i]));
    CHECK_OK(qsur_random_orthogonal(N, 5, G, &err), err);
    for (int i = 0; i < N * N; i++)
        moved = fmax(moved, fabs(R1[i] - G[i]));
    CHECK_MSG(worst < 1e-11, "step_left == step: max |R1 - R2| = %g", worst);
    CHECK_MSG(moved > 0.1, "20 steps moved R by %g", moved);
    CHECK_MSG(qsur_orthogonality_error(R2, N) < 1e-13, "step_left keeps R orthogonal (%g)",
              qsur_orthogonality_error(R2, N));
    /* a non-finite P is refused with a message, R untouched */
    memcpy(G, R2, sizeof G);
    P[5] = NAN;
    CHECK(qsur_stiefel_adam_step_left(o2, R2, P, 0.05, &err) == QSUR_ERR_NUMERIC);
    CHECK(memcmp(G, R2, sizeof G) == 0);
    qsur_stiefel_adam_free(o1);
    qsur_stiefel_adam_free(o2);
}

/* One Adam step from R = I in 2 x 2 with G = [[0, g], [0, 0]]: A = G - G^T =
 * a J with J = [[0, 1], [-1, 0]], a = g. At t = 1 the bias-corrected moments
 * are m^ = A and v^ = mean(A^2) = a^2 / 2 (mean form: D = sqrt 2 sign(a) J) or
 * v^ = ||A||^2 / 2 = a^2 (canonical, geoopt: D = 2 m^/sqrt(v^) = 2 sign(a) J).
 * The Cayley step of a skew c J is the rotation [[1-u^2, -2u], [2u, 1-u^2]] /
 * (1+u^2) with u = lr c / 2. Each form with the solve on the CPU, then on the
 * GPU (where one is usable). */
static void test_adam_scaling(void)
{
    qsur_error err;
    for (int k = 0; k < 4; k++) {
        int canonical = k & 1, gpu = k >> 1;
        qsur_stiefel_adam *o = NULL;
        CHECK_OK(qsur_stiefel_adam_new(&o, 2, &err), err);
        if (!o)
            return;
        o->canonical = canonical;
        /* the solve on the GPU where one is usable; else the refusal changes
         * nothing and the step runs on the CPU */
        if (gpu && qsur_stiefel_adam_use_gpu(o, 1, &err) != QSUR_OK)
            CHECK_MSG(o->gpu == NULL && err.msg[0], "a refused use_gpu leaves the CPU solve");
        double R[4] = {1, 0, 0, 1}, G[4] = {0, -0.37, 0, 0}, lr = 0.3;
        CHECK_OK(qsur_stiefel_adam_step(o, R, G, lr, &err), err);
        double c = (canonical ? 2.0 : sqrt(2.0)) * -1.0, u = lr * c / 2;
        double want[4] = {(1 - u * u) / (1 + u * u), -2 * u / (1 + u * u), 2 * u / (1 + u * u),
                          (1 - u * u) / (1 + u * u)};
        for (int i = 0; i < 4; i++)
            CHECK_MSG(fabs(R[i] - want[i]) < 1e-7, "canonical %d: R[%d] = %.9f, want %.9f", canonical, i, R[i],
                      want[i]);
        CHECK_OK(qsur_stiefel_adam_use_gpu(o, 0, &err), err); /* back on the CPU */
        CHECK(o->gpu == NULL);
        qsur_stiefel_adam_free(o);
    }
}

int main(void)
{
    check_seed(17);
    test_adam_scaling();
    test_cayley(5, 0.7);
    test_cayley(70, 0.3);
    test_step_left();
    return check_done();
}
