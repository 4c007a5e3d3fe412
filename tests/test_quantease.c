/* QuantEase on a small synthetic layer: the objective it reports is the
 * objective of what it returns (naive double recomputation), it never grows,
 * the result is a coordinate-wise minimum on its grid, it beats RTN and GPTQ,
 * and the outlier variant keeps exactly the requested number of floats. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/gptq.h"
#include "qsur/quant.h"
#include "qsur/quantease.h"
#include "qsur/qweight.h"
#include "qsur/wquant.h"

enum { M = 24, N = 64, T = 400, SWEEPS = 6 };


static void make_layer(float *W, float *X)
{
    static double A[N][N];
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            A[i][j] = (i == j ? 1.0 : 0.0) + 0.6 * exp(-fabs((double)(i - j)) / 3.0) * check_gauss();
    for (int t = 0; t < T; t++) {
        double z[N];
        for (int i = 0; i < N; i++)
            z[i] = check_gauss();
        for (int j = 0; j < N; j++) {
            double v = 0;
            for (int i = 0; i < N; i++)
                v += z[i] * A[i][j];
            X[t * N + j] = (float)(v * (j % 16 == 3 ? 8.0 : 1.0));
        }
    }
    for (int i = 0; i < M * N; i++) /* heavy-tailed weights: a few large ones */
        W[i] = (float)(0.1 * check_gauss() * (check_uniform() < 0.02 ? 6.0 : 1.0));
}

/* ||X (W - Q)^T||_F^2 directly from X, naive in double (independent of H). */
static double objective(const float *X, const float *W, const float *Q)
{
    double num = 0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < M; r++) {
            double e = 0;
            for (int c = 0; c < N; c++)
                e += (double)X[t * N + c] * ((double)W[r * N + c] - Q[r * N + c]);
            num += e * e;
        }
    return num;
}

/* No single weight can move to a neighbouring grid point and lower f:
 * the fixed point of coordinate descent, checked with f's exact change
 * H_jj (e'^2 - e^2) + 2 (e' - e) b, b = sum_{k != j} (W - Q)_ik H_kj. */
static int coordinate_minimum(const float *W, const float *Q, const double *H,
                              const qsur_qweight *qw, double tol)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double b = 0;
            for (int k = 0; k < N; k++)
                if (k != j)
                    b += ((double)W[i * N + k] - Q[i * N + k]) * H[k * N + j];
            const qsur_qparams *p = qsur_qweight_map(qw, i, j);
            double c = qw->codes[i * N + j], e = (double)W[i * N + j] - Q[i * N + j];
            for (int s = -1; s <= 1; s += 2) {
                if (c + s < p->lo || c + s > p->hi)
                    continue;
                double e2 = (double)W[i * N + j] - (c + s - p->zero) * p->scale;
                double df = H[j * N + j] * (e2 * e2 - e * e) + 2 * (e2 - e) * b;
                if (df < -tol)
                    return 0;
            }
        }
    return 1;
}

