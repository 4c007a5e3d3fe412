/* The model store (src/llama/llama_store.c) and the lazy HF loader: weights kept in
 * the file's dtype and mapped give the same numbers as the float32 path;
 * packed codes decode to exactly the fake-quantized weights; copy-on-write
 * edits go back to the dtype; workspace views cost nothing until used;
 * config sizes are checked against the tensors before anything is
 * allocated (issue 13's 361-byte config.json); a truncated shard fails with
 * the file's name; a sharded export reads back to the same logits. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"
#include "qsur/clock.h"
#include "qsur/half.h"
#include "qsur/llama.h"
#include "qsur/safetensors.h"

enum { DIM = 64, HID = 96, NL = 2, NH = 4, NKV = 2, VOC = 50, SEQ = 16, NSEQ = 3 };

#define subdir check_subdir
#define write_text check_write_text

/* A random untied float model (qsur_llama_new owns float weights). */
static qsur_llama *random_model(void)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = DIM, c.hidden_dim = HID, c.n_layers = NL, c.n_heads = NH, c.n_kv_heads = NKV;
    c.vocab_size = VOC, c.seq_len = 64, c.shared_classifier = 0;
    qsur_llama *m = NULL;
    qsur_error err;
    if (qsur_llama_new(&m, &c, &err))
        return NULL;
    for (int64_t i = 0; i < (int64_t)VOC * DIM; i++)
        m->tok_embeddings[i] = (float)check_gauss();
    for (int i = 0; i <= qsur_llama_linear_count(m); i++) {
        qsur_llama_linear *l = i < qsur_llama_linear_count(m) ? qsur_llama_linear_at(m, i) : &m->output;
        for (int64_t j = 0; j < l->rows * l->cols; j++)
            l->w[j] = (float)(check_gauss() / sqrt((double)l->cols));
    }
    for (int l = 0; l < NL; l++)
        for (int j = 0; j < DIM; j++) {
            m->layers[l].attention_norm[j] = (float)(1 + 0.1 * check_gauss());
            m->layers[l].ffn_norm[j] = (float)(1 + 0.1 * check_gauss());
        }
    for (int j = 0; j < DIM; j++)
        m->norm[j] = 1.0f;
    return m;
}

static qsur_tokens tokens(void)
{
    qsur_tokens t;
    memset(&t, 0, sizeof t);
    t.n = SEQ * NSEQ;
    t.seq_len = SEQ;
    t.ids = malloc((size_t)t.n * sizeof *t.ids);
    for (int64_t i = 0; t.ids && i < t.n; i++)
        t.ids[i] = (int)(check_uniform() * VOC) % VOC;
    return t;
}

static double ppl(const qsur_llama *m, const qsur_tokens *t, int64_t wbuf_floats)
{
    qsur_llama_state *s = NULL;
    qsur_error err;
    qsur_llama_ppl p;
    if (qsur_llama_state_new(&s, m, NSEQ, SEQ, &err))
        return NAN;
    if (wbuf_floats)
        s->wbuf_floats = wbuf_floats; /* smaller slices: the chunked path */
    int rc = qsur_llama_perplexity(m, s, t, SEQ, 0, NSEQ, NULL, &p, &err);
    qsur_llama_state_free(s);
    return rc ? NAN : p.ppl;
}

