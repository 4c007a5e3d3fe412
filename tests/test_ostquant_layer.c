/* OSTQuant layer scope (qsur/ostquant_layer.h) against math written here:
 *   - the loss and its gradients (P_k = dL/dB_k B_k^T, dL/dls) against central
 *     differences of a naive double-precision loss built from the dense H, at a
 *     non-orthogonal B and non-zero log-scales (with unquantized X', W' the loss
 *     would be 0 at every orthogonal B), and the 4-bit loss against the same
 *     reference quantized;
 *   - the whole optimisation: R orthogonal, s > 0, R = H and s = 1 after 0 steps,
 *     the reported error after equal to the error of X S^-1 R, W S R recomputed
 *     here from the returned R and s, below the plain and the Hadamard-only
 *     error; timers; interruption; bad arguments. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/hadamard.h"
#include "qsur/orthogonal.h"
#include "qsur/ostquant_layer.h"

/* Dense d x d R = H diag(B_k) in double from the plan's dense H and float blocks */
static void dense_r(const qsur_hadamard_plan *H, int b, const double *B, double *R)
{
    int d = (int)H->n;
    float *Hf = malloc((size_t)(d * d) * sizeof(float));
    qsur_hadamard_plan_dense(H, Hf);
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            int k = j / b, c = j - k * b;
            double s = 0;
            for (int l = 0; l < b; l++)
                s += (double)Hf[i * d + k * b + l] * B[(size_t)k * b * b + l * b + c];
            R[i * d + j] = s;
        }
    free(Hf);
}

/* out (r x d) = in diag(e^(sign ls)) R in double */
static void transform(const float *in, int r, int d, const double *ls, int sign, const double *R,
                      double *out)
{
    for (int i = 0; i < r; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int l = 0; l < d; l++)
                s += in[i * d + l] * exp(sign * ls[l]) * R[l * d + j];
            out[i * d + j] = s;
        }
}

/* ||A B^T - C D^T||^2 / ||A B^T||^2 (A, C: r x d; B, D: q x d) */
static double rel_sq(const float *A, const float *Bm, const double *C, const double *D, int r, int q,
                     int d)
{
    double num = 0, den = 0;
    for (int i = 0; i < r; i++)
        for (int j = 0; j < q; j++) {
            double y = 0, z = 0;
            for (int l = 0; l < d; l++) {
                y += (double)A[i * d + l] * Bm[j * d + l];
                z += C[i * d + l] * D[j * d + l];
            }
            num += (y - z) * (y - z);
            den += y * y;
        }
    return num / den;
}

typedef struct {
    const qsur_hadamard_plan *H;
    int d, b, r, q;
    const float *X, *W;
} ref_layer;

/* the loss with Q = identity, in double */
static double ref_loss(const ref_layer *L, const double *B, const double *ls)
{
    int d = L->d;
    double *R = malloc((size_t)(d * d) * sizeof(double));
    double *Xt = malloc((size_t)(L->r * d) * sizeof(double)), *Wt = malloc((size_t)(L->q * d) * sizeof(double));
    dense_r(L->H, L->b, B, R);
    transform(L->X, L->r, d, ls, -1, R, Xt);
    transform(L->W, L->q, d, ls, +1, R, Wt);
    double v = rel_sq(L->X, L->W, Xt, Wt, L->r, L->q, d);
    free(R);
    free(Xt);
    free(Wt);
    return v;
}

static void fill(float *x, int64_t n, double s)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(s * check_gauss());
}

