/* Whole-model GPTQ on the GPU (qsur_gpu_gptq_model, qsur/backend.h): the
 * calibration residual stream lives on the device at the current layer's
 * input, so memory grows with one layer's Hessians, not with the model, and
 * no pass re-runs the layers already done. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../llama/llama_sink.h"
#include "gpu_model.h"
#include "qsur/llama_store.h"

/* One linear of a group: where its host copy and its rows on the GPU are. */
typedef struct {
    qsur_llama_linear *host; /* NULL without a host model */
    int index;               /* linear index (layer * 7 + k) */
    void *dev;               /* first row of the linear in the stacked ct matrix */
    int64_t rows, cols;
} group_linear;

static int group_of(qsur_gpu_model *g, qsur_llama *m, int l, int gi, group_linear *out)
{
    const qsur_llama_config *c = &g->cfg;
    gpu_layer *L = &g->layers[l];
    qsur_llama_layer *H = m ? &m->layers[l] : NULL;
    int64_t d = c->dim, h = c->hidden_dim, kv = c->kv_dim;
    size_t e = g->esz;
#define GL(hp, k, dp, r, cl) (group_linear){H ? (hp) : NULL, l * 7 + (k), (dp), (r), (cl)}
    switch (gi) {
    case 0:
        out[0] = GL(&H->wq, 0, L->wqkv, d, d);
        out[1] = GL(&H->wk, 1, (char *)L->wqkv + (size_t)(d * d) * e, kv, d);
        out[2] = GL(&H->wv, 2, (char *)L->wqkv + (size_t)((d + kv) * d) * e, kv, d);
        return 3;
    case 1:
        out[0] = GL(&H->wo, 3, L->wo, d, d);
        return 1;
    case 2:
        out[0] = GL(&H->w1, 4, L->w13, h, d);
        out[1] = GL(&H->w3, 6, (char *)L->w13 + (size_t)(h * d) * e, h, d);
        return 2;
    default:
        out[0] = GL(&H->w2, 5, L->w2, d, h);
        return 1;
    }
#undef GL
}

typedef struct {
    float *xcal;              /* [n_seqs * seq_len][dim] residual stream */
    double *H, *Hw, *Xd;      /* Hessian, its work copy, double scratch */
    float *W, *Q, *R;         /* one linear: float weights, GPTQ result, RTN */
    float **newq;             /* host results, by linear index */
    int nlin;
} calib_work;

static void work_free(calib_work *w)
{
    cudaFree(w->xcal), cudaFree(w->H), cudaFree(w->Hw), cudaFree(w->Xd);
    cudaFree(w->W), cudaFree(w->Q), cudaFree(w->R);
    if (w->newq)
        for (int i = 0; i < w->nlin; i++)
            free(w->newq[i]);
    free(w->newq);
}

/* Runs layer l over every calibration batch from xcal; advance: write the
 * layer's output back into xcal. */
static int layer_pass(qsur_gpu_model *g, calib_work *w, int l, int n_seqs, int T, int advance,
                      qsur_error *err)
{
    const size_t row = (size_t)g->cfg.dim * sizeof(float);
    int rc = QSUR_OK;
    for (int first = 0; first < n_seqs && !rc; first += g->max_batch) {
        int B = n_seqs - first < g->max_batch ? n_seqs - first : g->max_batch;
        float *x = w->xcal + (size_t)first * T * g->cfg.dim;
        size_t bytes = (size_t)B * T * row;
        rc = qsur_gpu_check(cudaMemcpyAsync(g->x, x, bytes, cudaMemcpyDeviceToDevice, g->ctx.stream), "calib", err);
        if (!rc)
            rc = qsur_gpu_layer_forward(g, l, B, T, err);
        if (!rc && advance)
            rc = qsur_gpu_check(cudaMemcpyAsync(x, g->x, bytes, cudaMemcpyDeviceToDevice, g->ctx.stream),
                                "calib", err);
    }
    return rc;
}

/* The float32 weights of host linear l (mapped in their dtype, or float) into W. */
static int upload_host_weights(float *W, const qsur_llama_linear *l, qsur_error *err)
{
    const float *v = NULL;
    float *tmp = NULL;
    int rc = qsur_llama_linear_weights_alloc(l, &v, &tmp, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(W, v, (size_t)(l->rows * l->cols) * 4, cudaMemcpyHostToDevice),
                            "W", err);
    free(tmp);
    return rc;
}

