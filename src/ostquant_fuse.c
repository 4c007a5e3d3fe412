/* OSTQuant fusion and its chain rule (qsur/ostquant.h has the layout), one
 * linear at a time from the base model's weights read through the store:
 * the training step makes each fused linear when its pass reaches it, the
 * final fusion writes each one in the base's dtype (or as packed codes), so
 * neither keeps a folded or fused copy of the whole model. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/half.h"
#include "qsur/llama_store.h"
#include "qsur/safetensors.h"
#include "qsur/llama_wquant.h"
#include "ostquant_fuse.h"

/* Slices of the vocabulary (embeddings, classifier) are made this many floats at a time. */
#define VOCAB_SLICE_FLOATS ((int64_t)16 << 20)

static void to_float(const double *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)x[i];
}

void qsur_ostq_linear_shape(const qsur_ostquant *o, int i, int64_t *rows, int64_t *cols)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t r[7] = {c->dim, c->kv_dim, c->kv_dim, c->dim, c->hidden_dim, c->dim, c->hidden_dim};
    *rows = r[i];
    *cols = i == QSUR_OSTQ_W2 ? c->hidden_dim : c->dim;
}

int64_t qsur_ostq_linear_floats(const qsur_ostquant *o)
{
    int64_t d = o->cfg.dim, hd = o->cfg.hidden_dim;
    return (hd > d ? hd : d) * d;
}

int qsur_ostq_scratch_new(const qsur_ostquant *o, qsur_ostq_scratch *f)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, big = qsur_ostq_linear_floats(o), hs = c->head_size;
    memset(f, 0, sizeof *f);
    f->vrows = VOCAB_SLICE_FLOATS / d < c->vocab_size ? VOCAB_SLICE_FLOATS / d : c->vocab_size;
    if (f->vrows < 1)
        f->vrows = 1;
    f->R = malloc((size_t)(d * d) * sizeof(float));
    f->Rov = malloc((size_t)qsur_ostq_r_ov_size(o) * sizeof(float));
    f->s = malloc((size_t)o->n_ls * sizeof(float));
    f->tmp = malloc((size_t)big * sizeof(float));
    f->tmp2 = malloc((size_t)big * sizeof(float));
    f->dRov = malloc((size_t)(hs * hs) * sizeof(float));
    f->vbuf = malloc((size_t)(f->vrows * d) * sizeof(float));
    if (!f->R || !f->Rov || !f->s || !f->tmp || !f->tmp2 || !f->dRov || !f->vbuf)
        return -1;
    qsur_ostq_scratch_params(o, f);
    return 0;
}

void qsur_ostq_scratch_params(const qsur_ostquant *o, qsur_ostq_scratch *f)
{
    to_float(o->r_res, f->R, (int64_t)o->cfg.dim * o->cfg.dim);
    to_float(o->r_ov, f->Rov, qsur_ostq_r_ov_size(o));
    for (int64_t i = 0; i < o->n_ls; i++)
        f->s[i] = (float)exp(o->ls[i]);
}

void qsur_ostq_scratch_free(qsur_ostq_scratch *f)
{
    free(f->R);
    free(f->Rov);
    free(f->s);
    free(f->tmp);
    free(f->tmp2);
    free(f->dRov);
    free(f->vbuf);
    memset(f, 0, sizeof *f);
}

/* ---- the base model, folded --------------------------------------------------- */

static const qsur_llama_linear *base_linear(const qsur_ostquant *o, int l, int i)
{
    return qsur_llama_linear_at((qsur_llama *)o->base, 7 * l + i);
}

/* w[rows][cols]: column j times s[j]. */
static void scale_columns(float *w, int64_t rows, int64_t cols, const float *s)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            w[i * cols + j] *= s[j];
}

void qsur_ostq_folded(const qsur_ostquant *o, int l, int i, float *dst)
{
    const qsur_llama_linear *w = base_linear(o, l, i);
    const qsur_llama_layer *B = &o->base->layers[l];
    qsur_llama_linear_read_rows(w, 0, w->rows, dst);
    if (i <= QSUR_OSTQ_WV)
        scale_columns(dst, w->rows, w->cols, B->attention_norm);
    else if (i == QSUR_OSTQ_W1 || i == QSUR_OSTQ_W3)
        scale_columns(dst, w->rows, w->cols, B->ffn_norm);
}

void qsur_ostq_folded_vocab(const qsur_ostquant *o, int which, int64_t r0, int64_t r1, float *dst)
{
    qsur_llama_linear_read_rows(which ? &o->base->output : &o->base->embed, r0, r1, dst);
    if (which)
        scale_columns(dst, r1 - r0, o->cfg.dim, o->base->norm);
}

/* ---- fusion ---------------------------------------------------------------- */

/* dst[rows][d] = A R, then column j times s[j] (s may be NULL). */
static void input_side(const float *A, int64_t rows, int64_t d, const float *R, const float *s, float *dst)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)d, (int)d, 1.0f, A, (int)d, R, (int)d,
                0.0f, dst, (int)d);
    if (s)
        scale_columns(dst, rows, d, s);
}

/* The S_qk scale of row kr of wk: one per RoPE pair (2i, 2i+1), or with
 * code_smooth one per row (the OSTQuant code's per-channel S_qk). */
static int64_t qk_index(const qsur_ostquant *o, int64_t kr)
{
    return o->opts.code_smooth ? kr : kr / 2;
}

