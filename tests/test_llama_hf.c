/* Hugging Face layout: a model written as config.json + safetensors (F32, F16,
 * BF16, and a 2-shard index) reads back to the same logits; the written q/k
 * rows follow HF's rotate-half convention (checked with an HF-style RoPE
 * written here); malformed config/index files fail with one clear line. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "check.h"
#include "qsur/llama.h"
#include "qsur/safetensors.h"

enum { DIM = 32, HID = 48, NL = 2, NH = 4, NKV = 2, VOC = 40, T = 9, HS = DIM / NH };

static uint64_t rng = 99;
static float urand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 11) * 0x1.0p-52 - 1.0);
}

static qsur_llama *random_model(int shared)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = DIM; c.hidden_dim = HID; c.n_layers = NL; c.n_heads = NH; c.n_kv_heads = NKV;
    c.vocab_size = VOC; c.seq_len = 64; c.shared_classifier = shared;
    c.norm_eps = 1e-6; c.rope_theta = 500000.0;
    qsur_llama *m = NULL;
    qsur_error err;
    if (qsur_llama_new(&m, &c, &err))
        return NULL;
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    qsur_llama_to_workspace(m, &ws, NULL, &err);
    for (int i = 0; i < ws.count; i++) {
        qsur_tensor *t = ws.items[i];
        int norm = t->ndim == 1;
        for (int64_t j = 0; j < qsur_tensor_numel(t); j++)
            t->data[j] = norm ? 1.0f + 0.3f * urand() : 0.4f * urand();
    }
    qsur_llama_free(m);
    m = NULL;
    qsur_llama_from_workspace(&m, &ws, NULL, &c, &err);
    qsur_workspace_clear(&ws);
    return m;
}

static const int tok[T] = {1, 4, 39, 0, 22, 22, 7, 13, 2};

static float *logits_of(const qsur_llama *m)
{
    qsur_error err;
    qsur_llama_state *s = NULL;
    if (qsur_llama_state_new(&s, m, 1, T, &err) || qsur_llama_forward(m, s, tok, 1, T, 0, &err)) {
        qsur_llama_state_free(s);
        return NULL;
    }
    float *out = malloc(sizeof(float) * T * VOC);
    memcpy(out, s->logits, sizeof(float) * T * VOC);
    qsur_llama_state_free(s);
    return out;
}

static double max_rel(const float *a, const float *b, int64_t n)
{
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return d / s;
}

#define subdir check_subdir
#define write_text check_write_text

/* HF's Llama attention RoPE: q' = q cos + rotate_half(q) sin with
 * rotate_half(x) = (-x2, x1) on the halves, frequency index i for both
 * element i and element i + hs/2. */
static void hf_rope(double *v, int heads, int pos, double theta)
{
    for (int h = 0; h < heads; h++) {
        double *x = v + h * HS, y[HS];
        for (int j = 0; j < HS; j++) {
            int i = j % (HS / 2);
            double a = pos * pow(theta, -2.0 * i / HS);
            double rot = j < HS / 2 ? -x[j + HS / 2] : x[j - HS / 2];
            y[j] = x[j] * cos(a) + rot * sin(a);
        }
        memcpy(x, y, sizeof y);
    }
}

static void meta_rope(double *v, int heads, int pos, double theta)
{
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < HS / 2; i++) {
            double a = pos * pow(theta, -2.0 * i / HS), *x = v + h * HS + 2 * i;
            double x0 = x[0], x1 = x[1];
            x[0] = x0 * cos(a) - x1 * sin(a);
            x[1] = x0 * sin(a) + x1 * cos(a);
        }
}

static void matvec(double *o, const float *w, const double *x, int rows)
{
    for (int r = 0; r < rows; r++) {
        o[r] = 0;
        for (int c = 0; c < DIM; c++)
            o[r] += (double)w[r * DIM + c] * x[c];
    }
}

static const char *config_text(const char *replace_key, const char *value)
{
    static char buf[2048];
    const char *keys[] = {"model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "vocab_size",
                          "rms_norm_eps", "tie_word_embeddings"};
    const char *vals[] = {"\"llama\"", "32", "48", "2", "4", "2", "40", "1e-06", "false"};
    size_t used = (size_t)snprintf(buf, sizeof buf, "{\"architectures\": [\"LlamaForCausalLM\"]");
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        const char *v = vals[i];
        if (replace_key && strcmp(replace_key, keys[i]) == 0) {
            if (!value)
                continue; /* drop the key */
            v = value;
        }
        used += (size_t)snprintf(buf + used, sizeof buf - used, ", \"%s\": %s", keys[i], v);
    }
    snprintf(buf + used, sizeof buf - used, "}\n");
    return buf;
}

