/* OSTQuant training loop, losses and the optimiser state file (qsur/ostquant.h). */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "qsur/clock.h"
#include "qsur/atomic_file.h"
#include "qsur/backend.h"
#include "qsur/ostquant.h"
#include "qsur/quant_ste.h"
#include "qsur/rng.h"
#include "ostquant_fuse.h"

typedef struct {
    float v;
    int i;
} scored;

static int by_value_desc(const void *a, const void *b)
{
    float x = ((const scored *)a)->v, y = ((const scored *)b)->v;
    return (x < y) - (x > y);
}

/* KL(p || q) over the whole vocabulary of one token (p = softmax(fr), q =
 * softmax(zr)); dz row = (q - p) / N when dz is given. What KL-Top is when
 * k >= V, without sorting. */
static double full_kl_row(const float *zr, const float *fr, int V, double N, float *dz)
{
    double mf = fr[0], mz = zr[0], sf = 0, sz = 0;
    for (int j = 1; j < V; j++) {
        mf = fmax(mf, fr[j]);
        mz = fmax(mz, zr[j]);
    }
    for (int j = 0; j < V; j++) {
        sf += exp(fr[j] - mf);
        sz += exp(zr[j] - mz);
    }
    double lf = mf + log(sf), lz = mz + log(sz), kl = 0;
    for (int j = 0; j < V; j++) {
        double lp = fr[j] - lf, lq = zr[j] - lz, p = exp(lp);
        kl += p * (lp - lq);
        if (dz)
            dz[j] = (float)((exp(lq) - p) / N);
    }
    return kl;
}

double qsur_ostquant_loss_eval(qsur_ostquant_loss kind, int topk, const float *z,
                               const float *z_fp, const int *tokens, int B, int T, int V,
                               float *dz, double *kltop)
{
    int64_t N = (int64_t)B * T;
    int k = topk < V ? topk : V;
    if (kind == QSUR_OSTQ_KLTOP && k == V) {
        double kl = 0;
        for (int64_t t = 0; t < N; t++)
            kl += full_kl_row(z + t * V, z_fp + t * V, V, (double)N, dz ? dz + t * V : NULL);
        *kltop = kl / (double)N;
        return *kltop;
    }
    scored *sc = malloc((size_t)V * sizeof *sc);
    double *p = malloc((size_t)k * sizeof(double)), *q = malloc((size_t)k * sizeof(double));
    if (!sc || !p || !q) {
        free(sc);
        free(p);
        free(q);
        *kltop = NAN;
        return NAN;
    }
    if (dz)
        memset(dz, 0, (size_t)(N * V) * sizeof(float));
    double kl = 0, loss = 0;
    int64_t n_ce = 0;
    for (int64_t t = 0; t < N; t++) {
        const float *zr = z + t * V, *fr = z_fp + t * V;
        for (int j = 0; j < V; j++)
            sc[j] = (scored){fr[j], j};
        qsort(sc, (size_t)V, sizeof *sc, by_value_desc);
        double mp = sc[0].v, mq = zr[sc[0].i], sp = 0, sq = 0;
        for (int j = 1; j < k; j++)
            mq = fmax(mq, zr[sc[j].i]);
        for (int j = 0; j < k; j++) {
            p[j] = exp(sc[j].v - mp);
            q[j] = exp(zr[sc[j].i] - mq);
            sp += p[j];
            sq += q[j];
        }
        double klt = 0;
        for (int j = 0; j < k; j++) {
            p[j] /= sp;
            q[j] /= sq;
            klt += p[j] > 0 ? p[j] * (log(p[j]) - log(q[j])) : 0.0;
        }
        kl += klt;
        if (kind == QSUR_OSTQ_KLTOP && dz)
            for (int j = 0; j < k; j++)
                dz[t * V + sc[j].i] = (float)((q[j] - p[j]) / (double)N);
        if (kind == QSUR_OSTQ_MSE) {
            for (int j = 0; j < V; j++) {
                double e = (double)zr[j] - fr[j];
                loss += e * e / ((double)N * V);
                if (dz)
                    dz[t * V + j] = (float)(2.0 * e / ((double)N * V));
            }
        }
        if (kind == QSUR_OSTQ_CE && (t % T) != T - 1) {
            int y = tokens[t + 1];
            double mx = zr[0], s = 0;
            for (int j = 1; j < V; j++)
                mx = fmax(mx, zr[j]);
            for (int j = 0; j < V; j++)
                s += exp(zr[j] - mx);
            loss += -(zr[y] - mx - log(s));
            n_ce++;
            if (dz) {
                for (int j = 0; j < V; j++)
                    dz[t * V + j] = (float)exp(zr[j] - mx - log(s));
                dz[t * V + y] -= 1.0f;
            }
        }
    }
    if (kind == QSUR_OSTQ_CE && n_ce > 0) {
        loss /= (double)n_ce;
        if (dz)
            for (int64_t t = 0; t < N; t++)
                for (int j = 0; j < V; j++)
                    dz[t * V + j] /= (float)n_ce;
    }
    *kltop = kl / (double)N;
    if (kind == QSUR_OSTQ_KLTOP)
        loss = *kltop;
    free(sc);
    free(p);
    free(q);
    return loss;
}

static int64_t r_ov_count(const qsur_ostquant *o)
{
    return (int64_t)o->cfg.n_layers * o->cfg.n_kv_heads * o->cfg.head_size * o->cfg.head_size;
}

/* Copies the parameters between the working set and the current-point copy
 * (to_cur = 1: working -> cur). */
static void current(qsur_ostquant *o, int to_cur)
{
    int64_t d = o->cfg.dim;
    double *a[3] = {o->r_res, o->r_ov, o->ls}, *b[3] = {o->cur_r_res, o->cur_r_ov, o->cur_ls};
    int64_t n[3] = {d * d, r_ov_count(o), o->n_ls};
    for (int i = 0; i < 3; i++)
        memcpy(to_cur ? b[i] : a[i], to_cur ? a[i] : b[i], (size_t)n[i] * sizeof(double));
}