/* Rows of wk (is_k: rows = n_kv_heads * hs) times their scale, or of wq
 * (n_heads * hs) divided by the scale of their kv head's row. */
static void qk_rows(const qsur_ostquant *o, const float *s, float *w, int is_k)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size, rows = (int64_t)(is_k ? c->n_kv_heads : c->n_heads) * hs;
    int group = c->n_heads / c->n_kv_heads;
    for (int64_t r = 0; r < rows; r++) {
        int64_t kr = is_k ? r : (r / hs / group) * hs + r % hs; /* the matching row of the kv head */
        for (int64_t j = 0; j < d; j++) {
            if (is_k)
                w[r * d + j] *= s[qk_index(o, kr)];
            else
                w[r * d + j] /= s[qk_index(o, kr)];
        }
    }
}

/* wv'' (kv x d, = A_v R S_attn) -> wv' rows of group g: S_g^-1 R_g^T wv''_g,
 * or with sov_code R_g^T S_g^-1 wv''_g (vin is scaled in place then). */
static void ov_rows(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, float *vin, float *vout)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    const float *s = f->s + qsur_ostq_ls_ov(o, l);
    int code = o->opts.sov_code;
    for (int g = 0; g < c->n_kv_heads; g++) {
        const float *Rg = f->Rov + ((size_t)l * c->n_kv_heads + g) * hs * hs;
        float *src = vin + (size_t)g * hs * d, *dst = vout + (size_t)g * hs * d;
        float *scaled = code ? src : dst;
        if (code) /* S_g^-1 first, on the rows of wv''_g */
            for (int64_t i = 0; i < hs; i++)
                for (int64_t j = 0; j < d; j++)
                    scaled[i * d + j] /= s[g * hs + i];
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)hs, (int)d, (int)hs, 1.0f, Rg, (int)hs, src,
                    (int)d, 0.0f, dst, (int)d);
        if (!code)
            for (int64_t i = 0; i < hs; i++)
                for (int64_t j = 0; j < d; j++)
                    scaled[i * d + j] /= s[g * hs + i];
    }
}

/* S_ov of a layer expanded to the rows of wo: row i gets s[sov_index(i)],
 * g hs + i % hs with g = (i / hs) / group (the OSTQuant code's expand to the
 * query heads, used on the rows: dim = n_heads head_size). */
static int64_t sov_index(const qsur_ostquant *o, int64_t i)
{
    int64_t hs = o->cfg.head_size, group = o->cfg.n_heads / o->cfg.n_kv_heads;
    return (i / hs / group) * hs + i % hs;
}

/* B = S_row A (d x d): wo's rows times S_ov expanded (sov_index). */
static void sov_scale_rows(const qsur_ostquant *o, const float *so, const float *A, float *B)
{
    int64_t d = o->cfg.dim;
    for (int64_t i = 0; i < d; i++) {
        float s = so[sov_index(o, i)];
        for (int64_t j = 0; j < d; j++)
            B[i * d + j] = A[i * d + j] * s;
    }
}

/* sov_train while training: wo' = R^T (S_row wo), each column block of head h
 * times R_g, no column scale (the OSTQuant code's training-time o_proj). */
static void fuse_wo_train_code(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, const float *A, float *W)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    int group = c->n_heads / c->n_kv_heads;
    sov_scale_rows(o, f->s + qsur_ostq_ls_ov(o, l), A, f->tmp2);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0f, f->R, (int)d, f->tmp2, (int)d,
                0.0f, f->tmp, (int)d);
    for (int h = 0; h < c->n_heads; h++) {
        const float *Rg = f->Rov + ((size_t)l * c->n_kv_heads + h / group) * hs * hs;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)hs, (int)hs, 1.0f,
                    f->tmp + (size_t)h * hs, (int)d, Rg, (int)hs, 0.0f, W + (size_t)h * hs, (int)d);
    }
}

/* wo' = R^T wo, then the column block of head h times R_g S_g, or with
 * sov_code times S_g R_g (while training with sov_train: fuse_wo_train_code). */
static void fuse_wo(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, const float *A, float *W)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    int group = c->n_heads / c->n_kv_heads, code = o->opts.sov_code;
    const float *so = f->s + qsur_ostq_ls_ov(o, l);
    if (f->train && o->opts.sov_train) {
        fuse_wo_train_code(o, f, l, A, W);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0f, f->R, (int)d, A, (int)d, 0.0f,
                f->tmp, (int)d);
    for (int h = 0; h < c->n_heads; h++) {
        int g = h / group;
        const float *Rg = f->Rov + ((size_t)l * c->n_kv_heads + g) * hs * hs;
        float *scaled = code ? f->tmp + (size_t)h * hs : W + (size_t)h * hs;
        if (code)
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j < hs; j++)
                    scaled[i * d + j] *= so[g * hs + j];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)hs, (int)hs, 1.0f,
                    f->tmp + (size_t)h * hs, (int)d, Rg, (int)hs, 0.0f, W + (size_t)h * hs, (int)d);
        if (!code)
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j < hs; j++)
                    scaled[i * d + j] *= so[g * hs + j];
    }
}

/* w2' = (R^T w2) S_ud H (exact), or (R^T w2) H S_ud with code_smooth: the
 * OSTQuant code scales the Hadamard-fused w2, which with the online Hadamard
 * is not an equivalence (g S^-1 H S H^T w2^T). */
