/* QSUR: chi-square quantiles, hand-worked 2-D ellipses, scale invariance,
 * the isotropic closed form, singular cases and the incremental update. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <lapacke.h>
#include "check.h"
#include "qsur/qsur.h"


/* Random orthogonal d x d (row-major) from the QR of a Gaussian matrix. */
static void random_orthogonal(double *Q, int d)
{
    double *tau = malloc((size_t)d * sizeof *tau);
    for (int i = 0; i < d * d; i++)
        Q[i] = check_gauss();
    CHECK(LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, d, d, Q, d, tau) == 0);
    CHECK(LAPACKE_dorgqr(LAPACK_ROW_MAJOR, d, d, d, Q, d, tau) == 0);
    free(tau);
    /* Orthogonality check: Q^T Q = I (naive). */
    double worst = 0;
    for (int a = 0; a < d; a++)
        for (int b = 0; b < d; b++) {
            double s = 0;
            for (int k = 0; k < d; k++)
                s += Q[k * d + a] * Q[k * d + b];
            worst = fmax(worst, fabs(s - (a == b)));
        }
    CHECK(worst < 1e-12);
}

/* out (n x d) = x (n x d) * M (d x d), naive double. */
static void matmul(const float *x, const double *M, int n, int d, float *out)
{
    for (int r = 0; r < n; r++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int k = 0; k < d; k++)
                s += (double)x[r * d + k] * M[k * d + j];
            out[r * d + j] = (float)s;
        }
}

static int stop_now(void *ctx, double done, const char *what, double value)
{
    (void)ctx, (void)done, (void)what, (void)value;
    return 1;
}

static void test_chi2(void)
{
    /* Tabulated quantiles (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.4). */
    CHECK_NEAR(qsur_chi2_quantile(0.99, 1), 6.634897, 1e-6);
    CHECK_NEAR(qsur_chi2_quantile(0.99, 2), 9.210340, 1e-6);
    CHECK_NEAR(qsur_chi2_quantile(0.99, 10), 23.209251, 1e-6);
    CHECK_NEAR(qsur_chi2_quantile(0.99, 100), 135.8067, 1e-4);
    CHECK_NEAR(qsur_chi2_quantile(0.95, 1), 3.841459, 1e-6);
    /* d = 2: the chi-square is exponential with mean 2, so x = -2 ln(1 - p). */
    for (double p = 0.05; p < 1.0; p += 0.1)
        CHECK_REL(qsur_chi2_quantile(p, 2), -2.0 * log(1.0 - p), 1e-12);
    /* d = 1: chi2 = Z^2, so the p-quantile is z_{(1+p)/2}^2; z_0.995 = 2.5758293035489004. */
    CHECK_REL(qsur_chi2_quantile(0.99, 1), 2.5758293035489004 * 2.5758293035489004, 1e-12);
    /* and P(Z^2 <= x) = erf(sqrt(x/2)) (libm's erf, independent of our gamma code). */
    for (double x = 0.01; x < 30; x *= 1.7)
        CHECK_REL(qsur_chi2_cdf(x, 1), erf(sqrt(0.5 * x)), 1e-12);
    /* d = 4: P(2, x/2) = 1 - e^{-x/2}(1 + x/2) (Erlang). Both branches of P. */
    for (double x = 0.1; x < 60; x *= 1.9)
        CHECK_REL(qsur_chi2_cdf(x, 4), 1.0 - exp(-0.5 * x) * (1.0 + 0.5 * x), 1e-11);
    /* Large d: round trip, and close to Wilson-Hilferty with z_0.99 = 2.3263478740408408,
     * whose relative error is O(1/d^1.5) ~ 1e-8 at d = 1e5. */
    double dofs[] = {1000, 4096, 100000};
    for (int i = 0; i < 3; i++) {
        double k = dofs[i], x = qsur_chi2_quantile(0.99, k);
        CHECK_NEAR(qsur_chi2_cdf(x, k), 0.99, 1e-10);
        double v = 2.0 / (9.0 * k), t = 1.0 - v + 2.3263478740408408 * sqrt(v);
        CHECK_REL(x, k * t * t * t, 1e-5);
    }
    CHECK(isnan(qsur_chi2_quantile(1.0, 3)) && isnan(qsur_chi2_quantile(0.5, 0)));
}

