/* Layers of the session and the metrics shown for them. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "layer_pick.h"
#include "layer_state.h"
#include "layer_transform.h"
#include "session.h"

void layer_state_free(layer_state *l)
{
    layer_transform_free(l);
    free(l->xq.data);
    free(l->wq.data);
    free(l->ref.y);
    memset(l, 0, sizeof *l);
}

layer_state *session_layer(session *s, qsur_error *err)
{
    /* Nothing selected but only one layer to look at (`load W.npy`, then
     * `qsur`): select it rather than send the user to `use`. */
    char w[QSUR_NAME_MAX], x[QSUR_NAME_MAX];
    if ((s->current < 0 || s->current >= s->nlayers) && layer_pick_obvious(s->ws.items, s->ws.count, w, x, sizeof w))
        session_use_layer(s, w[0] ? w : NULL, x[0] ? x : NULL, err);
    if (s->current < 0 || s->current >= s->nlayers) {
        qsur_fail(err, QSUR_ERR_ARG, "no layer selected (use `use NAME [ACTIVATION]`; `layers` lists names)");
        return NULL;
    }
    return &s->layers[s->current];
}

static int same_layer(const layer_state *l, const char *w, const char *x)
{
    return strcmp(l->w_name, w ? w : "") == 0 && strcmp(l->x_name, x ? x : "") == 0;
}

int session_use_layer(session *s, const char *w_name, const char *x_name, qsur_error *err)
{
    const qsur_tensor *w = w_name ? qsur_workspace_find(&s->ws, w_name) : NULL;
    const qsur_tensor *x = x_name ? qsur_workspace_find(&s->ws, x_name) : NULL;
    if (w_name && !w)
        return qsur_fail(err, QSUR_ERR_ARG, "no tensor named '%s' (`layers` lists them)", w_name);
    if (x_name && !x)
        return qsur_fail(err, QSUR_ERR_ARG, "no tensor named '%s' (`layers` lists them)", x_name);
    if (!w && !x)
        return qsur_fail(err, QSUR_ERR_ARG, "name a weight and/or an activation");
    if (w && x && qsur_tensor_cols(w) != qsur_tensor_cols(x))
        return qsur_fail(err, QSUR_ERR_ARG,
                         "%s has %lld input columns but activation %s has %lld channels (need W: out x in, X: tokens x in)",
                         w_name, (long long)qsur_tensor_cols(w), x_name, (long long)qsur_tensor_cols(x));
    for (int i = 0; i < s->nlayers; i++)
        if (same_layer(&s->layers[i], w_name, x_name)) {
            s->current = i;
            return QSUR_OK;
        }
    if (s->nlayers == s->layers_cap) {
        int cap = s->layers_cap ? s->layers_cap * 2 : 8;
        layer_state *p = realloc(s->layers, (size_t)cap * sizeof *p);
        if (!p)
            return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
        s->layers = p;
        s->layers_cap = cap;
    }
    layer_state *l = &s->layers[s->nlayers];
    memset(l, 0, sizeof *l);
    snprintf(l->w_name, sizeof l->w_name, "%s", w_name ? w_name : "");
    snprintf(l->x_name, sizeof l->x_name, "%s", x_name ? x_name : "");
    snprintf(l->name, sizeof l->name, "%s", w_name ? w_name : x_name);
    l->w_t = w;
    l->x_t = x;
    l->base_logdet_x = NAN;
    l->base_logdet_w = NAN;
    s->current = s->nlayers++;
    return QSUR_OK;
}

void session_drop_layers(session *s, int (*drop)(const session *s, const layer_state *l))
{
    int keep = 0;
    for (int i = 0; i < s->nlayers; i++) {
        layer_state *l = &s->layers[i];
        if (drop(s, l)) {
            if (i == s->current)
                s->current = -1;
            layer_state_free(l);
            continue;
        }
        if (i == s->current)
            s->current = keep;
        s->layers[keep++] = *l;
    }
    s->nlayers = keep;
}

static int is_stale(const session *s, const layer_state *l)
{
    return (l->w_name[0] && qsur_workspace_find(&s->ws, l->w_name) != l->w_t) ||
           (l->x_name[0] && qsur_workspace_find(&s->ws, l->x_name) != l->x_t);
}

void session_drop_stale_layers(session *s)
{
    session_drop_layers(s, is_stale);
}

