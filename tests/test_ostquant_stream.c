/* OSTQuant's passes over the fused model made one linear at a time
 * (src/ostquant_step.c) against the whole fused float model of the same
 * parameters (qsur_ostquant_fuse_into + the runtime's training forward and
 * backward + qsur_ostquant_param_grads, the finite-difference-checked chain
 * rule): the same logits and parameter gradients, on stories260K with
 * quantized weights, activations and KV cache. And a bf16-stored model
 * trains and fuses exactly as its float32 conversion, without its weights
 * ever being made float. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "../src/ostquant_fuse.h"
#include "qsur/half.h"
#include "qsur/llama_store.h"
#include "qsur/quant_ste.h"
#include "qsur/safetensors.h"
#include "qsur/rng.h"
#include "check.h"

static double max_rel(const float *a, const float *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs((double)b[i]));
    }
    return den > 0 ? num / den : num;
}

static double max_rel_d(const double *a, const double *b, int64_t n)
{
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num = fmax(num, fabs(a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return den > 0 ? num / den : num;
}

/* wbits/abits: the quantizers (16 = off). */
static void compare(qsur_llama *m, int wbits, int abits, double tol)
{
    qsur_error err;
    qsur_rng rng;
    qsur_rng_seed(&rng, 7);
    qsur_quant_spec w = qsur_quant_default(), a = qsur_quant_default();
    w.bits = wbits;
    a.bits = abits;
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.learn_qk = 1;
    qsur_ostquant *o = NULL;
    CHECK_OK(qsur_ostquant_new(&o, m, &op, &w, &a, &a, &err), err);
    if (!o)
        return;
    for (int64_t i = 0; i < o->n_ls; i++) /* scales away from 1, so every scale's path counts */
        o->ls[i] = 0.2 * qsur_rng_normal(&rng);
    const qsur_llama_config *c = &o->cfg;
    enum { B = 2, T = 32 };
    int64_t N = B * T, V = c->vocab_size, d = c->dim, nov = qsur_ostq_r_ov_size(o);
    int tok[B * T];
    for (int i = 0; i < B * T; i++)
        tok[i] = (int)qsur_rng_below(&rng, (uint64_t)V);
    float *dz = malloc((size_t)(N * V) * sizeof(float));
    for (int64_t i = 0; i < N * V; i++)
        dz[i] = (float)(1e-3 * qsur_rng_normal(&rng));
    /* the whole fused float model */
    qsur_llama *fm = NULL;
    qsur_llama_tape *t1 = NULL, *t2 = NULL;
    qsur_llama_grads *g = NULL;
    CHECK_OK(qsur_llama_new(&fm, &o->cfg, &err), err);
    CHECK_OK(qsur_ostquant_fuse_into(o, fm, &err), err);
    qsur_ostq_set_hooks(o, fm, o->rot);
    if (wbits < 16)
        CHECK_OK(qsur_llama_quantize_weights(fm, &o->wspec, NULL, &err), err);
    CHECK_OK(qsur_llama_tape_new(&t1, fm, B, T, &err), err);
    CHECK_OK(qsur_llama_grads_new(&g, fm, &err), err);
    CHECK_OK(qsur_llama_train_forward(fm, t1, tok, B, T, &err), err);
    qsur_llama_online_t ot = qsur_llama_rotations_transpose(o->rot);
    CHECK_OK(qsur_llama_backward(fm, t1, dz, &ot, g, &err), err);
    for (int i = 0; wbits < 16 && i < qsur_llama_linear_count(fm); i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(fm, i);
        float *dw[7] = {g->layers[i / 7].d_wq, g->layers[i / 7].d_wk, g->layers[i / 7].d_wv, g->layers[i / 7].d_wo,
                        g->layers[i / 7].d_w1, g->layers[i / 7].d_w2, g->layers[i / 7].d_w3};
        CHECK_OK(qsur_fake_quant_backward(&o->wspec, l->w, l->rows, l->cols, dw[i % 7], dw[i % 7], &err), err);
    }
    double *dr = malloc((size_t)(d * d) * sizeof(double)), *dov = malloc((size_t)nov * sizeof(double));
    double *dls = malloc((size_t)o->n_ls * sizeof(double));
    CHECK_OK(qsur_ostquant_param_grads(o, fm, g, dr, dov, dls, &err), err);
    /* made one linear at a time */
    qsur_llama *sk = NULL;
    qsur_ostq_fused z;
    memset(&z, 0, sizeof z);
    CHECK_OK(qsur_llama_new_stored(&sk, &o->cfg, &err), err);
    CHECK_OK(qsur_llama_tape_new(&t2, sk, B, T, &err), err);
    CHECK_OK(qsur_ostq_fused_new(&z, o, sk, N, wbits < 16, &err), err);
    for (int l = 0; l < c->n_layers; l++)
        qsur_ostq_fuse_norms(o, &z.f, l, sk->layers[l].attention_norm, sk->layers[l].ffn_norm);
    for (int64_t j = 0; j < d; j++)
        sk->norm[j] = 1.0f;
    qsur_ostq_set_hooks(o, sk, o->rot);
    CHECK_OK(qsur_ostq_forward(&z, t2, tok, B, T, &err), err);
    double el = max_rel(t2->logits, t1->logits, N * V);
    CHECK_MSG(el <= tol, "w%d a%d: logits of the streamed fused model within %g of the whole one's (%.3g)", wbits,
              abits, tol, el);
    CHECK_OK(qsur_ostq_backward(&z, t2, dz, &ot, &err), err);
    double *dr2 = malloc((size_t)(d * d) * sizeof(double));
    for (int64_t i = 0; i < d * d; i++)
        dr2[i] = z.dR[i];
    double er = max_rel_d(dr2, dr, d * d), eo = max_rel_d(z.d_r_ov, dov, nov), es = max_rel_d(z.d_ls, dls, o->n_ls);
    if (wbits >= 16 && abits >= 16) { /* every scale an exact equivalence: d_ls is rounding noise near 0 */
        double big = 0;
        for (int64_t i = 0; i < o->n_ls; i++)
            big = fmax(big, fmax(fabs(z.d_ls[i]), fabs(dls[i])));
        CHECK_MSG(big < 1e-5, "w16 a16: the scales' gradients vanish (max %.3g)", big);
        es = 0;
    }
    CHECK_MSG(er <= 100 * tol && eo <= 100 * tol && es <= 100 * tol,
              "w%d a%d: gradients of R_res, R_ov, log s as the whole model's (rel %.3g %.3g %.3g)", wbits, abits, er,
              eo, es);
    free(dr2);
    qsur_ostq_fused_free(&z);
    qsur_llama_free(sk);
    qsur_llama_tape_free(t2);
    free(dr);
    free(dov);
    free(dls);
    qsur_llama_grads_free(g);
    qsur_llama_tape_free(t1);
    qsur_llama_free(fm);
    free(dz);
    qsur_ostquant_free(o);
}

