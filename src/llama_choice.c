/* Log-likelihood of a continuation given a context: the score of one choice
 * of a zero-shot multiple-choice task (lm-evaluation-harness's
 * loglikelihood request). The context and all but the last continuation
 * token run in one forward pass; the logits at position n_ctx - 1 + i
 * predict cont[i]. */
#include <math.h>
#include <stdlib.h>
#include "qsur/llama_text.h"

int qsur_llama_loglik(const qsur_llama *m, qsur_llama_state *s, const int *ctx, int n_ctx, const int *cont,
                      int n_cont, double *loglik, int *greedy, qsur_error *err)
{
    if (n_ctx < 1 || n_cont < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "loglik: context of %d and continuation of %d tokens (need >= 1 each)",
                         n_ctx, n_cont);
    int T = n_ctx + n_cont - 1, V = m->cfg.vocab_size;
    for (int i = 0; i < n_cont; i++)
        if (cont[i] < 0 || cont[i] >= V)
            return qsur_fail(err, QSUR_ERR_ARG, "loglik: continuation token %d = %d is outside the vocabulary "
                             "(0..%d)", i, cont[i], V - 1);
    int *seq = malloc((size_t)T * sizeof *seq);
    qsur_llama_state *own = NULL;
    int rc = seq ? QSUR_OK : qsur_fail(err, QSUR_ERR_NOMEM, "loglik: out of memory");
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
    for (int i = 0; !rc && i < n_cont; i++) {
        const float *z = s->logits + (int64_t)(n_ctx - 1 + i) * V;
        int best = qsur_argmax(z, V);
        double se = 0;
        for (int j = 0; j < V; j++)
            se += exp((double)z[j] - z[best]);
        sum += (double)z[cont[i]] - z[best] - log(se);
        all_greedy &= z[cont[i]] >= z[best];
    }
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
