/* llama2.c checkpoints (Karpathy's legacy "v0" format, as in run.c).
 *
 * Layout (all little-endian): 7 int32
 *     dim hidden_dim n_layers n_heads n_kv_heads vocab_size seq_len
 * then float32 arrays, row-major, `out x in` for every linear layer:
 *     token_embedding[vocab][dim]  rms_att[L][dim]  wq[L][dim][dim]
 *     wk[L][kv_dim][dim]  wv[L][kv_dim][dim]  wo[L][dim][dim]  rms_ffn[L][dim]
 *     w1[L][hidden][dim]  w2[L][dim][hidden]  w3[L][hidden][dim]  rms_final[dim]
 *     freq_cis_real[seq_len][head_size/2]  freq_cis_imag[seq_len][head_size/2]
 *     wcls[vocab][dim]    -- only when the header's vocab_size is negative
 * with kv_dim = dim * n_kv_heads / n_heads, head_size = dim / n_heads. The two
 * legacy RoPE tables are skipped on load and regenerated (theta 10000) on write.
 *
 * In the workspace the tensors get Meta-style names:
 *     tok_embeddings [vocab,dim]            norm [dim]
 *     layers.N.attention_norm [dim]         layers.N.ffn_norm [dim]
 *     layers.N.attention.wq [dim,dim]       layers.N.attention.wk [kv_dim,dim]
 *     layers.N.attention.wv [kv_dim,dim]    layers.N.attention.wo [dim,dim]
 *     layers.N.feed_forward.w1 [hidden,dim] layers.N.feed_forward.w2 [dim,hidden]
 *     layers.N.feed_forward.w3 [hidden,dim]
 *     output [vocab,dim]                    -- only when not shared
 * each optionally preceded by a caller-chosen prefix (prepended verbatim). */
#ifndef QSUR_LLAMA2C_H
#define QSUR_LLAMA2C_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/workspace.h"

/* Sanity limits for header values: far above any llama2.c model, low enough
 * that every size computed from them fits comfortably in 64 bits. */
#define QSUR_LLAMA2C_MAX_DIM    (1 << 16)
#define QSUR_LLAMA2C_MAX_HIDDEN (1 << 18)
#define QSUR_LLAMA2C_MAX_LAYERS 1024
#define QSUR_LLAMA2C_MAX_VOCAB  (1 << 22)
#define QSUR_LLAMA2C_MAX_SEQ    (1 << 20)

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads;
    int vocab_size;         /* always positive here (the file's sign is shared_classifier) */
    int seq_len;
    int shared_classifier;  /* 1: logits use tok_embeddings (file vocab_size > 0) */
} qsur_llama2c_config;

/* dim * n_kv_heads / n_heads and dim / n_heads. */
int qsur_llama2c_kv_dim(const qsur_llama2c_config *c);
int qsur_llama2c_head_size(const qsur_llama2c_config *c);

/* Checks every value is positive and below the limits, n_heads divides dim,
 * n_kv_heads divides n_heads, head_size is even (RoPE pairs). `what` names the
 * file in the message. */
int qsur_llama2c_config_validate(const qsur_llama2c_config *c, const char *what,
                                 qsur_error *err);

/* The exact file size a valid config implies (header + every array). */
int qsur_llama2c_file_bytes(const qsur_llama2c_config *c, uint64_t *bytes, qsur_error *err);

/* Parses and validates the 28-byte header of an in-memory file image of
 * `size` bytes (also checks size == qsur_llama2c_file_bytes). */
int qsur_llama2c_parse_header(const unsigned char *data, size_t size, const char *path,
                              qsur_llama2c_config *cfg, qsur_error *err);

/* Reads only the header of path (mmap) and validates it, file size included. */
int qsur_llama2c_read_config(const char *path, qsur_llama2c_config *cfg, qsur_error *err);

/* One tensor of a valid file: Meta name (no prefix), 1-D (rows 1) or 2-D,
 * and the byte offset of its float32 values in the file. */
typedef struct {
    char name[64];
    int ndim;
    int64_t rows, cols;
    size_t offset;
} qsur_llama2c_tensor;
/* The tensors of a file with a validated config, in file order (the legacy
 * RoPE tables left out); out may be NULL to count them. Returns the count. */
int qsur_llama2c_tensors(const qsur_llama2c_config *c, qsur_llama2c_tensor *out);
/* n little-endian float32 values at src (any alignment) -> dst. */
void qsur_llama2c_f32_copy(float *dst, const unsigned char *src, size_t n);

/* Loads every tensor of path into ws under Meta names (prefix may be NULL).
 * All-or-nothing: on any error ws is unchanged. cfg (may be NULL) receives the
 * config; *n_loaded (may be NULL) the number of tensors added. NaN/Inf in any
 * array is an error (QSUR_ERR_NUMERIC) naming the tensor and element. */
int qsur_llama2c_load(qsur_workspace *ws, const char *path, const char *prefix,
                      qsur_llama2c_config *cfg, int *n_loaded,
                      const qsur_progress *progress, qsur_error *err);

/* Writes ws's tensors (names as above, after prefix) as a llama2.c checkpoint
 * for cfg, atomically. Every tensor must exist with exactly the expected
 * shape; `output` is required iff !cfg->shared_classifier. */
int qsur_llama2c_write(const qsur_workspace *ws, const char *prefix,
                       const qsur_llama2c_config *cfg, const char *path,
                       const qsur_progress *progress, qsur_error *err);

#endif
