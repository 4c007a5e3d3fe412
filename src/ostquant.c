/* OSTQuant: parameters, WOMI initialisation, fusion and its chain rule
 * (see qsur/ostquant.h for the layout and the conventions). Training, the loss
 * and the state file are in ostquant_train.c. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/ostquant.h"

const char *qsur_ostquant_loss_name(qsur_ostquant_loss l)
{
    return l == QSUR_OSTQ_CE ? "ce" : l == QSUR_OSTQ_MSE ? "mse" : "kltop";
}

qsur_ostquant_opts qsur_ostquant_default(void)
{
    qsur_ostquant_opts o;
    memset(&o, 0, sizeof o);
    o.steps = 150;
    o.lr = 0.01; /* measured best on stories260K W4A4KV4 (docs/ostquant.md) */
    o.lr_scale = 0.01;
    o.loss = QSUR_OSTQ_KLTOP;
    o.topk = 64;
    o.womi = 1;
    o.learn_scales = 1;
    o.batch = 4;
    o.eval_seqs = 16;
    o.kv_hadamard = 1;
    /* every 10 steps: the selection check's rhythm; ~30 ms per measurement on
     * stories260K against ~4 s of training (docs/ostquant.md) */
    o.qsur_every = 10;
    o.qsur_tokens = 512; /* > hidden_dim of the small models: no singular covariance */
    o.seed = 1;
    o.threads = 1;
    return o;
}

/* Offsets of the log-scale groups inside o->ls. */
static int64_t ls_attn(const qsur_ostquant *o, int l) { return (int64_t)l * o->cfg.dim; }
static int64_t ls_ov(const qsur_ostquant *o, int l)
{
    return (int64_t)o->cfg.n_layers * o->cfg.dim + (int64_t)l * o->cfg.kv_dim;
}
static int64_t ls_ffn(const qsur_ostquant *o, int l)
{
    return (int64_t)o->cfg.n_layers * (o->cfg.dim + o->cfg.kv_dim) + (int64_t)l * o->cfg.dim;
}
static int64_t ls_ud(const qsur_ostquant *o, int l)
{
    return (int64_t)o->cfg.n_layers * (2 * o->cfg.dim + o->cfg.kv_dim) +
           (int64_t)l * o->cfg.hidden_dim;
}
/* [L][kv_dim / 2] after ud, present only with learn_qk: one scale per RoPE
 * pair of k (and of q, divided), so q.k is unchanged through RoPE;
 * [L][kv_dim] with code_smooth (one per row). */
static int64_t ls_qk(const qsur_ostquant *o, int l)
{
    return (int64_t)o->cfg.n_layers * (2 * o->cfg.dim + o->cfg.kv_dim + o->cfg.hidden_dim) +
           (int64_t)l * (o->opts.code_smooth ? o->cfg.kv_dim : o->cfg.kv_dim / 2);
}

/* The S_qk scale of row kr of wk: one per RoPE pair (2i, 2i+1), or with
 * code_smooth one per row (the OSTQuant code's per-channel S_qk). */
static int64_t qk_index(const qsur_ostquant *o, int64_t kr)
{
    return o->opts.code_smooth ? kr : kr / 2;
}

/* Rows of wq (rows = n_heads * hs) and wk (n_kv_heads * hs): row r of wk times
 * its scale, row of wq of head h divided by the scale of its kv head's row. */
static void qk_rows(const qsur_ostquant *o, const float *s, float *wq, float *wk)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    int group = c->n_heads / c->n_kv_heads;
    for (int64_t r = 0; r < (int64_t)c->n_kv_heads * hs; r++)
        for (int64_t j = 0; j < d; j++)
            wk[r * d + j] *= s[qk_index(o, r)];
    for (int64_t r = 0; r < (int64_t)c->n_heads * hs; r++) {
        int64_t kr = (r / hs / group) * hs + r % hs; /* the matching row of the kv head */
        for (int64_t j = 0; j < d; j++)
            wq[r * d + j] /= s[qk_index(o, kr)];
    }
}

static int64_t r_ov_size(const qsur_ostquant *o)
{
    return (int64_t)o->cfg.n_layers * o->cfg.n_kv_heads * o->cfg.head_size * o->cfg.head_size;
}

void qsur_ostquant_free(qsur_ostquant *o)
{
    if (!o)
        return;
    int L = o->cfg.n_layers;
    free(o->E);
    free(o->C);
    if (o->A)
        for (int i = 0; i < 5 * L; i++)
            free(o->A[i]);
    free(o->A);
    if (o->Wout)
        for (int i = 0; i < 2 * L; i++)
            free(o->Wout[i]);
    free(o->Wout);
    free(o->r_res);
    free(o->r_ov);
    free(o->ls);
    free(o->best_r_res);
    free(o->best_r_ov);
    free(o->best_ls);
    free(o->cur_r_res);
    free(o->cur_r_ov);
    free(o->cur_ls);
    qsur_stiefel_adam_free(o->opt_res);
    if (o->opt_ov)
        for (int i = 0; i < L * o->cfg.n_kv_heads; i++)
            qsur_stiefel_adam_free(o->opt_ov[i]);
    free(o->opt_ov);
    qsur_adam_free(o->opt_ls);
    free(o->log);
    for (int i = 0; i < o->nqlog; i++)
        qsur_llama_qsur_free(&o->qlog[i]);
    free(o->qlog);
    qsur_llama_rotations_free(o->rot);
    qsur_hadamard_plan_free(o->ud_had);
    qsur_llama_free(o->fm);
    free(o);
}

