/* make_checkpoint: Hugging Face Llama directories of real model shapes with
 * random weights, for measuring qsur at the sizes users quantize (nothing is
 * downloaded; the weights mean nothing, the shapes and bytes are real).
 *
 *   make_checkpoint SHAPE DIR [layers=N] [dtype=bf16|f16|f32] [shard=BYTES] [seed=S]
 *
 * SHAPE   dim   hidden  layers heads kv  vocab   (as published)
 * tiny    2048  5632    22     32    4   32000   TinyLlama-1.1B
 * llama2-7b 4096 11008  32     32    32  32000   Llama-2-7B (MHA)
 * llama3-8b 4096 14336  32     32    8   128256  Llama-3-8B (GQA, theta 500000)
 * layers=N keeps the shape but only N blocks (tests use 2). The directory is
 * written tensor by tensor (memory: one row), sharded like Hugging Face's
 * save_pretrained (5 GB shards by default). Weights are uniform with
 * variance 1/(3 cols) scaled so activations stay O(1); RMSNorm gains 1 +-
 * 0.1. Prints the bytes written. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "qsur/llama.h"
#include "qsur/rng.h"

typedef struct {
    const char *name;
    int dim, hidden, layers, heads, kv, vocab;
    double theta;
} shape;

static const shape shapes[] = {
    {"tiny", 2048, 5632, 22, 32, 4, 32000, 10000.0},
    {"llama2-7b", 4096, 11008, 32, 32, 32, 32000, 10000.0},
    {"llama3-8b", 4096, 14336, 32, 32, 8, 128256, 500000.0},
};

typedef struct {
    const qsur_st_desc *d;
    qsur_rng rng;
    float *row;
} gen;

/* Tensor i: a 1-D RMSNorm gain or a 2-D weight, row by row. */
static int gen_put(void *ctx, int i, qsur_st_stream *w, qsur_error *err)
{
    gen *g = ctx;
    const qsur_st_desc *d = &g->d[i];
    int64_t rows = d->ndim == 2 ? d->shape[0] : 1, cols = d->ndim == 2 ? d->shape[1] : d->shape[0];
    float a = d->ndim == 2 ? (float)(1.0 / sqrt((double)cols)) : 0.1f;
    int rc = 0;
    for (int64_t r = 0; r < rows && !rc; r++) {
        for (int64_t c = 0; c < cols; c++) {
            float u = (float)(2.0 * qsur_rng_uniform(&g->rng) - 1.0);
            g->row[c] = d->ndim == 2 ? a * u : 1.0f + a * u;
        }
        rc = qsur_st_stream_put(w, g->row, cols, err);
    }
    return rc;
}

static int add(qsur_st_desc *d, char (*names)[96], int n, const char *name, qsur_dtype dt,
               int64_t rows, int64_t cols)
{
    snprintf(names[n], sizeof names[n], "%s", name);
    memset(&d[n], 0, sizeof d[n]);
    d[n].name = names[n];
    d[n].dtype = dt;
    d[n].ndim = rows ? 2 : 1;
    d[n].shape[0] = rows ? rows : cols;
    d[n].shape[1] = cols;
    return n + 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: make_checkpoint tiny|llama2-7b|llama3-8b DIR [layers=N] "
                        "[dtype=bf16|f16|f32] [shard=BYTES] [seed=S]\n");
        return 2;
    }
    const shape *sh = NULL;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcmp(argv[1], shapes[i].name))
            sh = &shapes[i];
    if (!sh) {
        fprintf(stderr, "make_checkpoint: unknown shape %s (tiny, llama2-7b, llama3-8b)\n", argv[1]);
        return 2;
    }
    const char *dir = argv[2];
    int layers = sh->layers;
    qsur_dtype dt = QSUR_DTYPE_BF16;
    long long shard = 0;
    unsigned long long seed = 1;
    for (int i = 3; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "layers=", 7) && atoi(a + 7) >= 1 && atoi(a + 7) <= 1000)
            layers = atoi(a + 7);
        else if (!strcmp(a, "dtype=bf16") || !strcmp(a, "dtype=f16") || !strcmp(a, "dtype=f32"))
            dt = a[6] == 'b' ? QSUR_DTYPE_BF16 : a[7] == '1' ? QSUR_DTYPE_F16 : QSUR_DTYPE_F32;
        else if (!strncmp(a, "shard=", 6) && atoll(a + 6) > 0)
            shard = atoll(a + 6);
        else if (!strncmp(a, "seed=", 5))
            seed = strtoull(a + 5, NULL, 10);
        else {
            fprintf(stderr, "make_checkpoint: bad option %s\n", a);
            return 2;
        }
    }
    mkdir(dir, 0755);
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = sh->dim, c.hidden_dim = sh->hidden, c.n_layers = layers, c.n_heads = sh->heads;
    c.n_kv_heads = sh->kv, c.vocab_size = sh->vocab, c.seq_len = 2048, c.rope_theta = sh->theta;
    c.norm_eps = 1e-5, c.shared_classifier = 0;
    qsur_error err;
    if (qsur_llama_config_check(&c, argv[1], &err)) {
        fprintf(stderr, "make_checkpoint: %s\n", err.msg);
        return 1;
    }
    int nt_max = 9 * layers + 3, n = 0;
    qsur_st_desc *d = calloc((size_t)nt_max, sizeof *d);
    char (*names)[96] = calloc((size_t)nt_max, sizeof *names);
    gen g = {d, {{0}, 0, 0.0}, malloc((size_t)(sh->hidden > sh->dim ? sh->hidden : sh->dim) * sizeof(float))};
    if (!d || !names || !g.row) {
        fprintf(stderr, "make_checkpoint: out of memory\n");
        return 1;
    }
    qsur_rng_seed(&g.rng, seed);
    int64_t D = c.dim, H = c.hidden_dim, KV = c.kv_dim, V = c.vocab_size;
    char nm[96];
    n = add(d, names, n, "model.embed_tokens.weight", dt, V, D);
    for (int l = 0; l < layers; l++) {
#define T(suffix, r, cc) \
        snprintf(nm, sizeof nm, "model.layers.%d.%s", l, suffix); \
        n = add(d, names, n, nm, dt, r, cc);
        T("input_layernorm.weight", 0, D)
        T("self_attn.q_proj.weight", D, D)
        T("self_attn.k_proj.weight", KV, D)
        T("self_attn.v_proj.weight", KV, D)
        T("self_attn.o_proj.weight", D, D)
        T("post_attention_layernorm.weight", 0, D)
        T("mlp.gate_proj.weight", H, D)
        T("mlp.up_proj.weight", H, D)
        T("mlp.down_proj.weight", D, H)
#undef T
    }
    n = add(d, names, n, "model.norm.weight", dt, 0, D);
    n = add(d, names, n, "lm_head.weight", dt, V, D);
    int64_t bytes = 0;
    for (int i = 0; i < n; i++)
        bytes += qsur_st_desc_bytes(&d[i]);
    char cfg[4200];
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    int rc = qsur_hf_write_sharded(dir, d, n, shard, NULL, 0, gen_put, &g, NULL, &err);
    if (!rc)
        rc = qsur_llama_write_config(&c, cfg, qsur_dtype_name(dt), &err);
    if (rc) {
        fprintf(stderr, "make_checkpoint: %s\n", err.msg);
        return 1;
    }
    printf("%s: %s shape, %d layers, %s, %lld bytes of weights\n", dir, sh->name, layers,
           qsur_dtype_name(dt), (long long)bytes);
    free(d), free(names), free(g.row);
    return 0;
}
