/* Transform steps: exact layer equivalence for every kind, PCA diagonalises,
 * SmoothQuant balances, random orthogonal is orthogonal and seeded. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/orthogonal.h"
#include "qsur/rng.h"
#include "qsur/transform.h"

enum { NTOK = 300, NOUT = 96 };

/* Activations with a few outlier channels (x40) and a mean offset, weights
 * with a few large input columns — the shape SmoothQuant and rotations target. */
static void make_layer(int64_t d, float *X, float *W, uint64_t seed)
{
    qsur_rng r;
    qsur_rng_seed(&r, seed);
    for (int64_t i = 0; i < NTOK; i++)
        for (int64_t j = 0; j < d; j++) {
            double v = qsur_rng_normal(&r) + 0.3;
            if (j == 3 || j == d / 2 || j == d - 1)
                v *= 40.0;
            X[i * d + j] = (float)v;
        }
    for (int64_t i = 0; i < NOUT; i++)
        for (int64_t j = 0; j < d; j++)
            W[i * d + j] = (float)(qsur_rng_normal(&r) * (j == 7 ? 5.0 : 0.1));
}

static float *dup(const float *x, int64_t n)
{
    float *y = malloc(sizeof(float) * (size_t)n);
    memcpy(y, x, sizeof(float) * (size_t)n);
    return y;
}

