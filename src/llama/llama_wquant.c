/* Sequential layer-wise weight quantization of a Llama model (see
 * llama_wquant.h): capture a group's input from the partly quantized model,
 * quantize the group's linears on it, move on. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/backend.h"
#include "qsur/llama_wquant.h"

const char *qsur_llama_wquant_method_name(qsur_llama_wquant_method m)
{
    switch (m) {
    case QSUR_MWQ_RTN: return "rtn";
    case QSUR_MWQ_GPTQ: return "gptq";
    case QSUR_MWQ_QUANTEASE: return "quantease";
    case QSUR_MWQ_AWQ: return "awq";
    case QSUR_MWQ_CQE: return "cqe";
    }
    return "?";
}

qsur_llama_wquant_opts qsur_llama_wquant_default(void)
{
    qsur_llama_wquant_opts o;
    memset(&o, 0, sizeof o);
    o.method = QSUR_MWQ_GPTQ;
    o.gptq = qsur_gptq_default();
    o.quantease = qsur_quantease_default();
    o.awq = qsur_awq_default();
    o.cqe = qsur_cqe_default();
    o.batch = 8;
    o.seed = 1;
    return o;
}

qsur_quant_spec qsur_llama_linear_spec(const qsur_quant_spec *spec, int64_t cols)
{
    qsur_quant_spec q = *spec;
    if (q.gran != QSUR_GRAN_GROUP || q.group <= 0 || cols % q.group == 0)
        return q;
    int64_t best = cols;
    for (int64_t g = 1; g <= cols; g++) {
        if (cols % g)
            continue;
        int64_t db = llabs(best - q.group), dg = llabs(g - q.group);
        if (dg < db || (dg == db && g > best))
            best = g;
    }
    q.group = (int)best;
    return q;
}

int qsur_llama_quantize_rtn(qsur_llama *m, const qsur_quant_spec *spec,
                            const qsur_progress *prog, qsur_error *err)
{
    if (spec->bits >= 16) {
        qsur_llama_dequantize_weights(m);
        return QSUR_OK;
    }
    return qsur_llama_quantize_each(m, spec, qsur_llama_linear_spec, prog, err);
}

/* A progress callback mapping a sub-task's [0,1] onto [lo,hi] of the outer one. */
typedef struct {
    qsur_progress p;
    const qsur_progress *outer;
    double lo, hi;
} sub_progress;

static int sub_fn(void *ctx, double done, const char *what, double value)
{
    sub_progress *s = ctx;
    return s->outer->fn(s->outer->ctx, s->lo + done * (s->hi - s->lo), what, value);
}

static const qsur_progress *sub_progress_set(sub_progress *s, const qsur_progress *outer,
                                             double lo, double hi)
{
    if (!outer || !outer->fn)
        return NULL;
    s->outer = outer;
    s->lo = lo;
    s->hi = hi;
    s->p.fn = sub_fn;
    s->p.ctx = s;
    return &s->p;
}

static const char *const group_input[4] = {"attention.in", "attention.wo.in", "feed_forward.in",
                                           "feed_forward.w2.in"};

/* Quantizes one linear on X (n x cols) with H = X^T X; Q receives the result. */
static int quantize_one(const qsur_llama_linear *l, const float *W, const float *X, int64_t n,
                        const double *H, const qsur_quant_spec *q, const qsur_llama_wquant_opts *o,
                        float *Q, qsur_qweight *qw, int64_t *n_out, const qsur_progress *prog,
                        qsur_error *err)
{
    qsur_wquant_layer L = {W, l->rows, l->cols, X, n, H};
    *n_out = 0;
    switch (o->method) {
    case QSUR_MWQ_RTN:
        return qsur_fake_quant(q, W, l->rows, l->cols, Q, prog, err);
    case QSUR_MWQ_GPTQ:
        if (o->gpu) /* Q only: set_quant packs it when it is on the grid */
            return qsur_gpu_gptq(&L, q, &o->gptq, Q, err);
        return qsur_gptq(&L, q, &o->gptq, Q, qw, prog, err);
    case QSUR_MWQ_AWQ: {
        qsur_awq_result res;
        return qsur_awq(&L, q, &o->awq, Q, NULL, NULL, &res, prog, err);
    }
    case QSUR_MWQ_CQE: {
        qsur_cqe_result res;
        return qsur_cqe(&L, q, &o->cqe, Q, NULL, NULL, &res, prog, err);
    }
    case QSUR_MWQ_QUANTEASE: {
        qsur_outliers out;
        memset(&out, 0, sizeof out);
        int rc = qsur_quantease(&L, q, &o->quantease, Q, qw, &out, NULL, prog, err);
        *n_out = out.count;
        qsur_outliers_free(&out);
        return rc;
    }
    }
    return qsur_fail(err, QSUR_ERR_ARG, "model quantization: unknown method %d", (int)o->method);
}