/* Every linear and the embeddings of m in bf16 (owned), rounded from the float ones. */
static void to_bf16(qsur_llama *m)
{
    qsur_error err;
    for (int i = -1; i < qsur_llama_linear_count(m); i++) {
        qsur_llama_linear *l = i < 0 ? &m->embed : qsur_llama_linear_at(m, i);
        CHECK_OK(qsur_llama_linear_own(l, &err), err);
        CHECK_OK(qsur_llama_linear_store_back(l, QSUR_DTYPE_BF16, &err), err);
    }
    qsur_llama_embed_sync(m);
}

static qsur_ostquant *train(qsur_llama *m, const qsur_tokens *t)
{
    qsur_error err;
    qsur_quant_spec w4 = qsur_quant_default(), a8 = qsur_quant_default();
    a8.bits = 8;
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.batch = 2;
    op.max_seqs = 4;
    op.seq_len = 32;
    op.steps = 3;
    op.qsur_every = 0;
    qsur_ostquant *o = NULL;
    CHECK_OK(qsur_ostquant_new(&o, m, &op, &w4, &a8, &a8, &err), err);
    if (o)
        CHECK_OK(qsur_ostquant_train(o, m, t, NULL, NULL, &err), err);
    return o;
}

/* A progress callback that stops at the second tick. */
static int stop_second(void *ctx, double done, const char *what, double value)
{
    (void)done, (void)what, (void)value;
    return ++*(int *)ctx >= 2;
}

/* Ctrl-C during the fusion: no model, the base untouched (still bf16, the
 * same perplexity), and a second fusion completes. */
static void fuse_interrupted(qsur_ostquant *o, qsur_llama *base, const qsur_tokens *t)
{
    qsur_error err;
    qsur_llama_ppl before, after;
    CHECK_OK(qsur_llama_perplexity(base, NULL, t, 32, 2, 2, NULL, &before, &err), err);
    int ticks = 0;
    qsur_progress prog = {stop_second, &ticks};
    qsur_llama *m = NULL;
    qsur_llama_rotations *r = NULL;
    int rc = qsur_ostquant_fuse_model(o, &o->wspec, &prog, &m, &r, &err);
    CHECK_MSG(rc == QSUR_ERR_INTERRUPTED && !m && !r && ticks == 2, "fusion stopped at the second block (rc %d)", rc);
    CHECK_OK(qsur_llama_perplexity(base, NULL, t, 32, 2, 2, NULL, &after, &err), err);
    CHECK_MSG(after.ppl == before.ppl && qsur_llama_linear_dtype(qsur_llama_linear_at(base, 0)) == QSUR_DTYPE_BF16,
              "the base is the model from before the fusion");
    CHECK_OK(qsur_ostquant_fuse_model(o, &o->wspec, NULL, &m, &r, &err), err);
    qsur_llama_free(m);
    qsur_llama_rotations_free(r);
}

/* A bf16 model and its float32 conversion: the same losses and parameters
 * bit for bit, the same quantized fused model (its weights stored in bf16
 * for the bf16 base); the bf16 base's weights stay bf16 throughout. */
