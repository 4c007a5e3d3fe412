/* OSTQuant (Hu et al., "OSTQuant: Refining Large Language Model Quantization with
 * Orthogonal and Scaling Transformations for Better Quantization Space
 * Utilization", arXiv 2501.13987) on the Llama runtime: learnable equivalent
 * transform pairs, trained through the quantized model with a KL-Top loss,
 * then fused into the weights.
 *
 * Layout (rows are tokens, x' = x R S^-1 for activations, W' = W R S for the
 * input side of a linear, W' = R^T W for the output side):
 *   R_res   one dim x dim orthogonal on the residual stream, after every RMSNorm
 *           gain has been folded into the next linear (norm gains become 1):
 *           tok_embeddings' = E R, output' = (C diag(g_final)) R, wo' and w2'
 *           rows R^T W, every input-side weight W diag(g) R.
 *   S_attn  per layer, dim scales shared by wq/wk/wv: x_n R S^-1 — S^-1 becomes
 *           the new attention RMSNorm gain, wq/wk/wv columns are multiplied by S.
 *   R_ov, S_ov  per layer and kv head g (GQA: one pair per kv head, shared by its
 *           n_heads/n_kv_heads query heads): v_g' = v_g R_g S_g^-1, so
 *           wv rows of head g <- S_g^-1 R_g^T wv_g, wo columns of every query head
 *           h of group g <- wo_h R_g S_g. With sov_code (the OSTQuant code's
 *           order): v_g' = (v_g S_g^-1) R_g, wv rows <- R_g^T S_g^-1 wv_g,
 *           wo columns <- wo_h S_g R_g.
 *   S_ffn   per layer, dim scales shared by w1/w3 (new ffn RMSNorm gain 1/S).
 *   S_qk    (learn_qk) per layer, kv_dim/2 scales, one per RoPE pair (2i, 2i+1) of
 *           each kv head: wk rows times s, wq rows of the group's query heads
 *           divided by s; a pair's common scale commutes with its rotation, so
 *           q.k is exact (the OSTQuant code scales single channels before RoPE,
 *           which is not an exact equivalence).
 *   S_ud    per layer, hidden scales between w3 (up) and w2 (down): w3 rows / S,
 *           w2 columns * S (silu sits on w1 only, so the product scales exactly).
 *   H       only when activations are quantized (aspec bits < 16): an online
 *           Hadamard on the input of w2 (rows of hidden_dim): w2 <- w2 H and the
 *           w2_in hook applies x <- x H; hidden 172 = 4 x 43 is the Williamson
 *           matrix. Weight-only runs have H = I: everything is fused offline.
 *   H_qk    when the KV cache is quantized (bits < 16) and kv_hadamard is on: an
 *           online Hadamard of head_size on q and k after RoPE (QuaRot).
 * Scalings are learned as log s (Adam); orthogonals with Cayley-Adam on the
 * orthogonal group (qsur/stiefel.h).
 *
 * WOMI initialisation (weight-outlier-minimising, paper Sec. 3.3): for each
 * orthogonal, Sigma = sum over the weights it touches of G_W / ||W||_F^2, with
 * G_W the Gram matrix along the rotated axis (A^T A for an input side A =
 * W diag(g), W W^T for an output side); Sigma = Q Lambda Q^T (dsyevd, columns
 * in descending eigenvalue order); R_init = Q H with H the normalised Hadamard
 * of that size: Q decorrelates the weight channels, H then spreads each
 * eigen-direction evenly over all channels (no outlier channel). R_ov uses wv_g
 * (rows of head g: wv_g wv_g^T) and the wo column blocks of its query heads
 * (wo_h^T wo_h). Scales start at 1. Without WOMI: R_res = H, R_ov = H.
 *
 * Losses on the next-token logits z (quantized) and z_fp (full precision,
 * untransformed model), averaged over tokens:
 *   KL-Top  K = the top-k indices of z_fp; p = softmax(z_fp[K]), q = softmax(z[K])
 *           (both renormalised over K); L = sum_K p log(p/q); dL/dz_K = q - p.
 *   CE      cross entropy of z against the next calibration token.
 *   MSE     mean over tokens and vocabulary of (z - z_fp)^2.
 * Quantizer gradients: qsur/quant_ste.h (STE; symmetric scale gradient). */
#ifndef QSUR_OSTQUANT_H
#define QSUR_OSTQUANT_H

#include <stdint.h>
#include "qsur/llama.h"
#include "qsur/llama_qsur.h"
#include "qsur/llama_rotations.h"
#include "qsur/llama_train.h"
#include "qsur/stiefel.h"