/* W diag(g): a copy of the rows x cols weight with column j times g[j]. */
static float *fold_gain(const float *w, int64_t rows, int64_t cols, const float *g)
{
    float *a = qsur_alloc((size_t)(rows * cols), sizeof(float));
    if (a)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++)
                a[i * cols + j] = w[i * cols + j] * (g ? g[j] : 1.0f);
    return a;
}

/* Sigma += G / ||W||^2 with G = W^T W (cols_side) or W W^T, W rows x cols, in double. */
static void gram_add(double *sigma, int64_t n, const float *w, int64_t rows, int64_t cols,
                     int64_t ld, int cols_side)
{
    double fro = 0;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            fro += (double)w[i * ld + j] * w[i * ld + j];
    if (fro <= 0)
        return;
    double *wd = malloc((size_t)(rows * cols) * sizeof(double));
    if (!wd)
        return;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            wd[i * cols + j] = w[i * ld + j];
    if (cols_side) /* n = cols: Sigma += W^T W */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)rows, 1.0 / fro, wd,
                    (int)cols, wd, (int)cols, 1.0, sigma, (int)n);
    else /* n = rows: Sigma += W W^T */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)cols, 1.0 / fro, wd,
                    (int)cols, wd, (int)cols, 1.0, sigma, (int)n);
    free(wd);
}

/* Sigma += (W - mean)^T (W - mean) over the rows of W (rows x cols, ld): the
 * centred covariance of the rows (up to a factor), in double. */
static void cov_add(double *sigma, const float *w, int64_t rows, int64_t cols, int64_t ld)
{
    double *mu = calloc((size_t)cols, sizeof(double)), *wd = malloc((size_t)(rows * cols) * sizeof(double));
    if (mu && wd) {
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++)
                mu[j] += w[i * ld + j] / (double)rows;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++)
                wd[i * cols + j] = w[i * ld + j] - mu[j];
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)cols, (int)rows, 1.0, wd, (int)cols, wd,
                    (int)cols, 1.0, sigma, (int)cols);
    }
    free(mu);
    free(wd);
}

/* R = Q H (WOMI) from Sigma, or R = H when sigma is NULL. klt: the OSTQuant
 * code's variant (eigenvectors in ascending order, H with random signs D H). */
static int womi_rotation(double *sigma, int64_t n, uint64_t seed, int klt, int rsign, double *R, qsur_error *err)
{
    qsur_hadamard_plan *p = NULL;
    qsur_hadamard_opts ho = {klt || rsign, seed};
    int rc = qsur_hadamard_plan_new(&p, n, &ho, err);
    if (rc)
        return rc;
    float *Hf = malloc((size_t)(n * n) * sizeof(float));
    double *H = malloc((size_t)(n * n) * sizeof(double));
    double *ev = malloc((size_t)n * sizeof(double)), *Q = malloc((size_t)(n * n) * sizeof(double));
    if (!Hf || !H || !ev || !Q) {
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "womi: out of memory for %lld x %lld", (long long)n,
                       (long long)n);
        goto done;
    }
    qsur_hadamard_plan_dense(p, Hf);
    for (int64_t i = 0; i < n * n; i++)
        H[i] = Hf[i];
    if (!sigma) {
        memcpy(R, H, (size_t)(n * n) * sizeof(double));
        goto done;
    }
    /* Row-major dsyevd: eigenvectors in the columns, eigenvalues ascending. */
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)n, sigma,
                                     (lapack_int)n, ev);
    if (info != 0) {
        rc = qsur_fail(err, QSUR_ERR_NUMERIC, "womi: dsyevd info %d on the %lld x %lld weight "
                       "covariance", (int)info, (long long)n, (long long)n);
        goto done;
    }
    for (int64_t i = 0; i < n; i++) /* descending order: column j of Q = column n-1-j */
        for (int64_t j = 0; j < n; j++)
            Q[i * n + j] = sigma[i * n + (klt ? j : n - 1 - j)];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0, Q, (int)n, H,
                (int)n, 0.0, R, (int)n);
done:
    free(Hf);
    free(H);
    free(ev);
    free(Q);
    qsur_hadamard_plan_free(p);
    return rc;
}

