/* Activation capture: run calibration sequences through the forward pass and
 * keep the inputs of every linear layer (plus K and V) as workspace tensors,
 * optionally on a seeded random subset of token positions. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "llama_sink.h"
#include "qsur/backend.h"
#include "qsur/clock.h"
#include "qsur/llama.h"

struct qsur_llama_capture_sink {
    qsur_tensor **t;   /* [n_layers * QSUR_CAP_KINDS] */
    int64_t *dst;      /* output row of each global token position, -1 = skipped */
    int64_t base;      /* global position of row 0 of the current forward call */
    int64_t nrows;     /* rows of the current call */
};

void qsur_llama_sink_rows(struct qsur_llama_capture_sink *c, int kind, int layer,
                          const float *x, int64_t cols)
{
    qsur_tensor *t = c->t[layer * QSUR_CAP_KINDS + kind];
    if (!t)
        return; /* a layer this capture does not keep */
    for (int64_t r = 0; r < c->nrows; r++) {
        int64_t d = c->dst[c->base + r];
        if (d >= 0)
            memcpy(t->data + d * cols, x + r * cols, (size_t)cols * sizeof(float));
    }
}

int qsur_llama_sink_wants(const struct qsur_llama_capture_sink *c, int kind, int layer)
{
    return c->t[layer * QSUR_CAP_KINDS + kind] != NULL;
}

static const char *const kind_suffix[QSUR_CAP_KINDS] = {
    "attention.in", "attention.wo.in", "feed_forward.in", "feed_forward.w2.in",
    "attention.k", "attention.v"};

const char *qsur_llama_input_of(const char *weight_name, char *buf, size_t n)
{
    int layer, used = 0;
    if (!weight_name || sscanf(weight_name, "layers.%d.%n", &layer, &used) != 1 || used == 0 ||
        layer < 0)
        return NULL;
    const char *rest = weight_name + used;
    const char *in = NULL;
    if (!strcmp(rest, "attention.wq") || !strcmp(rest, "attention.wk") ||
        !strcmp(rest, "attention.wv"))
        in = "attention.in";
    else if (!strcmp(rest, "attention.wo"))
        in = "attention.wo.in";
    else if (!strcmp(rest, "feed_forward.w1") || !strcmp(rest, "feed_forward.w3"))
        in = "feed_forward.in";
    else if (!strcmp(rest, "feed_forward.w2"))
        in = "feed_forward.w2.in";
    if (!in)
        return NULL;
    int w = snprintf(buf, n, "layers.%d.%s", layer, in);
    return w > 0 && (size_t)w < n ? buf : NULL;
}

/* splitmix64: a tiny seeded generator so subsets are reproducible anywhere. */
static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Knuth's selection sampling (TAOCP 3.4.2, Algorithm S): every subset of k of
 * the N positions is equally likely and the chosen ones come out in order. */
static void choose_rows(int64_t *dst, int64_t N, int64_t k, uint64_t seed)
{
    uint64_t st = seed;
    int64_t chosen = 0;
    for (int64_t i = 0; i < N; i++) {
        double u = (double)(splitmix64(&st) >> 11) * 0x1.0p-53;
        if ((double)(N - i) * u < (double)(k - chosen))
            dst[i] = chosen++;
        else
            dst[i] = -1;
    }
}

int qsur_llama_capture(const qsur_llama *m, qsur_llama_state *s, const qsur_tokens *t,
                       int seq_len, int max_seqs, int batch, int64_t max_tokens,
                       uint64_t seed, qsur_workspace *ws, int64_t *n_tokens,
                       const qsur_progress *prog, qsur_error *err)
{
    qsur_llama_capture_sel all = {0, m->cfg.n_layers, (1u << QSUR_CAP_KINDS) - 1};
    return qsur_llama_capture_some(m, s, t, seq_len, max_seqs, batch, max_tokens, seed, &all, ws,
                                   n_tokens, prog, err);
}

int64_t qsur_llama_capture_bytes(const qsur_llama *m, const qsur_llama_capture_sel *sel,
                                 int64_t n_tokens)
{
    const qsur_llama_config *c = &m->cfg;
    int64_t per = 0;
    for (int k = 0; k < QSUR_CAP_KINDS; k++)
        if (sel->kinds & (1u << k))
            per += k == QSUR_CAP_W2_IN ? c->hidden_dim
                 : k == QSUR_CAP_K || k == QSUR_CAP_V ? c->kv_dim : c->dim;
    return per * sel->count * n_tokens * (int64_t)sizeof(float);
}

/* qsur_llama_capture_some with the forward passes on the CPU (g NULL: in s,
 * or a state of its own) or on the GPU model g. */
