/* OSTQuant's transform side on the GPU (qsur_gpu_ostq_*: the parameters fused
 * into device-resident base weights, the weights' STE and the chain rule to
 * the parameters on the device) against the CPU (label gpu; exit 77 =
 * skipped when no GPU is usable). One step's KL-Top loss and parameter
 * gradients (dR_res, every dR_ov, the log-scales') of the GPU step (device
 * fusion, GPU passes, KL-Top on the device, device STE and chain rule)
 * against the CPU's whole-model path (qsur_ostquant_fuse_into,
 * qsur_llama_train_forward / _backward, qsur_ostquant_loss_eval, the STE,
 * qsur_ostquant_param_grads), relative L2 per parameter group, on
 * stories260K with random log-scales; the backward from the same random
 * dL/dlogits on both (not the loss's: its gradient is small near the start):
 *   - float weights and activations: with exact fusions the model's function
 *     does not depend on the scales (their gradients are rounding noise on
 *     both engines), so dR_res and dR_ov only, within 1e-4 (the passes alone
 *     agree to ~1e-5); smooth=code (not an exact equivalence) with and
 *     without the online w2 Hadamard and S_qk: all three within 1e-4;
 *   - weights trained quantized (W4 RTN + STE; the quantizer breaks the
 *     invariance), also with the online w2 Hadamard, S_qk and the code's
 *     S_ov/R_ov order, then W4A4KV4: a code flip from the engines' rounding
 *     moves a gradient locally, so the CPU's own movement is the yardstick:
 *     3 x the largest of its runs with every base weight 1 and 2 ulps (two
 *     sign patterns) apart, at least 1e-4 (W4: ~1e-5 apart, so 1e-4), at most
 *     0.5 (A4: a 2-ulp move already moves the gradients by ~30 %);
 * `ostquant model` through the engine on a 2048-wide model (the GPU step's
 * micro-batches of one sequence): 3 steps' losses against the CPU's; and
 * (QSUR_GPU_LONG) a 2-layer Llama-2-7B-shape model (float, 1 x 64 tokens,
 * dR only).
 * The 10-step losses of `ostquant model` on the GPU against the CPU are in
 * tests/gpu_ostquant.c (train_pair), which runs the same gpu_step. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "gpu_common.h"
#include "qsur/backend.h"
#include "qsur/clock.h"
#include "qsur/llama.h"
#include "qsur/llama_store.h"
#include "qsur/llama_train.h"
#include "qsur/ostquant.h"
#include "qsur/quant_ste.h"
#include "../src/ostquant_fuse.h"

typedef struct {
    double *dr, *dov, *dls;
    double loss;
} pgrads;

static int pg_new(pgrads *p, const qsur_ostquant *o)
{
    int64_t d = o->cfg.dim;
    p->dr = malloc((size_t)(d * d) * sizeof(double));
    p->dov = malloc((size_t)qsur_ostq_r_ov_size(o) * sizeof(double));
    p->dls = malloc((size_t)o->n_ls * sizeof(double));
    return p->dr && p->dov && p->dls;
}

static void pg_free(pgrads *p)
{
    free(p->dr);
    free(p->dov);
    free(p->dls);
}

static double rel_l2d(const double *a, const double *b, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += (a[i] - b[i]) * (a[i] - b[i]);
        s += b[i] * b[i];
    }
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

/* The largest of the three groups' relative L2 differences. */
static double pg_diff(const qsur_ostquant *o, const pgrads *a, const pgrads *b, double e[3])
{
    int64_t d = o->cfg.dim;
    e[0] = rel_l2d(a->dr, b->dr, d * d);
    e[1] = rel_l2d(a->dov, b->dov, qsur_ostq_r_ov_size(o));
    e[2] = rel_l2d(a->dls, b->dls, o->n_ls);
    return fmax(e[0], fmax(e[1], e[2]));
}

static int train_wquant(const qsur_ostquant *o)
{
    return o->wspec.bits < 16 && !o->opts.no_wquant;
}

/* The CPU's step: the whole fused model, CPU passes, the KL-Top loss, the
 * backward from dzr, the STE, the chain rule. */
