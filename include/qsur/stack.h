/* The transform stack of one layer: original X and W, the steps applied to
 * them, and undo / redo / reset.
 *
 * Undo must give back the exact previous floats, and applying an inverse
 * (X R R^T, X S^-1 S) only gets within rounding of them, so every state is a
 * snapshot: state 0 holds copies of the original X (n x d) and W (m x d), and
 * each step adds a state with its own copies of X' and W'.
 * Memory cost: (count) * (n + m) * d * 4 bytes for the snapshots, plus d * d * 4
 * per PCA / random-orthogonal / dense step (its R) and the Hadamard block when
 * n is not a power of two; qsur_stack_bytes() reports the total. For a
 * 4096-token x 4096-channel X that is 64 MB per step, so the front end may
 * want to show it.
 *
 * Undone states stay as the redo tail until a new step is pushed, which drops
 * them (keeping one pair of their buffers for the next push). reset is "undo everything" (the tail is kept, so redo still works).
 * log_det is the cumulative sum ln s_j of all scalings from the original to the
 * current state: cov(X) log-determinants move by -2 log_det, cov(W) by +2 log_det. */
#ifndef QSUR_STACK_H
#define QSUR_STACK_H

#include <stddef.h>
#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"
#include "qsur/transform.h"

typedef struct {
    float *X, *W;          /* snapshot (owned); NULL when the layer has no X / no W */
    qsur_transform *step;  /* step that produced this state (owned); NULL for state 0 */
    double log_det;        /* cumulative sum ln s up to this state */
    uint64_t id;           /* unique within the stack: caches key on it */
} qsur_stack_state;

typedef struct {
    int64_t n, m, d;           /* X is n x d, W is m x d */
    qsur_stack_state *states;  /* [0] original, [1..count-1] after each step */
    int count;                 /* states held, including the redo tail */
    int cur;                   /* current state; steps 1..cur are applied */
    int cap;
    uint64_t next_id;          /* id of the next state pushed */
    float *spare_X, *spare_W;  /* buffers of a dropped state, reused by the next push
                                  (fresh memory costs a page fault per page) */
} qsur_stack;

/* Copies X (n x d) and W (m x d); either may be NULL, not both. */
int qsur_stack_new(qsur_stack **out, const float *X, int64_t n, const float *W, int64_t m,
                   int64_t d, qsur_error *err);
void qsur_stack_free(qsur_stack *st);

/* Current X', W' (borrowed, valid until the next push/undo/redo/reset/free). */
const float *qsur_stack_x(const qsur_stack *st);
const float *qsur_stack_w(const qsur_stack *st);
/* The original X (tests compare against it). */
const float *qsur_stack_original_x(const qsur_stack *st);

/* Apply t to the current state and make the result current; drops the redo
 * tail. Takes ownership of t in every case (frees it on failure). On failure
 * (dimension mismatch, no memory, interrupt) the current state and the steps
 * up to it are unchanged; the redo tail may have lost its last step (whose
 * memory the new step was being written into) unless spare buffers existed. */
int qsur_stack_push(qsur_stack *st, qsur_transform *t, const qsur_progress *prog,
                    qsur_error *err);
/* QSUR_ERR_ARG "nothing to undo/redo" at either end. */
int qsur_stack_undo(qsur_stack *st, qsur_error *err);
int qsur_stack_redo(qsur_stack *st, qsur_error *err);
/* Back to the original; returns how many steps were undone (0 if none). */
int qsur_stack_reset(qsur_stack *st);

int qsur_stack_depth(const qsur_stack *st);       /* applied steps (= cur) */
int qsur_stack_redo_depth(const qsur_stack *st);  /* undone steps redo can restore */
/* Step i, 1 <= i <= depth + redo_depth (i > depth are undone); NULL outside. */
const qsur_transform *qsur_stack_step(const qsur_stack *st, int i);
double qsur_stack_log_det(const qsur_stack *st);  /* cumulative sum ln s, current state */
/* Identifies the current state's contents: 0 for the original, a new value for
 * every push, the old value again after undo/redo/reset returns to a state. */
uint64_t qsur_stack_state_id(const qsur_stack *st);
size_t qsur_stack_bytes(const qsur_stack *st);    /* snapshot + step memory held */

/* The `stack` display: one line per step, "  1. rotate hadamard: ...", the
 * current position marked "->", undone steps marked "(undone)", then a line with
 * the cumulative sum ln s. Always NUL-terminated; truncated to n bytes. */
void qsur_stack_describe(const qsur_stack *st, char *buf, size_t n);

#endif
