/* The model store (qsur/llama_store.h): reading a linear's weights in any of
 * its forms, copy-on-write into float, storing back in the file's dtype, and
 * packed quantized codes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "qsur/half.h"
#include "qsur/llama.h"
#include "qsur/llama_store.h"
#include "qsur/safetensors.h"

/* Row r of the Meta order lives at this row of the stored data: HF stores
 * the rows of each q/k head as (c * hs/2 + i) for Meta's (2i + c). */
static int64_t stored_row(const qsur_llama_linear *l, int64_t r)
{
    int heads = l->st.rope_heads;
    if (heads <= 0)
        return r;
    int64_t hs = l->rows / heads, half = hs / 2, h = r / hs, k = r % hs;
    return h * hs + (k % 2) * half + k / 2;
}

static void convert_row(const void *src, int dtype, int64_t n, float *dst)
{
    if (dtype == QSUR_DTYPE_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
        return;
    }
    const unsigned char *b = src;
    if (dtype == QSUR_DTYPE_BF16) {
        /* bf16 is the top half of a float32: widening is exact, NaN stays NaN
         * (the loop vectorizes; qsur_bf16_to_f32 does the same per call) */
        uint32_t *o = (uint32_t *)dst;
        for (int64_t j = 0; j < n; j++) {
            uint16_t h;
            memcpy(&h, b + 2 * j, 2); /* mapped data need not be 2-byte aligned */
            o[j] = (uint32_t)h << 16;
        }
        return;
    }
    for (int64_t j = 0; j < n; j++) {
        uint16_t h;
        memcpy(&h, b + 2 * j, 2);
        dst[j] = qsur_f16_to_f32(h);
    }
}

void qsur_llama_linear_read_rows(const qsur_llama_linear *l, int64_t r0, int64_t r1, float *dst)
{
    int64_t n = l->cols;
    if (l->w) {
        memcpy(dst, l->w + r0 * n, (size_t)((r1 - r0) * n) * sizeof(float));
        return;
    }
    size_t es = (size_t)qsur_dtype_size((qsur_dtype)l->st.dtype);
    const unsigned char *base = l->st.data;
    for (int64_t r = r0; r < r1; r++)
        convert_row(base + (size_t)stored_row(l, r) * (size_t)n * es, l->st.dtype, n,
                    dst + (r - r0) * n);
}

static uint8_t code_at(const qsur_llama_packed *p, int64_t i)
{
    if (p->spec.bits <= 4)
        return (uint8_t)((p->codes[i >> 1] >> ((i & 1) * 4)) & 15);
    return p->codes[i];
}

void qsur_llama_linear_forward_rows(const qsur_llama_linear *l, int64_t r0, int64_t r1,
                                    float *dst)
{
    int64_t n = l->cols;
    if (l->qp) {
        const qsur_llama_packed *p = l->qp;
        int64_t G = p->spec.gran == QSUR_GRAN_GROUP ? p->spec.group : n;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t c0 = 0; c0 < n; c0 += G) {
                const qsur_qparams *q = p->spec.gran == QSUR_GRAN_TENSOR ? p->params
                                      : p->spec.gran == QSUR_GRAN_ROW ? p->params + r
                                      : p->params + r * p->groups + c0 / G;
                float *o = dst + (r - r0) * n;
                for (int64_t c = c0; c < c0 + G; c++) {
                    float code = (float)code_at(p, r * n + c) + q->lo;
                    o[c] = (code - q->zero) * q->scale; /* = qsur_qparams_value */
                }
            }
        return;
    }
    if (l->wq) {
        memcpy(dst, l->wq + r0 * n, (size_t)((r1 - r0) * n) * sizeof(float));
        return;
    }
    qsur_llama_linear_read_rows(l, r0, r1, dst);
}

const float *qsur_llama_linear_f32(const qsur_llama_linear *l)
{
    if (l->qp)
        return NULL;
    if (l->wq || l->w)
        return l->wq ? l->wq : l->w;
    if (l->st.data && l->st.dtype == QSUR_DTYPE_F32 && l->st.rope_heads == 0 &&
        (uintptr_t)l->st.data % sizeof(float) == 0)
        return l->st.data;
    return NULL;
}

const float *qsur_llama_linear_weights(const qsur_llama_linear *l, float *scratch)
{
    if (l->w)
        return l->w;
    qsur_llama_linear_read_rows(l, 0, l->rows, scratch);
    return scratch;
}