static int init_rotations(qsur_ostquant *o, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size, kv = c->kv_dim, hd = c->hidden_dim;
    int L = c->n_layers, group = c->n_heads / c->n_kv_heads, rc;
    double *sigma = calloc((size_t)(d * d), sizeof(double));
    if (!sigma)
        return qsur_fail(err, QSUR_ERR_NOMEM, "womi: out of memory");
    int klt = o->opts.womi && o->opts.klt;
    if (klt) { /* KLT: centred covariance of all input-side weight rows stacked */
        int64_t rows[5] = {d, kv, kv, hd, hd}, total = 0;
        for (int l = 0; l < L; l++)
            for (int i = 0; i < 5; i++)
                total += rows[i];
        float *all = malloc((size_t)(total * d) * sizeof(float));
        if (!all) {
            free(sigma);
            return qsur_fail(err, QSUR_ERR_NOMEM, "klt: out of memory");
        }
        int64_t at = 0;
        for (int l = 0; l < L; l++)
            for (int i = 0; i < 5; i++) {
                memcpy(all + at * d, o->A[5 * l + i], (size_t)(rows[i] * d) * sizeof(float));
                at += rows[i];
            }
        cov_add(sigma, all, total, d, d);
        free(all);
    } else if (o->opts.womi) {
        int64_t rows[5] = {d, kv, kv, hd, hd};
        for (int l = 0; l < L; l++) {
            for (int i = 0; i < 5; i++)
                gram_add(sigma, d, o->A[5 * l + i], rows[i], d, d, 1);
            gram_add(sigma, d, o->Wout[2 * l], d, d, d, 0);
            gram_add(sigma, d, o->Wout[2 * l + 1], d, hd, hd, 0);
        }
    }
    int rsign = !o->opts.womi && o->opts.rand_signs;
    rc = womi_rotation(o->opts.womi ? sigma : NULL, d, o->opts.seed, klt, rsign, o->r_res, err);
    free(sigma);
    if (rc)
        return rc;
    double *sg = malloc((size_t)(hs * hs) * sizeof(double));
    if (!sg)
        return qsur_fail(err, QSUR_ERR_NOMEM, "womi: out of memory");
    for (int l = 0; l < L && !rc; l++)
        for (int g = 0; g < c->n_kv_heads && !rc; g++) {
            memset(sg, 0, (size_t)(hs * hs) * sizeof(double));
            if (klt) { /* the wo column blocks of the group's heads, rows stacked, centred */
                float *blk = malloc((size_t)(d * group * hs) * sizeof(float));
                if (!blk) {
                    rc = qsur_fail(err, QSUR_ERR_NOMEM, "klt: out of memory");
                    break;
                }
                for (int64_t i = 0; i < d; i++)
                    for (int h = 0; h < group; h++)
                        memcpy(blk + (i * group + h) * hs, o->Wout[2 * l] + i * d + (size_t)(g * group + h) * hs,
                               (size_t)hs * sizeof(float));
                cov_add(sg, blk, d * group, hs, hs);
                free(blk);
            } else {
                const float *wv = o->A[5 * l + 2] + (size_t)g * hs * d; /* hs x d */
                gram_add(sg, hs, wv, hs, d, d, 0);
                for (int h = g * group; h < (g + 1) * group; h++) /* wo columns: d x hs, ld = d */
                    gram_add(sg, hs, o->Wout[2 * l] + (size_t)h * hs, d, hs, d, 1);
            }
            int64_t at = (int64_t)l * c->n_kv_heads + g;
            /* random signs: R_res has seed, R_ov number i seed + 1 + i */
            rc = womi_rotation(o->opts.womi ? sg : NULL, hs, rsign ? o->opts.seed + 1 + (uint64_t)at : o->opts.seed,
                               klt, rsign, o->r_ov + at * hs * hs, err);
        }
    free(sg);
    return rc;
}

/* Long on purpose: option checks, then the state's arrays, rotations (init_rotations), optimisers
   and online Hadamard plans allocated in order, with one failure path. */