/* Gradients at unquantized X', W' (bits 16) for d channels in blocks of b */
static void test_gradients(int d, int b)
{
    enum { RX = 6, QW = 5 };
    qsur_error err;
    int nb = d / b;
    qsur_hadamard_plan *H = NULL;
    CHECK_OK(qsur_hadamard_plan_new(&H, d, NULL, &err), err);
    if (!H)
        return;
    float *X = malloc((size_t)(RX * d) * sizeof(float)), *W = malloc((size_t)(QW * d) * sizeof(float));
    double *B = malloc((size_t)(nb * b * b) * sizeof(double)), *F = malloc((size_t)(nb * b * b) * sizeof(double));
    double *Bt = malloc((size_t)(nb * b * b) * sizeof(double)), *P = malloc((size_t)(nb * b * b) * sizeof(double));
    float *Bf = malloc((size_t)(nb * b * b) * sizeof(float));
    double *ls = malloc((size_t)d * sizeof(double)), *lt = malloc((size_t)d * sizeof(double));
    double *gls = malloc((size_t)d * sizeof(double)), *v = malloc((size_t)d * sizeof(double));
    fill(X, RX * d, 1.0);
    fill(W, QW * d, 1.0);
    /* B_k = Q_k + 0.2 noise (not orthogonal), ls ~ 0.3 N(0,1) */
    for (int k = 0; k < nb; k++) {
        CHECK_OK(qsur_random_orthogonal(b, 10 + (uint64_t)k, B + (size_t)k * b * b, &err), err);
        for (int i = 0; i < b * b; i++)
            B[(size_t)k * b * b + i] += 0.2 * check_gauss() / sqrt((double)b);
    }
    for (int i = 0; i < nb * b * b; i++)
        Bf[i] = (float)B[i];
    for (int i = 0; i < nb * b * b; i++)
        B[i] = Bf[i]; /* the reference sees exactly the float blocks */
    for (int j = 0; j < d; j++)
        ls[j] = 0.3 * check_gauss();
    qsur_quant_spec off = qsur_quant_default();
    off.bits = 16;
    double loss;
    CHECK_OK(qsur_ostquant_layer_loss_grad(H, b, Bf, ls, X, RX, W, QW, &off, &off, &loss, P, gls, &err), err);
    ref_layer L = {H, d, b, RX, QW, X, W};
    double L0 = ref_loss(&L, B, ls);
    CHECK_MSG(L0 > 1e-3, "d=%d b=%d: the perturbed B gives a non-trivial loss (%g)", d, b, L0);
    CHECK_REL(loss, L0, 1e-4);
    /* blocks: along B_k(t) = (I + t F_k) B_k, dL/dt = sum_k <P_k, F_k> */
    double h = 1e-5;
    for (int trial = 0; trial < 3; trial++) {
        double an = 0;
        for (int i = 0; i < nb * b * b; i++) {
            F[i] = check_gauss();
            an += P[i] * F[i];
        }
        double fd[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            double t = sgn ? -h : h;
            for (int k = 0; k < nb; k++)
                for (int i = 0; i < b; i++)
                    for (int j = 0; j < b; j++) {
                        double s = B[(size_t)k * b * b + i * b + j];
                        for (int l = 0; l < b; l++)
                            s += t * F[(size_t)k * b * b + i * b + l] * B[(size_t)k * b * b + l * b + j];
                        Bt[(size_t)k * b * b + i * b + j] = s;
                    }
            fd[sgn] = ref_loss(&L, Bt, ls);
        }
        double num = (fd[0] - fd[1]) / (2 * h);
        CHECK_MSG(fabs(an - num) <= 1e-4 * fabs(num) + 1e-8, "d=%d b=%d blocks: <P,F> %.8g vs central "
                  "difference %.8g", d, b, an, num);
    }
    /* log-scales: one random direction and the first coordinate */
    for (int trial = 0; trial < 2; trial++) {
        double an = 0;
        for (int j = 0; j < d; j++) {
            v[j] = trial == 0 ? check_gauss() : (j == 0);
            an += gls[j] * v[j];
        }
        double fd[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            for (int j = 0; j < d; j++)
                lt[j] = ls[j] + (sgn ? -h : h) * v[j];
            fd[sgn] = ref_loss(&L, B, lt);
        }
        double num = (fd[0] - fd[1]) / (2 * h);
        CHECK_MSG(fabs(an - num) <= 1e-4 * fabs(num) + 1e-8, "d=%d b=%d scales: <g,v> %.8g vs central "
                  "difference %.8g", d, b, an, num);
    }
    /* 4-bit loss: the reference transforms, rounded to float, quantized by the
     * same quantizer (a code may flip at a rounding boundary: loose tolerance) */
    {
        qsur_quant_spec q4 = qsur_quant_default();
        double *R = malloc((size_t)(d * d) * sizeof(double)), *Xt = malloc((size_t)(RX * d) * sizeof(double));
        double *Wt = malloc((size_t)(QW * d) * sizeof(double));
        float *xf = malloc((size_t)(RX * d) * sizeof(float)), *wf = malloc((size_t)(QW * d) * sizeof(float));
        dense_r(H, b, B, R);
        transform(X, RX, d, ls, -1, R, Xt);
        transform(W, QW, d, ls, +1, R, Wt);
        for (int i = 0; i < RX * d; i++)
            xf[i] = (float)Xt[i];
        for (int i = 0; i < QW * d; i++)
            wf[i] = (float)Wt[i];
        CHECK_OK(qsur_fake_quant(&q4, xf, RX, d, xf, NULL, &err), err);
        CHECK_OK(qsur_fake_quant(&q4, wf, QW, d, wf, NULL, &err), err);
        for (int i = 0; i < RX * d; i++)
            Xt[i] = xf[i];
        for (int i = 0; i < QW * d; i++)
            Wt[i] = wf[i];
        double L4 = rel_sq(X, W, Xt, Wt, RX, QW, d), l4;
        CHECK_OK(qsur_ostquant_layer_loss_grad(H, b, Bf, ls, X, RX, W, QW, &q4, &q4, &l4, P, gls, &err), err);
        CHECK_MSG(fabs(l4 - L4) <= 0.02 * L4 && L4 > 1.1 * L0, "d=%d b=%d 4-bit loss %.6g vs reference %.6g "
                  "(unquantized %.3g)", d, b, l4, L4, L0);
        free(R);
        free(Xt);
        free(Wt);
        free(xf);
        free(wf);
    }
    /* b must divide d */
    CHECK(qsur_ostquant_layer_loss_grad(H, d - 1 > 1 ? d - 1 : 3, Bf, ls, X, RX, W, QW, &off, &off, &loss,
                                        P, gls, &err) == QSUR_ERR_ARG);
    qsur_hadamard_plan_free(H);
    free(X);
    free(W);
    free(B);
    free(F);
    free(Bt);
    free(P);
    free(Bf);
    free(ls);
    free(lt);
    free(gls);
    free(v);
}

