/* Round-to-nearest of a whole model on the GPU (qsur_gpu_quantize_rtn): each
 * linear's float weights up, qsur_fake_quant's kernel (clip search included),
 * the copy down. Worth it for clip search (51 candidate ratios per span). */
#include <math.h>
#include <stdlib.h>
#include "gpu_util.h"
#include "kernels.h"
#include "qsur/backend.h"
#include "qsur/llama_store.h"
#include "qsur/tensor.h"

int qsur_gpu_quantize_rtn(qsur_llama *m, const qsur_quant_spec *spec, const qsur_progress *prog,
                          qsur_error *err)
{
    if (spec->bits >= 16) {
        qsur_llama_dequantize_weights(m);
        return QSUR_OK;
    }
    char why[160];
    if (!qsur_gpu_quant_supported(spec, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu quant: %s", why);
    const int n = qsur_llama_linear_count(m);
    int64_t big = 0;
    for (int i = 0; i < n; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
        int rc = qsur_quant_validate(&q, l->cols, err);
        if (rc)
            return rc;
        big = l->rows * l->cols > big ? l->rows * l->cols : big;
    }
    float **fresh = calloc((size_t)n, sizeof *fresh);
    if (!fresh)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu rtn: out of memory");
    qsur_gpu_ctx c;
    float *W = NULL, *Q = NULL;
    int rc = qsur_gpu_ctx_init(&c, err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&W, (size_t)big * 4, "rtn", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&Q, (size_t)big * 4, "rtn", err);
    for (int i = 0; i < n && !rc; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
        qsur_cu_quant cq = {q.bits, q.symmetric, (int)q.gran, q.group, q.clip, q.clip_search};
        size_t bytes = (size_t)(l->rows * l->cols) * 4;
        if (!(fresh[i] = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float)))) {
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate quantized copy", l->name);
            break;
        }
        const float *w = NULL;
        float *tmp = NULL;
        rc = qsur_llama_linear_weights_alloc(l, &w, &tmp, err);
        if (!rc)
            rc = qsur_gpu_check(cudaMemcpy(W, w, bytes, cudaMemcpyHostToDevice), "rtn", err);
        free(tmp);
        if (!rc)
            qsur_cu_quant_cast(NULL, 0, Q, W, l->rows, l->cols, &cq, c.stream);
        if (!rc)
            rc = qsur_gpu_check(cudaMemcpy(fresh[i], Q, bytes, cudaMemcpyDeviceToHost), "rtn", err);
        if (!rc)
            rc = qsur_progress_tick(prog, (double)(i + 1) / n, "quantize weights", NAN, err);
    }
    cudaFree(W), cudaFree(Q);
    qsur_gpu_ctx_free(&c);
    for (int i = 0; i < n; i++) {
        if (rc) {
            free(fresh[i]);
            continue;
        }
        /* packed: RTN's result is on the grid it was fitted on */
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
        if (!rc)
            rc = qsur_llama_linear_set_quant(l, fresh[i], &q, err);
        free(fresh[i]);
    }
    free(fresh);
    return rc;
}
