/* OSTQuant's transform side on the GPU (qsur_gpu_ostq_*, qsur/backend.h):
 * the base model's folded weights stay on the device for the whole run; each
 * step the current R_res, R_ov and scales are fused into the training
 * buffers' weights (cuBLAS fp32 GEMMs, no TF32, and small kernels), RTN'd in
 * place when the weights train quantized, and after the backward the weights'
 * STE and the chain rule to dR_res, dR_ov and the log-scales' gradients run
 * here too. Only the parameters (n x n and vectors) and their gradients cross
 * PCIe. The math is src/ostquant_fuse.c's (qsur_ostq_fuse_linear,
 * qsur_ostq_chain_linear), linear by linear; the scales' gradients are
 * collected as per-row and per-column sums of dW * W in double and mapped to
 * the log-scale layout on the host.
 *
 * Row-major throughout: mm() turns a row-major product into cuBLAS's
 * column-major one (C^T = B^T A^T). Three scratch buffers of the largest
 * linear: fusion temporaries in S1, S2; in the chain rule the fused float
 * weight (when the weights train quantized) in S3. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>
#include "../../ostquant_fuse.h"
#include "gpu_train.h"
#include "ostq_kernels.h"
#include "train_kernels.h"

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

static int galloc(qsur_gpu_ostq *g, void **p, size_t bytes, qsur_error *err)
{
    int rc = qsur_gpu_malloc(p, bytes, "ostquant transforms", err);
    if (!rc)
        g->bytes += (double)bytes;
    return rc;
}

/* Row-major C (M x N, ldc) = op(A) op(B) + beta C, op(A) M x K. */
static int mm(qsur_gpu_ostq *g, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc, qsur_error *err)
{
    return qsur_gpu_gemm(&g->t->ctx, 0, tb, ta, (int)N, (int)M, (int)K, 1.0f, B, (int)ldb, A, (int)lda, beta, C,
                         0, (int)ldc, err);
}

/* The same for `batch` problems at element strides sA, sB, sC. */
static int mmb(qsur_gpu_ostq *g, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
               long long sA, const float *B, int64_t ldb, long long sB, float beta, float *C, int64_t ldc,
               long long sC, int batch, qsur_error *err)
{
    return qsur_gpu_gemm_batched(&g->t->ctx, 0, tb, ta, (int)N, (int)M, (int)K, 1.0f, B, (int)ldb, sB, A,
                                 (int)lda, sA, beta, C, 0, (int)ldc, sC, batch, err);
}

static cudaStream_t st_of(const qsur_gpu_ostq *g)
{
    return g->t->ctx.stream;
}

static float *vec_at(const qsur_gpu_ostq *g, int l, int which)
{
    return g->vec + (int64_t)l * g->vl + g->voff[which];
}

static double *dots_at(const qsur_gpu_ostq *g, int l, int which)
{
    return g->dots + (int64_t)l * g->dl + g->doff[which];
}

static const float *rov_at(const qsur_gpu_ostq *g, int l)
{
    return g->Rov + (int64_t)l * g->cfg.n_kv_heads * g->cfg.head_size * g->cfg.head_size;
}

static float *drov_at(const qsur_gpu_ostq *g, int l)
{
    return g->dRov + (int64_t)l * g->cfg.n_kv_heads * g->cfg.head_size * g->cfg.head_size;
}

/* ---- setup ------------------------------------------------------------------ */

static void layouts(qsur_gpu_ostq *g)
{
    int64_t d = g->cfg.dim, kv = g->cfg.kv_dim, h = g->cfg.hidden_dim;
    int64_t vn[V_COUNT] = {d, d, d, kv, kv, d, h, h, d, d}, dn[D_COUNT] = {d, d, d, kv, kv, d, h, h};
    g->vl = g->dl = 0;
    for (int i = 0; i < V_COUNT; i++)
        g->voff[i] = g->vl, g->vl += vn[i];
    for (int i = 0; i < D_COUNT; i++)
        g->doff[i] = g->dl, g->dl += dn[i];
}

/* The base's folded weights onto the device (o->base read through the store,
 * one linear at a time), or random ones (seed != 0, for benchmarks). */