int layer_view_get(session *s, layer_state *l, int base, layer_view *v, qsur_error *err)
{
    memset(v, 0, sizeof *v);
    const qsur_tensor *w = l->w_name[0] ? qsur_workspace_find(&s->ws, l->w_name) : NULL;
    const qsur_tensor *x = l->x_name[0] ? qsur_workspace_find(&s->ws, l->x_name) : NULL;
    if ((l->w_name[0] && !w) || (l->x_name[0] && !x))
        return qsur_fail(err, QSUR_ERR_ARG, "layer %s: its tensors are no longer in the workspace", l->name);
    if (x) {
        v->x = x->data;
        v->n = qsur_tensor_rows(x);
        v->d = qsur_tensor_cols(x);
    }
    if (w) {
        v->w = w->data;
        v->m = qsur_tensor_rows(w);
        v->d = qsur_tensor_cols(w);
    }
    if (!base && l->stack)
        layer_transform_current(l, &v->x, &v->w);
    return QSUR_OK;
}

/* ln det of the original covariance, computed once per layer (the expensive
 * eigen-decomposition); singular covariances keep their reason. */
static int base_logdet(session *s, const float *a, int64_t rows, int64_t d, double *logdet,
                       char *reason, qsur_error *err)
{
    if (!isnan(*logdet))
        return QSUR_OK;
    qsur_options opt = qsur_options_default();
    opt.alpha = s->set.qsur_alpha;
    opt.method = (qsur_method)s->set.qsur_method;
    qsur_result res;
    int rc = qsur_compute(a, rows, d, &opt, &res, &s->progress, err);
    if (rc != QSUR_OK)
        return rc;
    *logdet = res.log_det;
    snprintf(reason, QSUR_REASON_MAX, "%s", res.reason);
    return QSUR_OK;
}

/* A buffer of at least n floats kept across updates: freshly allocated pages
 * cost a page fault each on first touch, which was most of an update's time
 * on a 4096-channel layer. */
static float *scratch(layer_scratch *b, int64_t n)
{
    if (b->cap < n) {
        free(b->data);
        b->data = qsur_alloc((size_t)n, sizeof *b->data);
        b->cap = b->data ? n : 0;
    }
    return b->data;
}

/* One side's job: QSUR (incremental: column moments + the log-det) and the
 * quantization error, one read of the matrix for each. quantized, when not
 * NULL, receives Q(a) in buf. */
typedef struct {
    const session *s;
    const float *a;
    int64_t rows, d;
    double logdet;
    const char *reason;
    const qsur_quant_spec *q;
    qsur_result *qr;
    qsur_error_metrics *em;
    layer_scratch *buf;
    float **quantized;
    const qsur_progress *prog;
    qsur_error err;
    int rc;
} side_job;

static void side_metrics(side_job *j)
{
    qsur_options opt = qsur_options_default();
    opt.alpha = j->s->set.qsur_alpha;
    opt.cube = j->s->set.qsur_asym ? QSUR_CUBE_ASYM : QSUR_CUBE_SYM;
    int64_t d = j->d;
    double *mean = malloc((size_t)d * sizeof *mean), *var = malloc((size_t)d * sizeof *var);
    float *qa = j->quantized ? scratch(j->buf, j->rows * d) : NULL;
    if (!mean || !var || (j->quantized && !qa)) {
        free(mean);
        free(var);
        j->rc = qsur_fail(&j->err, QSUR_ERR_NOMEM, "out of memory for a %lldx%lld layer",
                          (long long)j->rows, (long long)d);
        return;
    }
    qsur_column_moments(j->a, j->rows, d, mean, var);
    qsur_from_moments(mean, var, j->logdet, j->rows, d, &opt, j->qr);
    if (j->qr->singular)
        snprintf(j->qr->reason, sizeof j->qr->reason, "%s", j->reason);
    free(mean);
    free(var);
    j->rc = qsur_fake_quant_measure(j->q, j->a, j->rows, d, qa, j->em, j->prog, &j->err);
    if (j->rc == QSUR_OK && j->quantized)
        *j->quantized = qa;
}

static void *side_thread(void *arg)
{
    side_metrics(arg);
    return NULL;
}

/* X and W are independent and each pass is a few tens of ms of memory-bound
 * work on a 4096-channel layer, so they run side by side on the two cores a
 * workstation has at least. The W job gets no progress callback: the
 * callback draws on the terminal, which only the main thread may do. */
