/* The Llama-architecture runtime: model, forward pass, evaluation, capture.
 *
 * Model (same math as Karpathy's llama2.c run.c, Meta naming):
 *     x = tok_embeddings[token]
 *     for every layer N:
 *         h  = rmsnorm(x, attention_norm)                 -> "layers.N.attention.in"
 *         q, k, v = h wq^T, h wk^T, h wv^T; RoPE on q, k; online_qk(q), online_qk(k)
 *                                                          -> ".attention.k", ".attention.v"
 *         a  = causal GQA softmax(q k^T / sqrt(hs)) v
 *         x += online_wo(a) wo^T                           -> ".attention.wo.in"
 *         h  = rmsnorm(x, ffn_norm)                        -> ".feed_forward.in"
 *         g  = silu(h w1^T) * (h w3^T)
 *         x += online_w2(g) w2^T                           -> ".feed_forward.w2.in"
 *     logits = rmsnorm(x, norm) output^T     (output = tok_embeddings when shared)
 *
 * RoPE convention: llama2.c/Meta rotate ADJACENT pairs (2i, 2i+1) of each head
 * by angle pos * theta^(-2i/head_size). Hugging Face checkpoints store q_proj
 * and k_proj with the rows of each head permuted for "rotate-half" (pair
 * (i, i + hs/2)); the HF loader undoes that permutation and the HF writer
 * applies it, so inside the engine every model is in the adjacent-pair layout.
 *
 * Every linear weight is `out x in` row-major (rows = output channels). A
 * linear's weights are held ONCE (docs/scale.md): in their stored form `st`
 * (the file's dtype, memory-mapped from the checkpoint where the layout
 * allows, owned otherwise) or, once a method has edited them, as owned float
 * weights `w`. Quantized weights are packed codes + scales `qp` (or, from
 * methods whose result is not on a grid, a float copy `wq`); the forward pass
 * uses qp, else wq, else the weights, materialized per linear in reused
 * scratch (qsur/llama_store.h). Quantization can be changed or undone without
 * touching the weights. */
#ifndef QSUR_LLAMA_H
#define QSUR_LLAMA_H

#include <stddef.h>
#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/quant.h"
#include "qsur/safetensors.h"
#include "qsur/tensor.h"
#include "qsur/tokens.h"
#include "qsur/workspace.h"

/* ---- configuration ------------------------------------------------------ */

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads;
    int head_size;          /* dim / n_heads (filled by qsur_llama_config_check) */
    int kv_dim;             /* head_size * n_kv_heads (filled likewise) */
    int vocab_size, seq_len;
    double rope_theta;      /* 10000 for llama2.c */
    double norm_eps;        /* 1e-5 for llama2.c */
    int shared_classifier;  /* 1: logits use tok_embeddings */
} qsur_llama_config;

/* A config with the llama2.c defaults (theta 10000, eps 1e-5, shared) and
 * every size zero. */
qsur_llama_config qsur_llama_config_default(void);
/* Checks every size is positive, n_heads divides dim, n_kv_heads divides
 * n_heads, head_size is even; fills head_size and kv_dim. `what` names the
 * source (file) in the one-line message. */
int qsur_llama_config_check(qsur_llama_config *c, const char *what, qsur_error *err);

/* ---- model ------------------------------------------------------------- */

/* A linear's weights in the dtype they were stored in (QSUR_DTYPE_F32, F16 or
 * BF16 of qsur/safetensors.h), rows x cols. */
typedef struct {
    int dtype;               /* a qsur_dtype */
    const void *data;        /* NULL when `w` holds the weights */
    void *owned;             /* == data when the model owns it, NULL when mapped */
    int in_file;             /* data points into a checkpoint file's read-only mapping
                                (a copy of this struct carries it with the pointer):
                                only such pages are handed back when the linear is owned */
    int rope_heads;          /* > 0: rows are in HF's rotate-half order for this many
                                heads; reading them gives the Meta order */
} qsur_llama_stored;

typedef struct qsur_llama_packed qsur_llama_packed; /* codes + scales, llama_store.c */