typedef enum { QSUR_OSTQ_KLTOP = 0, QSUR_OSTQ_CE, QSUR_OSTQ_MSE } qsur_ostquant_loss;

const char *qsur_ostquant_loss_name(qsur_ostquant_loss l); /* "kltop", "ce", "mse" */

/* Most threads a training step's batch is split over (opts.threads). */
#define QSUR_OSTQ_MAX_THREADS 16

typedef struct {
    int steps;            /* optimiser steps (default 150) */
    double lr;            /* Cayley-Adam step of the orthogonals (default 0.01) */
    double lr_scale;      /* Adam step of the log-scales (default 0.01) */
    qsur_ostquant_loss loss;
    int topk;             /* KL-Top k (default 64 for a 512 vocabulary) */
    int womi;             /* 1: WOMI initialisation, 0: Hadamard */
    int learn_scales;     /* 0: scales stay 1 (ablation) */
    int batch;            /* calibration sequences per step (default 4) */
    int seq_len;          /* tokens per sequence (0: the token file's) */
    int max_seqs;         /* calibration sequences used (0: all) */
    int eval_every;       /* eval perplexity every N steps (0: never) */
    int eval_seqs;        /* sequences of the eval stream per evaluation (default 16) */
    int kv_hadamard;      /* online Hadamard on q/k when the KV cache is quantized (1) */
    int qsur_every;       /* live QSUR of every transformed layer every N steps, at the
                             start and at the last step (default 10; 0: never) */
    int qsur_tokens;      /* probe tokens of that measurement (default 512, see
                             qsur_ostquant_qsur) */
    uint64_t seed;        /* batch order, Hadamard fallback blocks */
    /* Options of the OSTQuant code's protocol (docs/ostquant.md); 0 = the
     * original qsur behaviour in each. */
    int no_wquant;        /* 1: weights stay float during training (GPTQ after) */
    double clip_grad;     /* > 0: scale the step's gradients (R_res, R_ov, and the scales
                             as d/ds = e^-ls d/dls) to this global L2 norm when above */
    int lr_decay;         /* 1: both lrs decay linearly, lr (steps - t) / steps at step t */
    int radam;            /* 1: geoopt's RiemannianAdam scaling (qsur_stiefel_adam.canonical) */
    int stabilize;        /* > 0: geoopt's RiemannianAdam(stabilize=N) on the orthogonals: every
                             N steps their momentum is re-projected, which doubles it
                             (qsur_stiefel_adam.stabilize; the OSTQuant code: 10) */
    int keep_last;        /* 1: keep the last step's parameters (no selection batch) */
    int klt;              /* with womi: the OSTQuant code's KLT start instead of WOMI:
                             R_res from the centred covariance of every input-side
                             weight row (wq wk wv w1 w3, all layers) stacked, R_ov
                             from the wo columns of the group's heads; eigenvectors
                             ascending, times a Hadamard with random signs (D H) */
    int learn_qk;         /* 1: also learn S_qk, one scale per RoPE pair of each kv head:
                             wk rows times s, the matching wq rows divided by s (q.k
                             and RoPE unchanged); log-scales after ud in ls */
    int threads;          /* the batch split over this many threads (1..QSUR_OSTQ_MAX_THREADS;
                             0 or 1: none); the same math, the last bits may differ */
    int code_smooth;      /* 1: S_ud and S_qk as the OSTQuant code applies them, not exact
                             equivalences: w2 columns scaled after the fused Hadamard
                             (w2' = R^T w2 H S_ud, the activation g S_ud^-1 H), and S_qk
                             one scale per row of wk (kv_dim scales a layer), so RoPE
                             sees unequal pair scales; the loss trains the change.
                             Weight-only runs (no online Hadamard) fuse the same
                             function offline: w2' = R^T w2 H S_ud H^T */
    int ste_const;        /* 1: asymmetric act/KV quantizers' scale treated as a constant
                             in the STE (qsur before issue 14; ablation) */
    int reshuffle;        /* 1: a new seeded batch order every pass over the sequences
                             (0: one order, cycled) */
    int wquant_code;      /* with weights fake-quantized in training: the OSTQuant code's
                             training-time weight quantizer, clip search by squared
                             error (clip_norm 2) and the scale a constant in the STE
                             (its search runs on detached values); 0: the wspec as given */
    int rand_signs;       /* with womi = 0: the Hadamard start with random signs (the
                             OSTQuant code's random_hadamard_matrix), drawn from seed,
                             R_res and every R_ov its own; 0: plain Hadamards */
    int sov_code;         /* 1: S_ov before R_ov, as the OSTQuant code fuses them:
                             v' = (v / s) R_ov (wv'_g = R_g^T S_g^-1 wv''_g) and the wo
                             column block of head h Y_h S_g R_g; 0: qsur's order,
                             v' = (v R_ov) / s (wv'_g = S_g^-1 R_g^T wv''_g, Y_h R_g S_g).
                             Both exact; the V and wo-input quantizers see another basis */
    int sov_train;        /* 1: train S_ov as the OSTQuant code's training forward uses it:
                             wo's ROWS (outputs) times S_ov expanded to the query heads,
                             wo' = R^T (S_row wo) with the head blocks times R_g and no
                             column scale, while v keeps its 1/s, so the trained function
                             is not the float model's; the final fusion stays the exact
                             equivalence (columns). qsur_ostquant_fuse_into gives the
                             training-time function, qsur_ostquant_fuse(_model) the
                             deployed one */
    int online_w2;        /* 1: the online Hadamard before w2 also when activations are
                             float (weight-only), as the OSTQuant code keeps it
                             (online_hadamard=down); 0: only with quantized activations,
                             so a weight-only model exports to any Llama runtime */
    int gpu;              /* 1: each step on the GPU (qsur/backend.h: qsur_gpu_ostq_*
                             fuses the parameters into the device-resident base
                             weights, applies the STE and the chain rule there;
                             qsur_gpu_train_* runs the passes, fp32; the batch is not
                             split over threads, micro-batches of one sequence for
                             models >= 2048 wide; the teacher's logits computed
                             on the GPU up front); the R_ov and scale optimisers
                             and Cayley-Adam's moments on the CPU */
} qsur_ostquant_opts;

