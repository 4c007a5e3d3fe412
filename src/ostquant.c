/* OSTQuant: parameters, WOMI initialisation, fusion and its chain rule
 * (see qsur/ostquant.h for the layout and the conventions). Training, the loss
 * and the state file are in ostquant_train.c. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama_store.h"
#include "qsur/ostquant.h"
#include "ostquant_fuse.h"

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

void qsur_ostquant_free(qsur_ostquant *o)
{
    if (!o)
        return;
    int L = o->cfg.n_layers;
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
    free(o);
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

/* mu += the rows of W (rows x cols, ld) / total: the mean of rows stacked
 * from several matrices, in the order they are stacked. */
static void cov_mean(double *mu, const float *w, int64_t rows, int64_t cols, int64_t ld, int64_t total)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            mu[j] += w[i * ld + j] / (double)total;
}

/* Sigma += (W - mu)^T (W - mu) over the rows of W (rows x cols, ld): with
 * cov_mean, the centred covariance of rows stacked (up to a factor), in
 * double, one matrix of the stack at a time. */
static int cov_acc(double *sigma, const double *mu, const float *w, int64_t rows, int64_t cols, int64_t ld)
{
    double *wd = malloc((size_t)(rows * cols) * sizeof(double));
    if (!wd)
        return -1;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            wd[i * cols + j] = w[i * ld + j] - mu[j];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)cols, (int)cols, (int)rows, 1.0, wd, (int)cols, wd,
                (int)cols, 1.0, sigma, (int)cols);
    free(wd);
    return 0;
}

/* R = Q H (WOMI) from Sigma, or R = H when sigma is NULL. klt: the OSTQuant
 * code's variant (eigenvectors in ascending order, H with random signs D H);
 * rsign: H with random signs (the code's random_hadamard_matrix). */
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

/* The input sides' folded weights (wq wk wv w1 w3) in the order KLT stacks them. */
static const int input_sides[5] = {QSUR_OSTQ_WQ, QSUR_OSTQ_WK, QSUR_OSTQ_WV, QSUR_OSTQ_W1, QSUR_OSTQ_W3};

/* KLT's Sigma: the centred covariance of every input-side weight row of
 * every layer, stacked: the mean in one pass, the products in a second, each
 * linear read (folded) through the store into buf. */
static int klt_sigma(const qsur_ostquant *o, double *sigma, float *buf)
{
    int64_t d = o->cfg.dim, rows, cols, total = 0;
    int L = o->cfg.n_layers, rc = 0;
    double *mu = calloc((size_t)d, sizeof(double));
    if (!mu)
        return -1;
    for (int l = 0; l < L; l++)
        for (int i = 0; i < 5; i++) {
            qsur_ostq_linear_shape(o, input_sides[i], &rows, &cols);
            total += rows;
        }
    for (int pass = 0; pass < 2 && !rc; pass++)
        for (int l = 0; l < L && !rc; l++)
            for (int i = 0; i < 5 && !rc; i++) {
                qsur_ostq_linear_shape(o, input_sides[i], &rows, &cols);
                qsur_ostq_folded(o, l, input_sides[i], buf);
                if (pass == 0)
                    cov_mean(mu, buf, rows, d, d, total);
                else
                    rc = cov_acc(sigma, mu, buf, rows, d, d);
            }
    free(mu);
    return rc;
}

/* WOMI's Sigma of R_res: the Gram matrices of every input side (W^T W) and
 * output side (wo, w2: W W^T), each over its squared norm. */
static void womi_sigma(const qsur_ostquant *o, double *sigma, float *buf)
{
    int64_t d = o->cfg.dim, rows, cols;
    for (int l = 0; l < o->cfg.n_layers; l++) {
        for (int i = 0; i < 5; i++) {
            qsur_ostq_linear_shape(o, input_sides[i], &rows, &cols);
            qsur_ostq_folded(o, l, input_sides[i], buf);
            gram_add(sigma, d, buf, rows, d, d, 1);
        }
        for (int i = QSUR_OSTQ_WO; i <= QSUR_OSTQ_W2; i += QSUR_OSTQ_W2 - QSUR_OSTQ_WO) {
            qsur_ostq_linear_shape(o, i, &rows, &cols);
            qsur_ostq_folded(o, l, i, buf);
            gram_add(sigma, d, buf, d, cols, cols, 0);
        }
    }
}

/* R_ov of kv head g of a layer from its folded wv (kv x d) and wo (d x d). */
/* R_ov number at (= l * n_kv_heads + g); random signs (rand_signs without
 * WOMI): R_res has seed, R_ov number at seed + 1 + at. */
static int ov_rotation(const qsur_ostquant *o, const float *wv_l, const float *wo_l, int g, int64_t at, int klt,
                       double *sg, double *R, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    int group = c->n_heads / c->n_kv_heads;
    if (!o->opts.womi)
        return o->opts.rand_signs ? womi_rotation(NULL, hs, o->opts.seed + 1 + (uint64_t)at, klt, 1, R, err)
                                  : womi_rotation(NULL, hs, o->opts.seed, klt, 0, R, err);
    memset(sg, 0, (size_t)(hs * hs) * sizeof(double));
    if (klt) { /* the wo column blocks of the group's heads, rows stacked, centred */
        float *blk = malloc((size_t)(d * group * hs) * sizeof(float));
        double *mu = calloc((size_t)hs, sizeof(double));
        int bad = !blk || !mu;
        if (!bad) {
            for (int64_t i = 0; i < d; i++)
                for (int h = 0; h < group; h++)
                    memcpy(blk + (i * group + h) * hs, wo_l + i * d + (size_t)(g * group + h) * hs,
                           (size_t)hs * sizeof(float));
            cov_mean(mu, blk, d * group, hs, hs, d * group);
            bad = cov_acc(sg, mu, blk, d * group, hs, hs);
        }
        free(blk);
        free(mu);
        if (bad)
            return qsur_fail(err, QSUR_ERR_NOMEM, "klt: out of memory");
    } else {
        gram_add(sg, hs, wv_l + (size_t)g * hs * d, hs, d, d, 0); /* rows of head g: hs x d */
        for (int h = g * group; h < (g + 1) * group; h++)         /* wo columns: d x hs, ld = d */
            gram_add(sg, hs, wo_l + (size_t)h * hs, d, hs, d, 1);
    }
    return womi_rotation(sg, hs, o->opts.seed, klt, 0, R, err);
}