int qsur_llama_linear_weights_alloc(const qsur_llama_linear *l, const float **view, float **tmp,
                                    qsur_error *err)
{
    *tmp = NULL;
    if (l->w) {
        *view = l->w;
        return QSUR_OK;
    }
    *tmp = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float));
    if (!*tmp)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate %lldx%lld floats", l->name,
                         (long long)l->rows, (long long)l->cols);
    *view = qsur_llama_linear_weights(l, *tmp);
    return QSUR_OK;
}

int qsur_llama_linear_dtype(const qsur_llama_linear *l)
{
    return l->w || !l->st.data ? QSUR_DTYPE_F32 : l->st.dtype;
}

/* Pages of a mapped linear that became owned leave the process: they stay
 * in the file (and the page cache), and reading the stored form again (an
 * edit journal putting it back) faults them in. Only whole pages inside the
 * tensor: its neighbours in the file may still be in use. Without this, a
 * whole-model edit of a mapped checkpoint counts the file once more in its
 * resident set. */
static void release_pages(const void *data, int64_t bytes)
{
    uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)data + pg - 1) & ~(pg - 1), b = ((uintptr_t)data + (uintptr_t)bytes) & ~(pg - 1);
    if (pg > 0 && b > a)
        madvise((void *)a, b - a, MADV_DONTNEED);
}

void qsur_llama_mapping_adopt(qsur_llama *m, struct qsur_llama_mapping *mp)
{
    m->mapping = mp;
}

int qsur_llama_mapping_adopt_file(qsur_llama *m, void *file, void (*close)(void *file),
                                  const qsur_mapped_file *(*map)(const void *file), qsur_error *err)
{
    struct qsur_llama_mapping *mp = calloc(1, sizeof *mp);
    void **files = malloc(sizeof *files);
    if (!mp || !files) {
        free(mp), free(files);
        return qsur_fail(err, QSUR_ERR_NOMEM, "model: out of memory");
    }
    files[0] = file;
    mp->count = 1;
    mp->files = files;
    mp->close = close;
    mp->map = map;
    qsur_llama_mapping_adopt(m, mp);
    return QSUR_OK;
}

void qsur_llama_linear_release_pages(const qsur_llama_linear *l)
{
    if (!l->w && l->st.data && !l->st.owned && l->st.in_file)
        release_pages(l->st.data, l->rows * l->cols * qsur_dtype_size((qsur_dtype)l->st.dtype));
}

static void stored_release(qsur_llama_linear *l)
{
    /* Only bytes in a file mapping: st.owned NULL also means a view borrowing
     * another linear's bytes (a tied classifier over owned embeddings), whose
     * heap pages must stay. */
    int64_t bytes = l->rows * l->cols * qsur_dtype_size((qsur_dtype)l->st.dtype);
    if (l->st.data && !l->st.owned && l->st.in_file)
        release_pages(l->st.data, bytes);
    l->st.in_file = 0;
    free(l->st.owned);
    l->st.owned = NULL;
    l->st.data = NULL;
    l->st.rope_heads = 0;
}

int qsur_llama_linear_own(qsur_llama_linear *l, qsur_error *err)
{
    if (l->w)
        return QSUR_OK;
    float *w = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float));
    if (!w)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate %lldx%lld floats to edit it",
                         l->name, (long long)l->rows, (long long)l->cols);
    if (l->st.data)
        qsur_llama_linear_read_rows(l, 0, l->rows, w);
    else
        memset(w, 0, (size_t)(l->rows * l->cols) * sizeof(float));
    stored_release(l);
    l->w = w;
    return QSUR_OK;
}

int qsur_llama_own_all(qsur_llama *m, qsur_error *err)
{
    int rc = qsur_llama_embed_own(m, err);
    for (int i = 0; i < qsur_llama_linear_count(m) && !rc; i++)
        rc = qsur_llama_linear_own(qsur_llama_linear_at(m, i), err);
    if (!rc && !m->cfg.shared_classifier)
        rc = qsur_llama_linear_own(&m->output, err);
    return rc;
}

int qsur_llama_linear_store_back(qsur_llama_linear *l, int dtype, qsur_error *err)
{
    if (!l->w || dtype == QSUR_DTYPE_F32)
        return QSUR_OK;
    if (dtype != QSUR_DTYPE_F16 && dtype != QSUR_DTYPE_BF16)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: cannot store weights as %s", l->name,
                         qsur_dtype_name((qsur_dtype)dtype));
    int64_t n = l->rows * l->cols;
    uint16_t *h = qsur_alloc((size_t)n, sizeof *h);
    if (!h)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate %lld halves", l->name,
                         (long long)n);
    for (int64_t i = 0; i < n; i++)
        h[i] = dtype == QSUR_DTYPE_BF16 ? qsur_f32_to_bf16(l->w[i]) : qsur_f32_to_f16(l->w[i]);
    free(l->w);
    l->w = NULL;
    l->st.dtype = dtype;
    l->st.data = l->st.owned = h;
    l->st.in_file = 0;
    l->st.rope_heads = 0;
    return QSUR_OK;
}

