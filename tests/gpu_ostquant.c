/* OSTQuant's training passes on the GPU against the CPU engine (label gpu;
 * exit 77 = skipped when no GPU is usable):
 *   - one training forward + backward (qsur_gpu_train_*) against
 *     qsur_llama_train_forward + qsur_llama_backward on stories260K: float,
 *     online Hadamards on q/k, wo's input and w2's input, then W4A8KV8 and
 *     W4A4KV4 (RTN weights, asymmetric per-token activations, wo's input per
 *     head, KV per head): logits and every gradient tensor (relative L2);
 *   - `ostquant model` training (qsur_ostquant_train, opts.gpu) for 10 steps
 *     at W4A4KV4 on stories260K and on a 2-layer Llama-2-7B-shape model with
 *     random weights: the per-step losses of the GPU run against the CPU
 *     run's within 1e-3 relative. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/backend.h"
#include "qsur/clock.h"
#include "qsur/llama.h"
#include "qsur/llama_rotations.h"
#include "qsur/llama_store.h"
#include "qsur/llama_train.h"
#include "qsur/llama_wquant.h"
#include "qsur/ostquant.h"

/* ||a - b|| / ||b|| over n values. */
static double rel_l2(const float *a, const float *b, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        e += d * d;
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

/* The largest relative L2 difference over every gradient tensor of the model. */
static double grads_diff(const qsur_llama *m, const qsur_llama_grads *a, const qsur_llama_grads *b,
                         const char **worst)
{
    const qsur_llama_config *c = &m->cfg;
    int64_t d = c->dim, kv = c->kv_dim, hd = c->hidden_dim, V = c->vocab_size;
    double mx = rel_l2(a->d_output, b->d_output, V * d);
    *worst = "output";
#define CMP(x, y, n, name)                     \
    do {                                       \
        double e_ = rel_l2((x), (y), (n));     \
        if (e_ > mx)                           \
            mx = e_, *worst = (name);          \
    } while (0)
    CMP(a->d_tok_embeddings, b->d_tok_embeddings, V * d, "tok_embeddings");
    CMP(a->d_norm, b->d_norm, d, "norm");
    for (int l = 0; l < c->n_layers; l++) {
        const qsur_llama_layer_grads *A = &a->layers[l], *B = &b->layers[l];
        CMP(A->d_wq, B->d_wq, d * d, "wq");
        CMP(A->d_wk, B->d_wk, kv * d, "wk");
        CMP(A->d_wv, B->d_wv, kv * d, "wv");
        CMP(A->d_wo, B->d_wo, d * d, "wo");
        CMP(A->d_w1, B->d_w1, hd * d, "w1");
        CMP(A->d_w2, B->d_w2, d * hd, "w2");
        CMP(A->d_w3, B->d_w3, hd * d, "w3");
        CMP(A->d_attention_norm, B->d_attention_norm, d, "attention_norm");
        CMP(A->d_ffn_norm, B->d_ffn_norm, d, "ffn_norm");
    }
#undef CMP
    return mx;
}

/* One forward + backward of B x T tokens on both engines; logits and
 * gradients within tol relative L2. */
static void pass(const char *what, const qsur_llama *m, const qsur_llama_rotations *r, const int *tok,
                 int B, int T, double tol)
{
    qsur_error err;
    const qsur_llama_config *c = &m->cfg;
    int64_t N = (int64_t)B * T, V = c->vocab_size;
    qsur_llama_tape *tape = NULL;
    qsur_llama_grads *gc = NULL, *gg = NULL;
    qsur_gpu_train *gt = NULL;
    float *logits = malloc((size_t)(N * V) * sizeof(float)), *dz = malloc((size_t)(N * V) * sizeof(float));
    CHECK_OK(qsur_llama_tape_new(&tape, m, B, T, &err), err);
    CHECK_OK(qsur_llama_grads_new(&gc, m, &err), err);
    CHECK_OK(qsur_llama_grads_new(&gg, m, &err), err);
    CHECK_OK(qsur_gpu_train_new(&gt, &m->cfg, B, T, &err), err);
    if (!tape || !gc || !gg || !gt || !logits || !dz)
        goto done;
    for (int64_t i = 0; i < N * V; i++)
        dz[i] = (float)((2.0 * check_uniform() - 1.0) / (double)N);
    double t0 = qsur_seconds();
    CHECK_OK(qsur_llama_train_forward(m, tape, tok, B, T, &err), err);
    qsur_llama_online_t ot = r ? qsur_llama_rotations_transpose(r) : (qsur_llama_online_t){0};
    CHECK_OK(qsur_llama_backward(m, tape, dz, &ot, gc, &err), err);
    double t1 = qsur_seconds();
    CHECK_OK(qsur_gpu_train_load(gt, m, &err), err);
    CHECK_OK(qsur_gpu_train_zero(gt, &err), err);
    double t2 = qsur_seconds();
    CHECK_OK(qsur_gpu_train_forward(gt, tok, logits, &err), err);
    CHECK_OK(qsur_gpu_train_backward(gt, dz, &err), err);
    double t3 = qsur_seconds();
    CHECK_OK(qsur_gpu_train_grads(gt, gg, &err), err);
    double el = rel_l2(logits, tape->logits, N * V);
    const char *worst;
    double eg = grads_diff(m, gg, gc, &worst);
    printf("  %-44s logits %.2e, gradients %.2e (worst: %s); CPU %.3f s, GPU %.4f s\n", what, el, eg,
           worst, t1 - t0, t3 - t2);
    CHECK(el < tol && eg < tol);
done:
    qsur_llama_tape_free(tape);
    qsur_llama_grads_free(gc);
    qsur_llama_grads_free(gg);
    qsur_gpu_train_free(gt);
    free(logits);
    free(dz);
}

static void passes(void)
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
        return;
    const int B = 3, T = 128;
    int *tok = malloc((size_t)B * T * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++)
            tok[b * T + i] = t.ids[(int64_t)b * t.seq_len + i];
    check_seed(11);
    pass("stories260K float", m, NULL, tok, B, T, 1e-4);
    /* online Hadamards on q/k, wo's input and w2's input (w2 <- w2 H keeps the function) */
    qsur_llama_rotations *r = NULL;
    CHECK_OK(qsur_llama_rotations_new(&r, &m->cfg, 1, 1, 7, &err), err);
    for (int l = 0; r && l < m->cfg.n_layers; l++) {
        qsur_llama_linear *w2 = &m->layers[l].w2;
        int dt = 0;
        CHECK_OK(qsur_llama_linear_edit_begin(w2, &dt, &err), err);
        CHECK_OK(qsur_hadamard_plan_apply(r->w2, w2->w, w2->rows, NULL, &err), err);
        CHECK_OK(qsur_llama_linear_edit_end(w2, dt, &err), err);
    }
    qsur_llama_rotations_attach(r, m);
    pass("stories260K float, online Hadamards", m, r, tok, B, T, 1e-4);
    qsur_quant_spec w4 = qsur_quant_default();
    CHECK_OK(qsur_llama_quantize_weights(m, &w4, NULL, &err), err);
    m->hooks.act = qsur_quant_default();
    m->hooks.act.symmetric = 0;
    m->hooks.act_wo = m->hooks.act;
    m->hooks.act_wo.gran = QSUR_GRAN_GROUP;
    m->hooks.act_wo.group = m->cfg.head_size;
    m->hooks.kv = m->hooks.act;
    m->hooks.act.bits = m->hooks.act_wo.bits = m->hooks.kv.bits = 8;
    /* a code flip moves a gradient locally: relative L2 over a tensor stays small */
    pass("stories260K W4A8KV8, online Hadamards", m, r, tok, B, T, 1e-2);
    m->hooks.act.bits = m->hooks.act_wo.bits = m->hooks.kv.bits = 4;
    pass("stories260K W4A4KV4, online Hadamards", m, r, tok, B, T, 5e-2);
    m->hooks = qsur_llama_hooks_none();
    qsur_llama_rotations_free(r);
    free(tok);
    qsur_tokens_free(&t);
    qsur_llama_free(m);
}

