/* The accelerator seam: whole-model kernels (perplexity forward pass, GPTQ
 * Hessians and column loop) on a GPU.
 *
 * This header is the only way the engine and the front ends reach the GPU;
 * it is plain C and names no CUDA type. Two implementations exist:
 *   src/backend/cuda/  (CUDA runtime, cuBLAS, cuSOLVER; built with
 *                       -DQSUR_CUDA=ON, the default where nvcc is found),
 *   src/backend/none.c (every entry reports "built without CUDA").
 * A build with CUDA still runs on a machine without a GPU: qsur_gpu_probe
 * says so and callers stay on the CPU.
 *
 * Weights reach the backend through qsur_weight_view (pointer + dtype +
 * shape), never through qsur_llama_linear itself, so the backend does not
 * care how the model store holds them (float, or mapped in the file's dtype).
 *
 * Numerics. QSUR_GPU_F32: every GEMM in fp32 with fp32 accumulation (no
 * TF32), the mode the GPU-vs-CPU tests use (perplexity within 1e-4 relative).
 * QSUR_GPU_BF16: weights and GEMM inputs in bf16, fp32 accumulation and fp32
 * residual stream, norms, RoPE, softmax statistics and losses (the speed mode). */
#ifndef QSUR_BACKEND_H
#define QSUR_BACKEND_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/gptq.h"
#include "qsur/hadamard.h"
#include "qsur/llama.h"
#include "qsur/llama_text.h"
#include "qsur/llama_train.h"
#include "qsur/llama_wquant.h"
#include "qsur/ostquant.h"
#include "qsur/progress.h"
#include "qsur/quant.h"
#include "qsur/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A borrowed rows x cols row-major weight in some dtype (F32, F16 or BF16;
 * qsur_dtype from safetensors.h). */
typedef struct {
    const void *data;
    qsur_dtype dtype;
    int64_t rows, cols;
} qsur_weight_view;

/* The weights a linear's forward pass uses (qsur/llama_store.h): its
 * quantized form when set (packed codes decoded to float32, or the wq copy),
 * else the float weights, else the stored bytes in their dtype (mapped F32,
 * F16 or BF16) when their rows are in the Meta order, else float32. What had
 * to be materialised is in *tmp (free() it after the upload; NULL when v
 * borrows the model's memory). */
int qsur_llama_linear_view(const qsur_llama_linear *l, qsur_weight_view *v, void **tmp,
                           qsur_error *err);

typedef struct {
    int count;            /* usable GPUs (0: none, or built without CUDA) */
    char name[128];       /* device 0, e.g. "NVIDIA H200" */
    double mem_gib;       /* device 0 memory */
    char why[160];        /* when count == 0: why ("built without CUDA", driver message) */
} qsur_gpu_info;

/* Fills info; never fails. The first call initialises the CUDA runtime. */
void qsur_gpu_probe(qsur_gpu_info *info);

/* Whether the GPU kernels implement quantizer q (bits >= 16: off, always
 * fine): they know the symmetric grid +-(2^(b-1)-1), the asymmetric grid and
 * the MSE clip search over 51 ratios, not the full symmetric grid (`full`) or
 * another clip-search norm/grid. 0 with `why` filled otherwise. */
int qsur_gpu_quant_supported(const qsur_quant_spec *q, char *why, size_t n);
/* The same for every quantizer a model's forward pass runs (activations, KV,
 * wo's own input quantizer, which the GPU forward does not have). */
int qsur_gpu_hooks_supported(const qsur_llama_hooks *h, char *why, size_t n);

/* The same for the training passes (qsur_gpu_train_*), which also run wo's
 * own input quantizer. */
int qsur_gpu_train_supported(const qsur_llama_hooks *h, char *why, size_t n);

typedef enum { QSUR_GPU_F32 = 0, QSUR_GPU_BF16 } qsur_gpu_precision;