/* a small layer with outlier channels: X n x d (heavy-tailed, 3 channels x30),
 * W m x d */
static void make_layer(float *X, int n, float *W, int m, int d)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < d; j++) {
            /* Student t with 2 degrees of freedom */
            double z = check_gauss(), a = check_gauss(), c = check_gauss();
            double t = z / sqrt(0.5 * (a * a + c * c));
            X[i * d + j] = (float)(t * (j % 23 == 5 ? 30.0 : 1.0));
        }
    fill(W, (int64_t)m * d, 1.0 / sqrt((double)d));
}

/* output error of X S^-1 R, W S R under q, recomputed from R (float) and s */
static double recomputed_error(const float *X, int n, const float *W, int m, int d, const float *R,
                               const float *s, const qsur_quant_spec *q)
{
    double *Rd = malloc((size_t)(d * d) * sizeof(double)), *ls = malloc((size_t)d * sizeof(double));
    double *Xt = malloc((size_t)(n * d) * sizeof(double)), *Wt = malloc((size_t)(m * d) * sizeof(double));
    float *xf = malloc((size_t)(n * d) * sizeof(float)), *wf = malloc((size_t)(m * d) * sizeof(float));
    qsur_error err;
    for (int i = 0; i < d * d; i++)
        Rd[i] = R[i];
    for (int j = 0; j < d; j++)
        ls[j] = log(s[j]);
    transform(X, n, d, ls, -1, Rd, Xt);
    transform(W, m, d, ls, +1, Rd, Wt);
    for (int i = 0; i < n * d; i++)
        xf[i] = (float)Xt[i];
    for (int i = 0; i < m * d; i++)
        wf[i] = (float)Wt[i];
    CHECK_OK(qsur_fake_quant(q, xf, n, d, xf, NULL, &err), err);
    CHECK_OK(qsur_fake_quant(q, wf, m, d, wf, NULL, &err), err);
    for (int i = 0; i < n * d; i++)
        Xt[i] = xf[i];
    for (int i = 0; i < m * d; i++)
        Wt[i] = wf[i];
    double e = sqrt(rel_sq(X, W, Xt, Wt, n, m, d));
    free(Rd);
    free(ls);
    free(Xt);
    free(Wt);
    free(xf);
    free(wf);
    return e;
}

static double orth_err_f(const float *R, int d)
{
    double e = 0;
    for (int i = 0; i < d; i++)
        for (int j = 0; j < d; j++) {
            double s = 0;
            for (int l = 0; l < d; l++)
                s += (double)R[l * d + i] * R[l * d + j];
            e = fmax(e, fabs(s - (i == j)));
        }
    return e;
}

static int stop_at_3(void *ctx, double done, const char *what, double value)
{
    (void)done;
    (void)what;
    (void)value;
    return ++*(int *)ctx >= 3;
}