static int upload_base(qsur_gpu_ostq *g, const qsur_ostquant *o, uint64_t seed, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, h = c->hidden_dim, V = c->vocab_size;
    int64_t off[7] = {0, d * d, (d + kv) * d, 0, 0, 0, h * d}; /* wq wk wv wo w1 w2 w3 in their stacks */
    cudaStream_t st = st_of(g);
    float *host = seed ? NULL : malloc((size_t)qsur_ostq_linear_floats(o) * sizeof(float));
    if (!seed && !host)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory");
    int rc = QSUR_OK;
    for (int l = 0; l < c->n_layers && !rc; l++) {
        base_layer *B = &g->A[l];
        float *dst[7] = {B->qkv, B->qkv, B->qkv, B->o, B->w13, B->w2, B->w13};
        for (int i = 0; i < 7 && !rc; i++) {
            int64_t rows, cols;
            qsur_ostq_linear_shape(o, i, &rows, &cols);
            float *at = dst[i] + off[i];
            if (seed) {
                qsur_cu_random(at, 0, rows * cols, 1.0f / sqrtf((float)cols), 0, seed * 7919u + (uint64_t)(7 * l + i),
                               st);
                continue;
            }
            qsur_ostq_folded(o, l, i, host);
            rc = qsur_gpu_check(cudaMemcpy(at, host, (size_t)(rows * cols) * sizeof(float), cudaMemcpyHostToDevice),
                                "base upload", err);
        }
    }
    for (int which = 0; which < 2 && !rc; which++) {
        float *dst = which ? g->C : g->E;
        if (seed) {
            qsur_cu_random(dst, 0, V * d, which ? 1.0f / sqrtf((float)d) : 1.0f, 0, seed * 31u + (uint64_t)which, st);
            continue;
        }
        int64_t step = qsur_ostq_linear_floats(o) / d;
        for (int64_t r0 = 0; r0 < V && !rc; r0 += step) {
            int64_t r1 = r0 + step < V ? r0 + step : V;
            qsur_ostq_folded_vocab(o, which, r0, r1, host);
            rc = qsur_gpu_check(cudaMemcpy(dst + r0 * d, host, (size_t)((r1 - r0) * d) * sizeof(float),
                                           cudaMemcpyHostToDevice), "base upload", err);
        }
    }
    free(host);
    return rc ? rc : qsur_gpu_check(cudaStreamSynchronize(st), "base upload", err);
}

/* The dense w2 Hadamard of the fusion: the online w2_in hook's (the same
 * plan, already on the device) or, for code_smooth without it, ud_had's. */
static int dense_w2(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    int64_t h = g->cfg.hidden_dim;
    if (o->rot->w2) {
        g->H = g->t->w2_in;
        return g->H ? QSUR_OK
                    : qsur_fail(err, QSUR_ERR_ARG, "gpu ostquant: the training hooks lack the online w2 Hadamard");
    }
    if (!o->ud_had)
        return QSUR_OK;
    float *I = calloc((size_t)(h * h), sizeof(float));
    if (!I)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory for the w2 Hadamard");
    for (int64_t i = 0; i < h; i++)
        I[i * h + i] = 1.0f;
    int rc = qsur_hadamard_plan_apply(o->ud_had, I, h, NULL, err);
    if (!rc && !(rc = galloc(g, (void **)&g->H, (size_t)(h * h) * sizeof(float), err)))
        rc = qsur_gpu_check(cudaMemcpy(g->H, I, (size_t)(h * h) * sizeof(float), cudaMemcpyHostToDevice), "w2 Hadamard",
                            err);
    g->H_own = g->H != NULL;
    free(I);
    return rc;
}

static int alloc_all(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    size_t d = (size_t)c->dim, kv = (size_t)c->kv_dim, h = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t L = (size_t)c->n_layers, big = (size_t)qsur_ostq_linear_floats(o), nov = (size_t)qsur_ostq_r_ov_size(o);
    g->A = calloc(L, sizeof *g->A);
    g->hR = malloc(d * d * sizeof(float));
    g->hRov = malloc(nov * sizeof(float));
    g->hvec = malloc(L * (size_t)g->vl * sizeof(float));
    g->hdn = malloc(2 * L * d * sizeof(float));
    g->hdots = malloc(L * (size_t)g->dl * sizeof(double));
    if (!g->A || !g->hR || !g->hRov || !g->hvec || !g->hdn || !g->hdots)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory");
    int rc = QSUR_OK;
    for (size_t l = 0; l < L && !rc; l++) {
        base_layer *B = &g->A[l];
        if (!(rc = galloc(g, (void **)&B->qkv, (d + 2 * kv) * d * 4, err)) &&
            !(rc = galloc(g, (void **)&B->o, d * d * 4, err)) && !(rc = galloc(g, (void **)&B->w13, 2 * h * d * 4, err)))
            rc = galloc(g, (void **)&B->w2, d * h * 4, err);
    }
    struct {
        void **p;
        size_t bytes;
    } b[] = {
        {(void **)&g->E, V * d * 4}, {(void **)&g->C, V * d * 4}, {(void **)&g->R, d * d * 4},
        {(void **)&g->Rov, nov * 4}, {(void **)&g->vec, L * (size_t)g->vl * 4}, {(void **)&g->S1, big * 4},
        {(void **)&g->S2, big * 4}, {(void **)&g->S3, big * 4}, {(void **)&g->dR, d * d * 4},
        {(void **)&g->dRov, nov * 4}, {(void **)&g->dots, L * (size_t)g->dl * 8},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0] && !rc; i++)
        rc = galloc(g, b[i].p, b[i].bytes, err);
    return rc;
}

