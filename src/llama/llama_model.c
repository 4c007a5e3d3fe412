/* The Llama model: config checks, owned weights, conversion from/to a
 * workspace of Meta-named tensors, and the fake-quantized weight copies. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "qsur/llama.h"
#include "qsur/llama2c.h"
#include "qsur/safetensors.h"

/* Far above any model this tool targets; keeps every product in 64 bits. */
#define MAX_SIZE (1 << 20)

qsur_llama_config qsur_llama_config_default(void)
{
    qsur_llama_config c;
    memset(&c, 0, sizeof c);
    c.rope_theta = 10000.0;
    c.norm_eps = 1e-5;
    c.shared_classifier = 1;
    return c;
}

int qsur_llama_config_check(qsur_llama_config *c, const char *what, qsur_error *err)
{
    const struct { const char *name; int v; } f[] = {
        {"dim", c->dim}, {"hidden_dim", c->hidden_dim}, {"n_layers", c->n_layers},
        {"n_heads", c->n_heads}, {"n_kv_heads", c->n_kv_heads},
        {"vocab_size", c->vocab_size}, {"seq_len", c->seq_len}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].v <= 0 || f[i].v > MAX_SIZE)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %s = %d (expected 1..%d)", what,
                             f[i].name, f[i].v, MAX_SIZE);
    if (c->dim % c->n_heads)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: n_heads = %d does not divide dim = %d",
                         what, c->n_heads, c->dim);
    if (c->n_heads % c->n_kv_heads)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: n_kv_heads = %d does not divide n_heads = %d", what,
                         c->n_kv_heads, c->n_heads);
    c->head_size = c->dim / c->n_heads;
    if (c->head_size % 2)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: head_size = %d is odd (RoPE needs pairs)",
                         what, c->head_size);
    c->kv_dim = c->head_size * c->n_kv_heads;
    if (!(c->rope_theta > 0) || !(c->norm_eps > 0))
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: rope_theta = %g and norm_eps = %g must be > 0",
                         what, c->rope_theta, c->norm_eps);
    return QSUR_OK;
}

qsur_llama_hooks qsur_llama_hooks_none(void)
{
    qsur_llama_hooks h;
    memset(&h, 0, sizeof h);
    h.act = qsur_quant_default();
    h.act.bits = 16;
    h.kv = h.act;
    h.act_wo.bits = 0; /* follow act */
    return h;
}

const qsur_quant_spec *qsur_llama_act_wo(const qsur_llama_hooks *h)
{
    return h->act_wo.bits > 0 ? &h->act_wo : &h->act;
}

/* ---- allocation -------------------------------------------------------- */

static float *zalloc(int64_t n)
{
    float *p = qsur_alloc((size_t)n, sizeof(float));
    if (p)
        memset(p, 0, (size_t)n * sizeof(float));
    return p;
}

/* alloc = 0: no storage yet (a loader points st at the file). */
static int linear_init(qsur_llama_linear *l, const char *name, int64_t rows, int64_t cols,
                       int alloc)
{
    memset(l, 0, sizeof *l);
    snprintf(l->name, sizeof l->name, "%s", name);
    l->rows = rows;
    l->cols = cols;
    l->st.dtype = QSUR_DTYPE_F32;
    if (!alloc)
        return 0;
    l->w = zalloc(rows * cols);
    return l->w ? 0 : -1;
}

static void linear_release(qsur_llama_linear *l)
{
    free(l->w);
    l->w = NULL;
    free(l->st.owned);
    l->st.owned = NULL;
    l->st.data = NULL;
    qsur_llama_linear_drop_quant(l);
}

void qsur_llama_free(qsur_llama *m)
{
    if (!m)
        return;
    if (m->layers)
        for (int i = 0; i < m->cfg.n_layers; i++) {
            qsur_llama_layer *L = &m->layers[i];
            free(L->attention_norm);
            free(L->ffn_norm);
            linear_release(&L->wq);
            linear_release(&L->wk);
            linear_release(&L->wv);
            linear_release(&L->wo);
            linear_release(&L->w1);
            linear_release(&L->w2);
            linear_release(&L->w3);
        }
    free(m->layers);
    if (m->cfg.shared_classifier) { /* borrowed from embed */
        m->output.w = NULL;
        m->output.st.owned = NULL;
    }
    linear_release(&m->output);
    linear_release(&m->embed);
    free(m->norm);
    qsur_llama_mapping_free(m->mapping);
    free(m);
}

