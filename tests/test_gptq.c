/* GPTQ on small synthetic layers, checked against round to nearest, a naive
 * double-precision OBS reference written here, and the grid's own definition. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/gptq.h"
#include "qsur/npy.h"
#include "qsur/quant.h"
#include "qsur/qweight.h"
#include "qsur/wquant.h"

enum { M = 24, N = 64, T = 400 };


/* X = Z A with A mixing neighbouring channels (strong correlation) and a few
 * loud channels, as in transformer activations. */
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
    for (int i = 0; i < M * N; i++)
        W[i] = (float)(0.1 * check_gauss());
}

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

/* Naive GPTQ/OBQ in double, no Cholesky, no blocks: quantize column j, push
 * its error onto later columns with the current inverse Hessian, then remove j
 * from the inverse (Schur complement). Same maths as the Cholesky form. */
static void naive_gptq(const float *W, const double *H0, const qsur_quant_spec *q, float *Q)
{
    double *H = malloc(sizeof(double) * N * N), *Hi = malloc(sizeof(double) * N * N * 2);
    double *w = malloc(sizeof(double) * M * N);
    memcpy(H, H0, sizeof(double) * N * N);
    double md = 0;
    for (int j = 0; j < N; j++)
        md += H[j * N + j];
    for (int j = 0; j < N; j++)
        H[j * N + j] += 0.01 * md / N;
    /* Gauss-Jordan inverse on [H | I]. */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < 2 * N; j++)
            Hi[i * 2 * N + j] = j < N ? H[i * N + j] : (j - N == i);
    for (int c = 0; c < N; c++) {
        double p = Hi[c * 2 * N + c];
        for (int j = 0; j < 2 * N; j++)
            Hi[c * 2 * N + j] /= p;
        for (int i = 0; i < N; i++)
            if (i != c) {
                double f = Hi[i * 2 * N + c];
                for (int j = 0; j < 2 * N; j++)
                    Hi[i * 2 * N + j] -= f * Hi[c * 2 * N + j];
            }
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            H[i * N + j] = Hi[i * 2 * N + N + j];
    for (int i = 0; i < M * N; i++)
        w[i] = W[i];
    qsur_qparams rowmap[M];
    qsur_error err;
    for (int r = 0; r < M; r++)
        qsur_qparams_fit(q, W + r * N, N, &rowmap[r], &err);
    for (int j = 0; j < N; j++) {
        double d = H[j * N + j];
        for (int r = 0; r < M; r++) {
            float qq = qsur_qparams_apply(&rowmap[r], (float)w[r * N + j]);
            Q[r * N + j] = qq;
            double e = (w[r * N + j] - qq) / d;
            for (int k = j + 1; k < N; k++)
                w[r * N + k] -= e * H[j * N + k];
        }
        for (int a = j + 1; a < N; a++)
            for (int b = j + 1; b < N; b++)
                if (a != j && b != j)
                    H[a * N + b] -= H[a * N + j] * H[j * N + b] / d;
    }
    free(H);
    free(Hi);
    free(w);
}

/* Every Q value is scale * (c - zero) for an integer code c in the spec's
 * range, with the map of its group, and equals the stored code's value. */
static int on_grid(const float *Q, const qsur_qweight *qw, const qsur_quant_spec *q)
{
    double lo = q->symmetric ? -((1 << (q->bits - 1)) - 1) : 0;
    double hi = q->symmetric ? (1 << (q->bits - 1)) - 1 : (1 << q->bits) - 1;
    for (int r = 0; r < M; r++)
        for (int c = 0; c < N; c++) {
            const qsur_qparams *p = qsur_qweight_map(qw, r, c);
            double code = qw->codes[r * N + c];
            if (code < lo || code > hi || p->zero != floor(p->zero))
                return 0;
            if ((float)((code - p->zero) * p->scale) != Q[r * N + c])
                return 0;
            /* and the value alone pins the code: (Q/scale + zero) is that integer */
            if (p->scale > 0 && fabs((double)Q[r * N + c] / p->scale + p->zero - code) > 1e-3)
                return 0;
        }
    return 1;
}

static int stop_at_second(void *ctx, double done, const char *what, double value)
{
    (void)done;
    (void)what;
    (void)value;
    return ++*(int *)ctx >= 2;
}