static void snapshot(qsur_ostquant *o, int to_best)
{
    int64_t d = o->cfg.dim;
    if (to_best) {
        memcpy(o->best_r_res, o->r_res, (size_t)(d * d) * sizeof(double));
        memcpy(o->best_r_ov, o->r_ov, (size_t)r_ov_count(o) * sizeof(double));
        memcpy(o->best_ls, o->ls, (size_t)o->n_ls * sizeof(double));
    } else {
        memcpy(o->r_res, o->best_r_res, (size_t)(d * d) * sizeof(double));
        memcpy(o->r_ov, o->best_r_ov, (size_t)r_ov_count(o) * sizeof(double));
        memcpy(o->ls, o->best_ls, (size_t)o->n_ls * sizeof(double));
    }
}

static int log_row(qsur_ostquant *o, qsur_ostquant_log row)
{
    if (o->nlog == o->caplog) {
        int cap = o->caplog ? 2 * o->caplog : 64;
        qsur_ostquant_log *n = realloc(o->log, (size_t)cap * sizeof *n);
        if (!n)
            return -1;
        o->log = n;
        o->caplog = cap;
    }
    o->log[o->nlog++] = row;
    return 0;
}

/* Perplexity of the current parameters (fused, quantized) on eval. */
static int eval_ppl(const qsur_ostquant *o, const qsur_tokens *eval, int T, double *ppl,
                    qsur_error *err)
{
    qsur_llama *m;
    qsur_llama_rotations *r;
    int rc = qsur_ostquant_fuse_model(o, o->wspec.bits < 16 ? &o->wspec : NULL, NULL, &m, &r, err);
    if (rc)
        return rc;
    qsur_llama_ppl res;
    rc = qsur_llama_perplexity(m, NULL, eval, T, o->opts.eval_seqs, 8, NULL, &res, err);
    if (!rc)
        *ppl = res.ppl;
    qsur_llama_free(m);
    qsur_llama_rotations_free(r);
    return rc;
}

/* Measures the live QSUR of the current parameters and appends it to qlog. */
static int qsur_log_add(qsur_ostquant *o, const qsur_tokens *calib, qsur_error *err)
{
    if (o->nqlog == o->capqlog) {
        int cap = o->capqlog ? 2 * o->capqlog : 16;
        qsur_llama_qsur *n = realloc(o->qlog, (size_t)cap * sizeof *n);
        if (!n)
            return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for the QSUR log");
        o->qlog = n;
        o->capqlog = cap;
    }
    double t = qsur_seconds();
    int rc = qsur_ostquant_qsur(o, calib, &o->qlog[o->nqlog], err);
    o->time.qsur += qsur_seconds() - t;
    if (!rc)
        o->nqlog++;
    return rc;
}

static int qsur_due(const qsur_ostquant *o)
{
    int every = o->opts.qsur_every;
    if (every <= 0 || (o->nqlog > 0 && o->qlog[o->nqlog - 1].step == o->step))
        return 0;
    return o->step % every == 0 || o->step == o->opts.steps;
}

#define SELECT_EVERY 10

/* Weights fake-quantized in the training forward (a weight quantizer is set
 * and not turned off for training). */
static int train_wquant(const qsur_ostquant *o)
{
    return o->wspec.bits < 16 && !o->opts.no_wquant;
}


/* Gradient clipping by the global L2 norm (torch's clip_grad_norm_, as the
 * HF Trainer of the OSTQuant code does with max_grad_norm 1.0): over the
 * Euclidean gradients of R_res, every R_ov and the scales s = e^ls (d/ds =
 * e^-ls d/dls: the code learns s itself). */
static void clip_gradients(const qsur_ostquant *o, double *dr, double *drov, double *dls)
{
    int64_t d2 = (int64_t)o->cfg.dim * o->cfg.dim, nov = r_ov_count(o);
    double ss = 0.0;
    for (int64_t i = 0; i < d2; i++)
        ss += dr[i] * dr[i];
    for (int64_t i = 0; i < nov; i++)
        ss += drov[i] * drov[i];
    if (o->opts.learn_scales)
        for (int64_t i = 0; i < o->n_ls; i++) {
            double g = dls[i] * exp(-o->ls[i]);
            ss += g * g;
        }
    double norm = sqrt(ss), c = o->opts.clip_grad;
    if (!(norm > c))
        return;
    double f = c / (norm + 1e-6); /* torch: max_norm / (total_norm + 1e-6) */
    for (int64_t i = 0; i < d2; i++)
        dr[i] *= f;
    for (int64_t i = 0; i < nov; i++)
        drov[i] *= f;
    for (int64_t i = 0; i < o->n_ls; i++)
        dls[i] *= f;
}

/* Adds the time since *t to *acc and restarts *t (phase timers of o->time). */
static void lap(double *acc, double *t)
{
    double n = qsur_seconds();
    *acc += n - *t;
    *t = n;
}

/* perm = a seeded random order of 0..n-1 (Fisher-Yates). */
static void epoch_order(int *perm, int n, uint64_t seed)
{
    qsur_rng rng;
    qsur_rng_seed(&rng, seed);
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)qsur_rng_below(&rng, (uint64_t)i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

/* The float teacher's logits of each calibration sequence, computed once:
 * they depend only on the tokens, and every sequence is seen steps * B / nseq
 * times (50 times in the OSTQuant protocol). NULL cache (too big): recompute. */
typedef struct {
    float *z;           /* [nseq][T][V] or NULL */
    unsigned char *have;
    int on_gpu;         /* every sequence filled up front by the GPU (teacher_fill_gpu) */
} teacher_cache;

#define TEACHER_CACHE_MAX ((int64_t)512 << 20) /* bytes, CPU runs */

/* A GPU run may hold the whole cache in up to half the host's memory: a 7B
 * model's 128 x 2048 calibration tokens take 33.5 GB of logits, and the
 * alternative is a float forward on the CPU for every sequence of every batch. */
static int64_t teacher_cache_max(int gpu)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    int64_t half = pages > 0 && page > 0 ? (int64_t)pages * page / 2 : 0;
    return gpu && half > TEACHER_CACHE_MAX ? half : TEACHER_CACHE_MAX;
}

