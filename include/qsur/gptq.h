/* GPTQ (Frantar, Ashkboos, Hoefler, Alistarh 2022, "GPTQ: Accurate
 * Post-Training Quantization for Generative Pre-trained Transformers").
 *
 * Quantizes W one input column at a time and spreads each column's rounding
 * error over the not-yet-quantized columns using the inverse Hessian
 * H^-1 (H = X^T X up to a factor, damped), which is the optimal update of the
 * layer-wise least-squares problem for a fixed quantized column (OBS):
 *     err = (w_j - q_j) / U_jj,   W[:, k] -= err * U_jk  for k > j,
 * with U the upper Cholesky factor of H^-1 (H^-1 = U^T U). Columns go in
 * blocks (default 128); updates inside a block are rank-1, the update of the
 * rest of the matrix is one GEMM per block (the "lazy batch" of the paper).
 *
 * Grid: per-tensor and per-row maps are fitted on W before the loop (after
 * dead columns are zeroed). Per-group maps are fitted when the group starts,
 * from the columns as updated so far (blocks are aligned to groups so those
 * values are final when read). With act_order and groups the maps are
 * "static groups": fitted on the original W for the original column groups
 * before the permutation, so a group's columns may be quantized far apart in
 * time but still share one map and stay contiguous in the stored layout.
 * static_groups asks for those maps without act_order too (the reference
 * code's --static-groups): the grid then no longer depends on H, so two
 * engines whose Hessians differ by rounding (CPU vs GPU forward passes) give
 * the same codes, where maps fitted on the error-fed weights amplify a 1e-7
 * difference into a different grid (docs/gpu.md). */
#ifndef QSUR_GPTQ_H
#define QSUR_GPTQ_H

#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/quant.h"
#include "qsur/qweight.h"
#include "qsur/wquant.h"

typedef struct {
    double percdamp;   /* damping lambda = percdamp * mean(diag H); default 0.01 */
    int block;         /* columns per lazy-batch block; default 128 */
    int act_order;     /* 1: quantize columns in order of decreasing H_jj */
    int static_groups; /* 1: group maps fitted on the original W (see above) */
} qsur_gptq_opts;

qsur_gptq_opts qsur_gptq_default(void);

/* Quantizes L->W. Q (rows x cols) receives the dequantized weight (it may not
 * alias L->W). qw, when not NULL, must have been made by qsur_qweight_new
 * with the same spec and shape; it receives codes and maps such that
 * qsur_qweight_decode(qw) == Q. Uses L->H when given, else builds X^T X.
 * bits >= 16 copies W. Ticks per block ("gptq"); on interrupt Q and qw are
 * unspecified, L is untouched. */
int qsur_gptq(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
              const qsur_gptq_opts *opt, float *Q, qsur_qweight *qw,
              const qsur_progress *prog, qsur_error *err);

#endif
