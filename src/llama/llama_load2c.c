/* A llama2.c checkpoint as a model whose linears and embeddings point into
 * the mapped file (qsur/llama2c.h has the layout): every float32 array starts
 * at 28 + 4k bytes, so on a little-endian host the mapping is the stored form
 * as it is; elsewhere each array is copied, byte-swapped, into owned memory.
 * Only the norms (a few KB) become float copies. Validation reads the whole
 * file once (header and size, then a non-finite scan of every array); nothing
 * else touches the weights until a forward pass needs them. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama.h"
#include "qsur/llama2c.h"
#include "qsur/mapped_file.h"

static int host_little_endian(void)
{
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

static void close_mapped(void *f)
{
    qsur_mapped_file_close(f);
    free(f);
}

static const qsur_mapped_file *mapped_map(const void *f)
{
    return f;
}

static int adopt_file(qsur_llama *m, qsur_mapped_file *f, qsur_error *err)
{
    return qsur_llama_mapping_adopt_file(m, f, close_mapped, mapped_map, err);
}

/* The float vector (norm gain) a 1-D tensor of the file fills, or NULL. */
static float *vector_of(qsur_llama *m, const char *name)
{
    int l;
    char what[32];
    if (strcmp(name, "norm") == 0)
        return m->norm;
    if (sscanf(name, "layers.%d.%31s", &l, what) == 2 && l >= 0 && l < m->cfg.n_layers)
        return strcmp(what, "attention_norm") == 0 ? m->layers[l].attention_norm
             : strcmp(what, "ffn_norm") == 0      ? m->layers[l].ffn_norm
                                                  : NULL;
    return NULL;
}

/* Points tensor t of the file at its place in m. */
static int place(qsur_llama *m, const qsur_mapped_file *f, const qsur_llama2c_tensor *t,
                 const char *path, int mapped, qsur_error *err)
{
    const unsigned char *src = f->data + t->offset;
    size_t n = (size_t)t->rows * (size_t)t->cols;
    float tmp[1];
    int64_t bad = -1;
    if (mapped) /* the only pass over the weights; offsets are 4-byte aligned */
        bad = qsur_find_nonfinite((const float *)(const void *)src, (int64_t)n);
    for (size_t i = 0; !mapped && i < n && bad < 0; i++) {
        qsur_llama2c_f32_copy(tmp, src + 4 * i, 1);
        if (!isfinite(tmp[0]))
            bad = (int64_t)i;
    }
    if (bad >= 0) {
        qsur_llama2c_f32_copy(tmp, src + 4 * bad, 1);
        return qsur_fail(err, QSUR_ERR_NUMERIC, "%s: tensor %s has a non-finite value (%g) at "
                         "element %lld (expected finite float32)", path, t->name, (double)tmp[0],
                         (long long)bad);
    }
    if (t->ndim == 1) {
        float *v = vector_of(m, t->name);
        if (!v)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: no place for tensor %s", path, t->name);
        qsur_llama2c_f32_copy(v, src, n);
        return QSUR_OK;
    }
    qsur_llama_linear *l = strcmp(t->name, "tok_embeddings") == 0 ? &m->embed
                                                                  : qsur_llama_linear_find(m, t->name);
    if (!l || l->rows != t->rows || l->cols != t->cols)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: no place for tensor %s", path, t->name);
    l->st.dtype = QSUR_DTYPE_F32;
    l->st.rope_heads = 0;
    if (mapped) {
        l->st.data = src;
        l->st.in_file = 1;
        return QSUR_OK;
    }
    float *w = qsur_alloc(n, sizeof(float));
    if (!w)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate %s", path, t->name);
    qsur_llama2c_f32_copy(w, src, n);
    l->st.data = l->st.owned = w;
    l->st.in_file = 0;
    return QSUR_OK;
}

int qsur_llama_load_llama2c(qsur_llama **out, const char *path, const qsur_progress *prog,
                            qsur_error *err)
{
    *out = NULL;
    qsur_mapped_file *f = calloc(1, sizeof *f);
    if (!f)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    qsur_llama2c_config c2;
    qsur_llama *m = NULL;
    qsur_llama2c_tensor *ts = NULL;
    int rc = qsur_mapped_file_open(f, path, err);
    if (!rc)
        rc = qsur_llama2c_parse_header(f->data, f->size, path, &c2, err);
    if (!rc) {
        qsur_llama_config cfg = qsur_llama_config_default();
        cfg.dim = c2.dim;
        cfg.hidden_dim = c2.hidden_dim;
        cfg.n_layers = c2.n_layers;
        cfg.n_heads = c2.n_heads;
        cfg.n_kv_heads = c2.n_kv_heads;
        cfg.vocab_size = c2.vocab_size;
        cfg.seq_len = c2.seq_len;
        cfg.shared_classifier = c2.shared_classifier;
        rc = qsur_llama_new_stored(&m, &cfg, err);
    }
    int n = rc ? 0 : qsur_llama2c_tensors(&c2, NULL);
    if (!rc && !(ts = malloc((size_t)n * sizeof *ts)))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    if (!rc)
        qsur_llama2c_tensors(&c2, ts);
    int mapped = host_little_endian();
    for (int i = 0; i < n && !rc; i++) {
        rc = place(m, f, &ts[i], path, mapped, err);
        if (!rc)
            rc = qsur_progress_tick(prog, (double)(i + 1) / n, "load llama2c", NAN, err);
    }
    free(ts);
    if (!rc) {
        qsur_llama_embed_sync(m);
        rc = mapped ? adopt_file(m, f, err) : QSUR_OK;
        if (!rc && !mapped)
            close_mapped(f);
        if (!rc)
            f = NULL;
    }
    if (rc) {
        qsur_llama_free(m); /* before the mapping its linears point into */
        if (f)
            close_mapped(f);
        return rc;
    }
    *out = m;
    return QSUR_OK;
}