static void teacher_cache_init(teacher_cache *tc, int nseq, int T, int64_t V, int gpu)
{
    memset(tc, 0, sizeof *tc);
    if ((int64_t)nseq * T * V * (int64_t)sizeof(float) > teacher_cache_max(gpu))
        return;
    tc->z = malloc((size_t)nseq * T * V * sizeof(float));
    tc->have = calloc((size_t)nseq, 1);
    if (!tc->z || !tc->have) {
        free(tc->z), free(tc->have);
        memset(tc, 0, sizeof *tc);
    }
}

static void teacher_cache_free(teacher_cache *tc)
{
    free(tc->z), free(tc->have);
}

/* zfp [B][T][V] = the teacher's logits of the batch (rows seq[b]). */
static int teacher_logits(const qsur_llama *teacher, qsur_llama_state *st, teacher_cache *tc, const int *seq,
                          const int *tok, int B, int T, int64_t V, float *zfp, qsur_error *err)
{
    size_t row = (size_t)T * V;
    if (!tc->z) {
        int rc = qsur_llama_forward(teacher, st, tok, B, T, 0, err);
        if (!rc)
            memcpy(zfp, st->logits, (size_t)B * row * sizeof(float));
        return rc;
    }
    /* one sequence per forward: a sequence's logits then do not depend on which
     * batch first needed it (GEMM rounding can depend on the row count), so a
     * resumed run computes the same values */
    for (int b = 0; b < B; b++)
        if (!tc->have[seq[b]]) {
            int rc = qsur_llama_forward(teacher, st, tok + (size_t)b * T, 1, T, 0, err);
            if (rc)
                return rc;
            memcpy(tc->z + (size_t)seq[b] * row, st->logits, row * sizeof(float));
            tc->have[seq[b]] = 1;
        }
    for (int b = 0; b < B; b++)
        memcpy(zfp + (size_t)b * row, tc->z + (size_t)seq[b] * row, row * sizeof(float));
    return QSUR_OK;
}

/* One part of a step's batch: its own tape, fused-model scratch (with the
 * parameters' gradients of its rows), teacher state and loss buffers, so
 * parts run on threads side by side over the shared skeleton of the fused
 * model (read-only during the step), each making the fused linears it needs.
 * The batch's loss is the token mean, so part p's dL/dlogits and loss are
 * weighted by B_p / B. */
typedef struct {
    const qsur_ostquant *o;
    const qsur_llama *teacher;
    const qsur_llama_online_t *ot;
    teacher_cache *tc;
    qsur_llama_tape *tape;
    qsur_ostq_fused fz;
    qsur_llama_state *st;
    const int *seq, *tok; /* this part's rows of the batch */
    int B, T;
    double weight;        /* B_p / B */
    float *zfp, *dz;
    double loss, kl;
    double t_forward, t_teacher, t_loss, t_backward;
    int rc;
    qsur_error err;
} batch_part;

static void *part_run(void *arg)
{
    batch_part *p = arg;
    int64_t V = p->o->cfg.vocab_size, N = (int64_t)p->B * p->T;
    double t = qsur_seconds();
    p->rc = qsur_ostq_forward(&p->fz, p->tape, p->tok, p->B, p->T, &p->err);
    lap(&p->t_forward, &t);
    if (!p->rc)
        p->rc = teacher_logits(p->teacher, p->st, p->tc, p->seq, p->tok, p->B, p->T, V, p->zfp, &p->err);
    lap(&p->t_teacher, &t);
    if (p->rc)
        return NULL;
    p->loss = qsur_ostquant_loss_eval(p->o->opts.loss, p->o->opts.topk, p->tape->logits, p->zfp, p->tok, p->B,
                                      p->T, (int)V, p->dz, &p->kl);
    if (p->weight != 1.0)
        for (int64_t i = 0; i < N * V; i++)
            p->dz[i] = (float)(p->dz[i] * p->weight);
    lap(&p->t_loss, &t);
    if (!isfinite(p->loss))
        return NULL; /* the caller reports it */
    p->rc = qsur_ostq_backward(&p->fz, p->tape, p->dz, p->ot, &p->err);
    lap(&p->t_backward, &t);
    return NULL;
}

/* dr, drov, dls = the parameters' gradients summed over the parts. */
static void param_grads_sum(const batch_part *parts, int np, const qsur_ostquant *o, double *dr, double *drov,
                            double *dls)
{
    int64_t d2 = (int64_t)o->cfg.dim * o->cfg.dim, nov = qsur_ostq_r_ov_size(o);
    for (int64_t i = 0; i < d2; i++) {
        float v = parts[0].fz.dR[i]; /* summed in float, as the whole-model chain rule did */
        for (int p = 1; p < np; p++)
            v += parts[p].fz.dR[i];
        dr[i] = v;
    }
    for (int64_t i = 0; i < nov; i++) {
        drov[i] = parts[0].fz.d_r_ov[i];
        for (int p = 1; p < np; p++)
            drov[i] += parts[p].fz.d_r_ov[i];
    }
    for (int64_t i = 0; i < o->n_ls; i++) {
        dls[i] = parts[0].fz.d_ls[i];
        for (int p = 1; p < np; p++)
            dls[i] += parts[p].fz.d_ls[i];
    }
}

