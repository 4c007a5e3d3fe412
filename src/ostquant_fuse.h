/* OSTQuant's fusion and its chain rule one linear at a time (ostquant_fuse.c),
 * private to the OSTQuant files: the training step (ostquant_step.c) makes
 * each fused linear when a pass reaches it, from the base model's weights read
 * through the store, so no whole fused or folded copy of the model exists. */
#ifndef QSUR_OSTQUANT_FUSE_H
#define QSUR_OSTQUANT_FUSE_H

#include "qsur/ostquant.h"

/* Offsets of the log-scale groups inside o->ls (layout: qsur/ostquant.h). */
static inline int64_t qsur_ostq_ls_attn(const qsur_ostquant *o, int l) { return (int64_t)l * o->cfg.dim; }
static inline int64_t qsur_ostq_ls_ov(const qsur_ostquant *o, int l)
{
    return (int64_t)o->cfg.n_layers * o->cfg.dim + (int64_t)l * o->cfg.kv_dim;
}
static inline int64_t qsur_ostq_ls_ffn(const qsur_ostquant *o, int l)
{
    return (int64_t)o->cfg.n_layers * (o->cfg.dim + o->cfg.kv_dim) + (int64_t)l * o->cfg.dim;
}
static inline int64_t qsur_ostq_ls_ud(const qsur_ostquant *o, int l)
{
    return (int64_t)o->cfg.n_layers * (2 * o->cfg.dim + o->cfg.kv_dim) + (int64_t)l * o->cfg.hidden_dim;
}
/* [L][kv_dim / 2] after ud, present only with learn_qk: one scale per RoPE
 * pair of k (and of q, divided), so q.k is unchanged through RoPE;
 * [L][kv_dim] with code_smooth (one per row). */
static inline int64_t qsur_ostq_ls_qk(const qsur_ostquant *o, int l)
{
    return (int64_t)o->cfg.n_layers * (2 * o->cfg.dim + o->cfg.kv_dim + o->cfg.hidden_dim) +
           (int64_t)l * (o->opts.code_smooth ? o->cfg.kv_dim : o->cfg.kv_dim / 2);
}
static inline int64_t qsur_ostq_r_ov_size(const qsur_ostquant *o)
{
    return (int64_t)o->cfg.n_layers * o->cfg.n_kv_heads * o->cfg.head_size * o->cfg.head_size;
}

/* The per-layer linears in qsur_llama_linear_at order inside a block. */
enum { QSUR_OSTQ_WQ, QSUR_OSTQ_WK, QSUR_OSTQ_WV, QSUR_OSTQ_WO, QSUR_OSTQ_W1, QSUR_OSTQ_W2, QSUR_OSTQ_W3 };

/* Float copies of the parameters and the scratch of fusion and chain rule:
 * tmp, tmp2 hold one linear of the widest shape, vbuf vrows rows of the
 * vocabulary (embeddings or classifier, in slices of at most 64 MiB). */
typedef struct {
    float *R, *Rov, *s;   /* R_res, every R_ov, e^ls */
    float *tmp, *tmp2;
    float *dRov;          /* head_size^2 */
    float *vbuf;
    int64_t vrows;
    int train;            /* 1: fuse the training-time function (opts.sov_train's wo);
                             0 (qsur_ostq_scratch_new): the deployed, exact one */
} qsur_ostq_scratch;

/* 0, or -1 when out of memory (f is then still freeable). */
int qsur_ostq_scratch_new(const qsur_ostquant *o, qsur_ostq_scratch *f);
void qsur_ostq_scratch_free(qsur_ostq_scratch *f);
/* R, Rov, s again from o's current parameters. */
void qsur_ostq_scratch_params(const qsur_ostquant *o, qsur_ostq_scratch *f);
/* Floats of the largest per-layer linear. */
int64_t qsur_ostq_linear_floats(const qsur_ostquant *o);
/* Rows and columns of linear i. */
void qsur_ostq_linear_shape(const qsur_ostquant *o, int i, int64_t *rows, int64_t *cols);

/* Linear i of block l of the base model (read through the store), its
 * RMSNorm gain folded in for the input sides (W diag(g)): rows x cols. */
void qsur_ostq_folded(const qsur_ostquant *o, int l, int i, float *dst);
/* Rows r0..r1-1 of the folded embeddings (which 0: E) or classifier (1: C diag(g_final)). */
void qsur_ostq_folded_vocab(const qsur_ostquant *o, int which, int64_t r0, int64_t r1, float *dst);
/* W = the fused linear i of block l from its folded weights A (uses f->tmp). */
void qsur_ostq_fuse_linear(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, int i, const float *A,
                           float *W);
