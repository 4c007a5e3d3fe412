/* Shared pieces of the fuzz targets (see fuzz.h). */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "fuzz.h"

static char dir_buf[4096];
static char path_buf[4200];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void remove_dir(void)
{
    nftw(dir_buf, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_dir(void)
{
    if (!dir_buf[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(dir_buf, sizeof dir_buf, "%s/qsur-fuzz-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(dir_buf)) {
            perror("fuzz: mkdtemp");
            abort();
        }
        atexit(remove_dir);
    }
    return dir_buf;
}

const char *fuzz_write(const char *name, const uint8_t *data, size_t size)
{
    int n = snprintf(path_buf, sizeof path_buf, "%s/%s", fuzz_dir(), name);
    if (n < 0 || (size_t)n >= sizeof path_buf) { /* checked: gcc -O3 warns of truncation */
        fprintf(stderr, "fuzz: path too long: %s/%s\n", fuzz_dir(), name);
        abort();
    }
    FILE *f = fopen(path_buf, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror("fuzz: write");
        abort();
    }
    return path_buf;
}

char *fuzz_string(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s)
        abort();
    if (size)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

void fuzz_assert(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz: invariant broken: %s\n", what);
        abort();
    }
}

void fuzz_check_error(int rc, const qsur_error *err)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("QSUR_FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "  %s\n", rc == QSUR_OK ? "accepted" : err->msg);
    if (rc == QSUR_OK)
        return;
    fuzz_assert(err->msg[0] != '\0', "an error comes with a message");
    fuzz_assert(memchr(err->msg, '\0', sizeof err->msg) != NULL, "the message ends inside its buffer");
}

qsur_llama *fuzz_tiny_model(void)
{
    qsur_llama_config c = {0};
    c.dim = 16;
    c.hidden_dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.n_kv_heads = 2;
    c.vocab_size = 32;
    c.seq_len = 16;
    c.rope_theta = 10000;
    c.norm_eps = 1e-5;
    qsur_error err;
    qsur_llama *m = NULL;
    if (qsur_llama_config_check(&c, "fuzz", &err) || qsur_llama_new(&m, &c, &err)) {
        fprintf(stderr, "fuzz: tiny model: %s\n", err.msg);
        abort();
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    int n = qsur_llama_linear_count(m);
    for (int i = 0; i < n; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        for (int64_t j = 0; j < l->rows * l->cols; j++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            l->w[j] = (float)((int)(x >> 40) % 2001 - 1000) * 1e-4f;
        }
    }
    for (int64_t j = 0; j < (int64_t)c.vocab_size * c.dim; j++)
        m->tok_embeddings[j] = (float)((j * 37) % 101 - 50) * 1e-3f;
    for (int d = 0; d < c.dim; d++) {
        m->norm[d] = 1.0f;
        for (int l = 0; l < c.n_layers; l++)
            m->layers[l].attention_norm[d] = m->layers[l].ffn_norm[d] = 1.0f;
    }
    return m;
}

const char *fuzz_tiny_hf_dir(const char *sub, const char *dtype)
{
    static char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", fuzz_dir(), sub);
    mkdir(dir, 0700);
    qsur_llama *m = fuzz_tiny_model();
    qsur_error err;
    if (qsur_llama_save_hf(m, dir, dtype, &err)) {
        fprintf(stderr, "fuzz: %s\n", err.msg);
        abort();
    }
    qsur_llama_free(m);
    return dir;
}

void fuzz_load_hf(const char *dir, const char *file, const uint8_t *data, size_t size)
{
    char name[4200];
    snprintf(name, sizeof name, "%s/%s", dir + strlen(fuzz_dir()) + 1, file);
    fuzz_write(name, data, size);
    qsur_llama *m = NULL;
    qsur_error err;
    int rc = qsur_llama_load_hf(&m, dir, NULL, &err);
    fuzz_check_error(rc, &err);
    fuzz_assert((rc == QSUR_OK) == (m != NULL), "a model exactly on success");
    qsur_llama_free(m);
}
