/* Training forward pass (saving activations) and reverse-mode gradients of the
 * Llama runtime, for methods that learn something through the model (OSTQuant).
 *
 * The training forward computes exactly what qsur_llama_forward computes for a
 * fresh batch (pos = 0): same hooks (activation and KV fake quantization,
 * online qk / wo_in / w2_in transforms), same weights (wq when set, else w),
 * the same public blocks (qsur_llama_rmsnorm, _rope, _swiglu) and
 * qsur_fake_quant. It differs in keeping every intermediate on a tape and in
 * doing attention over whole sequences (one T x T score matrix per head).
 *
 * The backward pass takes dL/dlogits and returns dL/d(every tensor the forward
 * read): embeddings, norm gains, and each linear's USED weight (the fake-
 * quantized copy when one is set: apply qsur_fake_quant_backward to reach the
 * float weight). Fake quantizers use the straight-through estimator of
 * qsur/quant_ste.h. Online transforms are linear maps x -> x R; the backward
 * needs their transposes (x -> x R^T), given in qsur_llama_online_t. */
#ifndef QSUR_LLAMA_TRAIN_H
#define QSUR_LLAMA_TRAIN_H

#include "qsur/llama.h"

/* Transposes of the model's online hooks (required for each hook that is set). */
typedef struct {
    qsur_llama_online qk, wo_in, w2_in;
} qsur_llama_online_t;

/* Where a pass gets each per-layer linear's weights and leaves its gradient,
 * for models whose linears exist one at a time (OSTQuant's fused model: made
 * from the base weights and the transforms when a pass reaches them, so no
 * fused copy of the whole model is held). With a source on the tape, the
 * training forward asks linear(l, i) (i: 0..6 = wq wk wv wo w1 w2 w3) right
 * before that product and the backward asks again (the weights are remade,
 * not kept); the backward puts dL/dW of the weights linear() gave (the
 * quantized copy wq when set, else w) into dw (zeroed first) and hands it to
 * grad() instead of adding it to the gradients' layers, whose d_w* may then be
 * NULL (the norm gains still come from m and their gradients go to g). */
typedef struct {
    int (*linear)(void *ctx, int l, int i, const qsur_llama_linear **w, qsur_error *err);
    int (*grad)(void *ctx, int l, int i, const qsur_llama_linear *w, float *dw, qsur_error *err);
    float *dw;            /* scratch of the largest linear's rows x cols floats */
    void *ctx;
} qsur_llama_source;

/* Saved activations of B sequences of T tokens (all row-major, N = B*T rows;
 * per-layer arrays are [n_layers][...]). */
typedef struct {
    int B, T, n_layers;
    int64_t N;
    int dim, hidden_dim, kv_dim, n_heads, n_kv_heads, head_size, vocab_size;
    int *tokens;              /* [N] */
    float *x_in;              /* [L][N][dim]   residual entering the layer */
    float *xn1, *xq1;         /* [L][N][dim]   attention-norm output, its act-quantized form */
    float *q;                 /* [L][N][dim]   after RoPE and the qk hook */
    float *k, *kq;            /* [L][N][kv]    after RoPE + qk hook; KV-quantized */
    float *v, *vq;            /* [L][N][kv] */
    float *p;                 /* [L][B][H][T][T] attention probabilities (0 above the diagonal) */
    float *a, *aq;            /* [L][N][dim]   attention output after wo_in hook; act-quantized */
    float *x_mid;             /* [L][N][dim]   residual after attention */
    float *xn2, *xq2;         /* [L][N][dim] */
    float *h1, *h3;           /* [L][N][hidden] w1, w3 outputs */
    float *g, *gq;            /* [L][N][hidden] SwiGLU after the w2_in hook; act-quantized */
    float *x_final, *xnf;     /* [N][dim]      before / after the final norm */
    float *logits;            /* [N][vocab] */
    float *rope_cos, *rope_sin, *rope_nsin; /* [T][hs/2]; nsin = -sin for the backward */
    float *s1, *s2, *s3, *s4; /* scratch: [N][max(dim, hidden)] each, plus [T][T] */
    float *sp;
    float *wbuf;              /* weights of a linear not held as floats (bf16, packed
                                 codes), converted for one product; NULL until needed */
    int64_t wbuf_floats;
    const qsur_llama_source *src; /* NULL: the linears of the model passed in */
} qsur_llama_tape;

int qsur_llama_tape_new(qsur_llama_tape **out, const qsur_llama *m, int B, int T,
                        qsur_error *err);
void qsur_llama_tape_free(qsur_llama_tape *t);

