/* The Llama forward pass against a naive double-precision reference written
 * here from the math (own rmsnorm, rope, attention, silu), plus the KV cache,
 * batching, online-transform hooks, capture, token files and model checks. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/llama.h"

enum { DIM = 16, HID = 40, NL = 2, NH = 4, NKV = 2, VOC = 32, T = 70, HS = DIM / NH,
       KVD = HS * NKV };

static uint64_t rng_state = 12345;
static double urand(void) /* uniform [-1, 1) */
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng_state >> 11) * 0x1.0p-52 - 1.0;
}

static void put(qsur_workspace *ws, const char *name, int64_t r, int64_t c, double scale,
                double offset)
{
    qsur_error err;
    qsur_tensor *t = NULL;
    if (r)
        qsur_tensor_new2(&t, name, r, c, &err);
    else
        qsur_tensor_new(&t, name, 1, &c, &err);
    for (int64_t i = 0; i < qsur_tensor_numel(t); i++)
        t->data[i] = (float)(offset + scale * urand());
    qsur_workspace_put(ws, t, &err);
}

static void make_weights(qsur_workspace *ws, int shared)
{
    char n[96];
    put(ws, "tok_embeddings", VOC, DIM, 1.0, 0);
    for (int l = 0; l < NL; l++) {
#define P(part, r, c, s, o) snprintf(n, sizeof n, "layers.%d.%s", l, part); put(ws, n, r, c, s, o);
        P("attention_norm", 0, DIM, 0.3, 1.0)
        P("attention.wq", DIM, DIM, 0.5, 0)
        P("attention.wk", KVD, DIM, 0.5, 0)
        P("attention.wv", KVD, DIM, 0.5, 0)
        P("attention.wo", DIM, DIM, 0.5, 0)
        P("ffn_norm", 0, DIM, 0.3, 1.0)
        P("feed_forward.w1", HID, DIM, 0.5, 0)
        P("feed_forward.w2", DIM, HID, 0.3, 0)
        P("feed_forward.w3", HID, DIM, 0.5, 0)
#undef P
    }
    put(ws, "norm", 0, DIM, 0.3, 1.0);
    if (!shared)
        put(ws, "output", VOC, DIM, 0.5, 0);
}

static qsur_llama_config tiny_config(int shared)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = DIM;
    c.hidden_dim = HID;
    c.n_layers = NL;
    c.n_heads = NH;
    c.n_kv_heads = NKV;
    c.vocab_size = VOC;
    c.seq_len = 32;
    c.shared_classifier = shared;
    return c;
}

/* ---- the reference: straight from the equations, double precision -------- */

static const float *W(const qsur_workspace *ws, const char *fmt, int l)
{
    char n[96];
    snprintf(n, sizeof n, fmt, l);
    return qsur_workspace_find(ws, n)->data;
}

static void ref_rmsnorm(double *o, const double *x, const float *g, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += x[i] * x[i];
    double r = 1.0 / sqrt(ss / n + 1e-5);
    for (int i = 0; i < n; i++)
        o[i] = x[i] * r * g[i];
}

static void ref_matvec(double *o, const float *w, const double *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        double s = 0;
        for (int c = 0; c < cols; c++)
            s += (double)w[r * cols + c] * x[c];
        o[r] = s;
    }
}

/* Rotates pair (2i, 2i+1) of every head by pos * 10000^(-2i/HS). */
static void ref_rope(double *v, int nheads, int pos)
{
    for (int h = 0; h < nheads; h++)
        for (int i = 0; i < HS / 2; i++) {
            double a = pos * pow(10000.0, -2.0 * i / HS);
            double x0 = v[h * HS + 2 * i], x1 = v[h * HS + 2 * i + 1];
            v[h * HS + 2 * i] = x0 * cos(a) - x1 * sin(a);
            v[h * HS + 2 * i + 1] = x0 * sin(a) + x1 * cos(a);
        }
}

