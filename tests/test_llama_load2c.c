/* llama2.c files loaded as mapped models (src/llama_load2c.c): every linear
 * and the embeddings point into the file, the logits are bit for bit those
 * of the same file read into owned float32 (the workspace path), and a bad
 * file (truncated, trailing bytes, a NaN weight) still gets its one-line
 * error with nothing loaded. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/llama.h"
#include "qsur/llama2c.h"

/* The owned float32 model of path, as the loader made it before mapping. */
static qsur_llama *load_owned(const char *path)
{
    qsur_error err;
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    qsur_llama2c_config c2;
    qsur_llama *m = NULL;
    int rc = qsur_llama2c_load(&ws, path, NULL, &c2, NULL, NULL, &err);
    CHECK_OK(rc, err);
    if (rc)
        return NULL;
    qsur_llama_config cfg = qsur_llama_config_default();
    cfg.dim = c2.dim, cfg.hidden_dim = c2.hidden_dim, cfg.n_layers = c2.n_layers;
    cfg.n_heads = c2.n_heads, cfg.n_kv_heads = c2.n_kv_heads, cfg.vocab_size = c2.vocab_size;
    cfg.seq_len = c2.seq_len, cfg.shared_classifier = c2.shared_classifier;
    CHECK_OK(qsur_llama_from_workspace(&m, &ws, NULL, &cfg, &err), err);
    qsur_workspace_clear(&ws);
    return m;
}

static int in_file(const void *p, const char *base, size_t size)
{
    return p && (const char *)p >= base && (const char *)p < base + size;
}

static void check_bad(const char *dir, const char *name, const unsigned char *b, size_t n,
                      const char *needle)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(b, 1, n, f) == n);
    if (f)
        fclose(f);
    qsur_llama *m = NULL;
    qsur_error err = {{0}};
    int rc = qsur_llama_load_llama2c(&m, path, NULL, &err);
    CHECK_MSG(rc != QSUR_OK && !m && strstr(err.msg, needle) && strstr(err.msg, name) &&
              !strchr(err.msg, '\n'), "%s: %s", name, err.msg);
}

int main(void)
{
    qsur_error err;
    const char *path = check_shared("data/stories260K.bin");
    qsur_llama *m = NULL, *o = load_owned(path);
    CHECK_OK(qsur_llama_load_llama2c(&m, path, NULL, &err), err);
    if (!m || !o)
        return check_done();

    /* mapped: every linear and the embeddings inside the file, F32, no float copy */
    size_t fsize = 0;
    char *bytes = check_read_file(path, &fsize);
    CHECK(m->mapping && m->mapping->count == 1 && m->tok_embeddings == NULL);
    const qsur_mapped_file *mf = m->mapping ? m->mapping->files[0] : NULL;
    int all = mf != NULL;
    for (int i = 0; mf && i < qsur_llama_linear_count(m); i++) {
        const qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        all &= !l->w && !l->st.owned && l->st.dtype == QSUR_DTYPE_F32 &&
               in_file(l->st.data, (const char *)mf->data, mf->size);
        /* the same numbers as the owned copy */
        all &= memcmp(l->st.data, qsur_llama_linear_at(o, i)->w,
                      (size_t)(l->rows * l->cols) * sizeof(float)) == 0;
    }
    all &= mf && in_file(m->embed.st.data, (const char *)mf->data, mf->size);
    CHECK_MSG(all, "a linear is not mapped or differs from the owned load");
    qsur_llama_memory u;
    qsur_llama_memory_use(m, &u);
    CHECK(u.owned == 4 * (int64_t)m->cfg.dim * (2 * m->cfg.n_layers + 1));
    printf("stories260K: %zu bytes, %lld mapped, %lld owned\n", fsize, (long long)u.mapped,
           (long long)u.owned);

    /* identical logits (one batch of 2 x 32 tokens) and perplexity */
    enum { B = 2, T = 32 };
    int tok[B * T];
    for (int i = 0; i < B * T; i++)
        tok[i] = (i * 37 + 11) % m->cfg.vocab_size;
    qsur_llama_state *sm = NULL, *so = NULL;
    CHECK_OK(qsur_llama_state_new(&sm, m, B, T, &err), err);
    CHECK_OK(qsur_llama_state_new(&so, o, B, T, &err), err);
    if (sm && so) {
        CHECK_OK(qsur_llama_forward(m, sm, tok, B, T, 0, &err), err);
        CHECK_OK(qsur_llama_forward(o, so, tok, B, T, 0, &err), err);
        size_t nl = (size_t)B * T * (size_t)m->cfg.vocab_size;
        CHECK_MSG(memcmp(sm->logits, so->logits, nl * sizeof(float)) == 0,
                  "mapped logits differ from the owned model's");
    }
    qsur_llama_state_free(sm);
    qsur_llama_state_free(so);

    /* bad files: one line naming the file, nothing loaded */
    const char *dir = check_subdir("bad2c");
    if (bytes) {
        check_bad(dir, "cut.bin", (unsigned char *)bytes, fsize - 4, "truncated");
        unsigned char *more = malloc(fsize + 8);
        if (more) {
            memcpy(more, bytes, fsize);
            memset(more + fsize, 0, 8);
            check_bad(dir, "long.bin", more, fsize + 8, "trailing bytes");
            /* a NaN in layer 1's wk: element 3 */
            qsur_llama2c_config c2;
            CHECK_OK(qsur_llama2c_parse_header((unsigned char *)bytes, fsize, path, &c2, &err), err);
            int nt = qsur_llama2c_tensors(&c2, NULL);
            qsur_llama2c_tensor *ts = calloc((size_t)nt, sizeof *ts);
            if (ts) {
                qsur_llama2c_tensors(&c2, ts);
                for (int i = 0; i < nt; i++)
                    if (strcmp(ts[i].name, "layers.1.attention.wk") == 0) {
                        float nan = NAN;
                        memcpy(more + ts[i].offset + 12, &nan, 4);
                    }
                check_bad(dir, "nan.bin", more, fsize, "tensor layers.1.attention.wk has a "
                          "non-finite value (nan) at element 3");
                free(ts);
            }
            free(more);
        }
    }
    free(bytes);
    qsur_llama_free(m);
    qsur_llama_free(o);
    return check_done();
}
