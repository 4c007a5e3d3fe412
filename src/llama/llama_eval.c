/* Evaluation of a Llama model: token files, perplexity, greedy decoding. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "llama_sink.h"
#include "qsur/clock.h"
#include "qsur/llama.h"
#include "qsur/llama_text.h"

int qsur_llama_plan_sequences(const qsur_tokens *t, int *seq_len, int *n_seqs, int *batch,
                              qsur_error *err)
{
    if (*seq_len == 0)
        *seq_len = t->seq_len;
    if (*seq_len < 2)
        return qsur_fail(err, QSUR_ERR_ARG, "sequence length %d: need at least 2 tokens", *seq_len);
    int64_t avail = t->n / *seq_len;
    if (avail < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "%lld tokens hold no sequence of %d",
                         (long long)t->n, *seq_len);
    if (*n_seqs <= 0 || *n_seqs > avail)
        *n_seqs = avail > (1 << 30) ? (1 << 30) : (int)avail;
    if (*batch <= 0)
        *batch = 8;
    if (*batch > *n_seqs)
        *batch = *n_seqs;
    return QSUR_OK;
}

int qsur_llama_perplexity(const qsur_llama *m, qsur_llama_state *s, const qsur_tokens *t,
                          int seq_len, int max_seqs, int batch, const qsur_progress *prog,
                          qsur_llama_ppl *out, qsur_error *err)
{
    memset(out, 0, sizeof *out);
    int n_seqs = max_seqs;
    int rc = qsur_llama_plan_sequences(t, &seq_len, &n_seqs, &batch, err);
    if (rc)
        return rc;
    qsur_llama_state *own = NULL;
    if (!s) {
        if ((rc = qsur_llama_state_new(&own, m, batch, seq_len, err)))
            return rc;
        s = own;
    } else if (s->max_batch < batch || s->max_seq < seq_len) {
        if (s->max_seq < seq_len)
            return qsur_fail(err, QSUR_ERR_ARG, "perplexity: run state holds %d positions, "
                             "sequences have %d", s->max_seq, seq_len);
        batch = s->max_batch;
    }
    int V = m->cfg.vocab_size;
    double nll = 0, t_start = qsur_seconds();
    int64_t count = 0;
    for (int first = 0; first < n_seqs && !rc; first += batch) {
        int B = n_seqs - first < batch ? n_seqs - first : batch;
        const int *tok = t->ids + (int64_t)first * seq_len;
        rc = qsur_llama_forward(m, s, tok, B, seq_len, 0, err);
        if (rc)
            break;
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        for (int bi = 0; bi < B; bi++)
            for (int p = 0; p + 1 < seq_len; p++) {
                const float *lg = s->logits + ((int64_t)bi * seq_len + p) * V;
                float mx = lg[0];
                for (int j = 1; j < V; j++)
                    mx = lg[j] > mx ? lg[j] : mx;
                double sum = 0;
                for (int j = 0; j < V; j++)
                    sum += exp((double)lg[j] - mx);
                int next = tok[(int64_t)bi * seq_len + p + 1];
                nll += log(sum) + mx - lg[next];
                count++;
            }
        clock_gettime(CLOCK_MONOTONIC, &b);
        s->timers.other += (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
        if (!isfinite(nll))
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "perplexity: non-finite loss in sequences "
                           "%d..%d", first, first + B - 1);
        else {
            char what[48];
            snprintf(what, sizeof what, "ppl %.0f tok/s",
                     (double)(first + B) * seq_len / (qsur_seconds() - t_start));
            rc = qsur_progress_tick(prog, (double)(first + B) / n_seqs, what, exp(nll / count), err);
        }
    }
    qsur_llama_state_free(own);
    if (rc)
        return rc;
    out->nll = nll / (double)count;
    out->ppl = exp(out->nll);
    out->n_predicted = count;
    out->n_seqs = n_seqs;
    return QSUR_OK;
}

int qsur_llama_generate(const qsur_llama *m, qsur_llama_state *s, const int *prompt,
                        int n_prompt, int n_new, int *out, qsur_error *err)
{
    if (n_prompt < 1 || n_new < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "generate: prompt of %d tokens, %d new "
                         "(need >= 1 and >= 0)", n_prompt, n_new);
    if (n_new == 0)
        return QSUR_OK;
    int total = n_prompt + n_new - 1; /* the last token is never fed back */
    qsur_llama_state *own = NULL;
    int rc;
    if (!s) {
        if ((rc = qsur_llama_state_new(&own, m, 1, total, err)))
            return rc;
        s = own;
    } else if (s->max_seq < total) {
        return qsur_fail(err, QSUR_ERR_ARG, "generate: %d positions needed, run state holds %d",
                         total, s->max_seq);
    }
    int V = m->cfg.vocab_size;
    rc = qsur_llama_forward(m, s, prompt, 1, n_prompt, 0, err);
    if (!rc)
        out[0] = qsur_argmax(s->logits + (int64_t)(n_prompt - 1) * V, V);
    for (int i = 1; i < n_new && !rc; i++) {
        rc = qsur_llama_forward(m, s, &out[i - 1], 1, 1, n_prompt + i - 1, err);
        if (!rc)
            out[i] = qsur_argmax(s->logits, V);
    }
    qsur_llama_state_free(own);
    return rc;
}
