/* The model store: how a linear's weights are held and the only ways to read
 * or change them (docs/scale.md has the memory model).
 *
 * A linear is in one of two forms:
 *   stored  w == NULL, st.data holds rows x cols in the file's dtype (F32, F16
 *           or BF16), mapped from the checkpoint or owned; q/k rows of an HF
 *           checkpoint stay in HF's rotate-half order (st.rope_heads) and are
 *           put in the Meta order as they are read;
 *   float   w holds owned float32 weights (st.data == NULL): the form a linear
 *           takes when a method edits it (copy-on-write, qsur_llama_linear_own),
 *           until qsur_llama_linear_store_back puts it back in its dtype.
 * Quantized weights are either packed (qp: integer codes, two per byte up to
 * 4 bits, plus the per-group maps of qsur/qweight.h) or a float copy wq.
 *
 * Readers never need the whole model in float32: the forward pass converts
 * one slice of one linear at a time into scratch. */
#ifndef QSUR_LLAMA_STORE_H
#define QSUR_LLAMA_STORE_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/llama.h"
#include "qsur/mapped_file.h"
#include "qsur/qweight.h"

struct qsur_llama_packed {
    qsur_quant_spec spec;
    int64_t rows, cols, groups, nparams; /* as qsur_qweight */
    qsur_qparams *params;                /* nparams maps */
    uint8_t *codes;     /* code - lo of every element, row-major; bits <= 4: two
                           per byte (even element in the low nibble) */
};

/* Float32 rows r0..r1-1 (Meta order) of the linear's weights (w, or the
 * stored form converted) into dst ((r1 - r0) x cols). */
void qsur_llama_linear_read_rows(const qsur_llama_linear *l, int64_t r0, int64_t r1, float *dst);
/* The same rows of the weights the forward pass uses: the packed codes
 * decoded, else wq, else the weights. */
void qsur_llama_linear_forward_rows(const qsur_llama_linear *l, int64_t r0, int64_t r1,
                                    float *dst);
/* The float32 weights the forward pass uses when they exist as such (wq,
 * else w, else an F32 stored form in Meta order, mapped or owned), without
 * converting anything; NULL when they need decoding or widening (packed
 * codes, F16/BF16, HF q/k row order). */
const float *qsur_llama_linear_f32(const qsur_llama_linear *l);
/* A float32 view of the whole weights: l->w when the linear is in float form,
 * else the stored form converted into scratch (rows x cols floats). */
const float *qsur_llama_linear_weights(const qsur_llama_linear *l, float *scratch);
/* The same for callers without scratch: *view is valid until free(*tmp)
 * (*tmp is NULL when nothing was allocated). */
int qsur_llama_linear_weights_alloc(const qsur_llama_linear *l, const float **view, float **tmp,
                                    qsur_error *err);

/* A reader done with a linear mapped from a checkpoint file hands the pages
 * it touched back to the kernel (they stay in the page cache and fault in
 * again when read): a pass that writes a new model from the old one keeps the
 * old one's resident share from growing with it. No-op for other forms. */
void qsur_llama_linear_release_pages(const qsur_llama_linear *l);
/* Copy-on-write: puts the linear in float form (converting the stored form
 * once, releasing it) so that l->w may be edited. No-op when already float. */
int qsur_llama_linear_own(qsur_llama_linear *l, qsur_error *err);
/* Every linear of the model, the classifier too (methods that edit the whole
 * model in float: the full float32 copy a 7B model cannot afford, so
 * whole-model methods go linear by linear with own + store_back instead). */
int qsur_llama_own_all(qsur_llama *m, qsur_error *err); /* embeddings too */
/* After editing l->w: back to the stored form in dtype (F16/BF16 round to
 * nearest even; F32 keeps w as it is). The model then holds the linear once,
 * in its dtype. */
int qsur_llama_linear_store_back(qsur_llama_linear *l, int dtype, qsur_error *err);
/* The dtype a linear's weights are stored in (F32 once in float form). */
int qsur_llama_linear_dtype(const qsur_llama_linear *l);
/* An in-place edit of l->w between these two: begin puts the linear in float
 * form and remembers its dtype; end drops the (stale) quantized form and
 * stores the weights back in that dtype. A whole-model method that edits
 * linear by linear so holds one linear in float at a time. */
int qsur_llama_linear_edit_begin(qsur_llama_linear *l, int *dtype, qsur_error *err);
int qsur_llama_linear_edit_end(qsur_llama_linear *l, int dtype, qsur_error *err);

/* Quantized weights Q (rows x cols): kept packed when Q is on a grid of spec
 * (fitted by RTN on the weights or on Q itself; decoded bit for bit equal to
 * Q), else as a float copy. Replaces the older quantized form. */
int qsur_llama_linear_set_quant(qsur_llama_linear *l, const float *Q, const qsur_quant_spec *spec,
                                qsur_error *err);
/* The same when the method also gave its codes (GPTQ, QuantEase): packed
 * from qw when qw decodes to Q, else as qsur_llama_linear_set_quant. */
int qsur_llama_linear_set_quant_qw(qsur_llama_linear *l, const float *Q, const qsur_qweight *qw,
                                   qsur_error *err);
/* Round to nearest straight into packed codes (no float copy). */
int qsur_llama_linear_quant_rtn(qsur_llama_linear *l, const qsur_quant_spec *spec,
                                qsur_error *err);