static int model_alloc(qsur_llama **out, const qsur_llama_config *cfg_in, int alloc,
                       qsur_error *err)
{
    *out = NULL;
    qsur_llama_config cfg = *cfg_in;
    int rc = qsur_llama_config_check(&cfg, "model config", err);
    if (rc)
        return rc;
    qsur_llama *m = calloc(1, sizeof *m);
    if (!m)
        return qsur_fail(err, QSUR_ERR_NOMEM, "model: out of memory");
    m->cfg = cfg;
    m->hooks = qsur_llama_hooks_none();
    int64_t d = cfg.dim, h = cfg.hidden_dim, kv = cfg.kv_dim, V = cfg.vocab_size;
    int bad = 0;
    m->layers = calloc((size_t)cfg.n_layers, sizeof *m->layers);
    bad |= linear_init(&m->embed, "tok_embeddings", V, d, alloc);
    m->tok_embeddings = m->embed.w;
    m->norm = zalloc(d);
    bad |= !m->layers || !m->norm;
    for (int i = 0; !bad && i < cfg.n_layers; i++) {
        qsur_llama_layer *L = &m->layers[i];
        char nm[QSUR_NAME_MAX];
        L->attention_norm = zalloc(d);
        L->ffn_norm = zalloc(d);
        bad |= !L->attention_norm || !L->ffn_norm;
#define LIN(field, part, r, c)                                        \
        snprintf(nm, sizeof nm, "layers.%d.%s", i, part);              \
        bad |= linear_init(&L->field, nm, r, c, alloc);
        LIN(wq, "attention.wq", d, d)
        LIN(wk, "attention.wk", kv, d)
        LIN(wv, "attention.wv", kv, d)
        LIN(wo, "attention.wo", d, d)
        LIN(w1, "feed_forward.w1", h, d)
        LIN(w2, "feed_forward.w2", d, h)
        LIN(w3, "feed_forward.w3", h, d)
#undef LIN
    }
    if (!bad) {
        if (cfg.shared_classifier) {
            linear_init(&m->output, "output", V, d, 0);
            qsur_llama_embed_sync(m); /* a loader syncs again once embed is filled */
        } else {
            bad |= linear_init(&m->output, "output", V, d, alloc);
        }
    }
    if (bad) {
        qsur_llama_free(m);
        return qsur_fail(err, QSUR_ERR_NOMEM, "model: cannot allocate weights (dim %d, hidden %d, "
                         "%d layers, vocab %d)", cfg.dim, cfg.hidden_dim, cfg.n_layers,
                         cfg.vocab_size);
    }
    *out = m;
    return QSUR_OK;
}

int qsur_llama_new(qsur_llama **out, const qsur_llama_config *cfg, qsur_error *err)
{
    return model_alloc(out, cfg, 1, err);
}

int qsur_llama_new_stored(qsur_llama **out, const qsur_llama_config *cfg, qsur_error *err)
{
    return model_alloc(out, cfg, 0, err);
}

int qsur_llama_untie_classifier(qsur_llama *m, qsur_error *err)
{
    if (!m->cfg.shared_classifier)
        return QSUR_OK;
    int64_t n = m->output.rows * m->output.cols;
    qsur_llama_linear *e = &m->embed;
    size_t bytes = e->w ? (size_t)n * sizeof(float)
                        : (size_t)n * (size_t)qsur_dtype_size((qsur_dtype)e->st.dtype);
    /* stored embeddings mapped from the file stay shared (read-only) */
    void *w = !e->w && !e->st.owned ? NULL : qsur_alloc(bytes, 1);
    if (!w && (e->w || e->st.owned))
        return qsur_fail(err, QSUR_ERR_NOMEM, "output: cannot allocate %zu bytes", bytes);
    if (e->w) {
        memcpy(w, e->w, bytes);
        m->output.w = w;
    } else {
        m->output.st = e->st;
        if (w) {
            memcpy(w, e->st.data, bytes);
            m->output.st.data = m->output.st.owned = w;
            m->output.st.in_file = 0;
        }
    }
    m->cfg.shared_classifier = 0;
    return QSUR_OK;
}

/* ---- workspace conversion ------------------------------------------------ */

typedef struct {
    char name[QSUR_NAME_MAX];
    float *data;         /* NULL for a linear in its stored form */
    int64_t rows, cols;  /* rows == 0: a 1-D vector of cols */
    qsur_llama_linear *lin; /* the linear this slot is, else NULL */
} tensor_slot;