static int64_t max_rss_kb(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

/* Loading must fail quickly with a one-line message holding `needle`, and
 * allocate nothing big. */
static void expect_quick_fail(const char *dir, const char *needle, int line)
{
    qsur_error err = {{0}};
    qsur_llama *m = NULL;
    int64_t rss0 = max_rss_kb();
    double t0 = qsur_seconds();
    int rc = qsur_llama_load_hf(&m, dir, NULL, &err);
    double dt = qsur_seconds() - t0;
    int64_t grew = max_rss_kb() - rss0;
    check_report(rc != QSUR_OK && !m && strstr(err.msg, needle) && !strchr(err.msg, '\n') &&
                 dt < 2.0 && grew < 64 * 1024, __FILE__, line,
                 "rc %d, %.2f s, peak RSS +%lld KB: %s", rc, dt, (long long)grew, err.msg);
    qsur_llama_free(m);
}

static void issue13_configs(const char *tiny)
{
    /* a Llama-2-7B config.json (361 bytes in the report) beside a tiny checkpoint */
    const char *cfg7b = "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
                        "\"hidden_size\": 4096, \"intermediate_size\": 11008, \"num_hidden_layers\": 32, "
                        "\"num_attention_heads\": 32, \"num_key_value_heads\": 32, \"vocab_size\": 32000, "
                        "\"max_position_embeddings\": 4096, \"rms_norm_eps\": 1e-05, "
                        "\"tie_word_embeddings\": false, \"torch_dtype\": \"float16\"}";
    write_text(tiny, "config.json", cfg7b);
    expect_quick_fail(tiny, "disagrees with model.embed_tokens.weight", __LINE__);
    char text[1024];
    snprintf(text, sizeof text, "{\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
             "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"vocab_size\": %d}",
             1 << 20, HID, NL, NH, NKV, VOC);
    write_text(tiny, "config.json", text);
    expect_quick_fail(tiny, "hidden_size", __LINE__);
    snprintf(text, sizeof text, "{\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
             "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"vocab_size\": %d}",
             DIM, HID, 1 << 20, NH, NKV, VOC);
    write_text(tiny, "config.json", text);
    expect_quick_fail(tiny, "model.layers.2.input_layernorm.weight", __LINE__);
}

int main(void)
{
    qsur_error err;
    check_seed(15);
    qsur_llama *m = random_model();
    qsur_tokens t = tokens();
    CHECK(m && t.ids);
    if (!m || !t.ids)
        return check_done();
    double ref = ppl(m, &t, 0);

    /* F32 on disk, mapped: the same numbers as the float model, also with the
     * weights converted in slices of 7 rows */
    const char *f32 = subdir("f32");
    CHECK_OK(qsur_llama_save_hf(m, f32, "F32", &err), err);
    qsur_llama *mf = NULL;
    CHECK_OK(qsur_llama_load_hf(&mf, f32, NULL, &err), err);
    if (mf) {
        CHECK(mf->layers[0].wq.w == NULL && mf->layers[0].wq.st.data && mf->mapping);
        double p1 = ppl(mf, &t, 0), p2 = ppl(mf, &t, 7 * HID);
        printf("f32: ppl float %.9g, mapped %.9g, mapped in slices %.9g\n", ref, p1, p2);
        CHECK(fabs(p1 - ref) <= 1e-5 * ref && fabs(p2 - ref) <= 1e-5 * ref);
        qsur_llama_memory u;
        qsur_llama_memory_use(mf, &u);
        int64_t lin = (int64_t)NL * (2 * DIM * DIM + 2 * DIM * (DIM / NH * NKV) + 3 * DIM * HID) +
                      2 * (int64_t)VOC * DIM; /* lm_head and the embeddings */
        CHECK_MSG(u.mapped == 4 * lin && u.quantized == 0, "mapped %lld bytes, want %lld",
                  (long long)u.mapped, (long long)(4 * lin));
    }

    /* BF16 on disk: every weight read is the stored bf16 value widened
     * exactly, and the mapped model computes what its own float copy does */
    const char *bf = subdir("bf16");
    CHECK_OK(qsur_llama_save_hf(m, bf, "BF16", &err), err);
    qsur_llama *mb = NULL, *mbf = NULL;
    CHECK_OK(qsur_llama_load_hf(&mb, bf, NULL, &err), err);
    CHECK_OK(qsur_llama_load_hf(&mbf, bf, NULL, &err), err);
    if (mb && mbf) {
        int exact = 1;
        float row[HID];
        for (int i = 0; i < qsur_llama_linear_count(m); i++) {
            const qsur_llama_linear *a = qsur_llama_linear_at(m, i), *b = qsur_llama_linear_at(mb, i);
            CHECK(b->st.dtype == QSUR_DTYPE_BF16 && b->w == NULL);
            for (int64_t r = 0; r < a->rows; r++) {
                qsur_llama_linear_read_rows(b, r, r + 1, row);
                for (int64_t c = 0; c < a->cols; c++)
                    exact &= row[c] == qsur_bf16_to_f32(qsur_f32_to_bf16(a->w[r * a->cols + c]));
            }
        }
        CHECK_MSG(exact, "bf16 weights are not the rounded float weights widened exactly");
        CHECK_OK(qsur_llama_own_all(mbf, &err), err);
        CHECK(mbf->layers[1].w2.w != NULL && mbf->layers[1].w2.st.data == NULL);
        double pm = ppl(mb, &t, 0), pf = ppl(mbf, &t, 0);
        printf("bf16: ppl mapped %.9g, float copy %.9g (float model %.9g)\n", pm, pf, ref);
        CHECK(pm == pf && fabs(pm - ref) < 0.05 * ref);

        /* copy-on-write: edit one linear, store it back as bf16 */
        qsur_llama_linear *l = &mb->layers[0].w1;
        int dt;
        CHECK_OK(qsur_llama_linear_edit_begin(l, &dt, &err), err);
        CHECK(dt == QSUR_DTYPE_BF16 && l->w && !l->st.data);
        for (int64_t j = 0; l->w && j < l->rows * l->cols; j++)
            l->w[j] *= 3.0f;
        float before = l->w ? l->w[5] : 0;
        CHECK_OK(qsur_llama_linear_edit_end(l, dt, &err), err);
        CHECK(!l->w && l->st.owned && l->st.dtype == QSUR_DTYPE_BF16);
        qsur_llama_linear_read_rows(l, 0, 1, row);
        CHECK(row[5] == qsur_bf16_to_f32(qsur_f32_to_bf16(before)));
        qsur_llama_memory u;
        qsur_llama_memory_use(mb, &u);
        CHECK(u.owned > 2 * (int64_t)HID * DIM); /* the edited linear is owned now */

        /* workspace views: nothing made until looked up, then the weights */
        qsur_workspace ws;
        qsur_workspace_init(&ws);
        CHECK_OK(qsur_llama_view_workspace(mb, &ws, NULL, &err), err);
        int made = 0;
        for (int i = 0; i < ws.count; i++)
            made += ws.items[i]->data != NULL;
        CHECK_MSG(made == 0, "%d views materialized before use", made);
        qsur_tensor *w2 = qsur_workspace_find(&ws, "layers.1.feed_forward.w2");
        CHECK(w2 && w2->data);
        if (w2) {
            qsur_llama_linear_read_rows(&mb->layers[1].w2, 3, 4, row);
            CHECK(memcmp(row, w2->data + 3 * HID, HID * sizeof(float)) == 0);
        }
        qsur_workspace_clear(&ws);
    }
    qsur_llama_free(mb);
    qsur_llama_free(mbf);

    /* packed codes decode to exactly the fake-quantized weights (4-bit two
     * per byte, 8-bit one per byte; symmetric rows, asymmetric groups) */
    if (mf) {
        qsur_quant_spec specs[3] = {qsur_quant_default(), qsur_quant_default(), qsur_quant_default()};
        specs[1].bits = 8;
        specs[2].bits = 3, specs[2].symmetric = 0, specs[2].gran = QSUR_GRAN_GROUP, specs[2].group = 16;
        for (int k = 0; k < 3; k++) {
            qsur_llama_linear *l = &mf->layers[1].w3;
            size_t n = (size_t)(l->rows * l->cols);
            float *w = malloc(n * sizeof *w), *fq = malloc(n * sizeof *fq), *dec = malloc(n * sizeof *dec);
            CHECK(w && fq && dec);
            if (!w || !fq || !dec)
                break;
            qsur_llama_linear_read_rows(l, 0, l->rows, w);
            CHECK_OK(qsur_fake_quant(&specs[k], w, l->rows, l->cols, fq, NULL, &err), err);
            CHECK_OK(qsur_llama_linear_quant_rtn(l, &specs[k], &err), err);
            CHECK(l->qp && !l->wq);
            qsur_llama_linear_forward_rows(l, 0, l->rows, dec);
            CHECK_MSG(memcmp(dec, fq, n * sizeof *fq) == 0, "spec %d: packed codes != fake quant", k);
            /* a grid that came from elsewhere is found again and packed */
            qsur_llama_linear_drop_quant(l);
            CHECK_OK(qsur_llama_linear_set_quant(l, fq, &specs[k], &err), err);
            CHECK(l->qp != NULL);
            qsur_llama_linear_forward_rows(l, 0, l->rows, dec);
            CHECK(memcmp(dec, fq, n * sizeof *fq) == 0);
            free(w), free(fq), free(dec);
        }
        qsur_llama_linear_drop_quant(&mf->layers[1].w3);
    }

    /* a layer-limited capture is the full capture's layer, bit for bit */
    if (mf) {
        qsur_workspace all, one;
        qsur_workspace_init(&all);
        qsur_workspace_init(&one);
        qsur_llama_capture_sel sel = {1, 1, 1u << 3};
        CHECK_OK(qsur_llama_capture(mf, NULL, &t, SEQ, 0, 2, 0, 1, &all, NULL, NULL, &err), err);
        CHECK_OK(qsur_llama_capture_some(mf, NULL, &t, SEQ, 0, 2, 0, 1, &sel, &one, NULL, NULL, &err), err);
        const qsur_tensor *a = qsur_workspace_find(&all, "layers.1.feed_forward.w2.in");
        const qsur_tensor *b = qsur_workspace_find(&one, "layers.1.feed_forward.w2.in");
        CHECK(one.count == 1 && a && b && qsur_tensor_numel(a) == qsur_tensor_numel(b) &&
              memcmp(a->data, b->data, (size_t)qsur_tensor_numel(a) * sizeof(float)) == 0);
        CHECK(qsur_llama_capture_bytes(mf, &sel, SEQ * NSEQ) == (int64_t)SEQ * NSEQ * HID * 4);
        qsur_workspace_clear(&all);
        qsur_workspace_clear(&one);
    }

    /* sharded export: files of at most ~20 KB plus the index, read back equal;
     * a shard cut in the middle of a tensor fails naming that shard */
    const char *sh = subdir("sharded");
    qsur_llama_hf_save_opts o = {.dtype = "F32", .shard_bytes = 20000};
    CHECK_OK(qsur_llama_save_hf_ex(m, sh, &o, &err), err);
    char p[1200];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", sh);
    struct stat st;
    CHECK(stat(p, &st) == 0);
    snprintf(p, sizeof p, "%s/model-00002-of-", sh);
    qsur_llama *ms = NULL;
    CHECK_OK(qsur_llama_load_hf(&ms, sh, NULL, &err), err);
    if (ms) {
        double ps = ppl(ms, &t, 0);
        CHECK(fabs(ps - ref) <= 1e-5 * ref);
        CHECK(ms->mapping && ms->mapping->count > 2);
    }
    qsur_llama_free(ms);
    char first[1200];
    CHECK(qsur_llama_hf_first_file(sh, first, sizeof first) == QSUR_OK &&
          strstr(first, "model-00001-of-"));
    if (stat(first, &st) == 0) {
        CHECK(truncate(first, st.st_size - 100) == 0);
        const char *name = strrchr(first, '/') + 1;
        qsur_llama *mt = NULL;
        int rc = qsur_llama_load_hf(&mt, sh, NULL, &err);
        CHECK_MSG(rc != QSUR_OK && !mt && strstr(err.msg, name) && !strchr(err.msg, '\n'),
                  "truncated shard: %s", err.msg);
    }
    /* an export of the whole model into one file removes the stale index */
    o.shard_bytes = 0;
    CHECK_OK(qsur_llama_save_hf_ex(m, sh, &o, &err), err);
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", sh);
    CHECK(stat(p, &st) != 0);

    issue13_configs(f32);
    qsur_llama_free(mf);
    qsur_llama_free(m);
    free(t.ids);
    return check_done();
}
