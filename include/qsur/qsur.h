/* QSUR: quantization space utilization rate (definition and conventions: docs/qsur.md).
 *
 * For a matrix whose n rows are samples (activation tokens, or weight output
 * rows) and whose d columns are dimensions: mean mu, covariance
 * S = (1/n) sum (x - mu)(x - mu)^T, eigenvalues lambda_i of S, and
 * c^2 = the alpha-quantile of chi-square with d degrees of freedom. The
 * confidence ellipsoid has volume
 *     V_e = pi^(d/2) / Gamma(d/2 + 1) * c^d * prod sqrt(lambda_i)
 * and the cube that must hold it has side
 *     symmetric:  2 max_i (|mu_i| + c sqrt(S_ii))        (centred at the origin)
 *     asymmetric: max_i (mu_i + c sqrt(S_ii)) - min_i (mu_i - c sqrt(S_ii)).
 * QSUR = V_e / side^d underflows for real d, so everything is kept in logs:
 * log10 QSUR and the per-dimension form QSUR^(1/d) in [0, 1].
 * A singular S (n <= d, a constant channel, smallest eigenvalue <= 1e-12 x the
 * largest) gives QSUR = 0 (log10 = -inf, per-dim 0) and a reason string. */
#ifndef QSUR_QSUR_H
#define QSUR_QSUR_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"

/* ---- chi-square ------------------------------------------------------------ */

/* Regularized lower incomplete gamma P(a, x) = gamma(a, x) / Gamma(a), a > 0:
 * series for x < a + 1, Lentz continued fraction for Q = 1 - P otherwise.
 * Accurate to ~1e-13 relative for a up to ~1e5. NAN on bad arguments. */
double qsur_gamma_p(double a, double x);
/* P(chi2_dof <= x) = P(dof/2, x/2). */
double qsur_chi2_cdf(double x, double dof);
/* x with P(chi2_dof <= x) = p, 0 < p < 1, dof > 0: Wilson-Hilferty start,
 * Newton steps kept inside a bisection bracket. NAN on bad arguments. */
double qsur_chi2_quantile(double p, double dof);

/* ---- options and result ------------------------------------------------------ */

typedef enum {
    QSUR_CUBE_SYM = 0,  /* cube centred at 0 (symmetric quantizer); the default */
    QSUR_CUBE_ASYM      /* cube spanning [min, max] of the ellipsoid's box */
} qsur_cube;

/* How the full path gets ln det S. Measured on a 4096 x 4096 activation on 2
 * cores (see bench/bench_qsur.c): EIG_DOUBLE ~6 s, EIG_FLOAT ~2 s, CHOLESKY ~2 s. */
typedef enum {
    QSUR_METHOD_EIG_DOUBLE = 0, /* dsyrk + dsyevd: exact eigenvalues; the default */
    QSUR_METHOD_EIG_FLOAT,      /* ssyrk + ssyevd: ~3x faster; eigenvalues below
                                   ~1e-6 x the largest lose their accuracy */
    QSUR_METHOD_CHOLESKY        /* dsyrk + dpotrf: ln det = 2 sum ln L_ii, exact,
                                   no eigenvalues (eig stays unset) */
} qsur_method;

typedef struct {
    double alpha;        /* confidence level of the ellipsoid, (0,1); default 0.99 */
    qsur_cube cube;
    qsur_method method;
} qsur_options;

qsur_options qsur_options_default(void);
/* "sym", "asym" / "eig-double", "eig-float", "cholesky". */
const char *qsur_cube_name(qsur_cube c);
const char *qsur_method_name(qsur_method m);

#define QSUR_REASON_MAX 200

typedef struct {
    int64_t n, d;
    qsur_cube cube;
    qsur_method method;
    double alpha;
    double c;            /* sqrt(chi2 alpha-quantile, d dof) */
    double log_det;      /* ln det S = sum ln lambda_i; -inf when singular */
    double log_ve;       /* ln V_e; -inf when singular */
    double side;         /* cube side */
    double log_vcube;    /* d ln side */
    double log10_qsur;   /* (ln V_e - ln V_cube) / ln 10; -inf when singular */
    double per_dim;      /* exp((ln V_e - ln V_cube) / d) = QSUR^(1/d); 0 when singular */
    double lambda_min, lambda_max; /* from the last eigen-decomposition; NAN if none */
    int singular;        /* 1: QSUR = 0, see reason */
    int incremental;     /* 1: from qsur_state_update (log-det carried, not recomputed) */
    char reason[QSUR_REASON_MAX]; /* why singular; "" otherwise */
} qsur_result;

/* QSUR from first and second moments: mean[d], var[d] (= S_ii), ln det S and
 * the sample count (used only for the result). Fills every field of res
 * (lambda_min/max NAN, incremental 0, reason ""). log_det = -INFINITY means
 * singular; the caller then writes res->reason. */
void qsur_from_moments(const double *mean, const double *var, double log_det, int64_t n,
                       int64_t d, const qsur_options *opt, qsur_result *res);

/* One-shot QSUR of x (n x d, row-major). A singular covariance is not an
 * error: it returns QSUR_OK with res->singular = 1. */
int qsur_compute(const float *x, int64_t n, int64_t d, const qsur_options *opt,
                 qsur_result *res, const qsur_progress *prog, qsur_error *err);

/* ---- incremental QSUR under equivalent transforms ------------------------------ *
 * X' = X S^-1 R (activation) or W' = W S R (weight), R orthogonal, S positive
 * diagonal: det S' = det S * det(S^-1)^2 (resp. det(S)^2) since det R^2 = 1, so
 * ln det changes by exactly -2 sum ln s_j (resp. +2 sum ln s_j), while the mean
 * and the covariance diagonal (the cube) must be recomputed: O(n d) instead of
 * O(n d^2 + d^3). */

typedef struct {
    int64_t n, d;
    qsur_options opt;
    int valid;           /* a full computation has been done */
    double *eig;         /* d eigenvalues, ascending, from the LAST FULL computation
                            (a scaling since then changes the true ones); all NAN
                            under QSUR_METHOD_CHOLESKY or when n <= d */
    double log_det;      /* current ln det S: full value plus every update's delta */
    qsur_result last;    /* the most recent result */
} qsur_state;

int qsur_state_new(qsur_state **out, int64_t d, const qsur_options *opt, qsur_error *err);
void qsur_state_free(qsur_state *s);
/* Full computation; remembers ln det and the eigenvalues. */
int qsur_state_full(qsur_state *s, const float *x, int64_t n, qsur_result *res,
                    const qsur_progress *prog, qsur_error *err);
/* x_new is the transformed matrix (same n x d); delta_log_det from
 * qsur_log_det_change. Fails if no full computation was done or the shape differs.
 * A singular state stays singular (an invertible transform keeps rank). */
int qsur_state_update(qsur_state *s, const float *x_new, int64_t n, double delta_log_det,
                      qsur_result *res, qsur_error *err);
/* -2 sum ln s_j for an activation (X S^-1), +2 sum ln s_j for a weight (W S);
 * a rotation alone changes nothing (0). NAN if some s_j <= 0. */
double qsur_log_det_change(const float *s, int64_t d, int is_weight);

/* Column means and population variances of x (n x d) in double, one pass
 * (sums shifted by the first row; see src/qsur.c). */
void qsur_column_moments(const float *x, int64_t n, int64_t d, double *mean, double *var);

#endif
