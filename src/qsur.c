/* QSUR: ellipsoid-to-cube volume ratio of a sample cloud, in logs.
 * The chi-square quantile is computed here (not tabulated) so any d works. */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>
#include "qsur/qsur.h"
#include "qsur/tensor.h"
#include "vector_clones.h"

/* ---- incomplete gamma and chi-square ----------------------------------------- */

#define GAMMA_EPS 1e-16
#define GAMMA_MAXIT 1000000

/* e^-x x^a / Gamma(a) in logs: for a ~ 5e4 the pieces are ~1e5 and would
 * overflow if exponentiated separately. */
static double gamma_prefactor_log(double a, double x)
{
    return a * log(x) - x - lgamma(a);
}

static double gamma_p_series(double a, double x)
{
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < GAMMA_MAXIT; n++) {
        term *= x / (a + n);
        sum += term;
        if (fabs(term) < fabs(sum) * GAMMA_EPS)
            break;
    }
    return sum * exp(gamma_prefactor_log(a, x));
}

/* Q(a, x) by the modified Lentz continued fraction (Numerical Recipes 6.2.7). */
static double gamma_q_cf(double a, double x)
{
    const double tiny = DBL_MIN / DBL_EPSILON;
    double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
    for (int i = 1; i < GAMMA_MAXIT; i++) {
        double an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if (fabs(d) < tiny)
            d = tiny;
        c = b + an / c;
        if (fabs(c) < tiny)
            c = tiny;
        d = 1.0 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1.0) < GAMMA_EPS)
            break;
    }
    return exp(gamma_prefactor_log(a, x)) * h;
}

double qsur_gamma_p(double a, double x)
{
    if (!(a > 0.0) || isnan(x))
        return NAN;
    if (x <= 0.0)
        return 0.0;
    if (isinf(x))
        return 1.0;
    if (x < a + 1.0)
        return gamma_p_series(a, x);
    return 1.0 - gamma_q_cf(a, x);
}

double qsur_chi2_cdf(double x, double dof)
{
    return qsur_gamma_p(0.5 * dof, 0.5 * x);
}

static double chi2_log_pdf(double x, double dof)
{
    double k = 0.5 * dof;
    return (k - 1.0) * log(x) - 0.5 * x - k * log(2.0) - lgamma(k);
}

/* Standard normal quantile by Newton on 0.5 erfc(-z/sqrt 2); the CDF is
 * concave for z > 0 and convex for z < 0, so Newton from 0 approaches the root
 * monotonically. Only used for a starting point. */
static double normal_quantile(double p)
{
    double z = 0.0;
    for (int i = 0; i < 100; i++) {
        double f = 0.5 * erfc(-z / M_SQRT2) - p;
        double pdf = exp(-0.5 * z * z) / sqrt(2.0 * M_PI);
        if (pdf < 1e-300)
            break;
        double step = f / pdf;
        z -= step;
        if (fabs(step) < 1e-12 * (1.0 + fabs(z)))
            break;
    }
    return z;
}

double qsur_chi2_quantile(double p, double dof)
{
    if (!(p > 0.0 && p < 1.0) || !(dof > 0.0) || !isfinite(dof))
        return NAN;
    /* Wilson-Hilferty: (X/k)^(1/3) is nearly normal with mean 1 - 2/(9k). */
    double z = normal_quantile(p), v = 2.0 / (9.0 * dof);
    double t = 1.0 - v + z * sqrt(v);
    double x = t > 0.0 ? dof * t * t * t : dof;
    if (!(x > 0.0))
        x = dof;
    double lo = 0.0, hi = INFINITY; /* invariant: cdf(lo) < p <= cdf(hi) */
    for (int it = 0; it < 500; it++) {
        double f = qsur_chi2_cdf(x, dof) - p;
        if (f < 0.0)
            lo = x;
        else
            hi = x;
        double xn = x - f / exp(chi2_log_pdf(x, dof));
        /* Newton leaving the bracket (or not finite): bisect, or expand upward. */
        if (!(xn > lo && xn < hi))
            xn = isinf(hi) ? 2.0 * x + 1.0 : 0.5 * (lo + hi);
        if (fabs(xn - x) <= 1e-15 * x || (isfinite(hi) && hi - lo <= 4e-16 * hi)) {
            x = xn;
            break;
        }
        x = xn;
    }
    return x;
}

/* ---- options ------------------------------------------------------------------ */