int main(void)
{
    check_seed(0x9E3779B97F4A7C15u);
    qsur_error err;
    static float W[M * N], X[T * N], Q[M * N], Q2[M * N], R[M * N], Qn[M * N];
    static double H[N * N], I[N * N];
    make_layer(W, X);
    float W0[M * N];
    memcpy(W0, W, sizeof W);
    CHECK_OK(qsur_gram(X, T, N, H, NULL, &err), err);
    CHECK_NEAR(H[3 * N + 5], H[5 * N + 3], 0.0);
    qsur_wquant_layer Lx = {W, M, N, X, T, NULL};
    qsur_wquant_layer Lh = {W, M, N, NULL, 0, H};

    qsur_quant_spec specs[3] = {qsur_quant_default(), qsur_quant_default(), qsur_quant_default()};
    specs[1].bits = 3;
    specs[1].symmetric = 0;
    specs[1].gran = QSUR_GRAN_GROUP;
    specs[1].group = 16;
    specs[2].bits = 3;
    specs[2].gran = QSUR_GRAN_TENSOR;
    for (int si = 0; si < 3; si++) {
        const qsur_quant_spec *q = &specs[si];
        qsur_gptq_opts o = qsur_gptq_default();
        qsur_qweight *qw = NULL;
        CHECK_OK(qsur_qweight_new(&qw, q, M, N, &err), err);
        CHECK_OK(qsur_gptq(&Lx, q, &o, Q, qw, NULL, &err), err);
        CHECK_OK(qsur_fake_quant(q, W, M, N, R, NULL, &err), err);
        double eg = out_err(X, W, Q), er = out_err(X, W, R);
        CHECK_MSG(eg < 0.9 * er, "spec %d: gptq error %g not well below rtn %g", si, eg, er);
        CHECK_MSG(on_grid(Q, qw, q), "spec %d: gptq output off its grid", si);
        /* X or H = X^T X (or any multiple of it) give the same result. */
        CHECK_OK(qsur_gptq(&Lh, q, &o, Q2, NULL, NULL, &err), err);
        CHECK(memcmp(Q, Q2, sizeof Q) == 0);
        /* Deterministic, and the block size only regroups the same updates. */
        o.block = 7;
        CHECK_OK(qsur_gptq(&Lh, q, &o, Q2, NULL, NULL, &err), err);
        int diff = 0;
        for (int i = 0; i < M * N; i++)
            diff += Q[i] != Q2[i];
        CHECK_MSG(diff == 0, "spec %d: block 7 vs 128 differ in %d entries", si, diff);
        /* act order still beats RTN (static groups for the group spec) */
        o = qsur_gptq_default();
        o.act_order = 1;
        CHECK_OK(qsur_gptq(&Lh, q, &o, Q2, qw, NULL, &err), err);
        double ea = out_err(X, W, Q2);
        CHECK_MSG(ea <= er, "spec %d: act-order error %g > rtn %g", si, ea, er);
        CHECK_MSG(on_grid(Q2, qw, q), "spec %d: act-order output off its grid", si);
        if (q->gran == QSUR_GRAN_GROUP) {
            /* static groups: the maps are RTN's maps of the original W */
            qsur_qweight *rt = NULL;
            CHECK_OK(qsur_qweight_new(&rt, q, M, N, &err), err);
            CHECK_OK(qsur_qweight_fit_rtn(rt, W, &err), err);
            CHECK(memcmp(rt->params, qw->params, sizeof(qsur_qparams) * (size_t)rt->nparams) == 0);
            /* static groups without act order: the same maps, columns in order,
             * still below RTN's error; the error-fed (dynamic) maps differ */
            o = qsur_gptq_default();
            o.static_groups = 1;
            CHECK_OK(qsur_gptq(&Lh, q, &o, Q2, qw, NULL, &err), err);
            CHECK(memcmp(rt->params, qw->params, sizeof(qsur_qparams) * (size_t)rt->nparams) == 0);
            CHECK_MSG(on_grid(Q2, qw, q), "spec %d: static-groups output off its grid", si);
            double es = out_err(X, W, Q2);
            CHECK_MSG(es < 0.9 * er, "spec %d: static-groups error %g not well below rtn %g", si, es, er);
            CHECK(memcmp(Q, Q2, sizeof Q) != 0);
            qsur_qweight_free(rt);
        }
        qsur_qweight_free(qw);

        /* H = I: H^-1 = I / 1.01 has a diagonal Cholesky factor, so no error is
         * fed forward (U_jk = 0 for k != j) and every column is quantized as it
         * was, with maps fitted on the unchanged W: exactly round to nearest. */
        for (int i = 0; i < N * N; i++)
            I[i] = (i / N == i % N);
        qsur_wquant_layer Li = {W, M, N, NULL, 0, I};
        o = qsur_gptq_default();
        CHECK_OK(qsur_gptq(&Li, q, &o, Q2, NULL, NULL, &err), err);
        CHECK_MSG(memcmp(Q2, R, sizeof R) == 0, "spec %d: gptq with H = I is not RTN", si);
    }

    /* The blocked Cholesky implementation against the naive OBS reference. */
    qsur_gptq_opts o = qsur_gptq_default();
    CHECK_OK(qsur_gptq(&Lh, &specs[0], &o, Q, NULL, NULL, &err), err);
    naive_gptq(W, H, &specs[0], Qn);
    int diff = 0;
    for (int i = 0; i < M * N; i++)
        diff += Q[i] != Qn[i];
    CHECK_MSG(diff == 0, "gptq vs naive reference: %d of %d entries differ", diff, M * N);

    /* A dead input channel: its weights become 0 and nothing breaks. */
    static float Xd[T * N];
    memcpy(Xd, X, sizeof X);
    for (int t = 0; t < T; t++)
        Xd[t * N + 9] = 0.0f;
    qsur_wquant_layer Ld = {W, M, N, Xd, T, NULL};
    CHECK_OK(qsur_gptq(&Ld, &specs[0], &o, Q, NULL, NULL, &err), err);
    int zero = 1;
    for (int r = 0; r < M; r++)
        zero &= Q[r * N + 9] == 0.0f;
    CHECK(zero);

    /* Interrupt: status, message, inputs intact. */
    int calls = 0;
    qsur_progress stop = {stop_at_second, &calls};
    o.block = 16;
    CHECK(qsur_gptq(&Lh, &specs[0], &o, Q, NULL, &stop, &err) == QSUR_ERR_INTERRUPTED);
    CHECK(strstr(err.msg, "gptq") != NULL);
    CHECK(memcmp(W, W0, sizeof W) == 0);

    /* Bad input is refused with a message naming the problem. */
    qsur_wquant_layer Ln = {W, M, N, NULL, 0, NULL};
    CHECK(qsur_gptq(&Ln, &specs[0], &o, Q, NULL, NULL, &err) == QSUR_ERR_ARG);
    CHECK(strstr(err.msg, "activations") != NULL);
    qsur_quant_spec bad = specs[1];
    bad.group = 24;
    CHECK(qsur_gptq(&Lh, &bad, &o, Q, NULL, NULL, &err) == QSUR_ERR_ARG);
    CHECK(qsur_gptq(&Lh, &specs[0], &o, W, NULL, NULL, &err) == QSUR_ERR_ARG);
    static double Hneg[N * N];
    for (int i = 0; i < N * N; i++)
        Hneg[i] = -(double)(i / N == i % N);
    qsur_wquant_layer Lneg = {W, M, N, NULL, 0, Hneg};
    CHECK(qsur_gptq(&Lneg, &specs[0], &o, Q, NULL, NULL, &err) == QSUR_ERR_NUMERIC);
    CHECK(strstr(err.msg, "positive definite") != NULL);

    /* The bundled sample layer (384x256 weight, 512 tokens). */
    qsur_tensor *sw = NULL, *sx = NULL;
    CHECK_OK(qsur_npy_read(check_source("sample_data/W.npy"), "W", &sw, NULL, &err), err);
    CHECK_OK(qsur_npy_read(check_source("sample_data/X.npy"), "X", &sx, NULL, &err), err);
    if (sw && sx) {
        int64_t m = qsur_tensor_rows(sw), n = qsur_tensor_cols(sw), t = qsur_tensor_rows(sx);
        CHECK(qsur_tensor_cols(sx) == n);
        float *qs = malloc(sizeof(float) * (size_t)(m * n)), *rs = malloc(sizeof(float) * (size_t)(m * n));
        double eg, ea, er;
        qsur_wquant_layer Ls = {sw->data, m, n, sx->data, t, NULL};
        qsur_quant_spec q = qsur_quant_default();
        CHECK_OK(qsur_fake_quant(&q, sw->data, m, n, rs, NULL, &err), err);
        CHECK_OK(qsur_layer_output_error(sx->data, NULL, sw->data, rs, t, n, m, &er, &err), err);
        o = qsur_gptq_default();
        CHECK_OK(qsur_gptq(&Ls, &q, &o, qs, NULL, NULL, &err), err);
        CHECK_OK(qsur_layer_output_error(sx->data, NULL, sw->data, qs, t, n, m, &eg, &err), err);
        o.act_order = 1;
        CHECK_OK(qsur_gptq(&Ls, &q, &o, qs, NULL, NULL, &err), err);
        CHECK_OK(qsur_layer_output_error(sx->data, NULL, sw->data, qs, t, n, m, &ea, &err), err);
        CHECK_MSG(eg < er && ea <= er, "sample layer: gptq %g, act-order %g, rtn %g", eg, ea, er);
        free(qs);
        free(rs);
    }
    qsur_tensor_free(sw);
    qsur_tensor_free(sx);
    return check_done();
}
