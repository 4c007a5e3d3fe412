/* OSTQuant's chain rule on the GPU (qsur_gpu_ostq_grads, qsur/backend.h):
 * after a backward on the training buffers, the weights' STE (each fused
 * float weight made again in S3 when the weights train quantized) and the
 * chain rule of src/ostquant_fuse.c's qsur_ostq_chain_linear, linear by
 * linear: dR (float, dim^2) and every dR_ov accumulate by GEMMs, the scales'
 * gradients as per-row and per-column sums of dW * W in double, mapped to the
 * log-scale layout on the host with the norm gains' part. */
#include <stdlib.h>
#include <string.h>
#include <cuda_runtime.h>
#include "gpu_ostq.h"
#include "ostq_kernels.h"
#include "train_kernels.h"

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
    int rc = gpu_ostq_fuse_input(g, Av, kv, NULL, vec_at(g, l, V_SA), g->S1, err);
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
            float *W = gpu_ostq_train_slot(g, l, i, 0, &rows, &cols), *G = gpu_ostq_train_slot(g, l, i, 1, &rows, &cols);
            if (g->wquant) {
                W = g->S3;
                if (!(rc = gpu_ostq_fuse_linear(g, l, i, W, err)))
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