typedef struct {
    char name[QSUR_NAME_MAX]; /* Meta name, e.g. "layers.0.attention.wk" */
    int64_t rows, cols;       /* out, in */
    float *w;                 /* owned float weights, rows x cols, or NULL while the
                                 linear is in its stored form (st); read through
                                 qsur_llama_linear_weights, edit after
                                 qsur_llama_linear_own */
    float *wq;                /* owned fake-quantized float copy or NULL */
    qsur_llama_stored st;     /* the stored form (st.data NULL once w is set) */
    qsur_llama_packed *qp;    /* packed quantized weights or NULL */
} qsur_llama_linear;

typedef struct {
    float *attention_norm;    /* [dim] RMSNorm gain */
    qsur_llama_linear wq, wk, wv, wo;
    float *ffn_norm;          /* [dim] */
    qsur_llama_linear w1, w2, w3;
} qsur_llama_layer;

/* An online transform applied in place to `nrows` rows of length `n` of the
 * activation entering a linear layer (e.g. a Hadamard for QuaRot). The weight
 * of that layer must hold the matching inverse (W R for rows x -> x R). */
typedef struct {
    void (*apply)(void *ctx, float *rows, int64_t nrows, int64_t n);
    void *ctx;
} qsur_llama_online;

/* Run-time quantization and rotation hooks; all off by default. */
typedef struct {
    qsur_quant_spec act;      /* input of every per-layer linear (wq..w3), applied
                                 to the T x in matrix, so QSUR_GRAN_ROW = per token;
                                 bits >= 16: off. The classifier input stays float. */
    qsur_quant_spec act_wo;   /* the input of wo alone when bits > 0 (e.g. per head:
                                 QSUR_GRAN_GROUP of head_size, as the OSTQuant/QuaRot
                                 code quantizes the attention output); bits 0
                                 (hooks_none): wo's input uses `act` like the others.
                                 Read it through qsur_llama_act_wo. */
    qsur_quant_spec kv;       /* K (after RoPE) and V as they enter the cache, on
                                 rows of head_size: QSUR_GRAN_ROW = per head per
                                 token; bits >= 16: off */
    qsur_llama_online qk;     /* rows of head_size of q and of k after RoPE, before
                                 the KV cache (QuaRot's online Hadamard for K-cache
                                 quantization); must be orthogonal so q.k is kept */
    qsur_llama_online wo_in;  /* rows of head_size (one per head per token) */
    qsur_llama_online w2_in;  /* rows of hidden_dim (one per token) */
} qsur_llama_hooks;

typedef struct qsur_llama {
    qsur_llama_config cfg;
    qsur_llama_linear embed;    /* the token embeddings [vocab][dim] ("tok_embeddings"),
                                   held like a linear: stored in the file's dtype
                                   (rows widened as tokens are looked up,
                                   qsur_llama_embed_rows) or float in embed.w */
    float *tok_embeddings;      /* == embed.w: the float embeddings, NULL while they
                                   are in their stored form; code that reads or
                                   edits them as floats calls qsur_llama_embed_own
                                   first (qsur_llama_own_all does) */
    qsur_llama_layer *layers;   /* [n_layers] */
    float *norm;                /* [dim] final RMSNorm gain */
    qsur_llama_linear output;   /* [vocab][dim]; when cfg.shared_classifier,
                                   output.w == tok_embeddings (borrowed) or,
                                   while the embeddings are stored, output.st
                                   is a borrowed view of embed.st */
    qsur_llama_hooks hooks;
    struct qsur_llama_mapping *mapping; /* the checkpoint files the stored
                                           weights map into, or NULL */
} qsur_llama;

/* Hooks with everything off (bits 16, no online transforms; act_wo follows act). */
qsur_llama_hooks qsur_llama_hooks_none(void);
/* The quantizer of wo's input: h->act_wo when its bits are set, else h->act. */
const qsur_quant_spec *qsur_llama_act_wo(const qsur_llama_hooks *h);

/* A model with zeroed weights for a checked config (unit norms are NOT set). */
int qsur_llama_new(qsur_llama **out, const qsur_llama_config *cfg, qsur_error *err);
/* The same, but the linears get no storage: a loader points each one's `st`
 * at its stored weights (every linear must be given one). */