qsur_ostquant_opts qsur_ostquant_default(void);

typedef struct {
    int step;             /* 1-based step count when the row was taken */
    double loss, kltop;   /* training loss and KL-Top (k = topk) of that batch */
    double ppl;           /* eval perplexity, NAN when not evaluated */
} qsur_ostquant_log;

/* Cumulative wall time (seconds, monotonic clock) of qsur_ostquant_train by
 * phase, for benchmarks. Never reset by train: zero it to time one call. */
typedef struct {
    double fuse;      /* parameters handed to the batch parts, fused norm gains, hooks */
    double wquant;    /* 0: the weights are fake-quantized inside forward and backward */
    double forward;   /* quantized training forward (keeps the tape), making each fused,
                         fake-quantized linear as it goes */
    double teacher;   /* float teacher forward */
    double loss;      /* loss and dL/dlogits */
    double backward;  /* backward through the quantized model, making each linear again,
                         with the weight STE and the chain rule of each linear (opts.gpu:
                         forward, loss and backward of the micro-batches together; the
                         fusion in fuse, the STE and chain rule in chain) */
    double ste;       /* 0: inside backward */
    double chain;     /* the parts' parameter gradients summed */
    double optim;     /* Cayley-Adam and Adam steps */
    double select;    /* selection-batch checks (fuse, quantize, forward, loss) */
    double eval;      /* eval perplexity (eval_every) */
    double qsur;      /* live QSUR measurements (qsur_every) */
    double total;     /* the whole train call */
} qsur_ostquant_timing;