static void ref_forward(const qsur_workspace *ws, int shared, const int *tok, int n,
                        double *logits, double *attn_in0)
{
    static double x[T][DIM], xn[T][DIM], q[T][DIM], k[T][KVD], v[T][KVD], a[T][DIM], o[DIM];
    static double h1[HID], h3[HID];
    for (int t = 0; t < n; t++)
        for (int i = 0; i < DIM; i++)
            x[t][i] = qsur_workspace_find(ws, "tok_embeddings")->data[tok[t] * DIM + i];
    for (int l = 0; l < NL; l++) {
        for (int t = 0; t < n; t++) {
            ref_rmsnorm(xn[t], x[t], W(ws, "layers.%d.attention_norm", l), DIM);
            if (l == 0 && t == 0 && attn_in0)
                memcpy(attn_in0, xn[0], sizeof xn[0]);
            ref_matvec(q[t], W(ws, "layers.%d.attention.wq", l), xn[t], DIM, DIM);
            ref_matvec(k[t], W(ws, "layers.%d.attention.wk", l), xn[t], KVD, DIM);
            ref_matvec(v[t], W(ws, "layers.%d.attention.wv", l), xn[t], KVD, DIM);
            ref_rope(q[t], NH, t);
            ref_rope(k[t], NKV, t);
        }
        for (int t = 0; t < n; t++)
            for (int h = 0; h < NH; h++) {
                int g = h / (NH / NKV);
                double sc[T], mx = -1e300, sum = 0;
                for (int s = 0; s <= t; s++) {
                    double d = 0;
                    for (int i = 0; i < HS; i++)
                        d += q[t][h * HS + i] * k[s][g * HS + i];
                    sc[s] = d / sqrt((double)HS);
                    mx = fmax(mx, sc[s]);
                }
                for (int s = 0; s <= t; s++)
                    sum += (sc[s] = exp(sc[s] - mx));
                for (int i = 0; i < HS; i++) {
                    double acc = 0;
                    for (int s = 0; s <= t; s++)
                        acc += sc[s] / sum * v[s][g * HS + i];
                    a[t][h * HS + i] = acc;
                }
            }
        for (int t = 0; t < n; t++) {
            ref_matvec(o, W(ws, "layers.%d.attention.wo", l), a[t], DIM, DIM);
            for (int i = 0; i < DIM; i++)
                x[t][i] += o[i];
            ref_rmsnorm(xn[t], x[t], W(ws, "layers.%d.ffn_norm", l), DIM);
            ref_matvec(h1, W(ws, "layers.%d.feed_forward.w1", l), xn[t], HID, DIM);
            ref_matvec(h3, W(ws, "layers.%d.feed_forward.w3", l), xn[t], HID, DIM);
            for (int i = 0; i < HID; i++)
                h1[i] = h1[i] / (1.0 + exp(-h1[i])) * h3[i];
            ref_matvec(o, W(ws, "layers.%d.feed_forward.w2", l), h1, DIM, HID);
            for (int i = 0; i < DIM; i++)
                x[t][i] += o[i];
        }
    }
    const float *cls = qsur_workspace_find(ws, shared ? "tok_embeddings" : "output")->data;
    for (int t = 0; t < n; t++) {
        ref_rmsnorm(xn[t], x[t], qsur_workspace_find(ws, "norm")->data, DIM);
        ref_matvec(logits + t * VOC, cls, xn[t], VOC, DIM);
    }
}

/* max |a-b| / max |b| over n values */
static double rel_diff(const float *a, const double *b, int n)
{
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return d / s;
}

static double rel_diff_ff(const float *a, const float *b, int n)
{
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / s;
}

/* An online transform for the hooks: the Householder reflection
 * H = I - 2 u u^T / (u^T u), orthogonal and its own inverse. */
