/* Private to the CUDA backend: the resident model (gpu_model.c) as the
 * whole-model passes (gpu_calib.c) see it. */
#ifndef QSUR_CUDA_GPU_MODEL_H
#define QSUR_CUDA_GPU_MODEL_H

#include "gpu_gptq.h"
#include "gpu_util.h"
#include "kernels.h"
#include "qsur/backend.h"

#define ATT_CHUNK 512

typedef struct {
    void *wqkv, *wo, *w13, *w2; /* ct */
    float *attention_norm, *ffn_norm;
} gpu_layer;

/* An online transform as a dense n x n fp32 matrix (NULL: none). */
typedef struct {
    float *R;
    int n;
} gpu_online;

struct qsur_gpu_model {
    qsur_gpu_ctx ctx;
    qsur_llama_config cfg;
    int bf16;
    size_t esz; /* bytes of one ct element */
    gpu_layer *layers;
    float *tok_embeddings, *norm;
    void *output; /* ct [vocab][dim] */
    qsur_cu_quant act, kv;
    gpu_online qk, wo_in, w2_in;
    int max_batch, max_seq;
    int att_chunk; /* query rows per attention chunk, <= ATT_CHUNK (the buffers' size) */
    /* run buffers */
    float *x, *xn, *qkv, *q, *k, *v, *att, *gu, *h, *tmp, *logits, *rope_cos, *rope_sin;
    void *in_ct, *q_ct, *k_ct, *v_ct, *probs;
    float *scores;
    int *tok;
    double *nll;
    double bytes;
    /* calibration capture: X^T X of capture point cap_point (QSUR_CAP_*, -1
     * none) accumulated into cap_H through the double scratch cap_Xd */
    int cap_point, cap_first;
    double *cap_H, *cap_Xd;
    /* activation capture into host tensors (qsur_gpu_forward_sink): the rows
     * of every point the sink keeps go through sink_host; cur_layer is the
     * layer being run */
    struct qsur_llama_capture_sink *sink;
    float *sink_host;
    int cur_layer;
};

/* One layer of the forward pass on g->x (B x T rows from position 0), with
 * the capture above. */
int qsur_gpu_layer_forward(qsur_gpu_model *g, int l, int B, int T, qsur_error *err);


#endif