static int run_sides(side_job *x, side_job *w, qsur_error *err)
{
    pthread_t tid;
    int threaded = x && w && pthread_create(&tid, NULL, side_thread, w) == 0;
    if (x)
        side_metrics(x);
    if (threaded)
        pthread_join(tid, NULL);
    else if (w)
        side_metrics(w);
    side_job *bad = x && x->rc != QSUR_OK ? x : w && w->rc != QSUR_OK ? w : NULL;
    if (!bad)
        return QSUR_OK;
    *err = bad->err;
    return bad->rc;
}

/* Budget of multiply-adds for one output-error GEMM in automatic mode. */
#define OUTPUT_ERROR_BUDGET (1LL << 30)

int64_t layer_error_tokens(const session *s, const layer_view *v)
{
    long want = s->set.error_tokens;
    if (want == 0)
        return v->n;
    if (want > 0)
        return want < v->n ? want : v->n;
    long long per_token = (long long)v->d * v->m;
    int64_t k = per_token > 0 ? (int64_t)(OUTPUT_ERROR_BUDGET / per_token) : v->n;
    if (k < 64)
        k = 64; /* fewer tokens would make the estimate noisy; pay for at least 64 */
    return k < v->n ? k : v->n;
}

/* Row i of the sample is row i*n/k of a: evenly spaced, the same rows for the
 * reference, the output error and the equivalence error. */
static void gather_rows(const float *a, int64_t n, int64_t d, int64_t k, float *out)
{
    for (int64_t i = 0; i < k; i++)
        memcpy(out + i * d, a + (i * n / k) * d, (size_t)d * sizeof *out);
}

float *layer_sample_rows(const float *a, int64_t n, int64_t d, int64_t k)
{
    float *out = qsur_alloc((size_t)(k * d), sizeof *out);
    if (out)
        gather_rows(a, n, d, k, out);
    return out;
}

int layer_reference_get(session *s, layer_state *l, int64_t k, const float **y, qsur_error *err)
{
    if (l->ref.y && l->ref.k == k) {
        *y = l->ref.y;
        return QSUR_OK;
    }
    layer_view o;
    int rc = layer_view_get(s, l, 1, &o, err);
    if (rc != QSUR_OK)
        return rc;
    if (!o.x || !o.w || k < 1 || k > o.n)
        return qsur_fail(err, QSUR_ERR_ARG, "layer %s: no reference output on %lld tokens (needs X and W)",
                         l->name, (long long)k);
    free(l->ref.y);
    l->ref.y = NULL;
    float *xs = k < o.n ? layer_sample_rows(o.x, o.n, o.d, k) : NULL;
    float *ry = qsur_alloc((size_t)(k * o.m), sizeof *ry);
    if (!ry || (k < o.n && !xs)) {
        free(xs);
        free(ry);
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory for the %lldx%lld reference output",
                         (long long)k, (long long)o.m);
    }
    rc = qsur_output_product(xs ? xs : o.x, o.w, k, o.d, o.m, ry, err);
    free(xs);
    if (rc != QSUR_OK) {
        free(ry);
        return rc;
    }
    l->ref = (layer_reference){ry, k};
    *y = ry;
    return QSUR_OK;
}

/* Output error of the current state on k sample tokens against the reference.
 * Per-row and per-group scales are row-local, so the sample rows quantized on
 * their own are exactly those rows of Q(X); a per-tensor scale needs Q(X)
 * whole (xq_full). */
static int output_error(session *s, layer_state *l, const layer_view *v, const float *xq_full,
                        const float *wq, int64_t k, double *out, qsur_error *err)
{
    const float *y;
    int rc = layer_reference_get(s, l, k, &y, err);
    if (rc != QSUR_OK)
        return rc;
    float *xs = qsur_alloc((size_t)(k * v->d), sizeof *xs);
    if (!xs)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory for the output-error sample");
    if (xq_full) {
        gather_rows(xq_full, v->n, v->d, k, xs);
    } else {
        gather_rows(v->x, v->n, v->d, k, xs);
        rc = qsur_fake_quant(&s->aq, xs, k, v->d, xs, NULL, err);
    }
    if (rc == QSUR_OK)
        rc = qsur_output_error_ref(y, xs, wq, k, v->d, v->m, out, err);
    free(xs);
    return rc;
}


static int cache_hit(const session *s, const layer_metrics_cache *c, uint64_t state)
{
    return c->valid && c->state == state && qsur_quant_spec_equal(&c->wq, &s->wq) && qsur_quant_spec_equal(&c->aq, &s->aq) &&
           c->alpha == s->set.qsur_alpha && c->asym == s->set.qsur_asym &&
           c->error_tokens == s->set.error_tokens;
}

