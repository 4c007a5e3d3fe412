/* CQE+ cross-layer learning (see cqe_cross.h): the banded D's of a window of
 * blocks trained jointly on the residual-stream error after the window. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/cqe_cross.h"
#include "qsur/llama_train.h"
#include "qsur/llama_wquant.h"
#include "qsur/stiefel.h"
#include "qsur/tensor.h"

qsur_cqe_cross_opts qsur_cqe_cross_default(void)
{
    qsur_cqe_cross_opts o;
    o.layer = qsur_cqe_default();
    o.window = 2;
    o.n_seqs = 8;
    o.seq_len = 0;
    return o;
}

int qsur_cqe_cross_windows(const qsur_llama *m, int window)
{
    if (window < 1)
        return 0;
    return (m->cfg.n_layers + window - 1) / window;
}

/* The gradient array of linear j (0..6 as qsur_llama_linear_at orders a layer). */
static float *grad_of(qsur_llama_layer_grads *G, const qsur_llama_layer *L, const qsur_llama_linear *l)
{
    if (l == &L->wq) return G->d_wq;
    if (l == &L->wk) return G->d_wk;
    if (l == &L->wv) return G->d_wv;
    if (l == &L->wo) return G->d_wo;
    if (l == &L->w1) return G->d_w1;
    if (l == &L->w2) return G->d_w2;
    return G->d_w3;
}

/* The residual after block l in the tape. */
static const float *hidden_after(const qsur_llama_tape *t, int l, int64_t nd)
{
    return l + 1 < t->n_layers ? t->x_in + (size_t)(l + 1) * nd : t->x_final;
}

typedef struct {
    qsur_llama_linear *l;
    int layer;
    qsur_cqe_problem *p;
    qsur_adam *adam;
    double *D, *best, *G;
    int64_t nb;
    double lr;
} cross_lin;

static void lin_free(cross_lin *c)
{
    qsur_cqe_problem_free(c->p);
    qsur_adam_free(c->adam);
    free(c->D), free(c->best), free(c->G);
    memset(c, 0, sizeof *c);
}

static int lin_init(cross_lin *c, qsur_llama *m, int layer, int j, const qsur_quant_spec *spec,
                    const qsur_cqe_opts *o, qsur_error *err)
{
    memset(c, 0, sizeof *c);
    c->l = qsur_llama_linear_at(m, layer * 7 + j);
    c->layer = layer;
    qsur_quant_spec q = qsur_llama_linear_spec(spec, c->l->cols);
    qsur_wquant_layer L = {c->l->w, c->l->rows, c->l->cols, NULL, 0, NULL};
    int rc = qsur_cqe_problem_new(&c->p, &L, &q, o->rank, o->band, err);
    if (rc)
        return rc;
    c->nb = qsur_cqe_band_size(c->p);
    c->D = calloc((size_t)c->nb, sizeof(double));
    c->best = calloc((size_t)c->nb, sizeof(double));
    c->G = calloc((size_t)c->nb, sizeof(double));
    if (!c->D || !c->best || !c->G)
        return qsur_fail(err, QSUR_ERR_NOMEM, "cqe cross: out of memory at %s", c->l->name);
    if ((rc = qsur_adam_new(&c->adam, c->nb, err)))
        return rc;
    const double *S = qsur_cqe_singular_values(c->p);
    double ss = 0;
    for (int64_t i = 0; i < qsur_cqe_rank(c->p); i++)
        ss += S[i] * S[i];
    c->lr = o->lr * sqrt(ss / (double)qsur_cqe_rank(c->p));
    return QSUR_OK;
}

static double mse(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)a[i] - b[i];
        s += e * e;
    }
    return s / (double)n;
}