static void fuse_w2(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, const float *A, float *W)
{
    int64_t d = o->cfg.dim, hd = o->cfg.hidden_dim;
    const float *su = f->s + qsur_ostq_ls_ud(o, l);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)hd, (int)d, 1.0f, f->R, (int)d, A, (int)hd,
                0.0f, W, (int)hd);
    if (!o->opts.code_smooth)
        scale_columns(W, d, hd, su);
    if (o->rot->w2 || o->ud_had)
        qsur_hadamard_plan_apply(o->rot->w2 ? o->rot->w2 : o->ud_had, W, d, NULL, NULL);
    if (o->opts.code_smooth)
        scale_columns(W, d, hd, su);
    if (o->ud_had)
        qsur_hadamard_plan_apply_transpose(o->ud_had, W, d, NULL, NULL);
}

void qsur_ostq_fuse_linear(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, int i, const float *A,
                           float *W)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hd = c->hidden_dim, kv = c->kv_dim;
    const float *sa = f->s + qsur_ostq_ls_attn(o, l), *sf = f->s + qsur_ostq_ls_ffn(o, l);
    const float *su = f->s + qsur_ostq_ls_ud(o, l), *sqk = f->s + qsur_ostq_ls_qk(o, l);
    switch (i) {
    case QSUR_OSTQ_WQ:
    case QSUR_OSTQ_WK:
        input_side(A, i == QSUR_OSTQ_WQ ? d : kv, d, f->R, sa, W);
        if (o->opts.learn_qk)
            qk_rows(o, sqk, W, i == QSUR_OSTQ_WK);
        break;
    case QSUR_OSTQ_WV:
        input_side(A, kv, d, f->R, sa, f->tmp);
        ov_rows(o, f, l, f->tmp, W);
        break;
    case QSUR_OSTQ_WO:
        fuse_wo(o, f, l, A, W);
        break;
    case QSUR_OSTQ_W1:
        input_side(A, hd, d, f->R, sf, W);
        break;
    case QSUR_OSTQ_W3:
        input_side(A, hd, d, f->R, sf, W);
        for (int64_t r = 0; r < hd; r++)
            for (int64_t j = 0; j < d; j++)
                W[r * d + j] /= su[r];
        break;
    default:
        fuse_w2(o, f, l, A, W);
    }
}

void qsur_ostq_fuse_norms(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, float *attn, float *ffn)
{
    const float *sa = f->s + qsur_ostq_ls_attn(o, l), *sf = f->s + qsur_ostq_ls_ffn(o, l);
    for (int64_t j = 0; j < o->cfg.dim; j++) {
        attn[j] = 1.0f / sa[j];
        ffn[j] = 1.0f / sf[j];
    }
}

void qsur_ostq_fuse_vocab(const qsur_ostquant *o, const qsur_ostq_scratch *f, int which, int64_t r0, int64_t r1,
                          float *dst)
{
    qsur_ostq_folded_vocab(o, which, r0, r1, f->vbuf);
    input_side(f->vbuf, r1 - r0, o->cfg.dim, f->R, NULL, dst);
}

/* Every linear of block l, norms, embeddings and classifier into the float model fm. */
int qsur_ostquant_fuse_into(const qsur_ostquant *o, qsur_llama *fm, qsur_error *err)
{
    qsur_ostq_scratch f;
    memset(&f, 0, sizeof f); /* freed below also when A's allocation failed */
    float *A = malloc((size_t)qsur_ostq_linear_floats(o) * sizeof(float));
    if (!A || qsur_ostq_scratch_new(o, &f) != 0) {
        qsur_ostq_scratch_free(&f);
        free(A);
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant fuse: out of memory for the scratch");
    }
    f.train = 1; /* the training-time function (sov_train) */
    int64_t d = o->cfg.dim, V = o->cfg.vocab_size;
    for (int64_t r0 = 0; r0 < V; r0 += f.vrows) {
        int64_t r1 = r0 + f.vrows < V ? r0 + f.vrows : V;
        qsur_ostq_fuse_vocab(o, &f, 0, r0, r1, fm->tok_embeddings + r0 * d);
        qsur_ostq_fuse_vocab(o, &f, 1, r0, r1, fm->output.w + r0 * d);
    }
    for (int64_t j = 0; j < d; j++)
        fm->norm[j] = 1.0f;
    for (int l = 0; l < o->cfg.n_layers; l++) {
        qsur_ostq_fuse_norms(o, &f, l, fm->layers[l].attention_norm, fm->layers[l].ffn_norm);
        for (int i = 0; i < 7; i++) {
            qsur_llama_linear *lin = qsur_llama_linear_at(fm, 7 * l + i);
            qsur_ostq_folded(o, l, i, A);
            qsur_ostq_fuse_linear(o, &f, l, i, A, lin->w);
            /* the float weights changed: a stale quantized copy must not be used */
            qsur_llama_linear_drop_quant(lin);
        }
    }
    qsur_ostq_scratch_free(&f);
    free(A);
    return QSUR_OK;
}

/* n floats to dtype (F16/BF16, round to nearest even) in h. */
static void to_half(const float *x, int64_t n, int dtype, uint16_t *h)
{
    for (int64_t i = 0; i < n; i++)
        h[i] = dtype == QSUR_DTYPE_BF16 ? qsur_f32_to_bf16(x[i]) : qsur_f32_to_f16(x[i]);
}