void qsur_gpu_ostq_free(qsur_gpu_ostq *g)
{
    if (!g)
        return;
    for (int l = 0; g->A && l < g->cfg.n_layers; l++) {
        cudaFree(g->A[l].qkv);
        cudaFree(g->A[l].o);
        cudaFree(g->A[l].w13);
        cudaFree(g->A[l].w2);
    }
    void *dev[] = {g->E, g->C, g->R, g->Rov, g->vec, g->S1, g->S2, g->S3, g->dR, g->dRov, g->dots};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        cudaFree(dev[i]);
    if (g->H_own)
        cudaFree(g->H);
    free(g->A);
    free(g->hR);
    free(g->hRov);
    free(g->hvec);
    free(g->hdn);
    free(g->hdots);
    free(g);
}

double qsur_gpu_ostq_bytes(const qsur_gpu_ostq *g)
{
    return g ? g->bytes : 0;
}

int qsur_gpu_ostq_new(qsur_gpu_ostq **out, qsur_gpu_train *t, const qsur_ostquant *o, const qsur_llama_hooks *hooks,
                      const qsur_quant_spec *wspec, uint64_t random_seed, qsur_error *err)
{
    *out = NULL;
    const qsur_llama_config *c = &o->cfg;
    if (c->dim != t->cfg.dim || c->hidden_dim != t->cfg.hidden_dim || c->n_layers != t->cfg.n_layers ||
        c->kv_dim != t->cfg.kv_dim || c->vocab_size != t->cfg.vocab_size)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu ostquant: the training buffers' shape is not the model's");
    char why[160];
    if (wspec && wspec->bits < 16 && !qsur_gpu_quant_supported(wspec, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu ostquant: weights: %s", why);
    qsur_gpu_ostq *g = calloc(1, sizeof *g);
    if (!g)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory");
    g->t = t;
    g->cfg = *c;
    g->group = c->n_heads / c->n_kv_heads;
    g->sov_code = o->opts.sov_code;
    g->code_smooth = o->opts.code_smooth;
    g->learn_qk = o->opts.learn_qk;
    g->ud = o->ud_had != NULL && !o->rot->w2;
    g->wquant = wspec && wspec->bits < 16;
    if (g->wquant) {
        qsur_cu_quant q = {wspec->bits, wspec->symmetric, (int)wspec->gran, wspec->group, wspec->clip,
                           wspec->clip_search};
        g->wq = q;
        g->w_ste_const = wspec->ste_const;
    }
    layouts(g);
    int rc = qsur_gpu_train_hooks(t, hooks, err);
    if (!rc)
        rc = alloc_all(g, o, err);
    if (!rc)
        rc = dense_w2(g, o, err);
    if (!rc)
        rc = upload_base(g, o, random_seed, err);
    if (rc) {
        qsur_gpu_ostq_free(g);
        return rc;
    }
    *out = g;
    return QSUR_OK;
}

/* ---- parameters ------------------------------------------------------------- */

/* The S_qk index of kv row kr (qsur_ostq_fuse's qk_index). */
static int64_t qk_index(const qsur_gpu_ostq *g, int64_t kr)
{
    return g->code_smooth ? kr : kr / 2;
}

/* Layer l's vectors from s = e^ls (floats, as qsur_ostq_scratch_params). */
static void layer_vectors(const qsur_gpu_ostq *g, const qsur_ostquant *o, const float *s, int l, float *v)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, h = c->hidden_dim, hs = c->head_size;
    const float *sa = s + qsur_ostq_ls_attn(o, l), *sf = s + qsur_ostq_ls_ffn(o, l);
    const float *so = s + qsur_ostq_ls_ov(o, l), *su = s + qsur_ostq_ls_ud(o, l);
    const float *sqk = g->learn_qk ? s + qsur_ostq_ls_qk(o, l) : NULL;
    float *at[V_COUNT];
    for (int i = 0; i < V_COUNT; i++)
        at[i] = v + g->voff[i];
    for (int64_t j = 0; j < d; j++) {
        at[V_SA][j] = sa[j];
        at[V_SF][j] = sf[j];
        at[V_NA][j] = 1.0f / sa[j];
        at[V_NF][j] = 1.0f / sf[j];
        int64_t kr = (j / hs / g->group) * hs + j % hs; /* the kv row matching q row j */
        at[V_QROW][j] = sqk ? 1.0f / sqk[qk_index(g, kr)] : 1.0f;
        at[V_SOCOL][j] = so[(j / hs / g->group) * hs + j % hs];
    }
    for (int64_t r = 0; r < kv; r++) {
        at[V_KROW][r] = sqk ? sqk[qk_index(g, r)] : 1.0f;
        at[V_OVINV][r] = 1.0f / so[r];
    }
    for (int64_t r = 0; r < h; r++) {
        at[V_SU][r] = su[r];
        at[V_SUINV][r] = 1.0f / su[r];
    }
}

static int upload_params(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    int64_t d = g->cfg.dim, nov = qsur_ostq_r_ov_size(o);
    float *s = malloc((size_t)o->n_ls * sizeof(float));
    if (!s)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu ostquant: out of memory");
    for (int64_t i = 0; i < o->n_ls; i++)
        s[i] = (float)exp(o->ls[i]);
    for (int64_t i = 0; i < d * d; i++)
        g->hR[i] = (float)o->r_res[i];
    for (int64_t i = 0; i < nov; i++)
        g->hRov[i] = (float)o->r_ov[i];
    for (int l = 0; l < g->cfg.n_layers; l++)
        layer_vectors(g, o, s, l, g->hvec + (int64_t)l * g->vl);
    free(s);
    int rc = qsur_gpu_check(cudaMemcpy(g->R, g->hR, (size_t)(d * d) * 4, cudaMemcpyHostToDevice), "parameters", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->Rov, g->hRov, (size_t)nov * 4, cudaMemcpyHostToDevice), "parameters", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->vec, g->hvec, (size_t)(g->cfg.n_layers * g->vl) * 4, cudaMemcpyHostToDevice),
                            "parameters", err);
    return rc;
}

