/* OSTQuant on one linear layer (the workbench's current layer): learn an
 * orthogonal R and a positive diagonal S for Y = X W^T minimising
 *     L = ||X W^T - Q_a(X S^-1 R) Q_w(W S R)^T||_F^2 / ||X W^T||_F^2
 * with the STE of qsur/quant_ste.h, Cayley-Adam for R and Adam on log s.
 *
 * Parametrisation: R = H B with H the layer's Hadamard plan (fast, any d; the
 * start point, i.e. QuaRot) and B block-diagonal orthogonal with blocks of
 * `block` channels (one block = a dense learned R when d <= block). For d = 4096
 * a dense R costs a 4096^3 product and a 4096 x 4096 solve per step; blocks of
 * 64 keep the block products and the 64 Cayley solves per step small while H
 * still mixes all channels.
 * Every step uses a seeded random subset of `rows` tokens of X and `wrows`
 * rows of W (per-token / per-channel quantizers are row-local, so the subset's
 * loss is exactly the loss of those rows).
 *
 * Defaults (docs/ostquant.md, "Layer scope"): measured on the synthetic
 * 4096-channel layer of bench_ostquant and on sample_data, the former defaults
 * (lr 0.02, lr_scale 0.01, blocks of 256, 256 x 256 rows) overshot with R and
 * under-stepped with S: lr 0.005 and lr_scale 0.05 lower the output error at
 * every block size, blocks of 64 are as good as 256 at a fraction of the cost,
 * and 128 weight rows per step instead of 256 cost ~2% of the error for ~30%
 * less time. */
#ifndef QSUR_OSTQUANT_LAYER_H
#define QSUR_OSTQUANT_LAYER_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/hadamard.h"
#include "qsur/progress.h"
#include "qsur/quant.h"

typedef struct {
    int steps;          /* default 100 */
    double lr;          /* Cayley-Adam step (default 0.005) */
    double lr_scale;    /* Adam step on log s (default 0.05) */
    int block;          /* orthogonal block size (default 64) */
    int rows, wrows;    /* tokens / weight rows per step (default 256 / 128) */
    int learn_scales;   /* 0: S = I */
    uint64_t seed;
} qsur_ostquant_layer_opts;

qsur_ostquant_layer_opts qsur_ostquant_layer_default(void);

/* Where the call's wall time went (seconds; disjoint laps, so they sum to at
 * most total; the rest is minibatch sampling and bookkeeping). */
typedef struct {
    double transform;  /* forward: e^-+ls scaling, H, the block products B */
    double gemm;       /* X W^T, Q(X')Q(W')^T and their gradients dY Q(W'), dY^T Q(X') */
    double quant;      /* fake quantization of X', W' and its STE backward */
    double backward;   /* block gradients P_k, dX'' = dX' B^T, H^T, log-scale gradients */
    double step;       /* Cayley-Adam on the blocks, Adam on log s */
    double eval;       /* output error before/after, fusing R = H B */
    double total;
} qsur_ostquant_layer_timing;

typedef struct {
    double loss_first, loss_best;  /* minibatch loss at step 1 and the best EMA */
    double err_before, err_after;  /* ||XW^T - Q Q^T|| / ||XW^T|| on an evaluation subset
                                      (<= 1024 tokens, <= 1024 rows): identity vs learned */
    int best_step;
    double seconds;
    char hadamard[192];            /* which Hadamard construction H used */
    qsur_ostquant_layer_timing time;
} qsur_ostquant_layer_result;

/* X: n x d, W: m x d (row-major). Writes R (d x d, row-major, orthogonal) and
 * s (d > 0) such that X' = X S^-1 R, W' = W S R (the best parameters seen, also
 * on interruption, which still returns QSUR_ERR_INTERRUPTED). */
int qsur_ostquant_layer(const float *X, int64_t n, const float *W, int64_t m, int64_t d,
                        const qsur_quant_spec *wq, const qsur_quant_spec *aq,
                        const qsur_ostquant_layer_opts *opts, float *R, float *s,
                        qsur_ostquant_layer_result *res, const qsur_progress *prog,
                        qsur_error *err);

/* What one step differentiates, exposed for tests. With R = H diag(B_1..B_nb)
 * (H the plan, nb = d / b blocks B_k of b x b, row-major, any matrices) and
 * S = diag(e^ls), on the rows X (r x d) and W (q x d):
 *     loss = ||X W^T - Q_a(X S^-1 R) Q_w(W S R)^T||^2 / ||X W^T||^2,
 *     P_k  = (dloss/dB_k) B_k^T   (nb b x b blocks: what
 *            qsur_stiefel_adam_step_left takes; for orthogonal B_k the
 *            Euclidean gradient is P_k B_k),
 *     gls  = dloss/dls            (d values),
 * through the STE of qsur/quant_ste.h. b must divide d. */
int qsur_ostquant_layer_loss_grad(const qsur_hadamard_plan *H, int64_t b, const float *B,
                                  const double *ls, const float *X, int64_t r, const float *W,
                                  int64_t q, const qsur_quant_spec *wq, const qsur_quant_spec *aq,
                                  double *loss, double *P, double *gls, qsur_error *err);

#endif
