/* CQE+ Cross-layer Learning: the banded D's of cqe.h for every linear of K
 * consecutive transformer blocks, trained jointly on the blocks' output error.
 *
 * Blocks go in non-overlapping windows [k, k+K-1], k = 0, K, 2K, ... For a
 * window: the float model's residual stream after block k+K-1, h_ref (one
 * training forward with every wq detached, before anything is changed), is the
 * target; the quantized model's, h(D), is computed by qsur_llama_train_forward
 * with blocks < k at their final CQE+ weights, the window's linears at
 * Q(W + U_r D V_r^T) (all D start at 0 = RTN) and the model's hooks on.
 *     loss = mean over tokens and channels of (h(D) - h_ref)^2
 * dL/dh = 2 (h - h_ref) / (N dim) goes through qsur_llama_backward_hidden for
 * the window's blocks, which gives dL/dWq for every linear (its used weight);
 * qsur_cqe_backward chains that through the STE to dL/dD on the band. One Adam
 * (qsur_adam) per linear, step lr * rms(S_r) as in the layer scope. The D's
 * of the step with the lowest window loss (step 0 = RTN included) are kept.
 * Blocks after the window are not run differently (their weights do not enter
 * the loss). Online transform hooks are not supported (they need transposes). */
#ifndef QSUR_CQE_CROSS_H
#define QSUR_CQE_CROSS_H

#include "qsur/cqe.h"
#include "qsur/llama.h"

typedef struct {
    qsur_cqe_opts layer;  /* steps, lr, band, rank for every linear */
    int window;           /* K blocks per window; default 2 */
    int n_seqs;           /* calibration sequences (from the start of calib); default 8 */
    int seq_len;          /* tokens per sequence; 0 = calib's */
} qsur_cqe_cross_opts;

qsur_cqe_cross_opts qsur_cqe_cross_default(void);

typedef struct {
    int first, last;      /* blocks of the window */
    double rtn_loss;      /* window loss with all its D = 0 (RTN) */
    double loss;          /* at the kept D's */
    int best_step;
} qsur_cqe_window_row;

/* Number of windows for this model and K. */
int qsur_cqe_cross_windows(const qsur_llama *m, int window);

/* Sets the wq copy of every per-layer linear (the classifier is left as is).
 * rows (optional): qsur_cqe_cross_windows entries. All-or-nothing: on error
 * or interruption every wq is as before. */
int qsur_cqe_cross(qsur_llama *m, const qsur_tokens *calib, const qsur_quant_spec *spec,
                   const qsur_cqe_cross_opts *o, qsur_cqe_window_row *rows,
                   const qsur_progress *prog, qsur_error *err);

#endif