int qsur_llama_linear_edit_begin(qsur_llama_linear *l, int *dtype, qsur_error *err)
{
    *dtype = qsur_llama_linear_dtype(l);
    return qsur_llama_linear_own(l, err);
}

int qsur_llama_linear_edit_end(qsur_llama_linear *l, int dtype, qsur_error *err)
{
    qsur_llama_linear_drop_quant(l);
    return qsur_llama_linear_store_back(l, dtype, err);
}

/* ---- token embeddings ----------------------------------------------------- */

void qsur_llama_embed_rows(const qsur_llama *m, const int *tokens, int64_t n, float *dst)
{
    int64_t d = m->cfg.dim;
    for (int64_t i = 0; i < n; i++)
        qsur_llama_linear_read_rows(&m->embed, tokens[i], tokens[i] + 1, dst + i * d);
}

void qsur_llama_embed_sync(qsur_llama *m)
{
    m->tok_embeddings = m->embed.w;
    if (!m->cfg.shared_classifier)
        return;
    /* the tied classifier borrows: output.st.owned stays NULL so that only
     * embed frees the bytes */
    m->output.w = m->embed.w;
    m->output.st = m->embed.st;
    m->output.st.owned = NULL;
    if (m->embed.w)
        m->output.st.data = NULL;
}

int qsur_llama_embed_own(qsur_llama *m, qsur_error *err)
{
    if (m->embed.w)
        return QSUR_OK;
    int rc = qsur_llama_linear_own(&m->embed, err);
    if (!rc)
        qsur_llama_embed_sync(m);
    return rc;
}

/* ---- packed quantized weights ------------------------------------------ */

void qsur_llama_packed_free(qsur_llama_packed *p)
{
    if (!p)
        return;
    free(p->params);
    free(p->codes);
    free(p);
}

/* Packs qw's codes; NULL on out of memory. */
static qsur_llama_packed *pack(const qsur_qweight *qw)
{
    qsur_llama_packed *p = calloc(1, sizeof *p);
    int64_t n = qw->rows * qw->cols;
    size_t bytes = qw->spec.bits <= 4 ? (size_t)(n + 1) / 2 : (size_t)n;
    if (!p)
        return NULL;
    p->spec = qw->spec;
    p->rows = qw->rows, p->cols = qw->cols, p->groups = qw->groups, p->nparams = qw->nparams;
    p->params = malloc((size_t)qw->nparams * sizeof *p->params);
    p->codes = qsur_alloc(bytes, 1);
    if (!p->params || !p->codes) {
        qsur_llama_packed_free(p);
        return NULL;
    }
    memcpy(p->params, qw->params, (size_t)qw->nparams * sizeof *p->params);
    memset(p->codes, 0, bytes);
    for (int64_t r = 0; r < qw->rows; r++)
        for (int64_t c = 0; c < qw->cols; c++) {
            int64_t i = r * qw->cols + c;
            uint8_t u = (uint8_t)((float)qw->codes[i] - qsur_qweight_map(qw, r, c)->lo);
            if (qw->spec.bits <= 4)
                p->codes[i >> 1] |= (uint8_t)(u << ((i & 1) * 4));
            else
                p->codes[i] = u;
        }
    return p;
}

static void set_packed(qsur_llama_linear *l, qsur_llama_packed *p)
{
    qsur_llama_linear_drop_quant(l);
    l->qp = p;
}

int qsur_llama_linear_quant_rtn(qsur_llama_linear *l, const qsur_quant_spec *spec,
                                qsur_error *err)
{
    const float *w = NULL;
    float *tmp = NULL;
    qsur_qweight *qw = NULL;
    int rc = qsur_quant_validate(spec, l->cols, err);
    if (!rc)
        rc = qsur_llama_linear_weights_alloc(l, &w, &tmp, err);
    if (rc)
        return rc;
    if (!(rc = qsur_qweight_new(&qw, spec, l->rows, l->cols, err)) &&
        !(rc = qsur_qweight_fit_rtn(qw, w, err))) {
        qsur_qweight_encode(qw, w);
        qsur_llama_packed *p = pack(qw);
        if (!p)
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate packed codes", l->name);
        else
            set_packed(l, p);
    }
    qsur_qweight_free(qw);
    free(tmp);
    return rc;
}

/* A qweight whose decode equals Q bit for bit (maps fitted by RTN on `fit`),
 * or NULL. */