qsur_options qsur_options_default(void)
{
    qsur_options o = {0.99, QSUR_CUBE_SYM, QSUR_METHOD_EIG_DOUBLE};
    return o;
}

const char *qsur_cube_name(qsur_cube c)
{
    return c == QSUR_CUBE_ASYM ? "asym" : "sym";
}

const char *qsur_method_name(qsur_method m)
{
    switch (m) {
    case QSUR_METHOD_EIG_FLOAT: return "eig-float";
    case QSUR_METHOD_CHOLESKY: return "cholesky";
    default: return "eig-double";
    }
}

static int check_options(const qsur_options *o, qsur_error *err)
{
    if (!(o->alpha > 0.0 && o->alpha < 1.0))
        return qsur_fail(err, QSUR_ERR_ARG, "qsur: alpha=%g (expected a confidence level in (0,1))",
                         o->alpha);
    if (o->cube != QSUR_CUBE_SYM && o->cube != QSUR_CUBE_ASYM)
        return qsur_fail(err, QSUR_ERR_ARG, "qsur: unknown cube mode %d", (int)o->cube);
    if (o->method != QSUR_METHOD_EIG_DOUBLE && o->method != QSUR_METHOD_EIG_FLOAT &&
        o->method != QSUR_METHOD_CHOLESKY)
        return qsur_fail(err, QSUR_ERR_ARG, "qsur: unknown method %d", (int)o->method);
    return QSUR_OK;
}

/* ---- moments and the volume ratio ---------------------------------------------- */

/* Sums of e = x - c and e^2 per column, c the first row: one pass, and e is
 * O(std) for every column, so var = E[e^2] - E[e]^2 keeps its digits in double
 * (the cancellation that makes the naive one-pass formula unsafe needs
 * |mean - c| >> std). Fixed-width lane loops so -O2 vectorises them. */
#define MLANES 8
QSUR_VECTOR_CLONES
static void shifted_sums(const float *x, int64_t n, int64_t d, double *s1, double *s2)
{
    const float *c = x;
    for (int64_t r = 1; r < n; r++) {
        const float *row = x + r * d;
        int64_t j = 0;
        for (; j + MLANES <= d; j += MLANES)
            for (int l = 0; l < MLANES; l++) {
                double e = (double)row[j + l] - (double)c[j + l];
                s1[j + l] += e;
                s2[j + l] += e * e;
            }
        for (; j < d; j++) {
            double e = (double)row[j] - (double)c[j];
            s1[j] += e;
            s2[j] += e * e;
        }
    }
}

void qsur_column_moments(const float *x, int64_t n, int64_t d, double *mean, double *var)
{
    for (int64_t j = 0; j < d; j++)
        mean[j] = var[j] = 0.0;
    if (n <= 0)
        return;
    shifted_sums(x, n, d, mean, var);
    for (int64_t j = 0; j < d; j++) {
        double m1 = mean[j] / (double)n;
        mean[j] = (double)x[j] + m1;
        var[j] = fmax(var[j] / (double)n - m1 * m1, 0.0);
    }
}

void qsur_from_moments(const double *mean, const double *var, double log_det, int64_t n,
                       int64_t d, const qsur_options *opt, qsur_result *res)
{
    res->n = n;
    res->d = d;
    res->lambda_min = res->lambda_max = NAN;
    res->incremental = 0;
    res->reason[0] = '\0';
    res->cube = opt->cube;
    res->method = opt->method;
    res->alpha = opt->alpha;
    double c2 = qsur_chi2_quantile(opt->alpha, (double)d);
    res->c = sqrt(c2);
    double hi = -INFINITY, lo = INFINITY, symside = 0.0;
    for (int64_t j = 0; j < d; j++) {
        double r = res->c * sqrt(var[j]);
        hi = fmax(hi, mean[j] + r);
        lo = fmin(lo, mean[j] - r);
        symside = fmax(symside, fabs(mean[j]) + r);
    }
    res->side = opt->cube == QSUR_CUBE_ASYM ? hi - lo : 2.0 * symside;
    res->log_vcube = (double)d * log(res->side);
    res->log_det = log_det;
    res->singular = !(log_det > -INFINITY) || !(res->side > 0.0);
    if (res->singular) {
        res->log_ve = -INFINITY;
        res->log10_qsur = -INFINITY;
        res->per_dim = 0.0;
        return;
    }
    double dd = (double)d;
    res->log_ve = 0.5 * dd * log(M_PI) - lgamma(0.5 * dd + 1.0) + dd * log(res->c) + 0.5 * log_det;
    double lq = res->log_ve - res->log_vcube;
    res->log10_qsur = lq / M_LN10;
    res->per_dim = exp(lq / dd);
}

