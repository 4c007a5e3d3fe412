/* Private to the CUDA backend: OSTQuant's transform side on the GPU as its
 * two files share it: the device state (gpu_ostq.c: setup, parameters,
 * fusion; gpu_ostq_chain.c: the STE and the chain rule), the layouts of the
 * per-layer vectors and sums, the row-major GEMM helpers. */
#ifndef QSUR_CUDA_GPU_OSTQ_H
#define QSUR_CUDA_GPU_OSTQ_H

#include "../../ostquant_fuse.h"
#include "gpu_train.h"

/* Per-layer vectors (floats) uploaded each step, at these offsets of a
 * layer's block of vl floats: sa, sf, wq row factors (1 / s_qk), wk row
 * factors (s_qk), 1 / s_ov per wv row, s_ov per wo column, su, 1 / su, the
 * fused norm gains 1 / sa and 1 / sf. */
enum { V_SA, V_SF, V_QROW, V_KROW, V_OVINV, V_SOCOL, V_SU, V_SUINV, V_NA, V_NF, V_COUNT };
/* Per-layer sums (doubles): qkv columns, w1|w3 columns, wq rows, wk rows,
 * wv rows, wo columns, w3 rows, w2 columns. */
enum { D_QKVC, D_W13C, D_WQR, D_WKR, D_WVR, D_WOC, D_W3R, D_W2C, D_COUNT };

typedef struct {
    float *qkv, *o, *w13, *w2;
} base_layer;

struct qsur_gpu_ostq {
    qsur_gpu_train *t; /* borrowed: its weights are written, its gradients read */
    qsur_llama_config cfg;
    int group, sov_code, code_smooth, learn_qk, ud;
    int wquant, w_ste_const;
    qsur_cu_quant wq;
    base_layer *A;
    float *E, *C;          /* folded embeddings, classifier C diag(g_final) */
    float *H;              /* dense w2 Hadamard (hidden^2) or NULL */
    int H_own;
    float *R, *Rov, *vec;  /* parameters this step */
    float *S1, *S2, *S3;
    float *dR, *dRov;
    double *dots;
    int64_t voff[V_COUNT], vl, doff[D_COUNT], dl;
    /* host copies */
    float *hR, *hRov, *hvec, *hdn;
    double *hdots;
    double bytes;
};


/* Row-major C (M x N, ldc) = op(A) op(B) + beta C, op(A) M x K. */
static inline int mm(qsur_gpu_ostq *g, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc, qsur_error *err)
{
    return qsur_gpu_gemm(&g->t->ctx, 0, tb, ta, (int)N, (int)M, (int)K, 1.0f, B, (int)ldb, A, (int)lda, beta, C,
                         0, (int)ldc, err);
}

/* The same for `batch` problems at element strides sA, sB, sC. */
static inline int mmb(qsur_gpu_ostq *g, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
               long long sA, const float *B, int64_t ldb, long long sB, float beta, float *C, int64_t ldc,
               long long sC, int batch, qsur_error *err)
{
    return qsur_gpu_gemm_batched(&g->t->ctx, 0, tb, ta, (int)N, (int)M, (int)K, 1.0f, B, (int)ldb, sB, A,
                                 (int)lda, sA, beta, C, 0, (int)ldc, sC, batch, err);
}

static inline cudaStream_t st_of(const qsur_gpu_ostq *g)
{
    return g->t->ctx.stream;
}

static inline float *vec_at(const qsur_gpu_ostq *g, int l, int which)
{
    return g->vec + (int64_t)l * g->vl + g->voff[which];
}

static inline double *dots_at(const qsur_gpu_ostq *g, int l, int which)
{
    return g->dots + (int64_t)l * g->dl + g->doff[which];
}

static inline const float *rov_at(const qsur_gpu_ostq *g, int l)
{
    return g->Rov + (int64_t)l * g->cfg.n_kv_heads * g->cfg.head_size * g->cfg.head_size;
}

static inline float *drov_at(const qsur_gpu_ostq *g, int l)
{
    return g->dRov + (int64_t)l * g->cfg.n_kv_heads * g->cfg.head_size * g->cfg.head_size;
}


/* The S_qk index of kv row kr (qsur_ostq_fuse's qk_index). */
static inline int64_t qk_index(const qsur_gpu_ostq *g, int64_t kr)
{
    return g->code_smooth ? kr : kr / 2;
}

/* dst[rows][d] = (A R) diag(col), then rows times row (NULL: 1). */
int gpu_ostq_fuse_input(qsur_gpu_ostq *g, const float *A, int64_t rows, const float *row, const float *col,
                        float *dst, qsur_error *err);
/* dst = the fused float weights of linear i (QSUR_OSTQ_*) of layer l (S1, S2 as scratch). */
int gpu_ostq_fuse_linear(qsur_gpu_ostq *g, int l, int i, float *dst, qsur_error *err);
/* Where linear i of layer l lives in the training buffers (weights, or their
 * gradients with grad), and its shape. */
float *gpu_ostq_train_slot(const qsur_gpu_ostq *g, int l, int i, int grad, int64_t *rows, int64_t *cols);

#endif
