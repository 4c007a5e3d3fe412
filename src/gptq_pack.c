/* GPTQ / AutoGPTQ packed weights (qsur/gptq_pack.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/gptq_pack.h"
#include "qsur/half.h"

void qsur_gptq_packed_free(qsur_gptq_packed *p)
{
    if (!p)
        return;
    free(p->qweight);
    free(p->qzeros);
    free(p->scales);
    free(p->g_idx);
    p->qweight = p->qzeros = p->g_idx = NULL;
    p->scales = NULL;
}

static int alloc_arrays(qsur_gptq_packed *p, const char *what, qsur_error *err)
{
    const int64_t k = 32 / p->bits;
    p->qweight = calloc((size_t)(p->in / k * p->out), sizeof *p->qweight);
    p->qzeros = calloc((size_t)(p->groups * (p->out / k)), sizeof *p->qzeros);
    p->scales = calloc((size_t)(p->groups * p->out), sizeof *p->scales);
    p->g_idx = calloc((size_t)p->in, sizeof *p->g_idx);
    if (!p->qweight || !p->qzeros || !p->scales || !p->g_idx) {
        qsur_gptq_packed_free(p);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory for the GPTQ packing", what);
    }
    return QSUR_OK;
}

int qsur_gptq_pack(const qsur_qweight *qw, const char *what, qsur_gptq_packed *out,
                   qsur_error *err)
{
    memset(out, 0, sizeof *out);
    const int b = qw->spec.bits;
    if (b != 2 && b != 4 && b != 8)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: GPTQ packing needs 2, 4 or 8 bits (got %d)", what, b);
    const int64_t k = 32 / b, rows = qw->rows, cols = qw->cols;
    if (cols % k || rows % k)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: %lld x %lld is not packable in GPTQ's int32 "
                         "layout at %d bits (both sizes must be multiples of %lld; use weights=int)",
                         what, (long long)rows, (long long)cols, b, (long long)k);
    out->bits = b;
    out->out = rows;
    out->in = cols;
    out->group_size = qw->spec.gran == QSUR_GRAN_GROUP ? qw->spec.group : cols;
    out->groups = cols / out->group_size;
    int rc = alloc_arrays(out, what, err);
    if (rc)
        return rc;
    /* unsigned codes: symmetric grids are shifted by 2^(b-1) (AutoGPTQ sym=true) */
    const int off = qw->spec.symmetric ? 1 << (b - 1) : 0, top = (1 << b) - 1;
    for (int64_t c = 0; c < cols; c++)
        out->g_idx[c] = (int32_t)(c / out->group_size);
    for (int64_t o = 0; o < rows; o++)
        for (int64_t c = 0; c < cols; c++) {
            int u = qw->codes[o * cols + c] + off;
            if (u < 0 || u > top) {
                qsur_gptq_packed_free(out);
                return qsur_fail(err, QSUR_ERR_ARG, "%s: code %d outside the %d-bit range", what,
                                 qw->codes[o * cols + c], b);
            }
            uint32_t *w = (uint32_t *)&out->qweight[(c / k) * rows + o];
            *w |= (uint32_t)u << (b * (c % k));
        }
    for (int64_t g = 0; g < out->groups; g++)
        for (int64_t o = 0; o < rows; o++) {
            const qsur_qparams *p = qsur_qweight_map(qw, o, g * out->group_size);
            float zf = p->zero + (float)off;
            uint16_t h = qsur_f32_to_f16(p->scale);
            if (zf != floorf(zf) || zf < 1.0f || zf > (float)(top + 1) ||
                !isfinite(qsur_f16_to_f32(h))) {
                qsur_gptq_packed_free(out);
                return qsur_fail(err, QSUR_ERR_ARG, "%s: row %lld group %lld: zero point %g / "
                                 "scale %g does not fit GPTQ (zero in [1, %d], fp16 scale)", what,
                                 (long long)o, (long long)g, (double)zf, (double)p->scale, top + 1);
            }
            out->scales[g * rows + o] = h;
            uint32_t *z = (uint32_t *)&out->qzeros[g * (rows / k) + o / k];
            *z |= (uint32_t)((int)zf - 1) << (b * (o % k));
        }
    return QSUR_OK;
}

