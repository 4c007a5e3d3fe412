/* Text-level evaluation of a Llama model: sampling with a KV cache and the
 * log-likelihood of a continuation (zero-shot multiple choice). */
#ifndef QSUR_LLAMA_TEXT_H
#define QSUR_LLAMA_TEXT_H

#include <stdint.h>
#include "qsur/llama.h"
#include "qsur/rng.h"

/* ---- sampling ---------------------------------------------------------- */

typedef struct {
    double temperature; /* 0: greedy (argmax, ties to the lowest id) */
    double top_p;       /* nucleus: the smallest set of most likely tokens whose
                           probability reaches top_p (1: all); with temperature > 0 */
    uint64_t seed;
} qsur_sample_opts;

/* Scratch for qsur_sample (allocated once per generation). */
typedef struct {
    float p;
    int id;
} qsur_prob_id;

typedef struct {
    float *prob;
    qsur_prob_id *cand;
    int n;
} qsur_sampler;

/* Index of the largest of x[0..n) (the first on ties). */
int qsur_argmax(const float *x, int n);

int qsur_sampler_new(qsur_sampler *sp, int vocab, qsur_error *err);
void qsur_sampler_free(qsur_sampler *sp);
/* Draws the next token from logits[0..V) (not modified). */
int qsur_sample(qsur_sampler *sp, const float *logits, const qsur_sample_opts *o, qsur_rng *rng);

/* Called with each new token; return non-zero to stop (after this token). */
typedef int (*qsur_token_cb)(void *ctx, int token);

/* Runs the prompt (n_prompt >= 1 ids) through the model, then samples up to
 * n_new tokens one at a time with the KV cache, calling cb with each; stops
 * early at stop_id (>= 0; passed to cb first) or when cb or the progress
 * callback asks. *n_out (may be NULL) gets the number generated. A stop asked
 * through the progress callback is not an error (returns QSUR_OK). */
int qsur_llama_sample_stream(const qsur_llama *m, const int *prompt, int n_prompt, int n_new, int stop_id,
                             const qsur_sample_opts *o, qsur_token_cb cb, void *ctx,
                             const qsur_progress *prog, int *n_out, qsur_error *err);

/* ---- continuation log-likelihood ------------------------------------------ */

/* Sum of log p(cont[i] | ctx, cont[0..i)) over the n_cont tokens of the
 * continuation (natural log), and whether every cont[i] is the argmax
 * (*greedy, may be NULL). n_ctx >= 1; s must hold n_ctx + n_cont - 1
 * positions (NULL: allocated). Softmax in double. */
int qsur_llama_loglik(const qsur_llama *m, qsur_llama_state *s, const int *ctx, int n_ctx, const int *cont,
                      int n_cont, double *loglik, int *greedy, qsur_error *err);

/* The same for k continuations of one context, with the context run once:
 * its K/V stay in the cache and each continuation runs from position n_ctx
 * (what lm-evaluation-harness computes, without recomputing the shared
 * context). ll[j] gets continuation j's log-likelihood. */
int qsur_llama_loglik_choices(const qsur_llama *m, const int *ctx, int n_ctx, const int *const *conts,
                              const int *n_conts, int k, double *ll, qsur_error *err);

#endif
