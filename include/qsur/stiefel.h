/* Optimisation on the orthogonal group (the square Stiefel manifold) with a
 * Cayley retraction and Adam-style moments (Li, Li & Todorovic, "Efficient
 * Riemannian optimization on the Stiefel manifold via the Cayley transform",
 * ICLR 2020; the retraction of Wen & Yin 2013).
 *
 * For a loss f(R) with Euclidean gradient G, a tangent direction at R is A R
 * with A skew, and df = <G R^T, A>, so the Riemannian gradient in this "left"
 * form is the skew matrix A = G R^T - R G^T. Because a skew matrix acting on
 * the left is the same object at every point, the first moment m (a skew matrix)
 * needs no vector transport. The second moment is ONE scalar per matrix (the
 * mean of A_ij^2): an element-wise one would break skew-symmetry. A step is
 *     m <- b1 m + (1-b1) A,  v <- b2 v + (1-b2) mean(A^2),
 *     D = m^ / (sqrt(v^) + eps)           (bias-corrected, still skew)
 *     R <- (I + lr/2 D)^-1 (I - lr/2 D) R  (Cayley: exactly orthogonal in exact
 *                                            arithmetic; LAPACKE dgesv)
 * R is kept in double so R^T R = I holds to ~1e-14 after thousands of steps. */
#ifndef QSUR_STIEFEL_H
#define QSUR_STIEFEL_H

#include <stdint.h>
#include "qsur/error.h"

typedef struct {
    int64_t n;
    double *m;      /* n*n first moment (skew), owned */
    double v;       /* scalar second moment */
    int64_t t;      /* steps taken */
    double b1, b2, eps;
    int canonical;  /* 0: v is the mean of A_ij^2 (above). 1: geoopt's RiemannianAdam
                       on its canonical Stiefel manifold (what the OSTQuant code
                       uses): the tangent vector is A R, v the EMA of its canonical
                       norm <AR, AR> = ||A||_F^2 / 2, and the Cayley step of
                       lr * m^/sqrt(v^) is D = 2 m^ / (sqrt(v^) + eps) here. So
                       ||D||_F ~ 2 sqrt(2) where the mean form gives ~ n: the same lr
                       moves R n / (2 sqrt 2) times less (23x for n = 64). */
    int stabilize;  /* > 0: after every step t with t % stabilize == 0, m <- 2 m: what
                       geoopt's RiemannianAdam(stabilize=N) does to the momentum (its
                       stabilize_group re-projects exp_avg with CanonicalStiefel.proju,
                       u - x u^T x, which for a tangent u = m x of a square orthogonal x
                       is 2 u). The OSTQuant code passes stabilize=10. 0: off */
    double *work;   /* 3 n*n scratch + pivots, owned */
    int *ipiv;
    struct qsur_gpu_cayley *gpu; /* set (qsur_stiefel_adam_use_gpu): the Cayley
                                    retraction runs on the GPU, owned */
} qsur_stiefel_adam;

/* b1 0.9, b2 0.999, eps 1e-8. */
int qsur_stiefel_adam_new(qsur_stiefel_adam **out, int64_t n, qsur_error *err);
void qsur_stiefel_adam_free(qsur_stiefel_adam *o);

/* on: the retraction's solve on the GPU from now on (qsur/backend.h's
 * qsur_gpu_cayley: the CPU's R to double rounding, not bit for bit; the
 * moments stay on the host); fails, changing nothing, when no GPU is usable.
 * 0: back on the CPU (never fails). */
int qsur_stiefel_adam_use_gpu(qsur_stiefel_adam *o, int on, qsur_error *err);

/* One step on R (n x n row-major double, orthogonal) with Euclidean gradient
 * G (n x n row-major double, not modified). */
int qsur_stiefel_adam_step(qsur_stiefel_adam *o, double *R, const double *G, double lr,
                           qsur_error *err);

/* The same step given P = G R^T instead of G (A = P - P^T): for callers that
 * get G R^T cheaper than the n^3 product, e.g. R a factor of a chain whose
 * backward already formed (dL/dY) R^T. P is not modified. */
int qsur_stiefel_adam_step_left(qsur_stiefel_adam *o, double *R, const double *P, double lr,
                                qsur_error *err);

/* The Cayley retraction alone: R <- (I + a/2 D)^-1 (I - a/2 D) R for a skew D
 * (work: 2 n*n doubles, ipiv: n). */
int qsur_cayley_apply(int64_t n, double *R, const double *D, double a, double *work,
                      int *ipiv, qsur_error *err);

/* max |R^T R - I| (for tests and as a guard). */
double qsur_orthogonality_error(const double *R, int64_t n);

/* Element-wise Adam for vectors (the log-scales): theta -= lr m^/(sqrt(v^)+eps). */
typedef struct {
    int64_t n;
    double *m, *v;  /* owned */
    int64_t t;
    double b1, b2, eps;
} qsur_adam;

int qsur_adam_new(qsur_adam **out, int64_t n, qsur_error *err);
void qsur_adam_free(qsur_adam *o);
void qsur_adam_step(qsur_adam *o, double *theta, const double *g, double lr);

#endif