static int capture_run(const qsur_llama *m, qsur_llama_state *s, qsur_gpu_model *g,
                       const qsur_tokens *t, int seq_len, int max_seqs, int batch,
                       int64_t max_tokens, uint64_t seed, const qsur_llama_capture_sel *sel,
                       qsur_workspace *ws, int64_t *n_tokens, const qsur_progress *prog,
                       qsur_error *err)
{
    if (sel->first < 0 || sel->count < 1 || sel->first + sel->count > m->cfg.n_layers)
        return qsur_fail(err, QSUR_ERR_ARG, "capture: layers %d..%d of %d", sel->first,
                         sel->first + sel->count - 1, m->cfg.n_layers);
    int n_seqs = max_seqs;
    int rc = qsur_llama_plan_sequences(t, &seq_len, &n_seqs, &batch, err);
    if (rc)
        return rc;
    const qsur_llama_config *c = &m->cfg;
    int64_t N = (int64_t)n_seqs * seq_len;
    int64_t n = max_tokens > 0 && max_tokens < N ? max_tokens : N;
    int nt = c->n_layers * QSUR_CAP_KINDS, kept = 0;

    qsur_llama_state *own = NULL;
    if (g) {
        s = NULL; /* the GPU model holds its own buffers */
    } else if (!s) {
        if ((rc = qsur_llama_state_new(&own, m, batch, seq_len, err)))
            return rc;
        s = own;
    } else {
        if (s->max_seq < seq_len)
            return qsur_fail(err, QSUR_ERR_ARG, "capture: run state holds %d positions, "
                             "sequences have %d", s->max_seq, seq_len);
        if (batch > s->max_batch)
            batch = s->max_batch;
    }
    struct qsur_llama_capture_sink sink = {0};
    sink.t = calloc((size_t)nt, sizeof *sink.t);
    sink.dst = qsur_alloc((size_t)N, sizeof(int64_t));
    if (!sink.t || !sink.dst)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "capture: out of memory for %lld positions",
                       (long long)N);
    for (int i = 0; i < nt && !rc; i++) {
        int kind = i % QSUR_CAP_KINDS, layer = i / QSUR_CAP_KINDS;
        if (layer < sel->first || layer >= sel->first + sel->count || !(sel->kinds & (1u << kind)))
            continue;
        kept++;
        int64_t cols = kind == QSUR_CAP_W2_IN ? c->hidden_dim
                     : kind == QSUR_CAP_K || kind == QSUR_CAP_V ? c->kv_dim : c->dim;
        char name[QSUR_NAME_MAX];
        snprintf(name, sizeof name, "layers.%d.%s", i / QSUR_CAP_KINDS, kind_suffix[kind]);
        rc = qsur_tensor_new2(&sink.t[i], name, n, cols, err);
    }
    if (!rc)
        choose_rows(sink.dst, N, n, seed);

    int run_layers = sel->first + sel->count; /* later layers have nothing to keep */
    if (s) {
        s->capture = &sink;
        s->run_layers = run_layers;
    }
    double t0 = qsur_seconds();
    for (int first = 0; first < n_seqs && !rc; first += batch) {
        int B = n_seqs - first < batch ? n_seqs - first : batch;
        sink.base = (int64_t)first * seq_len;
        sink.nrows = (int64_t)B * seq_len;
        rc = g ? qsur_gpu_forward_sink(g, t->ids + sink.base, B, seq_len, run_layers, &sink, err)
               : qsur_llama_forward(m, s, t->ids + sink.base, B, seq_len, 0, err);
        char what[64];
        snprintf(what, sizeof what, "capture %.0f tok/s",
                 (double)(first + B) * seq_len / (qsur_seconds() - t0 + 1e-9));
        if (!rc)
            rc = qsur_progress_tick(prog, (double)(first + B) / n_seqs, what, NAN, err);
    }
    if (s) {
        s->capture = NULL;
        s->run_layers = 0;
    }

    /* Reserve the workspace's capacity first so that no put fails half-way. */
    if (!rc && ws->count + kept > ws->cap) {
        qsur_tensor **items = realloc(ws->items, (size_t)(ws->count + kept) * sizeof *items);
        if (!items)
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "capture: workspace out of memory");
        else {
            ws->items = items;
            ws->cap = ws->count + kept;
        }
    }
    for (int i = 0; sink.t && i < nt; i++) {
        if (!rc && sink.t[i])
            qsur_workspace_put(ws, sink.t[i], err);
        else
            qsur_tensor_free(sink.t[i]);
    }
    free(sink.t);
    free(sink.dst);
    qsur_llama_state_free(own);
    if (!rc && n_tokens)
        *n_tokens = n;
    return rc;
}

int qsur_llama_capture_some(const qsur_llama *m, qsur_llama_state *s, const qsur_tokens *t,
                            int seq_len, int max_seqs, int batch, int64_t max_tokens,
                            uint64_t seed, const qsur_llama_capture_sel *sel,
                            qsur_workspace *ws, int64_t *n_tokens,
                            const qsur_progress *prog, qsur_error *err)
{
    return capture_run(m, s, NULL, t, seq_len, max_seqs, batch, max_tokens, seed, sel, ws,
                       n_tokens, prog, err);
}

int qsur_gpu_capture(qsur_gpu_model *g, const qsur_llama *m, const qsur_tokens *t, int seq_len,
                     int max_seqs, int batch, int64_t max_tokens, uint64_t seed,
                     const qsur_llama_capture_sel *sel, qsur_workspace *ws, int64_t *n_tokens,
                     const qsur_progress *prog, qsur_error *err)
{
    return capture_run(m, NULL, g, t, seq_len, max_seqs, batch, max_tokens, seed, sel, ws,
                       n_tokens, prog, err);
}