/* `ostquant model` at W4A4KV4 for `steps` steps on the CPU and on the GPU:
 * the per-step losses agree within tol relative. */
static void train_pair(const char *what, const qsur_llama *m, const qsur_tokens *t, qsur_ostquant_opts op,
                       double tol)
{
    qsur_error err;
    qsur_quant_spec w4 = qsur_quant_default(), a4 = qsur_quant_default(), kv4 = qsur_quant_default();
    a4.symmetric = kv4.symmetric = 0;
    qsur_ostquant *o[2] = {NULL, NULL};
    double secs[2] = {0, 0};
    for (int g = 0; g < 2; g++) {
        op.gpu = g;
        CHECK_OK(qsur_ostquant_new(&o[g], m, &op, &w4, &a4, &kv4, &err), err);
        if (!o[g])
            return;
        double t0 = qsur_seconds();
        CHECK_OK(qsur_ostquant_train(o[g], m, t, NULL, NULL, &err), err);
        secs[g] = qsur_seconds() - t0;
    }
    double worst = 0;
    int n = o[0]->nlog < o[1]->nlog ? o[0]->nlog : o[1]->nlog;
    CHECK(n == op.steps);
    for (int i = 0; i < n; i++) {
        double a = o[0]->log[i].loss, b = o[1]->log[i].loss, e = fabs(a - b) / fmax(fabs(a), 1e-12);
        worst = e > worst ? e : worst;
        if (i == 0 || i == n - 1)
            printf("    step %2d: CPU loss %.6f, GPU %.6f\n", o[0]->log[i].step, a, b);
    }
    const qsur_ostquant_timing *tc = &o[0]->time, *tg = &o[1]->time;
    printf("  %-44s %d steps, losses within %.2e relative; CPU %.2f s (fwd+bwd %.2f), GPU run %.2f s "
           "(fwd+bwd %.2f, fuse %.2f, chain %.2f)\n",
           what, n, worst, secs[0], tc->forward + tc->backward, secs[1], tg->forward + tg->backward,
           tg->fuse, tg->chain);
    CHECK(worst < tol);
    qsur_ostquant_free(o[0]);
    qsur_ostquant_free(o[1]);
}