/* Loading dir must fail with code and a message holding both needles. */
static void expect_fail(const char *dir, int code, const char *n1, const char *n2, int line)
{
    qsur_error err = {{0}};
    qsur_llama *m = NULL;
    int rc = qsur_llama_load_hf(&m, dir, NULL, &err);
    check_report(rc == code && !m && strstr(err.msg, n1) && (!n2 || strstr(err.msg, n2)) &&
                 !strchr(err.msg, '\n'), __FILE__, line, "rc %d (want %d): %s", rc, code, err.msg);
    qsur_llama_free(m);
}

int main(void)
{
    qsur_error err;
    for (int shared = 0; shared <= 1; shared++) {
        qsur_llama *m = random_model(shared);
        CHECK(m != NULL);
        if (!m)
            return check_done();
        float *ref = logits_of(m);
        const char *dir = subdir(shared ? "f32_tied" : "f32");
        CHECK_OK(qsur_llama_save_hf(m, dir, "F32", &err), err);
        qsur_llama *back = NULL;
        CHECK_OK(qsur_llama_load(&back, dir, NULL, &err), err);
        if (back) {
            CHECK(back->cfg.shared_classifier == shared && back->cfg.rope_theta == 500000.0 &&
                  back->cfg.norm_eps == 1e-6 && back->cfg.n_kv_heads == NKV);
            float *lg = logits_of(back);
            CHECK(lg && memcmp(lg, ref, sizeof(float) * T * VOC) == 0);
            free(lg);
        }
        qsur_llama_free(back);

        if (!shared) {
            /* The file's q/k rows follow HF's rotate-half convention: HF RoPE on
             * the file's weights gives the engine's q and k, rows permuted, so
             * every attention score q.k is the same. */
            qsur_workspace ws;
            qsur_workspace_init(&ws);
            char p[1200];
            snprintf(p, sizeof p, "%s/model.safetensors", dir);
            CHECK(qsur_safetensors_load(&ws, p, NULL, NULL, NULL, &err) == QSUR_OK);
            qsur_tensor *hq = qsur_workspace_find(&ws, "model.layers.1.self_attn.q_proj.weight");
            qsur_tensor *hk = qsur_workspace_find(&ws, "model.layers.1.self_attn.k_proj.weight");
            CHECK(hq && hk && !qsur_workspace_find(&ws, "layers.1.attention.wq") &&
                  qsur_workspace_find(&ws, "lm_head.weight"));
            if (hq && hk) {
                double x[DIM], y[DIM], qh[DIM], qm[DIM], kh[DIM], km[DIM];
                for (int i = 0; i < DIM; i++) {
                    x[i] = urand();
                    y[i] = urand();
                }
                matvec(qh, hq->data, x, DIM);
                matvec(qm, m->layers[1].wq.w, x, DIM);
                matvec(kh, hk->data, y, NKV * HS);
                matvec(km, m->layers[1].wk.w, y, NKV * HS);
                hf_rope(qh, NH, 5, 500000.0);
                meta_rope(qm, NH, 5, 500000.0);
                hf_rope(kh, NKV, 3, 500000.0);
                meta_rope(km, NKV, 3, 500000.0);
                double worst = 0;
                for (int h = 0; h < NH; h++) {
                    int g = h / (NH / NKV);
                    double sh = 0, sm = 0;
                    for (int j = 0; j < HS; j++) {
                        sh += qh[h * HS + j] * kh[g * HS + j];
                        sm += qm[h * HS + j] * km[g * HS + j];
                    }
                    worst = fmax(worst, fabs(sh - sm));
                    /* and element by element: HF row c*hs/2+i is Meta row 2i+c */
                    for (int i = 0; i < HS / 2; i++)
                        for (int c = 0; c < 2; c++)
                            worst = fmax(worst, fabs(qh[h * HS + c * HS / 2 + i] -
                                                     qm[h * HS + 2 * i + c]));
                }
                CHECK_MSG(worst < 1e-9, "HF rope vs engine rope differ by %g", worst);
            }
            qsur_workspace_clear(&ws);

            /* F16 / BF16: weights are the rounded ones, logits close */
            const char *dts[2] = {"F16", "BF16"};
            const double ulp[2] = {0x1.0p-11, 0x1.0p-8};
            for (int k = 0; k < 2; k++) {
                const char *d2 = subdir(dts[k]);
                CHECK_OK(qsur_llama_save_hf(m, d2, dts[k], &err), err);
                back = NULL;
                CHECK_OK(qsur_llama_load_hf(&back, d2, NULL, &err), err);
                if (!back)
                    continue;
                double wrel = 0, wabs = 0;
                for (int i = 0; i < qsur_llama_linear_count(m); i++) {
                    const qsur_llama_linear *a = qsur_llama_linear_at(m, i);
                    const qsur_llama_linear *b = qsur_llama_linear_at(back, i);
                    /* loaded lazily: the file's dtype, read through the store */
                    CHECK(b->w == NULL && b->st.dtype == (k ? QSUR_DTYPE_BF16 : QSUR_DTYPE_F16));
                    const float *bw;
                    float *tmp;
                    CHECK_OK(qsur_llama_linear_weights_alloc(b, &bw, &tmp, &err), err);
                    /* F16 subnormals below 2^-14 have a fixed absolute step 2^-24 */
                    for (int64_t j = 0; j < a->rows * a->cols; j++)
                        if (k == 1 || fabs(a->w[j]) >= 0x1.0p-14)
                            wrel = fmax(wrel, fabs((double)bw[j] - a->w[j]) / fabs(a->w[j]));
                        else
                            wabs = fmax(wabs, fabs((double)bw[j] - a->w[j]));
                    free(tmp);
                }
                CHECK_MSG(wrel > 0 && wrel <= ulp[k] && wabs <= 0x1.0p-25,
                          "%s: weight rel error %g (half-ulp %g), subnormal abs error %g",
                          dts[k], wrel, ulp[k], wabs);
                float *lg = logits_of(back);
                double r = lg ? max_rel(lg, ref, T * VOC) : 1;
                printf("%s round trip: weights rel err %.3g, logits rel diff %.3g\n", dts[k], wrel, r);
                CHECK(r > 0 && r < 20 * ulp[k]);
                free(lg);
                qsur_llama_free(back);
            }

            /* two shards + index, from the F32 file's tensors */
            const char *sd = subdir("sharded");
            qsur_workspace all;
            qsur_workspace_init(&all);
            CHECK(qsur_safetensors_load(&all, p, NULL, NULL, NULL, &err) == QSUR_OK);
            const qsur_tensor *part[2][64];
            int np[2] = {0, 0};
            char index[8192];
            size_t used = (size_t)snprintf(index, sizeof index,
                                           "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
            for (int i = 0; i < all.count; i++) {
                int which = strstr(all.items[i]->name, "layers.1.") || !strncmp(all.items[i]->name, "lm_head", 7);
                part[which][np[which]++] = all.items[i];
                used += (size_t)snprintf(index + used, sizeof index - used, "%s\"%s\": \"%s\"",
                                         i ? ", " : "", all.items[i]->name,
                                         which ? "model-00002-of-00002.safetensors"
                                               : "model-00001-of-00002.safetensors");
            }
            snprintf(index + used, sizeof index - used, "}}\n");
            char sp[1200];
            snprintf(sp, sizeof sp, "%s/model-00001-of-00002.safetensors", sd);
            CHECK_OK(qsur_safetensors_write(sp, part[0], np[0], NULL, NULL, 0, NULL, &err), err);
            snprintf(sp, sizeof sp, "%s/model-00002-of-00002.safetensors", sd);
            CHECK_OK(qsur_safetensors_write(sp, part[1], np[1], NULL, NULL, 0, NULL, &err), err);
            write_text(sd, "model.safetensors.index.json", index);
            write_text(sd, "config.json", config_text("rope_scaling", NULL));
            /* config_text has no rope_theta: default 10000, so reset ours to compare */
            m->cfg.rope_theta = 10000.0;
            free(ref);
            ref = logits_of(m);
            back = NULL;
            CHECK_OK(qsur_llama_load_hf(&back, sd, NULL, &err), err);
            if (back) {
                float *lg = logits_of(back);
                CHECK(lg && memcmp(lg, ref, sizeof(float) * T * VOC) == 0);
                free(lg);
            }
            qsur_llama_free(back);

            /* index problems: a shard that does not exist, a tensor not listed,
             * a listed tensor missing from its shard */
            const char *bad = subdir("bad_index");
            write_text(bad, "config.json", config_text(NULL, NULL));
            snprintf(sp, sizeof sp, "%s/model-00001-of-00002.safetensors", bad);
            CHECK_OK(qsur_safetensors_write(sp, part[0], np[0], NULL, NULL, 0, NULL, &err), err);
            write_text(bad, "model.safetensors.index.json", index);
            expect_fail(bad, QSUR_ERR_FORMAT, "model-00002-of-00002.safetensors", NULL, __LINE__);
            char *cut = strstr(index, "\"model.norm.weight\"");
            CHECK(cut != NULL);
            if (cut) {
                char idx2[8192];
                snprintf(idx2, sizeof idx2, "{\"weight_map\": {\"lm_head.weight\": "
                         "\"model-00001-of-00002.safetensors\"}}");
                write_text(bad, "model.safetensors.index.json", idx2);
                expect_fail(bad, QSUR_ERR_FORMAT, "weight_map has no tensor",
                            "model.embed_tokens.weight", __LINE__);
                snprintf(idx2, sizeof idx2, "{\"weight_map\": {\"model.embed_tokens.weight\": "
                         "\"model-00001-of-00002.safetensors\", \"model.layers.1.mlp.up_proj.weight\": "
                         "\"model-00001-of-00002.safetensors\"}}");
                write_text(bad, "model.safetensors.index.json", idx2);
                /* embed is in shard 1; input_layernorm of layer 0 not listed */
                expect_fail(bad, QSUR_ERR_FORMAT, "model.layers.0.input_layernorm.weight", NULL,
                            __LINE__);
                write_text(bad, "model.safetensors.index.json", "{\"weight_map\": [1, 2]}");
                expect_fail(bad, QSUR_ERR_FORMAT, "weight_map", NULL, __LINE__);
                write_text(bad, "model.safetensors.index.json", "{\"weight_map\": {\"a\": \"../x\"}}");
                expect_fail(bad, QSUR_ERR_FORMAT, "plain file name", NULL, __LINE__);
            }
            qsur_workspace_clear(&all);

            /* config problems, with a valid single-file model beside them */
            const char *bc = subdir("bad_config");
            CHECK_OK(qsur_llama_save_hf(m, bc, "F32", &err), err);
            write_text(bc, "config.json", config_text("hidden_size", NULL));
            expect_fail(bc, QSUR_ERR_FORMAT, "config.json", "missing key \"hidden_size\"", __LINE__);
            write_text(bc, "config.json", config_text("hidden_size", "\"32\""));
            expect_fail(bc, QSUR_ERR_FORMAT, "\"hidden_size\" must be an integer", "string", __LINE__);
            write_text(bc, "config.json", config_text("num_hidden_layers", "2.5"));
            expect_fail(bc, QSUR_ERR_FORMAT, "num_hidden_layers", "integer", __LINE__);
            write_text(bc, "config.json", config_text("num_key_value_heads", "3"));
            expect_fail(bc, QSUR_ERR_FORMAT, "num_key_value_heads = 3 does not divide", NULL, __LINE__);
            write_text(bc, "config.json", config_text("num_attention_heads", "5"));
            expect_fail(bc, QSUR_ERR_FORMAT, "num_attention_heads = 5 does not divide", NULL, __LINE__);
            write_text(bc, "config.json", config_text("tie_word_embeddings", "\"no\""));
            expect_fail(bc, QSUR_ERR_FORMAT, "tie_word_embeddings", NULL, __LINE__);
            write_text(bc, "config.json", config_text("model_type", "\"gpt2\""));
            expect_fail(bc, QSUR_ERR_FORMAT, "gpt2", NULL, __LINE__);
            write_text(bc, "config.json", config_text("vocab_size", "-4"));
            expect_fail(bc, QSUR_ERR_FORMAT, "vocab_size", NULL, __LINE__);
            write_text(bc, "config.json", "{\"hidden_size\": 32,}");
            expect_fail(bc, QSUR_ERR_FORMAT, "config.json", NULL, __LINE__);
            /* shapes that disagree with the config name the tensor */
            write_text(bc, "config.json", config_text("intermediate_size", "40"));
            expect_fail(bc, QSUR_ERR_FORMAT, "model.layers.0.mlp.gate_proj.weight",
                        "48x32 (expected 40x32)", __LINE__);
            /* tied config but file has lm_head: fine (ignored); untied without: error */
            write_text(bc, "config.json", config_text("tie_word_embeddings", "true"));
            back = NULL;
            CHECK_OK(qsur_llama_load_hf(&back, bc, NULL, &err), err);
            qsur_llama_free(back);
            const char *nolm = subdir("no_lm_head");
            qsur_llama *tied = random_model(1);
            CHECK_OK(qsur_llama_save_hf(tied, nolm, "F32", &err), err);
            qsur_llama_free(tied);
            write_text(nolm, "config.json", config_text(NULL, NULL));
            expect_fail(nolm, QSUR_ERR_FORMAT, "lm_head.weight", "missing", __LINE__);
            expect_fail(subdir("empty"), QSUR_ERR_IO, "config.json", NULL, __LINE__);
            write_text(subdir("empty"), "config.json", config_text(NULL, NULL));
            expect_fail(subdir("empty"), QSUR_ERR_IO, "neither model.safetensors", NULL, __LINE__);
            CHECK(qsur_llama_save_hf(m, bc, "F64", &err) == QSUR_ERR_ARG && strstr(err.msg, "F64"));
        }
        free(ref);
        qsur_llama_free(m);
    }
    return check_done();
}
