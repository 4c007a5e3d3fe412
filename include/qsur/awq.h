/* AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization"): scale
 * the weight's input channels up where activations are large before
 * quantizing, so the salient channels lose less, and scale back after:
 *     s_j = stat_j^a / sqrt(max_k stat_k^a * min_k stat_k^a),
 *     Q = quant(W diag(s)) diag(1/s),
 * where stat_j = mean_t |X_tj| (or, given only H = X^T X, the RMS
 * sqrt(H_jj): the normalisation removes the missing 1/n). a runs over the
 * grid {0, 1/grid, ..., 1}; the a with the smallest layer output error
 * ||X W^T - X Q^T||_F / ||X W^T||_F wins (ties keep the smaller a). At a = 0
 * every s_j is exactly 1, so the result is plain round-to-nearest, bit for bit.
 * A model-level pass keeps quant(W diag(s)) and folds diag(1/s) into the op
 * that produces X (X diag(1/s) (W diag(s))^T = X W^T). */
#ifndef QSUR_AWQ_H
#define QSUR_AWQ_H

#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/quant.h"
#include "qsur/wquant.h"

typedef struct {
    int grid;       /* number of steps of a in [0, 1]; default 20 (a = 0, 0.05, ..., 1) */
} qsur_awq_opts;

qsur_awq_opts qsur_awq_default(void);

typedef struct {
    double alpha;   /* the chosen a */
    double error;   /* its relative output error */
    double rtn_error; /* the error at a = 0 (plain round to nearest) */
} qsur_awq_result;

/* s (n floats) for exponent a from per-channel statistics stat (n >= 1):
 * v_j = max(stat_j^a, 1e-4), s_j = v_j / sqrt(max v * min v). */
void qsur_awq_scales(const double *stat, int64_t n, double a, float *s);

/* Q = quant(W diag(s)) diag(1/s) for W rows x cols (Q may not alias W):
 * what a model-level pass applies once s is chosen. */
int qsur_awq_apply(const float *W, int64_t rows, int64_t cols, const float *s,
                   const qsur_quant_spec *spec, float *Q, qsur_error *err);

/* Q (rows x cols, not aliasing W) = quant(W diag(s)) diag(1/s) for the best a.
 * s (optional, cols floats) receives that scale; errors (optional, grid + 1
 * doubles) the error of every a. Error is measured on X when given, else
 * through H. bits >= 16 copies W (alpha 0, error 0). Ticks per a ("awq"). */
int qsur_awq(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
             const qsur_awq_opts *opt, float *Q, float *s, double *errors,
             qsur_awq_result *res, const qsur_progress *prog, qsur_error *err);

#endif