static qsur_qweight *grid_of(const qsur_llama_linear *l, const float *fit, const float *Q,
                             const qsur_quant_spec *spec, float *dec)
{
    qsur_qweight *qw = NULL;
    qsur_error ig;
    if (qsur_qweight_new(&qw, spec, l->rows, l->cols, &ig) || qsur_qweight_fit_rtn(qw, fit, &ig)) {
        qsur_qweight_free(qw);
        return NULL;
    }
    qsur_qweight_encode(qw, Q);
    qsur_qweight_decode(qw, dec);
    if (memcmp(dec, Q, (size_t)(l->rows * l->cols) * sizeof(float)) != 0) {
        qsur_qweight_free(qw);
        return NULL;
    }
    return qw;
}

int qsur_llama_linear_set_quant_qw(qsur_llama_linear *l, const float *Q, const qsur_qweight *qw,
                                   qsur_error *err)
{
    size_t n = (size_t)(l->rows * l->cols);
    float *dec = qsur_alloc(n, sizeof(float));
    if (dec && qw->rows == l->rows && qw->cols == l->cols) {
        qsur_qweight_decode(qw, dec);
        if (memcmp(dec, Q, n * sizeof(float)) == 0) {
            qsur_llama_packed *p = pack(qw);
            free(dec);
            if (!p)
                return qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate packed codes", l->name);
            set_packed(l, p);
            return QSUR_OK;
        }
    }
    free(dec);
    return qsur_llama_linear_set_quant(l, Q, &qw->spec, err);
}

int qsur_llama_linear_set_quant(qsur_llama_linear *l, const float *Q, const qsur_quant_spec *spec,
                                qsur_error *err)
{
    size_t n = (size_t)(l->rows * l->cols);
    if (spec->bits >= 2 && spec->bits <= 8 && qsur_quant_validate(spec, l->cols, NULL) == QSUR_OK) {
        const float *w = NULL;
        float *tmp = NULL, *dec = qsur_alloc(n, sizeof(float));
        if (dec && qsur_llama_linear_weights_alloc(l, &w, &tmp, err) == QSUR_OK) {
            qsur_qweight *qw = grid_of(l, w, Q, spec, dec);
            if (!qw)
                qw = grid_of(l, Q, Q, spec, dec);
            qsur_llama_packed *p = qw ? pack(qw) : NULL;
            qsur_qweight_free(qw);
            free(tmp);
            free(dec);
            if (p) {
                set_packed(l, p);
                return QSUR_OK;
            }
        } else {
            free(dec);
        }
    }
    float *copy = qsur_alloc(n, sizeof(float));
    if (!copy)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate quantized copy", l->name);
    memcpy(copy, Q, n * sizeof(float));
    qsur_llama_linear_drop_quant(l);
    l->wq = copy;
    return QSUR_OK;
}

int qsur_llama_linear_unpack(qsur_llama_linear *l, qsur_error *err)
{
    if (!l->qp)
        return QSUR_OK;
    float *q = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float));
    if (!q)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate quantized copy", l->name);
    qsur_llama_linear_forward_rows(l, 0, l->rows, q);
    qsur_llama_linear_drop_quant(l);
    l->wq = q;
    return QSUR_OK;
}

int qsur_llama_linear_is_quantized(const qsur_llama_linear *l)
{
    return l->qp != NULL || l->wq != NULL;
}

void qsur_llama_linear_drop_quant(qsur_llama_linear *l)
{
    free(l->wq);
    l->wq = NULL;
    qsur_llama_packed_free(l->qp);
    l->qp = NULL;
}

qsur_qweight *qsur_llama_linear_qweight(const qsur_llama_linear *l)
{
    const qsur_llama_packed *p = l->qp;
    qsur_qweight *qw = NULL;
    qsur_error ig;
    if (!p || qsur_qweight_new(&qw, &p->spec, p->rows, p->cols, &ig))
        return NULL;
    memcpy(qw->params, p->params, (size_t)p->nparams * sizeof *p->params);
    for (int64_t r = 0; r < p->rows; r++)
        for (int64_t c = 0; c < p->cols; c++)
            qw->codes[r * p->cols + c] =
                (int16_t)((float)code_at(p, r * p->cols + c) + qsur_qweight_map(qw, r, c)->lo);
    return qw;
}

/* ---- whole model --------------------------------------------------------- */

