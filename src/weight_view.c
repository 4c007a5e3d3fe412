/* The weights a linear's forward pass uses, as a backend-neutral view. */
#include <stdio.h>
#include <stdlib.h>
#include "qsur/backend.h"
#include "qsur/llama_store.h"
#include "qsur/tensor.h"

int qsur_llama_linear_view(const qsur_llama_linear *l, qsur_weight_view *v, void **tmp,
                           qsur_error *err)
{
    *tmp = NULL;
    v->rows = l->rows, v->cols = l->cols;
    v->dtype = QSUR_DTYPE_F32;
    if (!l->qp && l->wq) {
        v->data = l->wq;
        return QSUR_OK;
    }
    if (!l->qp && l->w) {
        v->data = l->w;
        return QSUR_OK;
    }
    if (!l->qp && l->st.data && l->st.rope_heads == 0) { /* the stored bytes as they are */
        v->data = l->st.data;
        v->dtype = (qsur_dtype)l->st.dtype;
        return QSUR_OK;
    }
    /* packed codes decoded, or q/k rows put in the Meta order: float32 */
    float *f = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float));
    if (!f)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory for its upload (%lld x %lld)",
                         l->name, (long long)l->rows, (long long)l->cols);
    qsur_llama_linear_forward_rows(l, 0, l->rows, f);
    v->data = f;
    *tmp = f;
    return QSUR_OK;
}

int qsur_gpu_quant_supported(const qsur_quant_spec *q, char *why, size_t n)
{
    if (q->bits >= 16)
        return 1;
    const char *bad = q->symmetric && q->full ? "the full symmetric grid (sym-full)"
                      : q->clip_search && q->clip_norm != 0 && q->clip_norm != 2 ? "a clip-search norm other than 2"
                      : q->clip_search && q->clip_grid != 0 && q->clip_grid != 51 ? "a clip-search grid other than 51"
                      : NULL;
    if (bad && why)
        snprintf(why, n, "the GPU kernels do not implement %s", bad);
    return bad == NULL;
}

int qsur_gpu_hooks_supported(const qsur_llama_hooks *h, char *why, size_t n)
{
    if (h->act_wo.bits > 0 && h->act.bits < 16) {
        if (why)
            snprintf(why, n, "the GPU forward pass has no separate quantizer for wo's input (ao:)");
        return 0;
    }
    return qsur_gpu_quant_supported(&h->act, why, n) && qsur_gpu_quant_supported(&h->kv, why, n);
}

int qsur_gpu_train_supported(const qsur_llama_hooks *h, char *why, size_t n)
{
    return qsur_gpu_quant_supported(&h->act, why, n) && qsur_gpu_quant_supported(qsur_llama_act_wo(h), why, n) &&
           qsur_gpu_quant_supported(&h->kv, why, n);
}