/* Runs the parts (part 0 on this thread, the others on their own), then sums
 * their weighted losses into *loss, *kl. */
static int parts_run(batch_part *parts, int np, double *loss, double *kl, qsur_error *err)
{
    pthread_t th[QSUR_OSTQ_MAX_THREADS];
    int started[QSUR_OSTQ_MAX_THREADS] = {0};
    for (int i = 1; i < np; i++)
        started[i] = pthread_create(&th[i], NULL, part_run, &parts[i]) == 0;
    for (int i = 1; i < np; i++)
        if (!started[i]) /* no thread to be had: run it here */
            part_run(&parts[i]);
    part_run(&parts[0]);
    for (int i = 1; i < np; i++)
        if (started[i])
            pthread_join(th[i], NULL);
    *loss = *kl = 0.0;
    for (int i = 0; i < np; i++) {
        if (parts[i].rc) {
            *err = parts[i].err;
            return parts[i].rc;
        }
        *loss += parts[i].weight * parts[i].loss;
        *kl += parts[i].weight * parts[i].kl;
    }
    return QSUR_OK;
}

/* opts.gpu: the GPU's training buffers for mb sequences (a batch runs as
 * micro-batches of mb: the tape of one 7B-shape sequence of 2048 tokens is
 * ~42 GB), the transform side (the base's folded weights, fusion, chain
 * rule), the GPU forward's logits on the host [mb][T][V] (CE/MSE losses). */
typedef struct {
    qsur_gpu_train *gt;
    qsur_gpu_ostq *go;
    float *glog;
    int mb;
} gpu_run;

/* The loss of B x T tokens tok against the teacher's zfp over the fused
 * weights on the GPU, micro-batch by micro-batch (forward, loss, and with dz
 * != NULL the backward: the weights' gradients accumulate on the device;
 * KL-Top on the device, CE/MSE on the host through g->glog and dz). */
static int gpu_loss(const qsur_ostquant *o, gpu_run *g, const int *tok, const float *zfp, int B, int T, float *dz,
                    double *loss, double *kl, qsur_error *err)
{
    int64_t V = o->cfg.vocab_size, n = (int64_t)g->mb * T * V;
    int kltop = o->opts.loss == QSUR_OSTQ_KLTOP, rc = QSUR_OK;
    double w = (double)g->mb / B;
    *loss = *kl = 0.0;
    for (int m = 0; m < B / g->mb && !rc; m++) {
        const int *tm = tok + (int64_t)m * g->mb * T;
        const float *zm = zfp + m * n;
        double lm = 0.0, km = 0.0;
        if ((rc = qsur_gpu_train_forward(g->gt, tm, kltop ? NULL : g->glog, err)))
            break;
        if (kltop) {
            rc = qsur_gpu_train_kltop(g->gt, zm, o->opts.topk, w, &km, err);
            lm = km;
        } else {
            float *dm = dz ? dz + m * n : NULL;
            lm = qsur_ostquant_loss_eval(o->opts.loss, o->opts.topk, g->glog, zm, tm, g->mb, T, (int)V, dm, &km);
            for (int64_t i = 0; dm && i < n; i++)
                dm[i] = (float)(dm[i] * w);
        }
        *loss += w * lm;
        *kl += w * km;
        if (!rc && dz && isfinite(lm))
            rc = qsur_gpu_train_backward(g->gt, kltop ? NULL : dz + m * n, err);
    }
    return rc;
}

/* The batch of part p on the GPU: the teacher's logits (cached, CPU), then
 * forward, loss and backward over the fused weights qsur_gpu_ostq_fuse left
 * there (gpu_loss); the weights' gradients stay on the device. */
static int gpu_batch(batch_part *p, gpu_run *g, double *loss, double *kl, qsur_error *err)
{
    int64_t V = p->o->cfg.vocab_size;
    double t = qsur_seconds();
    int rc = teacher_logits(p->teacher, p->st, p->tc, p->seq, p->tok, p->B, p->T, V, p->zfp, err);
    lap(&p->t_teacher, &t);
    if (!rc)
        rc = qsur_gpu_train_zero(g->gt, err);
    if (!rc)
        rc = gpu_loss(p->o, g, p->tok, p->zfp, p->B, p->T, p->dz, loss, kl, err);
    lap(&p->t_backward, &t); /* forward, loss and backward together */
    return rc;
}

/* The parts' scratch gets the current parameters, fm (the fused model's
 * skeleton) their fused norm gains and the training hooks: activation,
 * wo-input and KV quantizers and the online rotations. */
static void set_training_model(const qsur_ostquant *o, qsur_llama *fm, batch_part *parts, int np)
{
    for (int i = 0; i < np; i++)
        qsur_ostq_scratch_params(o, &parts[i].fz.f);
    for (int l = 0; l < o->cfg.n_layers; l++)
        qsur_ostq_fuse_norms(o, &parts[0].fz.f, l, fm->layers[l].attention_norm, fm->layers[l].ffn_norm);
    for (int64_t j = 0; j < o->cfg.dim; j++)
        fm->norm[j] = 1.0f;
    qsur_ostq_set_hooks(o, fm, o->rot);
    fm->hooks.act_wo.ste_const = o->opts.ste_const;
}

/* Loss of the current parameters on the selection batch sel (B x T, logits
 * zsel), part by part in the parts' tapes; snapshot when best. Uses
 * o->best_ema for the best selection loss. */
