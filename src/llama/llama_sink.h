/* Private link between the forward pass and activation capture: the forward
 * pass hands every capture point's rows (tokens x features of the current
 * call) to the sink, which copies the selected rows into its tensors. */
#ifndef QSUR_LLAMA_SINK_H
#define QSUR_LLAMA_SINK_H

#include <stdint.h>
#include "qsur/llama.h"

enum {
    QSUR_CAP_ATTN_IN = 0, /* layers.N.attention.in */
    QSUR_CAP_WO_IN,       /* layers.N.attention.wo.in */
    QSUR_CAP_FFN_IN,      /* layers.N.feed_forward.in */
    QSUR_CAP_W2_IN,       /* layers.N.feed_forward.w2.in */
    QSUR_CAP_K,           /* layers.N.attention.k */
    QSUR_CAP_V,           /* layers.N.attention.v */
    QSUR_CAP_KINDS
};

/* x holds the rows of the current forward call (B*T of them, cols each). */
void qsur_llama_sink_rows(struct qsur_llama_capture_sink *c, int kind, int layer,
                          const float *x, int64_t cols);
/* Whether the sink keeps capture point `kind` of `layer` (a GPU forward copies
 * only those rows back). */
int qsur_llama_sink_wants(const struct qsur_llama_capture_sink *c, int kind, int layer);

/* The GPU's forward pass of B x T tokens (from position 0) through layers
 * 0..run_layers-1, handing each capture point the sink keeps to it (fp32
 * rows, the values the CPU's forward captures). In the backend (none.c: the
 * "built without CUDA" error). */
struct qsur_gpu_model;
int qsur_gpu_forward_sink(struct qsur_gpu_model *g, const int *tokens, int B, int T, int run_layers,
                          struct qsur_llama_capture_sink *sink, qsur_error *err);

/* Resolves the seq_len (0: the file's), number of sequences (<= 0: all) and
 * batch (<= 0: 8, at most n_seqs) shared by perplexity and capture. */
int qsur_llama_plan_sequences(const qsur_tokens *t, int *seq_len, int *n_seqs, int *batch,
                              qsur_error *err);

#endif