static void test_hand_2d(void)
{
    /* Points (1,1) (-1,-1) (1,-1) (-1,1) (2,2) (-2,-2), shifted by (3,0):
     * mean (3, 0). Centred sums: sum x^2 = 1+1+1+1+4+4 = 12, sum y^2 = 12,
     * sum xy = 1+1-1-1+4+4 = 8, so S = (1/6)[[12, 8], [8, 12]] = [[2, 4/3], [4/3, 2]],
     * det S = 4 - 16/9 = 20/9. With c^2 = -2 ln(0.01) (d = 2):
     *   V_e = pi c^2 sqrt(20/9)
     *   sym side  = 2 max(3 + c sqrt2, 0 + c sqrt2) = 2 (3 + c sqrt2)
     *   asym side = max(3 + c sqrt2, c sqrt2) - min(3 - c sqrt2, -c sqrt2) = 3 + 2 c sqrt2. */
    float x[12] = {1, 1, -1, -1, 1, -1, -1, 1, 2, 2, -2, -2};
    for (int i = 0; i < 6; i++)
        x[2 * i] += 3.0f;
    double c2 = -2.0 * log(0.01), c = sqrt(c2);
    double ve = M_PI * c2 * sqrt(20.0 / 9.0);
    double side_sym = 2.0 * (3.0 + c * M_SQRT2), side_asym = 3.0 + 2.0 * c * M_SQRT2;
    qsur_options o = qsur_options_default();
    qsur_result r;
    qsur_error err;
    CHECK_OK(qsur_compute(x, 6, 2, &o, &r, NULL, &err), err);
    CHECK(!r.singular && r.cube == QSUR_CUBE_SYM);
    CHECK_REL(r.c, c, 1e-12);
    CHECK_REL(r.log_det, log(20.0 / 9.0), 1e-12);
    CHECK_REL(r.side, side_sym, 1e-12);
    CHECK_REL(r.log10_qsur, log10(ve / (side_sym * side_sym)), 1e-12);
    CHECK_REL(r.per_dim, sqrt(ve / (side_sym * side_sym)), 1e-12);
    /* Eigenvalues of [[2,4/3],[4/3,2]]: 2 -+ 4/3. */
    CHECK_REL(r.lambda_min, 2.0 / 3.0, 1e-12);
    CHECK_REL(r.lambda_max, 10.0 / 3.0, 1e-12);
    o.cube = QSUR_CUBE_ASYM;
    qsur_result ra;
    CHECK_OK(qsur_compute(x, 6, 2, &o, &ra, NULL, &err), err);
    CHECK_REL(ra.side, side_asym, 1e-12);
    CHECK_REL(ra.log10_qsur, log10(ve / (side_asym * side_asym)), 1e-12);
    CHECK(ra.log10_qsur > r.log10_qsur);

    /* From moments alone: mean 0, S = diag(1, 4), ln det = ln 4. V_e = pi c^2 * 2,
     * side = 2 * c * 2, so QSUR = 2 pi c^2 / (16 c^2) = pi / 8 for any alpha. */
    double mu0[2] = {0, 0}, var0[2] = {1, 4};
    qsur_from_moments(mu0, var0, log(4.0), 100, 2, &o, &r);
    CHECK_REL(r.per_dim, sqrt(M_PI / 8), 1e-12);
    CHECK(isnan(r.lambda_min) && !r.incremental && r.reason[0] == '\0' && !r.singular);
    o.cube = QSUR_CUBE_SYM;
    qsur_from_moments(mu0, var0, log(4.0), 100, 2, &o, &r);
    CHECK_REL(r.log10_qsur, log10(M_PI / 8), 1e-12);
    qsur_from_moments(mu0, var0, -INFINITY, 100, 2, &o, &r);
    CHECK(r.singular && r.per_dim == 0 && r.log10_qsur == -INFINITY);

    /* d = 1 centred: the "ellipsoid" is [-c sigma, c sigma] and the symmetric
     * cube is the same interval, so QSUR = 1 exactly. */
    float y[4] = {-2, -1, 1, 2};
    o.cube = QSUR_CUBE_SYM;
    CHECK_OK(qsur_compute(y, 4, 1, &o, &r, NULL, &err), err);
    CHECK_NEAR(r.log10_qsur, 0.0, 1e-13);
    CHECK_NEAR(r.per_dim, 1.0, 1e-13);
}

/* n x d samples of N(0, sigma^2 I) from a fixed standard-normal draw z. */
static void scaled(const float *z, int64_t count, double sigma, float *out)
{
    for (int64_t i = 0; i < count; i++)
        out[i] = (float)(sigma * z[i]);
}