/* R_res and every R_ov: WOMI or KLT from the base's weights, or Hadamards. */
static int init_rotations(qsur_ostquant *o, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size, kv = c->kv_dim;
    int klt = o->opts.womi && o->opts.klt, rc = QSUR_OK;
    double *sigma = calloc((size_t)(d * d), sizeof(double)), *sg = malloc((size_t)(hs * hs) * sizeof(double));
    float *buf = malloc((size_t)qsur_ostq_linear_floats(o) * sizeof(float));
    float *wo = malloc((size_t)(d * d) * sizeof(float)), *wv = malloc((size_t)(kv * d) * sizeof(float));
    if (!sigma || !sg || !buf || !wo || !wv || (klt && klt_sigma(o, sigma, buf)))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "womi: out of memory");
    else if (o->opts.womi && !klt)
        womi_sigma(o, sigma, buf);
    if (!rc)
        rc = womi_rotation(o->opts.womi ? sigma : NULL, d, o->opts.seed, klt, !o->opts.womi && o->opts.rand_signs,
                           o->r_res, err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        if (o->opts.womi) {
            qsur_ostq_folded(o, l, QSUR_OSTQ_WV, wv);
            qsur_ostq_folded(o, l, QSUR_OSTQ_WO, wo);
        }
        for (int g = 0; g < c->n_kv_heads && !rc; g++)
            rc = ov_rotation(o, wv, wo, g, (int64_t)l * c->n_kv_heads + g, klt, sg,
                             o->r_ov + ((size_t)l * c->n_kv_heads + g) * hs * hs, err);
    }
    free(sigma);
    free(sg);
    free(buf);
    free(wo);
    free(wv);
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
        !(opts->lr_scale >= 0) || opts->eval_every < 0 || opts->qsur_every < 0 || opts->qsur_tokens < 1 ||
        opts->stabilize < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant: bad options (steps >= 0, batch >= 1, "
                         "topk >= 1, lr >= 0, eval/qsur every >= 0, qsur tokens >= 1, stabilize >= 0)");
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
    o->base = base;
    o->base_hash = qsur_ostquant_base_hash(base);
    qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    int L = c->n_layers;
    o->n_ls = (int64_t)L * (2 * d + c->kv_dim + c->hidden_dim +
                            (opts->learn_qk ? (opts->code_smooth ? c->kv_dim : c->kv_dim / 2) : 0));
    o->r_res = malloc((size_t)(d * d) * sizeof(double));
    o->r_ov = malloc((size_t)qsur_ostq_r_ov_size(o) * sizeof(double));
    o->ls = calloc((size_t)o->n_ls, sizeof(double));
    o->best_r_res = malloc((size_t)(d * d) * sizeof(double));
    o->best_r_ov = malloc((size_t)qsur_ostq_r_ov_size(o) * sizeof(double));
    o->best_ls = calloc((size_t)o->n_ls, sizeof(double));
    o->cur_r_res = malloc((size_t)(d * d) * sizeof(double));
    o->cur_r_ov = malloc((size_t)qsur_ostq_r_ov_size(o) * sizeof(double));
    o->cur_ls = calloc((size_t)o->n_ls, sizeof(double));
    o->opt_ov = calloc((size_t)(L * c->n_kv_heads), sizeof *o->opt_ov);
    if (!o->r_res || !o->r_ov || !o->ls || !o->best_r_res || !o->best_r_ov || !o->best_ls || !o->opt_ov ||
        !o->cur_r_res || !o->cur_r_ov || !o->cur_ls) {
        qsur_ostquant_free(o);
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for the parameters");
    }
    if ((rc = init_rotations(o, err)) || (rc = qsur_stiefel_adam_new(&o->opt_res, d, err)) ||
        (rc = qsur_adam_new(&o->opt_ls, o->n_ls, err))) {
        qsur_ostquant_free(o);
        return rc;
    }
    o->opt_res->canonical = opts->radam;
    o->opt_res->stabilize = opts->stabilize;
    for (int i = 0; i < L * c->n_kv_heads; i++) {
        if ((rc = qsur_stiefel_adam_new(&o->opt_ov[i], hs, err))) {
            qsur_ostquant_free(o);
            return rc;
        }
        o->opt_ov[i]->canonical = opts->radam;
        o->opt_ov[i]->stabilize = opts->stabilize;
    }
    memcpy(o->best_r_res, o->r_res, (size_t)(d * d) * sizeof(double));
    memcpy(o->best_r_ov, o->r_ov, (size_t)qsur_ostq_r_ov_size(o) * sizeof(double));
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
        (opts->code_smooth && !w2 && (rc = qsur_hadamard_plan_new(&o->ud_had, c->hidden_dim, &ho, err)))) {
        qsur_ostquant_free(o);
        return rc;
    }
    *out = o;
    return QSUR_OK;
}
