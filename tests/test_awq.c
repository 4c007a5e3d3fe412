/* AWQ on a small layer with loud activation channels: a = 0 is round to
 * nearest bit for bit, the choice is the best of the grid by an independent
 * error computation, and the returned s reproduces Q. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/awq.h"
#include "qsur/quant.h"
#include "qsur/wquant.h"

enum { M = 32, N = 64, T = 300, GRID = 20 };


/* ||X (W - Q)^T||_F / ||X W^T||_F, naive in double. */
static double out_err(const float *X, const float *W, const float *Q)
{
    double num = 0, den = 0;
    for (int t = 0; t < T; t++)
        for (int r = 0; r < M; r++) {
            double y = 0, e = 0;
            for (int c = 0; c < N; c++) {
                y += (double)X[t * N + c] * W[r * N + c];
                e += (double)X[t * N + c] * ((double)W[r * N + c] - Q[r * N + c]);
            }
            num += e * e;
            den += y * y;
        }
    return sqrt(num / den);
}

int main(void)
{
    check_seed(0x0123456789ABCDEFu);
    qsur_error err;
    static float W[M * N], X[T * N], Q[M * N], R[M * N], Qa[M * N];
    static double H[N * N];
    /* Channels 5, 21, 40 carry activations 20x louder (the salient ones). */
    for (int t = 0; t < T; t++)
        for (int j = 0; j < N; j++)
            X[t * N + j] = (float)(check_gauss() * ((j == 5 || j == 21 || j == 40) ? 20.0 : 1.0));
    for (int i = 0; i < M * N; i++)
        W[i] = (float)(0.1 * check_gauss());
    qsur_wquant_layer L = {W, M, N, X, T, NULL};
    qsur_quant_spec q = qsur_quant_default();
    q.bits = 3;
    q.gran = QSUR_GRAN_GROUP;
    q.group = 32;

    qsur_awq_opts o = qsur_awq_default();
    CHECK(o.grid == GRID);
    double errs[GRID + 1];
    float s[N];
    qsur_awq_result res;
    CHECK_OK(qsur_awq(&L, &q, &o, Q, s, errs, &res, NULL, &err), err);
    CHECK_OK(qsur_fake_quant(&q, W, M, N, R, NULL, &err), err);
    double ertn = out_err(X, W, R);
    CHECK_REL(errs[0], ertn, 1e-6);
    CHECK_REL(res.rtn_error, ertn, 1e-6);
    CHECK_REL(res.error, out_err(X, W, Q), 1e-6);
    CHECK(res.error <= ertn);
    CHECK_MSG(res.alpha > 0.0 && res.error < 0.9 * ertn, "alpha %g error %g rtn %g", res.alpha,
              res.error, ertn);
    /* The chosen a is the grid's minimum. */
    int best = 0;
    for (int g = 1; g <= GRID; g++)
        if (errs[g] < errs[best])
            best = g;
    CHECK_NEAR(res.alpha, best / (double)GRID, 1e-15);
    /* s is normalised (max * min = 1) and reproduces Q. */
    float smax = 0, smin = INFINITY;
    for (int j = 0; j < N; j++) {
        smax = fmaxf(smax, s[j]);
        smin = fminf(smin, s[j]);
    }
    CHECK_REL((double)smax * smin, 1.0, 1e-6);
    CHECK(s[5] == smax || s[21] == smax || s[40] == smax);
    CHECK_OK(qsur_awq_apply(W, M, N, s, &q, Qa, &err), err);
    CHECK(memcmp(Qa, Q, sizeof Q) == 0);

    /* a = 0: every s_j is exactly 1 and the result is RTN bit for bit. */
    double stat[N];
    for (int j = 0; j < N; j++)
        stat[j] = j == 7 ? 0.0 : 0.5 + j; /* a dead channel too */
    qsur_awq_scales(stat, N, 0.0, s);
    int ones = 1;
    for (int j = 0; j < N; j++)
        ones &= s[j] == 1.0f;
    CHECK(ones);
    CHECK_OK(qsur_awq_apply(W, M, N, s, &q, Qa, &err), err);
    CHECK(memcmp(Qa, R, sizeof R) == 0);
    /* s at a = 1 by hand: v = stat with the 1e-4 floor, / sqrt(max * min). */
    qsur_awq_scales(stat, N, 1.0, s);
    CHECK_REL(s[10], 10.5 / sqrt(63.5 * 1e-4), 1e-6);
    CHECK_REL(s[7], 1e-4 / sqrt(63.5 * 1e-4), 1e-6);

    /* When every channel looks alike, all a tie and a = 0 (RTN) is kept. */
    static float Xc[T * N];
    for (int t = 0; t < T; t++)
        for (int j = 0; j < N; j++)
            Xc[t * N + j] = (float)((t + j) % 2 ? 1.0 : -1.0);
    qsur_wquant_layer Lc = {W, M, N, Xc, T, NULL};
    CHECK_OK(qsur_awq(&Lc, &q, &o, Q, NULL, NULL, &res, NULL, &err), err);
    CHECK(res.alpha == 0.0 && memcmp(Q, R, sizeof R) == 0);

    /* Only H given: the statistic is sqrt(H_jj), the error goes through H. */
    CHECK_OK(qsur_gram(X, T, N, H, NULL, &err), err);
    qsur_wquant_layer Lh = {W, M, N, NULL, 0, H};
    double errs_h[GRID + 1];
    CHECK_OK(qsur_awq(&Lh, &q, &o, Q, s, errs_h, &res, NULL, &err), err);
    CHECK_REL(errs_h[0], ertn, 1e-6);
    CHECK_REL(res.error, out_err(X, W, Q), 1e-6);
    CHECK(res.error < ertn);

    CHECK(qsur_awq(&L, &q, &o, W, NULL, NULL, &res, NULL, &err) == QSUR_ERR_ARG);
    s[3] = 0.0f;
    CHECK(qsur_awq_apply(W, M, N, s, &q, Qa, &err) == QSUR_ERR_ARG);
    CHECK(strstr(err.msg, "s[3]") != NULL);
    return check_done();
}