static void test_isotropic(void)
{
    enum { N = 20000, D = 8 };
    float *z = malloc(sizeof(float) * N * D), *x = malloc(sizeof(float) * N * D);
    for (int i = 0; i < N * D; i++)
        z[i] = (float)check_gauss();
    qsur_error err;
    qsur_result r0, r;
    /* Scale invariance. sigma = 2^-7 and 2^7 scale the float data exactly, so
     * only the ln det / ln side arithmetic differs: 1e-12. sigma = 0.01 and 100
     * round every sample to float (relative 6e-8), hence the looser 1e-6. */
    CHECK_OK(qsur_compute(z, N, D, NULL, &r0, NULL, &err), err);
    double exact[] = {1.0 / 128, 128.0}, inexact[] = {0.01, 100.0};
    for (int i = 0; i < 2; i++) {
        scaled(z, N * D, exact[i], x);
        CHECK_OK(qsur_compute(x, N, D, NULL, &r, NULL, &err), err);
        CHECK_REL(r.log10_qsur, r0.log10_qsur, 1e-12);
        scaled(z, N * D, inexact[i], x);
        CHECK_OK(qsur_compute(x, N, D, NULL, &r, NULL, &err), err);
        CHECK_REL(r.log10_qsur, r0.log10_qsur, 1e-6);
    }
    /* Exact identity covariance, zero mean: V_e = pi^{d/2}/Gamma(d/2+1) c^d and
     * side = 2c, so QSUR = pi^{d/2} / (Gamma(d/2+1) 2^d) whatever c is. For d = 8:
     * pi^4 / (24 * 256). With n = 20000 samples, sample means (~0.007) and the
     * largest of 8 sample std devs (~1 + 0.01) move the per-dim value by ~1%. */
    double closed = pow(M_PI, 4) / (24.0 * 256.0);
    CHECK_REL(r0.per_dim, pow(closed, 1.0 / D), 0.02);
    CHECK(r0.per_dim < pow(closed, 1.0 / D)); /* the sample cube is always a bit bigger */
    free(z);
    free(x);
}

static void test_singular(void)
{
    qsur_error err;
    qsur_result r;
    enum { N = 200, D = 64 };
    float *x = malloc(sizeof(float) * N * D);
    for (int i = 0; i < N * D; i++)
        x[i] = (float)check_gauss();
    CHECK_OK(qsur_compute(x, 10, D, NULL, &r, NULL, &err), err);
    CHECK(r.singular && r.log10_qsur == -INFINITY && r.per_dim == 0.0);
    CHECK_MSG(strstr(r.reason, "n=10") && strstr(r.reason, "d=64"), "reason: %s", r.reason);
    CHECK(r.side > 0 && r.c > 0); /* the cube is still reported */

    for (int i = 0; i < N; i++)
        x[i * D + 17] = 0.25f;
    CHECK_OK(qsur_compute(x, N, D, NULL, &r, NULL, &err), err);
    CHECK(r.singular && r.per_dim == 0.0);
    CHECK_MSG(strstr(r.reason, "channel 17 is constant") != NULL, "reason: %s", r.reason);

    /* Rank deficient without a constant channel: column 17 = column 3 + column 5. */
    for (int i = 0; i < N; i++)
        x[i * D + 17] = x[i * D + 3] + x[i * D + 5];
    CHECK_OK(qsur_compute(x, N, D, NULL, &r, NULL, &err), err);
    CHECK(r.singular);
    CHECK_MSG(strstr(r.reason, "smallest eigenvalue") != NULL, "reason: %s", r.reason);
    qsur_options o = qsur_options_default();
    o.method = QSUR_METHOD_CHOLESKY;
    CHECK_OK(qsur_compute(x, N, D, &o, &r, NULL, &err), err);
    CHECK_MSG(r.singular, "cholesky missed the singular case: log_det %g", r.log_det);

    /* Bad input is an error, not a crash. */
    x[5] = NAN;
    CHECK(qsur_compute(x, N, D, NULL, &r, NULL, &err) == QSUR_ERR_NUMERIC);
    CHECK(strstr(err.msg, "row 0, column 5") != NULL);
    o = qsur_options_default();
    o.alpha = 1.0;
    CHECK(qsur_compute(x, N, D, &o, &r, NULL, &err) == QSUR_ERR_ARG);
    free(x);
}