/* A model resident on the GPU: weights, norms, hooks (activation/KV fake
 * quantization, online transforms as dense matrices) and the run buffers for
 * batch x seq tokens. A snapshot: later edits of the host model are not seen. */
typedef struct qsur_gpu_model qsur_gpu_model;

/* Uploads m. Online transforms are taken as dense n x n matrices (each hook's
 * apply on the identity), so any orthogonal hook works. Fails with a one-line
 * message when no GPU is usable or its memory runs out. Ticks "upload" per layer. */
int qsur_gpu_model_new(qsur_gpu_model **out, const qsur_llama *m, qsur_gpu_precision prec,
                       int max_batch, int max_seq, const qsur_progress *prog, qsur_error *err);
void qsur_gpu_model_free(qsur_gpu_model *g);
/* Bytes of GPU memory the model's weights and buffers take. */
double qsur_gpu_model_bytes(const qsur_gpu_model *g);
/* Query rows per attention chunk (1..512, default 512): each chunk's fp32
 * scores (heads x rows x keys) are written and read once; smaller chunks can
 * stay in the GPU's L2 cache at the price of smaller GEMMs (bench_gpu). */
int qsur_gpu_model_set_att_chunk(qsur_gpu_model *g, int rows, qsur_error *err);

/* Timers of the last call (seconds, device-synchronised). */
typedef struct {
    double seconds;       /* wall time of the whole call */
    int64_t tokens;       /* tokens run through the model */
} qsur_gpu_timing;

/* As qsur_llama_perplexity, on the GPU: same sequence plan, same NLL
 * definition (per-row log-sum-exp in double), sums in the same order. Ticks
 * "ppl N tok/s" per batch with the running perplexity. */
int qsur_gpu_perplexity(qsur_gpu_model *g, const qsur_tokens *t, int seq_len, int max_seqs,
                        int batch, const qsur_progress *prog, qsur_llama_ppl *out,
                        qsur_gpu_timing *timing, qsur_error *err);

/* Logits of one forward pass of B x T tokens from position 0, copied to
 * logits[(b*T + t) * vocab + j] (host memory, caller-owned). The tests, and
 * ostquant model's teacher on the GPU. */
int qsur_gpu_forward_logits(qsur_gpu_model *g, const int *tokens, int B, int T, float *logits,
                            qsur_error *err);

/* qsur_llama_capture_some with the forward passes on the GPU: g is m as
 * uploaded (qsur_gpu_model_new; QSUR_GPU_F32 gives the CPU's values to
 * ~1e-7) with buffers for batch x seq_len tokens (more is an error). The selected capture points' fp32 rows are copied to the host
 * tensors as each layer passes; the forward stops after the last selected
 * layer. Ticks "capture N tok/s". */
int qsur_gpu_capture(qsur_gpu_model *g, const qsur_llama *m, const qsur_tokens *t, int seq_len,
                     int max_seqs, int batch, int64_t max_tokens, uint64_t seed,
                     const qsur_llama_capture_sel *sel, qsur_workspace *ws, int64_t *n_tokens,
                     const qsur_progress *prog, qsur_error *err);

/* Logits of the last of T tokens (one sequence from position 0) copied to
 * logits[0..vocab) (host). Each call runs the whole sequence: the GPU keeps
 * no KV cache between calls. */
int qsur_gpu_last_logits(qsur_gpu_model *g, const int *tokens, int T, float *logits,
                         qsur_error *err);

/* qsur_llama_sample_stream (qsur/llama_text.h) with the forward passes on
 * the GPU model g (m uploaded, buffers for 1 x (n_prompt + n_new) tokens):
 * each new token re-runs the whole sequence so far (no KV cache), which for
 * the short generations of `generate` costs less than it saves. */
int qsur_gpu_sample_stream(qsur_gpu_model *g, const qsur_llama *m, const int *prompt, int n_prompt,
                           int n_new, int stop_id, const qsur_sample_opts *o, qsur_token_cb cb,
                           void *ctx, const qsur_progress *prog, int *n_out, qsur_error *err);

