/* llama2.c checkpoints: the real stories260K file against offsets worked out
 * by hand from the documented layout, and write -> read round trips. */
#include <dirent.h>
#include <sys/stat.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/llama2c.h"
#include "qsur/workspace.h"

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(sz > 0 ? (size_t)sz : 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static float raw_f32(const unsigned char *b, size_t off)
{
    uint32_t u = (uint32_t)b[off] | (uint32_t)b[off + 1] << 8 | (uint32_t)b[off + 2] << 16 |
                 (uint32_t)b[off + 3] << 24;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int stop_now(void *ctx, double done, const char *what, double value)
{
    (void)done; (void)what; (void)value;
    return ++*(int *)ctx >= 3;  /* let two ticks through, then stop */
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.' || strstr(e->d_name, ".tmp-"))
            n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    if (d)
        closedir(d);
    return n;
}

static uint32_t rng_state = 12345;
static float rnd(void)
{
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) * (1.0 / 16777216.0) - 0.5);
}

static void test_stories(void)
{
    const char *path = check_shared("data/stories260K.bin");
    char pathbuf[4096];
    snprintf(pathbuf, sizeof pathbuf, "%s", path);
    size_t fsize = 0;
    unsigned char *raw = slurp(pathbuf, &fsize);
    CHECK_MSG(raw != NULL, "cannot read %s", pathbuf);
    if (!raw)
        return;
    CHECK(fsize == 1056540);

    qsur_error err;
    qsur_llama2c_config c;
    CHECK_OK(qsur_llama2c_read_config(pathbuf, &c, &err), err);
    CHECK(c.dim == 64 && c.hidden_dim == 172 && c.n_layers == 5 && c.n_heads == 8 &&
          c.n_kv_heads == 4 && c.vocab_size == 512 && c.seq_len == 512 && c.shared_classifier);
    CHECK(qsur_llama2c_kv_dim(&c) == 32 && qsur_llama2c_head_size(&c) == 8);
    uint64_t bytes = 0;
    CHECK_OK(qsur_llama2c_file_bytes(&c, &bytes, &err), err);
    CHECK(bytes == fsize);

    qsur_workspace ws;
    qsur_workspace_init(&ws);
    int n = 0;
    qsur_llama2c_config c2;
    CHECK_OK(qsur_llama2c_load(&ws, pathbuf, NULL, &c2, &n, NULL, &err), err);
    /* embeddings + 9 per layer * 5 + final norm; shared classifier: no output. */
    CHECK(n == 47 && ws.count == 47);
    CHECK(qsur_workspace_find(&ws, "output") == NULL);
    for (int l = 0; l < 5; l++) {
        char name[64];
        snprintf(name, sizeof name, "layers.%d.attention.wk", l);
        qsur_tensor *t = qsur_workspace_find(&ws, name);
        CHECK_MSG(t && t->ndim == 2 && t->shape[0] == 32 && t->shape[1] == 64, "%s", name);
        snprintf(name, sizeof name, "layers.%d.feed_forward.w2", l);
        t = qsur_workspace_find(&ws, name);
        CHECK_MSG(t && t->ndim == 2 && t->shape[0] == 64 && t->shape[1] == 172, "%s", name);
        snprintf(name, sizeof name, "layers.%d.feed_forward.w1", l);
        t = qsur_workspace_find(&ws, name);
        CHECK_MSG(t && t->shape[0] == 172 && t->shape[1] == 64, "%s", name);
        snprintf(name, sizeof name, "layers.%d.ffn_norm", l);
        t = qsur_workspace_find(&ws, name);
        CHECK_MSG(t && t->ndim == 1 && t->shape[0] == 64, "%s", name);
    }
    qsur_tensor *emb = qsur_workspace_find(&ws, "tok_embeddings");
    qsur_tensor *norm = qsur_workspace_find(&ws, "norm");
    CHECK(emb && emb->shape[0] == 512 && emb->shape[1] == 64);
    CHECK(norm && norm->ndim == 1 && qsur_tensor_numel(norm) == 64);
    if (emb && norm) {
        /* First value is the float right after the 28-byte header. */
        CHECK(emb->data[0] == raw_f32(raw, 28));
        CHECK(fabsf(emb->data[0]) < 10.0f && emb->data[0] != 0.0f);
        /* norm starts after embeddings and 5 layers of
         * 2*64 (norms) + 2*64*64 (wq, wo) + 2*32*64 (wk, wv) + 3*172*64 (ffn). */
        size_t off = 28 + 4 * (size_t)(512 * 64 + 5 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 +
                                                      3 * 172 * 64));
        CHECK(memcmp(norm->data, raw + off, 64 * 4) == 0);
        /* RMSNorm gains of a trained model: positive, order one. */
        double mean = 0;
        for (int i = 0; i < 64; i++)
            mean += norm->data[i] / 64.0;
        CHECK_MSG(mean > 0.1 && mean < 20, "mean final norm gain %g", mean);
        /* Then the two RoPE tables, seq_len x head_size/2 = 512 x 4 each:
         * real[t][i] = cos(t * 10000^(-2i/8)), imag = sin. */
        size_t rope = off + 64 * 4;
        CHECK_NEAR(raw_f32(raw, rope + 4 * (1 * 4 + 0)), cos(1.0), 1e-6);
        CHECK_NEAR(raw_f32(raw, rope + 4 * (3 * 4 + 1)), cos(3.0 * pow(10000, -0.25)), 1e-6);
        CHECK_NEAR(raw_f32(raw, rope + 4 * (512 * 4 + 2 * 4 + 0)), sin(2.0), 1e-6);
        CHECK(rope + 2 * 512 * 4 * 4 == fsize);
    }

    /* Write it back: everything but the regenerated RoPE tables is bit-exact. */
    char out[4200];
    snprintf(out, sizeof out, "%s/stories_copy.bin", check_tmpdir());
    CHECK_OK(qsur_llama2c_write(&ws, NULL, &c, out, NULL, &err), err);
    size_t osize = 0;
    unsigned char *back = slurp(out, &osize);
    CHECK(back && osize == fsize);
    if (back && osize == fsize) {
        size_t rope = fsize - 2 * 512 * 4 * 4;
        CHECK(memcmp(back, raw, rope) == 0);
        double maxd = 0;
        for (size_t o = rope; o < fsize; o += 4)
            maxd = fmax(maxd, fabs((double)raw_f32(back, o) - raw_f32(raw, o)));
        CHECK_MSG(maxd < 1e-4, "rope tables differ by %g", maxd);
    }
    free(back);

    /* A prefix is prepended verbatim. */
    qsur_workspace ws2;
    qsur_workspace_init(&ws2);
    CHECK_OK(qsur_llama2c_load(&ws2, pathbuf, "m.", NULL, &n, NULL, &err), err);
    CHECK(qsur_workspace_find(&ws2, "m.norm") && qsur_workspace_find(&ws2, "m.layers.4.attention.wo"));
    CHECK(qsur_workspace_find(&ws2, "norm") == NULL);

    /* Interrupted load: INTERRUPTED and the workspace untouched. */
    int ticks = 0;
    qsur_progress p = {stop_now, &ticks};
    qsur_workspace ws3;
    qsur_workspace_init(&ws3);
    CHECK(qsur_llama2c_load(&ws3, pathbuf, NULL, NULL, &n, &p, &err) == QSUR_ERR_INTERRUPTED);
    CHECK(ws3.count == 0 && n == 0);
    CHECK(strstr(err.msg, "interrupted") != NULL);

    qsur_workspace_clear(&ws);
    qsur_workspace_clear(&ws2);
    qsur_workspace_clear(&ws3);
    free(raw);
}

