/* QSUR of every linear-layer input of a Llama model: for each block, the four
 * places where an equivalent transform pair changes what the quantizers see
 * (OSTQuant's "transformed layers", qsur/ostquant.h):
 *
 *   site  activation (captured, tokens x d)        weight (rows stacked, x d)
 *   qkv   layers.N.attention.in        (d = dim)    wq ; wk ; wv
 *   o     layers.N.attention.wo.in     (d = dim)    wo
 *   up    layers.N.feed_forward.in     (d = dim)    w1 ; w3
 *   down  layers.N.feed_forward.w2.in  (d = hidden) w2
 *
 * Activations are captured from the FLOAT model (wq copies and activation/KV
 * quantization off, online rotations on: the values the float linear sees, as
 * `calib` captures them for the workbench) on the first sequences of a token
 * stream, so `calib FILE seqs=N` + `use layers.N.attention.wq` + `qsur` reports
 * the same activation numbers. The weight of a site stacks the rows of every
 * linear that reads that input: the transform pair acts on all of them at once
 * (W S R on the columns), and a single wq of a small model has n <= d rows
 * (singular). Weights are the float `w`, not a quantized copy.
 *
 * Summaries compare sites of different width, and log10 QSUR scales with d
 * (about d log10 QSUR^(1/d)), so the worst site is the one with the smallest
 * per-dimension QSUR^(1/d); the log10 mean is given too. Singular sites
 * (QSUR = 0, e.g. wo's 64 x 64 rows) are left out of means and minima and
 * counted. */
#ifndef QSUR_LLAMA_QSUR_H
#define QSUR_LLAMA_QSUR_H

#include <stdint.h>
#include "qsur/llama.h"
#include "qsur/qsur.h"

enum { QSUR_SITE_QKV = 0, QSUR_SITE_O, QSUR_SITE_UP, QSUR_SITE_DOWN, QSUR_SITE_COUNT };

/* "qkv", "o", "up", "down" (NULL for another value). */
const char *qsur_site_name(int site);
/* The capture name's suffix: "attention.in", "attention.wo.in",
 * "feed_forward.in", "feed_forward.w2.in". */
const char *qsur_site_input(int site);
/* The linears of the site: "wq+wk+wv", "wo", "w1+w3", "w2". */
const char *qsur_site_weights(int site);

typedef struct {
    int layer, site;
    int64_t d;             /* columns of the activation and of the weight */
    double x_log10, x_per_dim; /* activation: log10 QSUR (-inf singular), QSUR^(1/d) (0 singular) */
    int x_singular;
    int64_t w_rows;        /* stacked weight rows */
    double w_log10, w_per_dim;
    int w_singular;
} qsur_site_qsur;

typedef struct {
    int step;              /* set by the caller (OSTQuant: steps done when measured) */
    int n_layers, nsites;  /* nsites = n_layers * QSUR_SITE_COUNT, order layer-major */
    qsur_site_qsur *sites; /* owned */
    int64_t n_tokens;      /* activation rows per site */
    qsur_cube cube;
    double alpha;
    /* activation summary over the non-singular sites (NAN / -1 when none) */
    double x_log10_mean, x_pd_mean, x_pd_min;
    int x_worst;           /* index into sites with the smallest QSUR^(1/d) */
    int x_nsingular;
    /* the same for the weights */
    double w_log10_mean, w_pd_mean, w_pd_min;
    int w_worst;
    int w_nsingular;
    double seconds;        /* wall time of the measurement (capture + QSUR) */
} qsur_llama_qsur;

/* Measures every site of m on the first n_seqs sequences of seq_len tokens of
 * t, cut as qsur_llama_capture cuts them (consecutive chunks of seq_len; 0:
 * t->seq_len; n_seqs <= 0 or too many: all). out is filled
 * (its previous contents are not freed: zero it or free it first); on error it
 * is left empty. Neither m nor t is changed. */
int qsur_llama_qsur_measure(const qsur_llama *m, const qsur_tokens *t, int seq_len, int n_seqs,
                            const qsur_options *opt, qsur_llama_qsur *out, qsur_error *err);
void qsur_llama_qsur_free(qsur_llama_qsur *q);
/* A deep copy (dst's old contents are not freed). */
int qsur_llama_qsur_copy(qsur_llama_qsur *dst, const qsur_llama_qsur *src, qsur_error *err);
/* Recomputes the summary fields from sites[] (after editing or loading rows). */
void qsur_llama_qsur_summarize(qsur_llama_qsur *q);

#endif
