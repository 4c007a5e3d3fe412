/* A whole file mapped read-only, the way every loader reads its input.
 *
 * mmap cannot map an empty file, so an empty file opens fine with data NULL
 * and size 0: each reader then says what header it expected. Open fails only
 * when the path cannot be opened, is not a regular file, or cannot be mapped. */
#ifndef QSUR_MAPPED_FILE_H
#define QSUR_MAPPED_FILE_H

#include <stddef.h>
#include "qsur/error.h"

typedef struct {
    const unsigned char *data;  /* NULL when size == 0 */
    size_t size;
} qsur_mapped_file;

int qsur_mapped_file_open(qsur_mapped_file *m, const char *path, qsur_error *err);
void qsur_mapped_file_close(qsur_mapped_file *m);  /* safe on a zeroed struct */

/* Base name of path ("dir/x.npy" -> "x.npy"); a pointer into path. */
const char *qsur_path_basename(const char *path);

#endif
