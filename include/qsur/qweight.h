/* A quantized weight matrix: integer codes plus the per-group affine maps.
 *
 * This is the grid a layer-wise method works on: GPTQ fills it column by
 * column, QuantEase keeps it fixed and moves codes, AWQ and round-to-nearest
 * fit it in one go. Parameters are laid out by granularity (quant.h):
 *   TENSOR: 1 map shared by every element;
 *   ROW:    rows maps, one per output row;
 *   GROUP:  rows x (cols/G) maps, row-major, for columns [g*G, (g+1)*G).
 * Column indices are always the original (unpermuted) ones. */
#ifndef QSUR_QWEIGHT_H
#define QSUR_QWEIGHT_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/quant.h"

typedef struct {
    qsur_quant_spec spec;
    int64_t rows, cols;
    int64_t groups;         /* maps per row: cols/G (GROUP) or 1 */
    int64_t nparams;        /* 1, rows, or rows * groups */
    qsur_qparams *params;   /* owned, nparams */
    int16_t *codes;         /* owned, rows x cols row-major (bits <= 8 fits) */
} qsur_qweight;

/* Allocates zero codes and zero maps for a rows x cols matrix; checks the spec
 * (bits 2..8: a grid must exist) and that G divides cols. */
int qsur_qweight_new(qsur_qweight **out, const qsur_quant_spec *q, int64_t rows,
                     int64_t cols, qsur_error *err);
void qsur_qweight_free(qsur_qweight *qw);

/* The map that element (r, c) uses. */
static inline qsur_qparams *qsur_qweight_map(const qsur_qweight *qw, int64_t r, int64_t c)
{
    if (qw->spec.gran == QSUR_GRAN_TENSOR)
        return qw->params;
    if (qw->spec.gran == QSUR_GRAN_ROW)
        return qw->params + r;
    return qw->params + r * qw->groups + c / qw->spec.group;
}

/* Round to nearest: fit every map from W (rows x cols) the way qsur_fake_quant
 * does, then set the codes. The dequantized result equals qsur_fake_quant(W). */
int qsur_qweight_fit_rtn(qsur_qweight *qw, const float *W, qsur_error *err);
/* Codes of W under the current maps (maps unchanged). */
void qsur_qweight_encode(qsur_qweight *qw, const float *W);
/* out (rows x cols) = value of every code. */
void qsur_qweight_decode(const qsur_qweight *qw, float *out);

/* Storage of the packed form: ceil(rows*cols*bits/8) bytes of codes plus, per
 * map, a 16-bit scale and (asymmetric only) a 'bits'-wide zero point, the
 * usual deployment layout. The in-memory struct above is larger. */
int64_t qsur_qweight_packed_bytes(const qsur_qweight *qw);

#endif
