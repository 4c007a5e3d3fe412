/* OSTQuant state file: parameters, optimiser moments, log (layout: the
 * comment of qsur_ostquant_save in qsur/ostquant.h). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama_runtime.h"
#include "qsur/llama_store.h"
#include "qsur/ostquant.h"
#include "qsur/safetensors.h"

#define NARR 11
#define NMETA 56
#define QLOG_COLS 8 /* step layer site tokens x_log10 x_per_dim w_log10 w_per_dim */

static int64_t r_ov_n(const qsur_ostquant *o)
{
    return (int64_t)o->cfg.n_layers * o->cfg.n_kv_heads * o->cfg.head_size * o->cfg.head_size;
}

/* FNV-1a over the float bytes of the base weights the state was folded from. */
static uint64_t fnv(uint64_t h, const float *x, int64_t n)
{
    const unsigned char *p = (const unsigned char *)x;
    for (int64_t i = 0; i < n * 4; i++)
        h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}

/* The same over a linear's float32 weights, read through the store a row at
 * a time (the bytes the float form holds, whatever the stored dtype). */
static uint64_t fnv_linear(uint64_t h, const qsur_llama_linear *l, float *row)
{
    for (int64_t r = 0; r < l->rows; r++) {
        qsur_llama_linear_read_rows(l, r, r + 1, row);
        h = fnv(h, row, l->cols);
    }
    return h;
}

uint64_t qsur_ostquant_base_hash(const qsur_llama *m)
{
    const qsur_llama_config *c = &m->cfg;
    uint64_t h = 1469598103934665603ULL;
    int64_t wide = c->hidden_dim > c->dim ? c->hidden_dim : c->dim;
    float *row = malloc((size_t)wide * sizeof(float));
    if (!row)
        return 0; /* no state matches: load fails with a message, new runs save 0 */
    h = fnv_linear(h, &m->embed, row);
    h = fnv_linear(h, &m->output, row);
    h = fnv(h, m->norm, c->dim);
    for (int l = 0; l < c->n_layers; l++) {
        const qsur_llama_layer *L = &m->layers[l];
        h = fnv(h, L->attention_norm, c->dim);
        h = fnv(h, L->ffn_norm, c->dim);
        const qsur_llama_linear *lin[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        for (int i = 0; i < 7; i++)
            h = fnv_linear(h, lin[i], row);
    }
    free(row);
    return h;
}

/* The double arrays of the state: name, pointer, count. */
typedef struct {
    const char *name;
    double *p;
    int64_t n;
} darr;

static int arrays(qsur_ostquant *o, darr *a, double *ov_v)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d2 = (int64_t)c->dim * c->dim, nov = (int64_t)c->n_layers * c->n_kv_heads;
    int i = 0;
    /* the optimiser's point: cur when train() left one, else the working set */
    a[i++] = (darr){"r_res", o->has_cur ? o->cur_r_res : o->r_res, d2};
    a[i++] = (darr){"r_ov", o->has_cur ? o->cur_r_ov : o->r_ov, r_ov_n(o)};
    a[i++] = (darr){"ls", o->has_cur ? o->cur_ls : o->ls, o->n_ls};
    a[i++] = (darr){"best_r_res", o->best_r_res, d2};
    a[i++] = (darr){"best_r_ov", o->best_r_ov, r_ov_n(o)};
    a[i++] = (darr){"best_ls", o->best_ls, o->n_ls};
    a[i++] = (darr){"adam_res.m", o->opt_res->m, d2};
    a[i++] = (darr){"adam_ov.m", NULL, r_ov_n(o)}; /* gathered from the heads */
    a[i++] = (darr){"adam_ov.v", ov_v, nov};
    a[i++] = (darr){"adam_ls.m", o->opt_ls->m, o->n_ls};
    a[i++] = (darr){"adam_ls.v", o->opt_ls->v, o->n_ls};
    return i;
}

