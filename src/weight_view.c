/* The weights a linear's forward pass uses, as a backend-neutral view. */
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