static void grads_cpu(const qsur_ostquant *o, const int *tok, int B, int T, const float *zfp, const float *dzr,
                      pgrads *p)
{
    qsur_error err;
    const qsur_llama_config *c = &o->cfg;
    int64_t N = (int64_t)B * T, V = c->vocab_size;
    qsur_llama *fm = NULL;
    qsur_llama_tape *tape = NULL;
    qsur_llama_grads *g = NULL;
    float *dz = malloc((size_t)(N * V) * sizeof(float));
    qsur_quant_spec ws = qsur_ostq_train_wspec(o);
    CHECK_OK(qsur_llama_new(&fm, &o->cfg, &err), err);
    if (!fm || !dz)
        goto done;
    CHECK_OK(qsur_ostquant_fuse_into(o, fm, &err), err);
    qsur_ostq_set_hooks(o, fm, o->rot);
    fm->hooks.act_wo.ste_const = o->opts.ste_const;
    if (train_wquant(o))
        CHECK_OK(qsur_llama_quantize_weights(fm, &ws, NULL, &err), err);
    CHECK_OK(qsur_llama_tape_new(&tape, fm, B, T, &err), err);
    CHECK_OK(qsur_llama_grads_new(&g, fm, &err), err);
    if (!tape || !g)
        goto done;
    CHECK_OK(qsur_llama_train_forward(fm, tape, tok, B, T, &err), err);
    double kl;
    p->loss = qsur_ostquant_loss_eval(QSUR_OSTQ_KLTOP, o->opts.topk, tape->logits, zfp, tok, B, T, (int)V, dz, &kl);
    qsur_llama_online_t ot = qsur_llama_rotations_transpose(o->rot);
    CHECK_OK(qsur_llama_backward(fm, tape, dzr, &ot, g, &err), err);
    for (int l = 0; train_wquant(o) && l < c->n_layers; l++) {
        const qsur_llama_layer *L = &fm->layers[l];
        qsur_llama_layer_grads *G = &g->layers[l];
        const qsur_llama_linear *lin[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        float *dw[7] = {G->d_wq, G->d_wk, G->d_wv, G->d_wo, G->d_w1, G->d_w2, G->d_w3};
        for (int i = 0; i < 7; i++)
            CHECK_OK(qsur_fake_quant_backward(&ws, lin[i]->w, lin[i]->rows, lin[i]->cols, dw[i], dw[i], &err), err);
    }
    CHECK_OK(qsur_ostquant_param_grads(o, fm, g, p->dr, p->dov, p->dls, &err), err);
done:
    qsur_llama_tape_free(tape);
    qsur_llama_grads_free(g);
    qsur_llama_free(fm);
    free(dz);
}

/* The GPU's step: device fusion, GPU passes, the KL-Top loss on the device,
 * the backward from dzr, the device STE and chain rule. */
static void grads_gpu(const qsur_ostquant *o, const int *tok, int B, int T, const float *zfp, const float *dzr,
                      pgrads *p, double *secs)
{
    qsur_error err;
    qsur_llama *sk = NULL; /* a skeleton for the hooks */
    qsur_gpu_train *t = NULL;
    qsur_gpu_ostq *go = NULL;
    qsur_quant_spec ws = qsur_ostq_train_wspec(o);
    CHECK_OK(qsur_llama_new_stored(&sk, &o->cfg, &err), err);
    if (!sk)
        return;
    qsur_ostq_set_hooks(o, sk, o->rot);
    sk->hooks.act_wo.ste_const = o->opts.ste_const;
    CHECK_OK(qsur_gpu_train_new(&t, &o->cfg, B, T, &err), err);
    if (t)
        CHECK_OK(qsur_gpu_ostq_new(&go, t, o, &sk->hooks, train_wquant(o) ? &ws : NULL, 0, &err), err);
    if (go) {
        double t0 = qsur_seconds();
        CHECK_OK(qsur_gpu_ostq_fuse(go, o, &err), err);
        CHECK_OK(qsur_gpu_train_zero(t, &err), err);
        CHECK_OK(qsur_gpu_train_forward(t, tok, NULL, &err), err);
        CHECK_OK(qsur_gpu_train_kltop(t, zfp, o->opts.topk, 1.0, &p->loss, &err), err);
        CHECK_OK(qsur_gpu_train_backward(t, dzr, &err), err);
        CHECK_OK(qsur_gpu_ostq_grads(go, o, p->dr, p->dov, p->dls, &err), err);
        *secs = qsur_seconds() - t0;
    }
    qsur_gpu_ostq_free(go);
    qsur_gpu_train_free(t);
    qsur_llama_free(sk);
}

/* zfp = the float base model's logits of tok times 1.3 (the teacher, made
 * sharper: the exact fusions of a float run would otherwise match it and
 * leave gradients of rounding noise). */
static void teacher(const qsur_llama *m, const int *tok, int B, int T, float *zfp)
{
    qsur_error err;
    qsur_llama base = *m;
    base.hooks = qsur_llama_hooks_none();
    qsur_llama_tape *tape = NULL;
    CHECK_OK(qsur_llama_tape_new(&tape, &base, B, T, &err), err);
    if (tape)
        CHECK_OK(qsur_llama_train_forward(&base, tape, tok, B, T, &err), err);
    for (int64_t i = 0; tape && i < (int64_t)B * T * m->cfg.vocab_size; i++)
        zfp[i] = 1.3f * tape->logits[i];
    qsur_llama_tape_free(tape);
}

/* The float arrays of m: embeddings, classifier, every layer's linears. */
static int weight_arrays(qsur_llama *m, float **p, int64_t *n)
{
    int k = 0;
    p[k] = m->tok_embeddings, n[k++] = (int64_t)m->cfg.vocab_size * m->cfg.dim;
    if (m->output.w && m->output.w != m->tok_embeddings)
        p[k] = m->output.w, n[k++] = m->output.rows * m->output.cols;
    for (int i = 0; i < qsur_llama_linear_count(m); i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        p[k] = l->w, n[k++] = l->rows * l->cols;
    }
    return k;
}

/* Every base weight of m moved by `ulps` ulps (alternately up and down,
 * starting down, or up with flip), or back from save (ulps 0; float copies
 * of them all): the CPU's own movement, through code flips of the fused
 * weights' RTN and of the activations. */
static void nudge(qsur_llama *m, float *save, int ulps, int flip)
{
    float *p[2 + 7 * 64];
    int64_t n[2 + 7 * 64];
    int k = weight_arrays(m, p, n);
    for (int a = 0; a < k; a++) {
        if (!ulps)
            memcpy(p[a], save, (size_t)n[a] * sizeof(float));
        else
            memcpy(save, p[a], (size_t)n[a] * sizeof(float));
        for (int64_t i = 0; ulps && i < n[a]; i++)
            for (int u = 0; u < ulps; u++)
                p[a][i] = nextafterf(p[a][i], ((i + flip) & 1) ? INFINITY : -INFINITY);
        save += n[a];
    }
}

/* Floats of all the arrays nudge moves. */
static int64_t weight_floats(qsur_llama *m)
{
    float *p[2 + 7 * 64];
    int64_t n[2 + 7 * 64], s = 0;
    int k = weight_arrays(m, p, n);
    for (int a = 0; a < k; a++)
        s += n[a];
    return s;
}

/* One case: o from m with op and the bit widths, random log-scales (|ls| <
 * 0.3), one step's gradients on both engines. self: also the CPU against
 * itself 1 ulp apart, the yardstick for quantized runs. */
static void one_case(const char *what, qsur_llama *m, const int *tok, int B, int T, qsur_ostquant_opts op, int wbits,
                     int abits, double tol, int self, int exact)
{
    qsur_error err;
    qsur_quant_spec w = qsur_quant_default(), a = qsur_quant_default(), kv = qsur_quant_default();
    w.bits = wbits;
    a.symmetric = kv.symmetric = 0;
    a.bits = kv.bits = abits;
    qsur_ostquant *o = NULL;
    pgrads pc = {0}, pgpu = {0}, ps = {0};
    int64_t V = m->cfg.vocab_size;
    float *zfp = malloc((size_t)B * T * V * sizeof(float)), *dzr = malloc((size_t)B * T * V * sizeof(float));
    float *save = self ? malloc((size_t)weight_floats(m) * sizeof(float)) : NULL;
    CHECK_OK(qsur_ostquant_new(&o, m, &op, &w, &a, &kv, &err), err);
    if (!o || !zfp || !dzr || (self && !save) || !pg_new(&pc, o) || !pg_new(&pgpu, o) || !pg_new(&ps, o))
        goto done;
    check_seed(21);
    for (int64_t i = 0; i < o->n_ls; i++)
        o->ls[i] = 0.3 * (2.0 * check_uniform() - 1.0);
    teacher(m, tok, B, T, zfp);
    /* dL/dlogits: random, not the loss's: with exact (float) fusions the loss
     * does not depend on the scales at all, and its gradients would be noise */
    for (int64_t i = 0; i < (int64_t)B * T * V; i++)
        dzr[i] = (float)((2.0 * check_uniform() - 1.0) / ((double)B * T));
    double t0 = qsur_seconds(), tg = 0, e[3], es[3] = {0, 0, 0}, sd = 0;
    grads_cpu(o, tok, B, T, zfp, dzr, &pc);
    double tc = qsur_seconds() - t0;
    grads_gpu(o, tok, B, T, zfp, dzr, &pgpu, &tg);
    double diff = pg_diff(o, &pgpu, &pc, e);
    if (exact) /* the loss does not depend on the scales: d_ls is rounding noise on both */
        diff = fmax(e[0], e[1]);
    /* the CPU against itself, base weights 1 and 2 ulps apart (two sign
     * patterns): code flips are rare events, so the largest of the three */
    static const int ulps[3] = {1, 2, 2};
    for (int k = 0; self && k < 3; k++) {
        double ek[3];
        nudge(m, save, ulps[k], k == 2);
        grads_cpu(o, tok, B, T, zfp, dzr, &ps);
        nudge(m, save, 0, 0);
        double dk = pg_diff(o, &ps, &pc, ek);
        if (dk > sd) {
            sd = dk;
            memcpy(es, ek, sizeof es);
        }
    }
    printf("  %-46s loss CPU %.9f GPU %.9f; dR_res %.2e, dR_ov %.2e, d_ls %.2e (CPU against itself: %.2e %.2e %.2e); "
           "CPU %.2f s, GPU %.3f s\n",
           what, pc.loss, pgpu.loss, e[0], e[1], e[2], es[0], es[1], es[2], tc, tg);
    /* at A4 a 2-ulp move of the base moves a step's gradients by ~30 %
     * (one flipped extreme of a per-token grid re-codes the row): capped at
     * 0.5, so that a wrong term (relative L2 ~1 or more) still fails */
    double lim = fmin(0.5, fmax(tol, 3.0 * sd));
    CHECK(fabs(pgpu.loss - pc.loss) <= lim * fabs(pc.loss));
    CHECK(diff < lim);
done:
    pg_free(&pc);
    pg_free(&pgpu);
    pg_free(&ps);
    free(zfp);
    free(dzr);
    free(save);
    qsur_ostquant_free(o);
}

static void stories(void)
{
    qsur_error err;
    qsur_llama *m = NULL;
    qsur_tokens t;
    memset(&t, 0, sizeof t);
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    if (m)
        CHECK_OK(qsur_llama_own_all(m, &err), err);
    CHECK_OK(qsur_tokens_load(&t, check_shared("data/stories260K.calib.u16"), 256, 512, &err), err);
    if (!m || !t.ids)
        goto done;
    const int B = 2, T = 128;
    int tok[2 * 128];
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++)
            tok[b * T + i] = t.ids[(int64_t)b * t.seq_len + i];
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.qsur_every = 0;
    one_case("stories260K float (exact: dR only)", m, tok, B, T, op, 16, 16, 1e-4, 0, 1);
    qsur_ostquant_opts o2 = op;
    o2.online_w2 = o2.learn_qk = o2.sov_code = 1;
    one_case("float, online w2, S_qk, sov-order=code (dR only)", m, tok, B, T, o2, 16, 16, 1e-4, 0, 1);
    one_case("W4, online w2, S_qk, sov-order=code", m, tok, B, T, o2, 4, 16, 1e-4, 1, 0);
    qsur_ostquant_opts o3 = op;
    o3.code_smooth = o3.learn_qk = 1;
    one_case("float, smooth=code (offline H S H^T), S_qk", m, tok, B, T, o3, 16, 16, 1e-4, 0, 0);
    o3.online_w2 = 1;
    one_case("float, smooth=code, online w2", m, tok, B, T, o3, 16, 16, 1e-4, 0, 0);
    one_case("W4 trained quantized (RTN + STE)", m, tok, B, T, op, 4, 16, 1e-4, 1, 0);
    qsur_ostquant_opts o4 = op;
    o4.no_wquant = 1;
    one_case("W4A4KV4, float weights in training", m, tok, B, T, o4, 4, 4, 1e-4, 1, 0);
    one_case("W4A4KV4, weights trained quantized", m, tok, B, T, op, 4, 4, 1e-4, 1, 0);
done:
    qsur_tokens_free(&t);
    qsur_llama_free(m);
}

