/* A whole-model edit that can stop half-way and put the model back exactly
 * (`rotate model`, `smoothquant`): progress ticks with Ctrl-C, and a journal
 * of what the edit changed.
 *
 * Before a linear, a gain vector or the embeddings first change, the journal
 * keeps their old bytes in a temporary file (unlinked, so nothing is left
 * behind), not in memory: weights still mapped from the checkpoint cost
 * nothing (the mapping is the old copy), owned weights cost their size in
 * their dtype on disk. Quantized forms are taken out of the linear (the
 * edit would drop them as stale) and kept. qsur_llama_edit_undo puts every
 * one back bit for bit, with the model's hooks and classifier tying;
 * qsur_llama_edit_keep makes the edit final.
 *
 * A NULL edit is allowed everywhere: no journal, no progress (the plain
 * copy-on-write of qsur_llama_linear_edit_begin). */
#ifndef QSUR_LLAMA_EDIT_H
#define QSUR_LLAMA_EDIT_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/llama.h"
#include "qsur/progress.h"

typedef struct qsur_llama_edit qsur_llama_edit;

/* prog may be NULL. */
int qsur_llama_edit_new(qsur_llama_edit **out, qsur_llama *m, const qsur_progress *prog,
                        qsur_error *err);
/* The part [lo, hi] of the progress bar the next step fills. */
void qsur_llama_edit_range(qsur_llama_edit *e, double lo, double hi);
/* done in [0, 1] of the current step; QSUR_ERR_INTERRUPTED when asked to stop. */
int qsur_llama_edit_tick(qsur_llama_edit *e, double done, const char *what, qsur_error *err);

/* Journals l (once per edit) and puts it in float form to be edited in
 * place: qsur_llama_linear_edit_begin with a way back. */
int qsur_llama_edit_linear(qsur_llama_edit *e, qsur_llama_linear *l, int *dtype, qsur_error *err);
/* Journals l without changing it (before something replaces its storage,
 * e.g. untying the classifier). */
int qsur_llama_edit_save(qsur_llama_edit *e, qsur_llama_linear *l, qsur_error *err);
/* Journals n floats at p (a gain vector, the embeddings) before they change. */
int qsur_llama_edit_floats(qsur_llama_edit *e, float *p, int64_t n, qsur_error *err);

/* Whether the edit's weight rotations (qsur/llama_rotate.h's residual, w2
 * and head steps) run on the GPU (qsur/backend.h's qsur_gpu_rotation; fp32
 * GEMMs with a dense rotation: the CPU's result to float rounding). Off by
 * default and for a NULL edit; the caller checks that a GPU is usable. The
 * O(n) edits (norm fusion, SmoothQuant's scales) stay on the CPU. */
void qsur_llama_edit_use_gpu(qsur_llama_edit *e, int on);
int qsur_llama_edit_gpu(const qsur_llama_edit *e);
/* Bytes the journal holds on disk and in memory. */
int64_t qsur_llama_edit_bytes(const qsur_llama_edit *e);

/* Puts the model back as it was at qsur_llama_edit_new and frees the edit.
 * Fails only when the temporary file cannot be read back (then the model is
 * unusable and the message says so). */
int qsur_llama_edit_undo(qsur_llama_edit *e, qsur_error *err);
/* The edit stays; frees the journal. */
void qsur_llama_edit_keep(qsur_llama_edit *e);

#endif