/* GPTQ of one linear on the GPU: the same algorithm and grid as qsur_gptq
 * (Cholesky of the damped Hessian through cuSOLVER, lazy-batch column loop,
 * one thread per output row), fp32 arithmetic, H in double from L->H or
 * accumulated from L->X on the GPU. Q (rows x cols) receives the dequantized
 * weight. Not supported (QSUR_ERR_ARG): act_order, clip search. */
int qsur_gpu_gptq(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
                  const qsur_gptq_opts *opt, float *Q, qsur_error *err);

/* Whole-model GPTQ on the GPU, in qsur_llama_wquant's order (layer by layer:
 * {wq wk wv} {wo} {w1 w3} {w2}) with its inputs: the calibration sequences'
 * residual stream stays on the GPU at the current layer's input; for each
 * group the layer runs on it and H = X^T X of the group's input (after online
 * transforms, before activation quantization) is accumulated in double; each
 * linear of the group is GPTQ-quantized (qsur_llama_linear_spec of spec) and
 * its result becomes the linear's weight on the GPU, so the next groups and
 * layers see it; after the four groups the stream moves through the quantized
 * layer. m (may be NULL) gives the float weights and receives the results as
 * its wq copies (all-or-nothing; on failure the GPU model's weights are left
 * partly quantized); without m the GPU model's own weights are quantized.
 * rows (optional, qsur_llama_linear_count entries): per-linear output errors
 * of RTN and GPTQ on the calibration inputs, from H. All calibration tokens
 * are used (no subset). Ticks "gptq layer N" with the fraction done. */
int qsur_gpu_gptq_model(qsur_gpu_model *g, qsur_llama *m, const qsur_tokens *calib,
                        int seq_len, int max_seqs, const qsur_quant_spec *spec,
                        const qsur_gptq_opts *opt, qsur_llama_wquant_row *rows,
                        const qsur_progress *prog, qsur_error *err);

/* Round-to-nearest of every per-layer linear on the GPU: wq = Q(w) with
 * qsur_llama_linear_spec(spec, cols), the grid, rounding and clip search of
 * qsur_fake_quant (the search's squared errors summed in double, so a near-tie
 * may pick the neighbouring ratio). All-or-nothing; bits >= 16 drops the
 * copies. Ticks "quantize weights" per linear. */
int qsur_gpu_quantize_rtn(qsur_llama *m, const qsur_quant_spec *spec, const qsur_progress *prog,
                          qsur_error *err);

/* The weight rotations of `rotate model` (qsur/llama_rotate.h) on the GPU
 * (src/backend/cuda/gpu_rotate.c): the plan R (n x n, orthogonal) is made
 * dense once (the plan applied to the identity: row i is e_i R) and kept on
 * the GPU; each call uploads one fp32 weight, multiplies it by R in an fp32
 * GEMM (fp32 accumulation, no TF32) and copies the result back in place. The
 * CPU applies the plan as a fast transform, so the two agree to float
 * rounding, not bit for bit. Device buffers grow to the largest weight. */
typedef struct qsur_gpu_rotation qsur_gpu_rotation;

/* Fails with a one-line message when no GPU is usable or memory runs out. */
int qsur_gpu_rotation_new(qsur_gpu_rotation **out, const qsur_hadamard_plan *R, qsur_error *err);
void qsur_gpu_rotation_free(qsur_gpu_rotation *r);
/* w: nrows rows of n (host, in place) -> each row x R, as
 * qsur_hadamard_plan_apply(R, w, nrows, ...). */
int qsur_gpu_rotation_rows(qsur_gpu_rotation *r, float *w, int64_t nrows, qsur_error *err);
/* w: rows x cols (host, in place), rows a multiple of n -> blockdiag(R)^T w:
 * each block of n consecutive rows W_b -> R^T W_b. */
int qsur_gpu_rotation_left(qsur_gpu_rotation *r, float *w, int64_t rows, int64_t cols,
                           qsur_error *err);