/* Every tensor of the model in Meta naming; returns the count. */
static int model_slots(qsur_llama *m, tensor_slot *s)
{
    int n = 0;
    int64_t d = m->cfg.dim;
#define SLOT(nm, ptr, r, c) \
    do { snprintf(s[n].name, sizeof s[n].name, "%s", nm); s[n].data = ptr; \
         s[n].rows = r; s[n].cols = c; s[n].lin = NULL; n++; } while (0)
#define LSLOT(l) do { SLOT((l)->name, (l)->w, (l)->rows, (l)->cols); s[n - 1].lin = (l); } while (0)
    LSLOT(&m->embed);
    for (int i = 0; i < m->cfg.n_layers; i++) {
        qsur_llama_layer *L = &m->layers[i];
        char nm[QSUR_NAME_MAX];
        snprintf(nm, sizeof nm, "layers.%d.attention_norm", i);
        SLOT(nm, L->attention_norm, 0, d);
        qsur_llama_linear *lin[4] = {&L->wq, &L->wk, &L->wv, &L->wo};
        for (int j = 0; j < 4; j++)
            LSLOT(lin[j]);
        snprintf(nm, sizeof nm, "layers.%d.ffn_norm", i);
        SLOT(nm, L->ffn_norm, 0, d);
        qsur_llama_linear *ff[3] = {&L->w1, &L->w2, &L->w3};
        for (int j = 0; j < 3; j++)
            LSLOT(ff[j]);
    }
    SLOT("norm", m->norm, 0, d);
    if (!m->cfg.shared_classifier)
        LSLOT(&m->output);
#undef SLOT
#undef LSLOT
    return n;
}

static tensor_slot *slots_new(qsur_llama *m, int *n, qsur_error *err)
{
    tensor_slot *s = calloc((size_t)m->cfg.n_layers * 9 + 3, sizeof *s);
    if (!s) {
        qsur_fail(err, QSUR_ERR_NOMEM, "model: out of memory");
        return NULL;
    }
    *n = model_slots(m, s);
    return s;
}

int qsur_llama_from_workspace(qsur_llama **out, const qsur_workspace *ws,
                              const char *prefix, const qsur_llama_config *cfg,
                              qsur_error *err)
{
    *out = NULL;
    qsur_llama *m;
    int rc = qsur_llama_new(&m, cfg, err);
    if (rc)
        return rc;
    int n;
    tensor_slot *s = slots_new(m, &n, err);
    if (!s) {
        qsur_llama_free(m);
        return QSUR_ERR_NOMEM;
    }
    if (!prefix)
        prefix = "";
    for (int i = 0; i < n && !rc; i++) {
        char full[QSUR_NAME_MAX * 2], want[64];
        snprintf(full, sizeof full, "%s%s", prefix, s[i].name);
        if (s[i].rows)
            snprintf(want, sizeof want, "%lldx%lld", (long long)s[i].rows, (long long)s[i].cols);
        else
            snprintf(want, sizeof want, "%lld", (long long)s[i].cols);
        const qsur_tensor *t = qsur_workspace_find(ws, full);
        if (!t) {
            rc = qsur_fail(err, QSUR_ERR_ARG, "tensor %s missing (expected shape %s)", full, want);
            break;
        }
        int ok = s[i].rows ? (t->ndim == 2 && t->shape[0] == s[i].rows && t->shape[1] == s[i].cols)
                           : (t->ndim == 1 && t->shape[0] == s[i].cols);
        if (!ok) {
            char got[64];
            qsur_tensor_shape_str(t, got, sizeof got);
            rc = qsur_fail(err, QSUR_ERR_ARG, "tensor %s has shape %s (expected %s)", full, got, want);
            break;
        }
        memcpy(s[i].data, t->data, (size_t)qsur_tensor_numel(t) * sizeof(float));
    }
    free(s);
    if (rc) {
        qsur_llama_free(m);
        return rc;
    }
    *out = m;
    return QSUR_OK;
}