/* An unshared classifier (negative vocab in the file), round tripped bit-exact. */
static void test_roundtrip_unshared(void)
{
    qsur_error err;
    qsur_llama2c_config c = {.dim = 16, .hidden_dim = 24, .n_layers = 2, .n_heads = 4,
                             .n_kv_heads = 2, .vocab_size = 10, .seq_len = 6,
                             .shared_classifier = 0};
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    const char *names[] = {"attention_norm", "attention.wq", "attention.wk", "attention.wv",
                           "attention.wo", "ffn_norm", "feed_forward.w1", "feed_forward.w2",
                           "feed_forward.w3"};
    int64_t rows[] = {0, 16, 8, 8, 16, 0, 24, 16, 24};
    int64_t cols[] = {16, 16, 16, 16, 16, 16, 16, 24, 16};
    qsur_tensor *t;
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 9; k++) {
            char nm[64];
            snprintf(nm, sizeof nm, "x/layers.%d.%s", l, names[k]);
            if (rows[k])
                qsur_tensor_new2(&t, nm, rows[k], cols[k], &err);
            else
                qsur_tensor_new(&t, nm, 1, &cols[k], &err);
            for (int64_t i = 0; i < qsur_tensor_numel(t); i++)
                t->data[i] = rnd();
            qsur_workspace_put(&ws, t, &err);
        }
    const char *glob[] = {"x/tok_embeddings", "x/output"};
    for (int k = 0; k < 2; k++) {
        qsur_tensor_new2(&t, glob[k], 10, 16, &err);
        for (int64_t i = 0; i < 160; i++)
            t->data[i] = rnd() * 1e-3f;
        qsur_workspace_put(&ws, t, &err);
    }
    int64_t d16 = 16;
    qsur_tensor_new(&t, "x/norm", 1, &d16, &err);
    for (int i = 0; i < 16; i++)
        t->data[i] = 1.0f + rnd();
    qsur_workspace_put(&ws, t, &err);

    char out[4200];
    snprintf(out, sizeof out, "%s/unshared.bin", check_tmpdir());
    CHECK_OK(qsur_llama2c_write(&ws, "x/", &c, out, NULL, &err), err);
    size_t n = 0;
    unsigned char *raw = slurp(out, &n);
    uint64_t want = 0;
    CHECK_OK(qsur_llama2c_file_bytes(&c, &want, &err), err);
    /* 28 + 4 * (V*D + L*(2D + 2D^2 + 2*KV*D + 3*H*D) + D + seq*head_size + V*D) */
    CHECK(want == 28 + 4 * (160 + 2 * (32 + 512 + 256 + 3 * 24 * 16) + 16 + 6 * 4 + 160));
    CHECK(n == want);
    if (raw && n >= 28)
        CHECK(raw[20] == 0xF6 && raw[23] == 0xFF);  /* vocab -10, little-endian */
    free(raw);

    qsur_workspace back;
    qsur_workspace_init(&back);
    qsur_llama2c_config c2;
    int cnt = 0;
    CHECK_OK(qsur_llama2c_load(&back, out, "x/", &c2, &cnt, NULL, &err), err);
    CHECK(cnt == 1 + 9 * 2 + 1 + 1);
    CHECK(c2.vocab_size == 10 && !c2.shared_classifier && c2.n_kv_heads == 2);
    int same = 1;
    for (int i = 0; i < ws.count; i++) {
        qsur_tensor *a = ws.items[i], *b = qsur_workspace_find(&back, a->name);
        if (!b || b->ndim != a->ndim || qsur_tensor_numel(a) != qsur_tensor_numel(b) ||
            memcmp(a->data, b->data, (size_t)qsur_tensor_numel(a) * 4) != 0) {
            same = 0;
            fprintf(stderr, "mismatch in %s\n", a->name);
        }
    }
    CHECK(same && back.count == ws.count);

    /* Writer refuses a wrong shape or a missing tensor, and leaves no file. */
    char dir[4200], bad[4300];
    snprintf(dir, sizeof dir, "%s/wr", check_tmpdir());
    CHECK(mkdir(dir, 0755) == 0);
    snprintf(bad, sizeof bad, "%s/bad.bin", dir);
    qsur_workspace_remove(&ws, "x/output");
    CHECK(qsur_llama2c_write(&ws, "x/", &c, bad, NULL, &err) == QSUR_ERR_ARG);
    CHECK(strstr(err.msg, "x/output") && strstr(err.msg, "missing"));
    c.shared_classifier = 1;
    CHECK_OK(qsur_llama2c_write(&ws, "x/", &c, bad, NULL, &err), err);  /* now valid */
    qsur_workspace_remove(&ws, "x/norm");
    qsur_tensor_new2(&t, "x/norm", 4, 4, &err);
    qsur_workspace_put(&ws, t, &err);
    CHECK(qsur_llama2c_write(&ws, "x/", &c, bad, NULL, &err) == QSUR_ERR_ARG);
    CHECK(strstr(err.msg, "x/norm") && strstr(err.msg, "4x4") && strstr(err.msg, "expected 16"));
    CHECK(count_files(dir) == 1);  /* only the earlier valid bad.bin, no temporaries */
    qsur_workspace_clear(&ws);
    qsur_workspace_clear(&back);
}

int main(void)
{
    test_stories();
    test_roundtrip_unshared();
    return check_done();
}
