/* QSUR of every transformed linear input of a Llama model (qsur/llama_qsur.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/clock.h"
#include "qsur/llama_qsur.h"
#include "qsur/workspace.h"

static const char *const site_names[QSUR_SITE_COUNT] = {"qkv", "o", "up", "down"};
static const char *const site_inputs[QSUR_SITE_COUNT] = {"attention.in", "attention.wo.in", "feed_forward.in",
                                                         "feed_forward.w2.in"};
static const char *const site_weights[QSUR_SITE_COUNT] = {"wq+wk+wv", "wo", "w1+w3", "w2"};

const char *qsur_site_name(int site)
{
    return site >= 0 && site < QSUR_SITE_COUNT ? site_names[site] : NULL;
}

const char *qsur_site_input(int site)
{
    return site >= 0 && site < QSUR_SITE_COUNT ? site_inputs[site] : NULL;
}

const char *qsur_site_weights(int site)
{
    return site >= 0 && site < QSUR_SITE_COUNT ? site_weights[site] : NULL;
}

void qsur_llama_qsur_free(qsur_llama_qsur *q)
{
    if (!q)
        return;
    free(q->sites);
    memset(q, 0, sizeof *q);
}

int qsur_llama_qsur_copy(qsur_llama_qsur *dst, const qsur_llama_qsur *src, qsur_error *err)
{
    *dst = *src;
    dst->sites = NULL;
    if (src->nsites > 0) {
        dst->sites = malloc((size_t)src->nsites * sizeof *dst->sites);
        if (!dst->sites) {
            memset(dst, 0, sizeof *dst);
            return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory for a QSUR table of %d sites", src->nsites);
        }
        memcpy(dst->sites, src->sites, (size_t)src->nsites * sizeof *dst->sites);
    }
    return QSUR_OK;
}

/* Mean log10, mean and min per-dimension QSUR over the non-singular entries. */
static void summarize_side(const qsur_llama_qsur *q, int weight, double *log_mean, double *pd_mean,
                           double *pd_min, int *worst, int *nsing)
{
    double sl = 0, sp = 0;
    int n = 0;
    *worst = -1;
    *nsing = 0;
    *pd_min = NAN;
    for (int i = 0; i < q->nsites; i++) {
        const qsur_site_qsur *s = &q->sites[i];
        int sing = weight ? s->w_singular : s->x_singular;
        double lg = weight ? s->w_log10 : s->x_log10, pd = weight ? s->w_per_dim : s->x_per_dim;
        if (sing || !isfinite(lg)) {
            (*nsing)++;
            continue;
        }
        sl += lg;
        sp += pd;
        n++;
        if (*worst < 0 || pd < *pd_min) {
            *worst = i;
            *pd_min = pd;
        }
    }
    *log_mean = n ? sl / n : NAN;
    *pd_mean = n ? sp / n : NAN;
}

void qsur_llama_qsur_summarize(qsur_llama_qsur *q)
{
    summarize_side(q, 0, &q->x_log10_mean, &q->x_pd_mean, &q->x_pd_min, &q->x_worst, &q->x_nsingular);
    summarize_side(q, 1, &q->w_log10_mean, &q->w_pd_mean, &q->w_pd_min, &q->w_worst, &q->w_nsingular);
}

/* The linears reading a site's input, in stacking order. */
static int site_linears(const qsur_llama_layer *L, int site, const qsur_llama_linear **lin)
{
    switch (site) {
    case QSUR_SITE_QKV:
        lin[0] = &L->wq;
        lin[1] = &L->wk;
        lin[2] = &L->wv;
        return 3;
    case QSUR_SITE_O:
        lin[0] = &L->wo;
        return 1;
    case QSUR_SITE_UP:
        lin[0] = &L->w1;
        lin[1] = &L->w3;
        return 2;
    default:
        lin[0] = &L->w2;
        return 1;
    }
}

/* QSUR of the stacked float weights of a site. */
static int weight_qsur(const qsur_llama_layer *L, int site, const qsur_options *opt, qsur_site_qsur *row,
                       qsur_error *err)
{
    const qsur_llama_linear *lin[3];
    int k = site_linears(L, site, lin);
    int64_t rows = 0, d = lin[0]->cols;
    for (int i = 0; i < k; i++)
        rows += lin[i]->rows;
    qsur_result res;
    int rc;
    if (k == 1) {
        rc = qsur_compute(lin[0]->w, rows, d, opt, &res, NULL, err);
    } else {
        float *w = qsur_alloc((size_t)(rows * d), sizeof(float));
        if (!w)
            return qsur_fail(err, QSUR_ERR_NOMEM, "QSUR: out of memory for the %lld x %lld weights of %s",
                             (long long)rows, (long long)d, qsur_site_weights(site));
        int64_t at = 0;
        for (int i = 0; i < k; i++) {
            memcpy(w + at * d, lin[i]->w, (size_t)(lin[i]->rows * d) * sizeof(float));
            at += lin[i]->rows;
        }
        rc = qsur_compute(w, rows, d, opt, &res, NULL, err);
        free(w);
    }
    if (rc)
        return rc;
    row->w_rows = rows;
    row->w_log10 = res.log10_qsur;
    row->w_per_dim = res.per_dim;
    row->w_singular = res.singular;
    return QSUR_OK;
}

