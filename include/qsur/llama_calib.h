/* Block-by-block calibration, the way the reference GPTQ implementation runs
 * it (Frantar et al. 2023, `llama_sequential`): the residual stream of every
 * calibration token entering ONE block is kept; a block is run on it to see
 * the inputs of its linears (handed, row by row as they pass, to whatever
 * statistic the method accumulates: X^T X, an output error, or a tensor),
 * and, once the method has changed the block, run once more to become the
 * next block's input. Memory: that stream (tokens x dim floats), one block's
 * run state and KV cache, never the inputs of every layer nor the model.
 *
 * The stream after block l is exactly what qsur_llama_forward computes there
 * (same sequences, same batches, same sgemm shapes), so a method calibrated
 * this way gets bit for bit the inputs it got by re-running the calibration
 * sequences from the embeddings through the model as changed so far
 * (tests/test_llama_calib.c checks it against such a re-run). */
#ifndef QSUR_LLAMA_CALIB_H
#define QSUR_LLAMA_CALIB_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/llama.h"
#include "qsur/progress.h"
#include "qsur/tokens.h"

/* Blocks first..first+n-1 of m as a model of their own, sharing m's layers
 * (so changes to their linears are seen), hooks and config: a run state or
 * training tape made for it holds n layers. The classifier is never reached
 * from a stream: vocab 1 keeps the logits (and gradient rows of embeddings)
 * to one per token. */
qsur_llama qsur_llama_blocks_view(const qsur_llama *m, int first, int n);

typedef struct qsur_llama_calib qsur_llama_calib;

/* A statistic fed the selected rows of one capture point of the block
 * (kind: 0 attention.in, 1 attention.wo.in, 2 feed_forward.in,
 * 3 feed_forward.w2.in, 4 attention.k, 5 attention.v, as qsur_llama_capture
 * names them), one row of cols floats at a time, in stream order. */
typedef struct {
    int kind;
    void (*row)(void *ctx, const float *x, int64_t cols);
    void *ctx;
} qsur_llama_calib_use;

/* Up to this many statistics per block run. */
#define QSUR_LLAMA_CALIB_USES 4

/* Sequences of t as qsur_llama_capture cuts them (seq_len 0: the file's,
 * max_seqs <= 0: all, batch <= 0: 8), max_tokens > 0: the same seeded subset
 * of positions it keeps. The stream starts as the embeddings (before block 0). */
int qsur_llama_calib_new(qsur_llama_calib **out, const qsur_llama *m, const qsur_tokens *t,
                         int seq_len, int max_seqs, int batch, int64_t max_tokens,
                         uint64_t seed, qsur_error *err);
void qsur_llama_calib_free(qsur_llama_calib *c);
/* Token positions the statistics see (all, or max_tokens). */
int64_t qsur_llama_calib_tokens(const qsur_llama_calib *c);
/* The block the stream enters now. */
int qsur_llama_calib_block(const qsur_llama_calib *c);
/* Bytes of the stream (two copies while a block runs) and the position map. */
int64_t qsur_llama_calib_bytes(const qsur_llama_calib *c);

/* Runs the current block of m (the model as it is now: m's linears and
 * hooks) on the stream and feeds the uses. advance = 1 then keeps the
 * block's output as the stream (the next block becomes current); 0 leaves
 * the stream as it was. Progress ticks per batch. On error or interruption
 * the stream is as before the call. */
int qsur_llama_calib_run(qsur_llama_calib *c, const qsur_llama *m, const qsur_llama_calib_use *uses,
                         int nuses, int advance, const qsur_progress *prog, qsur_error *err);

#endif
