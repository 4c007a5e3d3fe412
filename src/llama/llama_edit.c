/* A whole-model edit with a way back (qsur/llama_edit.h): old bytes go to an
 * unlinked temporary file as they are first about to change. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include "qsur/llama_edit.h"
#include "qsur/llama_store.h"
#include "qsur/safetensors.h"

typedef struct {
    qsur_llama_linear *l;
    qsur_llama_linear saved; /* the struct as it was; w, st.owned and wq are in the file */
    int64_t w_at, st_at, wq_at; /* file offsets, -1: not spilled */
} lin_entry;

typedef struct {
    float *p;
    int64_t n, at;
} float_entry;

struct qsur_llama_edit {
    qsur_llama *m;
    int shared_classifier;
    qsur_llama_hooks hooks;
    const qsur_progress *prog;
    double lo, hi;
    FILE *spill;
    int64_t spilled, kept; /* bytes in the file, bytes of quantized forms in memory */
    lin_entry *lins;
    int nlins, caplins;
    float_entry *floats;
    int nfloats, capfloats;
    int gpu; /* qsur_llama_edit_use_gpu */
};

void qsur_llama_edit_use_gpu(qsur_llama_edit *e, int on)
{
    if (e)
        e->gpu = on != 0;
}

int qsur_llama_edit_gpu(const qsur_llama_edit *e)
{
    return e ? e->gpu : 0;
}

int qsur_llama_edit_new(qsur_llama_edit **out, qsur_llama *m, const qsur_progress *prog,
                        qsur_error *err)
{
    *out = NULL;
    qsur_llama_edit *e = calloc(1, sizeof *e);
    if (!e)
        return qsur_fail(err, QSUR_ERR_NOMEM, "model edit: out of memory");
    e->m = m;
    e->shared_classifier = m->cfg.shared_classifier;
    e->hooks = m->hooks;
    e->prog = prog;
    e->hi = 1.0;
    *out = e;
    return QSUR_OK;
}

void qsur_llama_edit_range(qsur_llama_edit *e, double lo, double hi)
{
    if (!e)
        return;
    e->lo = lo;
    e->hi = hi;
}

int qsur_llama_edit_tick(qsur_llama_edit *e, double done, const char *what, qsur_error *err)
{
    if (!e)
        return QSUR_OK;
    return qsur_progress_tick(e->prog, e->lo + done * (e->hi - e->lo), what, NAN, err);
}

int64_t qsur_llama_edit_bytes(const qsur_llama_edit *e)
{
    return e ? e->spilled + e->kept : 0;
}

/* Appends bytes to the temporary file; *at receives their offset. */
static int spill(qsur_llama_edit *e, const void *p, int64_t bytes, int64_t *at, qsur_error *err)
{
    if (!e->spill && !(e->spill = tmpfile()))
        return qsur_fail(err, QSUR_ERR_IO, "model edit: cannot create a temporary file for the "
                         "undo journal (TMPDIR)");
    if (fseeko(e->spill, 0, SEEK_END) != 0 ||
        fwrite(p, 1, (size_t)bytes, e->spill) != (size_t)bytes || fflush(e->spill) != 0)
        return qsur_fail(err, QSUR_ERR_IO, "model edit: cannot write %lld bytes to the undo "
                         "journal (disk full?)", (long long)bytes);
    *at = e->spilled;
    e->spilled += bytes;
    return QSUR_OK;
}

static int read_back(qsur_llama_edit *e, int64_t at, void *p, int64_t bytes, qsur_error *err)
{
    if (fseeko(e->spill, (off_t)at, SEEK_SET) != 0 ||
        fread(p, 1, (size_t)bytes, e->spill) != (size_t)bytes)
        return qsur_fail(err, QSUR_ERR_IO, "model edit: cannot read the undo journal back: the "
                         "model is unusable, load it again");
    return QSUR_OK;
}

static int grow(void **arr, int *cap, int n, size_t size)
{
    if (n < *cap)
        return 0;
    int c = *cap ? 2 * *cap : 16;
    void *a = realloc(*arr, (size_t)c * size);
    if (!a)
        return -1;
    *arr = a;
    *cap = c;
    return 0;
}

/* l borrows the embeddings' bytes now: a tied classifier, float (output.w ==
 * embed.w) or stored (output.st a view of embed.st, st.owned NULL). Only the
 * embeddings spill or free them. Asked before the embeddings are put back
 * (undo restores in reverse order, the tie flag last): while tied, the
 * classifier's pointers may name the embeddings' replaced buffers. */
static int borrowed(const qsur_llama *m, const qsur_llama_linear *l)
{
    if (l == &m->embed)
        return 0;
    if (l == &m->output && m->cfg.shared_classifier)
        return 1;
    if (l->w)
        return l->w == m->embed.w || l->w == m->tok_embeddings;
    return l->st.data && !l->st.owned && l->st.data == m->embed.st.data;
}