int qsur_llama_new_stored(qsur_llama **out, const qsur_llama_config *cfg, qsur_error *err);
void qsur_llama_free(qsur_llama *m);

/* Copies the Meta-named tensors (`prefix` + name, prefix may be NULL) of ws
 * into a new model. Every tensor must exist with exactly its shape (1-D or
 * 2-D); `output` is required iff !cfg->shared_classifier. Errors name the
 * tensor and the expected shape. */
int qsur_llama_from_workspace(qsur_llama **out, const qsur_workspace *ws,
                              const char *prefix, const qsur_llama_config *cfg,
                              qsur_error *err);
/* Puts float32 copies of the weights (not the quantized forms) into ws under
 * Meta names; all-or-nothing. */
int qsur_llama_to_workspace(const qsur_llama *m, qsur_workspace *ws, const char *prefix,
                            qsur_error *err);
/* The same as views: a view's float32 data is made when it is first looked
 * up (qsur_workspace_find), so listing costs nothing and only the tensors the
 * user touches cost memory. The views read the model: put them again after
 * the model changes, and before it is freed (a put replaces them). */
int qsur_llama_view_workspace(const qsur_llama *m, qsur_workspace *ws, const char *prefix,
                              qsur_error *err);

/* Copies back into m every Meta-named tensor (`prefix` + name) that ws holds,
 * e.g. after a rotation was applied to the workspace copies; tensors ws lacks
 * are left alone. Shapes are checked for all before anything is copied
 * (all-or-nothing). The wq copy of every updated linear is dropped (it would
 * be stale): quantize again afterwards. *n_updated (may be NULL) gets the count. */
int qsur_llama_sync_from_workspace(qsur_llama *m, const qsur_workspace *ws, const char *prefix,
                                   int *n_updated, qsur_error *err);

/* llama2.c checkpoint (see qsur/llama2c.h). */
int qsur_llama_load_llama2c(qsur_llama **out, const char *path,
                            const qsur_progress *prog, qsur_error *err);
/* Hugging Face Llama directory: config.json plus model.safetensors or a
 * sharded model.safetensors.index.json; F32/F16/BF16; a linear stored as
 * NAME.qweight/.scales/.zeros (see qsur_llama_save_hf_ex) or GPTQ-packed
 * (NAME.qweight/.qzeros/.scales/.g_idx, qsur/gptq_pack.h) is dequantized. */
int qsur_llama_load_hf(qsur_llama **out, const char *dir,
                       const qsur_progress *prog, qsur_error *err);
/* The safetensors file of an HF directory that holds the metadata: the
 * model.safetensors, or the first shard its index names. */
int qsur_llama_hf_first_file(const char *dir, char *path, size_t n);
/* A directory -> HF, a file -> llama2.c. */
int qsur_llama_load(qsur_llama **out, const char *path, const qsur_progress *prog,
                    qsur_error *err);
/* Writes dir/config.json and dir/model.safetensors (each atomically; dir must
 * exist) from the weights (not the quantized forms). dtype: "F32", "F16" or
 * "BF16". Tensors are streamed one by one: nothing model-sized is allocated. */
int qsur_llama_save_hf(const qsur_llama *m, const char *dir, const char *dtype,
                       qsur_error *err);

/* What qsur_llama_save_hf_ex writes. Per-layer linears (q/k/v/o, gate/up/down):
 *   int_spec == NULL: NAME.weight in dtype, from wq when use_wq and wq is set
 *     (the fake-quantized values), else from w;
 *   int_spec != NULL: NAME.qweight (I8 codes when symmetric, U8 when not,
 *     rows x cols, q/k rows in the HF layout), NAME.scales (F32, rows x groups,
 *     1x1 per tensor) and, asymmetric only, NAME.zeros (F32, integer-valued):
 *     w = (qweight - zeros) * scales for the group of G = cols / groups
 *     columns. The codes decode bit-exactly to the forward weights (wq, or w
 *     when unset) or the save fails. Embeddings, norms, lm_head stay float.
 * meta_kv: meta_count extra __metadata__ pairs (2*meta_count strings). */
