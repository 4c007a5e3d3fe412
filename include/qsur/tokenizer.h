/* Tokenizers: text <-> token ids, from the files users have.
 *
 * Three kinds, one interface:
 *   byte-level BPE (Hugging Face tokenizer.json of the Llama-3 / GPT-2 kind):
 *       added tokens split out first; the rest cut by the Split pre-tokenizer
 *       (the Llama-3 regex, docs/tokenizers.md) into pieces; each piece's
 *       bytes become GPT-2's printable code points; BPE merges by rank within
 *       a piece (ignore_merges: a piece that is a whole vocabulary entry is
 *       that token).
 *   SentencePiece BPE (tokenizer.json of the Llama-2 kind): added tokens
 *       split out; each segment normalized (Prepend "▁", Replace " " -> "▁");
 *       one word per segment, its characters the initial symbols (a character
 *       missing from the vocabulary becomes its <0xXX> byte tokens: byte
 *       fallback), BPE merges by rank.
 *   llama2.c tokenizer.bin: run.c's encode(): a dummy-prefix " " token, the
 *       text's code points (byte fallback to id byte + 3), then repeatedly the
 *       adjacent pair whose concatenation has the highest score (leftmost on
 *       ties) is merged.
 * Encoding equals the Hugging Face `tokenizers` library (and llama2.c) id for
 * id; decoding returns the exact bytes for every id list encode produces.
 * The merge loop is O(n log n) in the length of a word (a heap of candidate
 * pairs, as in the `tokenizers` crate), so a whole file is one call. */
#ifndef QSUR_TOKENIZER_H
#define QSUR_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>
#include "qsur/error.h"

typedef struct qsur_tokenizer qsur_tokenizer;

typedef enum {
    QSUR_TOK_BYTE_LEVEL,   /* HF byte-level BPE (Llama-3) */
    QSUR_TOK_SENTENCEPIECE,/* HF SentencePiece-style BPE (Llama-2) */
    QSUR_TOK_LLAMA2C       /* llama2.c tokenizer.bin */
} qsur_tokenizer_kind;

/* A growable id list (the caller owns ids; free() it). */
typedef struct {
    int *ids;
    int64_t n, cap;
} qsur_token_ids;

/* Loads a tokenizer.json (a file starting with '{') or a llama2.c
 * tokenizer.bin (anything else). vocab_hint: the llama2.c vocabulary size
 * (the .bin does not store it; 0: read entries to the end of the file). */
int qsur_tokenizer_load(qsur_tokenizer **out, const char *path, int vocab_hint, qsur_error *err);
/* The same from memory; `what` names the source in messages. */
int qsur_tokenizer_load_hf_json(qsur_tokenizer **out, const char *text, size_t len,
                                const char *what, qsur_error *err);
int qsur_tokenizer_load_llama2c(qsur_tokenizer **out, const unsigned char *data, size_t len,
                                int vocab_hint, const char *what, qsur_error *err);
void qsur_tokenizer_free(qsur_tokenizer *t);

qsur_tokenizer_kind qsur_tokenizer_kind_of(const qsur_tokenizer *t);
const char *qsur_tokenizer_kind_name(qsur_tokenizer_kind k);
/* Number of ids (largest id + 1, added tokens included). */
int qsur_tokenizer_vocab_size(const qsur_tokenizer *t);
/* The id the post-processor puts first (TemplateProcessing's special token;
 * <s> = 1 for llama2.c, as its run.c and training data do), or -1: none. */
int qsur_tokenizer_bos(const qsur_tokenizer *t);
/* An end-of-text id (</s>, <|end_of_text|>, <|eot_id|>) or -1. */
int qsur_tokenizer_eos(const qsur_tokenizer *t);
/* 1 when id is an added/special token (control token). */
int qsur_tokenizer_is_special(const qsur_tokenizer *t, int id);

/* Appends the ids of text[0..len) to out. add_bos: put the post-processor's
 * BOS first (when it has one). */
int qsur_tokenizer_encode(const qsur_tokenizer *t, const char *text, size_t len, int add_bos,
                          qsur_token_ids *out, qsur_error *err);
/* The text of ids[0..n) as the tokenizer's decoder gives it (byte tokens
 * become raw bytes; no U+FFFD replacement, so a prefix of the ids decodes to
 * a prefix of the bytes, except for the decoder's leading-space strip).
 * *out is malloc'ed and NUL-terminated; *len (may be NULL) its length. */
int qsur_tokenizer_decode(const qsur_tokenizer *t, const int *ids, int64_t n, char **out,
                          size_t *len, qsur_error *err);
/* The vocabulary spelling of id ("Ġthe", "▁the", "<0x0A>"), borrowed; NULL
 * when id is out of range or unused. */
const char *qsur_tokenizer_piece(const qsur_tokenizer *t, int id);

int qsur_token_ids_push(qsur_token_ids *v, int id);
void qsur_token_ids_free(qsur_token_ids *v);

#endif
