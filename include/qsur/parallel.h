/* Splitting one piece of work over a few threads (the BLAS thread count):
 * for kernels that are bound by one core's loads or made of calls too small
 * for the BLAS threads to pay off. */
#ifndef QSUR_PARALLEL_H
#define QSUR_PARALLEL_H

/* Most parts qsur_parallel runs. */
#define QSUR_PARALLEL_MAX 16

/* Runs fn(ctx, part, parts) for part = 0..parts-1 (parts clamped to
 * 1..QSUR_PARALLEL_MAX) and returns when all are done: part 0 on the
 * caller's thread, the others on threads of their own (a part whose thread
 * cannot start runs on the caller's thread). */
void qsur_parallel(int parts, void (*fn)(void *ctx, int part, int parts), void *ctx);

#endif
