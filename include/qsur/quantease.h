/* QuantEase (Behdin, Acharya, Gupta, Song, Keerthi, Mazumder 2023,
 * arXiv 2309.01885): layer-wise quantization by cyclic coordinate descent.
 *
 * Minimises f(Q) = ||X W^T - X Q^T||_F^2 = tr((W - Q) H (W - Q)^T), H = X^T X,
 * over Q on a fixed grid (the per-group maps of the initial solution: RTN or
 * GPTQ), one input column j at a time, all rows at once. With R = W - Q and
 * everything but column j fixed, row i's part of f as a function of q = Q_ij is
 *     H_jj (W_ij - q)^2 + 2 (W_ij - q) b_i + const,   b_i = sum_{k != j} R_ik H_kj,
 * a 1-D convex parabola minimised at q* = W_ij + b_i / H_jj, i.e.
 *     Q_:j = quant( W_:j + (R_{:,-j} H_{-j,j}) / H_jj )
 * Monotonicity: a parabola is symmetric about its minimiser, so on a 1-D
 * grid the discrete minimiser is the grid point nearest to q*, which is what
 * round-to-nearest-then-clamp returns (the grid is an interval of equally
 * spaced points; clamping maps to the nearest end). Each coordinate step is
 * therefore an exact minimisation over the grid given the other columns, and
 * f never increases. The code also checks each step's exact change and keeps
 * the old value when rounding (ties, the ulp in x*inv) would make it grow, so
 * monotonicity holds in floating point too.
 * Cost: P = R H is kept up to date; changing column j of R by delta adds
 * delta H_j,: to P (rank 1). Inside a block of columns only the block's part of
 * P is updated (BLAS-2); the rest gets one GEMM per block, so a sweep costs
 * O(rows * cols^2) flops, mostly in dgemm, with no matrix inversion.
 *
 * Outlier-aware variant (after the paper's: a sparse full-precision term S added
 * to the quantized Q, updated by hard thresholding): f(Q + S) with at most
 * k = round(p * rows * cols) nonzeros kept in full precision. Each sweep is
 *   1. the CD sweep above on Q with S fixed (target W - S), then
 *   2. one iterative-hard-thresholding step on S with Q fixed:
 *      S <- top_k(S - eta * grad) = top_k(S + 2 eta R H), eta = 1 / (2 lambda_max(H))
 *      (lambda_max by power iteration; the step halves until f does not grow,
 *      so the step is monotone whatever the estimate).
 *   top_k keeps the k entries of largest magnitude (ties by position), so
 *   exactly k positions are "outliers". The final weight there is Q_ij + S_ij
 *   stored as one float; elsewhere it is Q_ij on the grid. With p = 0 step 2
 *   is skipped and the run is plain QuantEase, bit for bit. */
#ifndef QSUR_QUANTEASE_H
#define QSUR_QUANTEASE_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/gptq.h"
#include "qsur/progress.h"
#include "qsur/quant.h"
#include "qsur/qweight.h"
#include "qsur/wquant.h"

typedef enum {
    QSUR_QE_INIT_RTN = 0, /* grid and start point: round to nearest */
    QSUR_QE_INIT_GPTQ     /* grid and start point: GPTQ's result */
} qsur_qe_init;

typedef struct {
    int sweeps;            /* passes over all columns; default 3 */
    qsur_qe_init init;     /* default RTN */
    qsur_gptq_opts gptq;   /* used when init = GPTQ */
    double outlier_frac;   /* p in [0, 0.5]: fraction kept in float; default 0 */
    int block;             /* columns per BLAS-3 block; default 128 */
} qsur_quantease_opts;

qsur_quantease_opts qsur_quantease_default(void);

/* Full-precision weights kept by the outlier-aware variant. */
typedef struct {
    int64_t count;        /* exactly round(p * rows * cols) */
    int64_t *index;       /* owned, r * cols + c, ascending */
    float *value;         /* owned, the final weight at that position */
    int64_t bytes;        /* storage: count * (4-byte float + 4-byte index) */
    int64_t packed_bytes; /* the packed quantized weight (qsur_qweight_packed_bytes) */
    double overhead;      /* bytes / packed_bytes */
} qsur_outliers;

void qsur_outliers_free(qsur_outliers *o); /* frees the arrays, not o */

/* Runs QuantEase on L (H is used when given, else built from X).
 * Q (rows x cols, not aliasing W) receives the final weight (grid values, plus
 * the outliers' float values). qw (optional; from qsur_qweight_new with this
 * spec and shape) receives the grid and the codes of the quantized part.
 * outliers (optional) is filled when outlier_frac > 0 (count 0 otherwise).
 * objective (optional, sweeps + 1 doubles): f before the first sweep and after
 * each sweep, in units of H (f = ||X (W - Q)^T||_F^2 when H = X^T X).
 * Ticks per block ("quantease"); on interrupt outputs are unspecified. */
int qsur_quantease(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
                   const qsur_quantease_opts *opt, float *Q, qsur_qweight *qw,
                   qsur_outliers *outliers, double *objective,
                   const qsur_progress *prog, qsur_error *err);

#endif
