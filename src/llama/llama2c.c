/* llama2.c checkpoints: validated loading into Meta-named tensors, and the
 * writer the export path uses. The layout is documented in llama2c.h; the
 * table below is the single place that knows the order of the arrays. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/atomic_file.h"
#include "qsur/llama2c.h"
#include "qsur/mapped_file.h"

#define HEADER_BYTES 28
#define ROPE_THETA 10000.0

/* One array of the file: per_layer arrays repeat n_layers times back to back
 * (all of layer 0, then layer 1, ...), which is how run.c lays them out. */
typedef struct {
    const char *name;  /* Meta name; "%d" stands for the layer when per_layer */
    int per_layer;
    int ndim;          /* 1 or 2 */
    int64_t rows, cols;
    int skip;          /* legacy RoPE tables: present in the file, not loaded */
} segment;

enum { MAX_SEGMENTS = 13 };

static int build_segments(const qsur_llama2c_config *c, segment *s)
{
    int64_t D = c->dim, H = c->hidden_dim, V = c->vocab_size;
    int64_t KV = qsur_llama2c_kv_dim(c), HS = qsur_llama2c_head_size(c);
    int n = 0;
    s[n++] = (segment){"tok_embeddings", 0, 2, V, D, 0};
    s[n++] = (segment){"layers.%d.attention_norm", 1, 1, 1, D, 0};
    s[n++] = (segment){"layers.%d.attention.wq", 1, 2, D, D, 0};
    s[n++] = (segment){"layers.%d.attention.wk", 1, 2, KV, D, 0};
    s[n++] = (segment){"layers.%d.attention.wv", 1, 2, KV, D, 0};
    s[n++] = (segment){"layers.%d.attention.wo", 1, 2, D, D, 0};
    s[n++] = (segment){"layers.%d.ffn_norm", 1, 1, 1, D, 0};
    s[n++] = (segment){"layers.%d.feed_forward.w1", 1, 2, H, D, 0};
    s[n++] = (segment){"layers.%d.feed_forward.w2", 1, 2, D, H, 0};
    s[n++] = (segment){"layers.%d.feed_forward.w3", 1, 2, H, D, 0};
    s[n++] = (segment){"norm", 0, 1, 1, D, 0};
    /* freq_cis_real and freq_cis_imag, seq_len x head_size/2 each. */
    s[n++] = (segment){"(rope tables)", 0, 2, 2 * (int64_t)c->seq_len, HS / 2, 1};
    if (!c->shared_classifier)
        s[n++] = (segment){"output", 0, 2, V, D, 0};
    return n;
}

int qsur_llama2c_kv_dim(const qsur_llama2c_config *c)
{
    return c->n_heads > 0 ? (int)((int64_t)c->dim * c->n_kv_heads / c->n_heads) : 0;
}

int qsur_llama2c_head_size(const qsur_llama2c_config *c)
{
    return c->n_heads > 0 ? c->dim / c->n_heads : 0;
}

static int check_range(const char *what, const char *field, int v, int max, qsur_error *err)
{
    if (v <= 0 || v > max)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: llama2c header %s = %d (expected 1..%d)",
                         what, field, v, max);
    return QSUR_OK;
}

int qsur_llama2c_config_validate(const qsur_llama2c_config *c, const char *what,
                                 qsur_error *err)
{
    int rc;
    if ((rc = check_range(what, "dim", c->dim, QSUR_LLAMA2C_MAX_DIM, err)) ||
        (rc = check_range(what, "hidden_dim", c->hidden_dim, QSUR_LLAMA2C_MAX_HIDDEN, err)) ||
        (rc = check_range(what, "n_layers", c->n_layers, QSUR_LLAMA2C_MAX_LAYERS, err)) ||
        (rc = check_range(what, "n_heads", c->n_heads, c->dim, err)) ||
        (rc = check_range(what, "n_kv_heads", c->n_kv_heads, c->n_heads, err)) ||
        (rc = check_range(what, "vocab_size", c->vocab_size, QSUR_LLAMA2C_MAX_VOCAB, err)) ||
        (rc = check_range(what, "seq_len", c->seq_len, QSUR_LLAMA2C_MAX_SEQ, err)))
        return rc;
    if (c->dim % c->n_heads != 0)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: llama2c header n_heads = %d does not divide dim = %d", what,
                         c->n_heads, c->dim);
    if (c->n_heads % c->n_kv_heads != 0)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: llama2c header n_kv_heads = %d does not divide n_heads = %d",
                         what, c->n_kv_heads, c->n_heads);
    if (qsur_llama2c_head_size(c) % 2 != 0)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: llama2c head size dim/n_heads = %d is odd (RoPE rotates pairs)",
                         what, qsur_llama2c_head_size(c));
    return QSUR_OK;
}

