/* GPU backend throughput against the GPU's own bf16 GEMM peak, measured in
 * the same run (an 8192^3 cuBLAS bf16 GEMM with fp32 accumulation on random
 * data, mean of 10 after 3 warm-ups).
 *   1. perplexity forward pass of a Llama-2-7B-shape model (random weights made
 *      on the device, bf16), B x 2048 tokens per call: tokens/s and the model
 *      FLOP/s (2 x linear parameters per token + causal attention
 *      4 x dim x T/2 per layer per token) as a fraction of the peak;
 *   2. stories260K perplexity (real checkpoint) in bf16 and fp32 modes;
 *   3. GPTQ (Hessian from 2048 tokens, Cholesky, column loop) of the seven
 *      linears of one 7B-shape block, and that time x 32 for the whole model.
 *   4. the whole-model GPTQ pass on the GPU (qsur_gpu_gptq_model) of the 7B
 *      shape with calibration sequences x 2048 tokens (0: skip).
 *   5. OSTQuant's training passes (qsur_gpu_train_*, fp32) of the 7B shape at
 *      A4KV4 with online Hadamards (q/k, w2's input), random weights made on
 *      the device: forward, KL-Top loss (k = 64, the teacher's logits uploaded)
 *      and backward of one sequence of 2048 tokens, the mean of `reps` after a
 *      warm-up; the gradients' copy to the host and the host KL-Top once.
 *   6. one whole `ostquant model` step of the 7B shape at W4A4KV4 per sequence of
 *      2048 tokens, everything on the GPU but the R_ov and scale optimisers:
 *      the fusion of R_res, R_ov and the scales into the device-resident
 *      (random) base weights, forward, KL-Top, backward, the weights' STE and
 *      the chain rule, Cayley-Adam on R_res (the solve on the GPU); weights
 *      trained quantized (RTN + STE), then float (the paper code's W4A4KV4
 *      protocol); the projected time of a full run.
 * Usage: bench_gpu [batch (8)] [layers (32)] [sequences (16)] [calibration sequences (128)]
 *                  [ostquant passes (3; 0: skip)] [ostquant steps (2; 0: skip)]
 * Prints "no GPU" and exits 0 where none is usable. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/backend.h"
#include "qsur/clock.h"
#include "qsur/llama.h"
#include "qsur/llama_rotations.h"
#include "qsur/ostquant.h"
#include "qsur/rng.h"
#include "qsur/stiefel.h"
#include "qsur/wquant.h"

static const char *shared(const char *rel, char *buf, size_t n)
{
    const char *root = getenv("QSUR_SHARED");
    snprintf(buf, n, "%s/%s", root ? root : "../shared", rel);
    return buf;
}

/* A Llama-2-7B-shape model with `layers` layers, random bf16 weights made on
 * the GPU, buffers for batch x 2048 tokens; and `seqs` x 2048 random tokens. */