void layer_metrics_forget(layer_state *l, int logdet_too)
{
    for (int i = 0; i < LAYER_CACHE_SLOTS; i++)
        l->cache[i].valid = 0;
    if (logdet_too)
        l->base_logdet_x = l->base_logdet_w = NAN;
}

static int metrics_uncached(session *s, layer_state *l, int base, layer_metrics *m, qsur_error *err);

static layer_metrics_cache *cache_find(const session *s, layer_state *l, uint64_t state)
{
    for (int i = 0; i < LAYER_CACHE_SLOTS; i++)
        if (cache_hit(s, &l->cache[i], state))
            return &l->cache[i];
    return NULL;
}

layer_metrics_cache *layer_metrics_cached(const session *s, layer_state *l)
{
    return cache_find(s, l, l->stack ? qsur_stack_state_id(l->stack) : 0);
}

int layer_metrics_compute(session *s, layer_state *l, int base, layer_metrics *m, qsur_error *err)
{
    uint64_t state = base || !l->stack ? 0 : qsur_stack_state_id(l->stack);
    const layer_metrics_cache *hit = cache_find(s, l, state);
    if (hit) {
        *m = hit->m;
        return QSUR_OK;
    }
    int rc = metrics_uncached(s, l, state == 0, m, err);
    if (rc != QSUR_OK)
        return rc;
    int slot = 0;
    if (state != 0) {
        slot = l->cache_next < 1 || l->cache_next >= LAYER_CACHE_SLOTS ? 1 : l->cache_next;
        l->cache_next = slot + 1;
    }
    l->cache[slot] = (layer_metrics_cache){1, state, *m, s->wq, s->aq, s->set.qsur_alpha,
                                           s->set.qsur_asym, s->set.error_tokens, 0, NAN};
    return QSUR_OK;
}

static int metrics_uncached(session *s, layer_state *l, int base, layer_metrics *m, qsur_error *err)
{
    memset(m, 0, sizeof *m);
    m->out_err = NAN;
    layer_view orig, v;
    int rc = layer_view_get(s, l, 1, &orig, err);
    if (rc == QSUR_OK)
        rc = layer_view_get(s, l, base, &v, err);
    if (rc != QSUR_OK)
        return rc;
    double shift_x = 0, shift_w = 0;
    if (!base)
        layer_transform_logdet_shift(l, &shift_x, &shift_w);
    float *xq = NULL, *wq = NULL;
    side_job jx, jw;
    if (v.x) {
        rc = base_logdet(s, orig.x, orig.n, orig.d, &l->base_logdet_x, l->reason_x, err);
        /* Q(X) is only kept when the output error needs all of it. */
        int keep = v.w && s->aq.gran == QSUR_GRAN_TENSOR;
        jx = (side_job){.s = s, .a = v.x, .rows = v.n, .d = v.d, .logdet = l->base_logdet_x + shift_x,
                        .reason = l->reason_x, .q = &s->aq, .qr = &m->qx, .em = &m->ex, .buf = &l->xq,
                        .quantized = keep ? &xq : NULL, .prog = &s->progress};
    }
    if (rc == QSUR_OK && v.w) {
        rc = base_logdet(s, orig.w, orig.m, orig.d, &l->base_logdet_w, l->reason_w, err);
        jw = (side_job){.s = s, .a = v.w, .rows = v.m, .d = v.d, .logdet = l->base_logdet_w + shift_w,
                        .reason = l->reason_w, .q = &s->wq, .qr = &m->qw, .em = &m->ew, .buf = &l->wq,
                        .quantized = v.x ? &wq : NULL, .prog = v.x ? NULL : &s->progress};
    }
    if (rc == QSUR_OK)
        rc = run_sides(v.x ? &jx : NULL, v.w ? &jw : NULL, err);
    m->has_x = v.x && rc == QSUR_OK;
    m->has_w = v.w && rc == QSUR_OK;
    if (rc == QSUR_OK && v.x && v.w) {
        m->out_err_tokens = layer_error_tokens(s, &v);
        rc = output_error(s, l, &v, xq, wq, m->out_err_tokens, &m->out_err, err);
    }
    return rc;
}

int layer_stack_depth(const layer_state *l)
{
    return layer_transform_depth(l);
}