static void train_stories(void)
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
        return;
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.steps = 10;
    op.qsur_every = 0;
    op.max_seqs = 16;
    train_pair("stories260K W4A4KV4 ostquant", m, &t, op, 1e-3);
    qsur_tokens_free(&t);
    qsur_llama_free(m);
}

static void fill(float *x, size_t n, double a)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((2.0 * check_uniform() - 1.0) * a);
}

/* Llama-2-7B shapes (dim 4096, hidden 11008, 32 heads, vocab 32000), 2 layers,
 * random weights, 2 x 128 tokens a step. */
static void train_real_shape(void)
{
    qsur_error err;
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 4096, c.hidden_dim = 11008, c.n_layers = 2, c.n_heads = 32, c.n_kv_heads = 32;
    c.vocab_size = 32000, c.seq_len = 128, c.shared_classifier = 0;
    qsur_llama *m = NULL;
    CHECK_OK(qsur_llama_config_check(&c, "real shape", &err), err);
    CHECK_OK(qsur_llama_new(&m, &c, &err), err);
    if (!m)
        return;
    check_seed(3);
    fill(m->tok_embeddings, (size_t)c.vocab_size * c.dim, 1.0);
    fill(m->output.w, (size_t)c.vocab_size * c.dim, 1.0 / sqrt(c.dim));
    for (int i = 0; i < c.dim; i++)
        m->norm[i] = 1.0f;
    for (int l = 0; l < c.n_layers; l++) {
        qsur_llama_layer *L = &m->layers[l];
        for (int i = 0; i < c.dim; i++)
            L->attention_norm[i] = L->ffn_norm[i] = 1.0f;
        qsur_llama_linear *lin[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        for (int k = 0; k < 7; k++)
            fill(lin[k]->w, (size_t)(lin[k]->rows * lin[k]->cols), 1.0 / sqrt((double)lin[k]->cols));
    }
    qsur_tokens t = {0};
    t.seq_len = 128;
    t.n = 4 * t.seq_len;
    t.ids = malloc((size_t)t.n * sizeof(int));
    for (int64_t i = 0; t.ids && i < t.n; i++)
        t.ids[i] = (int)(check_uniform() * c.vocab_size) % c.vocab_size;
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.steps = 10;
    op.batch = 2;
    op.womi = 0; /* the Hadamard start: WOMI's eigendecompositions of 4096^2 take long on a CPU */
    op.qsur_every = 0;
    op.threads = 16;
    train_pair("2-layer Llama-2-7B shape W4A4KV4 ostquant", m, &t, op, 1e-3);
    qsur_tokens_free(&t);
    qsur_llama_free(m);
}

int main(void)
{
    qsur_gpu_info info;
    qsur_gpu_probe(&info);
    if (info.count == 0) {
        printf("skipped: no GPU (%s)\n", info.why);
        return 77;
    }
    printf("GPU: %s, %.1f GiB\n", info.name, info.mem_gib);
    passes();
    train_stories();
    if (!getenv("QSUR_GPU_QUICK"))
        train_real_shape();
    return check_done();
}