/* GPTQ of one linear with the group's H; its result goes to the GPU weights,
 * to w->newq (host model) and to rows. */
static int quantize_linear(qsur_gpu_model *g, qsur_gpu_solver *sol, calib_work *w, const group_linear *gl,
                           const qsur_quant_spec *spec, const qsur_gptq_opts *o,
                           qsur_llama_wquant_row *rows, qsur_error *err)
{
    const int64_t m = gl->rows, n = gl->cols;
    const size_t mn = (size_t)(m * n);
    cudaStream_t st = g->ctx.stream;
    qsur_quant_spec q = qsur_llama_linear_spec(spec, n);
    int rc;
    if (gl->host)
        rc = upload_host_weights(w->W, gl->host, err);
    else
        qsur_cu_convert(w->W, 0, gl->dev, g->bf16 ? 1 : 0, (int64_t)mn, st), rc = QSUR_OK;
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpyAsync(w->Hw, w->H, (size_t)(n * n) * 8, cudaMemcpyDeviceToDevice, st),
                            "H", err);
    if (rows && !rc) { /* RTN of the float weights, for the report */
        qsur_cu_quant cq = {q.bits, q.symmetric, (int)q.gran, q.group, q.clip, q.clip_search};
        qsur_cu_quant_cast(NULL, 0, w->R, w->W, m, n, &cq, st);
    }
    if (!rc)
        rc = qsur_gpu_gptq_run(sol, w->W, m, n, w->Hw, &q, o, w->Q, err);
    if (rows && !rc) {
        qsur_llama_wquant_row *r = &rows[gl->index];
        if (gl->host) /* the report compares with the weights as given (dead columns kept) */
            rc = upload_host_weights(w->W, gl->host, err);
        if (!rc)
            rc = qsur_gpu_output_error(&g->ctx, w->W, w->R, m, n, w->H, &r->rtn_error, err);
        if (!rc)
            rc = qsur_gpu_output_error(&g->ctx, w->W, w->Q, m, n, w->H, &r->error, err);
        r->group = q.gran == QSUR_GRAN_GROUP ? q.group : 0;
        r->outliers = 0;
        if (gl->host)
            snprintf(r->name, sizeof r->name, "%s", gl->host->name);
    }
    if (!rc) /* the GPU model now runs the quantized weights */
        qsur_cu_convert(gl->dev, g->bf16, w->Q, 0, (int64_t)mn, st);
    if (!rc && gl->host) {
        float *Qh = qsur_alloc(mn, sizeof(float));
        if (!Qh)
            return qsur_fail(err, QSUR_ERR_NOMEM, "gpu gptq model: out of memory for %s", gl->host->name);
        w->newq[gl->index] = Qh;
        rc = qsur_gpu_check(cudaMemcpy(Qh, w->Q, mn * 4, cudaMemcpyDeviceToHost), "Q", err);
    }
    return rc;
}

