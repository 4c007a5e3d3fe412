/* Quantized weights: codes plus per-group maps, and their packed size. */
#include <stdlib.h>
#include <string.h>
#include "qsur/qweight.h"
#include "qsur/tensor.h"

int qsur_qweight_new(qsur_qweight **out, const qsur_quant_spec *q, int64_t rows,
                     int64_t cols, qsur_error *err)
{
    *out = NULL;
    if (rows <= 0 || cols <= 0)
        return qsur_fail(err, QSUR_ERR_ARG, "quantized weight: bad shape %lldx%lld",
                         (long long)rows, (long long)cols);
    int rc = qsur_quant_validate(q, cols, err);
    if (rc != QSUR_OK)
        return rc;
    if (q->bits > 8)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "quantized weight: bits=%d has no integer grid (expected 2..8)", q->bits);
    qsur_qweight *qw = calloc(1, sizeof *qw);
    if (!qw)
        return qsur_fail(err, QSUR_ERR_NOMEM, "quantized weight: out of memory");
    qw->spec = *q;
    qw->rows = rows;
    qw->cols = cols;
    qw->groups = q->gran == QSUR_GRAN_GROUP ? cols / q->group : 1;
    qw->nparams = q->gran == QSUR_GRAN_TENSOR ? 1 : rows * qw->groups;
    size_t ncodes;
    if (qsur_mul_size((size_t)rows, (size_t)cols, &ncodes) != 0) {
        free(qw);
        return qsur_fail(err, QSUR_ERR_NOMEM, "quantized weight: %lldx%lld overflows",
                         (long long)rows, (long long)cols);
    }
    qw->params = calloc((size_t)qw->nparams, sizeof *qw->params);
    qw->codes = qsur_alloc(ncodes, sizeof *qw->codes);
    if (!qw->params || !qw->codes) {
        qsur_qweight_free(qw);
        return qsur_fail(err, QSUR_ERR_NOMEM, "quantized weight: cannot allocate %lldx%lld codes",
                         (long long)rows, (long long)cols);
    }
    memset(qw->codes, 0, ncodes * sizeof *qw->codes);
    *out = qw;
    return QSUR_OK;
}

void qsur_qweight_free(qsur_qweight *qw)
{
    if (!qw)
        return;
    free(qw->params);
    free(qw->codes);
    free(qw);
}

int qsur_qweight_fit_rtn(qsur_qweight *qw, const float *W, qsur_error *err)
{
    int64_t rows = qw->rows, cols = qw->cols;
    int rc = QSUR_OK;
    if (qw->spec.gran == QSUR_GRAN_TENSOR) {
        rc = qsur_qparams_fit(&qw->spec, W, rows * cols, qw->params, err);
    } else {
        int64_t span = cols / qw->groups;
        for (int64_t r = 0; r < rows && rc == QSUR_OK; r++)
            for (int64_t g = 0; g < qw->groups && rc == QSUR_OK; g++)
                rc = qsur_qparams_fit(&qw->spec, W + r * cols + g * span, span,
                                      qw->params + r * qw->groups + g, err);
    }
    if (rc != QSUR_OK)
        return rc;
    qsur_qweight_encode(qw, W);
    return QSUR_OK;
}

void qsur_qweight_encode(qsur_qweight *qw, const float *W)
{
    for (int64_t r = 0; r < qw->rows; r++)
        for (int64_t c = 0; c < qw->cols; c++)
            qw->codes[r * qw->cols + c] =
                (int16_t)qsur_qparams_code(qsur_qweight_map(qw, r, c), W[r * qw->cols + c]);
}

void qsur_qweight_decode(const qsur_qweight *qw, float *out)
{
    for (int64_t r = 0; r < qw->rows; r++)
        for (int64_t c = 0; c < qw->cols; c++)
            out[r * qw->cols + c] =
                qsur_qparams_value(qsur_qweight_map(qw, r, c), (float)qw->codes[r * qw->cols + c]);
}

int64_t qsur_qweight_packed_bytes(const qsur_qweight *qw)
{
    int bits = qw->spec.bits;
    int64_t code_bytes = (qw->rows * qw->cols * bits + 7) / 8;
    int64_t map_bits = 16 + (qw->spec.symmetric ? 0 : bits);
    return code_bytes + (qw->nparams * map_bits + 7) / 8;
}