/* Correlated data with a non-zero mean: x = z A + m. */
static void correlated(float *x, int n, int d)
{
    double *A = malloc(sizeof(double) * d * d), *m = malloc(sizeof(double) * d);
    for (int i = 0; i < d * d; i++)
        A[i] = check_gauss() / sqrt((double)d);
    for (int j = 0; j < d; j++) {
        A[j * d + j] += 1.0;
        m[j] = 0.5 * check_gauss();
    }
    double *z = malloc(sizeof(double) * d);
    for (int r = 0; r < n; r++) {
        for (int k = 0; k < d; k++)
            z[k] = check_gauss();
        for (int j = 0; j < d; j++) {
            double s = m[j];
            for (int k = 0; k < d; k++)
                s += z[k] * A[k * d + j];
            x[r * d + j] = (float)s;
        }
    }
    free(A), free(m), free(z);
}

static void check_incremental(const float *x, int n, int d, int is_weight, qsur_cube cube)
{
    qsur_error err;
    qsur_options o = qsur_options_default();
    o.cube = cube;
    qsur_state *st = NULL;
    CHECK_OK(qsur_state_new(&st, d, &o, &err), err);
    qsur_result full, inc, ref;
    CHECK_OK(qsur_state_full(st, x, n, &full, NULL, &err), err);
    CHECK(!full.singular && !full.incremental);
    CHECK(st->eig[0] > 0 && st->eig[0] <= st->eig[d - 1]);

    double *R = malloc(sizeof(double) * d * d), *M = malloc(sizeof(double) * d * d);
    float *s = malloc(sizeof(float) * d);
    float *y = malloc(sizeof(float) * n * d);
    random_orthogonal(R, d);
    for (int j = 0; j < d; j++)
        s[j] = (float)(0.3 + 2.5 * check_uniform());
    /* Activation: X' = X S^-1 R, i.e. M = diag(1/s) R. Weight: W' = W S R, M = diag(s) R. */
    for (int a = 0; a < d; a++)
        for (int b = 0; b < d; b++)
            M[a * d + b] = (is_weight ? s[a] : 1.0 / s[a]) * R[a * d + b];

    /* Rotation only: the log-det does not change. */
    matmul(x, R, n, d, y);
    CHECK_OK(qsur_state_update(st, y, n, 0.0, &inc, &err), err);
    CHECK_OK(qsur_compute(y, n, d, &o, &ref, NULL, &err), err);
    CHECK(inc.incremental && !inc.singular);
    CHECK_REL(inc.log_det, ref.log_det, 1e-6);
    CHECK_REL(inc.log10_qsur, ref.log10_qsur, 1e-6);
    CHECK_REL(inc.per_dim, ref.per_dim, 1e-6);
    CHECK(fabs(inc.log10_qsur - full.log10_qsur) > 1e-3); /* the rotation did change the cube */

    /* Scaling + rotation from the original, as one update from a fresh full. */
    CHECK_OK(qsur_state_full(st, x, n, &full, NULL, &err), err);
    matmul(x, M, n, d, y);
    double delta = qsur_log_det_change(s, d, is_weight);
    CHECK_OK(qsur_state_update(st, y, n, delta, &inc, &err), err);
    CHECK_OK(qsur_compute(y, n, d, &o, &ref, NULL, &err), err);
    CHECK_REL(inc.log_det, ref.log_det, 1e-6);
    CHECK_REL(inc.log10_qsur, ref.log10_qsur, 1e-6);
    CHECK_REL(inc.per_dim, ref.per_dim, 1e-6);

    CHECK(qsur_state_update(st, y, n - 1, 0.0, &inc, &err) == QSUR_ERR_ARG);
    free(R), free(M), free(s), free(y);
    qsur_state_free(st);
}

