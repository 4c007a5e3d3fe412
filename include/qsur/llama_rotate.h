/* QuaRot-style rotation of a whole Llama model (Ashkboos et al. 2024,
 * "QuaRot: Outlier-Free 4-Bit Inference in Rotated LLMs"), as separate
 * steps that each keep the float model's function exactly (up to rounding).
 * Row convention of the runtime: a linear computes y = x W^T, W out x in.
 *
 *  1. fuse_norms: rmsnorm(x, g) W^T = (x / rms(x)) (W diag(g))^T, so the gain g
 *     moves into the columns of every linear that reads the norm's output
 *     (attention_norm -> wq wk wv, ffn_norm -> w1 w3, norm -> the classifier,
 *     which is untied from the embedding first) and g becomes 1.
 *  2. rotate_residual(Q): with unit gains RMSNorm commutes with an orthogonal
 *     Q (||x Q|| = ||x||), so the residual stream can live in the basis x Q:
 *     E -> E Q (embeddings), W -> W Q for every reader (wq wk wv w1 w3 and the
 *     classifier), W -> Q^T W for every writer (wo, w2), whose outputs are added
 *     to the residual: (a W^T) Q = a (Q^T W)^T.
 *  3. rotate_w2(H): online x -> x H on the SwiGLU product entering w2 (hook
 *     w2_in) and w2 -> w2 H, so (x H)(w2 H)^T = x w2^T.
 *  4. rotate_heads(H): per value head v_g -> v_g H (H: head_size x head_size),
 *     fused: the kv-head rows of wv -> H^T wv_g; the attention output of every
 *     query head is P v_g, so it is rotated too, and wo -> wo (I ⊗ H).
 *     No online operation is needed.
 *  5. rotate_qk(H): online q -> q H, k -> k H after RoPE (hook qk): q.k is
 *     unchanged, the K cache holds rotated keys (for KV quantization).
 * Steps 2-5 need step 1's unit gains only for step 2 (checked). Every step drops
 * the fake-quantized copies (wq) of the linears it changes: quantize again. */
#ifndef QSUR_LLAMA_ROTATE_H
#define QSUR_LLAMA_ROTATE_H

#include "qsur/error.h"
#include "qsur/hadamard.h"
#include "qsur/llama.h"
#include "qsur/llama_edit.h"

/* An online Hadamard for a forward hook. The hook has no error channel: a
 * failed scratch allocation inside qsur_hadamard_plan_apply leaves the rows
 * unrotated and increments `failures`, which callers check after a run. */
typedef struct qsur_llama_online_hadamard {
    qsur_hadamard_plan *plan; /* owned */
    int failures;
} qsur_llama_online_hadamard;

/* Randomized Hadamard plan of size n (QuaRot) wrapped for a hook. */
int qsur_llama_online_hadamard_new(qsur_llama_online_hadamard **out, int64_t n, uint64_t seed,
                                   qsur_error *err);
void qsur_llama_online_hadamard_free(qsur_llama_online_hadamard *h);
/* The hook function: rows <- rows R (ctx is a qsur_llama_online_hadamard). */
void qsur_llama_online_hadamard_apply(void *ctx, float *rows, int64_t nrows, int64_t n);

/* The steps below edit linear by linear (one in float at a time) and tick e
 * once per block; e (qsur/llama_edit.h, may be NULL) journals every change,
 * so that a step that fails or is interrupted part-way can be undone. */
int qsur_llama_fuse_norms(qsur_llama *m, qsur_llama_edit *e, qsur_error *err);
/* Q: a plan of size dim. Fails when a gain is not exactly 1 (fuse first). */
int qsur_llama_rotate_residual(qsur_llama *m, const qsur_hadamard_plan *Q, qsur_llama_edit *e,
                               qsur_error *err);
/* h: size hidden_dim; must outlive the model's use of the hook. Fails when
 * the w2_in hook is already set. */
int qsur_llama_rotate_w2(qsur_llama *m, qsur_llama_online_hadamard *h, qsur_llama_edit *e,
                         qsur_error *err);
/* H: a plan of size head_size. */
int qsur_llama_rotate_heads(qsur_llama *m, const qsur_hadamard_plan *H, qsur_llama_edit *e,
                            qsur_error *err);
/* h: size head_size; sets the qk hook (fails when already set). */
int qsur_llama_rotate_qk(qsur_llama *m, qsur_llama_online_hadamard *h, qsur_error *err);

#endif
