/* Log-likelihood of a continuation given a context: the score of one choice
 * of a zero-shot multiple-choice task (lm-evaluation-harness's
 * loglikelihood request). The context and all but the last continuation
 * token run in one forward pass; the logits at position n_ctx - 1 + i
 * predict cont[i]. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama_text.h"

/* log softmax(z)[tok] in double; *greedy &= tok is the argmax. */
static double log_prob(const float *z, int V, int tok, int *greedy)
{
    int best = qsur_argmax(z, V);
    double se = 0;
    for (int j = 0; j < V; j++)
        se += exp((double)z[j] - z[best]);
    *greedy &= z[tok] >= z[best];
    return (double)z[tok] - z[best] - log(se);
}

static int check_cont(const int *cont, int n_cont, int V, qsur_error *err)
{
    if (n_cont < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "loglik: a continuation of %d tokens (need >= 1)", n_cont);
    for (int i = 0; i < n_cont; i++)
        if (cont[i] < 0 || cont[i] >= V)
            return qsur_fail(err, QSUR_ERR_ARG, "loglik: continuation token %d = %d is outside the vocabulary "
                             "(0..%d)", i, cont[i], V - 1);
    return QSUR_OK;
}

int qsur_llama_loglik(const qsur_llama *m, qsur_llama_state *s, const int *ctx, int n_ctx, const int *cont,
                      int n_cont, double *loglik, int *greedy, qsur_error *err)
{
    int V = m->cfg.vocab_size;
    if (n_ctx < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "loglik: a context of %d tokens (need >= 1)", n_ctx);
    int rc = check_cont(cont, n_cont, V, err);
    if (rc)
        return rc;
    int T = n_ctx + n_cont - 1;
    int *seq = malloc((size_t)T * sizeof *seq);
    qsur_llama_state *own = NULL;
    rc = seq ? QSUR_OK : qsur_fail(err, QSUR_ERR_NOMEM, "loglik: out of memory");
    if (!rc && !s && !(rc = qsur_llama_state_new(&own, m, 1, T, err)))
        s = own;
    if (!rc && s->max_seq < T)
        rc = qsur_fail(err, QSUR_ERR_ARG, "loglik: %d positions needed, the run state holds %d", T, s->max_seq);
    if (!rc) {
        for (int i = 0; i < n_ctx; i++)
            seq[i] = ctx[i];
        for (int i = 0; i + 1 < n_cont; i++)
            seq[n_ctx + i] = cont[i];
        rc = qsur_llama_forward(m, s, seq, 1, T, 0, err);
    }
    double sum = 0;
    int all_greedy = 1;
    for (int i = 0; !rc && i < n_cont; i++)
        sum += log_prob(s->logits + (int64_t)(n_ctx - 1 + i) * V, V, cont[i], &all_greedy);
    free(seq);
    qsur_llama_state_free(own);
    if (rc)
        return rc;
    if (!isfinite(sum))
        return qsur_fail(err, QSUR_ERR_NUMERIC, "loglik: non-finite log-likelihood");
    *loglik = sum;
    if (greedy)
        *greedy = all_greedy;
    return QSUR_OK;
}

int qsur_llama_loglik_choices(const qsur_llama *m, const int *ctx, int n_ctx, const int *const *conts,
                              const int *n_conts, int k, double *ll, qsur_error *err)
{
    int V = m->cfg.vocab_size, longest = 1;
    if (n_ctx < 1 || k < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "loglik: a context of %d tokens and %d choices (need >= 1 each)", n_ctx,
                         k);
    for (int j = 0; j < k; j++) {
        int rc = check_cont(conts[j], n_conts[j], V, err);
        if (rc)
            return rc;
        longest = n_conts[j] > longest ? n_conts[j] : longest;
    }
    qsur_llama_state *s = NULL;
    float *first = malloc((size_t)V * sizeof *first);
    int rc = first ? qsur_llama_state_new(&s, m, 1, n_ctx + longest - 1, err)
                   : qsur_fail(err, QSUR_ERR_NOMEM, "loglik: out of memory");
    if (!rc)
        rc = qsur_llama_forward(m, s, ctx, 1, n_ctx, 0, err);
    if (!rc) /* the context's last row predicts every continuation's first token */
        memcpy(first, s->logits + (int64_t)(n_ctx - 1) * V, (size_t)V * sizeof *first);
    for (int j = 0; !rc && j < k; j++) {
        int g = 1, n = n_conts[j];
        double sum = log_prob(first, V, conts[j][0], &g);
        /* positions n_ctx.. of the cache are this continuation's; the context's
         * stay: rewind the cache to the context before each choice */
        s->pos = n_ctx;
        if (n > 1)
            rc = qsur_llama_forward(m, s, conts[j], 1, n - 1, n_ctx, err);
        for (int i = 1; !rc && i < n; i++)
            sum += log_prob(s->logits + (int64_t)(i - 1) * V, V, conts[j][i], &g);
        if (!rc && !isfinite(sum))
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "loglik: non-finite log-likelihood of choice %d", j);
        if (!rc)
            ll[j] = sum;
    }
    free(first);
    qsur_llama_state_free(s);
    return rc;
}