int main(void)
{
    check_seed(0x2545F4914F6CDD1Du);
    qsur_error err;
    static float W[M * N], X[T * N], Q[M * N], Qk[M * N], Qr[M * N], Qg[M * N], Qo[M * N];
    static double H[N * N];
    make_layer(W, X);
    CHECK_OK(qsur_gram(X, T, N, H, NULL, &err), err);
    qsur_wquant_layer L = {W, M, N, NULL, 0, H};
    qsur_wquant_layer Lx = {W, M, N, X, T, NULL};
    qsur_quant_spec specs[2] = {qsur_quant_default(), qsur_quant_default()};
    specs[0].bits = 3;
    specs[1].bits = 3;
    specs[1].symmetric = 0;
    specs[1].gran = QSUR_GRAN_GROUP;
    specs[1].group = 16;

    for (int si = 0; si < 2; si++) {
        const qsur_quant_spec *q = &specs[si];
        qsur_quantease_opts o = qsur_quantease_default();
        o.sweeps = SWEEPS;
        double f[SWEEPS + 1];
        qsur_qweight *qw = NULL;
        CHECK_OK(qsur_qweight_new(&qw, q, M, N, &err), err);
        CHECK_OK(qsur_quantease(&L, q, &o, Q, qw, NULL, f, NULL, &err), err);
        CHECK_OK(qsur_fake_quant(q, W, M, N, Qr, NULL, &err), err);
        double frtn = objective(X, W, Qr);
        CHECK_REL(f[0], frtn, 1e-9); /* RTN start */
        for (int s = 1; s <= SWEEPS; s++)
            CHECK_MSG(f[s] <= f[s - 1], "spec %d: objective grew at sweep %d: %.17g > %.17g", si,
                      s, f[s], f[s - 1]);
        CHECK_MSG(f[SWEEPS] < 0.8 * frtn, "spec %d: %g not well below rtn %g", si, f[SWEEPS], frtn);
        /* Each reported value is the true objective of the k-sweep result. */
        for (int k = 1; k <= 3; k++) {
            o.sweeps = k;
            CHECK_OK(qsur_quantease(&L, q, &o, Qk, NULL, NULL, NULL, NULL, &err), err);
            CHECK_REL(objective(X, W, Qk), f[k], 1e-9);
        }
        CHECK_REL(objective(X, W, Q), f[SWEEPS], 1e-9);
        /* Q is on the grid of the returned codes and maps. */
        static float D[M * N];
        qsur_qweight_decode(qw, D);
        CHECK(memcmp(D, Q, sizeof Q) == 0);

        /* Against GPTQ: from RTN after a few sweeps, and from GPTQ's own start. */
        qsur_gptq_opts go = qsur_gptq_default();
        CHECK_OK(qsur_gptq(&L, q, &go, Qg, NULL, NULL, &err), err);
        double fg = objective(X, W, Qg);
        CHECK_MSG(f[SWEEPS] <= fg, "spec %d: quantease %g > gptq %g", si, f[SWEEPS], fg);
        o.sweeps = SWEEPS;
        o.init = QSUR_QE_INIT_GPTQ;
        double fq[SWEEPS + 1];
        qsur_qweight *qg = NULL;
        CHECK_OK(qsur_qweight_new(&qg, q, M, N, &err), err);
        CHECK_OK(qsur_quantease(&Lx, q, &o, Qk, qg, NULL, fq, NULL, &err), err);
        CHECK_REL(fq[0], fg, 1e-9);
        CHECK(fq[SWEEPS] <= fg);
        CHECK_REL(objective(X, W, Qk), fq[SWEEPS], 1e-9);

        /* Run to the fixed point: then no single-coordinate grid move helps. */
        o.init = QSUR_QE_INIT_RTN;
        o.sweeps = 40;
        double f40[41];
        CHECK_OK(qsur_quantease(&L, q, &o, Qk, qw, NULL, f40, NULL, &err), err);
        CHECK(f40[40] == f40[39]); /* converged */
        CHECK_MSG(coordinate_minimum(W, Qk, H, qw, 1e-9 * f40[40]),
                  "spec %d: not a coordinate-wise minimum", si);

        /* p = 0 outliers is plain QuantEase, bit for bit. */
        o.sweeps = SWEEPS;
        o.outlier_frac = 0.0;
        double f0[SWEEPS + 1];
        qsur_outliers out;
        CHECK_OK(qsur_quantease(&L, q, &o, Qk, NULL, &out, f0, NULL, &err), err);
        CHECK(memcmp(Qk, Q, sizeof Q) == 0 && memcmp(f0, f, sizeof f) == 0);
        CHECK(out.count == 0 && out.index == NULL);

        /* 2 % outliers: 0.02 * 24 * 64 = 30.72 -> 31 floats, lower objective. */
        o.outlier_frac = 0.02;
        double fo[SWEEPS + 1];
        CHECK_OK(qsur_quantease(&L, q, &o, Qo, qw, &out, fo, NULL, &err), err);
        CHECK(out.count == 31);
        for (int s = 1; s <= SWEEPS; s++)
            CHECK_MSG(fo[s] <= fo[s - 1], "spec %d outliers: grew at sweep %d", si, s);
        double fout = objective(X, W, Qo);
        CHECK_REL(fout, fo[SWEEPS], 1e-6); /* Q + S is rounded to float once */
        CHECK_MSG(fout < 0.9 * f[SWEEPS], "spec %d: outliers %g vs plain %g", si, fout,
                  f[SWEEPS]);
        /* Everything but the listed positions is on the grid (the codes' values);
         * the listed ones hold the float values reported. */
        qsur_qweight_decode(qw, D);
        int off_grid = 0, listed = 0, bad = 0;
        for (int p = 0, c = 0; p < M * N; p++) {
            int is_out = c < out.count && out.index[c] == p;
            if (is_out) {
                bad += Qo[p] != out.value[c];
                listed++;
                c++;
            } else {
                off_grid += Qo[p] != D[p];
            }
        }
        CHECK(listed == 31 && off_grid == 0 && bad == 0);
        for (int64_t c = 1; c < out.count; c++)
            CHECK(out.index[c] > out.index[c - 1]);
        /* Memory: 31 * (4 + 4) bytes against the packed weight. */
        int64_t packed = (int64_t)M * N * 3 / 8 +
                         (q->gran == QSUR_GRAN_ROW ? M * 2 : (M * (N / 16) * (16 + 3) + 7) / 8);
        CHECK(out.bytes == 31 * 8);
        CHECK(out.packed_bytes == packed);
        CHECK_REL(out.overhead, 248.0 / (double)packed, 1e-12);
        qsur_outliers_free(&out);
        qsur_qweight_free(qg);
        qsur_qweight_free(qw);
    }

    /* Bad options are refused. */
    qsur_quantease_opts o = qsur_quantease_default();
    o.outlier_frac = 0.7;
    CHECK(qsur_quantease(&L, &specs[0], &o, Q, NULL, NULL, NULL, NULL, &err) == QSUR_ERR_ARG);
    CHECK(strstr(err.msg, "outlier_frac") != NULL);
    return check_done();
}