/* lin = the float weights w (taken), quantized into packed codes by RTN
 * with spec (NULL: not), then stored in dtype: float32 stays owned, 16-bit
 * weights go to the spill file. */
static int store_linear(qsur_llama_linear *lin, float *w, int dtype, const qsur_quant_spec *spec,
                        qsur_llama_spill *spill, qsur_error *err)
{
    lin->w = w;
    lin->st.data = lin->st.owned = NULL;
    qsur_quant_spec q;
    int rc = QSUR_OK;
    if (spec) {
        q = qsur_llama_linear_spec(spec, lin->cols);
        if (!(rc = qsur_quant_validate(&q, lin->cols, err)))
            rc = qsur_llama_linear_quant_rtn(lin, &q, err);
    }
    if (rc || dtype == QSUR_DTYPE_F32 || (rc = qsur_llama_linear_store_back(lin, dtype, err)))
        return rc;
    /* the halves store_back made go to the spill file */
    rc = qsur_llama_spill_linear(spill, lin, lin->st.data, dtype, err);
    free(lin->st.owned);
    memset(&lin->st, 0, sizeof lin->st);
    return rc;
}

/* The fused embeddings (which 0) or classifier (1) of m, slice by slice,
 * each slice converted to the base's dtype as it is made (no float32 copy of
 * the whole table for a bf16 base); the base's pages read are handed back. */
static int fuse_vocab_into(const qsur_ostquant *o, const qsur_ostq_scratch *f, int which, qsur_llama *m,
                           qsur_llama_spill *spill, qsur_error *err)
{
    int64_t d = o->cfg.dim, V = o->cfg.vocab_size;
    qsur_llama_linear *dst = which ? &m->output : &m->embed;
    const qsur_llama_linear *src = which ? &o->base->output : &o->base->embed;
    int dtype = qsur_llama_linear_dtype(src), f32 = dtype == QSUR_DTYPE_F32;
    if (!f32 && dtype != QSUR_DTYPE_F16 && dtype != QSUR_DTYPE_BF16)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: cannot store weights as %s", dst->name,
                         qsur_dtype_name((qsur_dtype)dtype));
    void *buf = qsur_alloc((size_t)(V * d), f32 ? sizeof(float) : sizeof(uint16_t));
    float *slice = f32 ? NULL : qsur_alloc((size_t)(f->vrows * d), sizeof(float));
    if (!buf || (!f32 && !slice)) {
        free(buf);
        free(slice);
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant fuse: out of memory for %s", dst->name);
    }
    for (int64_t r0 = 0; r0 < V; r0 += f->vrows) {
        int64_t r1 = r0 + f->vrows < V ? r0 + f->vrows : V;
        qsur_ostq_fuse_vocab(o, f, which, r0, r1, f32 ? (float *)buf + r0 * d : slice);
        if (!f32)
            to_half(slice, (r1 - r0) * d, dtype, (uint16_t *)buf + r0 * d);
    }
    free(slice);
    qsur_llama_linear_release_pages(src);
    memset(&dst->st, 0, sizeof dst->st);
    dst->w = f32 ? buf : NULL;
    int rc = f32 ? QSUR_OK : qsur_llama_spill_linear(spill, dst, buf, dtype, err);
    if (!f32)
        free(buf);
    return rc;
}

/* Block l of m: every linear fused into its own buffer, quantized and stored
 * in its base linear's dtype right away; the base's mapped pages read for it
 * are handed back (the fused model grows while the base's share shrinks). */
static int fuse_block(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, const qsur_quant_spec *wspec,
                      float *A, qsur_llama *m, qsur_llama_spill *spill, qsur_error *err)
{
    qsur_ostq_fuse_norms(o, f, l, m->layers[l].attention_norm, m->layers[l].ffn_norm);
    for (int i = 0; i < 7; i++) {
        qsur_llama_linear *lin = qsur_llama_linear_at(m, 7 * l + i);
        float *w = qsur_alloc((size_t)(lin->rows * lin->cols), sizeof(float));
        if (!w)
            return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant fuse: out of memory for %s", lin->name);
        qsur_ostq_folded(o, l, i, A);
        qsur_llama_linear_release_pages(base_linear(o, l, i));
        qsur_ostq_fuse_linear(o, f, l, i, A, w);
        int rc = store_linear(lin, w, qsur_llama_linear_dtype(base_linear(o, l, i)), wspec, spill, err);
        if (rc)
            return rc;
    }
    return QSUR_OK;
}

void qsur_ostq_set_hooks(const qsur_ostquant *o, qsur_llama *m, const qsur_llama_rotations *r)
{
    m->hooks = qsur_llama_hooks_none();
    m->hooks.act = o->aspec;
    m->hooks.act_wo = o->aospec;
    m->hooks.kv = o->kvspec;
    qsur_llama_rotations_attach(r, m);
}

