/* What the gpu tests (tests/gpu_*.c) share: the skip when no GPU is usable
 * and the random-weight real-shape model (static inline: a test may use
 * only some). */
#ifndef QSUR_TESTS_GPU_COMMON_H
#define QSUR_TESTS_GPU_COMMON_H

#include <math.h>
#include <stdio.h>
#include "check.h"
#include "qsur/backend.h"
#include "qsur/llama.h"

/* 1 (after printing why) when no GPU is usable: main returns 77, which
 * ctest reports as skipped; else prints the GPU and returns 0. */
static inline int gpu_skip(void)
{
    qsur_gpu_info info;
    qsur_gpu_probe(&info);
    if (info.count == 0) {
        printf("skipped: no GPU (%s)\n", info.why);
        return 1;
    }
    printf("GPU: %s, %.1f GiB\n", info.name, info.mem_gib);
    return 0;
}

/* ||a - b|| / ||b|| over n values. */
static inline double rel_l2(const float *a, const float *b, int64_t n)
{
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        e += d * d;
        s += (double)b[i] * b[i];
    }
    return s > 0 ? sqrt(e / s) : sqrt(e);
}

static inline void gpu_fill(float *x, size_t n, double a)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)((2.0 * check_uniform() - 1.0) * a);
}

/* Llama-2-7B shapes (dim 4096, hidden 11008, 32 heads, vocab 32000), 2 layers,
 * random float weights (uniform in +-1/sqrt(cols), embeddings +-1, unit norms;
 * check_seed(3)), positions up to seq_len. NULL after a failed CHECK. */
static inline qsur_llama *gpu_real_shape(int seq_len)
{
    qsur_error err;
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 4096, c.hidden_dim = 11008, c.n_layers = 2, c.n_heads = 32, c.n_kv_heads = 32;
    c.vocab_size = 32000, c.seq_len = seq_len, c.shared_classifier = 0;
    qsur_llama *m = NULL;
    CHECK_OK(qsur_llama_config_check(&c, "real shape", &err), err);
    CHECK_OK(qsur_llama_new(&m, &c, &err), err);
    if (!m)
        return NULL;
    check_seed(3);
    gpu_fill(m->tok_embeddings, (size_t)c.vocab_size * c.dim, 1.0);
    gpu_fill(m->output.w, (size_t)c.vocab_size * c.dim, 1.0 / sqrt(c.dim));
    for (int i = 0; i < c.dim; i++)
        m->norm[i] = 1.0f;
    for (int l = 0; l < c.n_layers; l++) {
        qsur_llama_layer *L = &m->layers[l];
        for (int i = 0; i < c.dim; i++)
            L->attention_norm[i] = L->ffn_norm[i] = 1.0f;
        qsur_llama_linear *lin[7] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w1, &L->w2, &L->w3};
        for (int k = 0; k < 7; k++)
            gpu_fill(lin[k]->w, (size_t)(lin[k]->rows * lin[k]->cols), 1.0 / sqrt((double)lin[k]->cols));
    }
    return m;
}

#endif