int qsur_llama_wquant(qsur_llama *m, const qsur_tokens *calib, const qsur_quant_spec *spec,
                      const qsur_llama_wquant_opts *o, qsur_llama_wquant_row *rows,
                      const qsur_progress *prog, qsur_error *err)
{
    const char *mname = qsur_llama_wquant_method_name(o->method);
    if (spec->bits >= 16)
        return qsur_fail(err, QSUR_ERR_ARG, "%s model: the weight quantizer is off (w16); set bits with `quant w4`",
                         mname);
    const int nlin = qsur_llama_linear_count(m);
    if (nlin <= 0)
        return qsur_fail(err, QSUR_ERR_ARG, "%s model: the model has no linears", mname);
    for (int i = 0; i < nlin; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
        int rc = qsur_quant_validate(&q, l->cols, err);
        if (rc)
            return rc;
    }
    int layers = o->layers > 0 && o->layers < m->cfg.n_layers ? o->layers : m->cfg.n_layers;
    /* the quantized forms from before: put back on error or interruption */
    float **old = calloc((size_t)nlin, sizeof *old);
    qsur_llama_packed **oldp = calloc((size_t)nlin, sizeof *oldp);
    int *done = calloc((size_t)nlin, sizeof *done);
    if (!old || !oldp || !done) {
        free(old), free(oldp), free(done);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s model: out of memory", mname);
    }
    qsur_workspace cap;
    qsur_workspace_init(&cap);
    double *H = NULL;
    float *rtn = NULL, *wtmp = NULL;
    int rc = QSUR_OK;
    const int ngroups = 4 * layers;
    /* the model the captures run: m itself, or a view of it (same layers, so
     * the quantized forms set below are seen) with the act/KV quantizers off */
    qsur_llama view = *m;
    if (o->float_acts) {
        view.hooks.act.bits = 16;
        view.hooks.kv.bits = 16;
        view.hooks.act_wo.bits = 0;
    }
    for (int gi = 0; gi < ngroups && !rc; gi++) {
        int layer = gi / 4, g = gi % 4;
        sub_progress sp;
        double lo = (double)gi / ngroups, mid = (gi + 0.3) / ngroups, hi = (gi + 1.0) / ngroups;
        qsur_workspace_clear(&cap);
        /* only this group's input, through the blocks before it as quantized so far */
        qsur_llama_capture_sel sel = {layer, 1, 1u << g};
        rc = qsur_llama_capture_some(&view, NULL, calib, o->seq_len, o->max_seqs, o->batch,
                                     o->max_tokens, o->seed, &sel, &cap, NULL,
                                     sub_progress_set(&sp, prog, lo, mid), err);
        if (rc)
            break;
        char xname[QSUR_NAME_MAX];
        snprintf(xname, sizeof xname, "layers.%d.%s", layer, group_input[g]);
        const qsur_tensor *xt = qsur_workspace_find(&cap, xname);
        if (!xt) {
            rc = qsur_fail(err, QSUR_ERR_ARG, "%s model: capture lacks %s", mname, xname);
            break;
        }
        const int64_t n = qsur_tensor_rows(xt), cols = qsur_tensor_cols(xt);
        free(H);
        H = NULL;
        if (o->method == QSUR_MWQ_GPTQ || o->method == QSUR_MWQ_QUANTEASE || o->method == QSUR_MWQ_CQE) {
            H = qsur_alloc((size_t)(cols * cols), sizeof *H);
            if (!H) {
                rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s model: cannot allocate H for %s", mname, xname);
                break;
            }
            rc = qsur_gram(xt->data, n, cols, H, NULL, err);
            if (rc)
                break;
        }
        /* linear indices of the group: layer*7 + {0,1,2} {3} {4,6} {5} */
        int idx[3], k = 0;
        if (g == 0)
            idx[k++] = layer * 7, idx[k++] = layer * 7 + 1, idx[k++] = layer * 7 + 2;
        else if (g == 1)
            idx[k++] = layer * 7 + 3;
        else if (g == 2)
            idx[k++] = layer * 7 + 4, idx[k++] = layer * 7 + 6;
        else
            idx[k++] = layer * 7 + 5;
        for (int j = 0; j < k && !rc; j++) {
            qsur_llama_linear *l = qsur_llama_linear_at(m, idx[j]);
            qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
            size_t sz = (size_t)(l->rows * l->cols);
            float *Q = qsur_alloc(sz, sizeof(float));
            free(rtn), free(wtmp);
            rtn = qsur_alloc(sz, sizeof(float));
            wtmp = NULL;
            const float *W = NULL;
            if (Q && rtn)
                rc = qsur_llama_linear_weights_alloc(l, &W, &wtmp, err);
            if (rc) {
                free(Q);
                break;
            }
            if (!Q || !rtn) {
                free(Q);
                rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s model: out of memory at %s", mname, l->name);
                break;
            }
            int64_t nout = 0;
            double a = mid + (hi - mid) * j / k, b = mid + (hi - mid) * (j + 1) / k;
            /* GPTQ and QuantEase also give their codes: kept packed, not as floats */
            qsur_qweight *qw = NULL;
            if ((o->method == QSUR_MWQ_GPTQ && !o->gpu) || o->method == QSUR_MWQ_QUANTEASE)
                rc = qsur_qweight_new(&qw, &q, l->rows, l->cols, err);
            if (!rc)
                rc = quantize_one(l, W, xt->data, n, H, &q, o, Q, qw, &nout,
                                  sub_progress_set(&sp, prog, a, b), err);
            double e_rtn = NAN, e = NAN;
            if (!rc)
                rc = qsur_fake_quant(&q, W, l->rows, l->cols, rtn, NULL, err);
            if (!rc)
                rc = qsur_layer_output_error(xt->data, NULL, W, rtn, n, cols, l->rows, &e_rtn, err);
            if (!rc)
                rc = qsur_layer_output_error(xt->data, NULL, W, Q, n, cols, l->rows, &e, err);
            if (!rc) {
                /* the old form waits in old[] until the end */
                old[idx[j]] = l->wq, oldp[idx[j]] = l->qp;
                l->wq = NULL, l->qp = NULL;
                done[idx[j]] = 1;
                rc = qw ? qsur_llama_linear_set_quant_qw(l, Q, qw, err)
                        : qsur_llama_linear_set_quant(l, Q, &q, err); /* packed when on the grid */
            }
            qsur_qweight_free(qw);
            free(Q);
            if (rc)
                break;
            if (rows) {
                qsur_llama_wquant_row *r = &rows[idx[j]];
                snprintf(r->name, sizeof r->name, "%s", l->name);
                r->group = q.gran == QSUR_GRAN_GROUP ? q.group : 0;
                r->rtn_error = e_rtn;
                r->error = e;
                r->outliers = nout;
            }
        }
    }
    for (int i = 0; i < nlin; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        if (!done[i])
            continue;
        if (rc) {
            qsur_llama_linear_drop_quant(l);
            l->wq = old[i], l->qp = oldp[i];
        } else {
            free(old[i]);
            qsur_llama_packed_free(oldp[i]);
        }
    }
    qsur_workspace_clear(&cap);
    free(H), free(rtn), free(wtmp), free(old), free(oldp), free(done);
    return rc;
}