/* ---- fusion ----------------------------------------------------------------- */

/* dst[rows][d] = (A R) diag(col), then rows times row (NULL: 1). */
static int fuse_input(qsur_gpu_ostq *g, const float *A, int64_t rows, const float *row, const float *col, float *dst,
                      qsur_error *err)
{
    int64_t d = g->cfg.dim;
    int rc = mm(g, 0, 0, rows, d, d, A, d, g->R, d, 0.0f, dst, d, err);
    if (!rc)
        qsur_cu_scale_rc(dst, rows, d, row, col, st_of(g));
    return rc;
}

/* wv'_g = S_g^-1 R_g^T wv''_g (sov_code: R_g^T S_g^-1 wv''_g), wv'' in S1. */
static int fuse_wv(qsur_gpu_ostq *g, int l, float *dst, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, hs = c->head_size;
    int rc = fuse_input(g, g->A[l].qkv + (d + kv) * d, kv, NULL, vec_at(g, l, V_SA), g->S1, err);
    if (!rc && g->sov_code)
        qsur_cu_scale_rc(g->S1, kv, d, vec_at(g, l, V_OVINV), NULL, st_of(g));
    if (!rc)
        rc = mmb(g, 1, 0, hs, d, hs, rov_at(g, l), hs, hs * hs, g->S1, d, hs * d, 0.0f, dst, d, hs * d, c->n_kv_heads,
                 err);
    if (!rc && !g->sov_code)
        qsur_cu_scale_rc(dst, kv, d, vec_at(g, l, V_OVINV), NULL, st_of(g));
    return rc;
}

/* Y = R^T wo in S1; head h's columns Y_h R_g S_g (sov_code: Y_h S_g R_g). */
static int fuse_wo(qsur_gpu_ostq *g, int l, float *dst, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, hs = c->head_size, gs = (int64_t)g->group * hs;
    int rc = mm(g, 1, 0, d, d, d, g->R, d, g->A[l].o, d, 0.0f, g->S1, d, err);
    if (!rc && g->sov_code)
        qsur_cu_scale_rc(g->S1, d, d, NULL, vec_at(g, l, V_SOCOL), st_of(g));
    for (int j = 0; j < g->group && !rc; j++) /* heads g * group + j, batched over g */
        rc = mmb(g, 0, 0, d, hs, hs, g->S1 + j * hs, d, gs, rov_at(g, l), hs, hs * hs, 0.0f, dst + j * hs, d, gs,
                 c->n_kv_heads, err);
    if (!rc && !g->sov_code)
        qsur_cu_scale_rc(dst, d, d, NULL, vec_at(g, l, V_SOCOL), st_of(g));
    return rc;
}

/* w2' = (R^T w2) S_ud H, or with code_smooth (R^T w2) H S_ud (then H^T for ud). */
static int fuse_w2(qsur_gpu_ostq *g, int l, float *dst, qsur_error *err)
{
    int64_t d = g->cfg.dim, h = g->cfg.hidden_dim;
    const float *su = vec_at(g, l, V_SU);
    cudaStream_t st = st_of(g);
    if (!g->H) { /* no Hadamard: R^T w2 S_ud in either order */
        int rc = mm(g, 1, 0, d, h, d, g->R, d, g->A[l].w2, h, 0.0f, dst, h, err);
        if (!rc)
            qsur_cu_scale_rc(dst, d, h, NULL, su, st);
        return rc;
    }
    int rc = mm(g, 1, 0, d, h, d, g->R, d, g->A[l].w2, h, 0.0f, g->S1, h, err);
    if (rc)
        return rc;
    if (!g->code_smooth) {
        qsur_cu_scale_rc(g->S1, d, h, NULL, su, st);
        return mm(g, 0, 0, d, h, h, g->S1, h, g->H, h, 0.0f, dst, h, err);
    }
    float *zh = g->ud ? g->S2 : dst;
    if ((rc = mm(g, 0, 0, d, h, h, g->S1, h, g->H, h, 0.0f, zh, h, err)))
        return rc;
    qsur_cu_scale_rc(zh, d, h, NULL, su, st);
    return g->ud ? mm(g, 0, 1, d, h, h, zh, h, g->H, h, 0.0f, dst, h, err) : QSUR_OK;
}