typedef struct {
    char key[NMETA][32];
    char val[NMETA][200];
    const char *kv[2 * NMETA];
    int n;
} meta_buf;

static void meta(meta_buf *m, const char *k, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void meta(meta_buf *m, const char *k, const char *fmt, ...)
{
    if (m->n >= NMETA)
        return;
    snprintf(m->key[m->n], sizeof m->key[0], "%s", k);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->val[m->n], sizeof m->val[0], fmt, ap);
    va_end(ap);
    m->kv[2 * m->n] = m->key[m->n];
    m->kv[2 * m->n + 1] = m->val[m->n];
    m->n++;
}

/* Long on purpose: one line per saved key and array, in the order load reads them, so the two
   can be compared side by side; one cleanup path. */
int qsur_ostquant_save(const qsur_ostquant *oc, const char *path, qsur_error *err)
{
    qsur_ostquant *o = (qsur_ostquant *)oc; /* arrays are only read */
    const qsur_llama_config *c = &o->cfg;
    int64_t nov = (int64_t)c->n_layers * c->n_kv_heads, hs2 = (int64_t)c->head_size * c->head_size;
    double *ov_v = malloc((size_t)nov * sizeof(double)), *ov_m = malloc((size_t)r_ov_n(o) * sizeof(double));
    qsur_tensor *ts[3 * NARR + 2] = {NULL};
    int nt = 0, rc = QSUR_OK;
    if (!ov_v || !ov_m)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    for (int64_t i = 0; !rc && i < nov; i++) {
        ov_v[i] = o->opt_ov[i]->v;
        memcpy(ov_m + i * hs2, o->opt_ov[i]->m, (size_t)hs2 * sizeof(double));
    }
    darr a[NARR];
    int na = arrays(o, a, ov_v);
    a[7].p = ov_m;
    for (int k = 0; k < na && !rc; k++) {
        qsur_tensor *t[3] = {NULL, NULL, NULL};
        char name[64];
        for (int j = 0; j < 3 && !rc; j++) {
            snprintf(name, sizeof name, "%s%s", a[k].name, j == 0 ? "" : j == 1 ? ".lo" : ".lo2");
            rc = qsur_tensor_new(&t[j], name, 1, &a[k].n, err);
            ts[nt++] = t[j];
        }
        for (int64_t i = 0; i < a[k].n && !rc; i++) {
            double x = a[k].p[i];
            float hi = (float)x, lo = (float)(x - hi), lo2 = (float)(x - hi - lo);
            t[0]->data[i] = hi;
            t[1]->data[i] = lo;
            t[2]->data[i] = lo2;
        }
    }
    int64_t nlog = o->nlog > 0 ? o->nlog : 1;
    if (!rc && !(rc = qsur_tensor_new2(&ts[nt], "log", nlog, 4, err))) {
        qsur_tensor *t = ts[nt++];
        for (int i = 0; i < o->nlog; i++) {
            const qsur_ostquant_log *r = &o->log[i];
            float row[4] = {(float)r->step, (float)r->loss, (float)r->kltop, isnan(r->ppl) ? -1.0f : (float)r->ppl};
            memcpy(t->data + 4 * i, row, sizeof row);
        }
        if (!o->nlog)
            for (int j = 0; j < 4; j++)
                t->data[j] = -1.0f; /* an empty log: one row of -1 */
    }
    int64_t nq = 0;
    for (int i = 0; i < o->nqlog; i++)
        nq += o->qlog[i].nsites;
    if (!rc && nq > 0 && !(rc = qsur_tensor_new2(&ts[nt], "qsur_log", nq, QLOG_COLS, err))) {
        float *p = ts[nt++]->data;
        for (int i = 0; i < o->nqlog; i++)
            for (int j = 0; j < o->qlog[i].nsites; j++, p += QLOG_COLS) {
                const qsur_site_qsur *q = &o->qlog[i].sites[j];
                /* a singular site's log10 is -inf, which the file cannot hold:
                 * +1 (log10 QSUR <= 0 otherwise) */
                float row[QLOG_COLS] = {(float)o->qlog[i].step, (float)q->layer, (float)q->site,
                                        (float)o->qlog[i].n_tokens, q->x_singular ? 1.0f : (float)q->x_log10,
                                        (float)q->x_per_dim, q->w_singular ? 1.0f : (float)q->w_log10,
                                        (float)q->w_per_dim};
                memcpy(p, row, sizeof row);
            }
    }
    if (!rc) {
        meta_buf m;
        memset(&m, 0, sizeof m);
        const qsur_ostquant_opts *op = &o->opts;
        char sb[200];
        meta(&m, "qsur.kind", "ostquant-state");
        meta(&m, "version", "1");
        meta(&m, "step", "%d", o->step);
        meta(&m, "nlog", "%d", o->nlog);
        meta(&m, "best_step", "%d", o->best_step);
        meta(&m, "best_loss", "%.17g", o->best_ema);
        meta(&m, "ema", "%.17g", o->ema);
        meta(&m, "last_select", "%.17g", o->last_select);
        meta(&m, "adam_res.v", "%.17g", o->opt_res->v);
        meta(&m, "adam_res.t", "%lld", (long long)o->opt_res->t);
        meta(&m, "adam_ov.t", "%lld", (long long)o->opt_ov[0]->t);
        meta(&m, "adam_ls.t", "%lld", (long long)o->opt_ls->t);
        meta(&m, "steps", "%d", op->steps);
        meta(&m, "lr", "%.17g", op->lr);
        meta(&m, "lr_scale", "%.17g", op->lr_scale);
        meta(&m, "loss", "%s", qsur_ostquant_loss_name(op->loss));
        meta(&m, "topk", "%d", op->topk);
        meta(&m, "womi", "%d", op->womi);
        meta(&m, "learn_scales", "%d", op->learn_scales);
        meta(&m, "batch", "%d", op->batch);
        meta(&m, "seq_len", "%d", op->seq_len);
        meta(&m, "max_seqs", "%d", op->max_seqs);
        meta(&m, "eval_every", "%d", op->eval_every);
        meta(&m, "eval_seqs", "%d", op->eval_seqs);
        meta(&m, "kv_hadamard", "%d", op->kv_hadamard);
        meta(&m, "seed", "%llu", (unsigned long long)op->seed);
        meta(&m, "no_wquant", "%d", op->no_wquant);
        meta(&m, "clip_grad", "%.17g", op->clip_grad);
        meta(&m, "lr_decay", "%d", op->lr_decay);
        meta(&m, "radam", "%d", op->radam);
        meta(&m, "keep_last", "%d", op->keep_last);
        meta(&m, "stabilize", "%d", op->stabilize);
        meta(&m, "reshuffle", "%d", op->reshuffle);
        meta(&m, "klt", "%d", op->klt);
        meta(&m, "learn_qk", "%d", op->learn_qk);
        meta(&m, "ste_const", "%d", op->ste_const);
        meta(&m, "code_smooth", "%d", op->code_smooth);
        meta(&m, "online_w2", "%d", op->online_w2);
        meta(&m, "wquant_code", "%d", op->wquant_code);
        meta(&m, "rand_signs", "%d", op->rand_signs);
        meta(&m, "sov_code", "%d", op->sov_code);
        meta(&m, "sov_train", "%d", op->sov_train);
        qsur_quant_spec_format(&o->aospec, sb, sizeof sb);
        meta(&m, "aospec", "%s", sb);
        meta(&m, "qsur_every", "%d", op->qsur_every);
        meta(&m, "qsur_tokens", "%d", op->qsur_tokens);
        meta(&m, "qsur_alpha", "%.17g", o->qsur_opt.alpha);
        meta(&m, "qsur_cube", "%s", qsur_cube_name(o->qsur_opt.cube));
        qsur_quant_spec_format(&o->wspec, sb, sizeof sb);
        meta(&m, "wspec", "%s", sb);
        qsur_quant_spec_format(&o->aspec, sb, sizeof sb);
        meta(&m, "aspec", "%s", sb);
        qsur_quant_spec_format(&o->kvspec, sb, sizeof sb);
        meta(&m, "kvspec", "%s", sb);
        meta(&m, "config", "dim=%d hidden_dim=%d n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d", c->dim,
             c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size);
        meta(&m, "base_hash", "%016llx", (unsigned long long)o->base_hash);
        rc = qsur_safetensors_write(path, (const qsur_tensor *const *)ts, nt, NULL, m.kv, m.n, NULL, err);
    }
    for (int i = 0; i < nt; i++)
        qsur_tensor_free(ts[i]);
    free(ov_v);
    free(ov_m);
    return rc;
}