int qsur_ostquant_fuse_model(const qsur_ostquant *o, const qsur_quant_spec *wspec, const qsur_progress *prog,
                             qsur_llama **model, qsur_llama_rotations **rot, qsur_error *err)
{
    *model = NULL;
    *rot = NULL;
    qsur_llama *m = NULL;
    qsur_llama_rotations *r = NULL;
    qsur_ostq_scratch f;
    memset(&f, 0, sizeof f);
    float *A = NULL;
    qsur_llama_spill *spill = NULL;
    int rc = qsur_llama_new_stored(&m, &o->cfg, err);
    if (!rc)
        rc = qsur_llama_spill_new(&spill, err);
    if (!rc)
        rc = qsur_llama_rotations_new(&r, &o->cfg, o->rot->w2 != NULL, o->rot->qk != NULL, o->opts.seed, err);
    if (!rc && (qsur_ostq_scratch_new(o, &f) != 0 ||
                !(A = malloc((size_t)qsur_ostq_linear_floats(o) * sizeof(float)))))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "ostquant fuse: out of memory");
    if (!rc && !(rc = fuse_vocab_into(o, &f, 0, m, spill, err)))
        rc = fuse_vocab_into(o, &f, 1, m, spill, err);
    if (m)
        for (int64_t j = 0; j < o->cfg.dim; j++)
            m->norm[j] = 1.0f;
    for (int l = 0; l < o->cfg.n_layers && !rc; l++)
        if (!(rc = fuse_block(o, &f, l, wspec, A, m, spill, err)))
            rc = qsur_progress_tick(prog, (double)(l + 1) / o->cfg.n_layers, "ostquant fuse", NAN, err);
    qsur_ostq_scratch_free(&f);
    free(A);
    if (!rc && !(rc = qsur_llama_spill_finish(spill, m, err)))
        spill = NULL; /* the model's now */
    if (m)
        qsur_llama_embed_sync(m);
    qsur_llama_spill_free(spill);
    if (rc) {
        qsur_llama_free(m);
        qsur_llama_rotations_free(r);
        return rc;
    }
    qsur_ostq_set_hooks(o, m, r);
    *model = m;
    *rot = r;
    return QSUR_OK;
}

int qsur_ostquant_fuse(const qsur_ostquant *o, qsur_llama **model, qsur_llama_rotations **rot, qsur_error *err)
{
    return qsur_ostquant_fuse_model(o, NULL, NULL, model, rot, err);
}

/* ---- chain rule --------------------------------------------------------------- */

/* For dst = (A R) diag(s): dls_j += sum_i dW_ij W_ij; dR += A^T (dW diag(s)).
 * dW is consumed (scaled in place). */
static void input_side_grad(const float *A, int64_t rows, int64_t d, const float *W, float *dW, const float *s,
                            float *dR, double *dls)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < d; j++) {
            dls[j] += (double)dW[i * d + j] * W[i * d + j];
            dW[i * d + j] *= s[j];
        }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)rows, 1.0f, A, (int)d, dW, (int)d,
                1.0f, dR, (int)d);
}

/* w = Z S (columns scaled): dls_j += sum_i dw_ij w_ij, dw <- dw S = dZ (in place). */
static void ud_grad(const float *w, float *dw, int64_t rows, int64_t cols, const float *s, double *dls)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            size_t at = (size_t)(i * cols + j);
            dls[j] += (double)dw[at] * w[at];
            dw[at] *= s[j];
        }
}

/* The q/k pair scales' part of the chain rule for wq (is_k 0) or wk (1): W the
 * fused rows, dW their gradient, turned into the gradient w.r.t. the rows
 * before the pair scaling (in place), Wpp the rows before it; dls += the
 * log-scale gradients. */
static void qk_rows_grad(const qsur_ostquant *o, const float *s, const float *W, float *dW, float *Wpp, double *dls,
                         int is_k)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size, rows = (int64_t)(is_k ? c->n_kv_heads : c->n_heads) * hs;
    int group = c->n_heads / c->n_kv_heads;
    for (int64_t r = 0; r < rows; r++) {
        int64_t kr = is_k ? r : (r / hs / group) * hs + r % hs, p = qk_index(o, kr);
        double dot = 0;
        for (int64_t j = 0; j < d; j++) {
            dot += (double)dW[r * d + j] * W[r * d + j];
            dW[r * d + j] = is_k ? dW[r * d + j] * s[p] : dW[r * d + j] / s[p];
            Wpp[r * d + j] = is_k ? W[r * d + j] / s[p] : W[r * d + j] * s[p];
        }
        dls[p] += is_k ? dot : -dot;
    }
}

