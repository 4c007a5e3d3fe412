/* Sequential layer-wise weight quantization of a Llama model (see
 * llama_wquant.h): capture a group's input from the partly quantized model,
 * quantize the group's linears on it, move on. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/backend.h"
#include "qsur/llama_calib.h"
#include "qsur/llama_wquant.h"
#include "qsur/wquant.h"

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

/* ---- what a group's block run feeds ------------------------------------- */

/* The method's view of a group's input: H = X^T X streamed (GPTQ, QuantEase,
 * CQE+), or X itself (AWQ searches its scales on X; RTN needs neither). */
typedef struct {
    qsur_gram_acc g;
    double *H;
    float *X;
    int64_t n, cols;
} group_input;

static void input_row(void *ctx, const float *x, int64_t cols)
{
    group_input *in = ctx;
    if (in->H)
        qsur_gram_acc_rows(&in->g, x, 1);
    if (in->X)
        memcpy(in->X + in->n * cols, x, (size_t)cols * sizeof(float));
    in->n++;
}

static void input_free(group_input *in)
{
    qsur_gram_acc_free(&in->g);
    free(in->H);
    free(in->X);
    memset(in, 0, sizeof *in);
}

static int input_new(group_input *in, const qsur_llama_wquant_opts *o, int64_t n, int64_t cols,
                     const char *mname, qsur_error *err)
{
    memset(in, 0, sizeof *in);
    in->cols = cols;
    if (o->method == QSUR_MWQ_AWQ) {
        if (!(in->X = qsur_alloc((size_t)n, (size_t)cols * sizeof(float))))
            return qsur_fail(err, QSUR_ERR_NOMEM, "%s model: cannot hold %lld x %lld inputs", mname,
                             (long long)n, (long long)cols);
    } else if (o->method != QSUR_MWQ_RTN) {
        if (!(in->H = qsur_alloc((size_t)(cols * cols), sizeof(double))))
            return qsur_fail(err, QSUR_ERR_NOMEM, "%s model: cannot allocate H (%lld x %lld)", mname,
                             (long long)cols, (long long)cols);
        return qsur_gram_acc_init(&in->g, cols, in->H, err);
    }
    return QSUR_OK;
}

/* Output errors ||X W^T - X Q^T||_F / ||X W^T||_F of a quantized group (and
 * of RTN), summed over the group's input as it passes again in the next
 * block run (that input does not depend on the group's own weights), in
 * blocks of OUT_ROWS tokens. W and Q are read back from the model (the
 * weights and the quantized form just set, bit for bit the method's Q) a
 * slice of rows at a time; only RTN's weights are held. */
#define OUT_ROWS 256
#define SLICE_FLOATS ((int64_t)1 << 22)
typedef struct {
    qsur_llama_wquant_row *row;
    const qsur_llama_linear *l;
    float *R;                 /* owned: RTN's weights */
    double den, num, num_rtn;
} pending_linear;

typedef struct {
    int count;
    pending_linear lin[3];
    int64_t cols, fill, slice;
    float *buf, *y, *yq;      /* OUT_ROWS x cols, OUT_ROWS x slice (twice) */
    float *ws, *qs;           /* slice x cols: W's and Q's rows */
} pending_group;

static double sq_diff(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = (double)a[i] - (double)b[i];
        s += e * e;
    }
    return s;
}

/* Y (nb x r) = X_block (nb x cols) W^T, W row-major r x cols. */
static void block_product(const pending_group *p, int nb, const float *w, int r, float *y)
{
    int c = (int)p->cols;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, r, c, 1.0f, p->buf, c, w, c, 0.0f, y, r);
}

static void pending_flush(pending_group *p)
{
    int nb = (int)p->fill;
    for (int k = 0; k < p->count && nb > 0; k++) {
        pending_linear *pl = &p->lin[k];
        for (int64_t r0 = 0; r0 < pl->l->rows; r0 += p->slice) {
            int64_t r1 = r0 + p->slice < pl->l->rows ? r0 + p->slice : pl->l->rows;
            int r = (int)(r1 - r0);
            qsur_llama_linear_read_rows(pl->l, r0, r1, p->ws);
            qsur_llama_linear_forward_rows(pl->l, r0, r1, p->qs);
            block_product(p, nb, p->ws, r, p->y);
            for (int64_t i = 0; i < (int64_t)nb * r; i++)
                pl->den += (double)p->y[i] * p->y[i];
            block_product(p, nb, p->qs, r, p->yq);
            pl->num += sq_diff(p->y, p->yq, (int64_t)nb * r);
            block_product(p, nb, pl->R + r0 * p->cols, r, p->yq);
            pl->num_rtn += sq_diff(p->y, p->yq, (int64_t)nb * r);
        }
    }
    p->fill = 0;
}