static int check_args(const qsur_gpu_model *g, const qsur_llama *m, const qsur_quant_spec *spec,
                      const qsur_gptq_opts *o, qsur_error *err)
{
    if (spec->bits >= 16)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq model: the weight quantizer is off (w16)");
    if (o->act_order || spec->clip_search)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq model: act order and clip search run on the CPU only");
    char why[160];
    if (!qsur_gpu_quant_supported(spec, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq model: %s", why);
    if (!(o->percdamp >= 0.0) || o->block < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq model: percdamp=%g block=%d", o->percdamp, o->block);
    if (m && memcmp(&m->cfg, &g->cfg, sizeof m->cfg))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq model: the GPU model was made for another shape");
    int64_t widths[2] = {g->cfg.dim, g->cfg.hidden_dim};
    for (int i = 0; i < 2; i++) {
        qsur_quant_spec q = qsur_llama_linear_spec(spec, widths[i]);
        int rc = qsur_quant_validate(&q, widths[i], err);
        if (rc)
            return rc;
    }
    return QSUR_OK;
}

static int alloc_work(qsur_gpu_model *g, calib_work *w, int64_t ntok, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t wide = c->hidden_dim > c->dim ? c->hidden_dim : c->dim, N = (int64_t)g->max_batch * g->max_seq;
    int64_t big = (int64_t)c->hidden_dim * c->dim;
    int rc = qsur_gpu_malloc((void **)&w->xcal, (size_t)(ntok * c->dim) * 4, "calibration stream", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&w->H, (size_t)(wide * wide) * 8, "Hessian", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&w->Hw, (size_t)(wide * wide) * 8, "Hessian", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&w->Xd, (size_t)(N * wide) * 8, "capture", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&w->W, (size_t)big * 4, "gptq W", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&w->Q, (size_t)big * 4, "gptq Q", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&w->R, (size_t)big * 4, "gptq RTN", err);
    return rc;
}

int qsur_gpu_gptq_model(qsur_gpu_model *g, qsur_llama *m, const qsur_tokens *calib,
                        int seq_len, int max_seqs, const qsur_quant_spec *spec,
                        const qsur_gptq_opts *opt, qsur_llama_wquant_row *rows,
                        const qsur_progress *prog, qsur_error *err)
{
    qsur_gptq_opts o = opt ? *opt : qsur_gptq_default();
    int rc = check_args(g, m, spec, &o, err);
    int n_seqs = max_seqs, batch = g->max_batch;
    if (!rc)
        rc = qsur_llama_plan_sequences(calib, &seq_len, &n_seqs, &batch, err);
    if (!rc && seq_len > g->max_seq)
        rc = qsur_fail(err, QSUR_ERR_ARG, "gpu gptq model: calibration sequences of %d exceed the "
                       "GPU model's %d positions", seq_len, g->max_seq);
    if (rc)
        return rc;
    const qsur_llama_config *c = &g->cfg;
    calib_work w;
    memset(&w, 0, sizeof w);
    w.nlin = 7 * c->n_layers;
    qsur_gpu_solver sol = {0};
    if (!(w.newq = calloc((size_t)w.nlin, sizeof *w.newq)))
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu gptq model: out of memory");
    rc = alloc_work(g, &w, (int64_t)n_seqs * seq_len, err);
    if (!rc)
        rc = qsur_gpu_solver_init(&sol, &g->ctx, err);
    /* the stream starts as the embeddings of every calibration token */
    for (int first = 0; first < n_seqs && !rc; first += g->max_batch) {
        int B = n_seqs - first < g->max_batch ? n_seqs - first : g->max_batch;
        rc = qsur_gpu_check(cudaMemcpy(g->tok, calib->ids + (int64_t)first * seq_len,
                                       (size_t)B * seq_len * sizeof(int), cudaMemcpyHostToDevice), "tokens", err);
        if (!rc)
            qsur_cu_embed(w.xcal + (size_t)first * seq_len * c->dim, g->tok_embeddings, g->tok,
                          (int64_t)B * seq_len, c->dim, g->ctx.stream);
    }
    static const int points[4] = {QSUR_CAP_ATTN_IN, QSUR_CAP_WO_IN, QSUR_CAP_FFN_IN, QSUR_CAP_W2_IN};
    for (int l = 0; l < c->n_layers && !rc; l++) {
        for (int gi = 0; gi < 4 && !rc; gi++) {
            group_linear gl[3];
            int k = group_of(g, m, l, gi, gl);
            g->cap_point = points[gi];
            g->cap_first = 1;
            g->cap_H = w.H;
            g->cap_Xd = w.Xd;
            rc = layer_pass(g, &w, l, n_seqs, seq_len, 0, err);
            g->cap_point = -1;
            for (int j = 0; j < k && !rc; j++)
                rc = quantize_linear(g, &sol, &w, &gl[j], spec, &o, rows, err);
            char what[48];
            snprintf(what, sizeof what, "gptq layer %d", l);
            if (!rc)
                rc = qsur_progress_tick(prog, (l * 4 + gi + 1.0) / (4.0 * c->n_layers), what, NAN, err);
        }
        if (!rc)
            rc = layer_pass(g, &w, l, n_seqs, seq_len, 1, err);
    }
    if (!rc)
        rc = qsur_gpu_check(cudaDeviceSynchronize(), "gptq model", err);
    if (!rc && m)
        for (int i = 0; i < w.nlin && !rc; i++) { /* packed when on the grid */
            qsur_llama_linear *lin = qsur_llama_linear_at(m, i);
            qsur_quant_spec q = qsur_llama_linear_spec(spec, lin->cols);
            qsur_llama_linear_drop_quant(lin);
            if (w.newq[i])
                rc = qsur_llama_linear_set_quant(lin, w.newq[i], &q, err);
        }
    qsur_gpu_solver_free(&sol);
    work_free(&w);
    return rc;
}