int qsur_ostquant_new(qsur_ostquant **out, const qsur_llama *base, const qsur_ostquant_opts *opts,
                      const qsur_quant_spec *wspec, const qsur_quant_spec *aspec,
                      const qsur_quant_spec *kvspec, qsur_error *err)
{
    *out = NULL;
    const qsur_llama_config *bc = &base->cfg;
    if (opts->steps < 0 || opts->batch < 1 || opts->topk < 1 || !(opts->lr >= 0) || !(opts->clip_grad >= 0) ||
        !(opts->lr_scale >= 0) || opts->eval_every < 0 || opts->qsur_every < 0 || opts->qsur_tokens < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant: bad options (steps >= 0, batch >= 1, "
                         "topk >= 1, lr >= 0, eval/qsur every >= 0, qsur tokens >= 1)");
    int rc;
    if ((rc = qsur_quant_validate(wspec, bc->dim, err)) || (rc = qsur_quant_validate(aspec, bc->dim, err)) ||
        (rc = qsur_quant_validate(kvspec, bc->head_size, err)))
        return rc;
    qsur_ostquant *o = calloc(1, sizeof *o);
    if (!o)
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory");
    o->opts = *opts;
    o->qsur_opt = qsur_options_default();
    o->wspec = *wspec;
    o->aspec = *aspec;
    o->kvspec = *kvspec;
    o->aspec.ste_const = o->kvspec.ste_const = opts->ste_const;
    o->cfg = *bc;
    o->cfg.shared_classifier = 0;
    o->base_hash = qsur_ostquant_base_hash(base);
    qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, V = c->vocab_size, hs = c->head_size;
    int L = c->n_layers;
    o->n_ls = (int64_t)L * (2 * d + c->kv_dim + c->hidden_dim +
                            (opts->learn_qk ? (opts->code_smooth ? c->kv_dim : c->kv_dim / 2) : 0));
    o->E = fold_gain(base->tok_embeddings, V, d, NULL);
    o->C = fold_gain(base->output.w, V, d, base->norm);
    o->A = calloc((size_t)(5 * L), sizeof(float *));
    o->Wout = calloc((size_t)(2 * L), sizeof(float *));
    o->r_res = malloc((size_t)(d * d) * sizeof(double));
    o->r_ov = malloc((size_t)r_ov_size(o) * sizeof(double));
    o->ls = calloc((size_t)o->n_ls, sizeof(double));
    o->best_r_res = malloc((size_t)(d * d) * sizeof(double));
    o->best_r_ov = malloc((size_t)r_ov_size(o) * sizeof(double));
    o->best_ls = calloc((size_t)o->n_ls, sizeof(double));
    o->cur_r_res = malloc((size_t)(d * d) * sizeof(double));
    o->cur_r_ov = malloc((size_t)r_ov_size(o) * sizeof(double));
    o->cur_ls = calloc((size_t)o->n_ls, sizeof(double));
    o->opt_ov = calloc((size_t)(L * c->n_kv_heads), sizeof *o->opt_ov);
    int bad = !o->E || !o->C || !o->A || !o->Wout || !o->r_res || !o->r_ov || !o->ls ||
              !o->best_r_res || !o->best_r_ov || !o->best_ls || !o->opt_ov || !o->cur_r_res ||
              !o->cur_r_ov || !o->cur_ls;
    for (int l = 0; !bad && l < L; l++) {
        const qsur_llama_layer *B = &base->layers[l];
        o->A[5 * l + 0] = fold_gain(B->wq.w, B->wq.rows, d, B->attention_norm);
        o->A[5 * l + 1] = fold_gain(B->wk.w, B->wk.rows, d, B->attention_norm);
        o->A[5 * l + 2] = fold_gain(B->wv.w, B->wv.rows, d, B->attention_norm);
        o->A[5 * l + 3] = fold_gain(B->w1.w, B->w1.rows, d, B->ffn_norm);
        o->A[5 * l + 4] = fold_gain(B->w3.w, B->w3.rows, d, B->ffn_norm);
        o->Wout[2 * l] = fold_gain(B->wo.w, d, d, NULL);
        o->Wout[2 * l + 1] = fold_gain(B->w2.w, d, c->hidden_dim, NULL);
        for (int i = 0; i < 5; i++)
            bad |= !o->A[5 * l + i];
        bad |= !o->Wout[2 * l] || !o->Wout[2 * l + 1];
    }
    if (bad) {
        qsur_ostquant_free(o);
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for the folded model");
    }
    if ((rc = init_rotations(o, err)) || (rc = qsur_stiefel_adam_new(&o->opt_res, d, err)) ||
        (rc = qsur_adam_new(&o->opt_ls, o->n_ls, err))) {
        qsur_ostquant_free(o);
        return rc;
    }
    o->opt_res->canonical = opts->radam;
    for (int i = 0; i < L * c->n_kv_heads; i++) {
        if ((rc = qsur_stiefel_adam_new(&o->opt_ov[i], hs, err))) {
            qsur_ostquant_free(o);
            return rc;
        }
        o->opt_ov[i]->canonical = opts->radam;
    }
    memcpy(o->best_r_res, o->r_res, (size_t)(d * d) * sizeof(double));
    memcpy(o->best_r_ov, o->r_ov, (size_t)r_ov_size(o) * sizeof(double));
    o->best_ema = INFINITY;
    o->ema = NAN;
    int qk = kvspec->bits < 16 && opts->kv_hadamard;
    /* The online Hadamard before w2 serves activation quantization: a
     * weight-only run (a16) fuses everything offline, so its model runs in any
     * Llama runtime (issue 12), unless online_w2 keeps it (the OSTQuant code
     * does: it also flattens w2's input side for the weight quantizer). */
    int w2 = aspec->bits < 16 || opts->online_w2;
    qsur_hadamard_opts ho = {0, opts->seed}; /* the plan the online w2 Hadamard would use */
    if ((rc = qsur_llama_rotations_new(&o->rot, c, w2, qk, opts->seed, err)) ||
        (rc = qsur_llama_new(&o->fm, c, err)) ||
        (opts->code_smooth && !w2 && (rc = qsur_hadamard_plan_new(&o->ud_had, c->hidden_dim, &ho, err)))) {
        qsur_ostquant_free(o);
        return rc;
    }
    *out = o;
    return QSUR_OK;
}

/* ---- fusion ---------------------------------------------------------------- */

static void to_float(const double *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)x[i];
}