/* The Cayley retraction of the Stiefel optimiser (qsur/stiefel.h's
 * qsur_cayley_apply) on the GPU (src/backend/cuda/gpu_cayley.c), in double:
 * M = I + a/2 D built on the host as the CPU does, N = R - a/2 D R (DGEMM),
 * M X = N by cuSOLVER's LU with partial pivoting (getrf/getrs), R = X. The
 * CPU's result to double rounding (another LU, other summation orders), not
 * bit for bit. One object per matrix size keeps the handles and buffers. */
typedef struct qsur_gpu_cayley qsur_gpu_cayley;

int qsur_gpu_cayley_new(qsur_gpu_cayley **out, int64_t n, qsur_error *err);
void qsur_gpu_cayley_free(qsur_gpu_cayley *g);
/* R (n x n row-major double, host, in place) <- (I + a/2 D)^-1 (I - a/2 D) R
 * for a skew D (host). QSUR_ERR_NUMERIC when the system is singular (NaN). */
int qsur_gpu_cayley_apply(qsur_gpu_cayley *g, double *R, const double *D, double a,
                          qsur_error *err);

/* Training passes on the GPU (src/backend/cuda/gpu_train.c): the forward of
 * qsur_llama_train_forward with its tape and the gradients of
 * qsur_llama_backward (qsur/llama_train.h), in fp32 (GEMMs fp32 with fp32
 * accumulation, no TF32), with the model's hooks: activation and KV fake
 * quantization (straight-through gradients of qsur/quant_ste.h), online
 * qk / wo_in / w2_in transforms as dense matrices, their transposes in the
 * backward (the engine's online transforms are orthogonal). The weights a
 * pass uses are the model's forward weights (quantized form when set, as
 * qsur_llama_tape_weights); gradients are w.r.t. those (the caller applies
 * the weight STE, as after qsur_llama_backward). Attention runs over whole
 * sequences: the tape holds B x heads x T x T probabilities per layer. */
typedef struct qsur_gpu_train qsur_gpu_train;

/* Device buffers for passes of B sequences of T tokens of a model of shape
 * cfg: weights, their gradients, the tape, scratch. */
int qsur_gpu_train_new(qsur_gpu_train **out, const qsur_llama_config *cfg, int B, int T,
                       qsur_error *err);
void qsur_gpu_train_free(qsur_gpu_train *t);
/* Bytes of GPU memory the buffers take. */
double qsur_gpu_train_bytes(const qsur_gpu_train *t);
/* Uploads m's forward weights, norms, embeddings, classifier and hooks (its
 * shape must be the buffers'); refused when qsur_gpu_train_supported is not. */
int qsur_gpu_train_load(qsur_gpu_train *t, const qsur_llama *m, qsur_error *err);
/* Random weights made on the device (uniform in +-1/sqrt(cols), unit norms,
 * seeded) and the hooks of `hooks`, for benchmarks of real shapes. */
int qsur_gpu_train_random(qsur_gpu_train *t, const qsur_llama_hooks *hooks, uint64_t seed,
                          qsur_error *err);
/* Forward of B x T tokens (rows b*T + t) from position 0, keeping the tape;
 * logits [B*T][vocab] copied to the host when not NULL. */
int qsur_gpu_train_forward(qsur_gpu_train *t, const int *tokens, float *logits, qsur_error *err);
/* OSTQuant's KL-Top loss of the last forward's logits against the teacher's
 * zfp (host, [B*T][vocab]), as qsur_ostquant_loss_eval (qsur/ostquant.h;
 * top-k ties: the lower index), on the device: *kl = the mean over tokens,
 * and weight x dL/dlogits stays on the device for qsur_gpu_train_backward(t,
 * NULL) (weight: this micro-batch's share of the batch). */
int qsur_gpu_train_kltop(qsur_gpu_train *t, const float *zfp, int topk, double weight, double *kl,
                         qsur_error *err);
/* Backward of the last forward given dL/dlogits (host, [B*T][vocab]; NULL:
 * the one qsur_gpu_train_kltop left on the device): the gradients accumulate
 * (+=) on the device. */
