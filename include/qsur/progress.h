/* Progress reporting and cancellation for long engine work.
 *
 * The engine holds no global state, so Ctrl-C reaches it through this
 * callback: long loops call qsur_progress_tick() now and then; when the
 * callback returns non-zero the engine stops, leaves its inputs untouched and
 * returns QSUR_ERR_INTERRUPTED. */
#ifndef QSUR_PROGRESS_H
#define QSUR_PROGRESS_H

#include "qsur/error.h"

typedef struct {
    /* done in [0,1]; what: short label ("eigen", "ppl 12/64"); value: a live
     * number such as a loss (NAN when there is none). Return non-zero to stop. */
    int (*fn)(void *ctx, double done, const char *what, double value);
    void *ctx;
} qsur_progress;

/* Calls p->fn when p and p->fn are set. Returns QSUR_OK or, when the callback
 * asks to stop, QSUR_ERR_INTERRUPTED with err filled ("interrupted during WHAT"). */
int qsur_progress_tick(const qsur_progress *p, double done, const char *what,
                       double value, qsur_error *err);

#endif
