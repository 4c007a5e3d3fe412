/* CQE+ cross-layer learning (see cqe_cross.h): the banded D's of a window of
 * blocks trained jointly on the residual-stream error after the window. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/cqe_cross.h"
#include "qsur/llama_calib.h"
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

typedef struct {
    qsur_llama_linear *l;
    int layer;                /* in the window */
    float *wtmp;              /* the weights converted to float32 (NULL when held so) */
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
    free(c->D), free(c->best), free(c->G), free(c->wtmp);
    memset(c, 0, sizeof *c);
}

static int lin_init(cross_lin *c, qsur_llama *m, int layer, int j, const qsur_quant_spec *spec,
                    const qsur_cqe_opts *o, qsur_error *err)
{
    memset(c, 0, sizeof *c);
    c->l = qsur_llama_linear_at(m, layer * 7 + j);
    c->layer = layer;
    qsur_quant_spec q = qsur_llama_linear_spec(spec, c->l->cols);
    const float *W = NULL;
    int rc = qsur_llama_linear_weights_alloc(c->l, &W, &c->wtmp, err);
    if (rc)
        return rc;
    qsur_wquant_layer L = {W, c->l->rows, c->l->cols, NULL, 0, NULL};
    rc = qsur_cqe_problem_new(&c->p, &L, &q, o->rank, o->band, err);
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

/* The window's linears without their quantized forms (the float model), and back. */
static void hide_quant(qsur_llama *v, float **wq, qsur_llama_packed **qp, int put)
{
    for (int i = 0; i < qsur_llama_linear_count(v); i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(v, i);
        if (put) {
            l->wq = wq[i], l->qp = qp[i];
        } else {
            wq[i] = l->wq, qp[i] = l->qp;
            l->wq = NULL, l->qp = NULL;
        }
    }
}

/* Trains the D's of one window (its blocks as the view v) on the stream xq
 * entering it, against the float model's residual href after it; the
 * window's linears end with their CQE+ weights, packed when on the grid. */
static int train_window(qsur_llama *m, qsur_llama *v, int first, qsur_llama_tape *t,
                        qsur_llama_grads *g, const float *xq, const float *href,
                        const qsur_quant_spec *spec, const qsur_cqe_cross_opts *o, cross_lin *lins,
                        qsur_llama_quant_undo *u, qsur_cqe_window_row *row, double w0, double w1,
                        const qsur_progress *prog, qsur_error *err)
{
    const int K = v->cfg.n_layers, nl = 7 * K, B = t->B, T = t->T;
    const int64_t nd = t->N * v->cfg.dim;
    int rc = QSUR_OK;
    for (int k = 0; k < nl && !rc; k++) {
        if ((rc = lin_init(&lins[k], v, k / 7, k % 7, spec, &o->layer, err)))
            break;
        int idx = (first + k / 7) * 7 + k % 7;
        qsur_llama_linear *l = lins[k].l;
        float *fresh = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float));
        if (!fresh) {
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "cqe cross: out of memory at %s", l->name);
            break;
        }
        qsur_llama_quant_undo_take(u, m, idx);
        l->wq = fresh;
    }
    double fbest = INFINITY;
    int best_step = 0;
    for (int s = 0; s <= o->layer.steps && !rc; s++) {
        for (int k = 0; k < nl && !rc; k++)
            rc = qsur_cqe_apply(lins[k].p, lins[k].D, lins[k].l->wq, err);
        if (rc || (rc = qsur_llama_train_blocks(v, t, xq, B, T, err)))
            break;
        double f = mse(t->x_final, href, nd);
        if (s == 0)
            row->rtn_loss = f;
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
            dh[i] = (float)(2.0 * ((double)t->x_final[i] - href[i]) / (double)nd);
        qsur_llama_grads_zero(g, v);
        rc = qsur_llama_backward_hidden(v, t, 0, K - 1, dh, NULL, g, err);
        free(dh);
        for (int k = 0; k < nl && !rc; k++) {
            cross_lin *cl = &lins[k];
            float *dW = grad_of(&g->layers[cl->layer], &v->layers[cl->layer], cl->l);
            /* the STE runs at this linear's W' of the _apply above */
            if (!(rc = qsur_cqe_backward(cl->p, dW, cl->G, err)))
                qsur_adam_step(cl->adam, cl->D, cl->G, cl->lr);
        }
        if (!rc)
            rc = qsur_progress_tick(prog, w0 + (w1 - w0) * (s + 1.0) / (o->layer.steps + 1.0),
                                    "cqe cross", f, err);
    }
    /* the kept D's, stored compactly: Q's codes on the grid of W' (the
     * float copy goes; it stays only if they do not decode to Q) */
    for (int k = 0; k < nl && !rc; k++) {
        qsur_llama_linear *l = lins[k].l;
        qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
        qsur_qweight *qw = NULL;
        if (!(rc = qsur_cqe_apply(lins[k].p, lins[k].best, l->wq, err)) &&
            !(rc = qsur_qweight_new(&qw, &q, l->rows, l->cols, err)) &&
            !(rc = qsur_qweight_fit_rtn(qw, qsur_cqe_shifted_weights(lins[k].p), err))) {
            qsur_qweight_encode(qw, l->wq);
            rc = qsur_llama_linear_set_quant_qw(l, l->wq, qw, err);
        }
        qsur_qweight_free(qw);
    }
    if (!rc) {
        row->loss = fbest;
        row->best_step = best_step;
    }
    return rc;
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
    const int nper = 7 * c->n_layers;
    for (int i = 0; i < nper; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
        int rc = qsur_quant_validate(&q, l->cols, err);
        if (rc)
            return rc;
    }
    const int64_t N = (int64_t)B * T, nd = N * c->dim;
    for (int64_t i = 0; i < N; i++) {
        int id = calib->ids[(i / T) * S + i % T];
        if (id < 0 || id >= c->vocab_size)
            return qsur_fail(err, QSUR_ERR_ARG, "cqe cross: token %d out of range 0..%d", id, c->vocab_size - 1);
    }
    /* Window by window: the quantized model's stream xq and the float model's
     * xf enter it (both start as the embeddings); the window's blocks alone
     * are taped and trained; its float output is the target and the next xf,
     * its output with the kept D's the next xq. Memory: two streams, one
     * window's tape, gradients and CQE+ problems, never the model in float. */
    const int K = o->window, nwin = qsur_cqe_cross_windows(m, K);
    float *xq = qsur_alloc((size_t)nd, sizeof(float)), *xf = qsur_alloc((size_t)nd, sizeof(float));
    float **hwq = calloc(7 * (size_t)K, sizeof *hwq);
    qsur_llama_packed **hqp = calloc(7 * (size_t)K, sizeof *hqp);
    qsur_llama_quant_undo u;
    int rc = qsur_llama_quant_undo_new(&u, m, err);
    cross_lin *lins = calloc((size_t)(7 * K), sizeof *lins);
    qsur_llama_tape *t = NULL, *tlast = NULL;
    qsur_llama_grads *g = NULL, *glast = NULL;
    if (!rc && (!xq || !xf || !hwq || !hqp || !lins))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "cqe cross: out of memory");
    for (int64_t i = 0; i < N && !rc; i++) {
        int id = calib->ids[(i / T) * S + i % T];
        qsur_llama_embed_rows(m, &id, 1, xq + i * c->dim);
    }
    if (!rc)
        memcpy(xf, xq, (size_t)nd * sizeof(float));
    for (int w = 0; w < nwin && !rc; w++) {
        const int first = w * K, n = first + K <= c->n_layers ? K : c->n_layers - first;
        qsur_llama v = qsur_llama_blocks_view(m, first, n);
        /* a shorter last window gets a tape and gradients of its own size */
        qsur_llama_tape **tp = n == K ? &t : &tlast;
        qsur_llama_grads **gp = n == K ? &g : &glast;
        if (!*tp && ((rc = qsur_llama_tape_new(tp, &v, B, T, err)) || (rc = qsur_llama_grads_new(gp, &v, err))))
            break;
        /* the float model's output of the window: the target, and the next xf */
        hide_quant(&v, hwq, hqp, 0);
        rc = qsur_llama_train_blocks(&v, *tp, xf, B, T, err);
        hide_quant(&v, hwq, hqp, 1);
        if (rc)
            break;
        memcpy(xf, (*tp)->x_final, (size_t)nd * sizeof(float));
        qsur_cqe_window_row row = {first, first + n - 1, 0, 0, 0};
        rc = train_window(m, &v, first, *tp, *gp, xq, xf, spec, o, lins, &u, &row, (double)w / nwin,
                          (w + 1.0) / nwin, prog, err);
        for (int k = 0; k < 7 * K; k++)
            lin_free(&lins[k]);
        if (rc || (rc = qsur_llama_train_blocks(&v, *tp, xq, B, T, err)))
            break;
        memcpy(xq, (*tp)->x_final, (size_t)nd * sizeof(float)); /* through the kept weights */
        if (rows)
            rows[w] = row;
    }
    qsur_llama_quant_undo_end(&u, m, rc); /* all-or-nothing */
    if (lins)
        for (int k = 0; k < 7 * K; k++)
            lin_free(&lins[k]);
    qsur_llama_grads_free(g), qsur_llama_grads_free(glast);
    qsur_llama_tape_free(t), qsur_llama_tape_free(tlast);
    free(xq), free(xf), free(hwq), free(hqp), free(lins);
    return rc;
}