int qsur_gpu_train_backward(qsur_gpu_train *t, const float *dlogits, qsur_error *err);
/* Zeroes the device gradients. */
int qsur_gpu_train_zero(qsur_gpu_train *t, qsur_error *err);
/* Copies the device gradients into g (overwritten; g of the model's shape,
 * d_output the classifier's own, as qsur_llama_backward's). */
int qsur_gpu_train_grads(qsur_gpu_train *t, qsur_llama_grads *g, qsur_error *err);

/* OSTQuant's transform side on the GPU (src/backend/cuda/gpu_ostq.c), on the
 * buffers of a qsur_gpu_train t: the base model's folded weights (norm gains
 * in the next linear, as qsur_ostquant's fusion reads them) stay on the GPU
 * in fp32 for the whole run; each step _fuse folds o's current R_res, R_ov
 * and scales into t's weights (fp32 GEMMs, no TF32; the weights RTN'd in
 * place with wspec when it is given), the passes run on t, and _grads applies
 * the weights' STE and the chain rule from t's weight gradients to the
 * parameters on the device. Only the parameters and their gradients cross
 * PCIe. The math of qsur_ostquant_fuse_into and qsur_ostquant_param_grads,
 * other summation orders. */
typedef struct qsur_gpu_ostq qsur_gpu_ostq;

/* hooks: the training model's (activation, wo-input, KV quantizers, online
 * rotations: uploaded to t once here); wspec: the training-time weight
 * quantizer (NULL: weights stay float); random_seed != 0: random base weights
 * made on the device instead of o->base's (benchmarks of real shapes). */
int qsur_gpu_ostq_new(qsur_gpu_ostq **out, qsur_gpu_train *t, const qsur_ostquant *o,
                      const qsur_llama_hooks *hooks, const qsur_quant_spec *wspec,
                      uint64_t random_seed, qsur_error *err);
void qsur_gpu_ostq_free(qsur_gpu_ostq *g);
/* Bytes of GPU memory the base weights and the scratch take (t's apart). */
double qsur_gpu_ostq_bytes(const qsur_gpu_ostq *g);
/* t's weights, norm gains, embeddings and classifier = the fused model of o's
 * current r_res, r_ov, ls (quantized when wspec was given). */
int qsur_gpu_ostq_fuse(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err);
/* After a backward on t (gradients of the weights _fuse made): d_r_res
 * [dim^2], d_r_ov [as o->r_ov], d_ls [o->n_ls], overwritten, as
 * qsur_ostquant_param_grads gives them (Euclidean; log-space for scales).
 * t's weight gradients are consumed. */
int qsur_gpu_ostq_grads(qsur_gpu_ostq *g, const qsur_ostquant *o, double *d_r_res, double *d_r_ov,
                        double *d_ls, qsur_error *err);

/* qsur_fake_quant_backward (qsur/quant_ste.h) of one rows x cols matrix
 * with the training kernels, host in and out. For tests. */
int qsur_gpu_quant_backward(const qsur_quant_spec *q, const float *x, int64_t rows, int64_t cols,
                            const float *dq, float *dx, qsur_error *err);

/* Peak of the device's dense bf16 GEMM (TFLOP/s): n x n x n with fp32
 * accumulation, mean of `reps` after warm-up. For benchmarks. */
int qsur_gpu_bf16_peak(int n, int reps, double *tflops, qsur_error *err);

/* A random-weight model of shape cfg made on the device (weights uniform in
 * +-1/sqrt(cols), unit norms, seeded), for benchmarks of shapes whose host
 * copy would not fit: real shapes without a checkpoint. */
int qsur_gpu_model_random(qsur_gpu_model **out, const qsur_llama_config *cfg,
                          qsur_gpu_precision prec, uint64_t seed, int max_batch, int max_seq,
                          qsur_error *err);

#ifdef __cplusplus
}
#endif

#endif