static int select_check_timed(qsur_ostquant *o, qsur_llama *fm, batch_part *parts, int np, const int *sel,
                              const float *zsel, int T, gpu_run *g, qsur_error *err)
{
    int rc = QSUR_OK;
    double loss = 0.0;
    int64_t V = o->cfg.vocab_size, row = 0;
    if (g) { /* one part: the GPU forward */
        double kl;
        if ((rc = qsur_gpu_ostq_fuse(g->go, o, err)) ||
            (rc = gpu_loss(o, g, sel, zsel, parts[0].B, T, NULL, &loss, &kl, err)))
            return rc;
        np = 0;
    } else {
        set_training_model(o, fm, parts, np);
    }
    for (int i = 0; i < np; i++) {
        batch_part *p = &parts[i];
        if ((rc = qsur_ostq_forward(&p->fz, p->tape, sel + row * T, p->B, T, err)))
            return rc;
        double kl;
        loss += p->weight * qsur_ostquant_loss_eval(o->opts.loss, o->opts.topk, p->tape->logits,
                                                    zsel + row * T * V, sel + row * T, p->B, T, (int)V, NULL, &kl);
        row += p->B;
    }
    o->last_select = loss;
    if (loss < o->best_ema) {
        o->best_ema = loss;
        o->best_step = o->step;
        snapshot(o, 1);
    }
    return QSUR_OK;
}

static int select_check(qsur_ostquant *o, qsur_llama *fm, batch_part *parts, int np, const int *sel,
                        const float *zsel, int T, gpu_run *g, qsur_error *err)
{
    double t = qsur_seconds();
    int rc = select_check_timed(o, fm, parts, np, sel, zsel, T, g, err);
    lap(&o->time.select, &t);
    return rc;
}

/* Everything one qsur_ostquant_train call allocates: the float teacher, the
 * batch parts, the epoch order, the selection batch and the gradient buffers.
 * train_setup fills it, train_teardown frees it (also after a failed setup). */
typedef struct {
    int T, nseq, B, np;
    int64_t N, V;
    qsur_llama teacher;        /* the base model's float weights, no hooks */
    qsur_llama *fm;            /* the fused model's skeleton: config, hooks, norm gains */
    batch_part parts[QSUR_OSTQ_MAX_THREADS];
    int *perm;                 /* [nseq] the order of epoch perm_epoch */
    int64_t perm_epoch;
    int *tok, *bseq;           /* [B][T] this step's tokens, [B] their sequences */
    int *sel;                  /* [B][T] the selection batch (see train_setup) */
    float *zsel;               /* [B][T][V] its teacher logits */
    double *dr, *drov, *dls;   /* Euclidean gradients of R_res, every R_ov, log s */
    qsur_llama_online_t ot;
    teacher_cache tc;
    gpu_run gpu;               /* opts.gpu (gpu.gt NULL: the CPU) */
} train_run;

/* The teacher shares the base's float weights; its linears' quantized copies
 * are dropped so its forward is the float model's. */
