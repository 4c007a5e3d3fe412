/* OSTQuant on one linear layer (the workbench's current layer): learn an
 * orthogonal R and a positive diagonal S for Y = X W^T minimising
 *     L = ||X W^T - Q_a(X S^-1 R) Q_w(W S R)^T||_F^2 / ||X W^T||_F^2
 * with the STE of qsur/quant_ste.h, Cayley-Adam for R and Adam on log s.
 *
 * Parametrisation: R = H B with H the layer's Hadamard plan (fast, any d; the
 * start point, i.e. QuaRot) and B block-diagonal orthogonal with blocks of
 * `block` channels (one block = a dense learned R when d <= block). For d = 4096
 * a dense R costs a 4096^3 product and a 4096 x 4096 solve per step; blocks of
 * 256 keep a step to a few hundred MFLOP while H still mixes all channels.
 * Every step uses a seeded random subset of `rows` tokens of X and `wrows`
 * rows of W (per-token / per-channel quantizers are row-local, so the subset's
 * loss is exactly the loss of those rows). */
#ifndef QSUR_OSTQUANT_LAYER_H
#define QSUR_OSTQUANT_LAYER_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/quant.h"

typedef struct {
    int steps;          /* default 100 */
    double lr;          /* Cayley-Adam step (default 0.02) */
    double lr_scale;    /* Adam step on log s (default 0.01) */
    int block;          /* orthogonal block size (default 256) */
    int rows, wrows;    /* tokens / weight rows per step (default 256 / 256) */
    int learn_scales;   /* 0: S = I */
    uint64_t seed;
} qsur_ostquant_layer_opts;

qsur_ostquant_layer_opts qsur_ostquant_layer_default(void);

typedef struct {
    double loss_first, loss_best;  /* minibatch loss at step 1 and the best EMA */
    double err_before, err_after;  /* ||XW^T - Q Q^T|| / ||XW^T|| on an evaluation subset
                                      (<= 1024 tokens, <= 1024 rows): identity vs learned */
    int best_step;
    double seconds;
    char hadamard[192];            /* which Hadamard construction H used */
} qsur_ostquant_layer_result;

/* X: n x d, W: m x d (row-major). Writes R (d x d, row-major, orthogonal) and
 * s (d > 0) such that X' = X S^-1 R, W' = W S R (the best parameters seen, also
 * on interruption, which still returns QSUR_ERR_INTERRUPTED). */
int qsur_ostquant_layer(const float *X, int64_t n, const float *W, int64_t m, int64_t d,
                        const qsur_quant_spec *wq, const qsur_quant_spec *aq,
                        const qsur_ostquant_layer_opts *opts, float *R, float *s,
                        qsur_ostquant_layer_result *res, const qsur_progress *prog,
                        qsur_error *err);

#endif