/* Packed codes -> the same values as a float copy wq (for methods that swap
 * wq copies, e.g. CQE+ cross-layer). */
int qsur_llama_linear_unpack(qsur_llama_linear *l, qsur_error *err);
int qsur_llama_linear_is_quantized(const qsur_llama_linear *l);
void qsur_llama_linear_drop_quant(qsur_llama_linear *l);
void qsur_llama_packed_free(qsur_llama_packed *p);
/* Dense codes (one int16 per element, qsur_qweight) of packed weights; NULL
 * when the linear has none or out of memory. */
qsur_qweight *qsur_llama_linear_qweight(const qsur_llama_linear *l);

/* The quantized forms of every linear (classifier included), taken out of
 * the model so that the forward pass runs on the float weights, and put back. */
typedef struct {
    int n;
    float **wq;
    qsur_llama_packed **qp;
} qsur_llama_quant_stash;
int qsur_llama_quant_stash_take(qsur_llama *m, qsur_llama_quant_stash *st, qsur_error *err);
void qsur_llama_quant_stash_put(qsur_llama *m, qsur_llama_quant_stash *st);
/* Keeps the per-layer linears' new forms (frees the stashed ones); the
 * classifier gets its stashed form back. */
void qsur_llama_quant_stash_drop(qsur_llama *m, qsur_llama_quant_stash *st);

/* The quantized forms a whole-model method replaces, kept until it ends so
 * that an error or Ctrl-C puts them back (all-or-nothing). */
typedef struct {
    int n;                    /* qsur_llama_linear_count */
    float **old;
    qsur_llama_packed **oldp;
    unsigned char *taken;
} qsur_llama_quant_undo;
int qsur_llama_quant_undo_new(qsur_llama_quant_undo *u, qsur_llama *m, qsur_error *err);
/* Takes linear i's (qsur_llama_linear_at order) quantized form out, the
 * first time: the method sets the new one. */
void qsur_llama_quant_undo_take(qsur_llama_quant_undo *u, qsur_llama *m, int i);
/* rc != 0: every taken linear gets its old form back (its new one dropped);
 * rc == 0: the old forms are freed. Frees u's arrays. */
void qsur_llama_quant_undo_end(qsur_llama_quant_undo *u, qsur_llama *m, int rc);

/* ---- token embeddings (m->embed) ----------------------------------------- */

/* dst[i][dim] = the float32 embedding of tokens[i] (ids checked by the
 * caller): a copy of the float row, or the stored row widened (bf16 exactly). */
void qsur_llama_embed_rows(const qsur_llama *m, const int *tokens, int64_t n, float *dst);
/* Copy-on-write for the embeddings: puts them in float form (tok_embeddings,
 * and a tied classifier's output.w with them). No-op when already float. */
int qsur_llama_embed_own(qsur_llama *m, qsur_error *err);
/* After m->embed changed form (own, store back, a load): tok_embeddings =
 * embed.w again, and a tied classifier follows the embeddings (output.w =
 * embed.w, or output.st a borrowed view of embed.st). */
void qsur_llama_embed_sync(qsur_llama *m);

/* What the model holds, in bytes. */
typedef struct {
    int64_t mapped;    /* stored weights mapped from files (page cache, reclaimable) */
    int64_t owned;     /* stored weights, float weights, norms and embeddings */
    int64_t quantized; /* packed codes + maps and float wq copies */
} qsur_llama_memory;
void qsur_llama_memory_use(const qsur_llama *m, qsur_llama_memory *u);

/* A spill file: the stored weights of a model a whole-model method makes
 * (OSTQuant's fusion), written linear by linear to an unlinked temporary file
 * in $TMPDIR and mapped read-only when complete, so they sit in the page
 * cache like a checkpoint's (reclaimable, read as needed) instead of owned
 * memory. spill_linear writes rows x cols values of dtype for l; finish maps
 * the file, points every written linear's st there (in_file, like a loaded
 * checkpoint) and hands the file to m (which must map nothing yet): it is
 * closed with m. On failure free it (the linears are left as they were). */
typedef struct qsur_llama_spill qsur_llama_spill;
int qsur_llama_spill_new(qsur_llama_spill **out, qsur_error *err);
int qsur_llama_spill_linear(qsur_llama_spill *s, qsur_llama_linear *l, const void *bytes, int dtype,
                            qsur_error *err);
int qsur_llama_spill_finish(qsur_llama_spill *s, qsur_llama *m, qsur_error *err);
void qsur_llama_spill_free(qsur_llama_spill *s);

/* Checkpoint files the model maps (open safetensors files, say); closed with
 * the model. */
struct qsur_llama_mapping {
    int count;
    void **files;
    void (*close)(void *file);
    const qsur_mapped_file *(*map)(const void *file); /* the bytes file maps */
};
/* m->mapping = mp: the model closes mp's files when it is freed. */
void qsur_llama_mapping_adopt(qsur_llama *m, struct qsur_llama_mapping *mp);
/* The same for one file (closed with close when m is freed); on failure
 * nothing is adopted and the caller still owns file. */
int qsur_llama_mapping_adopt_file(qsur_llama *m, void *file, void (*close)(void *file),
                                  const qsur_mapped_file *(*map)(const void *file), qsur_error *err);
void qsur_llama_mapping_free(struct qsur_llama_mapping *mp);

#endif
