/* Block-by-block calibration (qsur/llama_calib.h): the residual stream of the
 * calibration tokens, one block at a time. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "llama_sink.h"
#include "qsur/llama_calib.h"

struct qsur_llama_calib {
    int seq_len, n_seqs, batch, block, n_layers;
    int64_t n;           /* selected positions */
    int64_t *dst;        /* qsur_llama_choose_rows of every position */
    float *in, *out;     /* [n_seqs * seq_len][dim]: the stream entering `block`, and
                            the next one while a block runs (swapped when it completes) */
    qsur_llama_state *s; /* run state of a one-block model */
};

qsur_llama qsur_llama_blocks_view(const qsur_llama *m, int first, int n)
{
    qsur_llama v = *m;
    v.layers = m->layers + first;
    v.cfg.n_layers = n;
    v.cfg.vocab_size = 1;
    return v;
}

void qsur_llama_calib_free(qsur_llama_calib *c)
{
    if (!c)
        return;
    free(c->dst);
    free(c->in);
    free(c->out);
    qsur_llama_state_free(c->s);
    free(c);
}

int qsur_llama_calib_new(qsur_llama_calib **out, const qsur_llama *m, const qsur_tokens *t,
                         int seq_len, int max_seqs, int batch, int64_t max_tokens,
                         uint64_t seed, qsur_error *err)
{
    *out = NULL;
    int n_seqs = max_seqs;
    int rc = qsur_llama_plan_sequences(t, &seq_len, &n_seqs, &batch, err);
    if (rc)
        return rc;
    const qsur_llama_config *cfg = &m->cfg;
    int64_t N = (int64_t)n_seqs * seq_len;
    for (int64_t i = 0; i < N; i++)
        if (t->ids[i] < 0 || t->ids[i] >= cfg->vocab_size)
            return qsur_fail(err, QSUR_ERR_ARG, "calibration: token %lld = %d out of range 0..%d",
                             (long long)i, t->ids[i], cfg->vocab_size - 1);
    qsur_llama_calib *c = calloc(1, sizeof *c);
    if (!c)
        return qsur_fail(err, QSUR_ERR_NOMEM, "calibration: out of memory");
    c->seq_len = seq_len, c->n_seqs = n_seqs, c->batch = batch, c->n_layers = cfg->n_layers;
    c->n = max_tokens > 0 && max_tokens < N ? max_tokens : N;
    c->dst = qsur_alloc((size_t)N, sizeof *c->dst);
    c->in = qsur_alloc((size_t)N, (size_t)cfg->dim * sizeof(float));
    c->out = qsur_alloc((size_t)N, (size_t)cfg->dim * sizeof(float));
    qsur_llama v = qsur_llama_blocks_view(m, 0, 1);
    if (!c->dst || !c->in || !c->out)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "calibration: cannot hold the stream of %lld tokens "
                       "x %d", (long long)N, cfg->dim);
    else
        rc = qsur_llama_state_new(&c->s, &v, batch, seq_len, err);
    if (rc) {
        qsur_llama_calib_free(c);
        return rc;
    }
    qsur_llama_choose_rows(c->dst, N, c->n, seed);
    /* the block-0 input, as qsur_llama_forward starts it */
    qsur_llama_embed_rows(m, t->ids, N, c->in);
    *out = c;
    return QSUR_OK;
}

int64_t qsur_llama_calib_tokens(const qsur_llama_calib *c)
{
    return c->n;
}

int qsur_llama_calib_block(const qsur_llama_calib *c)
{
    return c->block;
}

int64_t qsur_llama_calib_bytes(const qsur_llama_calib *c)
{
    int64_t N = (int64_t)c->n_seqs * c->seq_len;
    return 2 * N * c->s->dim * (int64_t)sizeof(float) + N * (int64_t)sizeof(int64_t);
}

int qsur_llama_calib_run(qsur_llama_calib *c, const qsur_llama *m, const qsur_llama_calib_use *uses,
                         int nuses, int advance, const qsur_progress *prog, qsur_error *err)
{
    if (c->block >= c->n_layers)
        return qsur_fail(err, QSUR_ERR_ARG, "calibration: every block (%d) has run", c->n_layers);
    if (nuses < 0 || nuses > QSUR_LLAMA_CALIB_USES)
        return qsur_fail(err, QSUR_ERR_ARG, "calibration: %d statistics (at most %d)", nuses,
                         QSUR_LLAMA_CALIB_USES);
    if (m->cfg.dim != c->s->dim || m->cfg.n_layers != c->n_layers)
        return qsur_fail(err, QSUR_ERR_ARG, "calibration: the stream was made for another model");
    qsur_llama v = qsur_llama_blocks_view(m, c->block, 1);
    struct qsur_llama_capture_sink sink = {0};
    sink.dst = c->dst;
    for (int u = 0; u < nuses; u++)
        sink.use[sink.nuse++] = (qsur_llama_sink_use){0, uses[u].kind, uses[u].row, uses[u].ctx};
    const int64_t d = m->cfg.dim, T = c->seq_len;
    int rc = QSUR_OK;
    c->s->capture = &sink;
    for (int first = 0; first < c->n_seqs && !rc; first += c->batch) {
        int B = c->n_seqs - first < c->batch ? c->n_seqs - first : c->batch;
        sink.base = (int64_t)first * T;
        sink.nrows = (int64_t)B * T;
        memcpy(c->s->x, c->in + sink.base * d, (size_t)(sink.nrows * d) * sizeof(float));
        rc = qsur_llama_forward_block(&v, c->s, 0, B, (int)T, err);
        if (!rc && advance)
            memcpy(c->out + sink.base * d, c->s->x, (size_t)(sink.nrows * d) * sizeof(float));
        if (!rc)
            rc = qsur_progress_tick(prog, (double)(first + B) / c->n_seqs, "calibration block", NAN,
                                    err);
    }
    c->s->capture = NULL;
    if (!rc && advance) {
        float *tmp = c->in;
        c->in = c->out;
        c->out = tmp;
        c->block++;
    }
    return rc;
}