typedef struct qsur_ostquant {
    qsur_ostquant_opts opts;
    qsur_quant_spec wspec, aspec, kvspec;
    qsur_quant_spec aospec;         /* wo's input (hooks.act_wo; bits 0: aspec), set by the
                                       caller after _new (zeroed there) */
    qsur_llama_config cfg;          /* of the fused model (untied classifier) */
    const qsur_llama *base;         /* the base model (borrowed: it must outlive o and stay
                                       unchanged); its weights are read through the store,
                                       folded (norm gains into the next linear) and fused one
                                       linear at a time, never copied whole */
    /* parameters */
    double *r_res;                  /* d*d */
    double *r_ov;                   /* [L][n_kv][hs*hs] */
    double *ls;                     /* log scales: [L][d] attn, [L][kv] ov, [L][d] ffn, [L][hd] ud */
    int64_t n_ls;
    /* best parameters so far: lowest loss on a fixed selection batch of the
     * calibration stream (checked every 10 steps and at the end) */
    double *best_r_res, *best_r_ov, *best_ls;
    double best_ema;                /* the best selection loss (INFINITY before the first) */
    double ema;                     /* EMA of the training loss, for display */
    double last_select;             /* the latest selection loss */
    int best_step;
    /* optimiser state */
    qsur_stiefel_adam *opt_res, **opt_ov;
    qsur_adam *opt_ls;
    int step;                       /* steps done */
    /* the parameters the optimiser reached (train() leaves the best ones in
     * r_res/r_ov/ls): the next train() and the state file continue from these,
     * so N steps + save + resume M steps == N + M steps in one go */
    double *cur_r_res, *cur_r_ov, *cur_ls;
    int has_cur;
    uint64_t base_hash;             /* of the base model's float weights (state file check) */
    qsur_ostquant_log *log;         /* one row per step */
    int nlog, caplog;
    /* live QSUR (qsur_every): one table per measurement, step = steps done
     * (0: the start point), of the parameters the optimiser was at then. A
     * progress callback may read qlog[nqlog - 1]: train() measures before the
     * tick of that step. qsur_opt (default qsur_options_default) is what the
     * caller wants measured (alpha, cube, method); not saved in the state. */
    qsur_llama_qsur *qlog;
    int nqlog, capqlog;
    qsur_options qsur_opt;
    /* run-time pieces */
    qsur_llama_rotations *rot;
    qsur_hadamard_plan *ud_had;     /* code_smooth without the online w2 Hadamard
                                       (weight-only): H of hidden_dim, for the offline
                                       w2' = R^T w2 H S_ud H^T (what the code's online
                                       Hadamard computes, fused) */
    qsur_ostquant_timing time;      /* where train's time went (not saved) */
} qsur_ostquant;

/* Folds base (its float weights; wq copies are ignored), initialises the
 * transforms (WOMI or Hadamard) and the optimisers. The specs are the weight,
 * activation and KV quantizers to train for (bits 16 = off). */
int qsur_ostquant_new(qsur_ostquant **out, const qsur_llama *base, const qsur_ostquant_opts *opts,
                      const qsur_quant_spec *wspec, const qsur_quant_spec *aspec,
                      const qsur_quant_spec *kvspec, qsur_error *err);
void qsur_ostquant_free(qsur_ostquant *o);

/* Trains from o->step to opts.steps on the calibration stream. eval (may be
 * NULL) is only scored, every eval_every steps. With qsur_every > 0 the live
 * QSUR (qsur_ostquant_qsur) is appended to qlog at the start of the call
 * (unless qlog already ends at o->step), every qsur_every steps and at the last
 * step, before that step's tick. Progress ticks once per step
 * with value = the training loss and what = "step I/N kl=K" (with opts.gpu,
 * first "upload" per layer and "teacher" per sequence while the teacher's
 * logits are computed on the GPU). On interruption
 * the best parameters so far are restored and QSUR_ERR_INTERRUPTED returned
 * (o stays valid: fuse it, save it, or train again to continue). At the end
 * the best parameters are restored as well. */
int qsur_ostquant_train(qsur_ostquant *o, const qsur_llama *base, const qsur_tokens *calib,
                        const qsur_tokens *eval, const qsur_progress *prog, qsur_error *err);

/* 1 when o's steps can run on the GPU (opts.gpu): the GPU kernels implement its
 * activation, wo-input and KV quantizers and, when the weights train quantized,
 * its training-time weight quantizer, and it does not train S_ov the code's way
 * (sov_train: the GPU's fusion has the exact S_ov alone). Else 0, with the
 * reason in why (may be NULL). Says nothing of whether a GPU is present. */
int qsur_ostquant_gpu_supported(const qsur_ostquant *o, char *why, size_t n);

/* The training sequence length T (opts.seq_len, else the stream's, at most the
 * model's) and the number of calibration sequences used (max_seqs, else all). */
void qsur_ostquant_shape(const qsur_ostquant *o, const qsur_tokens *calib, int *T, int *nseq);

/* QSUR of every transformed layer (qsur/llama_qsur.h: the q/k/v, wo, w1/w3
 * and w2 inputs of every block and their fused weights) for the parameters now
 * in r_res/r_ov/ls: fuses them into a new float model (online rotations on)
 * and measures it with o->qsur_opt on the probe batch: the first T tokens (see
 * qsur_ostquant_shape) of each of the first ceil(qsur_tokens / T) calibration
 * sequences (of the whole stream, also past max_seqs: it only measures), in
 * file order, fixed for the whole
 * run so the numbers of different steps compare. When T is the stream's
 * sequence length these are the tokens `calib FILE seqs=K` captures.
 * out->step = o->step. */
int qsur_ostquant_qsur(const qsur_ostquant *o, const qsur_tokens *calib, qsur_llama_qsur *out,
                       qsur_error *err);

