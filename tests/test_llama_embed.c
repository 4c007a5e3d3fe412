/* Token embeddings held like a linear (m->embed, src/llama_store.c): a loaded
 * HF model keeps them in the file's dtype, mapped, and widens only the rows
 * a forward pass looks up. Checked against the float model the checkpoint
 * was written from: the same perplexity (f32 file: to 1e-5 relative), bf16
 * rows equal to the float rows rounded to bf16 and widened, a tied
 * classifier reading the same stored bytes, and the float forms (own,
 * untie, views) giving the same numbers again. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/half.h"
#include "qsur/llama.h"

enum { DIM = 32, HID = 48, NL = 2, NH = 4, NKV = 2, VOC = 40, SEQ = 12, NSEQ = 2 };

static qsur_llama *random_model(int shared)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = DIM, c.hidden_dim = HID, c.n_layers = NL, c.n_heads = NH, c.n_kv_heads = NKV;
    c.vocab_size = VOC, c.seq_len = 64, c.shared_classifier = shared;
    qsur_llama *m = NULL;
    qsur_error err;
    if (qsur_llama_new(&m, &c, &err))
        return NULL;
    for (int64_t i = 0; i < (int64_t)VOC * DIM; i++)
        m->tok_embeddings[i] = (float)check_gauss();
    int n = qsur_llama_linear_count(m) + !shared;
    for (int i = 0; i < n; i++) {
        qsur_llama_linear *l = i < qsur_llama_linear_count(m) ? qsur_llama_linear_at(m, i) : &m->output;
        for (int64_t j = 0; j < l->rows * l->cols; j++)
            l->w[j] = (float)(check_gauss() / sqrt((double)l->cols));
    }
    for (int l = 0; l < NL; l++)
        for (int j = 0; j < DIM; j++)
            m->layers[l].attention_norm[j] = m->layers[l].ffn_norm[j] = 1.0f;
    for (int j = 0; j < DIM; j++)
        m->norm[j] = 1.0f;
    return m;
}

static double ppl(const qsur_llama *m, const qsur_tokens *t)
{
    qsur_llama_ppl p;
    qsur_error err;
    int rc = qsur_llama_perplexity(m, NULL, t, SEQ, 0, NSEQ, NULL, &p, &err);
    return rc ? NAN : p.ppl;
}

static qsur_llama *load(const char *dir)
{
    qsur_llama *m = NULL;
    qsur_error err;
    CHECK_OK(qsur_llama_load_hf(&m, dir, NULL, &err), err);
    return m;
}

/* Every row the lookup gives equals `want` rounded through dtype. */
static int rows_exact(const qsur_llama *m, const float *want, int bf16)
{
    float row[DIM];
    int ok = 1;
    for (int v = 0; v < VOC; v++) {
        qsur_llama_embed_rows(m, &v, 1, row);
        for (int j = 0; j < DIM; j++) {
            float w = want[v * DIM + j];
            ok &= row[j] == (bf16 ? qsur_bf16_to_f32(qsur_f32_to_bf16(w)) : w);
        }
    }
    return ok;
}