static void test_optimise(void)
{
    enum { N = 200, M = 48, D = 48 };
    qsur_error err;
    float *X = malloc(N * D * sizeof(float)), *W = malloc(M * D * sizeof(float));
    float *R = malloc(D * D * sizeof(float)), *s = malloc(D * sizeof(float));
    float *Hd = malloc(D * D * sizeof(float));
    make_layer(X, N, W, M, D);
    qsur_quant_spec q4 = qsur_quant_default();
    qsur_ostquant_layer_opts o = qsur_ostquant_layer_default();
    o.block = 16;
    o.rows = 64;
    o.wrows = 32;
    o.seed = 3;
    qsur_ostquant_layer_result r0, r1;
    /* 0 steps: R = H, s = 1, the error after is the Hadamard-only error */
    o.steps = 0;
    CHECK_OK(qsur_ostquant_layer(X, N, W, M, D, &q4, &q4, &o, R, s, &r0, NULL, &err), err);
    qsur_hadamard_plan *H = NULL;
    qsur_hadamard_opts ho = {0, o.seed};
    CHECK_OK(qsur_hadamard_plan_new(&H, D, &ho, &err), err);
    if (H) {
        qsur_hadamard_plan_dense(H, Hd);
        double dm = 0;
        for (int i = 0; i < D * D; i++)
            dm = fmax(dm, fabs(Hd[i] - R[i]));
        CHECK_MSG(dm < 1e-6, "0 steps: R = H (max diff %g, %s)", dm, r0.hadamard);
        qsur_hadamard_plan_free(H);
    }
    double smax = 0;
    for (int j = 0; j < D; j++)
        smax = fmax(smax, fabs(s[j] - 1.0f));
    CHECK_MSG(smax == 0, "0 steps: s = 1 (max |s-1| %g)", smax);
    /* the error before is plain quantization: R = I, s = 1 */
    {
        float *I = calloc(D * D, sizeof(float)), ones[D];
        for (int i = 0; i < D; i++) {
            I[i * D + i] = 1.0f;
            ones[i] = 1.0f;
        }
        CHECK_REL(r0.err_before, recomputed_error(X, N, W, M, D, I, ones, &q4), 1e-4);
        free(I);
    }
    CHECK_REL(r0.err_after, recomputed_error(X, N, W, M, D, R, s, &q4), 1e-3);

    /* 80 steps with learned scales */
    o.steps = 80;
    CHECK_OK(qsur_ostquant_layer(X, N, W, M, D, &q4, &q4, &o, R, s, &r1, NULL, &err), err);
    double oe = orth_err_f(R, D), smin = INFINITY;
    for (int j = 0; j < D; j++)
        smin = fmin(smin, s[j]);
    CHECK_MSG(oe < 1e-5, "learned R^T R = I (max %g)", oe);
    CHECK_MSG(smin > 0 && isfinite(smin), "s > 0 (min %g)", smin);
    double e_re = recomputed_error(X, N, W, M, D, R, s, &q4);
    CHECK_MSG(fabs(r1.err_after - e_re) <= 1e-3 * e_re, "reported error after %.6g = recomputed from R, s %.6g",
              r1.err_after, e_re);
    CHECK_NEAR(r1.err_before, r0.err_before, 0.0);
    CHECK_MSG(r1.err_after < 0.6 * r0.err_after && r0.err_after < r0.err_before,
              "plain %.4f > Hadamard %.4f > OSTQuant %.4f (x0.6)", r0.err_before, r0.err_after, r1.err_after);
    CHECK_MSG(r1.loss_best < r1.loss_first, "loss %g -> best %g", r1.loss_first, r1.loss_best);
    const qsur_ostquant_layer_timing *t = &r1.time;
    double sum = t->transform + t->gemm + t->quant + t->backward + t->step + t->eval;
    CHECK_MSG(t->transform > 0 && t->gemm > 0 && t->quant > 0 && t->backward > 0 && t->step > 0 &&
              t->eval > 0 && sum <= t->total * (1 + 1e-9) && t->total == r1.seconds,
              "phases %g %g %g %g %g %g sum %g <= total %g", t->transform, t->gemm, t->quant,
              t->backward, t->step, t->eval, sum, t->total);

    /* interrupted at step 3: QSUR_ERR_INTERRUPTED, R still a rotation */
    int calls = 0;
    qsur_progress p = {stop_at_3, &calls};
    CHECK(qsur_ostquant_layer(X, N, W, M, D, &q4, &q4, &o, R, s, &r1, &p, &err) == QSUR_ERR_INTERRUPTED);
    CHECK_MSG(calls == 3 && orth_err_f(R, D) < 1e-5, "stopped after %d ticks, R^T R = I (%g)", calls,
              orth_err_f(R, D));
    /* bad arguments */
    CHECK(qsur_ostquant_layer(X, 0, W, M, D, &q4, &q4, &o, R, s, &r1, NULL, &err) == QSUR_ERR_ARG);
    o.rows = 0;
    CHECK(qsur_ostquant_layer(X, N, W, M, D, &q4, &q4, &o, R, s, &r1, NULL, &err) == QSUR_ERR_ARG);
    free(X);
    free(W);
    free(R);
    free(s);
    free(Hd);
}

int main(void)
{
    check_seed(5);
    test_gradients(16, 16); /* one dense block */
    test_gradients(24, 8);  /* H = 2 x paley 12, three blocks */
    test_optimise();
    return check_done();
}
