/* A named float32 tensor owned by the engine.
 *
 * Every loader converts to float32 (f16/bf16/f64 on load), so analysis code
 * sees one type. Matrices follow the design conventions: weights are
 * out x in (rows = output channels), activations are tokens x channels.
 * A tensor of more than two dimensions is viewed as a matrix whose rows are
 * all leading dimensions collapsed and whose columns are the last one; a 1-D
 * tensor is a single row. */
#ifndef QSUR_TENSOR_H
#define QSUR_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include "qsur/error.h"

#define QSUR_NAME_MAX 160
#define QSUR_MAX_DIMS 4

typedef struct {
    char name[QSUR_NAME_MAX];
    int ndim;
    int64_t shape[QSUR_MAX_DIMS];
    float *data;             /* owned, 64-byte aligned, numel floats; NULL in a view
                                not yet materialized */
    /* A view (qsur_tensor_view_new): the data is produced from src by fill
     * when qsur_workspace_find first returns the tensor, so listing a model's
     * tensors costs nothing and using one costs that one tensor. */
    void (*fill)(const void *src, float *dst, int64_t n);
    const void *src;
} qsur_tensor;

/* Allocate a zeroed tensor. Fails with QSUR_ERR_NOMEM on overflow/alloc failure
 * and QSUR_ERR_ARG on ndim out of range or a negative dimension. */
int qsur_tensor_new(qsur_tensor **out, const char *name, int ndim,
                    const int64_t *shape, qsur_error *err);
/* 2-D shorthand. */
int qsur_tensor_new2(qsur_tensor **out, const char *name, int64_t rows,
                     int64_t cols, qsur_error *err);
int qsur_tensor_clone(qsur_tensor **out, const qsur_tensor *t, const char *name,
                      qsur_error *err);
void qsur_tensor_free(qsur_tensor *t);
/* A view of shape `shape` whose data fill(src, data, numel) will produce (it must
 * stay valid while the view lives). */
int qsur_tensor_view_new(qsur_tensor **out, const char *name, int ndim, const int64_t *shape,
                         void (*fill)(const void *src, float *dst, int64_t n), const void *src,
                         qsur_error *err);
/* Makes a view's data (a no-op for other tensors); -1 when out of memory. */
int qsur_tensor_materialize(qsur_tensor *t);

int64_t qsur_tensor_numel(const qsur_tensor *t);
int64_t qsur_tensor_rows(const qsur_tensor *t);  /* product of leading dims */
int64_t qsur_tensor_cols(const qsur_tensor *t);  /* last dim */
/* "64x172" style text. */
void qsur_tensor_shape_str(const qsur_tensor *t, char *buf, size_t n);

/* First non-finite element, or -1 when all are finite. */
int64_t qsur_find_nonfinite(const float *x, int64_t n);

/* Aligned allocation for big float/double buffers (free with free()); from
 * 8 MiB on they are 2 MiB aligned and advised to use transparent huge pages.
 * Returns NULL on overflow of count*size or allocation failure. */
void *qsur_alloc(size_t count, size_t size);

/* Checked size arithmetic: returns 0 and sets *out, or -1 on overflow. */
int qsur_mul_size(size_t a, size_t b, size_t *out);

#endif