/* wv' = S_o^-1 R_g^T wv''_g with wv'' = A_v R S_a (sov_code: R_g^T S_o^-1 wv''_g). */
static void wv_grad(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, const float *A, const float *W,
                    float *dW, float *dR, double *d_r_ov, double *d_ls)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, kv = c->kv_dim, hs = c->head_size;
    const float *sa = f->s + qsur_ostq_ls_attn(o, l), *so = f->s + qsur_ostq_ls_ov(o, l);
    double *dov = d_ls + qsur_ostq_ls_ov(o, l);
    float *vpp = f->tmp, *dvpp = f->tmp2;
    input_side(A, kv, d, f->R, sa, vpp);
    for (int gg = 0; gg < c->n_kv_heads; gg++) {
        const float *Rg = f->Rov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
        double *dRg = d_r_ov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
        if (o->opts.sov_code) {
            /* wv' = R_g^T Z, Z = S_o^-1 wv''_g: dR_g += Z dwv'^T, dZ = R_g dwv',
             * dls_i -= sum_j dZ_ij Z_ij, dwv''_g = S_o^-1 dZ */
            const float *vg = vpp + (size_t)gg * hs * d;
            float *z = dvpp + (size_t)gg * hs * d;
            for (int64_t i = 0; i < hs; i++)
                for (int64_t j = 0; j < d; j++)
                    z[i * d + j] = vg[i * d + j] / so[gg * hs + i];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)hs, (int)hs, (int)d, 1.0f, z, (int)d,
                        dW + (size_t)gg * hs * d, (int)d, 0.0f, f->dRov, (int)hs);
            for (int64_t i = 0; i < hs * hs; i++)
                dRg[i] += f->dRov[i];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)hs, (int)d, (int)hs, 1.0f, Rg, (int)hs,
                        dW + (size_t)gg * hs * d, (int)d, 0.0f, z, (int)d);
            for (int64_t i = 0; i < hs; i++)
                for (int64_t j = 0; j < d; j++) {
                    dov[gg * hs + i] -= (double)z[i * d + j] * vg[i * d + j] / so[gg * hs + i];
                    z[i * d + j] /= so[gg * hs + i];
                }
            continue;
        }
        for (int64_t i = 0; i < hs; i++)
            for (int64_t j = 0; j < d; j++) {
                size_t at = ((size_t)gg * hs + i) * d + (size_t)j;
                dov[gg * hs + i] -= (double)dW[at] * W[at];
                dW[at] = dW[at] / so[gg * hs + i]; /* dZ, Z = R_g^T wv''_g */
            }
        /* dR_g += wv''_g dZ^T;  dwv''_g = R_g dZ */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)hs, (int)hs, (int)d, 1.0f, vpp + (size_t)gg * hs * d,
                    (int)d, dW + (size_t)gg * hs * d, (int)d, 0.0f, f->dRov, (int)hs);
        for (int64_t i = 0; i < hs * hs; i++)
            dRg[i] += f->dRov[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)hs, (int)d, (int)hs, 1.0f, Rg, (int)hs,
                    dW + (size_t)gg * hs * d, (int)d, 0.0f, dvpp + (size_t)gg * hs * d, (int)d);
    }
    input_side_grad(A, kv, d, vpp, dvpp, sa, dR, d_ls + qsur_ostq_ls_attn(o, l));
}

/* sov_train: wo'_h = Y_h R_g with Y = R^T B, B = S_row A (fuse_wo_train_code):
 * dR_g += Y_h^T dwo'_h, dY_h = dwo'_h R_g^T, dB = R dY, dR += B dY^T,
 * dls of row i's scale += sum_j dB_ij B_ij. dW is consumed. */
static void wo_grad_train_code(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, const float *A, float *dW,
                               float *dR, double *d_r_ov, double *d_ls)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    int group = c->n_heads / c->n_kv_heads;
    const float *so = f->s + qsur_ostq_ls_ov(o, l);
    double *dov = d_ls + qsur_ostq_ls_ov(o, l);
    float *B = f->tmp, *Y = f->tmp2, *dY = dW; /* dY overwrites dW head block by head block below */
    sov_scale_rows(o, so, A, B);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0f, f->R, (int)d, B, (int)d, 0.0f,
                Y, (int)d);
    for (int h = 0; h < c->n_heads; h++) {
        int gg = h / group;
        const float *Rg = f->Rov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
        double *dRg = d_r_ov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)hs, (int)hs, (int)d, 1.0f, Y + (size_t)h * hs,
                    (int)d, dW + (size_t)h * hs, (int)d, 0.0f, f->dRov, (int)hs);
        for (int64_t i = 0; i < hs * hs; i++)
            dRg[i] += f->dRov[i];
        /* dY_h = dwo'_h R_g^T into Y's block (Y_h is dead now), then back to dW */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)hs, (int)hs, 1.0f, dW + (size_t)h * hs,
                    (int)d, Rg, (int)hs, 0.0f, Y + (size_t)h * hs, (int)d);
    }
    memcpy(dY, Y, (size_t)(d * d) * sizeof(float));
    /* dR += B dY^T; dB = R dY (into Y) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)d, 1.0f, B, (int)d, dY, (int)d, 1.0f,
                dR, (int)d);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0f, f->R, (int)d, dY, (int)d,
                0.0f, Y, (int)d);
    for (int64_t i = 0; i < d; i++) {
        double acc = 0;
        for (int64_t j = 0; j < d; j++)
            acc += (double)Y[i * d + j] * B[i * d + j];
        dov[sov_index(o, i)] += acc;
    }
}

/* wo'_h = Y_h R_g S_g with Y = R^T wo (A) (sov_code: Y_h S_g R_g). */
static void wo_grad(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, const float *A, const float *W,
                    float *dW, float *dR, double *d_r_ov, double *d_ls)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hs = c->head_size;
    int group = c->n_heads / c->n_kv_heads;
    const float *so = f->s + qsur_ostq_ls_ov(o, l);
    double *dov = d_ls + qsur_ostq_ls_ov(o, l);
    float *Y = f->tmp, *dY = f->tmp2;
    if (o->opts.sov_train) {
        wo_grad_train_code(o, f, l, A, dW, dR, d_r_ov, d_ls);
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0f, f->R, (int)d, A, (int)d, 0.0f,
                Y, (int)d);
    for (int h = 0; h < c->n_heads; h++) {
        int gg = h / group;
        const float *Rg = f->Rov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
        double *dRg = d_r_ov + ((size_t)l * c->n_kv_heads + gg) * hs * hs;
        if (o->opts.sov_code) {
            /* wo'_h = U R_g, U = Y_h S_g (Y_h scaled in place: only head h
             * reads it): dR_g += U^T dwo'_h, dU = dwo'_h R_g^T,
             * dls_j += sum_i dU_ij U_ij, dY_h = dU S_g */
            float *U = Y + (size_t)h * hs, *dU = dY + (size_t)h * hs;
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j < hs; j++)
                    U[i * d + j] *= so[gg * hs + j];
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)hs, (int)hs, (int)d, 1.0f, U, (int)d,
                        dW + (size_t)h * hs, (int)d, 0.0f, f->dRov, (int)hs);
            for (int64_t i = 0; i < hs * hs; i++)
                dRg[i] += f->dRov[i];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)hs, (int)hs, 1.0f, dW + (size_t)h * hs,
                        (int)d, Rg, (int)hs, 0.0f, dU, (int)d);
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = 0; j < hs; j++) {
                    dov[gg * hs + j] += (double)dU[i * d + j] * U[i * d + j];
                    dU[i * d + j] *= so[gg * hs + j];
                }
            continue;
        }
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < hs; j++) {
                size_t at = (size_t)i * d + (size_t)h * hs + (size_t)j;
                dov[gg * hs + j] += (double)dW[at] * W[at];
                dW[at] = dW[at] * so[gg * hs + j]; /* dU_h, U_h = Y_h R_g */
            }
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)hs, (int)hs, (int)d, 1.0f, Y + (size_t)h * hs,
                    (int)d, dW + (size_t)h * hs, (int)d, 0.0f, f->dRov, (int)hs);
        for (int64_t i = 0; i < hs * hs; i++)
            dRg[i] += f->dRov[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)hs, (int)hs, 1.0f, dW + (size_t)h * hs,
                    (int)d, Rg, (int)hs, 0.0f, dY + (size_t)h * hs, (int)d);
    }
    /* Y = R^T wo: dR += wo dY^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)d, 1.0f, A, (int)d, dY, (int)d, 1.0f,
                dR, (int)d);
}

/* w2' = (Z S_u) H with Z = R^T w2: d(ZS) = dw2' H^T, ZS = w2' H^T;
 * code_smooth: w2' = (Z H) S_u: d(ZH) = dw2' S_u, dZ = d(ZH) H^T;
 * weight-only code_smooth: w2' = (Z H) S_u H^T: (ZH) S_u = w2' H and
 * its gradient dw2' H, then as before. */
