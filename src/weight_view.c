/* The weights a linear's forward pass uses, as a backend-neutral view. */
#include "qsur/backend.h"

qsur_weight_view qsur_llama_linear_view(const qsur_llama_linear *l)
{
    qsur_weight_view v = {l->wq ? l->wq : l->w, QSUR_DTYPE_F32, l->rows, l->cols};
    return v;
}