/* Metadata helpers: each fails with a message naming the key. */
static int m_str(const qsur_safetensors *st, const char *k, const char **v, qsur_error *err)
{
    if (!(*v = qsur_safetensors_meta(st, k)))
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"%s\" missing (not an ostquant state file?)",
                         st->path, k);
    return QSUR_OK;
}

static int m_num(const qsur_safetensors *st, const char *k, double *x, qsur_error *err)
{
    const char *v;
    int rc = m_str(st, k, &v, err);
    if (rc)
        return rc;
    char *end;
    *x = strtod(v, &end);
    if (end == v || *end)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"%s\" = \"%s\" is not a number", st->path, k, v);
    return QSUR_OK;
}

/* A number that must be finite and in [lo, hi]. */
static int m_real(const qsur_safetensors *st, const char *k, double lo, double hi, double *x, qsur_error *err)
{
    int rc = m_num(st, k, x, err);
    if (!rc && !(*x >= lo && *x <= hi))
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"%s\" = %g is not in [%g, %g]", st->path, k, *x,
                         lo, hi);
    return rc;
}

/* A decimal integer literal (what save writes: digits after an optional '-';
 * no exponent, fraction or hex), parsed as an integer so that no value
 * reaches a float-to-int cast. Returns 0 with its sign and magnitude, or -1. */