typedef struct {
    const char *dtype;               /* "F32" (NULL), "F16", "BF16" */
    int use_wq;
    const qsur_quant_spec *int_spec;
    const char *const *meta_kv;
    int meta_count;
    int64_t shard_bytes;             /* 0: QSUR_HF_SHARD_BYTES; more data than this
                                        goes to model-0000K-of-0000N.safetensors
                                        shards plus model.safetensors.index.json */
    const qsur_progress *progress;   /* may be NULL */
    int gptq;                        /* with int_spec: GPTQ-packed (qsur/gptq_pack.h), plus
                                        quantize_config.json and config.json's
                                        quantization_config */
} qsur_llama_hf_save_opts;
/* Hugging Face's default shard size (5 GB). */
#define QSUR_HF_SHARD_BYTES ((int64_t)5000000000)
/* HF config.json of c (atomically); dtype "F32", "F16" or "BF16". */
int qsur_llama_write_config(const qsur_llama_config *c, const char *path, const char *dtype,
                            qsur_error *err);
/* Writes nt tensors into dir the way Hugging Face shards a checkpoint:
 * model.safetensors, or model-0000K-of-0000N.safetensors files of at most
 * shard_bytes (0: 5 GB) plus model.safetensors.index.json. put(ctx, i, w)
 * streams the values of tensor i into w. Every file is complete before any
 * takes its name; on failure nothing is left (a stale index or single file
 * of an older checkpoint is removed on success). */
int qsur_hf_write_sharded(const char *dir, const qsur_st_desc *d, int nt, int64_t shard_bytes,
                          const char *const *meta_kv, int meta_count,
                          int (*put)(void *ctx, int i, qsur_st_stream *w, qsur_error *err),
                          void *ctx, const qsur_progress *prog, qsur_error *err);
int qsur_llama_save_hf_ex(const qsur_llama *m, const char *dir,
                          const qsur_llama_hf_save_opts *opts, qsur_error *err);

/* Gives the classifier its own copy of tok_embeddings (needed before folding
 * the final norm into it or transforming it apart from the embedding). */
int qsur_llama_untie_classifier(qsur_llama *m, qsur_error *err);

/* Number of per-layer linears (7 * n_layers) and the i-th one in the order
 * layer 0: wq wk wv wo w1 w2 w3, layer 1: ... The classifier is not included. */
int qsur_llama_linear_count(const qsur_llama *m);
qsur_llama_linear *qsur_llama_linear_at(qsur_llama *m, int i);
/* By Meta name ("layers.3.feed_forward.w2", or "output"); NULL if unknown. */
qsur_llama_linear *qsur_llama_linear_find(qsur_llama *m, const char *name);

/* Sets wq = Q(w), float copies, for every per-layer linear (embeddings and
 * classifier stay float, as in QuaRot/OSTQuant): for training paths that read
 * wq (OSTQuant's fused model). All-or-nothing: on error or interruption the
 * previous quantized forms are kept. */
int qsur_llama_quantize_weights(qsur_llama *m, const qsur_quant_spec *spec,
                                const qsur_progress *prog, qsur_error *err);
/* Round to nearest into packed codes (qsur/llama_store.h) with a per-linear
 * spec: spec_for(spec, cols) gives the quantizer of a linear with cols input
 * columns (e.g. a group size adapted to the width). All-or-nothing. */
int qsur_llama_quantize_each(qsur_llama *m, const qsur_quant_spec *spec,
                             qsur_quant_spec (*spec_for)(const qsur_quant_spec *spec, int64_t cols),
                             const qsur_progress *prog, qsur_error *err);
/* Frees every wq copy: the forward pass uses the float weights again. */
void qsur_llama_dequantize_weights(qsur_llama *m);

/* ---- forward pass -------------------------------------------------------- */

typedef struct {
    double gemm;       /* seconds in sgemm for the linears and classifier */
    double attention;  /* scores, softmax, P V (including their sgemm) */
    double quant;      /* activation and KV fake quantization */
    double other;      /* embedding, norms, RoPE, SwiGLU, online transforms, loss */
    double convert;    /* of gemm: weights converted to float32 into scratch */
} qsur_llama_timers;