int qsur_llama2c_file_bytes(const qsur_llama2c_config *c, uint64_t *bytes, qsur_error *err)
{
    int rc = qsur_llama2c_config_validate(c, "llama2c config", err);
    if (rc)
        return rc;
    /* The limits in llama2c.h keep every product below 2^50: no overflow. */
    segment s[MAX_SEGMENTS];
    int n = build_segments(c, s);
    uint64_t floats = 0;
    for (int i = 0; i < n; i++)
        floats += (uint64_t)(s[i].per_layer ? c->n_layers : 1) * (uint64_t)s[i].rows *
                  (uint64_t)s[i].cols;
    *bytes = HEADER_BYTES + 4 * floats;
    return QSUR_OK;
}

int qsur_llama2c_tensors(const qsur_llama2c_config *c, qsur_llama2c_tensor *out)
{
    segment seg[MAX_SEGMENTS];
    int nseg = build_segments(c, seg), n = 0;
    size_t off = HEADER_BYTES;
    for (int i = 0; i < nseg; i++) {
        size_t per = (size_t)seg[i].rows * (size_t)seg[i].cols;
        int reps = seg[i].per_layer ? c->n_layers : 1;
        for (int l = 0; l < reps; l++, off += 4 * per) {
            if (seg[i].skip)
                continue;
            if (out) {
                qsur_llama2c_tensor *t = &out[n];
                snprintf(t->name, sizeof t->name, seg[i].name, l);
                t->ndim = seg[i].ndim;
                t->rows = seg[i].rows;
                t->cols = seg[i].cols;
                t->offset = off;
            }
            n++;
        }
    }
    return n;
}

static int32_t i32le(const unsigned char *p)
{
    uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                 (uint32_t)p[3] << 24;
    int32_t v;
    memcpy(&v, &u, 4);
    return v;
}

void qsur_llama2c_f32_copy(float *dst, const unsigned char *src, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = src + 4 * i;
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
        memcpy(dst + i, &u, 4);
    }
}

int qsur_llama2c_parse_header(const unsigned char *data, size_t size, const char *path,
                              qsur_llama2c_config *cfg, qsur_error *err)
{
    if (size == 0)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: empty file (expected a 28-byte llama2c header)", path);
    if (size < HEADER_BYTES)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: %zu bytes, shorter than the 28-byte llama2c header", path, size);
    qsur_llama2c_config c;
    c.dim = i32le(data);
    c.hidden_dim = i32le(data + 4);
    c.n_layers = i32le(data + 8);
    c.n_heads = i32le(data + 12);
    c.n_kv_heads = i32le(data + 16);
    int32_t v = i32le(data + 20);
    c.seq_len = i32le(data + 24);
    /* run.c: a negative vocab_size flags an unshared classifier. */
    c.shared_classifier = v > 0;
    c.vocab_size = v == INT32_MIN ? INT32_MAX : (v < 0 ? -v : v);
    if (v == INT32_MIN || v == 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: llama2c header vocab_size = %d (expected "
                         "1..%d, negative for a separate classifier)", path, (int)v,
                         QSUR_LLAMA2C_MAX_VOCAB);
    int rc = qsur_llama2c_config_validate(&c, path, err);
    if (rc)
        return rc;
    uint64_t want;
    if ((rc = qsur_llama2c_file_bytes(&c, &want, err)))
        return rc;
    if ((uint64_t)size != want)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: llama2c file is %zu bytes but its header (dim=%d hidden=%d "
                         "layers=%d heads=%d kv_heads=%d vocab=%d%s seq_len=%d) implies "
                         "exactly %" PRIu64 " bytes (%s)",
                         path, size, c.dim, c.hidden_dim, c.n_layers, c.n_heads, c.n_kv_heads,
                         c.vocab_size, c.shared_classifier ? "" : " unshared", c.seq_len,
                         want, (uint64_t)size < want ? "truncated" : "trailing bytes");
    *cfg = c;
    return QSUR_OK;
}

int qsur_llama2c_read_config(const char *path, qsur_llama2c_config *cfg, qsur_error *err)
{
    qsur_mapped_file m;
    int rc = qsur_mapped_file_open(&m, path, err);
    if (rc)
        return rc;
    rc = qsur_llama2c_parse_header(m.data, m.size, path, cfg, err);
    qsur_mapped_file_close(&m);
    return rc;
}

static int make_name(char *out, const char *prefix, const char *fmt, int layer,
                     const char *path, qsur_error *err)
{
    char base[QSUR_NAME_MAX];
    snprintf(base, sizeof base, fmt, layer);
    int w = snprintf(out, QSUR_NAME_MAX, "%s%s", prefix ? prefix : "", base);
    if (w < 0 || w >= QSUR_NAME_MAX)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: tensor name %s%s longer than %d characters",
                         path, prefix ? prefix : "", base, QSUR_NAME_MAX - 1);
    return QSUR_OK;
}

