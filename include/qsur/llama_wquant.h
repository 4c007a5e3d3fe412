/* Weight quantization of every linear of a Llama model with a layer-wise
 * method (RTN, GPTQ, QuantEase, AWQ, CQE+), sequentially as in the GPTQ paper.
 *
 * Order: layer 0 {wq wk wv} {wo} {w1 w3} {w2}, layer 1 ... For each of these
 * groups (linears sharing one input) the calibration sequences are run again
 * through the model AS IT IS NOW (earlier groups already quantized, the
 * model's activation/KV quantization hooks on) and the group's input X is
 * captured (after online transforms, before activation quantization); the
 * forward stops after that block and only that group's input is kept, so
 * calibration memory is one group's X whatever the model's depth. The
 * method then quantizes each linear of the group on that X, and its result
 * becomes the linear's quantized form (packed codes when on the grid; the
 * weights are kept). So every linear is
 * calibrated on inputs that carry the error of everything before it. That is
 * 4 captures per layer; for stories260K with 16 x 256 calibration tokens
 * each capture is a fraction of a second.
 *
 * AWQ keeps its scale inside the fake-quantized weight, quant(W diag(s))
 * diag(1/s): exactly what the layer computes when activations stay float
 * (W*A16); with activation quantization the quantizer sees the unscaled X.
 *
 * Group sizes that do not divide a linear's input width (e.g. g32 on w2 with
 * hidden_dim 172) use the divisor of that width closest to G (ties: the larger;
 * 43 for 172 and G = 32): see qsur_llama_linear_spec. */
#ifndef QSUR_LLAMA_WQUANT_H
#define QSUR_LLAMA_WQUANT_H

#include "qsur/awq.h"
#include "qsur/cqe.h"
#include "qsur/gptq.h"
#include "qsur/llama.h"
#include "qsur/quantease.h"

typedef enum {
    QSUR_MWQ_RTN = 0,
    QSUR_MWQ_GPTQ,
    QSUR_MWQ_QUANTEASE,
    QSUR_MWQ_AWQ,
    QSUR_MWQ_CQE     /* CQE+ layer scope per linear (no cross-layer window) */
} qsur_llama_wquant_method;

const char *qsur_llama_wquant_method_name(qsur_llama_wquant_method m); /* "rtn", "gptq", ... */

typedef struct {
    qsur_llama_wquant_method method;
    qsur_gptq_opts gptq;
    qsur_quantease_opts quantease;
    qsur_awq_opts awq;
    qsur_cqe_opts cqe;
    /* calibration: as qsur_llama_capture (seq_len 0 = the file's, max_seqs 0 = all) */
    int seq_len, max_seqs, batch;
    int64_t max_tokens;
    uint64_t seed;
    int layers;      /* > 0: only the first `layers` blocks (the rest keep their form) */
    int float_acts;   /* 1: capture with the activation/KV quantizers off (online
                         rotations kept), as the QuaRot / OSTQuant code calibrates
                         GPTQ; 0: with the model's hooks on (see above) */
    int gpu;           /* GPTQ: each linear's Hessian, Cholesky and column loop on
                          the GPU (qsur_gpu_gptq); captures stay on the CPU */
} qsur_llama_wquant_opts;

qsur_llama_wquant_opts qsur_llama_wquant_default(void);

/* Per linear: weight-only output errors ||X W^T - X Q^T||_F / ||X W^T||_F on
 * the X the method saw, for round-to-nearest and for the method. */
typedef struct {
    char name[QSUR_NAME_MAX];
    int group;          /* the group size used (0 unless per-group) */
    double rtn_error, error;
    int64_t outliers;   /* QuantEase outlier-aware: weights kept in float */
} qsur_llama_wquant_row;

/* The spec used for a linear with `cols` inputs: spec itself, or with the
 * group replaced by the divisor of cols closest to spec->group. */
qsur_quant_spec qsur_llama_linear_spec(const qsur_quant_spec *spec, int64_t cols);

/* RTN of every per-layer linear with qsur_llama_linear_spec (all-or-nothing;
 * bits >= 16 drops the copies). */
int qsur_llama_quantize_rtn(qsur_llama *m, const qsur_quant_spec *spec,
                            const qsur_progress *prog, qsur_error *err);

/* Runs the method on every per-layer linear (see the header comment). rows
 * (optional) receives qsur_llama_linear_count(m) entries in linear order.
 * All-or-nothing: on error or interruption every wq copy is as before. */
int qsur_llama_wquant(qsur_llama *m, const qsur_tokens *calib, const qsur_quant_spec *spec,
                      const qsur_llama_wquant_opts *opt, qsur_llama_wquant_row *rows,
                      const qsur_progress *prog, qsur_error *err);

#endif