static void pending_row(void *ctx, const float *x, int64_t cols)
{
    pending_group *p = ctx;
    memcpy(p->buf + p->fill * cols, x, (size_t)cols * sizeof(float));
    if (++p->fill == OUT_ROWS)
        pending_flush(p);
}

static double rel_error(double num, double den)
{
    return num == 0.0 ? 0.0 : den == 0.0 ? INFINITY : sqrt(num / den);
}

/* The errors into the rows, everything freed. */
static void pending_done(pending_group *p, int fill_rows)
{
    if (fill_rows)
        pending_flush(p);
    for (int k = 0; k < p->count; k++) {
        pending_linear *l = &p->lin[k];
        if (fill_rows && l->row) {
            l->row->rtn_error = rel_error(l->num_rtn, l->den);
            l->row->error = rel_error(l->num, l->den);
        }
        free(l->R);
    }
    free(p->buf), free(p->y), free(p->yq), free(p->ws), free(p->qs);
    memset(p, 0, sizeof *p);
}

static int pending_scratch(pending_group *p, int64_t cols, int64_t max_rows, qsur_error *err)
{
    p->cols = cols;
    p->slice = SLICE_FLOATS / cols > 0 ? SLICE_FLOATS / cols : 1;
    p->slice = p->slice < max_rows ? p->slice : max_rows;
    p->buf = qsur_alloc((size_t)OUT_ROWS, (size_t)cols * sizeof(float));
    p->y = qsur_alloc((size_t)OUT_ROWS, (size_t)p->slice * sizeof(float));
    p->yq = qsur_alloc((size_t)OUT_ROWS, (size_t)p->slice * sizeof(float));
    p->ws = qsur_alloc((size_t)p->slice, (size_t)cols * sizeof(float));
    p->qs = qsur_alloc((size_t)p->slice, (size_t)cols * sizeof(float));
    if (!p->buf || !p->y || !p->yq || !p->ws || !p->qs)
        return qsur_fail(err, QSUR_ERR_NOMEM, "model quantization: out of memory for output errors");
    return QSUR_OK;
}

/* ---- the sequential driver ------------------------------------------------ */

/* Linear indices of group g of a block: {wq wk wv} {wo} {w1 w3} {w2}. */
static int group_linears(int layer, int g, int idx[3])
{
    static const int first[4] = {0, 3, 4, 5};
    if (g == 2) {
        idx[0] = layer * 7 + 4, idx[1] = layer * 7 + 6;
        return 2;
    }
    int k = g == 0 ? 3 : 1;
    for (int j = 0; j < k; j++)
        idx[j] = layer * 7 + first[g] + j;
    return k;
}

/* Quantizes the linears of one group on its input; their errors wait in p
 * for the next block run. */
static int quantize_group(qsur_llama *m, int layer, int g, const group_input *in,
                          const qsur_quant_spec *spec, const qsur_llama_wquant_opts *o,
                          qsur_llama_wquant_row *rows, qsur_llama_quant_undo *u, pending_group *p,
                          double lo, double hi, const qsur_progress *prog, qsur_error *err)
{
    const char *mname = qsur_llama_wquant_method_name(o->method);
    int idx[3], k = group_linears(layer, g, idx), rc = QSUR_OK;
    int64_t max_rows = 0;
    for (int j = 0; j < k; j++) {
        int64_t r = qsur_llama_linear_at(m, idx[j])->rows;
        max_rows = r > max_rows ? r : max_rows;
    }
    if ((rc = pending_scratch(p, in->cols, max_rows, err)))
        return rc;
    for (int j = 0; j < k && !rc; j++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, idx[j]);
        qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
        size_t sz = (size_t)(l->rows * l->cols);
        pending_linear *pl = &p->lin[p->count++];
        pl->l = l;
        const float *W = NULL;
        float *Wtmp = NULL, *Q = qsur_alloc(sz, sizeof(float));
        pl->R = qsur_alloc(sz, sizeof(float));
        if (!Q || !pl->R)
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s model: out of memory at %s", mname, l->name);
        if (!rc)
            rc = qsur_llama_linear_weights_alloc(l, &W, &Wtmp, err);
        int64_t nout = 0;
        sub_progress sp;
        double a = lo + (hi - lo) * j / k, b = lo + (hi - lo) * (j + 1) / k;
        /* GPTQ and QuantEase also give their codes: kept packed, not as floats */
        qsur_qweight *qw = NULL;
        if (!rc && ((o->method == QSUR_MWQ_GPTQ && !o->gpu) || o->method == QSUR_MWQ_QUANTEASE))
            rc = qsur_qweight_new(&qw, &q, l->rows, l->cols, err);
        if (!rc)
            rc = quantize_one(l, W, in->X, in->X ? in->n : 0, in->H, &q, o, Q, qw, &nout,
                              sub_progress_set(&sp, prog, a, b), err);
        if (!rc)
            rc = qsur_fake_quant(&q, W, l->rows, l->cols, pl->R, NULL, err);
        if (!rc) {
            qsur_llama_quant_undo_take(u, m, idx[j]); /* the old form waits until the end */
            rc = qw ? qsur_llama_linear_set_quant_qw(l, Q, qw, err)
                    : qsur_llama_linear_set_quant(l, Q, &q, err); /* packed when on the grid */
        }
        qsur_qweight_free(qw);
        free(Q), free(Wtmp);
        if (!rc && rows) {
            qsur_llama_wquant_row *r = &rows[idx[j]];
            snprintf(r->name, sizeof r->name, "%s", l->name);
            r->group = q.gran == QSUR_GRAN_GROUP ? q.group : 0;
            r->rtn_error = r->error = NAN; /* filled by the next block run */
            r->outliers = nout;
            pl->row = r;
        }
    }
    return rc;
}