/* Naive double covariance of a (n x d) float matrix, centred. */
static void covariance(const float *X, int64_t n, int64_t d, double *C)
{
    double *mu = calloc((size_t)d, sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            mu[j] += X[i * d + j] / (double)n;
    for (int64_t a = 0; a < d; a++)
        for (int64_t b = 0; b < d; b++) {
            double s = 0;
            for (int64_t i = 0; i < n; i++)
                s += (X[i * d + a] - mu[a]) * (X[i * d + b] - mu[b]);
            C[a * d + b] = s / (double)n;
        }
    free(mu);
}

static int stop_at_once(void *ctx, double done, const char *what, double value)
{
    (void)ctx; (void)done; (void)what; (void)value;
    return 1;
}

static void check_equivalence(qsur_transform *t, const float *X, const float *W, int64_t d)
{
    qsur_error err;
    float *X2 = dup(X, NTOK * d), *W2 = dup(W, NOUT * d);
    CHECK_OK(qsur_transform_apply(t, X2, NTOK, W2, NOUT, NULL, &err), err);
    double e;
    CHECK_OK(qsur_transform_equivalence_error(X, W, X2, W2, NTOK, NOUT, d, &e, &err), err);
    CHECK_MSG(e < 1e-5, "d=%lld %s: equivalence error %g", (long long)d, t->desc, e);
    /* The step must actually change X (a no-op would pass the line above). */
    double moved = 0;
    for (int64_t i = 0; i < NTOK * d; i++)
        moved = fmax(moved, fabs(X2[i] - X[i]));
    CHECK_MSG(moved > 1e-3, "d=%lld %s: X unchanged", (long long)d, t->desc);

    /* One side at a time gives the same floats as the pair. */
    float *Xa = dup(X, NTOK * d), *Wa = dup(W, NOUT * d);
    CHECK_OK(qsur_transform_apply(t, Xa, NTOK, NULL, 0, NULL, &err), err);
    CHECK_OK(qsur_transform_apply(t, NULL, 0, Wa, NOUT, NULL, &err), err);
    CHECK(memcmp(Xa, X2, sizeof(float) * NTOK * d) == 0);
    CHECK(memcmp(Wa, W2, sizeof(float) * NOUT * d) == 0);

    /* Out of place: the same floats, and the inputs are never written. */
    float *Xo = malloc(sizeof(float) * NTOK * d), *Wo = malloc(sizeof(float) * NOUT * d);
    float *Xi = dup(X, NTOK * d), *Wi = dup(W, NOUT * d);
    CHECK_OK(qsur_transform_apply_into(t, Xi, Xo, NTOK, Wi, Wo, NOUT, NULL, &err), err);
    CHECK(memcmp(Xo, X2, sizeof(float) * NTOK * d) == 0 && memcmp(Wo, W2, sizeof(float) * NOUT * d) == 0);
    CHECK(memcmp(Xi, X, sizeof(float) * NTOK * d) == 0 && memcmp(Wi, W, sizeof(float) * NOUT * d) == 0);
    qsur_progress stop = {stop_at_once, NULL};
    CHECK(qsur_transform_apply_into(t, Xi, Xo, NTOK, Wi, Wo, NOUT, &stop, &err) == QSUR_ERR_INTERRUPTED);
    CHECK(memcmp(Xi, X, sizeof(float) * NTOK * d) == 0 && memcmp(Wi, W, sizeof(float) * NOUT * d) == 0);
    free(Xo);
    free(Wo);
    free(Xi);
    free(Wi);

    /* X' = X S^-1 R against the dense R and s, in double. */
    float *R = malloc(sizeof(float) * d * d);
    qsur_transform_rotation_dense(t, R);
    double worst = 0;
    for (int64_t i = 0; i < 4; i++)
        for (int64_t c = 0; c < d; c++) {
            double s = 0;
            for (int64_t k = 0; k < d; k++)
                s += (double)X[i * d + k] / (t->scale ? t->scale[k] : 1.0) * R[k * d + c];
            worst = fmax(worst, fabs(s - X2[i * d + c]) / 40.0);
        }
    CHECK_MSG(worst < 1e-5, "d=%lld %s: X' vs dense X S^-1 R err %g", (long long)d, t->desc, worst);
    double ld = 0;
    for (int64_t j = 0; t->scale && j < d; j++)
        ld += log(t->scale[j]);
    CHECK_NEAR(t->log_det, ld, 1e-9 * (1 + fabs(ld)));
    free(R);
    free(Xa);
    free(Wa);
    free(X2);
    free(W2);
}

static void test_pca(const float *X, int64_t d)
{
    qsur_error err;
    qsur_transform *t = NULL;
    CHECK_OK(qsur_transform_pca_new(&t, X, NTOK, d, NULL, &err), err);
    if (!t)
        return;
    float *X2 = dup(X, NTOK * d);
    CHECK_OK(qsur_transform_apply(t, X2, NTOK, NULL, 0, NULL, &err), err);
    double *C = malloc(sizeof(double) * d * d), *C0 = malloc(sizeof(double) * d * d);
    covariance(X2, NTOK, d, C);
    covariance(X, NTOK, d, C0);
    double lmax = C[0], off = 0, trace0 = 0, trace1 = 0;
    int desc_ok = 1, eig_ok = 1;
    for (int64_t a = 0; a < d; a++) {
        trace0 += C0[a * d + a];
        trace1 += C[a * d + a];
        if (a > 0 && C[a * d + a] > C[(a - 1) * d + a - 1] + 1e-4 * lmax)
            desc_ok = 0;
        if (fabs(C[a * d + a] - t->eigenvalues[a]) > 1e-5 * lmax)
            eig_ok = 0;
        for (int64_t b = 0; b < d; b++)
            if (a != b)
                off = fmax(off, fabs(C[a * d + b]));
    }
    CHECK_MSG(off < 1e-5 * lmax, "d=%lld pca: off-diagonal %g vs top eigenvalue %g", (long long)d, off, lmax);
    CHECK(desc_ok);
    CHECK(eig_ok);
    CHECK_NEAR(trace1, trace0, 1e-5 * trace0); /* rotation keeps the total variance */
    /* Three outlier channels of variance 1600 dominate: the top three eigenvalues. */
    CHECK(t->eigenvalues[2] > 1000 && t->eigenvalues[3] < 10);
    free(C);
    free(C0);
    free(X2);
    qsur_transform_free(t);
}

static void test_smoothquant(const float *X, const float *W, int64_t d)
{
    qsur_error err;
    qsur_transform *t = NULL;
    CHECK_OK(qsur_transform_smoothquant_new(&t, X, NTOK, W, NOUT, d, 0.5, &err), err);
    if (!t)
        return;
    float *X2 = dup(X, NTOK * d), *W2 = dup(W, NOUT * d);
    CHECK_OK(qsur_transform_apply(t, X2, NTOK, W2, NOUT, NULL, &err), err);
    double worst = 0;
    for (int64_t j = 0; j < d; j++) {
        double ax = 0, aw = 0, ax0 = 0, aw0 = 0;
        for (int64_t i = 0; i < NTOK; i++) {
            ax = fmax(ax, fabs(X2[i * d + j]));
            ax0 = fmax(ax0, fabs(X[i * d + j]));
        }
        for (int64_t i = 0; i < NOUT; i++) {
            aw = fmax(aw, fabs(W2[i * d + j]));
            aw0 = fmax(aw0, fabs(W[i * d + j]));
        }
        worst = fmax(worst, fabs(ax - aw) / aw);
        /* s_j = sqrt(max|X_j| / max|W_j|) at alpha = 1/2, and both maxima become
         * sqrt(max|X_j| max|W_j|). */
        CHECK_NEAR(t->scale[j], sqrt(ax0 / aw0), 1e-5 * sqrt(ax0 / aw0));
        CHECK_NEAR(ax, sqrt(ax0 * aw0), 1e-5 * sqrt(ax0 * aw0));
    }
    CHECK_MSG(worst < 1e-5, "d=%lld smoothquant: max|X'_j| vs max|W'_j| rel err %g", (long long)d, worst);
    free(X2);
    free(W2);
    qsur_transform_free(t);

    /* alpha = 1 moves all of X's range into W: s_j = max|X_j|, max|X'_j| = 1. */
    CHECK_OK(qsur_transform_smoothquant_new(&t, X, NTOK, W, NOUT, d, 1.0, &err), err);
    X2 = dup(X, NTOK * d);
    CHECK_OK(qsur_transform_apply(t, X2, NTOK, NULL, 0, NULL, &err), err);
    double a0 = 0;
    for (int64_t i = 0; i < NTOK; i++)
        a0 = fmax(a0, fabs(X2[i * d + 0]));
    CHECK_NEAR(a0, 1.0, 1e-6);
    free(X2);
    qsur_transform_free(t);
}

static void test_kinds(int64_t d)
{
    qsur_error err;
    float *X = malloc(sizeof(float) * NTOK * d), *W = malloc(sizeof(float) * NOUT * d);
    make_layer(d, X, W, 1000 + (uint64_t)d);
    qsur_transform *t = NULL;

    CHECK_OK(qsur_transform_hadamard_new(&t, d, 0, 7, &err), err);
    if (t) { check_equivalence(t, X, W, d); qsur_transform_free(t); }
    CHECK_OK(qsur_transform_hadamard_new(&t, d, 1, 7, &err), err);
    if (t) { check_equivalence(t, X, W, d); qsur_transform_free(t); }
    CHECK_OK(qsur_transform_random_orthogonal_new(&t, d, 3, &err), err);
    if (t) { check_equivalence(t, X, W, d); qsur_transform_free(t); }
    CHECK_OK(qsur_transform_pca_new(&t, X, NTOK, d, NULL, &err), err);
    if (t) { check_equivalence(t, X, W, d); qsur_transform_free(t); }
    CHECK_OK(qsur_transform_smoothquant_new(&t, X, NTOK, W, NOUT, d, 0.5, &err), err);
    if (t) { check_equivalence(t, X, W, d); qsur_transform_free(t); }

    float *s = malloc(sizeof(float) * d);
    qsur_rng r;
    qsur_rng_seed(&r, 5);
    for (int64_t j = 0; j < d; j++)
        s[j] = (float)exp(2.0 * qsur_rng_normal(&r)); /* spans ~1e-3 .. 1e3 */
    CHECK_OK(qsur_transform_scale_new(&t, s, d, "s.npy", &err), err);
    if (t) {
        CHECK(strstr(t->desc, "s.npy") != NULL);
        check_equivalence(t, X, W, d);
        qsur_transform_free(t);
    }
    float *R = malloc(sizeof(float) * d * d);
    CHECK_OK(qsur_random_orthogonal_f(d, 99, R, &err), err);
    CHECK_OK(qsur_transform_dense_new(&t, R, d, "learned.npy", &err), err);
    if (t) { check_equivalence(t, X, W, d); qsur_transform_free(t); }

    test_pca(X, d);
    test_smoothquant(X, W, d);
    free(s);
    free(R);
    free(X);
    free(W);
}

static void test_random_orthogonal(void)
{
    qsur_error err;
    const int64_t n = 50;
    double *Q = malloc(sizeof(double) * n * n), *Q2 = malloc(sizeof(double) * n * n),
           *Q3 = malloc(sizeof(double) * n * n);
    CHECK_OK(qsur_random_orthogonal(n, 42, Q, &err), err);
    CHECK_OK(qsur_random_orthogonal(n, 42, Q2, &err), err);
    CHECK_OK(qsur_random_orthogonal(n, 43, Q3, &err), err);
    double e = 0, diff = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++)
                s += Q[k * n + i] * Q[k * n + j];
            e = fmax(e, fabs(s - (i == j)));
            diff = fmax(diff, fabs(Q[i * n + j] - Q3[i * n + j]));
        }
    CHECK_MSG(e < 1e-12, "Q^T Q - I = %g", e);
    CHECK(memcmp(Q, Q2, sizeof(double) * n * n) == 0);
    CHECK(diff > 0.1);
    /* Haar: E[Q_ij^2] = 1/n, and without the sign fix diag(Q) is biased (LAPACK
     * makes the Householder R_jj signs systematic). Average Q_11 over seeds
     * must be ~0 (sd 1/sqrt(n * trials)). */
    double mean11 = 0, meansq = 0;
    const int trials = 400;
    double *q = malloc(sizeof(double) * 16);
    for (int t = 0; t < trials; t++) {
        CHECK_OK(qsur_random_orthogonal(4, 1000 + (uint64_t)t, q, &err), err);
        mean11 += q[0] / trials;
        meansq += q[0] * q[0] / trials;
    }
    CHECK_MSG(fabs(mean11) < 4 * 0.5 / sqrt(trials), "E[Q_11] = %g", mean11);
    CHECK_NEAR(meansq, 0.25, 0.05);
    free(q);
    free(Q);
    free(Q2);
    free(Q3);
}

