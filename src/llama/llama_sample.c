/* Sampling (greedy, temperature, top-p) and streaming generation with the
 * KV cache (llama2.c's sample() and generate()). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/backend.h"
#include "qsur/llama_text.h"

int qsur_sampler_new(qsur_sampler *sp, int vocab, qsur_error *err)
{
    sp->n = vocab;
    sp->prob = malloc((size_t)vocab * sizeof *sp->prob);
    sp->cand = malloc((size_t)vocab * sizeof *sp->cand);
    if (!sp->prob || !sp->cand) {
        qsur_sampler_free(sp);
        return qsur_fail(err, QSUR_ERR_NOMEM, "sampler: out of memory for %d probabilities", vocab);
    }
    return QSUR_OK;
}

void qsur_sampler_free(qsur_sampler *sp)
{
    free(sp->prob);
    free(sp->cand);
    sp->prob = NULL;
    sp->cand = NULL;
}

int qsur_argmax(const float *x, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static int by_prob_desc(const void *a, const void *b)
{
    const qsur_prob_id *x = a, *y = b;
    return x->p < y->p ? 1 : x->p > y->p ? -1 : x->id - y->id;
}

int qsur_sample(qsur_sampler *sp, const float *logits, const qsur_sample_opts *o, qsur_rng *rng)
{
    int V = sp->n;
    if (o->temperature <= 0)
        return qsur_argmax(logits, V);
    float mx = logits[qsur_argmax(logits, V)];
    double sum = 0;
    for (int i = 0; i < V; i++) {
        sp->prob[i] = (float)exp((logits[i] - mx) / o->temperature);
        sum += sp->prob[i];
    }
    for (int i = 0; i < V; i++)
        sp->prob[i] = (float)(sp->prob[i] / sum);
    double u = qsur_rng_uniform(rng);
    if (o->top_p <= 0 || o->top_p >= 1) {
        double c = 0;
        for (int i = 0; i < V; i++)
            if ((c += sp->prob[i]) > u)
                return i;
        return V - 1;
    }
    /* llama2.c's nucleus sampling: tokens below (1 - p) / (V - 1) cannot be
     * in the nucleus, so only the rest is sorted */
    double cutoff = (1.0 - o->top_p) / (V - 1);
    int n = 0;
    for (int i = 0; i < V; i++)
        if (sp->prob[i] >= cutoff)
            sp->cand[n++] = (qsur_prob_id){sp->prob[i], i};
    qsort(sp->cand, (size_t)n, sizeof *sp->cand, by_prob_desc);
    double c = 0;
    int last = n - 1;
    for (int i = 0; i < n; i++)
        if ((c += sp->cand[i].p) > o->top_p) {
            last = i;
            break;
        }
    double r = u * c, acc = 0;
    for (int i = 0; i <= last; i++)
        if ((acc += sp->cand[i].p) > r)
            return sp->cand[i].id;
    return sp->cand[last].id;
}

/* Where the next token's logits come from: the CPU's forward with its KV
 * cache, or the GPU's forward over the whole sequence so far. */
typedef struct {
    const qsur_llama *m;
    qsur_llama_state *s;   /* CPU */
    qsur_gpu_model *g;     /* GPU */
    float *row;            /* GPU: the last row's logits (host) */
} logit_source;

/* Logits after seq[0..n) into *logits; the CPU feeds only what its cache lacks. */
static int next_logits(logit_source *src, const int *seq, int n, int n_prompt, const float **logits,
                       qsur_error *err)
{
    int V = src->m->cfg.vocab_size, rc;
    if (src->g) {
        rc = qsur_gpu_last_logits(src->g, seq, n, src->row, err);
        *logits = src->row;
        return rc;
    }
    if (n == n_prompt) {
        rc = qsur_llama_forward(src->m, src->s, seq, 1, n_prompt, 0, err);
        *logits = src->s->logits + (int64_t)(n_prompt - 1) * V;
    } else {
        rc = qsur_llama_forward(src->m, src->s, seq + n - 1, 1, 1, n - 1, err);
        *logits = src->s->logits;
    }
    return rc;
}

static int sample_run(logit_source *src, const int *prompt, int n_prompt, int n_new, int stop_id,
                      const qsur_sample_opts *o, qsur_token_cb cb, void *ctx,
                      const qsur_progress *prog, int *n_out, qsur_error *err)
{
    if (n_out)
        *n_out = 0;
    if (n_prompt < 1 || n_new < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "generate: prompt of %d tokens, %d new (need >= 1 and >= 0)",
                         n_prompt, n_new);
    if (n_new == 0)
        return QSUR_OK;
    const qsur_llama *m = src->m;
    qsur_sampler sp = {0};
    int *seq = malloc((size_t)(n_prompt + n_new) * sizeof *seq);
    int rc = seq ? QSUR_OK : qsur_fail(err, QSUR_ERR_NOMEM, "generate: out of memory");
    if (!rc && !src->g)
        rc = qsur_llama_state_new(&src->s, m, 1, n_prompt + n_new, err);
    if (!rc && src->g && !(src->row = malloc((size_t)m->cfg.vocab_size * sizeof(float))))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "generate: out of memory");
    if (!rc)
        rc = qsur_sampler_new(&sp, m->cfg.vocab_size, err);
    qsur_rng rng;
    qsur_rng_seed(&rng, o->seed);
    const float *logits = NULL;
    int n = n_prompt, made = 0;
    if (!rc) {
        memcpy(seq, prompt, (size_t)n_prompt * sizeof *seq);
        rc = next_logits(src, seq, n, n_prompt, &logits, err);
    }
    while (!rc && made < n_new) {
        int tok = qsur_sample(&sp, logits, o, &rng);
        made++;
        seq[n++] = tok;
        int stop = (cb && cb(ctx, tok)) || tok == stop_id || made == n_new;
        if (!stop)
            rc = qsur_progress_tick(prog, (double)made / n_new, "generate", NAN, err);
        if (rc == QSUR_ERR_INTERRUPTED) {
            rc = QSUR_OK;
            break;
        }
        if (stop || rc)
            break;
        rc = next_logits(src, seq, n, n_prompt, &logits, err);
    }
    qsur_sampler_free(&sp);
    qsur_llama_state_free(src->s);
    free(src->row);
    free(seq);
    if (n_out)
        *n_out = made;
    return rc;
}

int qsur_llama_sample_stream(const qsur_llama *m, const int *prompt, int n_prompt, int n_new, int stop_id,
                             const qsur_sample_opts *o, qsur_token_cb cb, void *ctx,
                             const qsur_progress *prog, int *n_out, qsur_error *err)
{
    logit_source src = {m, NULL, NULL, NULL};
    return sample_run(&src, prompt, n_prompt, n_new, stop_id, o, cb, ctx, prog, n_out, err);
}

int qsur_gpu_sample_stream(qsur_gpu_model *g, const qsur_llama *m, const int *prompt, int n_prompt,
                           int n_new, int stop_id, const qsur_sample_opts *o, qsur_token_cb cb,
                           void *ctx, const qsur_progress *prog, int *n_out, qsur_error *err)
{
    logit_source src = {m, NULL, g, NULL};
    return sample_run(&src, prompt, n_prompt, n_new, stop_id, o, cb, ctx, prog, n_out, err);
}