int qsur_llama_qsur_measure(const qsur_llama *m, const qsur_tokens *t, int seq_len, int n_seqs,
                            const qsur_options *opt, qsur_llama_qsur *out, qsur_error *err)
{
    double t0 = qsur_seconds();
    memset(out, 0, sizeof *out);
    const qsur_llama_config *c = &m->cfg;
    if (seq_len <= 0)
        seq_len = t->seq_len;
    int64_t avail = seq_len > 0 ? t->n / seq_len : 0;
    if (n_seqs <= 0 || n_seqs > avail)
        n_seqs = avail > (1 << 30) ? (1 << 30) : (int)avail;
    if (n_seqs < 1 || seq_len < 2)
        return qsur_fail(err, QSUR_ERR_ARG, "QSUR probe: %lld tokens hold no sequence of %d (>= 2) tokens",
                         (long long)t->n, seq_len);
    /* the float model the quantizers' inputs come from: same weights and online
     * rotations, no fake-quantized copies, no activation/KV quantization */
    qsur_llama fl = *m;
    fl.hooks.act.bits = 16;
    fl.hooks.kv.bits = 16;
    fl.output.wq = NULL;
    fl.output.qp = NULL;
    fl.layers = malloc((size_t)c->n_layers * sizeof *fl.layers);
    qsur_site_qsur *sites = calloc((size_t)c->n_layers * QSUR_SITE_COUNT, sizeof *sites);
    if (!fl.layers || !sites) {
        free(fl.layers);
        free(sites);
        return qsur_fail(err, QSUR_ERR_NOMEM, "QSUR probe: out of memory");
    }
    for (int l = 0; l < c->n_layers; l++) {
        qsur_llama_layer *L = &fl.layers[l];
        *L = m->layers[l];
        L->wq.wq = L->wk.wq = L->wv.wq = L->wo.wq = L->w1.wq = L->w2.wq = L->w3.wq = NULL;
        L->wq.qp = L->wk.qp = L->wv.qp = L->wo.qp = L->w1.qp = L->w2.qp = L->w3.qp = NULL;
    }
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    int64_t n = 0;
    /* the capture's subset seed is unused: max_tokens 0 keeps every position */
    int rc = qsur_llama_capture(&fl, NULL, t, seq_len, n_seqs, n_seqs < 8 ? n_seqs : 8, 0, 1, &ws, &n, NULL, err);
    for (int l = 0; l < c->n_layers && !rc; l++)
        for (int s = 0; s < QSUR_SITE_COUNT && !rc; s++) {
            char name[QSUR_NAME_MAX];
            snprintf(name, sizeof name, "layers.%d.%s", l, site_inputs[s]);
            const qsur_tensor *x = qsur_workspace_find(&ws, name);
            qsur_site_qsur *row = &sites[l * QSUR_SITE_COUNT + s];
            row->layer = l;
            row->site = s;
            if (!x) {
                rc = qsur_fail(err, QSUR_ERR_ARG, "QSUR probe: capture has no %s", name);
                break;
            }
            row->d = qsur_tensor_cols(x);
            qsur_result res;
            if ((rc = qsur_compute(x->data, qsur_tensor_rows(x), row->d, opt, &res, NULL, err)))
                break;
            row->x_log10 = res.log10_qsur;
            row->x_per_dim = res.per_dim;
            row->x_singular = res.singular;
            rc = weight_qsur(&m->layers[l], s, opt, row, err);
        }
    qsur_workspace_clear(&ws);
    free(fl.layers);
    if (rc) {
        free(sites);
        return rc;
    }
    out->n_layers = c->n_layers;
    out->nsites = c->n_layers * QSUR_SITE_COUNT;
    out->sites = sites;
    out->n_tokens = n;
    out->cube = opt->cube;
    out->alpha = opt->alpha;
    qsur_llama_qsur_summarize(out);
    out->seconds = qsur_seconds() - t0;
    return QSUR_OK;
}