int qsur_llama2c_load(qsur_workspace *ws, const char *path, const char *prefix,
                      qsur_llama2c_config *cfg_out, int *n_loaded,
                      const qsur_progress *progress, qsur_error *err)
{
    if (n_loaded)
        *n_loaded = 0;
    qsur_mapped_file m;
    int rc = qsur_mapped_file_open(&m, path, err);
    if (rc)
        return rc;
    qsur_llama2c_config c;
    if ((rc = qsur_llama2c_parse_header(m.data, m.size, path, &c, err))) {
        qsur_mapped_file_close(&m);
        return rc;
    }
    segment seg[MAX_SEGMENTS];
    int nseg = build_segments(&c, seg);
    int total = 0;
    for (int i = 0; i < nseg; i++)
        if (!seg[i].skip)
            total += seg[i].per_layer ? c.n_layers : 1;
    /* Collect first, publish at the end: a failure half way leaves ws intact. */
    qsur_tensor **got = calloc((size_t)total, sizeof *got);
    if (!got) {
        qsur_mapped_file_close(&m);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    }
    int n = 0;
    size_t off = HEADER_BYTES;
    for (int i = 0; i < nseg && rc == QSUR_OK; i++) {
        size_t per = (size_t)seg[i].rows * (size_t)seg[i].cols;  /* floats per tensor */
        int reps = seg[i].per_layer ? c.n_layers : 1;
        if (seg[i].skip) {
            off += 4 * per * (size_t)reps;
            continue;
        }
        for (int l = 0; l < reps && rc == QSUR_OK; l++) {
            char name[QSUR_NAME_MAX];
            if ((rc = make_name(name, prefix, seg[i].name, l, path, err)))
                break;
            int64_t shape[2] = {seg[i].rows, seg[i].cols};
            const int64_t *sh = seg[i].ndim == 1 ? shape + 1 : shape;
            if ((rc = qsur_tensor_new(&got[n], name, seg[i].ndim, sh, err)))
                break;
            qsur_llama2c_f32_copy(got[n]->data, m.data + off, per);
            int64_t bad = qsur_find_nonfinite(got[n]->data, (int64_t)per);
            if (bad >= 0) {
                rc = qsur_fail(err, QSUR_ERR_NUMERIC,
                               "%s: tensor %s has a non-finite value (%g) at element %lld "
                               "(expected finite float32)", path, name,
                               (double)got[n]->data[bad], (long long)bad);
                n++;
                break;
            }
            n++;
            off += 4 * per;
            rc = qsur_progress_tick(progress, (double)off / (double)m.size, "load llama2c",
                                    NAN, err);
        }
    }
    qsur_mapped_file_close(&m);
    if (rc == QSUR_OK) {
        for (int i = 0; i < n; i++) {
            qsur_tensor *t = got[i];
            got[i] = NULL;
            /* put frees t itself on failure. Only NOMEM can happen here. */
            if ((rc = qsur_workspace_put(ws, t, err)))
                break;
        }
    }
    for (int i = 0; i < n; i++)
        qsur_tensor_free(got[i]);
    free(got);
    if (rc)
        return rc;
    if (cfg_out)
        *cfg_out = c;
    if (n_loaded)
        *n_loaded = n;
    return QSUR_OK;
}

/* freq_cis tables of the legacy format: entry [t][i] = cos / sin of
 * t * theta^(-2i/head_size), as llama2.c's export.py precomputes them. */