/* dst[rows][d] = A R, then column j times s[j] (s may be NULL). */
static void input_side(const float *A, int64_t rows, int64_t d, const float *R, const float *s,
                       float *dst)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)d, (int)d, 1.0f, A, (int)d,
                R, (int)d, 0.0f, dst, (int)d);
    if (s)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < d; j++)
                dst[i * d + j] *= s[j];
}

/* w[rows][cols]: column j times s[j]. */
static void scale_columns(float *w, int64_t rows, int64_t cols, const float *s)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            w[i * cols + j] *= s[j];
}

/* Scratch of fuse/grads: float copies of the rotations and scales. */
typedef struct {
    float *R, *Rov, *s, *tmp, *tmp2;
} fuse_scratch;

static int scratch_new(const qsur_ostquant *o, fuse_scratch *f)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hd = c->hidden_dim, big = (hd > d ? hd : d) * (c->vocab_size > d ? c->vocab_size : d);
    f->R = malloc((size_t)(d * d) * sizeof(float));
    f->Rov = malloc((size_t)r_ov_size(o) * sizeof(float));
    f->s = malloc((size_t)o->n_ls * sizeof(float));
    f->tmp = malloc((size_t)big * sizeof(float));
    f->tmp2 = malloc((size_t)big * sizeof(float));
    if (!f->R || !f->Rov || !f->s || !f->tmp || !f->tmp2)
        return -1;
    to_float(o->r_res, f->R, d * d);
    to_float(o->r_ov, f->Rov, r_ov_size(o));
    for (int64_t i = 0; i < o->n_ls; i++)
        f->s[i] = (float)exp(o->ls[i]);
    return 0;
}

static void scratch_free(fuse_scratch *f)
{
    free(f->R);
    free(f->Rov);
    free(f->s);
    free(f->tmp);
    free(f->tmp2);
}

/* wv'' (kv x d, = A_v R S_attn) -> wv' rows of group g: S_g^-1 R_g^T wv''_g. */
static void ov_rows(const qsur_ostquant *o, const fuse_scratch *f, int l, const float *vin,
                    float *vout)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    const float *s = f->s + ls_ov(o, l);
    for (int g = 0; g < c->n_kv_heads; g++) {
        const float *Rg = f->Rov + ((size_t)l * c->n_kv_heads + g) * hs * hs;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)hs, (int)d, (int)hs, 1.0f, Rg,
                    (int)hs, vin + (size_t)g * hs * d, (int)d, 0.0f, vout + (size_t)g * hs * d,
                    (int)d);
        for (int64_t i = 0; i < hs; i++)
            for (int64_t j = 0; j < d; j++)
                vout[((size_t)g * hs + i) * d + j] /= s[g * hs + i];
    }
}