/* `ostquant model` through the engine (qsur_ostquant_train) on a model 2048
 * wide, where the GPU step runs a batch as micro-batches of one sequence
 * (gpu_step's gpu_loss; the selection checks too): 1 layer, hidden 256,
 * vocabulary 512, random weights, W3 weights trained quantized, 3 steps of 2
 * x 64 random tokens; per-step losses GPU vs CPU within 1e-3, or 3 x the CPU
 * against itself with every base weight 1 ulp apart. */
static void micro_batches(void)
{
    qsur_error err;
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 2048, c.hidden_dim = 256, c.n_layers = 1, c.n_heads = 16, c.n_kv_heads = 16;
    c.vocab_size = 512, c.seq_len = 64, c.shared_classifier = 0;
    qsur_llama *m = NULL;
    qsur_tokens t = {0};
    qsur_ostquant *o[3] = {NULL, NULL, NULL};
    CHECK_OK(qsur_llama_config_check(&c, "micro", &err), err);
    CHECK_OK(qsur_llama_new(&m, &c, &err), err);
    float *save = m ? malloc((size_t)weight_floats(m) * sizeof(float)) : NULL;
    t.seq_len = 64;
    t.n = 4 * t.seq_len;
    t.ids = malloc((size_t)t.n * sizeof(int));
    if (!m || !save || !t.ids)
        goto done;
    check_seed(5);
    for (int64_t i = 0; i < t.n; i++)
        t.ids[i] = (int)(check_uniform() * c.vocab_size) % c.vocab_size;
    float *p[2 + 7 * 64];
    int64_t n[2 + 7 * 64];
    int k = weight_arrays(m, p, n);
    for (int a = 0; a < k; a++)
        gpu_fill(p[a], (size_t)n[a], a == 0 ? 1.0 : 1.0 / sqrt((double)c.dim));
    for (int j = 0; j < c.dim; j++)
        m->norm[j] = m->layers[0].attention_norm[j] = m->layers[0].ffn_norm[j] = 1.0f;
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.steps = 3, op.batch = 2, op.womi = 0, op.qsur_every = 0;
    qsur_quant_spec w4 = qsur_quant_default(), f16 = qsur_quant_default();
    w4.bits = 3; /* a loss well above the float model's rounding */
    f16.bits = 16;
    for (int g = 0; g < 3; g++) { /* CPU, GPU, CPU 1 ulp apart */
        op.gpu = g == 1;
        if (g == 2)
            nudge(m, save, 1, 0);
        CHECK_OK(qsur_ostquant_new(&o[g], m, &op, &w4, &f16, &f16, &err), err);
        if (o[g])
            CHECK_OK(qsur_ostquant_train(o[g], m, &t, NULL, NULL, &err), err);
        if (g == 2)
            nudge(m, save, 0, 0);
    }
    if (!o[0] || !o[1] || !o[2] || o[0]->nlog != 3 || o[1]->nlog != 3 || o[2]->nlog != 3) {
        CHECK(0);
        goto done;
    }
    double worst = 0, self = 0;
    for (int i = 0; i < 3; i++) {
        double a = o[0]->log[i].loss;
        worst = fmax(worst, fabs(o[1]->log[i].loss - a) / fabs(a));
        self = fmax(self, fabs(o[2]->log[i].loss - a) / fabs(a));
    }
    printf("  %-46s 3 steps, batch 2 as micro-batches of 1: losses CPU %.6f .. %.6f, GPU %.6f .. %.6f: within %.2e "
           "(the CPU against itself 1 ulp apart: %.2e)\n",
           "2048-wide model, W3, through the engine", o[0]->log[0].loss, o[0]->log[2].loss, o[1]->log[0].loss,
           o[1]->log[2].loss, worst, self);
    CHECK(worst < fmax(1e-3, 3.0 * self));
done:
    for (int g = 0; g < 3; g++)
        qsur_ostquant_free(o[g]);
    free(save);
    qsur_tokens_free(&t);
    qsur_llama_free(m);
}

/* QSUR_GPU_LONG: the CPU's side takes ~100 s at this shape (16 cores). */
static void real_shape(void)
{
    if (!getenv("QSUR_GPU_LONG"))
        return;
    const int T = 64;
    qsur_llama *m = gpu_real_shape(T);
    if (!m)
        return;
    int tok[64];
    for (int i = 0; i < T; i++)
        tok[i] = (int)(check_uniform() * m->cfg.vocab_size) % m->cfg.vocab_size;
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.qsur_every = 0;
    op.womi = 0; /* WOMI's eigendecompositions of 4096^2 take long on a CPU */
    op.topk = 64;
    one_case("2-layer Llama-2-7B shape float (dR only)", m, tok, 1, T, op, 16, 16, 1e-4, 0, 1);
    qsur_llama_free(m);
}

int main(void)
{
    if (gpu_skip())
        return 77;
    stories();
    micro_batches();
    real_shape();
    return check_done();
}
