/* Private to the CUDA backend: the training buffers of gpu_train.c as the
 * OSTQuant transform side (gpu_ostq.c) sees them: it fuses the parameters
 * into the weights here and reads the weights' gradients from here. */
#ifndef QSUR_CUDA_GPU_TRAIN_H
#define QSUR_CUDA_GPU_TRAIN_H

#include "gpu_util.h"
#include "kernels.h"
#include "qsur/backend.h"

typedef struct {
    float *wqkv, *wo, *w13, *w2, *attention_norm, *ffn_norm;
    float *dwqkv, *dwo, *dw13, *dw2, *dattention_norm, *dffn_norm;
    /* the tape, as qsur_llama_tape's fields of this layer; gu = w1 | w3 outputs */
    float *x_in, *xn1, *xq1, *q, *k, *kq, *v, *vq, *P, *a, *aq, *x_mid, *xn2, *xq2, *gu, *g, *gq;
} train_layer;

struct qsur_gpu_train {
    qsur_gpu_ctx ctx;
    qsur_llama_config cfg;
    int B, T;
    int64_t N;
    train_layer *L;
    float *emb, *norm, *out, *demb, *dnorm, *dout;
    float *x_final, *xnf, *logits, *dlogits;
    float *zfp;     /* [N][V] the teacher's logits for the device loss (allocated on first use) */
    double *klrow;  /* [N] per-token KL-Top */
    float *qk, *wo_in, *w2_in; /* online transforms (NULL: none) */
    qsur_cu_quant act, act_wo, kv;
    int act_sc, act_wo_sc, kv_sc; /* ste_const of each */
    float *rope_cos, *rope_sin, *ones;
    int *tok;
    /* scratch */
    float *x, *qkv, *s1, *s2, *dgu, *dq, *dk, *dv, *dP, *dgrow, *tmp;
    double bytes;
    /* every device allocation, freed together */
    void **allocs;
    int nallocs, capallocs;
};

/* The hooks' quantizers and online transforms (dense, built on the host:
 * seconds for a hidden-size w2 plan, so once per run) onto the device. */
int qsur_gpu_train_hooks(qsur_gpu_train *t, const qsur_llama_hooks *hk, qsur_error *err);

#endif