/* dst = the fused float weights of linear i (QSUR_OSTQ_*) of layer l. */
static int fuse_linear(qsur_gpu_ostq *g, int l, int i, float *dst, qsur_error *err)
{
    int64_t d = g->cfg.dim, kv = g->cfg.kv_dim, h = g->cfg.hidden_dim;
    const base_layer *B = &g->A[l];
    switch (i) {
    case QSUR_OSTQ_WQ:
        return fuse_input(g, B->qkv, d, g->learn_qk ? vec_at(g, l, V_QROW) : NULL, vec_at(g, l, V_SA), dst, err);
    case QSUR_OSTQ_WK:
        return fuse_input(g, B->qkv + d * d, kv, g->learn_qk ? vec_at(g, l, V_KROW) : NULL, vec_at(g, l, V_SA), dst,
                          err);
    case QSUR_OSTQ_WV:
        return fuse_wv(g, l, dst, err);
    case QSUR_OSTQ_WO:
        return fuse_wo(g, l, dst, err);
    case QSUR_OSTQ_W1:
        return fuse_input(g, B->w13, h, NULL, vec_at(g, l, V_SF), dst, err);
    case QSUR_OSTQ_W3:
        return fuse_input(g, B->w13 + h * d, h, vec_at(g, l, V_SUINV), vec_at(g, l, V_SF), dst, err);
    default:
        return fuse_w2(g, l, dst, err);
    }
}

/* Where linear i of layer l lives in the training buffers (weights or their
 * gradients), and its shape. */
static float *train_slot(const qsur_gpu_ostq *g, int l, int i, int grad, int64_t *rows, int64_t *cols)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, h = c->hidden_dim;
    const train_layer *L = &g->t->L[l];
    float *qkv = grad ? L->dwqkv : L->wqkv, *w13 = grad ? L->dw13 : L->w13;
    *cols = i == QSUR_OSTQ_W2 ? h : d;
    switch (i) {
    case QSUR_OSTQ_WQ:
        *rows = d;
        return qkv;
    case QSUR_OSTQ_WK:
        *rows = kv;
        return qkv + d * d;
    case QSUR_OSTQ_WV:
        *rows = kv;
        return qkv + (d + kv) * d;
    case QSUR_OSTQ_WO:
        *rows = d;
        return grad ? L->dwo : L->wo;
    case QSUR_OSTQ_W1:
        *rows = h;
        return w13;
    case QSUR_OSTQ_W3:
        *rows = h;
        return w13 + h * d;
    default:
        *rows = d;
        return grad ? L->dw2 : L->w2;
    }
}

int qsur_gpu_ostq_fuse(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, V = c->vocab_size;
    cudaStream_t st = st_of(g);
    int rc = upload_params(g, o, err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        train_layer *L = &g->t->L[l];
        if ((rc = qsur_gpu_check(cudaMemcpyAsync(L->attention_norm, vec_at(g, l, V_NA), (size_t)d * 4,
                                                 cudaMemcpyDeviceToDevice, st), "norms", err)) ||
            (rc = qsur_gpu_check(cudaMemcpyAsync(L->ffn_norm, vec_at(g, l, V_NF), (size_t)d * 4,
                                                 cudaMemcpyDeviceToDevice, st), "norms", err)))
            break;
        for (int i = 0; i < 7 && !rc; i++) {
            int64_t rows, cols;
            float *w = train_slot(g, l, i, 0, &rows, &cols);
            rc = fuse_linear(g, l, i, w, err);
            if (!rc && g->wquant) /* RTN in place: the passes use Q(W) */
                qsur_cu_quant_cast(NULL, 0, w, w, rows, cols, &g->wq, st);
        }
    }
    if (!rc)
        rc = mm(g, 0, 0, V, d, d, g->E, d, g->R, d, 0.0f, g->t->emb, d, err);
    if (!rc)
        rc = mm(g, 0, 0, V, d, d, g->C, d, g->R, d, 0.0f, g->t->out, d, err);
    if (!rc)
        qsur_cu_fill(g->t->norm, 1.0f, d, st);
    return rc ? rc : qsur_gpu_check(cudaStreamSynchronize(st), "gpu ostquant fuse", err);
}

/* ---- chain rule ------------------------------------------------------------- */

/* W = diag(row) (A R) diag(col) (rows of A: rows): row sums of G * W into
 * rdots (NULL: none), column sums added to cdots, G <- diag(row) G diag(col),
 * dR += A^T G. */