/* A new model with every transform fused into the weights, hooks set
 * (act/kv specs, online Hadamards pointing into *rot, which the caller owns and
 * must keep alive as long as the model), made linear by linear: each fused
 * linear is stored in its base linear's dtype (float32 stays float32; F16/BF16
 * round to nearest even) and, with wspec (NULL: none), RTN-quantized from its
 * float32 fused weights into packed codes (qsur_llama_linear_spec per width)
 * before that. The base's mapped pages read for a block are handed back as it
 * goes. Ticks prog once per block; on error or interruption nothing is made. */
int qsur_ostquant_fuse_model(const qsur_ostquant *o, const qsur_quant_spec *wspec, const qsur_progress *prog,
                             qsur_llama **model, qsur_llama_rotations **rot, qsur_error *err);
/* The same without quantization or progress. */
int qsur_ostquant_fuse(const qsur_ostquant *o, qsur_llama **model, qsur_llama_rotations **rot,
                       qsur_error *err);

/* Writes the fused float weights of the current parameters into fm, a float
 * model of o->cfg (qsur_llama_new): for tests of small models (and the GPU
 * step's tests: its own fusion runs on the device); the training-time function
 * (with opts.sov_train not the deployed one). QSUR_ERR_NOMEM
 * (fm untouched) when its scratch cannot be had. */
int qsur_ostquant_fuse_into(const qsur_ostquant *o, qsur_llama *fm, qsur_error *err);
/* Chain rule from gradients w.r.t. the fused float weights of fm (d_output
 * separate, untied) to the parameters: d_r_res [d*d], d_r_ov [like r_ov],
 * d_ls [n_ls] (overwritten; Euclidean gradients, log-space for scales). */
int qsur_ostquant_param_grads(const qsur_ostquant *o, const qsur_llama *fm,
                              const qsur_llama_grads *g, double *d_r_res, double *d_r_ov,
                              double *d_ls, qsur_error *err);

/* Loss on logits z ([N][V]) against z_fp; tokens [N] (rows b*T + t) give the
 * CE targets (the next token of the same sequence). Writes dz = dL/dz (may be
 * NULL) and returns the loss; *kltop receives the KL-Top value either way. */
double qsur_ostquant_loss_eval(qsur_ostquant_loss kind, int topk, const float *z,
                               const float *z_fp, const int *tokens, int B, int T, int V,
                               float *dz, double *kltop);

/* State file (safetensors, written atomically through qsur_safetensors_write):
 * every double array X is stored as three F32 tensors X, X.lo, X.lo2 with
 * X + X.lo + X.lo2 == the double exactly (hi = (float)x, lo = (float)(x - hi),
 * lo2 = x - hi - lo), so a resumed run is bit-identical; arrays: r_res, r_ov,
 * ls (the optimiser's current point), best_r_res, best_r_ov, best_ls,
 * adam_res.m, adam_ov.m (all heads concatenated), adam_ov.v (one per head),
 * adam_ls.m, adam_ls.v; "log" F32 [nlog][4] (step, loss, kltop, ppl; -1 = none);
 * "qsur_log" F32 [nqlog * n_layers * 4][8] (step, layer, site, probe tokens,
 * x log10, x per-dim, w log10, w per-dim; log10 +1 = singular, since the file
 * holds no -inf and a real log10 QSUR is < 0), written only when
 * there is a measurement and optional on load, like the metadata qsur_every,
 * qsur_tokens, qsur_alpha and qsur_cube (state files from before the live QSUR).
 * __metadata__: "qsur.kind" = "ostquant-state", "version" = "1", step,
 * best_step, best_loss, ema, last_select, adam_res.v, adam_res.t, adam_ov.t,
 * adam_ls.t, every option (steps lr lr_scale loss topk womi learn_scales batch
 * seq_len max_seqs eval_every eval_seqs kv_hadamard seed), wspec/aspec/kvspec
 * (qsur_quant_spec_format), the model config (dim hidden_dim n_layers n_heads
 * n_kv_heads vocab_size) and base_hash, an FNV-1a hash of the base model's
 * float weights. load checks config and hash against `base` (a different
 * model is an error) and returns an object ready to train on. */
int qsur_ostquant_save(const qsur_ostquant *o, const char *path, qsur_error *err);
/* The hash stored as base_hash (FNV-1a of the float weights `w`). */
uint64_t qsur_ostquant_base_hash(const qsur_llama *base);
int qsur_ostquant_load(qsur_ostquant **out, const qsur_llama *base, const char *path,
                       qsur_error *err);

#endif