static int stop_now(void *ctx, double done, const char *what, double value)
{
    (void)ctx; (void)done; (void)what; (void)value;
    return 1;
}

static void test_errors(void)
{
    qsur_error err;
    qsur_transform *t = NULL;
    const int64_t d = 16;
    float X[NTOK * 16], W[NOUT * 16];
    make_layer(d, X, W, 5);
    CHECK(qsur_transform_pca_new(&t, NULL, 0, d, NULL, &err) == QSUR_ERR_ARG && !t &&
          strstr(err.msg, "X"));
    CHECK(qsur_transform_smoothquant_new(&t, X, NTOK, NULL, 0, d, 0.5, &err) == QSUR_ERR_ARG &&
          strstr(err.msg, "W missing"));
    CHECK(qsur_transform_smoothquant_new(&t, X, NTOK, W, NOUT, d, 1.5, &err) == QSUR_ERR_ARG &&
          strstr(err.msg, "1.5"));
    float s[16];
    for (int j = 0; j < 16; j++)
        s[j] = 1.0f;
    s[9] = 0.0f;
    CHECK(qsur_transform_scale_new(&t, s, d, "bad.npy", &err) == QSUR_ERR_ARG &&
          strstr(err.msg, "bad.npy") && strstr(err.msg, "9"));
    float R[16 * 16] = {0};
    for (int i = 0; i < 16; i++)
        R[i * 16 + i] = 1.0f;
    R[5] = 0.01f;
    CHECK(qsur_transform_dense_new(&t, R, d, "r.npy", &err) == QSUR_ERR_ARG &&
          strstr(err.msg, "not orthogonal"));
    CHECK(qsur_transform_hadamard_new(&t, 0, 0, 0, &err) == QSUR_ERR_ARG);
    X[17] = NAN;
    CHECK(qsur_transform_pca_new(&t, X, NTOK, d, NULL, &err) == QSUR_ERR_NUMERIC && !t);
    X[17] = 1.0f;
    qsur_progress stop = {stop_now, NULL};
    CHECK(qsur_transform_pca_new(&t, X, NTOK, d, &stop, &err) == QSUR_ERR_INTERRUPTED && !t);

    /* A zero channel keeps s = 1 and the description says so. */
    for (int i = 0; i < NTOK; i++)
        X[i * 16 + 4] = 0.0f;
    CHECK_OK(qsur_transform_smoothquant_new(&t, X, NTOK, W, NOUT, d, 0.5, &err), err);
    if (t) {
        CHECK(t->scale[4] == 1.0f);
        CHECK(strstr(t->desc, "1 zero channel kept s=1") != NULL);
        qsur_transform_free(t);
    }

    /* The equivalence check sees a change that breaks the layer. */
    float W2[NOUT * 16];
    memcpy(W2, W, sizeof W);
    W2[3] += 0.5f;
    double e;
    CHECK_OK(qsur_transform_equivalence_error(X, W, X, W2, NTOK, NOUT, d, &e, &err), err);
    CHECK(e > 1e-3);
}

int main(void)
{
    int64_t dims[] = {64, 172, 256};
    for (int i = 0; i < 3; i++)
        test_kinds(dims[i]);
    test_random_orthogonal();
    test_errors();
    return check_done();
}