static int chain_input(qsur_gpu_ostq *g, const float *A, int64_t rows, const float *W, float *G, const float *row,
                       const float *col, double *rdots, double *cdots, qsur_error *err)
{
    int64_t d = g->cfg.dim;
    cudaStream_t st = st_of(g);
    if (rdots)
        qsur_cu_ostq_row_dots(rdots, G, W, rows, d, st);
    qsur_cu_ostq_col_dots(cdots, G, W, rows, d, st);
    qsur_cu_scale_rc(G, rows, d, row, col, st);
    return mm(g, 1, 0, d, d, rows, A, d, G, d, 1.0f, g->dR, d, err);
}

/* wv (ostquant_fuse.c's wv_grad): V'' = A_v R S_a in S1, dV'' in S2. */
static int chain_wv(qsur_gpu_ostq *g, int l, const float *W, float *G, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, hs = c->head_size;
    const float *Av = g->A[l].qkv + (d + kv) * d, *ovinv = vec_at(g, l, V_OVINV);
    cudaStream_t st = st_of(g);
    int nb = c->n_kv_heads;
    int rc = fuse_input(g, Av, kv, NULL, vec_at(g, l, V_SA), g->S1, err);
    if (rc)
        return rc;
    if (!g->sov_code) { /* W_g = S^-1 Z_g, Z_g = R_g^T V''_g */
        qsur_cu_ostq_row_dots(dots_at(g, l, D_WVR), G, W, kv, d, st);
        qsur_cu_scale_rc(G, kv, d, ovinv, NULL, st); /* dZ */
    } else {                                         /* W_g = R_g^T Z_g, Z = S^-1 V'' */
        qsur_cu_scale_rc(g->S1, kv, d, ovinv, NULL, st);
    }
    /* dR_g += (V''_g or Z_g) G_g^T; S2_g = R_g G_g */
    if ((rc = mmb(g, 0, 1, hs, hs, d, g->S1, d, hs * d, G, d, hs * d, 1.0f, drov_at(g, l), hs, hs * hs, nb, err)) ||
        (rc = mmb(g, 0, 0, hs, d, hs, rov_at(g, l), hs, hs * hs, G, d, hs * d, 0.0f, g->S2, d, hs * d, nb, err)))
        return rc;
    if (g->sov_code)
        qsur_cu_ostq_row_dots(dots_at(g, l, D_WVR), g->S2, g->S1, kv, d, st);
    /* sum_i dV''_ij V''_ij = sum_i dZ_ij Z_ij (the row scale cancels) */
    qsur_cu_ostq_col_dots(dots_at(g, l, D_QKVC), g->S2, g->S1, kv, d, st);
    qsur_cu_scale_rc(g->S2, kv, d, g->sov_code ? ovinv : NULL, vec_at(g, l, V_SA), st);
    return mm(g, 1, 0, d, d, kv, Av, d, g->S2, d, 1.0f, g->dR, d, err);
}

/* wo (wo_grad): Y = R^T wo in S1 (times S_g with sov_code: U), dY in S2. */
static int chain_wo(qsur_gpu_ostq *g, int l, const float *W, float *G, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, hs = c->head_size, gs = (int64_t)g->group * hs;
    const float *Ao = g->A[l].o, *socol = vec_at(g, l, V_SOCOL);
    cudaStream_t st = st_of(g);
    int nb = c->n_kv_heads;
    int rc = mm(g, 1, 0, d, d, d, g->R, d, Ao, d, 0.0f, g->S1, d, err);
    if (rc)
        return rc;
    if (!g->sov_code) { /* W_h = U_h S_g, U_h = Y_h R_g */
        qsur_cu_ostq_col_dots(dots_at(g, l, D_WOC), G, W, d, d, st);
        qsur_cu_scale_rc(G, d, d, NULL, socol, st); /* dU */
    } else {                                        /* W_h = U_h R_g, U = Y S */
        qsur_cu_scale_rc(g->S1, d, d, NULL, socol, st);
    }
    for (int j = 0; j < g->group && !rc; j++) {
        /* dR_g += (Y_h or U_h)^T G_h;  S2_h = G_h R_g^T */
        rc = mmb(g, 1, 0, hs, hs, d, g->S1 + j * hs, d, gs, G + j * hs, d, gs, 1.0f, drov_at(g, l), hs, hs * hs, nb,
                 err);
        if (!rc)
            rc = mmb(g, 0, 1, d, hs, hs, G + j * hs, d, gs, rov_at(g, l), hs, hs * hs, 0.0f, g->S2 + j * hs, d, gs, nb,
                     err);
    }
    if (rc)
        return rc;
    if (g->sov_code) {
        qsur_cu_ostq_col_dots(dots_at(g, l, D_WOC), g->S2, g->S1, d, d, st);
        qsur_cu_scale_rc(g->S2, d, d, NULL, socol, st);
    }
    return mm(g, 0, 1, d, d, d, Ao, d, g->S2, d, 1.0f, g->dR, d, err); /* dR += wo dY^T */
}