static int write_rope(qsur_atomic_file *f, const qsur_llama2c_config *c, int use_sin,
                      qsur_error *err)
{
    int hs = qsur_llama2c_head_size(c);
    float *row = malloc((size_t)(hs / 2) * sizeof *row);
    if (!row)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", f->path);
    int rc = QSUR_OK;
    for (int t = 0; t < c->seq_len && rc == QSUR_OK; t++) {
        for (int i = 0; i < hs / 2; i++) {
            double freq = pow(ROPE_THETA, -2.0 * i / hs);
            row[i] = (float)(use_sin ? sin(t * freq) : cos(t * freq));
        }
        rc = qsur_atomic_write_f32le(f, row, (size_t)(hs / 2), err);
    }
    free(row);
    return rc;
}

int qsur_llama2c_write(const qsur_workspace *ws, const char *prefix,
                       const qsur_llama2c_config *cfg, const char *path,
                       const qsur_progress *progress, qsur_error *err)
{
    int rc = qsur_llama2c_config_validate(cfg, path, err);
    if (rc)
        return rc;
    segment seg[MAX_SEGMENTS];
    int nseg = build_segments(cfg, seg);
    /* Check every tensor before creating the file. */
    for (int i = 0; i < nseg; i++) {
        if (seg[i].skip)
            continue;
        for (int l = 0; l < (seg[i].per_layer ? cfg->n_layers : 1); l++) {
            char name[QSUR_NAME_MAX];
            if ((rc = make_name(name, prefix, seg[i].name, l, path, err)))
                return rc;
            const qsur_tensor *t = qsur_workspace_find(ws, name);
            if (!t)
                return qsur_fail(err, QSUR_ERR_ARG, "%s: tensor %s missing from the workspace",
                                 path, name);
            int ok = seg[i].ndim == 1
                         ? (t->ndim == 1 && t->shape[0] == seg[i].cols)
                         : (t->ndim == 2 && t->shape[0] == seg[i].rows &&
                            t->shape[1] == seg[i].cols);
            if (!ok) {
                char s[64];
                qsur_tensor_shape_str(t, s, sizeof s);
                if (seg[i].ndim == 1)
                    return qsur_fail(err, QSUR_ERR_ARG, "%s: tensor %s is %s (expected %lld)",
                                     path, name, s, (long long)seg[i].cols);
                return qsur_fail(err, QSUR_ERR_ARG, "%s: tensor %s is %s (expected %lldx%lld)",
                                 path, name, s, (long long)seg[i].rows, (long long)seg[i].cols);
            }
            int64_t bad = qsur_find_nonfinite(t->data, qsur_tensor_numel(t));
            if (bad >= 0)
                return qsur_fail(err, QSUR_ERR_NUMERIC,
                                 "%s: tensor %s has a non-finite value at element %lld", path,
                                 name, (long long)bad);
        }
    }
    qsur_atomic_file f;
    if ((rc = qsur_atomic_open(&f, path, err)))
        return rc;
    int32_t hdr[7] = {cfg->dim, cfg->hidden_dim, cfg->n_layers, cfg->n_heads,
                      cfg->n_kv_heads, cfg->shared_classifier ? cfg->vocab_size : -cfg->vocab_size,
                      cfg->seq_len};
    rc = qsur_atomic_write_i32le(&f, hdr, 7, err);
    for (int i = 0; i < nseg && rc == QSUR_OK; i++) {
        if (seg[i].skip) {
            if ((rc = write_rope(&f, cfg, 0, err)) == QSUR_OK)
                rc = write_rope(&f, cfg, 1, err);
            continue;
        }
        int reps = seg[i].per_layer ? cfg->n_layers : 1;
        for (int l = 0; l < reps && rc == QSUR_OK; l++) {
            char name[QSUR_NAME_MAX];
            make_name(name, prefix, seg[i].name, l, path, err);  /* checked above */
            const qsur_tensor *t = qsur_workspace_find(ws, name);
            rc = qsur_atomic_write_f32le(&f, t->data, (size_t)qsur_tensor_numel(t), err);
            if (rc == QSUR_OK)
                rc = qsur_progress_tick(progress, (double)(i + 1) / nseg, "write llama2c", NAN,
                                        err);
        }
    }
    if (rc) {
        qsur_atomic_abort(&f);
        return rc;
    }
    return qsur_atomic_commit(&f, err);
}