void qsur_gptq_dequant(const qsur_gptq_packed *p, float *W)
{
    const int b = p->bits;
    const int64_t k = 32 / b, rows = p->out, cols = p->in;
    const uint32_t mask = (1u << b) - 1;
    for (int64_t o = 0; o < rows; o++)
        for (int64_t c = 0; c < cols; c++) {
            int64_t g = p->g_idx[c];
            uint32_t qw = (uint32_t)p->qweight[(c / k) * rows + o];
            uint32_t qz = (uint32_t)p->qzeros[g * (rows / k) + o / k];
            int q = (int)((qw >> (b * (c % k))) & mask);
            int z = (int)((qz >> (b * (o % k))) & mask) + 1;
            W[o * cols + c] = (float)(q - z) * qsur_f16_to_f32(p->scales[g * rows + o]);
        }
}

int qsur_gptq_validate(qsur_gptq_packed *p, const char *what, qsur_error *err)
{
    if (p->bits != 2 && p->bits != 4 && p->bits != 8)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: GPTQ bits %d (expected 2, 4 or 8)", what, p->bits);
    const int64_t k = 32 / p->bits;
    if (p->in % k || p->out % k)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %lld x %lld is not a multiple of %lld", what,
                         (long long)p->out, (long long)p->in, (long long)k);
    /* g_idx must be c / group_size for one group_size (desc_act = false) */
    int64_t gs = p->in;
    for (int64_t c = 0; c < p->in; c++)
        if (p->g_idx[c] != 0) {
            gs = c;
            break;
        }
    if (gs < 1 || p->in % gs)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: g_idx does not describe equal groups", what);
    for (int64_t c = 0; c < p->in; c++)
        if (p->g_idx[c] != (int32_t)(c / gs))
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: g_idx[%lld] = %d, expected %lld "
                             "(act-order checkpoints are not read)", what, (long long)c,
                             (int)p->g_idx[c], (long long)(c / gs));
    if (p->in / gs != p->groups)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %lld groups in g_idx, %lld in scales/qzeros",
                         what, (long long)(p->in / gs), (long long)p->groups);
    p->group_size = gs;
    return QSUR_OK;
}

int qsur_gptq_from_parts(int32_t *qweight, const int64_t qw_shape[2], int32_t *qzeros,
                         const int64_t qz_shape[2], const qsur_tensor *scales, int32_t *g_idx,
                         int64_t gi_n, int64_t out, int64_t in, const char *what,
                         qsur_gptq_packed *p, qsur_error *err)
{
    memset(p, 0, sizeof *p);
    p->qweight = qweight;
    p->qzeros = qzeros;
    p->g_idx = g_idx;
    int64_t kr = qw_shape[0];
    int64_t k = kr > 0 && in % kr == 0 ? in / kr : 0;
    int rc = QSUR_OK;
    if (qw_shape[1] != out || (k != 4 && k != 8 && k != 16))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s.qweight: shape must be [%lld / (32 / bits)][%lld] "
                       "for 2, 4 or 8 bits", what, (long long)in, (long long)out);
    int64_t groups = scales->ndim == 2 ? scales->shape[0] : 0;
    if (!rc && (groups < 1 || scales->shape[1] != out || qz_shape[0] != groups ||
                qz_shape[1] * k != out || gi_n != in))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: qzeros/scales/g_idx shapes do not match "
                       "qweight (%lld x %lld at %d bits)", what, (long long)out, (long long)in,
                       k ? (int)(32 / k) : 0);
    if (!rc) {
        p->bits = (int)(32 / k);
        p->out = out;
        p->in = in;
        p->groups = groups;
        p->group_size = in / groups;
        p->scales = malloc((size_t)(groups * out) * sizeof *p->scales);
        if (!p->scales)
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", what);
    }
    for (int64_t i = 0; !rc && i < groups * out; i++)
        p->scales[i] = qsur_f32_to_f16(scales->data[i]);
    if (!rc)
        rc = qsur_gptq_validate(p, what, err);
    if (rc)
        qsur_gptq_packed_free(p);
    return rc;
}

int qsur_gptq_config_json(int bits, int64_t group_size, int sym, char *buf, int n)
{
    return snprintf(buf, (size_t)n,
                    "{\n    \"bits\": %d,\n    \"group_size\": %lld,\n    \"desc_act\": false,\n"
                    "    \"sym\": %s,\n    \"static_groups\": false,\n    \"true_sequential\": true,\n"
                    "    \"damp_percent\": 0.01,\n    \"quant_method\": \"gptq\",\n"
                    "    \"checkpoint_format\": \"gptq\"\n  }",
                    bits, (long long)group_size, sym ? "true" : "false");
}