/* Gradients, shaped like the model (owned arrays, zeroed by _zero). */
typedef struct {
    float *d_wq, *d_wk, *d_wv, *d_wo, *d_w1, *d_w2, *d_w3;
    float *d_attention_norm, *d_ffn_norm;
} qsur_llama_layer_grads;

typedef struct {
    int n_layers;
    float *d_tok_embeddings;  /* [vocab][dim] (gathered rows only) */
    float *d_norm;            /* [dim] */
    float *d_output;          /* [vocab][dim]: the classifier as a separate tensor even
                                 when tied (add it to d_tok_embeddings yourself) */
    qsur_llama_layer_grads *layers;
} qsur_llama_grads;

int qsur_llama_grads_new(qsur_llama_grads **out, const qsur_llama *m, qsur_error *err);
/* Only the norm gains' gradients per layer (for a pass with a source). */
int qsur_llama_grads_new_norms(qsur_llama_grads **out, const qsur_llama *m, qsur_error *err);
void qsur_llama_grads_zero(qsur_llama_grads *g, const qsur_llama *m);
void qsur_llama_grads_free(qsur_llama_grads *g);

/* Runs B sequences of T tokens from position 0 (T <= the tape's), keeping the
 * activations; logits land in t->logits. */
int qsur_llama_train_forward(const qsur_llama *m, qsur_llama_tape *t, const int *tokens,
                             int B, int T, qsur_error *err);

/* The same from a given residual x0 ([B*T][dim]) instead of the embeddings:
 * every block of m (a view of some blocks of a model, qsur/llama_calib.h's
 * way), no final norm and no classifier; t->x_final receives the residual
 * after the last block. Block-wise methods keep the stream between calls. */
int qsur_llama_train_blocks(const qsur_llama *m, qsur_llama_tape *t, const float *x0, int B, int T,
                            qsur_error *err);

/* The float32 weights a training pass multiplies for l (packed codes
 * decoded, else wq, else the weights): in place when l holds them as floats,
 * else converted into t->wbuf (valid until the next call; the tape must
 * have been run on a model with l, which sizes wbuf). */
const float *qsur_llama_tape_weights(const qsur_llama_tape *t, const qsur_llama_linear *l);

/* Accumulates (+=) into g the gradients of L given dlogits = dL/dlogits
 * ([B*T][vocab], as in the last train_forward). ot: transposes of the set online
 * hooks (may be NULL when none is set). */
int qsur_llama_backward(const qsur_llama *m, const qsur_llama_tape *t, const float *dlogits,
                        const qsur_llama_online_t *ot, qsur_llama_grads *g, qsur_error *err);

/* Accumulates (+=) into g the gradients of layers last..first (descending) of a
 * loss on the residual stream after layer `last`, given dh = dL/d(that residual)
 * ([B*T][dim]; in the tape it is x_in of layer last+1, or x_final). Layers
 * outside the range, the embeddings and the classifier get nothing. Used by
 * block-wise methods (CQE+ cross-layer learning). */
int qsur_llama_backward_hidden(const qsur_llama *m, const qsur_llama_tape *t, int first, int last,
                               const float *dh, const qsur_llama_online_t *ot, qsur_llama_grads *g,
                               qsur_error *err);

/* The backward of one RMSNorm, exposed for tests: y = x r g with
 * r = 1/sqrt(mean(x^2) + eps). dx = r (g dy) - x r^3/n sum_j x_j g_j dy_j;
 * dg += sum over rows dy x r. dx may not alias dy. */
void qsur_llama_rmsnorm_backward(const float *x, const float *g, const float *dy, int64_t rows,
                                 int64_t n, double eps, float *dx, float *dg);
/* SwiGLU backward: out = silu(a) u -> da = dout u silu'(a), du = dout silu(a). */
void qsur_llama_swiglu_backward(const float *a, const float *u, const float *dout, int64_t n,
                                float *da, float *du);
/* Causal softmax attention of one head over one sequence, forward and backward:
 * P = causal_softmax(scale Q K^T) (T x T, rows of Q: ldq apart), O = P V.
 * Backward: dS = P (dP - rowsum(dP P)), dQ = scale dS K, dK += scale dS^T Q,
 * dV += P^T dO. Exposed for tests. */
void qsur_llama_attention_head(const float *q, int ldq, const float *k, const float *v, int ldkv,
                               int T, int hs, float *p, float *o, int ldo);
void qsur_llama_attention_head_backward(const float *q, int ldq, const float *k, const float *v,
                                        int ldkv, int T, int hs, const float *p, const float *dout,
                                        int ldo, float *dq, float *dk, float *dv, float *scratch);

#endif
