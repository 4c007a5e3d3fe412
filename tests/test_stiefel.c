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

/* geoopt's RiemannianAdam on CanonicalStiefel, step by step as its source
 * writes it (what the OSTQuant code runs), independent of qsur's Lie-algebra
 * form: the point x and the first moment E (a tangent vector at x, n x n)
 *     r = egrad2rgrad(x, G) = G - x G^T x
 *     E <- b1 E + (1-b1) r,  v <- b2 v + (1-b2) <r, r>_x,
 *     <r, r>_x = sum(r*r) - 0.5 sum((x^T r)*(x^T r))      (component_inner: a scalar)
 *     dir = E / bc1 / (sqrt(v / bc2) + eps),  u = -lr dir
 *     a = u x^T - x u^T,  [x', E'] = (I - a/2)^-1 [x + a x / 2, E + a E / 2]   (retr_transp)
 *     every `stabilize` steps: E' <- proju(x', E') = E' - x' E'^T x'  (x' <- polar(x') is
 *     left out: x' is orthogonal to rounding, and the test checks it stays so). */
typedef struct {
    int n, t, stabilize;
    double *x, *E, v;
} geoopt_radam;

static void mm(const double *A, int ta, const double *B, int tb, double *C, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int k = 0; k < n; k++)
                s += (ta ? A[k * n + i] : A[i * n + k]) * (tb ? B[j * n + k] : B[k * n + j]);
            C[i * n + j] = s;
        }
}

static void geoopt_step(geoopt_radam *g, const double *G, double lr)
{
    int n = g->n, nn = n * n;
    /* calloc: gcc -O2 cannot see that the loops below fill r before mm reads it */
    double *r = calloc((size_t)nn, sizeof(double)), *t1 = calloc((size_t)nn, sizeof(double));
    double *t2 = malloc((size_t)nn * sizeof(double)), *a = malloc((size_t)nn * sizeof(double));
    double *lhs = malloc((size_t)nn * sizeof(double)), *rhs = malloc((size_t)nn * sizeof(double));
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    g->t++;
    mm(G, 1, g->x, 0, t1, n); /* G^T x */
    mm(g->x, 0, t1, 0, t2, n); /* x G^T x */
    for (int i = 0; i < nn; i++)
        r[i] = G[i] - t2[i];
    mm(g->x, 1, r, 0, t1, n); /* x^T r */
    double inner = 0;
    for (int i = 0; i < nn; i++)
        inner += r[i] * r[i] - 0.5 * t1[i] * t1[i];
    for (int i = 0; i < nn; i++)
        g->E[i] = b1 * g->E[i] + (1 - b1) * r[i];
    g->v = b2 * g->v + (1 - b2) * inner;
    double bc1 = 1 - pow(b1, g->t), bc2 = 1 - pow(b2, g->t), den = sqrt(g->v / bc2) + eps;
    for (int i = 0; i < nn; i++)
        t1[i] = -lr * g->E[i] / bc1 / den; /* u */
    mm(t1, 0, g->x, 1, a, n);             /* u x^T */
    mm(g->x, 0, t1, 1, t2, n);            /* x u^T */
    for (int i = 0; i < nn; i++)
        a[i] -= t2[i];
    for (int pass = 0; pass < 2; pass++) {
        double *y = pass ? g->E : g->x;
        mm(a, 0, y, 0, t2, n);
        for (int i = 0; i < nn; i++) {
            rhs[i] = y[i] + 0.5 * t2[i];
            lhs[i] = -0.5 * a[i] + (i / n == i % n ? 1.0 : 0.0);
        }
        naive_solve(lhs, rhs, n);
        memcpy(pass ? t1 : r, rhs, (size_t)nn * sizeof(double)); /* r: x', t1: E' */
    }
    memcpy(g->x, r, (size_t)nn * sizeof(double));
    memcpy(g->E, t1, (size_t)nn * sizeof(double));
    if (g->stabilize > 0 && g->t % g->stabilize == 0) {
        mm(g->E, 1, g->x, 0, t1, n); /* E^T x */
        mm(g->x, 0, t1, 0, t2, n);   /* x E^T x */
        for (int i = 0; i < nn; i++)
            g->E[i] -= t2[i];
    }
    free(r), free(t1), free(t2), free(a), free(lhs), free(rhs);
}

static double max_diff(const double *a, const double *b, int nn)
{
    double w = 0;
    for (int i = 0; i < nn; i++)
        w = fmax(w, fabs(a[i] - b[i]));
    return w;
}

/* qsur's canonical Cayley-Adam (adam-norm=canonical, stabilize) against
 * geoopt_step: after 1, 2 and 25 steps of a linearly decaying lr with random
 * gradients, with geoopt's stabilize=10 and without; and the step length:
 * the first step from any R moves it by 2 sqrt(2) lr in Frobenius norm (u has
 * canonical norm lr, Euclidean norm sqrt(2) lr, and the Cayley retraction of a
 * square x moves it by a x = 2 u to first order). */