/* w2 (w2_grad): Z = R^T w2; without code_smooth W = (Z S) H: d(ZS) = G H^T;
 * with it W = (Z H) S [H^T]: P = (Z H) S, dP = G [H], dZ = dP S H^T. */
static int chain_w2(qsur_gpu_ostq *g, int l, float *G, qsur_error *err)
{
    int64_t d = g->cfg.dim, h = g->cfg.hidden_dim;
    const float *A2 = g->A[l].w2, *su = vec_at(g, l, V_SU);
    double *cd = dots_at(g, l, D_W2C);
    cudaStream_t st = st_of(g);
    int rc = mm(g, 1, 0, d, h, d, g->R, d, A2, h, 0.0f, g->S1, h, err);
    if (rc)
        return rc;
    if (!g->code_smooth || !g->H) {
        qsur_cu_scale_rc(g->S1, d, h, NULL, su, st); /* ZS */
        float *D = G;
        if (g->H && !(rc = mm(g, 0, 1, d, h, h, G, h, g->H, h, 0.0f, g->S2, h, err)))
            D = g->S2;
        if (rc)
            return rc;
        qsur_cu_ostq_col_dots(cd, D, g->S1, d, h, st);
        qsur_cu_scale_rc(D, d, h, NULL, su, st);
        return mm(g, 0, 1, d, d, h, A2, h, D, h, 1.0f, g->dR, d, err);
    }
    if ((rc = mm(g, 0, 0, d, h, h, g->S1, h, g->H, h, 0.0f, g->S3, h, err))) /* P, in place of W */
        return rc;
    qsur_cu_scale_rc(g->S3, d, h, NULL, su, st);
    float *D = G;
    if (g->ud && !(rc = mm(g, 0, 0, d, h, h, G, h, g->H, h, 0.0f, g->S2, h, err)))
        D = g->S2;
    if (rc)
        return rc;
    qsur_cu_ostq_col_dots(cd, D, g->S3, d, h, st);
    qsur_cu_scale_rc(D, d, h, NULL, su, st);
    if ((rc = mm(g, 0, 1, d, h, h, D, h, g->H, h, 0.0f, g->S1, h, err))) /* dZ */
        return rc;
    return mm(g, 0, 1, d, d, h, A2, h, g->S1, h, 1.0f, g->dR, d, err);
}

/* Linear i of layer l: W its fused float weights, G = dL/dW (consumed). */
static int chain_linear(qsur_gpu_ostq *g, int l, int i, const float *W, float *G, qsur_error *err)
{
    int64_t d = g->cfg.dim, kv = g->cfg.kv_dim, h = g->cfg.hidden_dim;
    const base_layer *B = &g->A[l];
    switch (i) {
    case QSUR_OSTQ_WQ:
        return chain_input(g, B->qkv, d, W, G, g->learn_qk ? vec_at(g, l, V_QROW) : NULL, vec_at(g, l, V_SA),
                           g->learn_qk ? dots_at(g, l, D_WQR) : NULL, dots_at(g, l, D_QKVC), err);
    case QSUR_OSTQ_WK:
        return chain_input(g, B->qkv + d * d, kv, W, G, g->learn_qk ? vec_at(g, l, V_KROW) : NULL, vec_at(g, l, V_SA),
                           g->learn_qk ? dots_at(g, l, D_WKR) : NULL, dots_at(g, l, D_QKVC), err);
    case QSUR_OSTQ_WV:
        return chain_wv(g, l, W, G, err);
    case QSUR_OSTQ_WO:
        return chain_wo(g, l, W, G, err);
    case QSUR_OSTQ_W1:
        return chain_input(g, B->w13, h, W, G, NULL, vec_at(g, l, V_SF), NULL, dots_at(g, l, D_W13C), err);
    case QSUR_OSTQ_W3:
        return chain_input(g, B->w13 + h * d, h, W, G, vec_at(g, l, V_SUINV), vec_at(g, l, V_SF),
                           dots_at(g, l, D_W3R), dots_at(g, l, D_W13C), err);
    default:
        return chain_w2(g, l, G, err);
    }
}

/* Every layer's STE (weights trained quantized: the fused floats made again
 * in S3) and chain rule, and the vocabulary's: dR += E^T dE' + C^T dC'. */