int qsur_cqe_cross(qsur_llama *m, const qsur_tokens *calib, const qsur_quant_spec *spec,
                   const qsur_cqe_cross_opts *o, qsur_cqe_window_row *rows,
                   const qsur_progress *prog, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    if (spec->bits >= 16)
        return qsur_fail(err, QSUR_ERR_ARG, "cqe cross: the weight quantizer is off (w16); set bits with `quant w4`");
    if (m->hooks.qk.apply || m->hooks.wo_in.apply || m->hooks.w2_in.apply)
        return qsur_fail(err, QSUR_ERR_ARG, "cqe cross: online transform hooks are not supported");
    if (o->window < 1 || o->window > c->n_layers || o->n_seqs < 1 || o->seq_len < 0 || o->layer.steps < 0 ||
        !(o->layer.lr >= 0) || !isfinite(o->layer.lr))
        return qsur_fail(err, QSUR_ERR_ARG,
                         "cqe cross: window %d (1..%d), seqs %d (>= 1), seqlen %d, steps %d, lr %g out of range",
                         o->window, c->n_layers, o->n_seqs, o->seq_len, o->layer.steps, o->layer.lr);
    const int S = calib->seq_len;
    int T = o->seq_len ? o->seq_len : S;
    if (T > S || T > c->seq_len)
        return qsur_fail(err, QSUR_ERR_ARG, "cqe cross: seqlen %d exceeds the calibration's (%d) or the model's (%d)",
                         T, S, c->seq_len);
    int B = o->n_seqs;
    if ((int64_t)B * S > calib->n)
        B = (int)(calib->n / S);
    const int nlin = qsur_llama_linear_count(m), nper = 7 * c->n_layers;
    for (int i = 0; i < nper; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
        int rc = qsur_quant_validate(&q, l->cols, err);
        if (rc)
            return rc;
    }
    /* this method trains on float weights and swaps float quantized copies
     * (wq): the model is made float, packed codes become copies */
    for (int i = 0; i < nper; i++) {
        int rc = qsur_llama_linear_unpack(qsur_llama_linear_at(m, i), err);
        if (rc)
            return rc;
    }
    {
        int rc = qsur_llama_own_all(m, err);
        if (rc)
            return rc;
    }
    const int64_t N = (int64_t)B * T, nd = N * c->dim;
    const int K = o->window, nwin = qsur_cqe_cross_windows(m, K);
    int *tok = malloc((size_t)N * sizeof *tok);
    float **old = calloc((size_t)nlin, sizeof *old), **fresh = calloc((size_t)nlin, sizeof *fresh);
    float *ref = qsur_alloc((size_t)(nd * c->n_layers), sizeof(float));
    cross_lin *lins = calloc((size_t)(7 * K), sizeof *lins);
    qsur_llama_tape *t = NULL;
    qsur_llama_grads *g = NULL;
    int rc = QSUR_OK;
    if (!tok || !old || !fresh || !ref || !lins) {
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "cqe cross: out of memory");
        goto out;
    }
    for (int b = 0; b < B; b++)
        memcpy(tok + (size_t)b * T, calib->ids + (size_t)b * S, (size_t)T * sizeof *tok);
    if ((rc = qsur_llama_tape_new(&t, m, B, T, err)) || (rc = qsur_llama_grads_new(&g, m, err)))
        goto out;
    for (int i = 0; i < nlin; i++)
        old[i] = qsur_llama_linear_at(m, i)->wq;
    /* float reference: per-layer linears detached (the classifier does not matter) */
    for (int i = 0; i < nper; i++)
        qsur_llama_linear_at(m, i)->wq = NULL;
    rc = qsur_llama_train_forward(m, t, tok, B, T, err);
    for (int i = 0; i < nper; i++)
        qsur_llama_linear_at(m, i)->wq = old[i];
    if (rc)
        goto out;
    for (int l = 0; l < c->n_layers; l++)
        memcpy(ref + (size_t)l * nd, hidden_after(t, l, nd), (size_t)nd * sizeof(float));

    for (int w = 0; w < nwin && !rc; w++) {
        const int first = w * K, last = first + K - 1 < c->n_layers ? first + K - 1 : c->n_layers - 1;
        const int nl = 7 * (last - first + 1);
        for (int k = 0; k < nl && !rc; k++) {
            rc = lin_init(&lins[k], m, first + k / 7, k % 7, spec, &o->layer, err);
            if (rc)
                break;
            int idx = (first + k / 7) * 7 + k % 7;
            qsur_llama_linear *l = lins[k].l;
            fresh[idx] = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float));
            if (!fresh[idx])
                rc = qsur_fail(err, QSUR_ERR_NOMEM, "cqe cross: out of memory at %s", l->name);
            else
                l->wq = fresh[idx];
        }
        double fbest = INFINITY;
        int best_step = 0;
        for (int s = 0; s <= o->layer.steps && !rc; s++) {
            for (int k = 0; k < nl && !rc; k++)
                rc = qsur_cqe_apply(lins[k].p, lins[k].D, lins[k].l->wq, err);
            if (rc || (rc = qsur_llama_train_forward(m, t, tok, B, T, err)))
                break;
            const float *h = hidden_after(t, last, nd), *hr = ref + (size_t)last * nd;
            double f = mse(h, hr, nd);
            if (s == 0 && rows)
                rows[w].rtn_loss = f;
            if (f < fbest) {
                fbest = f;
                best_step = s;
                for (int k = 0; k < nl; k++)
                    memcpy(lins[k].best, lins[k].D, (size_t)lins[k].nb * sizeof(double));
            }
            if (s == o->layer.steps)
                break;
            /* dL/dh = 2 (h - h_ref) / (N dim) */
            float *dh = qsur_alloc((size_t)nd, sizeof(float));
            if (!dh) {
                rc = qsur_fail(err, QSUR_ERR_NOMEM, "cqe cross: out of memory");
                break;
            }
            for (int64_t i = 0; i < nd; i++)
                dh[i] = (float)(2.0 * ((double)h[i] - hr[i]) / (double)nd);
            qsur_llama_grads_zero(g, m);
            rc = qsur_llama_backward_hidden(m, t, first, last, dh, NULL, g, err);
            free(dh);
            for (int k = 0; k < nl && !rc; k++) {
                cross_lin *cl = &lins[k];
                float *dW = grad_of(&g->layers[cl->layer], &m->layers[cl->layer], cl->l);
                /* the STE runs at this linear's W' of the _apply above */
                if (!(rc = qsur_cqe_backward(cl->p, dW, cl->G, err)))
                    qsur_adam_step(cl->adam, cl->D, cl->G, cl->lr);
            }
            if (!rc)
                rc = qsur_progress_tick(prog, (w + (s + 1.0) / (o->layer.steps + 1.0)) / nwin, "cqe cross", f, err);
        }
        for (int k = 0; k < nl && !rc; k++)
            rc = qsur_cqe_apply(lins[k].p, lins[k].best, lins[k].l->wq, err);
        if (!rc && rows) {
            rows[w].first = first;
            rows[w].last = last;
            rows[w].loss = fbest;
            rows[w].best_step = best_step;
        }
        for (int k = 0; k < 7 * K; k++)
            lin_free(&lins[k]);
    }
out:
    /* all-or-nothing: replaced copies are kept (old freed) or dropped (old back) */
    if (old && fresh)
        for (int i = 0; i < nlin; i++) {
            if (!fresh[i])
                continue;
            if (rc) {
                qsur_llama_linear_at(m, i)->wq = old[i];
                free(fresh[i]);
            } else {
                free(old[i]);
            }
        }
    if (lins)
        for (int k = 0; k < 7 * K; k++)
            lin_free(&lins[k]);
    qsur_llama_grads_free(g);
    qsur_llama_tape_free(t);
    free(tok), free(old), free(fresh), free(ref), free(lins);
    return rc;
}
