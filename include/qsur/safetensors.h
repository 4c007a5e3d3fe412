/* Hugging Face safetensors files.
 *
 * Layout: uint64 LE N, then N bytes of JSON
 *     {"__metadata__": {"k": "v", ...},
 *      "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]}, ...}
 * then the data section; offsets are relative to its start. Opening validates
 * the whole header: N within the file and at most 100 MB, every tensor has
 * exactly dtype/shape/data_offsets, dtype is F32, F16 or BF16, begin <= end
 * inside the data section, ranges do not overlap and cover the data section
 * with no gap, shape product x dtype size == END - BEGIN (overflow-checked),
 * no duplicate names, __metadata__ maps strings to strings. I8/U8/I32 are also read. Values are
 * converted to float32 and NaN/Inf is refused when a tensor is read. */
#ifndef QSUR_SAFETENSORS_H
#define QSUR_SAFETENSORS_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/atomic_file.h"
#include "qsur/json.h"
#include "qsur/mapped_file.h"
#include "qsur/progress.h"
#include "qsur/workspace.h"

#define QSUR_ST_MAX_DIMS 8
#define QSUR_ST_MAX_HEADER (100u << 20)

/* I8/U8 hold integers (quantized weight codes): read as their float value;
 * writing them requires integer values in range. I32 holds GPTQ's packed
 * words, which a float cannot hold as a value: read only through
 * qsur_safetensors_read_i32 (read_tensor refuses it); written from a tensor
 * whose floats carry the int32 bit patterns (memcpy in), unchanged and never
 * checked for NaN/Inf. */
typedef enum {
    QSUR_DTYPE_F32 = 0, QSUR_DTYPE_F16, QSUR_DTYPE_BF16, QSUR_DTYPE_I8, QSUR_DTYPE_U8, QSUR_DTYPE_I32
} qsur_dtype;

const char *qsur_dtype_name(qsur_dtype d);  /* "F32", "F16", "BF16", "I8", "U8", "I32" */
int qsur_dtype_size(qsur_dtype d);          /* 4, 2, 2, 1, 1, 4 */

typedef struct {
    const char *name;    /* points into the parsed header */
    qsur_dtype dtype;
    int ndim;            /* 0..QSUR_ST_MAX_DIMS */
    int64_t shape[QSUR_ST_MAX_DIMS];
    uint64_t begin, end; /* byte range within the data section */
} qsur_st_entry;

/* An open, validated file (mapped read-only until closed). */
typedef struct {
    char *path;
    qsur_mapped_file map;
    qsur_json *header;        /* the parsed JSON (owned) */
    const qsur_json *metadata;/* the __metadata__ object or NULL */
    qsur_st_entry *entries;   /* in header order */
    int count;
    uint64_t data_start;      /* 8 + N */
} qsur_safetensors;

int qsur_safetensors_open(qsur_safetensors **out, const char *path, qsur_error *err);
void qsur_safetensors_close(qsur_safetensors *st);
/* Index of the tensor called name, or -1. */
int qsur_safetensors_find(const qsur_safetensors *st, const char *name);
/* A metadata value, or NULL. */
const char *qsur_safetensors_meta(const qsur_safetensors *st, const char *key);
/* Converts entry i to a new float32 tensor named `name` (NULL: its own name).
 * Fails on 0 or more than 4 dimensions, zero size, NaN/Inf. */
int qsur_safetensors_read_tensor(const qsur_safetensors *st, int i, const char *name,
                                 qsur_tensor **out, const qsur_progress *progress,
                                 qsur_error *err);

/* Entry i (dtype I32) as a new array of *n int32 values (little-endian in the
 * file); QSUR_ERR_FORMAT for any other dtype. */
int qsur_safetensors_read_i32(const qsur_safetensors *st, int i, int32_t **out, int64_t *n,
                              qsur_error *err);

/* Every tensor of path into ws as PREFIX+name; all-or-nothing. */
int qsur_safetensors_load(qsur_workspace *ws, const char *path, const char *prefix,
                          int *n_loaded, const qsur_progress *progress, qsur_error *err);

/* Writes count tensors (names must be unique) atomically. dtypes may be NULL
 * (all F32) or give one dtype per tensor (F16/BF16 round to nearest even;
 * a value that overflows F16 is an error). meta_kv holds meta_count
 * key/value pairs as 2*meta_count strings (may be NULL when meta_count is 0). */
int qsur_safetensors_write(const char *path, const qsur_tensor *const *tensors, int count,
                           const qsur_dtype *dtypes, const char *const *meta_kv,
                           int meta_count, const qsur_progress *progress, qsur_error *err);

/* Streaming writer: the header of `count` tensors first, then their values
 * in order, any number of values per put (a tensor may span puts), so a
 * model is written tensor by tensor without holding it. The file appears
 * under its name only at commit (atomic); abort, or any failed put followed
 * by abort, leaves nothing. Values are checked as in qsur_safetensors_write. */
typedef struct {
    const char *name;
    qsur_dtype dtype;
    int ndim;
    int64_t shape[QSUR_MAX_DIMS];
} qsur_st_desc;
int64_t qsur_st_desc_bytes(const qsur_st_desc *d);
typedef struct {
    qsur_atomic_file f;
    const qsur_st_desc *desc; /* borrowed until commit/abort */
    int count, cur, open;
    int64_t done;             /* values of desc[cur] written */
} qsur_st_stream;
int qsur_st_stream_open(qsur_st_stream *w, const char *path, const qsur_st_desc *d, int count,
                        const char *const *meta_kv, int meta_count, qsur_error *err);
int qsur_st_stream_put(qsur_st_stream *w, const float *x, int64_t n, qsur_error *err);
int qsur_st_stream_commit(qsur_st_stream *w, qsur_error *err);
void qsur_st_stream_abort(qsur_st_stream *w);

#endif