static void set_singular(qsur_result *res, const double *mean, const double *var, int64_t n,
                         int64_t d, const qsur_options *opt, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void set_singular(qsur_result *res, const double *mean, const double *var, int64_t n,
                         int64_t d, const qsur_options *opt, const char *fmt, ...)
{
    qsur_from_moments(mean, var, -INFINITY, n, d, opt, res);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->reason, sizeof res->reason, fmt, ap);
    va_end(ap);
}

/* Rows of centred data per syrk call: S accumulates block by block so the
 * scratch stays small (BLOCK x d) and Ctrl-C is checked between blocks. */
#define SYRK_BLOCK 2048

/* Fills S (d x d, column-major lower = row-major upper) with the covariance,
 * in double, or in float into Sf when sf is set. */
static int covariance(const float *x, int64_t n, int64_t d, const double *mean, double *S,
                      float *Sf, const qsur_progress *prog, qsur_error *err)
{
    int64_t blk = n < SYRK_BLOCK ? n : SYRK_BLOCK;
    void *buf = qsur_alloc((size_t)(blk * d), Sf ? sizeof(float) : sizeof(double));
    if (!buf)
        return qsur_fail(err, QSUR_ERR_NOMEM, "qsur: cannot allocate %lldx%lld centred block",
                         (long long)blk, (long long)d);
    int first = 1;
    for (int64_t r0 = 0; r0 < n; r0 += blk) {
        int rc = qsur_progress_tick(prog, 0.5 * (double)r0 / (double)n, "covariance", NAN, err);
        if (rc != QSUR_OK) {
            free(buf);
            return rc;
        }
        int nb = (int)(n - r0 < blk ? n - r0 : blk);
        /* Row-major: B is nb x d centred rows; S += (1/n) B^T B, upper triangle. */
        if (Sf) {
            float *B = buf;
            for (int64_t r = 0; r < nb; r++)
                for (int64_t j = 0; j < d; j++)
                    B[r * d + j] = (float)((double)x[(r0 + r) * d + j] - mean[j]);
            cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, nb, (float)(1.0 / n), B,
                        (int)d, first ? 0.0f : 1.0f, Sf, (int)d);
        } else {
            double *B = buf;
            for (int64_t r = 0; r < nb; r++)
                for (int64_t j = 0; j < d; j++)
                    B[r * d + j] = (double)x[(r0 + r) * d + j] - mean[j];
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, nb, 1.0 / n, B, (int)d,
                        first ? 0.0 : 1.0, S, (int)d);
        }
        first = 0;
    }
    free(buf);
    return QSUR_OK;
}

/* The full path. eig (d, may be NULL) receives ascending eigenvalues. */
/* Long on purpose: one straight pass (checks, mean, covariance, Cholesky or eigen, result) over
 * buffers freed at one exit. */