static int m_integer(const qsur_safetensors *st, const char *k, const char **v, int *neg,
                     unsigned long long *mag, qsur_error *err)
{
    if (m_str(st, k, v, err))
        return -1;
    *neg = (*v)[0] == '-';
    const char *d = *v + *neg;
    char *end;
    errno = 0;
    *mag = strtoull(d, &end, 10);
    return d[0] >= '0' && d[0] <= '9' && !*end && errno != ERANGE ? 0 : -1;
}

static int m_i64(const qsur_safetensors *st, const char *k, int64_t lo, int64_t hi, int64_t *x, qsur_error *err)
{
    const char *v = NULL;
    int neg = 0;
    unsigned long long mag = 0;
    int bad = m_integer(st, k, &v, &neg, &mag, err) || mag > (unsigned long long)INT64_MAX;
    int64_t n = bad ? 0 : neg ? -(int64_t)mag : (int64_t)mag;
    if (bad || n < lo || n > hi)
        return v ? qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"%s\" = \"%s\" is not an integer in [%lld, %lld]",
                             st->path, k, v, (long long)lo, (long long)hi) : QSUR_ERR_FORMAT;
    *x = n;
    return QSUR_OK;
}

static int m_int(const qsur_safetensors *st, const char *k, int lo, int hi, int *x, qsur_error *err)
{
    int64_t n = 0;
    int rc = m_i64(st, k, lo, hi, &n, err);
    if (!rc)
        *x = (int)n;
    return rc;
}

/* The seed is a full uint64 (strtoull alone would take "-1"). */
static int m_u64(const qsur_safetensors *st, const char *k, uint64_t *x, qsur_error *err)
{
    const char *v = NULL;
    int neg = 0;
    unsigned long long mag = 0;
    if (m_integer(st, k, &v, &neg, &mag, err) || (neg && mag))
        return v ? qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"%s\" = \"%s\" is not an integer in [0, 2^64)",
                             st->path, k, v) : QSUR_ERR_FORMAT;
    *x = mag;
    return QSUR_OK;
}

