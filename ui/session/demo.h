/* The `demo` teaching model: a 2-D Gaussian (one outlier axis, a chosen
 * correlation) whose 99 % confidence ellipse is drawn inside the quantization
 * square, with QSUR in closed form (docs/qsur.md with d = 2):
 *     c^2  = chi-square(2 dof) alpha-quantile = -2 ln(1 - alpha)
 *     area = pi c^2 sqrt(det S)
 *     side = 2 max_i (|mu_i| + c sqrt(S_ii))            (symmetric square)
 *          = max_i (mu_i + c sqrt(S_ii)) - min_i (mu_i - c sqrt(S_ii))  (asym)
 *     QSUR = area / side^2, at most pi/4 (a circle centred in its square).
 * Rotating or scaling the points x -> A x changes S -> A S A^T. */
#ifndef QSUR_UI_DEMO_H
#define QSUR_UI_DEMO_H

#include "plot.h"

typedef struct {
    int active;            /* 0 until the first demo command (a zeroed session starts here) */
    double corr, outlier;  /* parameters of the last `demo [CORR] [OUTLIER_SCALE]` (reset) */
    double cov[2][2];      /* current covariance S */
    double mean[2];        /* current mean (0 in the demo; kept for the general formula) */
} demo_state;

typedef struct {
    double c;        /* sqrt(c^2) */
    double det;      /* det S */
    double area;     /* ellipse area */
    double side;     /* square side */
    double qsur;     /* area / side^2 */
    double angle;    /* direction of the major axis, degrees in (-90, 90] */
} demo_qsur;

#define DEMO_CORR_DEFAULT 0.6
#define DEMO_OUTLIER_DEFAULT 4.0

/* S = D C D with C = [[1, corr], [corr, 1]], D = diag(outlier, 1): axis x is the
 * outlier axis. corr in (-1, 1), outlier > 0. */
void demo_start(demo_state *d, double corr, double outlier);
void demo_reset(demo_state *d);
/* Rotates the points counter-clockwise by degrees: S -> R S R^T. */
void demo_rotate(demo_state *d, double degrees);
/* Scales the points' x by a and y by b: S -> D S D, mu -> D mu. */
void demo_scale(demo_state *d, double a, double b);

/* Closed-form QSUR of a 2-D Gaussian; returns -1 when S is not positive definite
 * or alpha is outside (0, 1). */
int demo_qsur_2d(const double cov[2][2], const double mean[2], double alpha, int asym,
                 demo_qsur *q);

/* The ellipse (outline '*' / '●', inside '.' / '░') inside the square (border
 * '+-|' / box drawing), origin '+', as lines of at most st->width columns. */
void demo_draw(plot_lines *out, const plot_style *st, const demo_state *d, double alpha, int asym);

#endif
