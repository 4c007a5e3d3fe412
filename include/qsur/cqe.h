/* CQE+ layer-wise weight quantization in the SVD basis (arXiv 2407.15508,
 * "Singular-value Diagonal Expansion"), the form implemented here.
 *
 * W (rows x cols) = U S V^T (thin SVD, LAPACKE dgesdd in double). Keep the top
 * r singular triplets U_r (rows x r), V_r (cols x r). The learnable increment
 * D (r x r) is BANDED: D_ij may be non-zero only for |i - j| <= b. The weight
 * that gets quantized is
 *     W' = U (S + D) V^T = W + U_r D V_r^T,
 * evaluated as W + U_r D V_r^T (not as a re-multiplied U S V^T), so D = 0 gives
 * W' = W bit for bit and the result is exactly RTN (qsur_fake_quant(W)).
 *   - b = 0: D diagonal — LSI's learnable singular-value increments;
 *   - b >= 1: CQE+'s diagonal expansion to the b nearest off-diagonals
 *     (default b = 1, i.e. tridiagonal D: 3r - 2 parameters).
 * Objective (layer scope), with H = X^T X:
 *     f(D) = ||X W^T - X Q(W')^T||_F^2 = tr((W - Q) H (W - Q)^T),  Q = Q(W').
 * Gradient: dQ = -2 (W - Q) H; dW' = STE-backward of the fake quantizer
 * (qsur_fake_quant_backward); dD = U_r^T dW' V_r, kept on the band only.
 * Trained with element-wise Adam (qsur_adam) on the band entries. The step
 * size is relative: lr * rms(S_r) (so one lr works across layer scales).
 * The result is the Q of the D with the lowest TRUE (quantized) objective seen,
 * D = 0 (RTN) included, so the calibration error is never above RTN's.
 *
 * Band storage: D is kept as r x (2b+1) doubles, D(i, j) at
 * band[i*(2b+1) + (j - i + b)]; slots with j outside [0, r) stay 0. */
#ifndef QSUR_CQE_H
#define QSUR_CQE_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/quant.h"
#include "qsur/wquant.h"

typedef struct {
    int steps;        /* Adam steps; default 100 */
    double lr;        /* relative step: Adam lr = lr * rms(S_r); default 1e-3 */
    int band;         /* b: half-width of the band of D; default 1 (0 = LSI) */
    int64_t rank;     /* r: top singular triplets; 0 (default) = min(rows, cols) */
} qsur_cqe_opts;

qsur_cqe_opts qsur_cqe_default(void);

/* The fixed data of one layer's problem: SVD factors, H, scratch. */
typedef struct qsur_cqe_problem qsur_cqe_problem;

/* SVD of L->W (dgesdd) and H (L->H when given, else X^T X; with neither X nor
 * H only qsur_cqe_apply/_backward work: cross-layer use). rank 0 = full;
 * rank and band are clamped to [1, min(rows,cols)] and [0, r-1]. */
int qsur_cqe_problem_new(qsur_cqe_problem **out, const qsur_wquant_layer *L,
                         const qsur_quant_spec *spec, int64_t rank, int band,
                         qsur_error *err);
void qsur_cqe_problem_free(qsur_cqe_problem *p);
int64_t qsur_cqe_rank(const qsur_cqe_problem *p);
int qsur_cqe_band(const qsur_cqe_problem *p);
/* Entries of the band storage: r * (2b+1). */
int64_t qsur_cqe_band_size(const qsur_cqe_problem *p);
/* Singular values (r, descending, double) for tests. */
const double *qsur_cqe_singular_values(const qsur_cqe_problem *p);

/* For band D: Q (rows x cols, optional) = Q(W + U_r D V_r^T), *loss = f(D),
 * and when G is not NULL the STE gradient df/dD in band storage. */
int qsur_cqe_eval(qsur_cqe_problem *p, const double *D, float *Q, double *loss, double *G,
                  qsur_error *err);

/* The pieces of _eval for losses computed elsewhere (cross-layer learning):
 * _apply forms W' = W + U_r D V_r^T and Q (optional copy) = Q(W'), keeping W';
 * _backward turns dQ = dL/dQ (rows x cols, overwritten) into dL/dD (band
 * storage) through the STE at the W' of the last _apply. */
int qsur_cqe_apply(qsur_cqe_problem *p, const double *D, float *Q, qsur_error *err);
/* W' = W + U_r D V_r^T of the last qsur_cqe_apply: Q is its fake
 * quantization, so a grid fitted on W' gives Q's codes. */
const float *qsur_cqe_shifted_weights(const qsur_cqe_problem *p);
int qsur_cqe_backward(qsur_cqe_problem *p, float *dQ, double *G, qsur_error *err);

typedef struct {
    double rtn_loss;   /* f(0) */
    double loss;       /* f at the returned D (<= rtn_loss) */
    int best_step;     /* Adam step that produced it (0 = RTN) */
    int64_t rank;
    int band;
} qsur_cqe_result;

/* Runs CQE+ on L. Q (rows x cols) receives the quantized weight; D (band
 * storage, optional; size rank*(2b+1) of the clamped rank/band) the chosen
 * increment; losses (optional, steps + 1) f before each step and after the
 * last. Ticks per step ("cqe"); on interrupt outputs are unspecified. */
int qsur_cqe(const qsur_wquant_layer *L, const qsur_quant_spec *spec, const qsur_cqe_opts *o,
             float *Q, double *D, double *losses, qsur_cqe_result *res,
             const qsur_progress *prog, qsur_error *err);

#endif