static int w2_grad(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, const float *A, const float *W,
                   const float *dW, float *dR, double *d_ls, qsur_error *err)
{
    int64_t d = o->cfg.dim, hd = o->cfg.hidden_dim;
    const float *su = f->s + qsur_ostq_ls_ud(o, l);
    double *dud = d_ls + qsur_ostq_ls_ud(o, l);
    float *zs = f->tmp, *dzs = f->tmp2;
    int code = o->opts.code_smooth, rc = QSUR_OK;
    memcpy(zs, W, (size_t)(d * hd) * sizeof(float));
    memcpy(dzs, dW, (size_t)(d * hd) * sizeof(float));
    if (o->ud_had && !(rc = qsur_hadamard_plan_apply(o->ud_had, zs, d, NULL, err)))
        rc = qsur_hadamard_plan_apply(o->ud_had, dzs, d, NULL, err);
    if (code)
        ud_grad(zs, dzs, d, hd, su, dud);
    if (!rc && o->rot->w2 && !code) /* no online w2 rotation in a weight-only run: H = I */
        rc = qsur_hadamard_plan_apply_transpose(o->rot->w2, zs, d, NULL, err);
    if (!rc && (o->rot->w2 || o->ud_had))
        rc = qsur_hadamard_plan_apply_transpose(o->rot->w2 ? o->rot->w2 : o->ud_had, dzs, d, NULL, err);
    if (rc)
        return rc;
    if (!code)
        ud_grad(zs, dzs, d, hd, su, dud);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)d, (int)d, (int)hd, 1.0f, A, (int)hd, dzs, (int)hd,
                1.0f, dR, (int)d);
    return QSUR_OK;
}

int qsur_ostq_chain_linear(const qsur_ostquant *o, const qsur_ostq_scratch *f, int l, int i, const float *A,
                           const float *W, float *dW, float *dR, double *d_r_ov, double *d_ls, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, hd = c->hidden_dim, kv = c->kv_dim;
    const float *sa = f->s + qsur_ostq_ls_attn(o, l), *sf = f->s + qsur_ostq_ls_ffn(o, l);
    const float *su = f->s + qsur_ostq_ls_ud(o, l);
    double *da = d_ls + qsur_ostq_ls_attn(o, l), *dff = d_ls + qsur_ostq_ls_ffn(o, l);
    double *dud = d_ls + qsur_ostq_ls_ud(o, l);
    int qk = o->opts.learn_qk;
    switch (i) {
    case QSUR_OSTQ_WQ:
    case QSUR_OSTQ_WK: {
        /* with S_qk: wq' = wq'' / s (rows), wk' = wk'' s; the rest of the
         * chain sees wq'', wk'' (in f->tmp2) and their gradients */
        int is_k = i == QSUR_OSTQ_WK;
        if (qk)
            qk_rows_grad(o, f->s + qsur_ostq_ls_qk(o, l), W, dW, f->tmp2, d_ls + qsur_ostq_ls_qk(o, l), is_k);
        input_side_grad(A, is_k ? kv : d, d, qk ? f->tmp2 : W, dW, sa, dR, da);
        return QSUR_OK;
    }
    case QSUR_OSTQ_WV:
        wv_grad(o, f, l, A, W, dW, dR, d_r_ov, d_ls);
        return QSUR_OK;
    case QSUR_OSTQ_WO:
        wo_grad(o, f, l, A, W, dW, dR, d_r_ov, d_ls);
        return QSUR_OK;
    case QSUR_OSTQ_W1: /* w1' = A1 R S_f */
        input_side_grad(A, hd, d, W, dW, sf, dR, dff);
        return QSUR_OK;
    case QSUR_OSTQ_W3: { /* w3' = S_u^-1 A3 R S_f */
        float *w3pp = f->tmp;
        for (int64_t r = 0; r < hd; r++)
            for (int64_t j = 0; j < d; j++) {
                size_t at = (size_t)(r * d + j);
                dud[r] -= (double)dW[at] * W[at];
                dW[at] = dW[at] / su[r];
                w3pp[at] = W[at] * su[r];
            }
        input_side_grad(A, hd, d, w3pp, dW, sf, dR, dff);
        return QSUR_OK;
    }
    default:
        return w2_grad(o, f, l, A, W, dW, dR, d_ls, err);
    }
}