/* Floats of weight scratch a run state holds at most (64 MiB). */
#define QSUR_WBUF_FLOATS ((int64_t)16 << 20)

struct qsur_llama_capture_sink; /* private to llama_capture.c */

/* Buffers for B sequences of up to max_seq positions, allocated once
 * (llama2.c's RunState). Activation buffers are (B*T) x features row-major,
 * row b*T + t for sequence b, position t of the current call. */
typedef struct {
    int max_batch, max_seq;
    int dim, hidden_dim, kv_dim, n_heads, head_size, n_layers, vocab_size;
    float *x;          /* [B*S][dim]    residual stream */
    float *xb;         /* [B*S][dim]    normed input / attention output */
    float *xb2;        /* [B*S][dim]    linear output */
    float *q;          /* [B*S][dim] */
    float *k, *v;      /* [B*S][kv_dim] K, V of the current call */
    float *hb, *hb2;   /* [B*S][hidden] */
    float *xq;         /* [B*S][max(dim,hidden)] quantized linear input */
    float *att;        /* [4 x 32][S]     a block of one head's scores per thread */
    float *key_cache;  /* [L][B][S][kv_dim] */
    float *value_cache;
    float *rope_cos, *rope_sin; /* [S][head_size/2] */
    float *logits;     /* [B*S][vocab] */
    int pos;           /* positions already in the cache (next free position) */
    qsur_llama_timers timers;
    struct qsur_llama_capture_sink *capture; /* NULL unless capturing */
    int run_layers;    /* > 0: forward stops after this many layers (capture) */
    int no_matvec;     /* 1: a few token rows also multiply bf16 weights widened
                          into wbuf (the benchmark's baseline), not qsur_bf16_matvec */
    float *wbuf;       /* scratch: a slice of one linear's weights in float32 */
    int64_t wbuf_floats;
} qsur_llama_state;

int qsur_llama_state_new(qsur_llama_state **out, const qsur_llama *m, int max_batch,
                         int max_seq, qsur_error *err);
void qsur_llama_state_free(qsur_llama_state *s);

/* Runs B sequences of T new tokens (tokens[b*T + t]) at positions pos..pos+T-1,
 * attending to the cached positions 0..pos-1 of the same sequences (pos = 0:
 * a fresh batch). Writes logits[(b*T + t) * vocab + j] into s->logits and
 * sets s->pos = pos + T. Checks tokens, B <= max_batch, pos + T <= max_seq,
 * and that the state was made for this model's shape. */
int qsur_llama_forward(const qsur_llama *m, qsur_llama_state *s, const int *tokens,
                       int B, int T, int pos, qsur_error *err);

/* One transformer block (layer) on the residual stream s->x of B fresh
 * sequences of T positions, in place: what qsur_llama_forward does to s->x
 * at that layer (same hooks, capture points and sgemm shapes, so the same
 * bits). Block-by-block calibration (qsur/llama_calib.h) runs it on the
 * stream it keeps. Leaves the KV cache invalid for decoding (s->pos = 0). */
int qsur_llama_forward_block(const qsur_llama *m, qsur_llama_state *s, int layer, int B, int T,
                             qsur_error *err);

/* Building blocks (exposed for methods that re-implement pieces, e.g. a
 * backward pass): out = x / sqrt(mean(x^2) + eps) * g, per row. out may be x. */
void qsur_llama_rmsnorm(float *out, const float *x, const float *g, int64_t rows,
                        int64_t n, double eps);
/* Rotates the adjacent pairs of every head of `rows` rows of n_heads*head_size
 * values, row r at position pos0 + r; cos/sin tables [pos][head_size/2]. */
void qsur_llama_rope(float *x, int64_t rows, int n_heads, int head_size, int pos0,
                     const float *cos_t, const float *sin_t);
/* g[i] = silu(g[i]) * u[i]. */
void qsur_llama_swiglu(float *g, const float *u, int64_t n);

/* ---- evaluation ---------------------------------------------------------- */

/* Token files (qsur_tokens, qsur_tokens_load): qsur/tokens.h. */

typedef struct {
    double nll;          /* mean negative log-likelihood per predicted token (nats) */
    double ppl;          /* exp(nll) */
    int64_t n_predicted; /* tokens scored: n_seqs * (seq_len - 1) */
    int n_seqs;
} qsur_llama_ppl;