static void test_geoopt_radam(void)
{
    enum { N = 6, STEPS = 25 };
    qsur_error err;
    for (int stab = 0; stab <= 10; stab += 10) {
        double x0[N * N], G[N * N], R[N * N], E[N * N] = {0};
        CHECK_OK(qsur_random_orthogonal(N, 11, x0, &err), err);
        memcpy(R, x0, sizeof R);
        geoopt_radam g = {N, 0, stab, malloc(sizeof x0), E, 0.0};
        memcpy(g.x, x0, sizeof x0);
        qsur_stiefel_adam *o = NULL;
        CHECK_OK(qsur_stiefel_adam_new(&o, N, &err), err);
        if (!o)
            return;
        o->canonical = 1;
        o->stabilize = stab;
        double worst = 0;
        for (int t = 0; t < STEPS; t++) {
            double lr = 0.05 * (STEPS - t) / STEPS;
            for (int i = 0; i < N * N; i++)
                G[i] = check_gauss() + (i % 7 == 0 ? 0.8 : 0.0); /* a steady part: momentum builds up */
            CHECK_OK(qsur_stiefel_adam_step(o, R, G, lr, &err), err);
            geoopt_step(&g, G, lr);
            double d = max_diff(R, g.x, N * N);
            worst = fmax(worst, d);
            if (t < 2)
                CHECK_MSG(d < 1e-13, "stabilize %d: step %d: max |R - x_geoopt| = %g", stab, t + 1, d);
        }
        CHECK_MSG(worst < 1e-11, "stabilize %d: %d steps: max |R - x_geoopt| = %g", stab, STEPS, worst);
        CHECK_MSG(max_diff(R, x0, N * N) > 0.2, "stabilize %d: R moved by %g", stab, max_diff(R, x0, N * N));
        CHECK(qsur_orthogonality_error(g.x, N) < 1e-12);
        if (stab) {
            /* the doubling matters: without it qsur parts from geoopt after step 10 */
            double R2[N * N];
            memcpy(R2, x0, sizeof R2);
            qsur_stiefel_adam *o2 = NULL;
            CHECK_OK(qsur_stiefel_adam_new(&o2, N, &err), err);
            o2->canonical = 1;
            check_seed(99);
            geoopt_radam g2 = {N, 0, stab, malloc(sizeof x0), calloc(N * N, sizeof(double)), 0.0};
            memcpy(g2.x, x0, sizeof x0);
            for (int t = 0; t < 12; t++) {
                for (int i = 0; i < N * N; i++)
                    G[i] = check_gauss() + (i % 7 == 0 ? 0.8 : 0.0);
                CHECK_OK(qsur_stiefel_adam_step(o2, R2, G, 0.05, &err), err);
                geoopt_step(&g2, G, 0.05);
            }
            CHECK_MSG(max_diff(R2, g2.x, N * N) > 1e-3, "stabilize off vs geoopt's 10: apart by %g after 12 steps",
                      max_diff(R2, g2.x, N * N));
            free(g2.x), free(g2.E);
            qsur_stiefel_adam_free(o2);
        }
        free(g.x);
        qsur_stiefel_adam_free(o);
    }
    /* the first step's length, 2 sqrt(2) lr, for a small lr and any gradient */
    double R[N * N], R0[N * N], G[N * N], lr = 1e-5;
    CHECK_OK(qsur_random_orthogonal(N, 3, R0, &err), err);
    memcpy(R, R0, sizeof R);
    for (int i = 0; i < N * N; i++)
        G[i] = 3.0 * check_gauss();
    qsur_stiefel_adam *o = NULL;
    CHECK_OK(qsur_stiefel_adam_new(&o, N, &err), err);
    if (!o)
        return;
    o->canonical = 1;
    CHECK_OK(qsur_stiefel_adam_step(o, R, G, lr, &err), err);
    double ss = 0;
    for (int i = 0; i < N * N; i++)
        ss += (R[i] - R0[i]) * (R[i] - R0[i]);
    CHECK_MSG(fabs(sqrt(ss) / lr - 2 * sqrt(2.0)) < 1e-4, "first step |dR| / lr = %.8f, want 2 sqrt 2 = %.8f",
              sqrt(ss) / lr, 2 * sqrt(2.0));
    qsur_stiefel_adam_free(o);
}

int main(void)
{
    check_seed(17);
    test_adam_scaling();
    test_cayley(5, 0.7);
    test_cayley(70, 0.3);
    test_step_left();
    test_geoopt_radam();
    return check_done();
}