static int qsur_full(const float *x, int64_t n, int64_t d, const qsur_options *opt,
                     qsur_result *res, double *eig, const qsur_progress *prog, qsur_error *err)
{
    if (!x || n < 1 || d < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "qsur: empty matrix %lldx%lld", (long long)n,
                         (long long)d);
    if (n > INT32_MAX || d > INT32_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "qsur: dimensions exceed BLAS int range");
    int rc = check_options(opt, err);
    if (rc != QSUR_OK)
        return rc;
    int64_t bad = qsur_find_nonfinite(x, n * d);
    if (bad >= 0)
        return qsur_fail(err, QSUR_ERR_NUMERIC, "qsur: non-finite value at row %lld, column %lld",
                         (long long)(bad / d), (long long)(bad % d));
    memset(res, 0, sizeof *res);
    res->lambda_min = res->lambda_max = NAN;
    if (eig)
        for (int64_t j = 0; j < d; j++)
            eig[j] = NAN;
    double *mean = malloc((size_t)d * 2 * sizeof(double));
    if (!mean)
        return qsur_fail(err, QSUR_ERR_NOMEM, "qsur: cannot allocate moments for d=%lld",
                         (long long)d);
    double *var = mean + d;
    qsur_column_moments(x, n, d, mean, var);

    if (n <= d) {
        set_singular(res, mean, var, n, d, opt,
                     "covariance is singular: n=%lld samples <= d=%lld dimensions", (long long)n,
                     (long long)d);
        free(mean);
        return QSUR_OK;
    }
    for (int64_t j = 0; j < d; j++)
        if (!(var[j] > 0.0)) {
            set_singular(res, mean, var, n, d, opt, "covariance is singular: channel %lld is constant (%g)",
                         (long long)j, mean[j]);
            free(mean);
            return QSUR_OK;
        }

    int use_float = opt->method == QSUR_METHOD_EIG_FLOAT;
    void *S = qsur_alloc((size_t)(d * d), use_float ? sizeof(float) : sizeof(double));
    double *w = malloc((size_t)d * sizeof(double));
    float *wf = use_float ? malloc((size_t)d * sizeof(float)) : NULL;
    if (!S || !w || (use_float && !wf)) {
        free(S), free(w), free(wf), free(mean);
        return qsur_fail(err, QSUR_ERR_NOMEM, "qsur: cannot allocate the %lldx%lld covariance",
                         (long long)d, (long long)d);
    }
    rc = covariance(x, n, d, mean, use_float ? NULL : S, use_float ? S : NULL, prog, err);
    double log_det = 0.0;
    const char *what = "eigen";
    if (rc == QSUR_OK)
        rc = qsur_progress_tick(prog, 0.5, what, NAN, err);
    if (rc == QSUR_OK) {
        lapack_int info;
        /* Row-major upper (as syrk wrote it) is column-major lower: no transpose copy. */
        if (opt->method == QSUR_METHOD_CHOLESKY) {
            what = "dpotrf";
            info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'L', (lapack_int)d, S, (lapack_int)d);
            if (info > 0) {
                set_singular(res, mean, var, n, d, opt,
                             "covariance is singular: not positive definite at leading minor %d",
                             (int)info);
            } else if (info == 0) {
                const double *L = S;
                double dmin = INFINITY, vmax = 0.0;
                for (int64_t j = 0; j < d; j++) {
                    double l = L[j * d + j];
                    log_det += 2.0 * log(l);
                    dmin = fmin(dmin, l * l);
                    vmax = fmax(vmax, var[j]);
                }
                /* Cholesky pivots bound the smallest eigenvalue from above
                 * (lambda_min <= L_jj^2) and lambda_max >= max S_jj: a tiny ratio
                 * is a (conservative) sign of rank deficiency. */
                if (dmin <= 1e-12 * vmax)
                    set_singular(res, mean, var, n, d, opt,
                                 "covariance is singular: Cholesky pivot %.3g <= 1e-12 x largest variance %.3g",
                                 dmin, vmax);
            }
        } else if (use_float) {
            what = "ssyevd";
            info = LAPACKE_ssyevd(LAPACK_COL_MAJOR, 'N', 'L', (lapack_int)d, S, (lapack_int)d, wf);
            for (int64_t j = 0; info == 0 && j < d; j++)
                w[j] = wf[j];
        } else {
            what = "dsyevd";
            info = LAPACKE_dsyevd(LAPACK_COL_MAJOR, 'N', 'L', (lapack_int)d, S, (lapack_int)d, w);
        }
        if (info < 0 || (info > 0 && opt->method != QSUR_METHOD_CHOLESKY))
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "qsur: LAPACK %s failed for %lldx%lld covariance (info=%d)",
                           what, (long long)d, (long long)d, (int)info);
    }
    if (rc == QSUR_OK && opt->method != QSUR_METHOD_CHOLESKY) {
        res->lambda_min = w[0];
        res->lambda_max = w[d - 1];
        if (eig)
            memcpy(eig, w, (size_t)d * sizeof(double));
        if (!(w[0] > 0.0) || w[0] <= 1e-12 * w[d - 1]) {
            set_singular(res, mean, var, n, d, opt,
                         "covariance is singular: smallest eigenvalue %.3g <= 1e-12 x largest %.3g",
                         w[0], w[d - 1]);
        } else {
            for (int64_t j = 0; j < d; j++)
                log_det += log(w[j]);
        }
    }
    if (rc == QSUR_OK && !res->singular) {
        double lmin = res->lambda_min, lmax = res->lambda_max;
        qsur_from_moments(mean, var, log_det, n, d, opt, res);
        res->lambda_min = lmin;
        res->lambda_max = lmax;
    } else if (rc == QSUR_OK) {
        /* set_singular rebuilt res; keep the eigenvalue range it cleared. */
        if (opt->method != QSUR_METHOD_CHOLESKY) {
            res->lambda_min = w[0];
            res->lambda_max = w[d - 1];
        }
    }
    free(S), free(w), free(wf), free(mean);
    return rc;
}