int qsur_llama_sync_from_workspace(qsur_llama *m, const qsur_workspace *ws, const char *prefix,
                                   int *n_updated, qsur_error *err)
{
    int n, rc = QSUR_OK, count = 0;
    tensor_slot *s = slots_new(m, &n, err);
    if (!s)
        return QSUR_ERR_NOMEM;
    const qsur_tensor **src = calloc((size_t)n, sizeof *src);
    if (!src) {
        free(s);
        return qsur_fail(err, QSUR_ERR_NOMEM, "model: out of memory");
    }
    if (!prefix)
        prefix = "";
    for (int i = 0; i < n && !rc; i++) {
        char full[QSUR_NAME_MAX * 2];
        snprintf(full, sizeof full, "%s%s", prefix, s[i].name);
        const qsur_tensor *t = qsur_workspace_find(ws, full);
        if (!t)
            continue;
        int ok = s[i].rows ? (t->ndim == 2 && t->shape[0] == s[i].rows && t->shape[1] == s[i].cols)
                           : (t->ndim == 1 && t->shape[0] == s[i].cols);
        if (!ok) {
            char got[64], want[64];
            qsur_tensor_shape_str(t, got, sizeof got);
            if (s[i].rows)
                snprintf(want, sizeof want, "%lldx%lld", (long long)s[i].rows, (long long)s[i].cols);
            else
                snprintf(want, sizeof want, "%lld", (long long)s[i].cols);
            rc = qsur_fail(err, QSUR_ERR_ARG, "tensor %s has shape %s (expected %s)", full, got, want);
        }
        src[i] = t;
    }
    for (int i = 0; i < n && !rc; i++) {
        if (!src[i])
            continue;
        if (s[i].lin && (rc = qsur_llama_linear_own(s[i].lin, err)))
            break; /* the linears before it are updated: reported as an error */
        float *dst = s[i].lin ? s[i].lin->w : s[i].data;
        memcpy(dst, src[i]->data, (size_t)qsur_tensor_numel(src[i]) * sizeof(float));
        count++;
        if (s[i].lin)
            qsur_llama_linear_drop_quant(s[i].lin);
    }
    qsur_llama_embed_sync(m); /* the embeddings may have become float */
    free(src);
    free(s);
    if (!rc && n_updated)
        *n_updated = count;
    return rc;
}

/* Fills of the workspace's views of the model. */
static void fill_linear(const void *src, float *dst, int64_t n)
{
    const qsur_llama_linear *l = src;
    (void)n;
    qsur_llama_linear_read_rows(l, 0, l->rows, dst);
}

static void copy_floats(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static int put_model(const qsur_llama *m_in, qsur_workspace *ws, const char *prefix, int views,
                     qsur_error *err);

int qsur_llama_to_workspace(const qsur_llama *m, qsur_workspace *ws, const char *prefix,
                            qsur_error *err)
{
    return put_model(m, ws, prefix, 0, err);
}

int qsur_llama_view_workspace(const qsur_llama *m, qsur_workspace *ws, const char *prefix,
                              qsur_error *err)
{
    return put_model(m, ws, prefix, 1, err);
}

static int put_model(const qsur_llama *m_in, qsur_workspace *ws, const char *prefix, int views,
                     qsur_error *err)
{
    qsur_llama *m = (qsur_llama *)m_in; /* slots only read through it */
    int n, rc = QSUR_OK;
    tensor_slot *s = slots_new(m, &n, err);
    if (!s)
        return QSUR_ERR_NOMEM;
    qsur_tensor **made = calloc((size_t)n, sizeof *made);
    if (!made) {
        free(s);
        return qsur_fail(err, QSUR_ERR_NOMEM, "model: out of memory");
    }
    if (!prefix)
        prefix = "";
    for (int i = 0; i < n && !rc; i++) {
        char full[QSUR_NAME_MAX * 2];
        snprintf(full, sizeof full, "%s%s", prefix, s[i].name);
        if (strlen(full) >= QSUR_NAME_MAX) {
            rc = qsur_fail(err, QSUR_ERR_ARG, "tensor name %s too long", full);
            break;
        }
        int64_t shape[2] = {s[i].rows, s[i].cols};
        if (s[i].lin)
            rc = qsur_tensor_view_new(&made[i], full, 2, shape, fill_linear, s[i].lin, err);
        else
            rc = s[i].rows ? qsur_tensor_view_new(&made[i], full, 2, shape, copy_floats, s[i].data, err)
                           : qsur_tensor_view_new(&made[i], full, 1, shape + 1, copy_floats, s[i].data, err);
        if (!rc && !views) { /* a copy: made now, no link to the model */
            if (qsur_tensor_materialize(made[i]) != 0)
                rc = qsur_fail(err, QSUR_ERR_NOMEM, "tensor %s: out of memory", full);
            made[i]->fill = NULL;
            made[i]->src = NULL;
        }
    }
    /* Reserve capacity first so that no put can fail half-way. */
    if (!rc && ws->count + n > ws->cap) {
        int cap = ws->count + n;
        qsur_tensor **items = realloc(ws->items, (size_t)cap * sizeof *items);
        if (!items)
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "workspace: out of memory");
        else {
            ws->items = items;
            ws->cap = cap;
        }
    }
    for (int i = 0; i < n; i++) {
        if (!rc) {
            qsur_workspace_put(ws, made[i], err); /* cannot fail: capacity reserved */
        } else {
            qsur_tensor_free(made[i]);
        }
    }
    free(made);
    free(s);
    return rc;
}