static void bf16_as_float(void)
{
    qsur_error err;
    qsur_llama *mb = NULL, *mf = NULL;
    CHECK_OK(qsur_llama_load(&mb, check_shared("data/stories260K.bin"), NULL, &err), err);
    CHECK_OK(qsur_llama_load(&mf, check_shared("data/stories260K.bin"), NULL, &err), err);
    if (!mb || !mf)
        return;
    to_bf16(mb);
    to_bf16(mf);
    CHECK_OK(qsur_llama_own_all(mf, &err), err);
    qsur_tokens t;
    memset(&t, 0, sizeof t);
    CHECK_OK(qsur_tokens_load(&t, check_shared("data/stories260K.calib.u16"), 256, mb->cfg.vocab_size, &err), err);
    qsur_ostquant *ob = train(mb, &t), *of = train(mf, &t);
    if (ob && of) {
        CHECK(ob->base_hash == of->base_hash);
        int same = ob->nlog == of->nlog && ob->nlog == 3;
        for (int i = 0; same && i < ob->nlog; i++)
            same = ob->log[i].loss == of->log[i].loss;
        CHECK_MSG(same, "bf16 model: the float conversion's losses bit for bit (%.9g vs %.9g)", ob->log[2].loss,
                  of->log[2].loss);
        int64_t d = ob->cfg.dim;
        CHECK_MSG(!memcmp(ob->r_res, of->r_res, (size_t)(d * d) * sizeof(double)) &&
                      !memcmp(ob->ls, of->ls, (size_t)ob->n_ls * sizeof(double)),
                  "bf16 model: the same parameters bit for bit");
        int stored = mb->embed.w == NULL;
        for (int i = 0; i < qsur_llama_linear_count(mb); i++)
            stored &= qsur_llama_linear_at(mb, i)->w == NULL;
        CHECK_MSG(stored, "the bf16 base was read through the store, never made float");
        fuse_interrupted(ob, mb, &t);
        qsur_llama *fb = NULL, *ff = NULL;
        qsur_llama_rotations *rb = NULL, *rf = NULL;
        CHECK_OK(qsur_ostquant_fuse_model(ob, &ob->wspec, NULL, &fb, &rb, &err), err);
        CHECK_OK(qsur_ostquant_fuse_model(of, &of->wspec, NULL, &ff, &rf, &err), err);
        if (fb && ff) {
            const qsur_llama_linear *lb = qsur_llama_linear_at(fb, 5), *lf = qsur_llama_linear_at(ff, 5);
            CHECK_MSG(qsur_llama_linear_dtype(lb) == QSUR_DTYPE_BF16 && lb->qp && !lb->w && !lb->wq,
                      "the fused linear of a bf16 base: bf16 weights + packed codes");
            CHECK_MSG(qsur_llama_linear_dtype(lf) == QSUR_DTYPE_F32 && lf->qp, "of a float base: float + codes");
            int codes = 1;
            for (int i = 0; i < qsur_llama_linear_count(fb); i++) {
                const qsur_llama_packed *pb = qsur_llama_linear_at(fb, i)->qp, *pf = qsur_llama_linear_at(ff, i)->qp;
                int64_t n = pb->rows * pb->cols, bytes = pb->spec.bits <= 4 ? (n + 1) / 2 : n;
                codes &= pf && pb->nparams == pf->nparams && !memcmp(pb->codes, pf->codes, (size_t)bytes) &&
                         !memcmp(pb->params, pf->params, (size_t)pb->nparams * sizeof *pb->params);
            }
            CHECK_MSG(codes, "the same codes and scales for every fused linear");
            /* the fused embeddings and classifier: the float ones rounded to bf16 */
            int64_t nv = fb->embed.rows * fb->embed.cols;
            const uint16_t *eb = fb->embed.st.data, *cb = fb->output.st.data;
            int rounded = fb->embed.st.dtype == QSUR_DTYPE_BF16 && fb->output.st.dtype == QSUR_DTYPE_BF16;
            for (int64_t i = 0; rounded && i < nv; i++)
                rounded = eb[i] == qsur_f32_to_bf16(ff->embed.w[i]) && cb[i] == qsur_f32_to_bf16(ff->output.w[i]);
            CHECK_MSG(rounded, "the fused embeddings and classifier of a bf16 base: the float ones in bf16");
        }
        qsur_llama_free(fb);
        qsur_llama_free(ff);
        qsur_llama_rotations_free(rb);
        qsur_llama_rotations_free(rf);
    }
    qsur_ostquant_free(ob);
    qsur_ostquant_free(of);
    qsur_tokens_free(&t);
    qsur_llama_free(mb);
    qsur_llama_free(mf);
}

int main(void)
{
    qsur_error err;
    qsur_llama *m = NULL;
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    if (!m)
        return check_done();
    compare(m, 16, 16, 1e-5);
    compare(m, 4, 8, 1e-5);
    qsur_llama_free(m);
    bf16_as_float();
    return check_done();
}