static void fuse_with(const qsur_ostquant *o, const fuse_scratch *f, qsur_llama *fm)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hd = c->hidden_dim, kv = c->kv_dim, hs = c->head_size, V = c->vocab_size;
    int group = c->n_heads / c->n_kv_heads;
    input_side(o->E, V, d, f->R, NULL, fm->tok_embeddings);
    input_side(o->C, V, d, f->R, NULL, fm->output.w);
    for (int64_t j = 0; j < d; j++)
        fm->norm[j] = 1.0f;
    for (int l = 0; l < c->n_layers; l++) {
        qsur_llama_layer *L = &fm->layers[l];
        const float *sa = f->s + ls_attn(o, l), *so = f->s + ls_ov(o, l);
        const float *sf = f->s + ls_ffn(o, l), *su = f->s + ls_ud(o, l);
        for (int64_t j = 0; j < d; j++) {
            L->attention_norm[j] = 1.0f / sa[j];
            L->ffn_norm[j] = 1.0f / sf[j];
        }
        input_side(o->A[5 * l], d, d, f->R, sa, L->wq.w);
        input_side(o->A[5 * l + 1], kv, d, f->R, sa, L->wk.w);
        if (o->opts.learn_qk)
            qk_rows(o, f->s + ls_qk(o, l), L->wq.w, L->wk.w);
        input_side(o->A[5 * l + 2], kv, d, f->R, sa, f->tmp);
        ov_rows(o, f, l, f->tmp, L->wv.w);
        /* wo' = R^T wo, then column block of head h times R_g S_g */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0f, f->R, (int)d,
                    o->Wout[2 * l], (int)d, 0.0f, f->tmp, (int)d);
        for (int h = 0; h < c->n_heads; h++) {
            int g = h / group;
            const float *Rg = f->Rov + ((size_t)l * c->n_kv_heads + g) * hs * hs;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)hs, (int)hs, 1.0f,
                        f->tmp + (size_t)h * hs, (int)d, Rg, (int)hs, 0.0f, L->wo.w + (size_t)h * hs,
                        (int)d);
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j < hs; j++)
                    L->wo.w[i * d + h * hs + j] *= so[g * hs + j];
        }
        input_side(o->A[5 * l + 3], hd, d, f->R, sf, L->w1.w);
        input_side(o->A[5 * l + 4], hd, d, f->R, sf, L->w3.w);
        for (int64_t i = 0; i < hd; i++)
            for (int64_t j = 0; j < d; j++)
                L->w3.w[i * d + j] /= su[i];
        /* w2' = (R^T w2) S_ud H (exact), or (R^T w2) H S_ud with code_smooth:
         * the OSTQuant code scales the Hadamard-fused w2, which with the online
         * Hadamard is not an equivalence (g S^-1 H S H^T w2^T) */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)hd, (int)d, 1.0f, f->R, (int)d,
                    o->Wout[2 * l + 1], (int)hd, 0.0f, L->w2.w, (int)hd);
        if (!o->opts.code_smooth)
            scale_columns(L->w2.w, d, hd, su);
        if (o->rot->w2 || o->ud_had)
            qsur_hadamard_plan_apply(o->rot->w2 ? o->rot->w2 : o->ud_had, L->w2.w, d, NULL, NULL);
        if (o->opts.code_smooth)
            scale_columns(L->w2.w, d, hd, su);
        if (o->ud_had)
            qsur_hadamard_plan_apply_transpose(o->ud_had, L->w2.w, d, NULL, NULL);
        /* the float weights changed: a stale quantized copy must not be used */
        qsur_llama_linear *lins[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        for (int i = 0; i < 7; i++) {
            qsur_llama_linear_drop_quant(lins[i]);
        }
    }
}

void qsur_ostquant_fuse_into(const qsur_ostquant *o, qsur_llama *fm)
{
    fuse_scratch f;
    if (scratch_new(o, &f) == 0)
        fuse_with(o, &f, fm);
    scratch_free(&f);
}

int qsur_ostquant_fuse(const qsur_ostquant *o, qsur_llama **model, qsur_llama_rotations **rot,
                       qsur_error *err)
{
    *model = NULL;
    *rot = NULL;
    qsur_llama *m = NULL;
    qsur_llama_rotations *r = NULL;
    int rc = qsur_llama_new(&m, &o->cfg, err);
    if (!rc)
        rc = qsur_llama_rotations_new(&r, &o->cfg, o->rot->w2 != NULL, o->rot->qk != NULL,
                                      o->opts.seed, err);
    fuse_scratch f;
    if (!rc && scratch_new(o, &f) != 0)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "ostquant fuse: out of memory");
    if (rc) {
        qsur_llama_free(m);
        qsur_llama_rotations_free(r);
        return rc;
    }
    fuse_with(o, &f, m);
    scratch_free(&f);
    m->hooks = qsur_llama_hooks_none();
    m->hooks.act = o->aspec;
    m->hooks.act_wo = o->aospec;
    m->hooks.kv = o->kvspec;
    qsur_llama_rotations_attach(r, m);
    *model = m;
    *rot = r;
    return QSUR_OK;
}

/* ---- chain rule --------------------------------------------------------------- */

/* For dst = (A R) diag(s): dls_j += sum_i dW_ij W_ij; dR += A^T (dW diag(s)).
 * dW is consumed (scaled in place). */
static void input_side_grad(const float *A, int64_t rows, int64_t d, const float *W, float *dW,
                            const float *s, float *dR, double *dls)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < d; j++) {
            dls[j] += (double)dW[i * d + j] * W[i * d + j];
            dW[i * d + j] *= s[j];
        }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)rows, 1.0f, A, (int)d, dW,
                (int)d, 1.0f, dR, (int)d);
}

/* w = Z S (columns scaled): dls_j += sum_i dw_ij w_ij, dw <- dw S = dZ (in place). */
static void ud_grad(const float *w, float *dw, int64_t rows, int64_t cols, const float *s, double *dls)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            size_t at = (size_t)(i * cols + j);
            dls[j] += (double)dw[at] * w[at];
            dw[at] *= s[j];
        }
}

/* The q/k pair scales' part of the chain rule for wq (is_k 0) or wk (1): W the
 * fused rows, dW their gradient, turned into the gradient w.r.t. the rows
 * before the pair scaling (in place), Wpp the rows before it; dls += the
 * log-scale gradients. */
