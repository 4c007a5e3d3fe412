/* One entry point for `load FILE`: detect the format, load every tensor.
 *
 * Detection, first match wins:
 *   1. content: "\x93NUMPY" -> npy; a plausible safetensors prefix (8-byte
 *      length within the file, then '{') -> safetensors;
 *   2. extension: .npy, .safetensors, .bin (llama2.c) -> that reader, which
 *      then explains what is wrong with the content;
 *   3. a llama2.c header whose implied size matches the file exactly.
 * Names: .npy -> the base name without extension; safetensors -> the tensor
 * names; llama2.c -> Meta names (see llama2c.h). A non-NULL prefix is
 * prepended verbatim ("m." + "norm" = "m.norm"). Loading is all-or-nothing:
 * on failure the workspace is unchanged; tensors with an existing name are
 * replaced. */
#ifndef QSUR_LOADER_H
#define QSUR_LOADER_H

#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/workspace.h"

typedef enum {
    QSUR_FORMAT_UNKNOWN = 0,
    QSUR_FORMAT_NPY,
    QSUR_FORMAT_SAFETENSORS,
    QSUR_FORMAT_LLAMA2C
} qsur_file_format;

/* Which reader qsur_load_file would use (reads the file's first bytes).
 * Fails on unreadable files and when no rule matches. */
int qsur_detect_format(const char *path, qsur_file_format *fmt, qsur_error *err);

/* Returns the number of tensors loaded (>= 1) on success, or a NEGATED
 * qsur_status (< 0, e.g. -QSUR_ERR_FORMAT) with err filled on failure. */
int qsur_load_file(qsur_workspace *ws, const char *path, const char *prefix,
                   const qsur_progress *progress, qsur_error *err);

#endif