/* Splits the stream into floor(n / seq_len) sequences of seq_len (0: the
 * file's), uses the first max_seqs (0: all), scores every next token of each
 * sequence. batch sequences run per forward call (0: 8). s may be NULL (a
 * state is allocated); passing one accumulates its timers. Ticks progress
 * per batch ("ppl"), value = running perplexity. */
int qsur_llama_perplexity(const qsur_llama *m, qsur_llama_state *s, const qsur_tokens *t,
                          int seq_len, int max_seqs, int batch,
                          const qsur_progress *prog, qsur_llama_ppl *out,
                          qsur_error *err);

/* Greedy decoding: runs the prompt (n_prompt >= 1 tokens) then appends n_new
 * argmax tokens to out[0..n_new-1] with the KV cache. s may be NULL. */
int qsur_llama_generate(const qsur_llama *m, qsur_llama_state *s, const int *prompt,
                        int n_prompt, int n_new, int *out, qsur_error *err);

/* ---- activation capture -------------------------------------------------- */

/* Runs calibration sequences (as in qsur_llama_perplexity) and puts into ws,
 * for every layer N, tokens x features tensors:
 *     layers.N.attention.in        [n][dim]     input of wq/wk/wv
 *     layers.N.attention.wo.in     [n][dim]     input of wo (after wo_in hook)
 *     layers.N.feed_forward.in     [n][dim]     input of w1/w3
 *     layers.N.feed_forward.w2.in  [n][hidden]  input of w2 (after w2_in hook)
 *     layers.N.attention.k         [n][kv_dim]  K after RoPE (and the qk hook)
 *     layers.N.attention.v         [n][kv_dim]
 * The values are those the float linear sees: after online transforms, BEFORE
 * activation/KV fake quantization (the forward itself still applies the hooks).
 * max_tokens > 0 keeps a seeded uniform random subset of that many token
 * positions (the same rows for every tensor, in stream order). All-or-nothing.
 * *n_tokens (may be NULL) receives n. */
int qsur_llama_capture(const qsur_llama *m, qsur_llama_state *s, const qsur_tokens *t,
                       int seq_len, int max_seqs, int batch, int64_t max_tokens,
                       uint64_t seed, qsur_workspace *ws, int64_t *n_tokens,
                       const qsur_progress *prog, qsur_error *err);

/* Which captures to keep: layers first..first+count-1, kinds a bit mask of
 * (1 << k) for k in 0 attention.in, 1 attention.wo.in, 2 feed_forward.in,
 * 3 feed_forward.w2.in, 4 attention.k, 5 attention.v. The forward pass stops
 * after the last selected layer, so capturing layer N costs N + 1 layers. */
typedef struct {
    int first, count;
    unsigned kinds;
} qsur_llama_capture_sel;
/* qsur_llama_capture of the selected tensors only. */
int qsur_llama_capture_some(const qsur_llama *m, qsur_llama_state *s, const qsur_tokens *t,
                            int seq_len, int max_seqs, int batch, int64_t max_tokens,
                            uint64_t seed, const qsur_llama_capture_sel *sel,
                            qsur_workspace *ws, int64_t *n_tokens,
                            const qsur_progress *prog, qsur_error *err);
/* Bytes the selected captures of n_tokens token positions take. */
int64_t qsur_llama_capture_bytes(const qsur_llama *m, const qsur_llama_capture_sel *sel,
                                 int64_t n_tokens);

/* Name of the captured activation that enters a weight:
 * layers.N.attention.{wq,wk,wv} -> layers.N.attention.in,
 * layers.N.attention.wo -> layers.N.attention.wo.in,
 * layers.N.feed_forward.{w1,w3} -> layers.N.feed_forward.in,
 * layers.N.feed_forward.w2 -> layers.N.feed_forward.w2.in.
 * Writes into buf and returns it, or NULL for any other name. */
const char *qsur_llama_input_of(const char *weight_name, char *buf, size_t n);

/* Accessors for a linear's weights (declared apart, used everywhere). */
#include "qsur/llama_store.h"

#endif