static qsur_gpu_model *model7b(int layers, int batch, int seqs, uint64_t seed, qsur_llama_config *c,
                               qsur_tokens *t)
{
    qsur_error err;
    *c = qsur_llama_config_default();
    c->dim = 4096, c->hidden_dim = 11008, c->n_layers = layers, c->n_heads = 32, c->n_kv_heads = 32;
    c->vocab_size = 32000, c->seq_len = 2048, c->shared_classifier = 0;
    qsur_gpu_model *g = NULL;
    if (qsur_llama_config_check(c, "7b shape", &err) ||
        qsur_gpu_model_random(&g, c, QSUR_GPU_BF16, 1, batch, 2048, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    memset(t, 0, sizeof *t);
    t->seq_len = 2048;
    t->n = (int64_t)seqs * 2048;
    t->ids = malloc((size_t)t->n * sizeof(int));
    qsur_rng r;
    qsur_rng_seed(&r, seed);
    for (int64_t i = 0; t->ids && i < t->n; i++)
        t->ids[i] = (int)qsur_rng_below(&r, (uint64_t)c->vocab_size);
    if (!t->ids) {
        qsur_gpu_model_free(g);
        return NULL;
    }
    return g;
}

static int llama7b(double peak, int batch, int layers, int seqs)
{
    qsur_error err;
    qsur_llama_config c;
    qsur_tokens t;
    double t0 = qsur_seconds();
    qsur_gpu_model *g = model7b(layers, batch, seqs, 5, &c, &t);
    if (!g)
        return 1;
    printf("7B shape (%d layers) bf16 on the GPU: %.1f GiB, made in %.1f s\n", layers,
           qsur_gpu_model_bytes(g) / (1 << 30), qsur_seconds() - t0);
    qsur_llama_ppl p;
    qsur_gpu_timing tm;
    int rc = qsur_gpu_perplexity(g, &t, 2048, batch, batch, NULL, &p, &tm, &err); /* warm-up */
    /* the default attention chunk (512 query rows) last, as the headline figure */
    static const int chunks[] = {128, 256, 512};
    for (int i = 0; i < 3 && !rc; i++) {
        rc = qsur_gpu_model_set_att_chunk(g, chunks[i], &err);
        if (!rc)
            rc = qsur_gpu_perplexity(g, &t, 2048, seqs, batch, NULL, &p, &tm, &err);
        if (rc)
            break;
        double lin = (double)layers * (4.0 * c.dim * c.dim + 3.0 * c.dim * c.hidden_dim) +
                     (double)c.vocab_size * c.dim;
        double flop_tok = 2.0 * lin + (double)layers * 4.0 * c.dim * (2048 / 2.0);
        double tps = (double)tm.tokens / tm.seconds, tf = tps * flop_tok / 1e12;
        printf("ppl forward, seqlen 2048, batch %d, %d sequences, attention chunks of %d rows: "
               "%.0f tokens/s, %.1f TFLOP/s (%.2f GFLOP/token) = %.1f %% of the bf16 GEMM peak "
               "(ppl %.1f)\n",
               batch, seqs, chunks[i], tps, tf, flop_tok / 1e9, 100.0 * tf / peak, p.ppl);
    }
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    free(t.ids);
    qsur_gpu_model_free(g);
    return rc;
}

static int stories(void)
{
    char path[1024];
    qsur_error err;
    qsur_llama *m = NULL;
    qsur_tokens t;
    if (qsur_llama_load(&m, shared("data/stories260K.bin", path, sizeof path), NULL, &err) ||
        qsur_tokens_load(&t, shared("data/stories260K.eval.u16", path, sizeof path), 512, 512, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    for (int prec = 0; prec < 2; prec++) {
        qsur_gpu_model *g = NULL;
        qsur_llama_ppl p;
        qsur_gpu_timing tm;
        if (qsur_gpu_model_new(&g, m, prec ? QSUR_GPU_BF16 : QSUR_GPU_F32, 32, 512, NULL, &err) ||
            qsur_gpu_perplexity(g, &t, 512, 0, 32, NULL, &p, &tm, &err) ||
            qsur_gpu_perplexity(g, &t, 512, 0, 32, NULL, &p, &tm, &err)) {
            fprintf(stderr, "%s\n", err.msg);
            qsur_gpu_model_free(g);
            break;
        }
        printf("stories260K %s, seqlen 512, %d sequences: %.0f tokens/s (ppl %.4f)\n",
               prec ? "bf16" : "fp32", p.n_seqs, (double)tm.tokens / tm.seconds, p.ppl);
        qsur_gpu_model_free(g);
    }
    qsur_tokens_free(&t);
    qsur_llama_free(m);
    return 0;
}

static int gptq_block(void)
{
    const int64_t n_tok = 2048, shapes[4][2] = {{4096, 4096}, {4096, 4096}, {11008, 4096}, {4096, 11008}};
    const int count[4] = {3, 1, 2, 1}; /* wq wk wv | wo | w1 w3 | w2 */
    qsur_rng r;
    qsur_rng_seed(&r, 9);
    qsur_quant_spec spec = qsur_quant_default();
    qsur_gptq_opts o = qsur_gptq_default();
    double total = 0;
    for (int s = 0; s < 4; s++) {
        int64_t rows = shapes[s][0], cols = shapes[s][1];
        float *W = malloc((size_t)(rows * cols) * 4), *X = malloc((size_t)(n_tok * cols) * 4);
        float *Q = malloc((size_t)(rows * cols) * 4);
        if (!W || !X || !Q)
            return fprintf(stderr, "out of memory\n"), 1;
        for (int64_t i = 0; i < rows * cols; i++)
            W[i] = (float)((qsur_rng_uniform(&r) - 0.5) * 0.03);
        for (int64_t i = 0; i < n_tok * cols; i++)
            X[i] = (float)qsur_rng_normal(&r);
        qsur_wquant_layer L = {W, rows, cols, X, n_tok, NULL};
        qsur_error err;
        double t0 = qsur_seconds();
        int rc = qsur_gpu_gptq(&L, &spec, &o, Q, &err);
        double dt = qsur_seconds() - t0;
        if (rc)
            return fprintf(stderr, "%s\n", err.msg), 1;
        printf("gptq %lldx%lld (H from %lld tokens on the GPU): %.2f s\n", (long long)rows,
               (long long)cols, (long long)n_tok, dt);
        total += dt * count[s];
        free(W), free(X), free(Q);
    }
    printf("gptq of one 7B block (7 linears): %.1f s; 32 blocks: %.1f min (capture forward passes "
           "not included)\n", total, total * 32 / 60);
    return 0;
}

/* The whole-model pass (qsur_gpu_gptq_model) on the 7B shape, bf16 forward,
 * `seqs` x 2048 random calibration tokens, int4 per row. */
static int gptq_model(int layers, int seqs)
{
    qsur_error err;
    qsur_llama_config c;
    qsur_tokens t;
    qsur_gpu_model *g = model7b(layers, 8, seqs, 7, &c, &t);
    if (!g)
        return 1;
    qsur_quant_spec spec = qsur_quant_default();
    qsur_gptq_opts o = qsur_gptq_default();
    double t0 = qsur_seconds();
    int rc = qsur_gpu_gptq_model(g, NULL, &t, 2048, seqs, &spec, &o, NULL, NULL, &err);
    double dt = qsur_seconds() - t0;
    if (rc)
        fprintf(stderr, "%s\n", err.msg);
    else
        printf("gptq model, 7B shape (%d layers), int4 per row, %d x 2048 calibration tokens, all on "
               "the GPU (bf16 forward, fp64 Hessians and GPTQ): %.1f s = %.2f min\n", layers, seqs, dt,
               dt / 60);
    free(t.ids);
    qsur_gpu_model_free(g);
    return rc;
}

/* The Llama-2-7B shape with `layers` layers, sequences of 2048. */
static qsur_llama_config shape7b(int layers)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 4096, c.hidden_dim = 11008, c.n_layers = layers, c.n_heads = 32, c.n_kv_heads = 32;
    c.vocab_size = 32000, c.seq_len = 2048, c.shared_classifier = 0;
    return c;
}

/* OSTQuant's W4A4KV4 activation hooks: A4 asymmetric per token, KV4 per head. */
static qsur_llama_hooks a4kv4_hooks(void)
{
    qsur_llama_hooks h = qsur_llama_hooks_none();
    h.act = qsur_quant_default();
    h.act.bits = 4;
    h.act.symmetric = 0;
    h.kv = h.act;
    return h;
}

/* Section 5 (see the header). */
static int ostq_passes(int layers, int reps)
{
    qsur_error err;
    qsur_llama_config c = shape7b(layers);
    const int T = 2048;
    const int64_t V = c.vocab_size;
    qsur_llama_rotations *r = NULL;
    qsur_gpu_train *t = NULL;
    qsur_llama_grads *g = NULL;
    qsur_llama host; /* only its hooks: the rotations attach there */
    memset(&host, 0, sizeof host);
    host.cfg = c;
    host.hooks = a4kv4_hooks();
    float *z = malloc((size_t)T * V * sizeof(float)), *zfp = malloc((size_t)T * V * sizeof(float));
    float *dz = malloc((size_t)T * V * sizeof(float));
    int *tok = malloc((size_t)T * sizeof(int));
    double t0 = qsur_seconds(), fwd = 0, loss = 0, bwd = 0, down = 0;
    int rc = z && zfp && dz && tok ? QSUR_OK : qsur_fail(&err, QSUR_ERR_NOMEM, "out of memory");
    if (!rc)
        rc = qsur_llama_config_check(&c, "7b shape", &err);
    if (!rc) {
        host.cfg = c;
        rc = qsur_llama_rotations_new(&r, &c, 1, 1, 7, &err);
    }
    if (!rc) {
        qsur_llama_rotations_attach(r, &host);
        rc = qsur_gpu_train_new(&t, &c, 1, T, &err);
    }
    if (!rc)
        rc = qsur_gpu_train_random(t, &host.hooks, 1, &err);
    if (!rc)
        rc = qsur_llama_grads_new(&g, &host, &err);
    if (rc) {
        fprintf(stderr, "ostquant passes: %s\n", err.msg);
        goto done;
    }
    printf("ostquant passes, 7B shape (%d layers) fp32 on the GPU: %.1f GiB (weights, gradients, tape), "
           "made in %.1f s\n", layers, qsur_gpu_train_bytes(t) / 1073741824.0, qsur_seconds() - t0);
    qsur_rng rg;
    qsur_rng_seed(&rg, 9);
    for (int i = 0; i < T; i++)
        tok[i] = (int)qsur_rng_below(&rg, (uint64_t)V);
    /* warm-up: the logits once, a teacher from them (nudged), the host loss's time */
    double kl = 0, host_loss = 0;
    rc = qsur_gpu_train_zero(t, &err);
    if (!rc)
        rc = qsur_gpu_train_forward(t, tok, z, &err);
    if (!rc) {
        for (int64_t j = 0; j < T * V; j++)
            zfp[j] = z[j] * 1.01f;
        double a = qsur_seconds();
        qsur_ostquant_loss_eval(QSUR_OSTQ_KLTOP, 64, z, zfp, tok, 1, T, (int)V, dz, &kl);
        host_loss = qsur_seconds() - a;
    }
    for (int i = 0; i <= reps && !rc; i++) {
        double a = qsur_seconds();
        rc = qsur_gpu_train_zero(t, &err);
        if (!rc)
            rc = qsur_gpu_train_forward(t, tok, NULL, &err);
        double b = qsur_seconds();
        if (!rc)
            rc = qsur_gpu_train_kltop(t, zfp, 64, 1.0, &kl, &err);
        double cc = qsur_seconds();
        if (!rc)
            rc = qsur_gpu_train_backward(t, NULL, &err);
        double d = qsur_seconds();
        if (!rc && i == reps)
            rc = qsur_gpu_train_grads(t, g, &err);
        double e = qsur_seconds();
        if (i > 0)
            fwd += b - a, loss += cc - b, bwd += d - cc;
        if (i == reps)
            down = e - d;
    }
    if (rc) {
        fprintf(stderr, "ostquant passes: %s\n", err.msg);
        goto done;
    }
    double f = fwd / reps, l = loss / reps, bw = bwd / reps;
    /* model FLOPs of forward + backward: 3 x (2 x linear parameters + causal attention 4 x dim x T/2
     * per layer) per token, the online transforms' dense GEMMs not counted */
    double lin = (double)layers * (4.0 * 4096 * 4096 + 3.0 * 4096 * 11008) + 2.0 * 32000 * 4096;
    double flop = 3.0 * T * (2.0 * lin + (double)layers * 4.0 * 4096 * T / 2.0);
    printf("ostquant passes, 1 x %d tokens, A4KV4 + online Hadamards (mean of %d): forward %.3f s, KL-Top "
           "(teacher logits up, loss, dL/dlogits) %.3f s, backward %.3f s: %.3f s per sequence = %.1f TFLOP/s "
           "(fp32); gradients to the host %.2f s; the KL-Top on the host instead: %.2f s\n",
           T, reps, f, l, bw, f + l + bw, flop / (f + l + bw) / 1e12, down, host_loss);
done:
    qsur_llama_grads_free(g);
    qsur_gpu_train_free(t);
    qsur_llama_rotations_free(r);
    free(z);
    free(zfp);
    free(dz);
    free(tok);
    return rc ? 1 : 0;
}

/* Section 6: the optimisers of one step (R_res's Cayley-Adam with the solve
 * on the GPU, every R_ov's on the CPU, Adam on the log-scales): seconds of
 * R_res's, of the rest. */
typedef struct {
    qsur_stiefel_adam *res, **ov;
    qsur_adam *ls;
    int nov;
} step_opt;

static void opt_free(step_opt *s)
{
    qsur_stiefel_adam_free(s->res);
    for (int i = 0; s->ov && i < s->nov; i++)
        qsur_stiefel_adam_free(s->ov[i]);
    free(s->ov);
    qsur_adam_free(s->ls);
}

static int opt_new(step_opt *s, const qsur_ostquant *o, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    memset(s, 0, sizeof *s);
    s->nov = c->n_layers * c->n_kv_heads;
    s->ov = calloc((size_t)s->nov, sizeof *s->ov);
    if (!s->ov)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    int rc = qsur_stiefel_adam_new(&s->res, c->dim, err);
    if (!rc)
        rc = qsur_stiefel_adam_use_gpu(s->res, 1, err);
    for (int i = 0; i < s->nov && !rc; i++)
        rc = qsur_stiefel_adam_new(&s->ov[i], c->head_size, err);
    return rc ? rc : qsur_adam_new(&s->ls, o->n_ls, err);
}

static int opt_step(step_opt *s, qsur_ostquant *o, const double *dr, const double *dov, const double *dls,
                    double *t_res, double *t_rest, qsur_error *err)
{
    int64_t hs2 = (int64_t)o->cfg.head_size * o->cfg.head_size;
    double a = qsur_seconds();
    int rc = qsur_stiefel_adam_step(s->res, o->r_res, dr, 0.01, err);
    double b = qsur_seconds();
    for (int i = 0; i < s->nov && !rc; i++)
        rc = qsur_stiefel_adam_step(s->ov[i], o->r_ov + i * hs2, dov + i * hs2, 0.01, err);
    qsur_adam_step(s->ls, o->ls, dls, 0.01);
    *t_res += b - a;
    *t_rest += qsur_seconds() - b;
    return rc;
}

/* An OSTQuant state of the 7B shape for the benchmark, made by hand (the
 * base's weights are random on the device, so there is no host base to hash
 * or fold): identity R_res and R_ov, scales 1, the online w2 and q/k
 * Hadamards. */
static int ostq_state(qsur_ostquant *o, const qsur_llama_config *c, qsur_error *err)
{
    memset(o, 0, sizeof *o);
    o->opts = qsur_ostquant_default();
    o->cfg = *c;
    int64_t d = c->dim, nov = (int64_t)c->n_layers * c->n_kv_heads * c->head_size * c->head_size;
    o->n_ls = (int64_t)c->n_layers * (2 * d + c->kv_dim + c->hidden_dim);
    o->r_res = calloc((size_t)(d * d), sizeof(double));
    o->r_ov = calloc((size_t)nov, sizeof(double));
    o->ls = calloc((size_t)o->n_ls, sizeof(double));
    if (!o->r_res || !o->r_ov || !o->ls)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    for (int64_t i = 0; i < d; i++)
        o->r_res[i * d + i] = 1.0;
    for (int64_t b = 0; b < nov / ((int64_t)c->head_size * c->head_size); b++)
        for (int64_t i = 0; i < c->head_size; i++)
            o->r_ov[b * c->head_size * c->head_size + i * c->head_size + i] = 1.0;
    return qsur_llama_rotations_new(&o->rot, c, 1, 1, 7, err);
}

/* Section 6 (see the header): one whole model-scope step per sequence. */
static int ostq_step(int layers, int reps, int wquant)
{
    qsur_error err;
    qsur_llama_config c = shape7b(layers);
    const int T = 2048;
    const int64_t V = c.vocab_size;
    qsur_ostquant o;
    step_opt so;
    memset(&so, 0, sizeof so);
    qsur_gpu_train *t = NULL;
    qsur_gpu_ostq *go = NULL;
    qsur_llama host; /* only its hooks */
    memset(&host, 0, sizeof host);
    host.hooks = a4kv4_hooks();
    qsur_quant_spec w4 = qsur_quant_default();
    float *zfp = malloc((size_t)T * V * sizeof(float));
    int *tok = malloc((size_t)T * sizeof(int));
    int64_t d = c.dim, nov = (int64_t)layers * 32 * 128 * 128;
    double *dr = malloc((size_t)(d * d) * sizeof(double)), *dov = malloc((size_t)nov * sizeof(double));
    double *dls = NULL, t0 = qsur_seconds();
    int rc = zfp && tok && dr && dov ? qsur_llama_config_check(&c, "7b shape", &err)
                                     : qsur_fail(&err, QSUR_ERR_NOMEM, "out of memory");
    if (!rc && !(rc = ostq_state(&o, &c, &err)))
        rc = (dls = malloc((size_t)o.n_ls * sizeof(double))) ? QSUR_OK : qsur_fail(&err, QSUR_ERR_NOMEM, "memory");
    if (!rc) {
        host.cfg = c;
        qsur_llama_rotations_attach(o.rot, &host);
        rc = qsur_gpu_train_new(&t, &c, 1, T, &err);
    }
    if (!rc)
        rc = qsur_gpu_ostq_new(&go, t, &o, &host.hooks, wquant ? &w4 : NULL, 1, &err);
    if (!rc)
        rc = opt_new(&so, &o, &err);
    if (rc) {
        fprintf(stderr, "ostquant step: %s\n", err.msg);
        goto done;
    }
    printf("ostquant step, 7B shape (%d layers), W4A4KV4 (weights %s in training): GPU memory %.1f GiB "
           "(training buffers %.1f, base weights fp32 + scratch %.1f), set up in %.1f s\n",
           layers, wquant ? "RTN + STE" : "float", (qsur_gpu_train_bytes(t) + qsur_gpu_ostq_bytes(go)) / 1073741824.0,
           qsur_gpu_train_bytes(t) / 1073741824.0, qsur_gpu_ostq_bytes(go) / 1073741824.0, qsur_seconds() - t0);
    qsur_rng rg;
    qsur_rng_seed(&rg, 9);
    for (int i = 0; i < T; i++)
        tok[i] = (int)qsur_rng_below(&rg, (uint64_t)V);
    /* a teacher: the first fused model's logits, nudged */
    if (!(rc = qsur_gpu_ostq_fuse(go, &o, &err)) && !(rc = qsur_gpu_train_forward(t, tok, zfp, &err)))
        for (int64_t j = 0; j < T * V; j++)
            zfp[j] *= 1.01f;
    double tm[7] = {0, 0, 0, 0, 0, 0, 0}; /* fuse fwd kltop bwd chain res rest */
    for (int i = 0; i <= reps && !rc; i++) {
        double a[6], kl;
        a[0] = qsur_seconds();
        rc = qsur_gpu_ostq_fuse(go, &o, &err);
        a[1] = qsur_seconds();
        if (!rc && !(rc = qsur_gpu_train_zero(t, &err)))
            rc = qsur_gpu_train_forward(t, tok, NULL, &err);
        a[2] = qsur_seconds();
        if (!rc)
            rc = qsur_gpu_train_kltop(t, zfp, 64, 1.0, &kl, &err);
        a[3] = qsur_seconds();
        if (!rc)
            rc = qsur_gpu_train_backward(t, NULL, &err);
        a[4] = qsur_seconds();
        if (!rc)
            rc = qsur_gpu_ostq_grads(go, &o, dr, dov, dls, &err);
        a[5] = qsur_seconds();
        double r0 = 0, r1 = 0;
        if (!rc)
            rc = opt_step(&so, &o, dr, dov, dls, &r0, &r1, &err);
        if (i == 0)
            continue; /* warm-up */
        for (int k = 0; k < 5; k++)
            tm[k] += a[k + 1] - a[k];
        tm[5] += r0, tm[6] += r1;
    }
    if (rc) {
        fprintf(stderr, "ostquant step: %s\n", err.msg);
        goto done;
    }
    for (int k = 0; k < 7; k++)
        tm[k] /= reps;
    double pass = tm[1] + tm[2] + tm[3], fixed = tm[0] + tm[4] + tm[5] + tm[6];
    printf("ostquant step, 1 x %d tokens (mean of %d after a warm-up): fuse %.3f s, forward %.3f s, KL-Top %.3f s, "
           "backward %.3f s, STE + chain rule %.3f s, Cayley-Adam R_res (GPU solve) %.3f s, R_ov (CPU) + scales "
           "%.3f s: %.3f s per step\n",
           T, reps, tm[0], tm[1], tm[2], tm[3], tm[4], tm[5], tm[6], pass + fixed);
    /* a step of batch B runs B sequences as micro-batches, the fusion, chain rule and optimiser once */
    printf("ostquant projection (128 x 2048 calibration tokens; the teacher's logits not counted): "
           "100 steps x batch 4 (the code's run.sh: 400 sequences, 3.1 epochs) %.1f s = %.1f min; "
           "200 steps x batch 8 (its argument defaults: 1600 sequences, 12.5 epochs) %.1f s = %.1f min\n",
           100 * (fixed + 4 * pass), 100 * (fixed + 4 * pass) / 60, 200 * (fixed + 8 * pass),
           200 * (fixed + 8 * pass) / 60);
done:
    opt_free(&so);
    qsur_gpu_ostq_free(go);
    qsur_gpu_train_free(t);
    qsur_llama_rotations_free(o.rot);
    free(o.r_res);
    free(o.r_ov);
    free(o.ls);
    free(zfp);
    free(tok);
    free(dr);
    free(dov);
    free(dls);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    int batch = argc > 1 ? atoi(argv[1]) : 8, layers = argc > 2 ? atoi(argv[2]) : 32;
    int seqs = argc > 3 ? atoi(argv[3]) : 16;
    qsur_gpu_info info;
    qsur_gpu_probe(&info);
    if (info.count == 0) {
        printf("no GPU (%s)\n", info.why);
        return 0;
    }
    qsur_error err;
    double peak = 0;
    if (qsur_gpu_bf16_peak(8192, 10, &peak, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    printf("GPU %s, %.1f GiB; bf16 GEMM peak (8192^3, fp32 accumulation): %.1f TFLOP/s\n", info.name,
           info.mem_gib, peak);
    int rc = stories();
    rc |= llama7b(peak, batch, layers, seqs);
    rc |= gptq_block();
    int calib = argc > 4 ? atoi(argv[4]) : 128;
    if (calib > 0)
        rc |= gptq_model(layers, calib);
    int passes = argc > 5 ? atoi(argv[5]) : 3;
    if (passes > 0)
        rc |= ostq_passes(layers, passes);
    int steps = argc > 6 ? atoi(argv[6]) : 2;
    for (int wq = 1; wq >= 0 && steps > 0; wq--)
        rc |= ostq_step(layers, steps, wq);
    return rc;
}
