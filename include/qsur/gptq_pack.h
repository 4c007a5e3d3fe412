/* GPTQ / AutoGPTQ packed integer weights (checkpoint_format "gptq", the
 * layout transformers, optimum, GPTQModel, vLLM and ExLlama/Marlin kernels
 * read), for a linear W (out x in, y = x W^T) with b-bit codes, b in {2, 4, 8}
 * and k = 32 / b codes per int32:
 *   qweight  int32 [in/k][out]:  bits [b*j, b*j + b) of qweight[i][o] hold the
 *            unsigned code q[o][k*i + j] (j = 0 in the least significant bits)
 *   qzeros   int32 [G][out/k]:   bits [b*j, b*j + b) of qzeros[g][i] hold
 *            z[g][k*i + j] - 1 (the "gptq" v1 convention: loaders add 1)
 *   scales   fp16 [G][out]
 *   g_idx    int32 [in]:         g_idx[c] = c / group_size (desc_act = false)
 *   W[o][c] = scales[g][o] * (q[o][c] - z[g][o]),  g = g_idx[c].
 * Symmetric quantizers store u = code + 2^(b-1) with z = 2^(b-1) (AutoGPTQ's
 * sym=true); asymmetric ones their codes in [0, 2^b) and integer zero points
 * z in [1, 2^b] (else v1 cannot store z - 1). in and out must be multiples of
 * k; a per-row quantizer is group_size -1 (G = 1). Field by field with an
 * example: docs/export.md. */
#ifndef QSUR_GPTQ_PACK_H
#define QSUR_GPTQ_PACK_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/qweight.h"
#include "qsur/safetensors.h"
#include "qsur/tensor.h"

typedef struct {
    int bits;
    int64_t out, in;       /* W is out x in */
    int64_t group_size;    /* columns per group; in when one group (-1 in the config) */
    int64_t groups;        /* G = in / group_size */
    int32_t *qweight;      /* in/k x out */
    int32_t *qzeros;       /* G x out/k */
    uint16_t *scales;      /* G x out, IEEE fp16 bits */
    int32_t *g_idx;        /* in */
} qsur_gptq_packed;

/* Packs qw (codes and maps of a GROUP, ROW or TENSOR quantizer). Scales are
 * rounded to fp16 (the format's type). QSUR_ERR_ARG, naming `what`, when the
 * layout cannot hold it: bits not 2/4/8, in or out not a multiple of 32/b, a
 * zero point outside [1, 2^b], a scale that overflows fp16. */
int qsur_gptq_pack(const qsur_qweight *qw, const char *what, qsur_gptq_packed *out,
                   qsur_error *err);
/* W (out x in floats) = scales * (q - z), the float expression loaders use. */
void qsur_gptq_dequant(const qsur_gptq_packed *p, float *W);
/* Checks the shapes and g_idx of p's arrays against bits/out/in (a file read
 * back): QSUR_ERR_FORMAT naming `what`. groups and group_size are derived
 * from g_idx. */
int qsur_gptq_validate(qsur_gptq_packed *p, const char *what, qsur_error *err);
void qsur_gptq_packed_free(qsur_gptq_packed *p); /* frees the arrays */

/* The inverse for a linear of out x in: takes ownership of qweight (qw_n
 * values), qzeros (qz_n) and g_idx (gi_n) (freed on error too); scales is the
 * F16 tensor read as floats. Bits from qweight's row count (in / rows codes
 * per int32), then the shapes and qsur_gptq_validate. */
int qsur_gptq_from_parts(int32_t *qweight, const int64_t qw_shape[2], int32_t *qzeros,
                         const int64_t qz_shape[2], const qsur_tensor *scales, int32_t *g_idx,
                         int64_t gi_n, int64_t out, int64_t in, const char *what,
                         qsur_gptq_packed *p, qsur_error *err);

/* quantize_config.json text (also the value of config.json's
 * "quantization_config"): bits, group_size (-1: one group), desc_act false,
 * sym, quant_method "gptq", checkpoint_format "gptq". */
int qsur_gptq_config_json(int bits, int64_t group_size, int sym, char *buf, int n);

#endif
