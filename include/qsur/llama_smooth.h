/* SmoothQuant on a whole Llama model (Xiao et al. 2023, "SmoothQuant: Accurate
 * and Efficient Post-Training Quantization for Large Language Models").
 *
 * Per group of linears that share one input X (tokens x channels):
 *     s_j = max_t |X_tj|^a / max_{W in group, i} |W_ij|^(1-a)
 *     X -> X diag(1/s),  W -> W diag(s)       (X' W'^T = X W^T)
 * (s_j = 1 when either maximum is 0). The 1/s goes into the op producing X, so
 * the float model computes the same function:
 *   wq wk wv  : attention_norm gain /= s
 *   w1 w3     : ffn_norm gain /= s
 *   wo        : its input is softmax(.) V per head, linear in V, so the rows of
 *               wv /= s. With grouped-query attention one kv channel feeds
 *               n_heads/n_kv_heads query heads, so s is computed per kv channel
 *               from the maxima over all the wo columns it feeds, and every one
 *               of those columns is multiplied by that s.
 *   w2        : its input is silu(w1 h) * (w3 h), linear in w3 h, so the rows of
 *               w3 /= s. Skipped (and reported) when the model has an online
 *               transform before w2: then w2 sees (g / s) H, not a per-channel
 *               scaling of what is quantized.
 * Statistics come from captured activations (qsur_llama_capture names). */
#ifndef QSUR_LLAMA_SMOOTH_H
#define QSUR_LLAMA_SMOOTH_H

#include "qsur/error.h"
#include "qsur/llama.h"
#include "qsur/llama_edit.h"
#include "qsur/workspace.h"

typedef struct {
    int groups;        /* groups smoothed (4 per layer, or 3 when w2 is skipped) */
    int w2_skipped;    /* 1: w2 left alone because of an online w2 transform */
    double max_scale, min_scale; /* over all s_j */
} qsur_llama_smooth_result;

/* alpha in [0, 1]. cap holds the captured activations of m (the float model).
 * Drops the wq copies of every changed linear. Shapes are checked before any
 * weight changes. res may be NULL. Ticks e once per block; e (may be NULL)
 * journals every change so that an interrupted run can be undone
 * (qsur/llama_edit.h). */
int qsur_llama_smoothquant(qsur_llama *m, const qsur_workspace *cap, double alpha,
                           qsur_llama_edit *e, qsur_llama_smooth_result *res, qsur_error *err);

#endif