/* A float from a log tensor that is stored as a whole number in [0, hi]. */
static int whole(float f, double hi)
{
    return f >= 0 && f <= hi && f == floorf(f);
}

static int read_arr(const qsur_safetensors *st, const char *name, double *dst, int64_t n, qsur_error *err)
{
    char nm[64];
    for (int j = 0; j < 3; j++) {
        snprintf(nm, sizeof nm, "%s%s", name, j == 0 ? "" : j == 1 ? ".lo" : ".lo2");
        int e = qsur_safetensors_find(st, nm);
        if (e < 0)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s missing", st->path, nm);
        if (st->entries[e].ndim != 1 || st->entries[e].shape[0] != n)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s must have %lld values", st->path, nm,
                             (long long)n);
        qsur_tensor *t = NULL;
        int rc = qsur_safetensors_read_tensor(st, e, NULL, &t, NULL, err);
        if (rc)
            return rc;
        for (int64_t i = 0; i < n; i++)
            dst[i] = j ? dst[i] + (double)t->data[i] : (double)t->data[i];
        qsur_tensor_free(t);
    }
    return QSUR_OK;
}

/* The optional "qsur_log" tensor back into o->qlog: groups of n_layers * 4
 * rows with one step, layer-major, as save writes them. */
static int read_qsur_log(const qsur_safetensors *st, qsur_ostquant *o, qsur_error *err)
{
    int e = qsur_safetensors_find(st, "qsur_log");
    if (e < 0)
        return QSUR_OK;
    const qsur_llama_config *c = &o->cfg;
    int nsites = c->n_layers * QSUR_SITE_COUNT;
    if (st->entries[e].ndim != 2 || st->entries[e].shape[1] != QLOG_COLS || st->entries[e].shape[0] % nsites)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor qsur_log must be [k * %d][%d]", st->path, nsites,
                         QLOG_COLS);
    int ntab = (int)(st->entries[e].shape[0] / nsites);
    qsur_tensor *t = NULL;
    int rc = qsur_safetensors_read_tensor(st, e, NULL, &t, NULL, err);
    if (rc)
        return rc;
    o->qlog = calloc((size_t)(ntab > 0 ? ntab : 1), sizeof *o->qlog);
    if (!o->qlog)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", st->path);
    else
        o->capqlog = ntab > 0 ? ntab : 1;
    int64_t wrows[QSUR_SITE_COUNT] = {c->dim + 2 * c->kv_dim, c->dim, 2 * c->hidden_dim, c->dim};
    for (int i = 0; i < ntab && !rc; i++) {
        qsur_llama_qsur *q = &o->qlog[i];
        const float *r = t->data + (size_t)i * nsites * QLOG_COLS;
        q->sites = calloc((size_t)nsites, sizeof *q->sites);
        if (!q->sites) {
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", st->path);
            break;
        }
        o->nqlog = i + 1;
        if (!whole(r[0], INT_MAX) || !whole(r[3], 9007199254740992.0)) {
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: qsur_log row %d: step %g / tokens %g is not a whole number "
                           "in range", st->path, i * nsites, (double)r[0], (double)r[3]);
            break;
        }
        q->step = (int)r[0];
        q->n_layers = c->n_layers;
        q->nsites = nsites;
        q->n_tokens = (int64_t)r[3];
        q->cube = o->qsur_opt.cube;
        q->alpha = o->qsur_opt.alpha;
        for (int j = 0; j < nsites; j++, r += QLOG_COLS) {
            qsur_site_qsur *sq = &q->sites[j];
            sq->layer = j / QSUR_SITE_COUNT;
            sq->site = j % QSUR_SITE_COUNT;
            if (r[0] != (float)q->step || r[1] != (float)sq->layer || r[2] != (float)sq->site) {
                rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: qsur_log row %d is not step %d layer %d site %d", st->path,
                               i * nsites + j, q->step, sq->layer, sq->site);
                break;
            }
            sq->d = sq->site == QSUR_SITE_DOWN ? c->hidden_dim : c->dim;
            sq->w_rows = wrows[sq->site];
            sq->x_singular = r[4] > 0;
            sq->x_log10 = sq->x_singular ? -INFINITY : r[4];
            sq->x_per_dim = r[5];
            sq->w_singular = r[6] > 0;
            sq->w_log10 = sq->w_singular ? -INFINITY : r[6];
            sq->w_per_dim = r[7];
        }
        qsur_llama_qsur_summarize(q);
    }
    qsur_tensor_free(t);
    return rc;
}