int qsur_compute(const float *x, int64_t n, int64_t d, const qsur_options *opt,
                 qsur_result *res, const qsur_progress *prog, qsur_error *err)
{
    qsur_options o = opt ? *opt : qsur_options_default();
    return qsur_full(x, n, d, &o, res, NULL, prog, err);
}

/* ---- incremental state ----------------------------------------------------------- */

int qsur_state_new(qsur_state **out, int64_t d, const qsur_options *opt, qsur_error *err)
{
    *out = NULL;
    if (d < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "qsur state: d=%lld (expected >= 1)", (long long)d);
    qsur_options o = opt ? *opt : qsur_options_default();
    int rc = check_options(&o, err);
    if (rc != QSUR_OK)
        return rc;
    qsur_state *s = calloc(1, sizeof *s);
    if (s)
        s->eig = malloc((size_t)d * sizeof(double));
    if (!s || !s->eig) {
        free(s);
        return qsur_fail(err, QSUR_ERR_NOMEM, "qsur state: cannot allocate for d=%lld",
                         (long long)d);
    }
    s->d = d;
    s->opt = o;
    for (int64_t j = 0; j < d; j++)
        s->eig[j] = NAN;
    *out = s;
    return QSUR_OK;
}

void qsur_state_free(qsur_state *s)
{
    if (!s)
        return;
    free(s->eig);
    free(s);
}

int qsur_state_full(qsur_state *s, const float *x, int64_t n, qsur_result *res,
                    const qsur_progress *prog, qsur_error *err)
{
    qsur_result r;
    int rc = qsur_full(x, n, s->d, &s->opt, &r, s->eig, prog, err);
    if (rc != QSUR_OK)
        return rc;
    s->n = n;
    s->valid = 1;
    s->log_det = r.log_det;
    s->last = r;
    if (res)
        *res = r;
    return QSUR_OK;
}

int qsur_state_update(qsur_state *s, const float *x_new, int64_t n, double delta_log_det,
                      qsur_result *res, qsur_error *err)
{
    if (!s->valid)
        return qsur_fail(err, QSUR_ERR_ARG, "qsur update: no full computation to update from");
    if (n != s->n)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "qsur update: %lld rows, but the full computation had %lld",
                         (long long)n, (long long)s->n);
    if (!isfinite(delta_log_det))
        return qsur_fail(err, QSUR_ERR_ARG, "qsur update: log-det change %g is not finite",
                         delta_log_det);
    int64_t d = s->d;
    int64_t bad = qsur_find_nonfinite(x_new, n * d);
    if (bad >= 0)
        return qsur_fail(err, QSUR_ERR_NUMERIC,
                         "qsur update: non-finite value at row %lld, column %lld",
                         (long long)(bad / d), (long long)(bad % d));
    double *mean = malloc((size_t)d * 2 * sizeof(double));
    if (!mean)
        return qsur_fail(err, QSUR_ERR_NOMEM, "qsur update: cannot allocate moments for d=%lld",
                         (long long)d);
    double *var = mean + d;
    qsur_column_moments(x_new, n, d, mean, var);
    qsur_result r;
    memset(&r, 0, sizeof r);
    if (s->last.singular) {
        set_singular(&r, mean, var, n, d, &s->opt, "%s", s->last.reason);
    } else {
        s->log_det += delta_log_det;
        qsur_from_moments(mean, var, s->log_det, n, d, &s->opt, &r);
    }
    r.lambda_min = s->last.lambda_min;
    r.lambda_max = s->last.lambda_max;
    r.incremental = 1;
    free(mean);
    s->last = r;
    if (res)
        *res = r;
    return QSUR_OK;
}

double qsur_log_det_change(const float *s, int64_t d, int is_weight)
{
    double sum = 0.0;
    for (int64_t j = 0; j < d; j++) {
        if (!(s[j] > 0.0f))
            return NAN;
        sum += log((double)s[j]);
    }
    return (is_weight ? 2.0 : -2.0) * sum;
}
