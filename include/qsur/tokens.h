/* Token files: a stream of token ids, split into sequences of seq_len.
 *
 * Formats, chosen by the file name:
 *     NAME.u32   uint32 little-endian ids, nothing else (any vocabulary)
 *     NAME.npy   a NumPy array of ids, C order, any shape (read flat), dtype
 *                '<i4', '<u4', '<i8' or '<u2'
 *     otherwise  uint16 little-endian ids (.u16, .bin: llama2.c's pretokenized
 *                shards): ids below 65,536 only, so a model with a larger
 *                vocabulary (Llama-3: 128,256) refuses such a file
 * The token count must be a positive multiple of seq_len and every id read must
 * be below the model's vocabulary; each failure is a one-line error naming the
 * file (and the token's index and value).
 *
 * Memory: the ids are decoded from the file in small chunks straight into one
 * int array of the tokens asked for, so reading costs 4 bytes per token kept
 * (a .u32 file's size, twice a .u16 file's) and max_seqs limits it further. */
#ifndef QSUR_TOKENS_H
#define QSUR_TOKENS_H

#include <stdint.h>
#include "qsur/error.h"

typedef struct {
    int *ids;          /* owned, n values */
    int64_t n;
    int seq_len;       /* the file's sequence length */
} qsur_tokens;

typedef enum { QSUR_TOKENS_U16 = 0, QSUR_TOKENS_U32, QSUR_TOKENS_NPY } qsur_tokens_format;

/* The format path's name selects (see above). */
qsur_tokens_format qsur_tokens_format_of(const char *path);

/* Reads the first max_seqs sequences of seq_len tokens of path (max_seqs 0:
 * all of them); ids must be < vocab_size. On error t is empty. */
int qsur_tokens_read(qsur_tokens *t, const char *path, int seq_len, int max_seqs, int vocab_size,
                     qsur_error *err);
/* The whole file: qsur_tokens_read with max_seqs 0. */
int qsur_tokens_load(qsur_tokens *t, const char *path, int seq_len, int vocab_size,
                     qsur_error *err);
void qsur_tokens_free(qsur_tokens *t);

#endif