typedef struct { double u[HID]; int n; } householder;
static void householder_apply(void *ctx, float *rows, int64_t nrows, int64_t n)
{
    householder *h = ctx;
    double uu = 0;
    for (int i = 0; i < n; i++)
        uu += h->u[i] * h->u[i];
    for (int64_t r = 0; r < nrows; r++) {
        float *x = rows + r * n;
        double d = 0;
        for (int i = 0; i < n; i++)
            d += x[i] * h->u[i];
        for (int i = 0; i < n; i++)
            x[i] = (float)(x[i] - 2 * d / uu * h->u[i]);
    }
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

int main(void)
{
    qsur_error err;
    /* T = 70 > the forward's 32-row attention blocks, so blocking is covered */
    int tok[T], tok2[T];
    for (int t = 0; t < T; t++) {
        tok[t] = (int)((urand() + 1) * 0.5 * VOC) % VOC;
        tok2[t] = (int)((urand() + 1) * 0.5 * VOC) % VOC;
    }
    tok[3] = VOC - 1;
    tok2[5] = 0;
    static double ref[T * VOC], ref2[T * VOC], ref_in0[DIM];

    for (int shared = 0; shared <= 1; shared++) {
        qsur_workspace ws;
        qsur_workspace_init(&ws);
        make_weights(&ws, shared);
        qsur_llama_config cfg = tiny_config(shared);
        qsur_llama *m = NULL;
        CHECK_OK(qsur_llama_from_workspace(&m, &ws, NULL, &cfg, &err), err);
        if (!m)
            return check_done();
        CHECK(m->cfg.head_size == HS && m->cfg.kv_dim == KVD);
        CHECK((m->output.w == m->tok_embeddings) == shared);
        ref_forward(&ws, shared, tok, T, ref, ref_in0);
        ref_forward(&ws, shared, tok2, T, ref2, NULL);

        /* batch of one, then two sequences in one call */
        qsur_llama_state *s = NULL;
        CHECK_OK(qsur_llama_state_new(&s, m, 2, T, &err), err);
        CHECK_OK(qsur_llama_forward(m, s, tok, 1, T, 0, &err), err);
        double r1 = rel_diff(s->logits, ref, T * VOC);
        printf("shared=%d: batch-of-1 logits vs double reference: max rel diff %.3g\n", shared, r1);
        CHECK(r1 < 1e-4);
        int both[2 * T];
        memcpy(both, tok2, sizeof tok2);
        memcpy(both + T, tok, sizeof tok);
        CHECK_OK(qsur_llama_forward(m, s, both, 2, T, 0, &err), err);
        CHECK(rel_diff(s->logits, ref2, T * VOC) < 1e-4);
        CHECK(rel_diff(s->logits + T * VOC, ref, T * VOC) < 1e-4);

        /* KV cache: token by token, and in chunks 3 + 4, equal the batch forward */
        static float inc[T * VOC];
        for (int t = 0; t < T; t++) {
            CHECK_OK(qsur_llama_forward(m, s, &tok[t], 1, 1, t, &err), err);
            memcpy(inc + t * VOC, s->logits, VOC * sizeof(float));
        }
        CHECK(rel_diff(inc, ref, T * VOC) < 1e-4);
        CHECK_OK(qsur_llama_forward(m, s, tok, 1, 3, 0, &err), err);
        CHECK_OK(qsur_llama_forward(m, s, tok + 3, 1, T - 3, 3, &err), err);
        CHECK(rel_diff(s->logits, ref + 3 * VOC, (T - 3) * VOC) < 1e-4);
        /* a position that does not continue the cache is refused */
        CHECK(qsur_llama_forward(m, s, tok, 1, 1, 5, &err) == QSUR_ERR_ARG);
        CHECK(qsur_llama_forward(m, s, tok, 1, 2, T - 1, &err) == QSUR_ERR_ARG);
        int badtok = VOC;
        CHECK(qsur_llama_forward(m, s, &badtok, 1, 1, 0, &err) == QSUR_ERR_ARG &&
              strstr(err.msg, "32") != NULL);

        /* greedy generation equals argmax of full recomputation on the prefix */
        int gen[5], seq[T] = {0};
        seq[0] = tok[0];
        seq[1] = tok[1];
        CHECK_OK(qsur_llama_generate(m, NULL, seq, 2, 5, gen, &err), err);
        int ok = 1;
        for (int i = 0; i < 5; i++) {
            static double lg[T * VOC];
            ref_forward(&ws, shared, seq, 2 + i, lg, NULL);
            int best = 0;
            for (int j = 1; j < VOC; j++)
                if (lg[(1 + i) * VOC + j] > lg[(1 + i) * VOC + best])
                    best = j;
            ok &= gen[i] == best;
            seq[2 + i] = gen[i];
        }
        CHECK_MSG(ok, "greedy tokens differ from the reference argmax");

        /* online hooks: x -> x H entering w2 (hidden) and per head entering wo,
         * with W -> W H, leave the logits unchanged (H orthogonal) */
        householder h2 = {.n = HID}, ho = {.n = HS};
        for (int i = 0; i < HID; i++)
            h2.u[i] = urand();
        for (int i = 0; i < HS; i++)
            ho.u[i] = urand();
        for (int l = 0; l < NL; l++) {
            householder_apply(&h2, m->layers[l].w2.w, DIM, HID);         /* rows of W2 times H */
            householder_apply(&ho, m->layers[l].wo.w, DIM * NH, HS);     /* W_o (I (x) H) */
        }
        m->hooks.w2_in = (qsur_llama_online){householder_apply, &h2};
        m->hooks.wo_in = (qsur_llama_online){householder_apply, &ho};
        m->hooks.qk = (qsur_llama_online){householder_apply, &ho}; /* q.k unchanged */
        CHECK_OK(qsur_llama_forward(m, s, tok, 1, T, 0, &err), err);
        CHECK(rel_diff(s->logits, ref, T * VOC) < 1e-4);
        m->hooks.qk.apply = NULL;
        m->hooks.wo_in.apply = NULL; /* one side alone must change the result */
        CHECK_OK(qsur_llama_forward(m, s, tok, 1, T, 0, &err), err);
        CHECK(rel_diff(s->logits, ref, T * VOC) > 1e-3);
        m->hooks = qsur_llama_hooks_none();
        for (int l = 0; l < NL; l++) {
            householder_apply(&h2, m->layers[l].w2.w, DIM, HID);
            householder_apply(&ho, m->layers[l].wo.w, DIM * NH, HS);
        }

        /* weight / activation / KV fake quant: 8 bits moves the logits a little,
         * undoing restores them exactly */
        qsur_quant_spec q8 = qsur_quant_default();
        q8.bits = 8;
        CHECK_OK(qsur_llama_quantize_weights(m, &q8, NULL, &err), err);
        CHECK(m->layers[1].w2.wq != NULL && !qsur_llama_linear_is_quantized(&m->output));
        m->hooks.act = q8;
        m->hooks.kv = q8;
        CHECK_OK(qsur_llama_forward(m, s, tok, 1, T, 0, &err), err);
        double rq = rel_diff(s->logits, ref, T * VOC);
        printf("shared=%d: w8a8kv8 logits rel diff %.3g\n", shared, rq);
        CHECK(rq > 1e-5 && rq < 0.1);
        qsur_llama_dequantize_weights(m);
        m->hooks = qsur_llama_hooks_none();
        CHECK_OK(qsur_llama_forward(m, s, tok, 1, T, 0, &err), err);
        CHECK(rel_diff(s->logits, ref, T * VOC) < 1e-4);

        /* capture: shapes, content against the reference, seeded subsets */
        qsur_tokens tk = {.ids = both, .n = 2 * T, .seq_len = T};
        qsur_workspace cap;
        qsur_workspace_init(&cap);
        int64_t ntok = 0;
        CHECK_OK(qsur_llama_capture(m, NULL, &tk, 0, 0, 2, 0, 1, &cap, &ntok, NULL, &err), err);
        CHECK(ntok == 2 * T && cap.count == NL * 6);
        qsur_tensor *ai = qsur_workspace_find(&cap, "layers.1.attention.in");
        qsur_tensor *w2i = qsur_workspace_find(&cap, "layers.0.feed_forward.w2.in");
        qsur_tensor *kk = qsur_workspace_find(&cap, "layers.1.attention.k");
        CHECK(ai && ai->shape[0] == 2 * T && ai->shape[1] == DIM);
        CHECK(w2i && w2i->shape[1] == HID);
        CHECK(kk && kk->shape[1] == KVD && qsur_workspace_find(&cap, "layers.0.attention.v"));
        if (kk) { /* the qk hook reaches K: captured K = K (I (x) H), rest unchanged */
            qsur_workspace c2;
            qsur_workspace_init(&c2);
            m->hooks.qk = (qsur_llama_online){householder_apply, &ho};
            CHECK_OK(qsur_llama_capture(m, NULL, &tk, 0, 0, 2, 0, 1, &c2, NULL, NULL, &err), err);
            m->hooks.qk.apply = NULL;
            qsur_tensor *k2 = qsur_workspace_find(&c2, "layers.1.attention.k");
            static float kh[2 * T * KVD];
            memcpy(kh, kk->data, sizeof kh);
            householder_apply(&ho, kh, 2 * T * NKV, HS);
            CHECK(k2 && rel_diff_ff(k2->data, kh, 2 * T * KVD) < 1e-5 &&
                  rel_diff_ff(k2->data, kk->data, 2 * T * KVD) > 1e-2);
            qsur_tensor *v2 = qsur_workspace_find(&c2, "layers.1.attention.v");
            CHECK(v2 && rel_diff_ff(v2->data, qsur_workspace_find(&cap, "layers.1.attention.v")->data,
                                    2 * T * KVD) < 1e-5);
            qsur_workspace_clear(&c2);
        }
        qsur_tensor *a0 = qsur_workspace_find(&cap, "layers.0.attention.in");
        CHECK(a0 && rel_diff(a0->data + T * DIM, ref_in0, DIM) < 1e-5); /* tok[0] is row T */
        qsur_workspace sub;
        qsur_workspace_init(&sub);
        CHECK_OK(qsur_llama_capture(m, NULL, &tk, 0, 0, 1, 5, 7, &sub, &ntok, NULL, &err), err);
        qsur_tensor *ss = qsur_workspace_find(&sub, "layers.1.feed_forward.w2.in");
        qsur_tensor *fs = qsur_workspace_find(&cap, "layers.1.feed_forward.w2.in");
        CHECK(ntok == 5 && ss && ss->shape[0] == 5);
        int found = 0, last = -1; /* each subset row is a full-capture row, in order */
        for (int r = 0; ss && fs && r < 5; r++)
            for (int j = last + 1; j < 2 * T; j++)
                if (rel_diff_ff(ss->data + r * HID, fs->data + j * HID, HID) < 1e-6) {
                    found++;
                    last = j;
                    break;
                }
        CHECK(found == 5);
        qsur_workspace sub2; /* same seed, same rows */
        qsur_workspace_init(&sub2);
        CHECK_OK(qsur_llama_capture(m, NULL, &tk, 0, 0, 1, 5, 7, &sub2, &ntok, NULL, &err), err);
        qsur_tensor *ss2 = qsur_workspace_find(&sub2, "layers.1.feed_forward.w2.in");
        CHECK(ss2 && ss && memcmp(ss2->data, ss->data, 5 * HID * sizeof(float)) == 0);
        qsur_workspace_clear(&sub2);
        qsur_workspace_clear(&sub);
        qsur_workspace_clear(&cap);

        /* perplexity equals exp(mean NLL) from the reference logits */
        qsur_llama_ppl ppl;
        CHECK_OK(qsur_llama_perplexity(m, NULL, &tk, 0, 0, 0, NULL, &ppl, &err), err);
        double nll = 0;
        const double *refs[2] = {ref2, ref};
        const int *toks[2] = {tok2, tok};
        for (int b = 0; b < 2; b++)
            for (int t = 0; t + 1 < T; t++) {
                const double *lg = refs[b] + t * VOC;
                double mx = lg[0], sum = 0;
                for (int j = 1; j < VOC; j++)
                    mx = fmax(mx, lg[j]);
                for (int j = 0; j < VOC; j++)
                    sum += exp(lg[j] - mx);
                nll += log(sum) + mx - lg[toks[b][t + 1]];
            }
        CHECK(ppl.n_predicted == 2 * (T - 1) && ppl.n_seqs == 2);
        CHECK_REL(ppl.ppl, exp(nll / (2 * (T - 1))), 1e-4);

        /* the workspace round trip gives the same tensors back */
        qsur_workspace back;
        qsur_workspace_init(&back);
        CHECK_OK(qsur_llama_to_workspace(m, &back, "m.", &err), err);
        CHECK(back.count == 3 + 9 * NL - shared);
        qsur_tensor *bw = qsur_workspace_find(&back, "m.layers.1.feed_forward.w3");
        CHECK(bw && memcmp(bw->data, qsur_workspace_find(&ws, "layers.1.feed_forward.w3")->data,
                           HID * DIM * sizeof(float)) == 0);
        /* sync: edit a workspace copy, push it back, undo */
        CHECK_OK(qsur_llama_quantize_weights(m, &q8, NULL, &err), err);
        bw = qsur_workspace_find(&back, "m.layers.0.feed_forward.w1");
        for (int64_t i = 0; bw && i < HID * DIM; i++)
            bw->data[i] *= 2;
        int nup = 0;
        CHECK_OK(qsur_llama_sync_from_workspace(m, &back, "m.", &nup, &err), err);
        CHECK(nup == 3 + 9 * NL - shared);
        CHECK(m->layers[0].w1.wq == NULL && m->layers[1].w1.wq == NULL); /* stale copies dropped */
        CHECK(m->layers[0].w1.w[5] == 2 * qsur_workspace_find(&ws, "layers.0.feed_forward.w1")->data[5]);
        CHECK_OK(qsur_llama_forward(m, s, tok, 1, T, 0, &err), err);
        CHECK(rel_diff(s->logits, ref, T * VOC) > 1e-3);
        /* a bad shape anywhere changes nothing */
        qsur_tensor *bad = NULL;
        qsur_tensor_new2(&bad, "m.norm", 1, DIM, &err);
        qsur_workspace_put(&back, bad, &err);
        CHECK(qsur_llama_sync_from_workspace(m, &ws, NULL, &nup, &err) == QSUR_OK);
        CHECK(qsur_llama_sync_from_workspace(m, &back, "m.", &nup, &err) == QSUR_ERR_ARG &&
              strstr(err.msg, "m.norm") && strstr(err.msg, "1x16"));
        CHECK_OK(qsur_llama_forward(m, s, tok, 1, T, 0, &err), err);
        CHECK(rel_diff(s->logits, ref, T * VOC) < 1e-4);
        qsur_workspace_clear(&back);

        qsur_llama_state_free(s);
        qsur_llama_free(m);
        qsur_workspace_clear(&ws);
    }

    /* shape validation: missing / misshapen tensors name the tensor and shape */
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    make_weights(&ws, 1);
    qsur_llama_config cfg = tiny_config(0);
    qsur_llama *m = NULL;
    CHECK(qsur_llama_from_workspace(&m, &ws, NULL, &cfg, &err) == QSUR_ERR_ARG && !m);
    CHECK_MSG(strstr(err.msg, "output") && strstr(err.msg, "32x16"), "%s", err.msg);
    cfg = tiny_config(1);
    qsur_workspace_remove(&ws, "layers.1.attention.wk");
    put(&ws, "layers.1.attention.wk", DIM, DIM, 1, 0);
    CHECK(qsur_llama_from_workspace(&m, &ws, NULL, &cfg, &err) == QSUR_ERR_ARG && !m);
    CHECK_MSG(strstr(err.msg, "layers.1.attention.wk") && strstr(err.msg, "16x16") &&
              strstr(err.msg, "8x16"), "%s", err.msg);
    cfg.n_kv_heads = 3;
    CHECK(qsur_llama_from_workspace(&m, &ws, NULL, &cfg, &err) == QSUR_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "n_kv_heads"), "%s", err.msg);
    qsur_workspace_clear(&ws);

    /* input names */
    char buf[64];
    CHECK(!strcmp(qsur_llama_input_of("layers.3.attention.wk", buf, sizeof buf),
                  "layers.3.attention.in"));
    CHECK(!strcmp(qsur_llama_input_of("layers.0.attention.wo", buf, sizeof buf),
                  "layers.0.attention.wo.in"));
    CHECK(!strcmp(qsur_llama_input_of("layers.12.feed_forward.w3", buf, sizeof buf),
                  "layers.12.feed_forward.in"));
    CHECK(!strcmp(qsur_llama_input_of("layers.2.feed_forward.w2", buf, sizeof buf),
                  "layers.2.feed_forward.w2.in"));
    CHECK(qsur_llama_input_of("output", buf, sizeof buf) == NULL);
    CHECK(qsur_llama_input_of("layers.1.attention_norm", buf, sizeof buf) == NULL);

    /* token files */
    char path[512];
    qsur_tokens tk;
    unsigned char good[8] = {1, 0, 2, 1, 1, 0, 3, 0}; /* 1, 258, 1, 3 */
    snprintf(path, sizeof path, "%s/ok.u16", check_tmpdir());
    write_file(path, good, 8);
    CHECK_OK(qsur_tokens_load(&tk, path, 2, 512, &err), err);
    CHECK(tk.n == 4 && tk.ids[1] == 258 && tk.ids[3] == 3);
    qsur_tokens_free(&tk);
    CHECK(qsur_tokens_load(&tk, path, 3, 512, &err) == QSUR_ERR_FORMAT && strstr(err.msg, "multiple"));
    CHECK(qsur_tokens_load(&tk, path, 2, 100, &err) == QSUR_ERR_FORMAT);
    CHECK_MSG(strstr(err.msg, "ok.u16") && strstr(err.msg, "token 1 = 258"), "%s", err.msg);
    snprintf(path, sizeof path, "%s/odd.u16", check_tmpdir());
    write_file(path, good, 7);
    CHECK(qsur_tokens_load(&tk, path, 1, 512, &err) == QSUR_ERR_FORMAT && strstr(err.msg, "odd"));
    snprintf(path, sizeof path, "%s/none.u16", check_tmpdir());
    CHECK(qsur_tokens_load(&tk, path, 1, 512, &err) == QSUR_ERR_IO && strstr(err.msg, "none.u16"));
    return check_done();
}