static int chain_all(qsur_gpu_ostq *g, qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, V = c->vocab_size;
    cudaStream_t st = st_of(g);
    int64_t nov = (int64_t)c->n_layers * c->n_kv_heads * c->head_size * c->head_size;
    int rc = qsur_gpu_check(cudaMemsetAsync(g->dR, 0, (size_t)(d * d) * 4, st), "chain", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemsetAsync(g->dRov, 0, (size_t)nov * 4, st), "chain", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemsetAsync(g->dots, 0, (size_t)(c->n_layers * g->dl) * 8, st), "chain", err);
    if (!rc)
        rc = mm(g, 1, 0, d, d, V, g->E, d, g->t->demb, d, 1.0f, g->dR, d, err);
    if (!rc)
        rc = mm(g, 1, 0, d, d, V, g->C, d, g->t->dout, d, 1.0f, g->dR, d, err);
    for (int l = 0; l < c->n_layers && !rc; l++)
        for (int i = 0; i < 7 && !rc; i++) {
            int64_t rows, cols;
            float *W = train_slot(g, l, i, 0, &rows, &cols), *G = train_slot(g, l, i, 1, &rows, &cols);
            if (g->wquant) {
                W = g->S3;
                if (!(rc = fuse_linear(g, l, i, W, err)))
                    qsur_cu_quant_backward(G, W, G, rows, cols, &g->wq, g->w_ste_const, st);
            }
            if (!rc)
                rc = chain_linear(g, l, i, W, G, err);
        }
    return rc;
}

/* d_ls of layer l from the downloaded sums and norm-gain gradients (dn: the
 * attention then the ffn gains'), as qsur_ostq_chain_norms and the scale
 * parts of qsur_ostq_chain_linear. */
static void layer_dls(const qsur_gpu_ostq *g, const qsur_ostquant *o, int l, const double *dots, const float *v,
                      const float *dn, double *d_ls)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, kv = c->kv_dim, h = c->hidden_dim, hs = c->head_size;
    double *da = d_ls + qsur_ostq_ls_attn(o, l), *dff = d_ls + qsur_ostq_ls_ffn(o, l);
    double *dov = d_ls + qsur_ostq_ls_ov(o, l), *dud = d_ls + qsur_ostq_ls_ud(o, l);
    for (int64_t j = 0; j < d; j++) {
        da[j] = dots[g->doff[D_QKVC] + j] - (double)dn[j] * v[g->voff[V_NA] + j];
        dff[j] = dots[g->doff[D_W13C] + j] - (double)dn[d + j] * v[g->voff[V_NF] + j];
    }
    for (int64_t r = 0; r < kv; r++)
        dov[r] = -dots[g->doff[D_WVR] + r];
    for (int64_t j = 0; j < d; j++) /* wo column j of head j / hs: s_ov of its kv head's row */
        dov[(j / hs / g->group) * hs + j % hs] += dots[g->doff[D_WOC] + j];
    for (int64_t r = 0; r < h; r++)
        dud[r] = dots[g->doff[D_W2C] + r] - dots[g->doff[D_W3R] + r];
    if (!g->learn_qk)
        return;
    double *dqk = d_ls + qsur_ostq_ls_qk(o, l);
    memset(dqk, 0, (size_t)(g->code_smooth ? kv : kv / 2) * sizeof(double));
    for (int64_t r = 0; r < d; r++)
        dqk[qk_index(g, (r / hs / g->group) * hs + r % hs)] -= dots[g->doff[D_WQR] + r];
    for (int64_t r = 0; r < kv; r++)
        dqk[qk_index(g, r)] += dots[g->doff[D_WKR] + r];
}

int qsur_gpu_ostq_grads(qsur_gpu_ostq *g, const qsur_ostquant *o, double *d_r_res, double *d_r_ov, double *d_ls,
                        qsur_error *err)
{
    const qsur_llama_config *c = &g->cfg;
    int64_t d = c->dim, nov = qsur_ostq_r_ov_size(o);
    int rc = chain_all(g, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->hR, g->dR, (size_t)(d * d) * 4, cudaMemcpyDeviceToHost), "gradients", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->hRov, g->dRov, (size_t)nov * 4, cudaMemcpyDeviceToHost), "gradients", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(g->hdots, g->dots, (size_t)(c->n_layers * g->dl) * 8, cudaMemcpyDeviceToHost),
                            "gradients", err);
    for (int l = 0; l < c->n_layers && !rc; l++) {
        float *dn = g->hdn + (int64_t)2 * l * d;
        if (!(rc = qsur_gpu_check(cudaMemcpy(dn, g->t->L[l].dattention_norm, (size_t)d * 4, cudaMemcpyDeviceToHost),
                                  "gradients", err)))
            rc = qsur_gpu_check(cudaMemcpy(dn + d, g->t->L[l].dffn_norm, (size_t)d * 4, cudaMemcpyDeviceToHost),
                                "gradients", err);
    }
    if (rc)
        return rc;
    for (int64_t i = 0; i < d * d; i++)
        d_r_res[i] = g->hR[i];
    for (int64_t i = 0; i < nov; i++)
        d_r_ov[i] = g->hRov[i];
    for (int l = 0; l < c->n_layers; l++)
        layer_dls(g, o, l, g->hdots + (int64_t)l * g->dl, g->hvec + (int64_t)l * g->vl, g->hdn + (int64_t)2 * l * d,
                  d_ls);
    return QSUR_OK;
}