/* The fused RMSNorm gains of block l (1 / S_attn, 1 / S_ffn). */
void qsur_ostq_fuse_norms(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, float *attn, float *ffn);
/* dst = rows r0..r1-1 (at most f->vrows) of the fused embeddings or classifier: F R. */
void qsur_ostq_fuse_vocab(const qsur_ostquant *o, const qsur_ostq_scratch *f, int which, int64_t r0, int64_t r1,
                          float *dst);

/* Chain rule of fused linear i of block l: A its folded weights, W the fused
 * ones, dW = dL/dW (overwritten). Adds to dR (float, dim^2), d_r_ov and d_ls
 * (Euclidean; log-space for scales). Uses f->tmp, tmp2, dRov. */
int qsur_ostq_chain_linear(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, int i, const float *A,
                           const float *W, float *dW, float *dR, double *d_r_ov, double *d_ls, qsur_error *err);
/* The fused norm gains' part (gains 1/s = e^-ls): d_ls -= dgain * gain. */
void qsur_ostq_chain_norms(const qsur_ostquant *o, int l, const float *attn, const float *ffn, const float *d_attn,
                           const float *d_ffn, double *d_ls);
/* F' = F R for n rows F (folded embedding or classifier rows): dR += F^T dF'. */
void qsur_ostq_chain_rows(const qsur_ostquant *o, const float *F, const float *dF, int64_t n, float *dR);

/* m's hooks: o's activation, wo-input and KV quantizers and the online
 * rotations r (attached: r must outlive m's use of them). */
void qsur_ostq_set_hooks(const qsur_ostquant *o, qsur_llama *m, const qsur_llama_rotations *r);

/* ---- the fused model one linear at a time (ostquant_step.c) ---------------- */

/* What one batch part needs to run forward and backward over the fused model
 * of o's current parameters without holding it: fm is a skeleton of the fused
 * model (config, hooks, fused norm gains; no weights), each linear is folded,
 * fused (and fake-quantized when weights train quantized) into A, W, Wq when
 * a pass reaches it, and the backward's chain rule adds each linear's part to
 * dR, d_r_ov, d_ls right away. The vocabulary (embedding rows of the batch,
 * the classifier in slices of f.vrows rows) goes the same way. */
typedef struct {
    const qsur_ostquant *o;
    const qsur_llama *fm;
    qsur_ostq_scratch f;
    float *A, *W, *Wq;         /* one linear: folded, fused, quantized (Wq is f.tmp2) */
    qsur_llama_linear lin;     /* the linear a pass gets: w = W (wq = Wq) */
    int wquant;
    qsur_quant_spec ws;        /* the training-time weight quantizer (qsur_ostq_fused_new) */
    float *cbuf, *dcbuf;       /* f.vrows x dim: fused classifier rows, their gradient */
    float *xe, *x0, *dh;       /* N x dim: folded embedding rows, fused ones, dL/d(final residual) */
    float *dR;                 /* dim^2, float like the whole-model chain rule */
    double *d_r_ov, *d_ls;
    qsur_llama_grads *gn;      /* norm gains' gradients */
    qsur_llama_source src;
} qsur_ostq_fused;

/* The weight quantizer of the training passes and its STE: o->wspec, or with
 * opts.wquant_code the OSTQuant code's training-time quantizer (the same with
 * clip search by squared error on detached values: the scale a constant in
 * the STE). */
qsur_quant_spec qsur_ostq_train_wspec(const qsur_ostquant *o);
/* For batches of N tokens; wquant: weights fake-quantized with
 * qsur_ostq_train_wspec(o). */
int qsur_ostq_fused_new(qsur_ostq_fused *z, const qsur_ostquant *o, const qsur_llama *fm, int64_t N, int wquant,
                        qsur_error *err);
void qsur_ostq_fused_free(qsur_ostq_fused *z);
/* The training forward of B x T tokens over the fused model of the
 * parameters last given to qsur_ostq_scratch_params(o, &z->f); logits in
 * t->logits (t: a tape of fm, t->src is set to z's source). */
int qsur_ostq_forward(qsur_ostq_fused *z, qsur_llama_tape *t, const int *tok, int B, int T, qsur_error *err);
/* Its backward from dz = dL/dlogits: dR, d_r_ov, d_ls = the parameters'
 * gradients of this batch (overwritten). ot: the online hooks' transposes. */
int qsur_ostq_backward(qsur_ostq_fused *z, qsur_llama_tape *t, const float *dz, const qsur_llama_online_t *ot,
                       qsur_error *err);

#endif
