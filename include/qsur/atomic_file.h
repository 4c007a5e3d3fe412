/* Writing a file so that readers only ever see the old file or the complete
 * new one: write a temporary file in the same directory (so rename stays on
 * one file system), fsync it, rename it over the target, fsync the directory.
 * Every writer of the engine (npy, safetensors, llama2c, export) goes
 * through this; on any failure the temporary file is removed and the target
 * is left as it was.
 *
 * Usage:
 *     qsur_atomic_file f;
 *     if ((rc = qsur_atomic_open(&f, path, err))) return rc;
 *     rc = qsur_atomic_write(&f, buf, n, err);      // as often as needed
 *     if (rc) { qsur_atomic_abort(&f); return rc; }
 *     return qsur_atomic_commit(&f, err);            // aborts itself on failure
 */
#ifndef QSUR_ATOMIC_FILE_H
#define QSUR_ATOMIC_FILE_H

#include <stddef.h>
#include <stdint.h>
#include "qsur/error.h"

typedef struct {
    char *path;          /* final name (owned copy) */
    char *tmp_path;      /* DIR/.BASENAME.tmp-XXXXXX (owned) */
    int fd;              /* -1 when closed */
    unsigned char *buf;  /* write buffer, so many small writes stay cheap */
    size_t used;
    uint64_t written;    /* bytes accepted so far, buffered or not */
} qsur_atomic_file;

/* Creates the temporary file beside path. On failure nothing is left behind. */
int qsur_atomic_open(qsur_atomic_file *f, const char *path, qsur_error *err);
/* Appends n bytes (buffered). On failure the caller must still call abort. */
int qsur_atomic_write(qsur_atomic_file *f, const void *data, size_t n, qsur_error *err);
/* Appends n little-endian float32 / int32 values (host byte order converted). */
int qsur_atomic_write_f32le(qsur_atomic_file *f, const float *x, size_t n, qsur_error *err);
int qsur_atomic_write_i32le(qsur_atomic_file *f, const int32_t *x, size_t n, qsur_error *err);
/* Flush, fsync, close, rename over the target, fsync the directory, free.
 * On failure the temporary file is removed (abort is done here). */
int qsur_atomic_commit(qsur_atomic_file *f, qsur_error *err);
/* Close and unlink the temporary file, free; safe to call twice. */
void qsur_atomic_abort(qsur_atomic_file *f);

#endif
