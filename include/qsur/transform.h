/* One equivalent-transform step for a linear layer Y = X W^T.
 *
 * X is tokens x d (activations), W is out x d (weights), row-major. A step
 * holds an orthogonal R (d x d) and/or a positive diagonal S = diag(s) and maps
 *     X' = X S^-1 R,    W' = W S R        (design doc, "Equivalent transform pairs")
 * so X' W'^T = X S^-1 R R^T S W^T = X W^T. Either side may be absent (weight-only
 * or activation-only layer); the step is the same.
 *
 * Kinds and what they need:
 *   HADAMARD           R = Hadamard plan (fast, any d; see hadamard.h)      nothing
 *   RANDOM_ORTHOGONAL  R = Haar-random, seeded                              nothing
 *   PCA                R = eigenvectors of cov(X), descending eigenvalue    X
 *   SMOOTHQUANT        s_j = max|X_j|^a / max|W_j|^(1-a), R = I             X and W
 *   SCALE              s given as a vector (e.g. from a .npy file)          nothing
 *   DENSE              R given as a d x d orthogonal matrix (learned)       nothing
 *
 * log_det = sum_j ln s_j: an X covariance log-determinant changes by -2 log_det
 * and a W one by +2 log_det under the step (rotations change neither). */
#ifndef QSUR_TRANSFORM_H
#define QSUR_TRANSFORM_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/hadamard.h"
#include "qsur/progress.h"
#include "qsur/tensor.h"

typedef enum {
    QSUR_XF_HADAMARD = 0,
    QSUR_XF_RANDOM_ORTHOGONAL,
    QSUR_XF_PCA,
    QSUR_XF_SMOOTHQUANT,
    QSUR_XF_SCALE,
    QSUR_XF_DENSE
} qsur_transform_kind;

typedef struct {
    qsur_transform_kind kind;
    int64_t d;                   /* channels: columns of X and W */
    uint64_t seed;               /* HADAMARD (signs, fallback block), RANDOM_ORTHOGONAL */
    int randomized;              /* HADAMARD: random ±1 signs first (QuaRot) */
    double alpha;                /* SMOOTHQUANT migration strength in [0, 1] */
    char source[QSUR_NAME_MAX];  /* SCALE/DENSE: where the numbers came from ("" if unknown) */
    qsur_hadamard_plan *plan;    /* HADAMARD only (owned) */
    float *rot;                  /* RANDOM_ORTHOGONAL, PCA, DENSE: d*d row-major R (owned) */
    float *scale;                /* SMOOTHQUANT, SCALE: d entries s_j > 0 (owned) */
    double *eigenvalues;         /* PCA: d eigenvalues of cov(X), descending (owned) */
    double log_det;              /* sum ln s_j; 0 for pure rotations */
    char desc[320];              /* one line for the `stack` display */
} qsur_transform;

const char *qsur_transform_kind_name(qsur_transform_kind k); /* "hadamard", "pca", ... */

int qsur_transform_hadamard_new(qsur_transform **out, int64_t d, int randomized,
                                uint64_t seed, qsur_error *err);
int qsur_transform_random_orthogonal_new(qsur_transform **out, int64_t d, uint64_t seed,
                                         qsur_error *err);
/* X: n x d, n >= 2. Covariance centred, in double; eigenvector signs fixed so
 * each column's largest-magnitude entry is positive (deterministic). */
int qsur_transform_pca_new(qsur_transform **out, const float *X, int64_t n, int64_t d,
                           const qsur_progress *prog, qsur_error *err);
/* X: n x d, W: m x d, alpha in [0, 1]. A channel whose max|X_j| or max|W_j| is
 * zero gets s_j = 1 (nothing to balance). */
int qsur_transform_smoothquant_new(qsur_transform **out, const float *X, int64_t n,
                                   const float *W, int64_t m, int64_t d, double alpha,
                                   qsur_error *err);
/* s: d finite entries > 0 (copied). source labels the description (may be NULL). */
int qsur_transform_scale_new(qsur_transform **out, const float *s, int64_t d,
                             const char *source, qsur_error *err);
/* R: d x d row-major, copied; must be orthogonal: max|R^T R - I| <= 1e-4. */
int qsur_transform_dense_new(qsur_transform **out, const float *R, int64_t d,
                             const char *source, qsur_error *err);
void qsur_transform_free(qsur_transform *t);

/* In place: X (n x d) <- X S^-1 R and W (m x d) <- W S R. X or W may be NULL
 * (its row count is then ignored). Argument errors are found before anything is
 * touched; after a later failure (interrupt, no memory) the contents of X and W
 * are unspecified, so keep a copy if you need them (qsur_stack does). */
int qsur_transform_apply(const qsur_transform *t, float *X, int64_t n, float *W, int64_t m,
                         const qsur_progress *prog, qsur_error *err);
/* Out of place: Xout <- X S^-1 R, Wout <- W S R, one pass over each matrix
 * (X == Xout / W == Wout is allowed and is the in-place case). When the
 * buffers differ, X and W are never written, so they are intact after any
 * failure; the outputs are then partial. */
int qsur_transform_apply_into(const qsur_transform *t, const float *X, float *Xout, int64_t n,
                              const float *W, float *Wout, int64_t m,
                              const qsur_progress *prog, qsur_error *err);

/* R as a dense d x d row-major matrix (identity when the step only scales), for
 * fusing into neighbouring weights. */
void qsur_transform_rotation_dense(const qsur_transform *t, float *R);

/* ||X W^T - X2 W2^T||_F / ||X W^T||_F, X, X2: n x d; W, W2: m x d (sgemm in
 * row chunks, norms accumulated in double). 0 when both products are zero. */
int qsur_transform_equivalence_error(const float *X, const float *W, const float *X2,
                                     const float *W2, int64_t n, int64_t m, int64_t d,
                                     double *out, qsur_error *err);

#endif
