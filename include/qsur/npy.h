/* NumPy .npy files (format versions 1.0, 2.0, 3.0).
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for v1, uint32
 * LE for v2/v3), an ASCII (v3: UTF-8) Python dict literal
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (512, 256), }
 * padded with spaces and a '\n' so the data starts 64-byte aligned, then the
 * raw data. Read: dtypes <f4, <f8, <f2 (converted to float32), C order only,
 * 1..4 dimensions, no NaN/Inf, no zero-size arrays. Write: <f4, v1.0 header
 * (at most 4 dimensions always fit), atomically.
 *
 * The header is held to what numpy itself accepts: exactly the keys descr,
 * fortran_order and shape (once each), printable ASCII strings, no NUL byte,
 * nothing but whitespace after the closing '}'. */
#ifndef QSUR_NPY_H
#define QSUR_NPY_H

#include <stddef.h>
#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/tensor.h"

/* A parsed, validated header (dtype not yet checked: each reader has its own). */
typedef struct {
    char descr[32];            /* e.g. "<f4" */
    int ndim;                  /* 1..QSUR_MAX_DIMS */
    int64_t shape[QSUR_MAX_DIMS];
    size_t numel;              /* > 0, overflow-checked */
    size_t data_offset;        /* preamble + header length */
    char shape_text[96];       /* "512x256", for messages */
} qsur_npy_header;

/* Parses the preamble and header dict from the first `size` bytes of a file
 * (at least the preamble and header must be there; the data need not be).
 * C order only, 1..4 dimensions, no zero size. */
int qsur_npy_parse_header(const unsigned char *data, size_t size, const char *path,
                          qsur_npy_header *h, qsur_error *err);
/* Checks that a file of file_size bytes holds exactly numel items of `item`
 * bytes after the header: call it before allocating for the data. */
int qsur_npy_check_data(const qsur_npy_header *h, size_t item, uint64_t file_size,
                        const char *path, qsur_error *err);

/* Reads path into a new tensor named `name` (NULL: the file's base name
 * without its extension). Errors name the file and what was expected. */
int qsur_npy_read(const char *path, const char *name, qsur_tensor **out,
                  const qsur_progress *progress, qsur_error *err);

/* Same for an in-memory image of a file; `path` is only used in messages. */
int qsur_npy_parse(const unsigned char *data, size_t size, const char *path,
                   const char *name, qsur_tensor **out, const qsur_progress *progress,
                   qsur_error *err);

/* Writes t as a little-endian float32 C-order .npy, atomically. */
int qsur_npy_write(const char *path, const qsur_tensor *t, qsur_error *err);

#endif