/* ---- linears ------------------------------------------------------------- */

int qsur_llama_linear_count(const qsur_llama *m)
{
    return 7 * m->cfg.n_layers;
}

qsur_llama_linear *qsur_llama_linear_at(qsur_llama *m, int i)
{
    if (i < 0 || i >= qsur_llama_linear_count(m))
        return NULL;
    qsur_llama_layer *L = &m->layers[i / 7];
    qsur_llama_linear *all[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
    return all[i % 7];
}

qsur_llama_linear *qsur_llama_linear_find(qsur_llama *m, const char *name)
{
    if (strcmp(name, "output") == 0)
        return &m->output;
    for (int i = 0; i < qsur_llama_linear_count(m); i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        if (strcmp(l->name, name) == 0)
            return l;
    }
    return NULL;
}

/* A float copy wq = Q(w) of one linear (replacing its quantized form). */
static int quant_float_copy(qsur_llama_linear *l, const qsur_quant_spec *spec, qsur_error *err)
{
    const float *w;
    float *tmp = NULL, *q = NULL;
    int rc = qsur_llama_linear_weights_alloc(l, &w, &tmp, err);
    if (!rc && !(q = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float))))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate quantized copy", l->name);
    if (!rc)
        rc = qsur_fake_quant(spec, w, l->rows, l->cols, q, NULL, err);
    free(tmp);
    if (rc) {
        free(q);
        return rc;
    }
    qsur_llama_linear_drop_quant(l);
    l->wq = q;
    return QSUR_OK;
}

static qsur_quant_spec same_spec(const qsur_quant_spec *spec, int64_t cols)
{
    (void)cols;
    return *spec;
}

/* RTN of every per-layer linear, packed or as float copies; all-or-nothing. */
static int quantize_all(qsur_llama *m, const qsur_quant_spec *spec,
                        qsur_quant_spec (*spec_for)(const qsur_quant_spec *spec, int64_t cols),
                        int packed, const qsur_progress *prog, qsur_error *err)
{
    int n = qsur_llama_linear_count(m), rc = QSUR_OK;
    for (int i = 0; i < n && !rc; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_quant_spec q = spec_for(spec, l->cols);
        rc = qsur_quant_validate(&q, l->cols, err);
    }
    /* the old forms wait in the stash until every linear is done */
    qsur_llama_quant_stash old;
    if (rc || (rc = qsur_llama_quant_stash_take(m, &old, err)))
        return rc;
    for (int i = 0; i < n && !rc; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_quant_spec q = spec_for(spec, l->cols);
        rc = packed ? qsur_llama_linear_quant_rtn(l, &q, err) : quant_float_copy(l, &q, err);
        if (!rc)
            rc = qsur_progress_tick(prog, (double)(i + 1) / n, "quantize weights", NAN, err);
    }
    /* keep the new forms (the classifier's stays as it was), or the old */
    if (rc)
        qsur_llama_quant_stash_put(m, &old);
    else
        qsur_llama_quant_stash_drop(m, &old);
    return rc;
}

int qsur_llama_quantize_weights(qsur_llama *m, const qsur_quant_spec *spec,
                                const qsur_progress *prog, qsur_error *err)
{
    /* float copies: the training paths (OSTQuant's STE) read wq directly */
    return quantize_all(m, spec, same_spec, 0, prog, err);
}

int qsur_llama_quantize_each(qsur_llama *m, const qsur_quant_spec *spec,
                             qsur_quant_spec (*spec_for)(const qsur_quant_spec *spec, int64_t cols),
                             const qsur_progress *prog, qsur_error *err)
{
    return quantize_all(m, spec, spec_for, 1, prog, err);
}

void qsur_llama_dequantize_weights(qsur_llama *m)
{
    for (int i = 0; i < qsur_llama_linear_count(m); i++)
        qsur_llama_linear_drop_quant(qsur_llama_linear_at(m, i));
    qsur_llama_linear_drop_quant(&m->output); /* owned even when output.w is borrowed */
}

/* ---- loading ------------------------------------------------------------- */

int qsur_llama_load(qsur_llama **out, const char *path, const qsur_progress *prog,
                    qsur_error *err)
{
    struct stat st;
    *out = NULL;
    if (stat(path, &st) != 0)
        return qsur_fail(err, QSUR_ERR_IO, "%s: no such file or directory", path);
    if (S_ISDIR(st.st_mode))
        return qsur_llama_load_hf(out, path, prog, err);
    return qsur_llama_load_llama2c(out, path, prog, err);
}