/* Long on purpose: one check per stored key and array, in file order, each with its own
   message naming the file; they share the open file and one cleanup path. */
int qsur_ostquant_load(qsur_ostquant **out, const qsur_llama *base, const char *path, qsur_error *err)
{
    *out = NULL;
    qsur_safetensors *st = NULL;
    int rc = qsur_safetensors_open(&st, path, err);
    if (rc)
        return rc;
    const char *v;
    qsur_ostquant_opts op = qsur_ostquant_default();
    qsur_quant_spec ws, as, ks;
    int step = 0, nlog = 0, best_step = 0;
    rc = m_str(st, "qsur.kind", &v, err);
    if (!rc && strcmp(v, "ostquant-state"))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: qsur.kind is \"%s\" (expected ostquant-state)", path, v);
    if (!rc && !(rc = m_str(st, "config", &v, err))) {
        const qsur_llama_config *c = &base->cfg;
        char want[200];
        snprintf(want, sizeof want, "dim=%d hidden_dim=%d n_layers=%d n_heads=%d n_kv_heads=%d vocab_size=%d",
                 c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size);
        if (strcmp(v, want))
            rc = qsur_fail(err, QSUR_ERR_ARG, "%s: the state is for a model with %s, the loaded model has %s",
                           path, v, want);
    }
    if (!rc && !(rc = m_str(st, "base_hash", &v, err))) {
        char want[32];
        snprintf(want, sizeof want, "%016llx", (unsigned long long)qsur_ostquant_base_hash(base));
        if (strcmp(v, want))
            rc = qsur_fail(err, QSUR_ERR_ARG, "%s: the state was trained from different weights than the loaded "
                           "model (weight hash %s, loaded %s): load the model it started from", path, v, want);
    }
    if (!rc && !(rc = m_str(st, "version", &v, err)) && strcmp(v, "1"))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: state file version \"%s\" (this qsur reads version 1)", path, v);
    if (!rc)
        rc = m_real(st, "lr", 0, 1e6, &op.lr, err);
    if (!rc)
        rc = m_real(st, "lr_scale", 0, 1e6, &op.lr_scale, err);
    if (!rc && !(rc = m_str(st, "loss", &v, err))) {
        int l = QSUR_OSTQ_KLTOP;
        while (l <= QSUR_OSTQ_MSE && strcmp(v, qsur_ostquant_loss_name((qsur_ostquant_loss)l)))
            l++;
        if (l > QSUR_OSTQ_MSE)
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"loss\" = \"%s\" (expected kltop, ce or mse)",
                           path, v);
        else
            op.loss = (qsur_ostquant_loss)l;
    }
    /* the ranges of the command's options (and what save can write) */
    static const struct { const char *key; int lo, hi; } ik[] = {
        {"steps", 0, 1000000}, {"topk", 1, 1 << 20}, {"womi", 0, 1}, {"learn_scales", 0, 1},
        {"batch", 1, 4096}, {"seq_len", 0, 1 << 20}, {"max_seqs", 0, 1 << 20}, {"eval_every", 0, 1000000},
        {"eval_seqs", 0, 1 << 20}, {"kv_hadamard", 0, 1}, {"step", 0, 1000000}, {"nlog", 0, 1000001},
        {"best_step", 0, 1000000}};
    int *ints[] = {&op.steps, &op.topk, &op.womi, &op.learn_scales, &op.batch, &op.seq_len, &op.max_seqs,
                   &op.eval_every, &op.eval_seqs, &op.kv_hadamard, &step, &nlog, &best_step};
    for (int i = 0; i < 13 && !rc; i++)
        rc = m_int(st, ik[i].key, ik[i].lo, ik[i].hi, ints[i], err);
    if (!rc)
        rc = m_u64(st, "seed", &op.seed, err);
    /* live-QSUR settings: absent in state files written before them */
    if (!rc && qsur_safetensors_meta(st, "qsur_every"))
        rc = m_int(st, "qsur_every", 0, 1000000, &op.qsur_every, err);
    if (!rc && qsur_safetensors_meta(st, "qsur_tokens"))
        rc = m_int(st, "qsur_tokens", 1, 1 << 24, &op.qsur_tokens, err);
    /* the protocol options: absent in state files written before them (0 = off) */
    int *pint[] = {&op.no_wquant, &op.lr_decay, &op.radam, &op.keep_last, &op.reshuffle, &op.klt, &op.learn_qk,
                   &op.ste_const, &op.code_smooth, &op.online_w2, &op.wquant_code, &op.rand_signs,
                   &op.sov_code, &op.sov_train};
    const char *pk[] = {"no_wquant", "lr_decay", "radam", "keep_last", "reshuffle", "klt", "learn_qk", "ste_const",
                        "code_smooth", "online_w2", "wquant_code", "rand_signs", "sov_code", "sov_train"};
    for (int i = 0; i < (int)(sizeof pk / sizeof *pk) && !rc; i++)
        if (qsur_safetensors_meta(st, pk[i]))
            rc = m_int(st, pk[i], 0, 1, pint[i], err);
    if (!rc && qsur_safetensors_meta(st, "clip_grad"))
        rc = m_num(st, "clip_grad", &op.clip_grad, err);
    if (!rc && qsur_safetensors_meta(st, "stabilize"))
        rc = m_int(st, "stabilize", 0, 1000000, &op.stabilize, err);
    qsur_quant_spec aos;
    memset(&aos, 0, sizeof aos);
    if (!rc && (v = qsur_safetensors_meta(st, "aospec")) && qsur_quant_spec_parse(v, &aos)) {
        if (strncmp(v, "bits=0 ", 7))
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata aospec = \"%s\" is malformed", path, v);
        memset(&aos, 0, sizeof aos); /* bits 0: follows aspec */
    }
    const char *sk[3] = {"wspec", "aspec", "kvspec"};
    qsur_quant_spec *sp[3] = {&ws, &as, &ks};
    for (int i = 0; i < 3 && !rc; i++)
        if (!(rc = m_str(st, sk[i], &v, err)) && qsur_quant_spec_parse(v, sp[i]))
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata %s = \"%s\" is malformed", path, sk[i], v);
    if (!rc && (nlog > step + 1 || best_step > step))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: step %d / nlog %d / best_step %d out of range (nlog <= step + 1, "
                       "best_step <= step)", path, step, nlog, best_step);
    qsur_ostquant *o = NULL;
    if (!rc)
        rc = qsur_ostquant_new(&o, base, &op, &ws, &as, &ks, err);
    if (!rc)
        o->aospec = aos;
    if (rc) {
        qsur_safetensors_close(st);
        return rc;
    }
    const qsur_llama_config *c = &o->cfg;
    int64_t nov = (int64_t)c->n_layers * c->n_kv_heads, hs2 = (int64_t)c->head_size * c->head_size;
    double *ov_v = malloc((size_t)nov * sizeof(double)), *ov_m = malloc((size_t)r_ov_n(o) * sizeof(double));
    if (!ov_v || !ov_m)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    darr a[NARR];
    int na = arrays(o, a, ov_v); /* has_cur = 0: the working set receives the point */
    a[7].p = ov_m;
    for (int k = 0; k < na && !rc; k++)
        rc = read_arr(st, a[k].name, a[k].p, a[k].n, err);
    for (int64_t i = 0; i < nov && !rc; i++) {
        o->opt_ov[i]->v = ov_v[i];
        memcpy(o->opt_ov[i]->m, ov_m + i * hs2, (size_t)hs2 * sizeof(double));
    }
    int64_t t_res = 0, t_ov = 0, t_ls = 0;
    if (!rc)
        rc = m_num(st, "best_loss", &o->best_ema, err);
    if (!rc && isnan(o->best_ema))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"best_loss\" is NaN", path);
    if (!rc)
        rc = m_num(st, "ema", &o->ema, err);
    if (!rc)
        rc = m_num(st, "last_select", &o->last_select, err);
    if (!rc)
        rc = m_num(st, "adam_res.v", &o->opt_res->v, err);
    if (!rc)
        rc = m_i64(st, "adam_res.t", 0, INT64_C(1) << 53, &t_res, err);
    if (!rc)
        rc = m_i64(st, "adam_ov.t", 0, INT64_C(1) << 53, &t_ov, err);
    if (!rc)
        rc = m_i64(st, "adam_ls.t", 0, INT64_C(1) << 53, &t_ls, err);
    if (!rc) {
        o->opt_res->t = t_res;
        for (int64_t i = 0; i < nov; i++)
            o->opt_ov[i]->t = t_ov;
        o->opt_ls->t = t_ls;
        o->step = step;
        o->best_step = best_step;
    }
    int e = rc ? -1 : qsur_safetensors_find(st, "log");
    if (!rc && (e < 0 || st->entries[e].ndim != 2 || st->entries[e].shape[1] != 4 ||
                st->entries[e].shape[0] < nlog))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor log must be [>= %d][4]", path, nlog);
    qsur_tensor *lt = NULL;
    if (!rc && !(rc = qsur_safetensors_read_tensor(st, e, NULL, &lt, NULL, err)) && nlog > 0) {
        o->log = malloc((size_t)nlog * sizeof *o->log);
        if (!o->log)
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
        for (int i = 0; i < nlog && !rc; i++) {
            const float *r = lt->data + 4 * i;
            if (!whole(r[0], 1000000))
                rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: log row %d: step %g is not a whole number in [0, 1000000]",
                               path, i, (double)r[0]);
            else
                o->log[i] = (qsur_ostquant_log){(int)r[0], r[1], r[2], r[3] < 0 ? NAN : r[3]};
        }
        if (!rc)
            o->nlog = o->caplog = nlog;
    }
    qsur_tensor_free(lt);
    if (!rc && qsur_safetensors_meta(st, "qsur_alpha")) {
        rc = m_num(st, "qsur_alpha", &o->qsur_opt.alpha, err);
        if (!rc && !(o->qsur_opt.alpha > 0 && o->qsur_opt.alpha < 1))
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"qsur_alpha\" = %g is not in (0, 1)", path,
                           o->qsur_opt.alpha);
    }
    if (!rc && (v = qsur_safetensors_meta(st, "qsur_cube"))) {
        if (strcmp(v, "asym") && strcmp(v, qsur_cube_name(QSUR_CUBE_SYM)))
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata \"qsur_cube\" = \"%s\" (expected %s or asym)", path,
                           v, qsur_cube_name(QSUR_CUBE_SYM));
        else
            o->qsur_opt.cube = !strcmp(v, "asym") ? QSUR_CUBE_ASYM : QSUR_CUBE_SYM;
    }
    if (!rc)
        rc = read_qsur_log(st, o, err);
    free(ov_v);
    free(ov_m);
    qsur_safetensors_close(st);
    if (rc) {
        qsur_ostquant_free(o);
        return rc;
    }
    *out = o;
    return QSUR_OK;
}