static void test_incremental(void)
{
    enum { N = 600, D = 24 };
    float *x = malloc(sizeof(float) * N * D);
    correlated(x, N, D);
    check_incremental(x, N, D, 0, QSUR_CUBE_SYM);
    check_incremental(x, N, D, 1, QSUR_CUBE_SYM);
    check_incremental(x, N, D, 0, QSUR_CUBE_ASYM);

    /* log-det change by hand: s = (2, 0.5, 4): sum ln s = ln 4, activation -2 ln 4. */
    float s3[3] = {2, 0.5f, 4};
    CHECK_REL(qsur_log_det_change(s3, 3, 0), -2.0 * log(4.0), 1e-12);
    CHECK_REL(qsur_log_det_change(s3, 3, 1), 2.0 * log(4.0), 1e-12);
    s3[1] = 0;
    CHECK(isnan(qsur_log_det_change(s3, 3, 0)));

    /* A singular state stays singular through updates. */
    qsur_error err;
    qsur_state *st = NULL;
    qsur_result r;
    CHECK_OK(qsur_state_new(&st, D, NULL, &err), err);
    CHECK(qsur_state_update(st, x, N, 0.0, &r, &err) == QSUR_ERR_ARG); /* no full yet */
    CHECK_OK(qsur_state_full(st, x, D, &r, NULL, &err), err);  /* n = d rows */
    CHECK(r.singular);
    CHECK_OK(qsur_state_update(st, x, D, 0.0, &r, &err), err);
    CHECK(r.singular && r.incremental && strstr(r.reason, "n=24") != NULL);
    qsur_state_free(st);

    /* asymmetric >= symmetric on the same data (the asym span is never wider). */
    qsur_options o = qsur_options_default();
    qsur_result rs, ra;
    CHECK_OK(qsur_compute(x, N, D, &o, &rs, NULL, &err), err);
    o.cube = QSUR_CUBE_ASYM;
    CHECK_OK(qsur_compute(x, N, D, &o, &ra, NULL, &err), err);
    CHECK(ra.log10_qsur >= rs.log10_qsur && ra.side <= rs.side);

    /* The other methods agree with the double eigen path on well-conditioned data. */
    o = qsur_options_default();
    o.method = QSUR_METHOD_CHOLESKY;
    qsur_result rc;
    CHECK_OK(qsur_compute(x, N, D, &o, &rc, NULL, &err), err);
    CHECK_REL(rc.log_det, rs.log_det, 1e-10);
    CHECK(isnan(rc.lambda_min));
    o.method = QSUR_METHOD_EIG_FLOAT;
    CHECK_OK(qsur_compute(x, N, D, &o, &rc, NULL, &err), err);
    CHECK_REL(rc.log10_qsur, rs.log10_qsur, 1e-4);
    CHECK_REL(rc.lambda_min, rs.lambda_min, 1e-3);

    /* Ctrl-C during the covariance returns INTERRUPTED. */
    qsur_progress stop = {stop_now, NULL};
    CHECK(qsur_compute(x, N, D, NULL, &r, &stop, &err) == QSUR_ERR_INTERRUPTED);
    free(x);
}

/* Column moments (one shifted pass) against a two-pass double reference, on
 * columns that defeat the naive one-pass formula: a large offset with a tiny
 * spread, and an outlier in the first row (the shift). */
static void test_moments(void)
{
    enum { N = 501, D = 19 }; /* D not a multiple of the 8-lane chunk */
    float *x = malloc(sizeof(float) * N * D);
    for (int i = 0; i < N; i++)
        for (int j = 0; j < D; j++) {
            double z = check_gauss();
            double v = j % 3 == 0 ? 1e4 + 1e-2 * z : (j % 3 == 1 ? 3.0 * z - 1.0 : z);
            if (j % 3 == 2 && i == 0)
                v = 1e6; /* the shift itself is an outlier */
            x[i * D + j] = (float)v;
        }
    double mean[D], var[D];
    qsur_column_moments(x, N, D, mean, var);
    for (int j = 0; j < D; j++) {
        double m = 0, v = 0;
        for (int i = 0; i < N; i++)
            m += x[i * D + j];
        m /= N;
        for (int i = 0; i < N; i++)
            v += (x[i * D + j] - m) * (x[i * D + j] - m);
        v /= N;
        CHECK_MSG(fabs(mean[j] - m) <= 1e-12 * fabs(m) + 1e-13, "column %d mean %.17g vs %.17g", j, mean[j], m);
        CHECK_MSG(fabs(var[j] - v) <= 1e-9 * v, "column %d var %.17g vs %.17g", j, var[j], v);
    }
    qsur_column_moments(x, 1, D, mean, var); /* one sample: the row, zero spread */
    CHECK(mean[4] == x[4] && var[4] == 0.0);
    free(x);
}

int main(void)
{
    check_seed(12345);
    test_chi2();
    test_hand_2d();
    test_isotropic();
    test_singular();
    test_incremental();
    test_moments();
    return check_done();
}
