/* Quantizer specification, fake quantization and error metrics.
 *
 * A quantizer maps a float to one of 2^bits levels and back (fake quant returns
 * the dequantized value). Symmetric: levels q in [-(2^(b-1)-1), 2^(b-1)-1],
 * scale = clip * absmax / (2^(b-1)-1); with `full` the extra negative code
 * -2^(b-1) is used too (QuaRot's / OSTQuant's weight grid): q in
 * [-2^(b-1), 2^(b-1)-1], scale = clip * max(-min / 2^(b-1), max / (2^(b-1)-1))
 * (min, max widened to include 0), so a row whose extreme is negative gets a
 * grid 2^(b-1)/(2^(b-1)-1) finer. Asymmetric: q in [0, 2^b-1],
 * scale = clip * (max-min) / (2^b-1), zero point = round(-clip*min/scale)
 * (min/max first widened to include 0). The statistics (absmax, min, max)
 * are taken per tensor, per row (per output channel of a weight, per token of an
 * activation — both are rows) or per group of G consecutive columns of a row. */
#ifndef QSUR_QUANT_H
#define QSUR_QUANT_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"

typedef enum {
    QSUR_GRAN_TENSOR = 0, /* one scale for the whole matrix */
    QSUR_GRAN_ROW,        /* one scale per row: per-channel (W) / per-token (X) */
    QSUR_GRAN_GROUP       /* one scale per G consecutive columns of each row */
} qsur_granularity;

typedef struct {
    int bits;               /* 2..8; 16 or more means "not quantized" */
    int symmetric;          /* 1 symmetric, 0 asymmetric */
    qsur_granularity gran;
    int group;              /* G for QSUR_GRAN_GROUP */
    double clip;            /* clipping ratio in (0,1]; 1 = no clipping */
    int clip_search;        /* 1: per scale group, search the ratio minimising the error */
    /* The fields below are 0 in every older initializer and then mean the
     * original behaviour. */
    int full;               /* symmetric only: use the code -2^(b-1) (see above) */
    double clip_norm;       /* clip search error sum |x - Q(x)|^p: p (0 = 2, MSE) */
    int clip_grid;          /* clip search candidates 1, 0.99, ..., 1 - 0.01 (N-1)
                               (0 = 51: down to 0.50; the GPTQ/QuaRot code's
                               grid 100, maxshrink 0.8 is N = 80: down to 0.21) */
    int ste_const;          /* STE only (qsur/quant_ste.h): the scale is a constant
                               (no gradient through min/max or absmax); the forward
                               ignores it */
} qsur_quant_spec;

/* 4-bit, symmetric, per-row, no clipping. */
qsur_quant_spec qsur_quant_default(void);
/* Checks ranges and that group divides cols when gran is GROUP. */
int qsur_quant_validate(const qsur_quant_spec *q, int64_t cols, qsur_error *err);
/* Every field that changes what the quantizer computes is equal (the group
 * only matters for QSUR_GRAN_GROUP; clip_norm 0 and 2, clip_grid 0 and 51
 * are the same). */
int qsur_quant_spec_equal(const qsur_quant_spec *a, const qsur_quant_spec *b);
/* "int4 sym row clip=1.00" style text. */
void qsur_quant_describe(const qsur_quant_spec *q, char *buf, int n);

/* out = Q(x) for a rows x cols row-major matrix; out may equal x.
 * bits >= 16 copies x unchanged. */
int qsur_fake_quant(const qsur_quant_spec *q, const float *x, int64_t rows,
                    int64_t cols, float *out, const qsur_progress *prog,
                    qsur_error *err);

/* The affine map of one scale group, so methods that quantize column by column
 * (GPTQ, QuantEase) or rescale first (AWQ) land on exactly the grid that
 * qsur_fake_quant uses: code c = clamp(round(x*inv + zero), lo, hi) (round half
 * away from zero), value = (c - zero) * scale. scale == 0 (an all-zero group)
 * maps everything to 0. zero, lo, hi are integer-valued. */
typedef struct {
    float inv, scale, zero, lo, hi;
} qsur_qparams;

/* Parameters of one contiguous span of n values under q (bits, symmetric,
 * clip, clip_search; granularity is the caller's business), exactly as
 * qsur_fake_quant derives them for that span (clip search included). Fails
 * on NaN/Inf and on bits >= 16 (no grid: callers copy instead). */
int qsur_qparams_fit(const qsur_quant_spec *q, const float *x, int64_t n,
                     qsur_qparams *p, qsur_error *err);
/* The integer code of x (as a float in [lo, hi]). */
float qsur_qparams_code(const qsur_qparams *p, float x);
/* The dequantized value of code c. */
float qsur_qparams_value(const qsur_qparams *p, float c);
/* qsur_qparams_value(p, qsur_qparams_code(p, x)): bit-identical to what
 * qsur_fake_quant writes for x in a span with these parameters. */
float qsur_qparams_apply(const qsur_qparams *p, float x);

typedef struct {
    double mse;        /* mean of (x - q)^2 */
    double rel_fro;    /* ||x - q||_F / ||x||_F */
    double sqnr_db;    /* 10 log10(sum x^2 / sum (x-q)^2); +inf when exact */
} qsur_error_metrics;

void qsur_error_metrics_compute(const float *x, const float *q, int64_t n,
                                qsur_error_metrics *m);

/* qsur_fake_quant and qsur_error_metrics_compute of its result in one pass
 * over x (what a live update needs: reading a 4096-channel activation twice
 * more was a third of its time). out may be NULL (measure only) or equal x.
 * The sums run per lane in double, so m agrees with qsur_error_metrics_compute
 * to rounding, not bit for bit. */
int qsur_fake_quant_measure(const qsur_quant_spec *q, const float *x, int64_t rows,
                            int64_t cols, float *out, qsur_error_metrics *m,
                            const qsur_progress *prog, qsur_error *err);

/* ||X W^T - Xq Wq^T||_F / ||X W^T||_F with X (n x d), W (m x d); Xq or Wq may
 * be NULL meaning "not quantized". Uses sgemm. */
int qsur_layer_output_error(const float *X, const float *Xq, const float *W,
                            const float *Wq, int64_t n, int64_t d, int64_t m,
                            double *out, qsur_error *err);

/* ||Y - A B^T||_F / ||Y||_F with the reference Y (n x m) given, A (n x d),
 * B (m x d): one GEMM instead of two when Y = X W^T is reused across many
 * candidates (a live workbench layer: a transform pair leaves X W^T alone).
 * 0 when Y == A B^T exactly, +inf when only Y is zero. */
int qsur_output_error_ref(const float *Y, const float *A, const float *B, int64_t n, int64_t d,
                          int64_t m, double *out, qsur_error *err);
/* Y = A B^T (A n x d, B m x d, Y n x m row-major), computed in the same row
 * blocks as qsur_output_error_ref: a reference made here gives exactly 0 there
 * for the same A and B. */
int qsur_output_product(const float *A, const float *B, int64_t n, int64_t d, int64_t m, float *Y,
                        qsur_error *err);

#endif
