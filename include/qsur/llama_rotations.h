/* Online Hadamard rotations a rotated model needs at run time (QuaRot /
 * OSTQuant layout): before w2 (rows of hidden_dim) and, for KV-cache
 * quantization, on q and k after RoPE (rows of head_size). The plans live in
 * this object, which must outlive every model whose hooks point at it. */
#ifndef QSUR_LLAMA_ROTATIONS_H
#define QSUR_LLAMA_ROTATIONS_H

#include "qsur/hadamard.h"
#include "qsur/llama_train.h"

typedef struct qsur_llama_rotations {
    qsur_hadamard_plan *w2;   /* hidden_dim, or NULL */
    qsur_hadamard_plan *qk;   /* head_size, or NULL */
} qsur_llama_rotations;

/* Plans for the hooks asked for (deterministic Hadamard, `seed` for a random
 * fallback block, e.g. hidden 172 = 4 x 43). */
int qsur_llama_rotations_new(qsur_llama_rotations **out, const qsur_llama_config *c, int w2,
                             int qk, uint64_t seed, qsur_error *err);
void qsur_llama_rotations_free(qsur_llama_rotations *r);
/* Points m->hooks.w2_in / .qk at the plans (the weights must already hold the
 * inverse: W2 <- W2 H). */
void qsur_llama_rotations_attach(const qsur_llama_rotations *r, qsur_llama *m);
/* The transposes, for qsur_llama_backward. */
qsur_llama_online_t qsur_llama_rotations_transpose(const qsur_llama_rotations *r);
/* "w2_in: hadamard 4 (walsh) x random-orthogonal 43 (seed 7); qk: hadamard 8 (walsh)". */
void qsur_llama_rotations_describe(const qsur_llama_rotations *r, char *buf, int n);

#endif