static int check_specs(qsur_llama *m, const qsur_quant_spec *spec, const char *mname,
                       qsur_error *err)
{
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
    return QSUR_OK;
}

/* Block l: four runs, each feeding one group's input to the method (and the
 * previous group's input to its output errors), the group quantized after
 * its run; a fifth run gives the last group's errors and the next block's
 * input. */
static int wquant_block(qsur_llama *m, const qsur_llama *view, qsur_llama_calib *cal, int layer,
                        int layers, const qsur_quant_spec *spec, const qsur_llama_wquant_opts *o,
                        qsur_llama_wquant_row *rows, qsur_llama_quant_undo *u, const qsur_progress *prog,
                        qsur_error *err)
{
    const char *mname = qsur_llama_wquant_method_name(o->method);
    const int64_t n = qsur_llama_calib_tokens(cal);
    pending_group prev = {0};
    int rc = QSUR_OK;
    for (int g = 0; g <= 4 && !rc; g++) {
        double lo = (layer + g / 5.0) / layers, mid = (layer + (g + 0.3) / 5.0) / layers,
               hi = (layer + (g + 1) / 5.0) / layers;
        group_input in = {0};
        qsur_llama_calib_use uses[2];
        int nuse = 0;
        if (g < 4) {
            /* group g's input is capture kind g: attention.in, wo.in, feed_forward.in, w2.in */
            int64_t cols = g == 3 ? m->cfg.hidden_dim : m->cfg.dim;
            if ((rc = input_new(&in, o, n, cols, mname, err))) {
                input_free(&in);
                break;
            }
            uses[nuse++] = (qsur_llama_calib_use){g, input_row, &in};
        }
        if (g > 0)
            uses[nuse++] = (qsur_llama_calib_use){g - 1, pending_row, &prev};
        sub_progress sp;
        rc = qsur_llama_calib_run(cal, view, uses, nuse, g == 4 && layer + 1 < layers,
                                  sub_progress_set(&sp, prog, lo, g < 4 ? mid : hi), err);
        pending_done(&prev, !rc);
        if (!rc && g < 4) {
            if (in.H)
                qsur_gram_acc_finish(&in.g);
            rc = quantize_group(m, layer, g, &in, spec, o, rows, u, &prev, mid, hi, prog, err);
        }
        input_free(&in);
    }
    pending_done(&prev, 0);
    return rc;
}

int qsur_llama_wquant(qsur_llama *m, const qsur_tokens *calib, const qsur_quant_spec *spec,
                      const qsur_llama_wquant_opts *o, qsur_llama_wquant_row *rows,
                      const qsur_progress *prog, qsur_error *err)
{
    const char *mname = qsur_llama_wquant_method_name(o->method);
    int rc = check_specs(m, spec, mname, err);
    if (rc)
        return rc;
    int layers = o->layers > 0 && o->layers < m->cfg.n_layers ? o->layers : m->cfg.n_layers;
    qsur_llama_quant_undo u;
    if ((rc = qsur_llama_quant_undo_new(&u, m, err)))
        return rc;
    /* the model the calibration runs: m itself, or a view of it (same layers,
     * so the quantized forms set below are seen) with the act/KV quantizers off */
    qsur_llama view = *m;
    if (o->float_acts) {
        view.hooks.act.bits = 16;
        view.hooks.kv.bits = 16;
        view.hooks.act_wo.bits = 0;
    }
    qsur_llama_calib *cal = NULL;
    rc = qsur_llama_calib_new(&cal, &view, calib, o->seq_len, o->max_seqs, o->batch,
                              o->max_tokens, o->seed, err);
    for (int layer = 0; layer < layers && !rc; layer++)
        rc = wquant_block(m, &view, cal, layer, layers, spec, o, rows, &u, prog, err);
    qsur_llama_calib_free(cal);
    qsur_llama_quant_undo_end(&u, m, rc);
    return rc;
}