static int teacher_view(train_run *r, const qsur_llama *base, qsur_error *err)
{
    const qsur_llama_config *c = &base->cfg;
    r->teacher = *base;
    r->teacher.hooks = qsur_llama_hooks_none();
    r->teacher.layers = malloc((size_t)c->n_layers * sizeof *r->teacher.layers);
    if (!r->teacher.layers)
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for a batch of %d x %d", r->B, r->T);
    for (int l = 0; l < c->n_layers; l++) {
        qsur_llama_layer *L = &r->teacher.layers[l];
        *L = base->layers[l];
        qsur_llama_linear *ls[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        for (int i = 0; i < 7; i++)
            ls[i]->wq = NULL, ls[i]->qp = NULL;
    }
    r->teacher.output.wq = NULL;
    r->teacher.output.qp = NULL;
    return QSUR_OK;
}

/* The batch in np parts of B / np sequences (the first B % np one more),
 * each run on its own thread (threads=, default 1). */
static int parts_new(qsur_ostquant *o, train_run *r, qsur_error *err)
{
    for (int i = 0, row = 0; i < r->np; i++) {
        batch_part *p = &r->parts[i];
        p->B = r->B / r->np + (i < r->B % r->np);
        p->T = r->T;
        p->weight = (double)p->B / r->B;
        p->tok = r->tok + (size_t)row * r->T;
        p->seq = r->bseq + row;
        row += p->B;
        p->o = o;
        p->teacher = &r->teacher;
        p->ot = &r->ot;
        p->tc = &r->tc;
        size_t n = (size_t)p->B * r->T * r->V;
        p->zfp = malloc(n * sizeof(float));
        p->dz = malloc(n * sizeof(float));
        if (!p->zfp || !p->dz)
            return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for a batch of %d x %d", r->B, r->T);
        int rc = o->opts.gpu ? QSUR_OK /* the GPU keeps its own tape */
                             : qsur_llama_tape_new(&p->tape, r->fm, p->B, r->T, err);
        if (!rc && !o->opts.gpu) /* the GPU fuses on the device */
            rc = qsur_ostq_fused_new(&p->fz, o, r->fm, (int64_t)p->B * r->T, train_wquant(o), err);
        if (!rc)
            rc = qsur_llama_state_new(&p->st, &r->teacher, p->B, r->T, err);
        if (rc)
            return rc;
    }
    return QSUR_OK;
}

/* The selection batch: the first B sequences of the order, fixed, so "best"
 * compares parameters on the same tokens (minibatch losses differ by more
 * than the progress between steps), with their teacher logits. */
static int selection_new(train_run *r, const qsur_tokens *calib, qsur_error *err)
{
    for (int b = 0; b < r->B; b++)
        for (int t = 0; t < r->T; t++)
            r->sel[b * r->T + t] = calib->ids[(int64_t)r->perm[b] * calib->seq_len + t];
    if (r->tc.on_gpu) /* every sequence cached by the GPU: teacher_logits only copies */
        return teacher_logits(&r->teacher, r->parts[0].st, &r->tc, r->perm, r->sel, r->B, r->T, r->V, r->zsel, err);
    for (int i = 0, row = 0; i < r->np; i++) {
        batch_part *p = &r->parts[i];
        int rc = qsur_llama_forward(&r->teacher, p->st, r->sel + (size_t)row * r->T, p->B, r->T, 0, err);
        if (rc)
            return rc;
        memcpy(r->zsel + (size_t)row * r->T * r->V, p->st->logits, (size_t)p->B * r->T * r->V * sizeof(float));
        row += p->B;
    }
    return QSUR_OK;
}

/* opts.gpu: every calibration sequence's teacher logits computed up front on
 * the GPU, one sequence per forward as the CPU cache does, in fp32 (the CPU's
 * values to ~1e-7): the teacher is a float forward of the whole model, minutes
 * per 2048-token sequence of a 7B model on a workstation's CPU. The teacher is
 * uploaded, run and freed before the training buffers exist, so the two never
 * share the GPU's memory. Without a cache (more logits than half the host's
 * memory) every batch computes its teacher on the CPU as before. Ticks
 * "upload" per layer, then "teacher" per sequence (a 7B model: minutes in all),
 * so Ctrl-C stops it before any step. */
static int teacher_fill_gpu(train_run *r, const qsur_tokens *calib, const qsur_progress *prog, qsur_error *err)
{
    if (!r->tc.z)
        return QSUR_OK;
    qsur_gpu_model *g = NULL;
    size_t row = (size_t)r->T * r->V;
    int rc = qsur_gpu_model_new(&g, &r->teacher, QSUR_GPU_F32, 1, r->T, prog, err);
    for (int s = 0; s < r->nseq && !rc; s++) {
        rc = qsur_gpu_forward_logits(g, calib->ids + (int64_t)s * calib->seq_len, 1, r->T, r->tc.z + s * row, err);
        r->tc.have[s] = !rc;
        if (!rc)
            rc = qsur_progress_tick(prog, (s + 1.0) / r->nseq, "teacher", NAN, err);
    }
    qsur_gpu_model_free(g);
    r->tc.on_gpu = !rc;
    return rc;
}

int qsur_ostquant_gpu_supported(const qsur_ostquant *o, char *why, size_t n)
{
    qsur_llama_hooks h = qsur_llama_hooks_none();
    h.act = o->aspec;
    h.act_wo = o->aospec;
    h.kv = o->kvspec;
    qsur_quant_spec ws = qsur_ostq_train_wspec(o);
    if (!qsur_gpu_train_supported(&h, why, n) || (train_wquant(o) && !qsur_gpu_quant_supported(&ws, why, n)))
        return 0;
    if (o->opts.sov_train && why)
        snprintf(why, n, "sov-train=code trains on the CPU only (the GPU's fusion has the exact S_ov alone)");
    return !o->opts.sov_train;
}

/* opts.gpu: the GPU's buffers for a micro-batch (one sequence for models of
 * dim >= 2048, whose tapes are GBs; else the whole batch), the training hooks
 * (on r->fm) uploaded once, the base's folded weights kept on the GPU, and
 * the host scratch of the logits. */
static int gpu_setup(const qsur_ostquant *o, train_run *r, qsur_error *err)
{
    gpu_run *g = &r->gpu;
    char why[200];
    if (!qsur_ostquant_gpu_supported(o, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant: not on the GPU: %s (set device cpu)", why);
    qsur_quant_spec ws = qsur_ostq_train_wspec(o);
    qsur_ostq_set_hooks(o, r->fm, o->rot);
    r->fm->hooks.act_wo.ste_const = o->opts.ste_const;
    g->mb = o->cfg.dim >= 2048 ? 1 : r->B;
    int rc = qsur_gpu_train_new(&g->gt, &o->cfg, g->mb, r->T, err);
    if (!rc)
        rc = qsur_gpu_ostq_new(&g->go, g->gt, o, &r->fm->hooks, train_wquant(o) ? &ws : NULL, 0, err);
    if (!rc && !(g->glog = malloc((size_t)g->mb * r->T * r->V * sizeof(float))))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for a batch of %d x %d", r->B, r->T);
    return rc;
}

static void train_teardown(train_run *r)
{
    teacher_cache_free(&r->tc);
    free(r->teacher.layers);
    qsur_llama_free(r->fm);
    for (int i = 0; i < r->np; i++) {
        qsur_llama_tape_free(r->parts[i].tape);
        qsur_ostq_fused_free(&r->parts[i].fz);
        qsur_llama_state_free(r->parts[i].st);
        free(r->parts[i].zfp);
        free(r->parts[i].dz);
    }
    free(r->perm);
    free(r->tok);
    free(r->bseq);
    free(r->sel);
    free(r->zsel);
    free(r->dr);
    free(r->drov);
    free(r->dls);
    qsur_gpu_ostq_free(r->gpu.go);
    qsur_gpu_train_free(r->gpu.gt);
    free(r->gpu.glog);
}

/* Shapes, allocations, the teacher, the seeded epoch order (the same
 * permutation on resume) and the selection batch; on failure the caller
 * still calls train_teardown. */
static int train_setup(qsur_ostquant *o, train_run *r, const qsur_llama *base, const qsur_tokens *calib,
                       const qsur_progress *prog, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    memset(r, 0, sizeof *r);
    if (base->cfg.dim != c->dim || base->cfg.n_layers != c->n_layers ||
        base->cfg.hidden_dim != c->hidden_dim || base->cfg.vocab_size != c->vocab_size)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant: the base model's shape differs from the state's");
    qsur_ostquant_shape(o, calib, &r->T, &r->nseq);
    r->B = o->opts.batch < r->nseq ? o->opts.batch : r->nseq;
    if (r->nseq < 1 || r->T < 2)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant: calibration stream has no sequence of >= 2 tokens");
    r->N = (int64_t)r->B * r->T;
    r->V = c->vocab_size;
    int64_t d = c->dim;
    int np = o->opts.threads < 1 ? 1 : o->opts.threads;
    np = np > QSUR_OSTQ_MAX_THREADS ? QSUR_OSTQ_MAX_THREADS : np;
    r->np = o->opts.gpu ? 1 : np > r->B ? r->B : np; /* the GPU runs the whole batch */
    r->perm = malloc((size_t)r->nseq * sizeof(int));
    r->tok = malloc((size_t)r->N * sizeof(int));
    r->bseq = malloc((size_t)r->B * sizeof(int));
    r->sel = malloc((size_t)r->N * sizeof(int));
    r->zsel = malloc((size_t)(r->N * r->V) * sizeof(float));
    r->dr = malloc((size_t)(d * d) * sizeof(double));
    r->drov = malloc((size_t)r_ov_count(o) * sizeof(double));
    r->dls = malloc((size_t)o->n_ls * sizeof(double));
    if (!r->perm || !r->tok || !r->bseq || !r->sel || !r->zsel || !r->dr || !r->drov || !r->dls) {
        r->np = 0; /* no part was set up */
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for a batch of %d x %d", r->B, r->T);
    }
    r->ot = qsur_llama_rotations_transpose(o->rot);
    teacher_cache_init(&r->tc, r->nseq, r->T, r->V, o->opts.gpu);
    int rc = teacher_view(r, base, err);
    if (!rc && o->opts.gpu)
        rc = teacher_fill_gpu(r, calib, prog, err);
    if (!rc)
        rc = qsur_llama_new_stored(&r->fm, &o->cfg, err);
    if (!rc)
        rc = parts_new(o, r, err);
    if (!rc && o->opts.gpu)
        rc = gpu_setup(o, r, err);
    /* GPU training at model scale: R_res's Cayley solve (2/3 d^3 in double,
     * seconds a step on the CPU at d = 4096) on the GPU too; the head-size R_ov
     * stay on the CPU. A CPU run (a resume after `set device cpu`) drops it. */
    if (!rc)
        rc = qsur_stiefel_adam_use_gpu(o->opt_res, o->opts.gpu && o->cfg.dim >= 1024, err);
    if (rc)
        return rc;
    epoch_order(r->perm, r->nseq, o->opts.seed);
    return selection_new(r, calib, err);
}

/* tok, bseq = step o->step's batch: B sequences in the epoch order, a new
 * order every pass (the paper code's data loader) when reshuffling. */
static void next_batch(const qsur_ostquant *o, train_run *r, const qsur_tokens *calib)
{
    for (int b = 0; b < r->B; b++) {
        int64_t at = (int64_t)o->step * r->B + b, ep = o->opts.reshuffle ? at / r->nseq : 0;
        if (ep != r->perm_epoch) {
            epoch_order(r->perm, r->nseq, o->opts.seed + 0x9e3779b97f4a7c15ull * (uint64_t)ep);
            r->perm_epoch = ep;
        }
        int sidx = r->perm[(int)(at % r->nseq)];
        r->bseq[b] = sidx;
        for (int t = 0; t < r->T; t++)
            r->tok[b * r->T + t] = calib->ids[(int64_t)sidx * calib->seq_len + t];
    }
}

/* The optimiser steps: Cayley-Adam on R_res and every R_ov, Adam on the log
 * scales; linear decay: step t (0-based) of N runs at lr (N - t) / N. */
static int optimise(qsur_ostquant *o, train_run *r, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    double f = o->opts.lr_decay && o->opts.steps > 0 ? (double)(o->opts.steps - o->step) / o->opts.steps : 1.0;
    int rc = qsur_stiefel_adam_step(o->opt_res, o->r_res, r->dr, f * o->opts.lr, err);
    int64_t hs2 = (int64_t)c->head_size * c->head_size;
    for (int i = 0; i < c->n_layers * c->n_kv_heads && !rc; i++)
        rc = qsur_stiefel_adam_step(o->opt_ov[i], o->r_ov + i * hs2, r->drov + i * hs2, f * o->opts.lr, err);
    if (!rc && o->opts.learn_scales)
        qsur_adam_step(o->opt_ls, o->ls, r->dls, f * o->opts.lr_scale);
    return rc;
}

/* train_step's forward, loss, backward and chain rule on the GPU (opts.gpu):
 * the parameters fused into the device weights (the base's folded weights
 * stay there), the passes and the KL-Top loss on the GPU, then the weights'
 * STE and the chain rule on the GPU; only the parameters and their gradients
 * cross PCIe. */
static int gpu_step(qsur_ostquant *o, train_run *r, double *loss, double *kl, qsur_error *err)
{
    double tp = qsur_seconds();
    batch_part *p = &r->parts[0];
    *loss = *kl = NAN;
    int rc = qsur_gpu_ostq_fuse(r->gpu.go, o, err);
    lap(&o->time.fuse, &tp);
    p->t_forward = p->t_teacher = p->t_loss = p->t_backward = 0.0;
    if (!rc)
        rc = gpu_batch(p, &r->gpu, loss, kl, err);
    o->time.forward += p->t_forward;
    o->time.teacher += p->t_teacher;
    o->time.loss += p->t_loss;
    o->time.backward += p->t_backward;
    tp = qsur_seconds();
    if (rc)
        return rc;
    if (!isfinite(*loss))
        return qsur_fail(err, QSUR_ERR_NUMERIC, "ostquant: loss is not finite at step %d (lower lr?)", o->step + 1);
    rc = qsur_gpu_ostq_grads(r->gpu.go, o, r->dr, r->drov, r->dls, err); /* the STE inside */
    lap(&o->time.chain, &tp);
    return rc;
}

/* One training step on tok: forward, loss and backward on the parts (each
 * making the fused, quantized linears as its passes reach them, and applying
 * the weight STE and the chain rule to the parameters linear by linear), the
 * parts' parameter gradients summed, clipping and the optimiser. *loss, *kl:
 * the batch's. o->time.fuse holds the parameters' handover; the fusion, the
 * STE and the chain rule are inside forward and backward now. With opts.gpu,
 * gpu_step instead. */
static int train_step(qsur_ostquant *o, train_run *r, double *loss, double *kl, qsur_error *err)
{
    if (r->gpu.gt) {
        int rc = gpu_step(o, r, loss, kl, err);
        double tp = qsur_seconds();
        if (!rc && o->opts.clip_grad > 0)
            clip_gradients(o, r->dr, r->drov, r->dls);
        if (!rc)
            rc = optimise(o, r, err);
        lap(&o->time.optim, &tp);
        return rc;
    }
    double tp = qsur_seconds();
    set_training_model(o, r->fm, r->parts, r->np);
    lap(&o->time.fuse, &tp);
    int rc = QSUR_OK;
    batch_part *p0 = &r->parts[0];
    for (int i = 0; i < r->np; i++)
        r->parts[i].t_forward = r->parts[i].t_teacher = r->parts[i].t_loss = r->parts[i].t_backward = 0.0;
    if ((rc = parts_run(r->parts, r->np, loss, kl, err)))
        return rc;
    /* the wall time of the parts, split as part 0's phases */
    double wall = qsur_seconds() - tp, t0 = p0->t_forward + p0->t_teacher + p0->t_loss + p0->t_backward;
    double f = t0 > 0 ? wall / t0 : 0.0;
    o->time.forward += f * p0->t_forward;
    o->time.teacher += f * p0->t_teacher;
    o->time.loss += f * p0->t_loss;
    o->time.backward += f * p0->t_backward;
    tp = qsur_seconds();
    if (!isfinite(*loss))
        return qsur_fail(err, QSUR_ERR_NUMERIC, "ostquant: loss is not finite at step %d (lower lr?)", o->step + 1);
    param_grads_sum(r->parts, r->np, o, r->dr, r->drov, r->dls);
    lap(&o->time.chain, &tp);
    if (o->opts.clip_grad > 0)
        clip_gradients(o, r->dr, r->drov, r->dls);
    rc = optimise(o, r, err);
    lap(&o->time.optim, &tp);
    return rc;
}

/* After step o->step: the selection check, the log row (with eval
 * perplexity when due), the live QSUR when due and the progress tick. */
static int after_step(qsur_ostquant *o, train_run *r, const qsur_tokens *calib, const qsur_tokens *eval,
                      const qsur_progress *prog, double loss, double kl, qsur_error *err)
{
    int rc;
    o->ema = isnan(o->ema) ? loss : 0.9 * o->ema + 0.1 * loss;
    if (!o->opts.keep_last && (o->step % SELECT_EVERY == 0 || o->step == o->opts.steps) &&
        (rc = select_check(o, r->fm, r->parts, r->np, r->sel, r->zsel, r->T, r->gpu.gt ? &r->gpu : NULL, err)))
        return rc;
    qsur_ostquant_log row = {o->step, loss, kl, NAN};
    if (eval && o->opts.eval_every > 0 && (o->step % o->opts.eval_every == 0 || o->step == o->opts.steps)) {
        double tp = qsur_seconds();
        rc = eval_ppl(o, eval, 0, &row.ppl, err);
        lap(&o->time.eval, &tp);
        if (rc)
            return rc;
    }
    if (log_row(o, row))
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for the log");
    if (qsur_due(o) && (rc = qsur_log_add(o, calib, err)))
        return rc;
    char what[64];
    if (isnan(row.ppl))
        snprintf(what, sizeof what, "ostq %d/%d kl=%.4f sel=%.4f", o->step, o->opts.steps, kl, o->last_select);
    else
        snprintf(what, sizeof what, "ostq %d/%d ppl=%.3f", o->step, o->opts.steps, row.ppl);
    return qsur_progress_tick(prog, (double)o->step / o->opts.steps, what, loss, err);
}

/* Leaves the kept parameters in r_res/r_ov/ls (the last ones with keep=last,
 * else the best on the selection batch; the final ones were checked too) and
 * where the optimiser stands in cur_*, on success and on interruption alike. */
static void keep_result(qsur_ostquant *o, int rc)
{
    if (rc != QSUR_OK && rc != QSUR_ERR_INTERRUPTED)
        return;
    if (o->opts.keep_last) {
        current(o, 1); /* the kept parameters are the current ones */
        o->has_cur = 1;
        o->best_step = o->step;
        snapshot(o, 1);
    } else if (isfinite(o->best_ema)) {
        current(o, 1);
        o->has_cur = 1;
        snapshot(o, 0);
    }
}

int qsur_ostquant_train(qsur_ostquant *o, const qsur_llama *base, const qsur_tokens *calib,
                        const qsur_tokens *eval, const qsur_progress *prog, qsur_error *err)
{
    double t_start = qsur_seconds();
    train_run r;
    int rc = train_setup(o, &r, base, calib, prog, err);
    if (!rc && o->has_cur) { /* continue from where the optimiser was, not from the best */
        current(o, 0);
        o->has_cur = 0;
    }
    if (!rc && !isfinite(o->best_ema) && !o->opts.keep_last)
        rc = select_check(o, r.fm, r.parts, r.np, r.sel, r.zsel, r.T, r.gpu.gt ? &r.gpu : NULL, err);
    /* the start point of this call (step 0, or where a resumed run stands) */
    if (!rc && o->opts.qsur_every > 0 && !(o->nqlog > 0 && o->qlog[o->nqlog - 1].step == o->step))
        rc = qsur_log_add(o, calib, err);
    while (!rc && o->step < o->opts.steps) {
        double loss, kl;
        next_batch(o, &r, calib);
        if ((rc = train_step(o, &r, &loss, &kl, err)))
            break;
        o->step++;
        rc = after_step(o, &r, calib, eval, prog, loss, kl, err);
    }
    keep_result(o, rc);
    o->time.total += qsur_seconds() - t_start;
    train_teardown(&r);
    return rc;
}