static void qk_rows_grad(const qsur_ostquant *o, const float *s, const float *W, float *dW, float *Wpp,
                         double *dls, int is_k)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size, rows = (int64_t)(is_k ? c->n_kv_heads : c->n_heads) * hs;
    int group = c->n_heads / c->n_kv_heads;
    for (int64_t r = 0; r < rows; r++) {
        int64_t kr = is_k ? r : (r / hs / group) * hs + r % hs, p = qk_index(o, kr);
        double dot = 0;
        for (int64_t j = 0; j < d; j++) {
            dot += (double)dW[r * d + j] * W[r * d + j];
            dW[r * d + j] = is_k ? dW[r * d + j] * s[p] : dW[r * d + j] / s[p];
            Wpp[r * d + j] = is_k ? W[r * d + j] / s[p] : W[r * d + j] * s[p];
        }
        dls[p] += is_k ? dot : -dot;
    }
}

/* Long on purpose: the chain rule through each fused weight, one transform after another in the
   order the fusion applied them; the per-weight pieces share one scratch. */
int qsur_ostquant_param_grads(const qsur_ostquant *o, const qsur_llama *fm,
                              const qsur_llama_grads *g, double *d_r_res, double *d_r_ov,
                              double *d_ls, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hd = c->hidden_dim, kv = c->kv_dim, hs = c->head_size, V = c->vocab_size;
    int group = c->n_heads / c->n_kv_heads;
    fuse_scratch f;
    float *dR = calloc((size_t)(d * d), sizeof(float));
    float *dRov = calloc((size_t)(hs * hs), sizeof(float));
    float *dW = malloc((size_t)((hd > V ? hd : V) * (d > hd ? d : hd)) * sizeof(float));
    if (scratch_new(o, &f) != 0 || !dR || !dRov || !dW) {
        scratch_free(&f);
        free(dR);
        free(dRov);
        free(dW);
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant gradients: out of memory");
    }
    memset(d_ls, 0, (size_t)o->n_ls * sizeof(double));
    memset(d_r_ov, 0, (size_t)r_ov_size(o) * sizeof(double));
    /* E' = E R, C' = C R: dR += E^T dE' + C^T dC' */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)V, 1.0f, o->E, (int)d,
                g->d_tok_embeddings, (int)d, 1.0f, dR, (int)d);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)V, 1.0f, o->C, (int)d,
                g->d_output, (int)d, 1.0f, dR, (int)d);
    for (int l = 0; l < c->n_layers; l++) {
        const qsur_llama_layer *L = &fm->layers[l];
        const qsur_llama_layer_grads *G = &g->layers[l];
        const float *sa = f.s + ls_attn(o, l), *so = f.s + ls_ov(o, l);
        const float *sf = f.s + ls_ffn(o, l), *su = f.s + ls_ud(o, l);
        double *da = d_ls + ls_attn(o, l), *dov = d_ls + ls_ov(o, l);
        double *dff = d_ls + ls_ffn(o, l), *dud = d_ls + ls_ud(o, l);
        /* norm gains 1/s = e^-ls: d/dls = -gain */
        for (int64_t j = 0; j < d; j++) {
            da[j] -= (double)G->d_attention_norm[j] * L->attention_norm[j];
            dff[j] -= (double)G->d_ffn_norm[j] * L->ffn_norm[j];
        }
        /* with S_qk: wq' = wq'' / s (rows), wk' = wk'' s; the rest of the chain
         * sees wq'', wk'' (in f.tmp2) and their gradients */
        int qk = o->opts.learn_qk;
        memcpy(dW, G->d_wq, (size_t)(d * d) * sizeof(float));
        if (qk)
            qk_rows_grad(o, f.s + ls_qk(o, l), L->wq.w, dW, f.tmp2, d_ls + ls_qk(o, l), 0);
        input_side_grad(o->A[5 * l], d, d, qk ? f.tmp2 : L->wq.w, dW, sa, dR, da);
        memcpy(dW, G->d_wk, (size_t)(kv * d) * sizeof(float));
        if (qk)
            qk_rows_grad(o, f.s + ls_qk(o, l), L->wk.w, dW, f.tmp2, d_ls + ls_qk(o, l), 1);
        input_side_grad(o->A[5 * l + 1], kv, d, qk ? f.tmp2 : L->wk.w, dW, sa, dR, da);
        /* wv' = S_o^-1 R_g^T wv''_g with wv'' = A_v R S_a */
        float *vpp = f.tmp, *dvpp = f.tmp2;
        input_side(o->A[5 * l + 2], kv, d, f.R, sa, vpp);
        for (int gg = 0; gg < c->n_kv_heads; gg++) {
            const float *Rg = f.Rov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
            double *dRg = d_r_ov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
            for (int64_t i = 0; i < hs; i++)
                for (int64_t j = 0; j < d; j++) {
                    size_t at = ((size_t)gg * hs + i) * d + (size_t)j;
                    dov[gg * hs + i] -= (double)G->d_wv[at] * L->wv.w[at];
                    dW[at] = G->d_wv[at] / so[gg * hs + i]; /* dZ, Z = R_g^T wv''_g */
                }
            /* dR_g += wv''_g dZ^T;  dwv''_g = R_g dZ */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)hs, (int)hs, (int)d, 1.0f,
                        vpp + (size_t)gg * hs * d, (int)d, dW + (size_t)gg * hs * d, (int)d, 0.0f, dRov,
                        (int)hs);
            for (int64_t i = 0; i < hs * hs; i++)
                dRg[i] += dRov[i];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)hs, (int)d, (int)hs, 1.0f, Rg,
                        (int)hs, dW + (size_t)gg * hs * d, (int)d, 0.0f, dvpp + (size_t)gg * hs * d,
                        (int)d);
        }
        input_side_grad(o->A[5 * l + 2], kv, d, vpp, dvpp, sa, dR, da);
        /* wo'_h = Y_h R_g S_g with Y = R^T wo */
        float *Y = f.tmp, *dY = f.tmp2;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0f, f.R, (int)d,
                    o->Wout[2 * l], (int)d, 0.0f, Y, (int)d);
        for (int h = 0; h < c->n_heads; h++) {
            int gg = h / group;
            const float *Rg = f.Rov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
            double *dRg = d_r_ov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j < hs; j++) {
                    size_t at = (size_t)i * d + (size_t)h * hs + (size_t)j;
                    dov[gg * hs + j] += (double)G->d_wo[at] * L->wo.w[at];
                    dW[at] = G->d_wo[at] * so[gg * hs + j]; /* dU_h, U_h = Y_h R_g */
                }
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)hs, (int)hs, (int)d, 1.0f,
                        Y + (size_t)h * hs, (int)d, dW + (size_t)h * hs, (int)d, 0.0f, dRov, (int)hs);
            for (int64_t i = 0; i < hs * hs; i++)
                dRg[i] += dRov[i];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)hs, (int)hs, 1.0f,
                        dW + (size_t)h * hs, (int)d, Rg, (int)hs, 0.0f, dY + (size_t)h * hs, (int)d);
        }
        /* Y = R^T wo: dR += wo dY^T */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)d, 1.0f,
                    o->Wout[2 * l], (int)d, dY, (int)d, 1.0f, dR, (int)d);
        /* w1' = A1 R S_f;  w3' = S_u^-1 A3 R S_f */
        memcpy(dW, G->d_w1, (size_t)(hd * d) * sizeof(float));
        input_side_grad(o->A[5 * l + 3], hd, d, L->w1.w, dW, sf, dR, dff);
        float *w3pp = f.tmp;
        for (int64_t i = 0; i < hd; i++)
            for (int64_t j = 0; j < d; j++) {
                size_t at = (size_t)(i * d + j);
                dud[i] -= (double)G->d_w3[at] * L->w3.w[at];
                dW[at] = G->d_w3[at] / su[i];
                w3pp[at] = L->w3.w[at] * su[i];
            }
        input_side_grad(o->A[5 * l + 4], hd, d, w3pp, dW, sf, dR, dff);
        /* w2' = (Z S_u) H with Z = R^T w2: d(ZS) = dw2' H^T, ZS = w2' H^T;
         * code_smooth: w2' = (Z H) S_u: d(ZH) = dw2' S_u, dZ = d(ZH) H^T;
         * weight-only code_smooth: w2' = (Z H) S_u H^T: (ZH) S_u = w2' H and
         * its gradient dw2' H, then as before */
        float *zs = f.tmp, *dzs = f.tmp2;
        int code = o->opts.code_smooth, rc = QSUR_OK;
        memcpy(zs, L->w2.w, (size_t)(d * hd) * sizeof(float));
        memcpy(dzs, G->d_w2, (size_t)(d * hd) * sizeof(float));
        if (o->ud_had && !(rc = qsur_hadamard_plan_apply(o->ud_had, zs, d, NULL, err)))
            rc = qsur_hadamard_plan_apply(o->ud_had, dzs, d, NULL, err);
        if (code)
            ud_grad(zs, dzs, d, hd, su, dud);
        if (o->rot->w2 && !code) /* no online w2 rotation in a weight-only run: H = I */
            rc = qsur_hadamard_plan_apply_transpose(o->rot->w2, zs, d, NULL, err);
        if (!rc && (o->rot->w2 || o->ud_had))
            rc = qsur_hadamard_plan_apply_transpose(o->rot->w2 ? o->rot->w2 : o->ud_had, dzs, d, NULL, err);
        if (rc) {
            scratch_free(&f);
            free(dR);
            free(dRov);
            free(dW);
            return rc;
        }
        if (!code)
            ud_grad(zs, dzs, d, hd, su, dud);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)hd, 1.0f,
                    o->Wout[2 * l + 1], (int)hd, dzs, (int)hd, 1.0f, dR, (int)d);
    }
    for (int64_t i = 0; i < d * d; i++)
        d_r_res[i] = dR[i];
    scratch_free(&f);
    free(dR);
    free(dRov);
    free(dW);
    return QSUR_OK;
}