int qsur_llama_edit_save(qsur_llama_edit *e, qsur_llama_linear *l, qsur_error *err)
{
    if (!e)
        return QSUR_OK;
    for (int i = 0; i < e->nlins; i++)
        if (e->lins[i].l == l)
            return QSUR_OK;
    if (grow((void **)&e->lins, &e->caplins, e->nlins, sizeof *e->lins))
        return qsur_fail(err, QSUR_ERR_NOMEM, "model edit: out of memory");
    lin_entry *x = &e->lins[e->nlins];
    x->l = l;
    x->saved = *l;
    x->w_at = x->st_at = x->wq_at = -1;
    int64_t n = l->rows * l->cols;
    int rc = QSUR_OK;
    if (borrowed(e->m, l))
        ; /* a tied classifier's bytes are the embeddings' (saved with them) */
    else if (l->w)
        rc = spill(e, l->w, n * (int64_t)sizeof(float), &x->w_at, err);
    else if (l->st.owned)
        rc = spill(e, l->st.owned, n * qsur_dtype_size((qsur_dtype)l->st.dtype), &x->st_at, err);
    if (!rc && l->wq)
        rc = spill(e, l->wq, n * (int64_t)sizeof(float), &x->wq_at, err);
    if (rc)
        return rc;
    /* the journal owns the old quantized form from now on (an edit drops it) */
    free(l->wq);
    l->wq = NULL;
    if (l->qp)
        e->kept += n / 2; /* about: packed codes at <= 4 bits */
    l->qp = NULL;
    if (x->w_at >= 0)
        x->saved.w = NULL;
    if (x->st_at >= 0)
        x->saved.st.data = x->saved.st.owned = NULL;
    x->saved.wq = NULL;
    e->nlins++;
    return QSUR_OK;
}

int qsur_llama_edit_linear(qsur_llama_edit *e, qsur_llama_linear *l, int *dtype, qsur_error *err)
{
    int rc = qsur_llama_edit_save(e, l, err);
    return rc ? rc : qsur_llama_linear_edit_begin(l, dtype, err);
}

int qsur_llama_edit_floats(qsur_llama_edit *e, float *p, int64_t n, qsur_error *err)
{
    if (!e)
        return QSUR_OK;
    for (int i = 0; i < e->nfloats; i++)
        if (e->floats[i].p == p)
            return QSUR_OK;
    if (grow((void **)&e->floats, &e->capfloats, e->nfloats, sizeof *e->floats))
        return qsur_fail(err, QSUR_ERR_NOMEM, "model edit: out of memory");
    float_entry *f = &e->floats[e->nfloats];
    f->p = p;
    f->n = n;
    int rc = spill(e, p, n * (int64_t)sizeof(float), &f->at, err);
    if (!rc)
        e->nfloats++;
    return rc;
}

static void edit_free(qsur_llama_edit *e)
{
    if (e->spill)
        fclose(e->spill);
    free(e->lins);
    free(e->floats);
    free(e);
}

/* Linear x as it was; its current buffers are freed. */
static int restore_linear(qsur_llama_edit *e, lin_entry *x, qsur_error *err)
{
    qsur_llama_linear *l = x->l;
    qsur_llama_linear_drop_quant(l);
    if (!borrowed(e->m, l)) {
        free(l->w);
        free(l->st.owned);
    }
    *l = x->saved;
    x->saved.qp = NULL; /* back in the linear */
    int64_t n = l->rows * l->cols;
    int rc = QSUR_OK;
    if (x->w_at >= 0) {
        l->w = qsur_alloc((size_t)n, sizeof(float));
        rc = l->w ? read_back(e, x->w_at, l->w, n * (int64_t)sizeof(float), err)
                  : qsur_fail(err, QSUR_ERR_NOMEM, "model edit: out of memory putting %s back", l->name);
    } else if (x->st_at >= 0) {
        int64_t bytes = n * qsur_dtype_size((qsur_dtype)l->st.dtype);
        void *buf = qsur_alloc((size_t)bytes, 1);
        l->st.data = l->st.owned = buf;
        l->st.in_file = 0;
        rc = buf ? read_back(e, x->st_at, buf, bytes, err)
                 : qsur_fail(err, QSUR_ERR_NOMEM, "model edit: out of memory putting %s back", l->name);
    }
    if (!rc && x->wq_at >= 0) {
        l->wq = qsur_alloc((size_t)n, sizeof(float));
        rc = l->wq ? read_back(e, x->wq_at, l->wq, n * (int64_t)sizeof(float), err)
                   : qsur_fail(err, QSUR_ERR_NOMEM, "model edit: out of memory putting %s back", l->name);
    }
    return rc;
}

int qsur_llama_edit_undo(qsur_llama_edit *e, qsur_error *err)
{
    if (!e)
        return QSUR_OK;
    int rc = QSUR_OK;
    for (int i = e->nlins - 1; i >= 0; i--) {
        int r = restore_linear(e, &e->lins[i], err);
        rc = rc ? rc : r;
    }
    for (int i = 0; i < e->nfloats; i++) {
        float_entry *f = &e->floats[i];
        int r = read_back(e, f->at, f->p, f->n * (int64_t)sizeof(float), err);
        rc = rc ? rc : r;
    }
    e->m->hooks = e->hooks;
    e->m->cfg.shared_classifier = e->shared_classifier;
    /* the embeddings may have changed form: tok_embeddings and a tied
     * classifier point at them again (the classifier's saved view may name
     * buffers the embeddings' restore replaced) */
    qsur_llama_embed_sync(e->m);
    edit_free(e);
    return rc;
}

void qsur_llama_edit_keep(qsur_llama_edit *e)
{
    if (!e)
        return;
    for (int i = 0; i < e->nlins; i++)
        qsur_llama_packed_free(e->lins[i].saved.qp);
    edit_free(e);
}
