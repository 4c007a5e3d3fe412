/* A layer the user works on: a weight W (out x in) and/or its input
 * activations X (tokens x in), with the stack of transforms applied to them,
 * and the metrics every front end shows (QSUR, quantization error).
 *
 * The workspace keeps the original tensors; the stack (created at the first
 * transform) owns the transformed copies. QSUR of the current state is
 * incremental: the log-determinant of the original covariance is computed
 * once (eigen-decomposition) and every transform only adds its scaling's
 * log-determinant; the mean and the covariance diagonal are recomputed from
 * the current matrix in O(n d). */
#ifndef QSUR_UI_LAYER_STATE_H
#define QSUR_UI_LAYER_STATE_H

#include "qsur/qsur.h"
#include "qsur/quant.h"
#include "qsur/stack.h"
#include "qsur/tensor.h"

struct session;

/* Borrowed matrices of a layer: x is n x d, w is m x d; NULL when absent. */
typedef struct {
    const float *x;
    const float *w;
    int64_t n, d, m;
} layer_view;

/* Everything the metrics panel and the `qsur`/`error` commands show. */
typedef struct {
    int has_x, has_w;
    qsur_result qx, qw;            /* QSUR of X (tokens as samples) and W (rows as samples) */
    qsur_error_metrics ex, ew;     /* fake-quant error of X under aq and W under wq */
    double out_err;                /* ||XW^T - Q(X)Q(W)^T|| / ||XW^T||; NAN without both */
    int64_t out_err_tokens;        /* tokens it was measured on (a subsample on big layers) */
} layer_metrics;

/* Metrics of one stack state (stack state id; 0 = the original), kept until a
 * setting they depend on changes: undo, redo and the TUI's redraw after a
 * command then cost nothing. */
typedef struct {
    int valid;
    uint64_t state;
    layer_metrics m;
    qsur_quant_spec wq, aq;
    double alpha;
    int asym;
    long error_tokens;
    int has_eq;      /* eq below is known (the transform stack's equivalence error) */
    double eq;
} layer_metrics_cache;

/* Slot 0 holds the original state (always shown as "before"); the others are
 * reused round robin. */
#define LAYER_CACHE_SLOTS 4

/* X W^T of the ORIGINAL layer on the output-error token sample. A transform
 * pair leaves X W^T unchanged, so this one product is the reference of every
 * later output error and equivalence error: an update costs one GEMM for
 * each instead of two. */
typedef struct {
    float *y;   /* k x m, NULL until first needed */
    int64_t k;  /* tokens (rows of X) it was taken on */
} layer_reference;

/* A float buffer reused across metric updates. */
typedef struct {
    float *data;
    int64_t cap;
} layer_scratch;

typedef struct layer_state {
    char name[QSUR_NAME_MAX];     /* the weight's name, or the activation's for X-only layers */
    char w_name[QSUR_NAME_MAX];   /* "" when there is no weight */
    char x_name[QSUR_NAME_MAX];   /* "" when there are no activations */
    const qsur_tensor *w_t, *x_t; /* the workspace tensors when selected: a reload replaces them */
    qsur_stack *stack;            /* NULL until the first transform */
    /* ln det of the ORIGINAL covariances, computed once (NAN = not yet). */
    double base_logdet_x, base_logdet_w;
    char reason_x[QSUR_REASON_MAX], reason_w[QSUR_REASON_MAX];
    layer_metrics_cache cache[LAYER_CACHE_SLOTS];
    int cache_next;               /* next round-robin slot (1..SLOTS-1) */
    layer_reference ref;          /* original output on the error-token sample */
    layer_scratch xq, wq;         /* quantized X sample rows (all of X under a per-tensor
                                     scale) and Q(W), reused by every update */
} layer_state;

void layer_state_free(layer_state *l);

/* The current layer, or NULL with err filled ("no layer selected: use `use NAME`"). */
layer_state *session_layer(struct session *s, qsur_error *err);
/* Select (creating if needed) the layer for weight w_name and/or activation x_name. */
int session_use_layer(struct session *s, const char *w_name, const char *x_name, qsur_error *err);
/* Forget layers whose tensors are gone from, or were replaced in, the workspace
 * (after a reload): their stacks and caches describe the old data. */
void session_drop_stale_layers(struct session *s);
/* Forget every layer for which drop() returns non-zero (the current one too). */
void session_drop_layers(struct session *s, int (*drop)(const struct session *s, const layer_state *l));

/* View of the original (base=1) or current (base=0) matrices. */
int layer_view_get(struct session *s, layer_state *l, int base, layer_view *v, qsur_error *err);

/* QSUR and quantization error of the original (base=1) or current state,
 * cached per stack state. The output error ||X W^T - Q(X') Q(W')^T|| /
 * ||X W^T|| compares with the original layer's output (layer_reference);
 * above 2^30 multiply-adds per product (`set error_tokens auto`, the default)
 * it is measured on evenly spaced tokens so live updates of 4096-channel
 * layers stay interactive, and out_err_tokens says on how many. */
int layer_metrics_compute(struct session *s, layer_state *l, int base, layer_metrics *m,
                          qsur_error *err);
/* The cache entry of the current state under the current settings, or NULL. */
layer_metrics_cache *layer_metrics_cached(const struct session *s, layer_state *l);
/* Forget cached metrics (and the original covariances' log-det when
 * logdet_too): a setting they depend on in a way the cache key misses changed. */
void layer_metrics_forget(layer_state *l, int logdet_too);
/* The layer's reference output on k sample tokens (computed on first use). */
int layer_reference_get(struct session *s, layer_state *l, int64_t k, const float **y,
                        qsur_error *err);

/* How many tokens the output (and equivalence) error uses under the
 * `error_tokens` setting, and k evenly spaced rows of a (n x d), malloc'ed. */
int64_t layer_error_tokens(const struct session *s, const layer_view *v);
float *layer_sample_rows(const float *a, int64_t n, int64_t d, int64_t k);

/* Transform stack operations on a layer (see ui/session/layer_transform.c). */
int layer_stack_depth(const layer_state *l);

#endif