void qsur_ostq_chain_norms(const qsur_ostquant *o, int l, const float *attn, const float *ffn, const float *d_attn,
                           const float *d_ffn, double *d_ls)
{
    double *da = d_ls + qsur_ostq_ls_attn(o, l), *dff = d_ls + qsur_ostq_ls_ffn(o, l);
    for (int64_t j = 0; j < o->cfg.dim; j++) {
        da[j] -= (double)d_attn[j] * attn[j];
        dff[j] -= (double)d_ffn[j] * ffn[j];
    }
}

void qsur_ostq_chain_rows(const qsur_ostquant *o, const float *F, const float *dF, int64_t n, float *dR)
{
    int d = o->cfg.dim;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, (int)n, 1.0f, F, d, dF, d, 1.0f, dR, d);
}

/* The whole model's chain rule from the gradients of a float fused model (the
 * finite-difference tests' entry; training goes linear by linear). */
int qsur_ostquant_param_grads(const qsur_ostquant *o, const qsur_llama *fm, const qsur_llama_grads *g,
                              double *d_r_res, double *d_r_ov, double *d_ls, qsur_error *err)
{
    const qsur_llama_config *c = &o->cfg;
    int64_t d = c->dim, V = c->vocab_size;
    qsur_ostq_scratch f;
    float *dR = calloc((size_t)(d * d), sizeof(float));
    float *A = malloc((size_t)qsur_ostq_linear_floats(o) * sizeof(float));
    float *dW = malloc((size_t)qsur_ostq_linear_floats(o) * sizeof(float));
    int rc = qsur_ostq_scratch_new(o, &f) != 0 || !dR || !A || !dW
                 ? qsur_fail(err, QSUR_ERR_NOMEM, "ostquant gradients: out of memory")
                 : QSUR_OK;
    if (!rc) {
        memset(d_ls, 0, (size_t)o->n_ls * sizeof(double));
        memset(d_r_ov, 0, (size_t)qsur_ostq_r_ov_size(o) * sizeof(double));
        /* E' = E R, C' = C R: dR += E^T dE' + C^T dC' */
        for (int which = 0; which < 2; which++)
            for (int64_t r0 = 0; r0 < V; r0 += f.vrows) {
                int64_t r1 = r0 + f.vrows < V ? r0 + f.vrows : V;
                qsur_ostq_folded_vocab(o, which, r0, r1, f.vbuf);
                qsur_ostq_chain_rows(o, f.vbuf, (which ? g->d_output : g->d_tok_embeddings) + r0 * d, r1 - r0, dR);
            }
    }
    for (int l = 0; l < c->n_layers && !rc; l++) {
        const qsur_llama_layer *L = &fm->layers[l];
        const qsur_llama_layer_grads *G = &g->layers[l];
        qsur_ostq_chain_norms(o, l, L->attention_norm, L->ffn_norm, G->d_attention_norm, G->d_ffn_norm, d_ls);
        /* the order of the fusion: wq wk wv wo w1 w3 w2 */
        static const int order[7] = {QSUR_OSTQ_WQ, QSUR_OSTQ_WK, QSUR_OSTQ_WV, QSUR_OSTQ_WO,
                                     QSUR_OSTQ_W1, QSUR_OSTQ_W3, QSUR_OSTQ_W2};
        const float *dws[7] = {G->d_wq, G->d_wk, G->d_wv, G->d_wo, G->d_w1, G->d_w2, G->d_w3};
        for (int k = 0; k < 7 && !rc; k++) {
            int i = order[k];
            const qsur_llama_linear *lin = qsur_llama_linear_at((qsur_llama *)fm, 7 * l + i);
            qsur_ostq_folded(o, l, i, A);
            memcpy(dW, dws[i], (size_t)(lin->rows * lin->cols) * sizeof(float));
            rc = qsur_ostq_chain_linear(o, &f, l, i, A, lin->w, dW, dR, d_r_ov, d_ls, err);
        }
    }
    if (!rc)
        for (int64_t i = 0; i < d * d; i++)
            d_r_res[i] = dR[i];
    qsur_ostq_scratch_free(&f);
    free(dR);
    free(A);
    free(dW);
    return rc;
}