int qsur_llama_quant_stash_take(qsur_llama *m, qsur_llama_quant_stash *st, qsur_error *err)
{
    int n = qsur_llama_linear_count(m) + 1;
    st->n = n;
    st->wq = calloc((size_t)n, sizeof *st->wq);
    st->qp = calloc((size_t)n, sizeof *st->qp);
    if (!st->wq || !st->qp) {
        free(st->wq), free(st->qp);
        st->wq = NULL, st->qp = NULL, st->n = 0;
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        qsur_llama_linear *l = i < n - 1 ? qsur_llama_linear_at(m, i) : &m->output;
        st->wq[i] = l->wq, st->qp[i] = l->qp;
        l->wq = NULL, l->qp = NULL;
    }
    return QSUR_OK;
}

void qsur_llama_quant_stash_put(qsur_llama *m, qsur_llama_quant_stash *st)
{
    for (int i = 0; i < st->n; i++) {
        qsur_llama_linear *l = i < st->n - 1 ? qsur_llama_linear_at(m, i) : &m->output;
        qsur_llama_linear_drop_quant(l);
        l->wq = st->wq[i], l->qp = st->qp[i];
    }
    free(st->wq), free(st->qp);
    st->wq = NULL, st->qp = NULL, st->n = 0;
}

void qsur_llama_quant_stash_drop(qsur_llama *m, qsur_llama_quant_stash *st)
{
    for (int i = 0; i < st->n - 1; i++) {
        free(st->wq[i]);
        qsur_llama_packed_free(st->qp[i]);
    }
    if (st->n) {
        qsur_llama_linear_drop_quant(&m->output);
        m->output.wq = st->wq[st->n - 1];
        m->output.qp = st->qp[st->n - 1];
    }
    free(st->wq), free(st->qp);
    st->wq = NULL, st->qp = NULL, st->n = 0;
}

int qsur_llama_quant_undo_new(qsur_llama_quant_undo *u, qsur_llama *m, qsur_error *err)
{
    u->n = qsur_llama_linear_count(m);
    u->old = calloc((size_t)u->n, sizeof *u->old);
    u->oldp = calloc((size_t)u->n, sizeof *u->oldp);
    u->taken = calloc((size_t)u->n, 1);
    if (u->old && u->oldp && u->taken)
        return QSUR_OK;
    qsur_llama_quant_undo_end(u, m, 0);
    return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
}

void qsur_llama_quant_undo_take(qsur_llama_quant_undo *u, qsur_llama *m, int i)
{
    if (u->taken[i])
        return;
    qsur_llama_linear *l = qsur_llama_linear_at(m, i);
    u->old[i] = l->wq, u->oldp[i] = l->qp, u->taken[i] = 1;
    l->wq = NULL, l->qp = NULL;
}

void qsur_llama_quant_undo_end(qsur_llama_quant_undo *u, qsur_llama *m, int rc)
{
    for (int i = 0; u->taken && i < u->n; i++) {
        if (!u->taken[i])
            continue;
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        if (rc) {
            qsur_llama_linear_drop_quant(l);
            l->wq = u->old[i], l->qp = u->oldp[i];
        } else {
            free(u->old[i]);
            qsur_llama_packed_free(u->oldp[i]);
        }
    }
    free(u->old), free(u->oldp), free(u->taken);
    memset(u, 0, sizeof *u);
}

static void linear_use(const qsur_llama_linear *l, qsur_llama_memory *u)
{
    int64_t n = l->rows * l->cols;
    if (l->w)
        u->owned += n * (int64_t)sizeof(float);
    else if (l->st.data)
        *(l->st.owned ? &u->owned : &u->mapped) += n * qsur_dtype_size((qsur_dtype)l->st.dtype);
    if (l->wq)
        u->quantized += n * (int64_t)sizeof(float);
    if (l->qp)
        u->quantized += (l->qp->spec.bits <= 4 ? (n + 1) / 2 : n) +
                        l->qp->nparams * (int64_t)sizeof(qsur_qparams);
}

void qsur_llama_memory_use(const qsur_llama *m_in, qsur_llama_memory *u)
{
    qsur_llama *m = (qsur_llama *)m_in; /* linear_at only reads through it */
    memset(u, 0, sizeof *u);
    int64_t d = m->cfg.dim;
    u->owned = d * (2 * m->cfg.n_layers + 1) * (int64_t)sizeof(float);
    linear_use(&m->embed, u);
    for (int i = 0; i < qsur_llama_linear_count(m); i++)
        linear_use(qsur_llama_linear_at(m, i), u);
    if (!m->cfg.shared_classifier)
        linear_use(&m->output, u);
}

void qsur_llama_mapping_free(struct qsur_llama_mapping *mp)
{
    if (!mp)
        return;
    for (int i = 0; i < mp->count; i++)
        mp->close(mp->files[i]);
    free(mp->files);
    free(mp);
}
