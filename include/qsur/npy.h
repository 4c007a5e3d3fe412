/* NumPy .npy files (format versions 1.0, 2.0, 3.0).
 *
 * Layout: "\x93NUMPY", major, minor, header length (uint16 LE for v1, uint32
 * LE for v2/v3), an ASCII (v3: UTF-8) Python dict literal
 *     {'descr': '<f4', 'fortran_order': False, 'shape': (512, 256), }
 * padded with spaces and a '\n' so the data starts 64-byte aligned, then the
 * raw data. Read: dtypes <f4, <f8, <f2 (converted to float32), C order only,
 * 1..4 dimensions, no NaN/Inf, no zero-size arrays. Write: <f4, v1.0 header
 * (at most 4 dimensions always fit), atomically. */
#ifndef QSUR_NPY_H
#define QSUR_NPY_H

#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/tensor.h"

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