static void check_format(qsur_llama *ref, const qsur_tokens *t, const char *name, int bf16)
{
    qsur_error err;
    const char *dir = check_subdir(name);
    CHECK_OK(qsur_llama_save_hf(ref, dir, bf16 ? "BF16" : "F32", &err), err);
    qsur_llama *m = load(dir), *f = load(dir);
    if (!m || !f)
        return;
    int shared = ref->cfg.shared_classifier;
    /* lazy: nothing converted, the embeddings (and a tied classifier) mapped */
    CHECK(m->tok_embeddings == NULL && m->embed.w == NULL && m->embed.st.data &&
          !m->embed.st.owned);
    CHECK(m->embed.st.dtype == (bf16 ? QSUR_DTYPE_BF16 : QSUR_DTYPE_F32));
    if (shared)
        CHECK(m->output.w == NULL && m->output.st.data == m->embed.st.data && !m->output.st.owned);
    CHECK_MSG(rows_exact(m, ref->tok_embeddings, bf16), "%s: rows not widened exactly", name);
    qsur_llama_memory u;
    qsur_llama_memory_use(m, &u);
    int64_t es = bf16 ? 2 : 4, lin = 0;
    for (int i = 0; i < qsur_llama_linear_count(m); i++)
        lin += qsur_llama_linear_at(m, i)->rows * qsur_llama_linear_at(m, i)->cols;
    lin += (int64_t)VOC * DIM * (shared ? 1 : 2);
    CHECK_MSG(u.mapped == es * lin && u.owned == 4 * DIM * (2 * NL + 1),
              "%s: mapped %lld (want %lld), owned %lld", name, (long long)u.mapped,
              (long long)(es * lin), (long long)u.owned);

    /* the float copy of the same file gives the same numbers, bit for bit */
    CHECK_OK(qsur_llama_own_all(f, &err), err);
    CHECK(f->tok_embeddings && f->tok_embeddings == f->embed.w && !f->embed.st.data);
    if (shared)
        CHECK(f->output.w == f->tok_embeddings);
    double p_ref = ppl(ref, t), p_lazy = ppl(m, t), p_float = ppl(f, t);
    printf("%s: ppl float model %.9g, lazy %.9g, float copy %.9g\n", name, p_ref, p_lazy,
           p_float);
    CHECK(p_lazy == p_float);
    if (!bf16)
        CHECK(fabs(p_lazy - p_ref) <= 1e-5 * p_ref);
    else
        CHECK(fabs(p_lazy - p_ref) <= 0.05 * p_ref);

    /* untie while stored: the classifier keeps reading the mapped bytes */
    if (shared) {
        CHECK_OK(qsur_llama_untie_classifier(m, &err), err);
        CHECK(!m->cfg.shared_classifier && m->output.st.data == m->embed.st.data);
        CHECK(ppl(m, t) == p_lazy);
    }
    /* views: the embedding tensor is made on lookup, equal to the lazy rows */
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    CHECK_OK(qsur_llama_view_workspace(m, &ws, NULL, &err), err);
    qsur_tensor *e = qsur_workspace_find(&ws, "tok_embeddings");
    CHECK(e && e->data && m->tok_embeddings == NULL);
    float row[DIM];
    int tok = 7;
    qsur_llama_embed_rows(m, &tok, 1, row);
    CHECK(e && e->data && memcmp(row, e->data + 7 * DIM, sizeof row) == 0);
    qsur_workspace_clear(&ws);
    /* copy-on-write of the embeddings alone */
    CHECK_OK(qsur_llama_embed_own(m, &err), err);
    CHECK(m->tok_embeddings && !m->embed.st.data);
    CHECK(ppl(m, t) == p_lazy);
    qsur_llama_free(m);
    qsur_llama_free(f);
}

int main(void)
{
    check_seed(151);
    qsur_tokens t;
    memset(&t, 0, sizeof t);
    t.n = SEQ * NSEQ;
    t.seq_len = SEQ;
    t.ids = malloc((size_t)t.n * sizeof *t.ids);
    for (int64_t i = 0; t.ids && i < t.n; i++)
        t.ids[i] = (int)(check_uniform() * VOC) % VOC;
    for (int shared = 0; shared < 2; shared++) {
        qsur_llama *ref = random_model(shared);
        CHECK(ref && t.ids);
        if (!ref || !t.ids)
            break;
        char name[32];
        for (int bf16 = 0; bf16 < 2; bf16++) {
            snprintf(name, sizeof name, "%s_%s", shared ? "tied" : "untied", bf16 ? "bf16" : "f32");
            check_format(ref, &t, name, bf16);
        }
        qsur_llama_free(ref);
    }
    free(t.ids);
    return check_done();
}
