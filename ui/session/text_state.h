/* Text in the session: the tokenizer (`tokenizer load`, or tokenizer.json
 * beside the weights at `model load`) and the token streams the model
 * commands read from text files.
 *
 * A path ending in .txt is text; anything else is a token file. Text is
 * tokenized once per (file, size, mtime, tokenizer) and kept in memory, so
 * `calib`, `gptq model` and `ppl` on the same file do not tokenize it again.
 *   evaluation (`ppl`, eval=): the whole file encoded once, with the BOS the
 *     tokenizer's post-processor adds, cut into consecutive windows of seq_len
 *     (the tail that does not fill a window is dropped);
 *   calibration (`calib`, calib=): `samples` windows of seq_len starting at
 *     uniform random offsets in [0, n - seq_len) of the same stream (GPTQ's
 *     get_wikitext2/get_c4 loaders), from a seeded qsur_rng. */
#ifndef QSUR_UI_TEXT_STATE_H
#define QSUR_UI_TEXT_STATE_H

#include <stdint.h>
#include "qsur/llama.h"
#include "qsur/tokenizer.h"
#include "session.h"

typedef struct text_state {
    qsur_tokenizer *tok;         /* owned, or NULL */
    char tok_path[4096];         /* where it came from */
    /* the last text file tokenized */
    char cache_path[4096];
    long long cache_size, cache_mtime;
    const qsur_tokenizer *cache_tok;
    qsur_token_ids cache_ids;
} text_state;

void text_state_free(text_state *t);

/* "float" or the weight quantizer of the session model, for reports. */
void text_weights_desc(const session *s, char *buf, int n);

/* 1 when path names a text file (.txt). */
int text_is_text(const char *path);
/* Loads a tokenizer into the session (replacing the old one). */
int text_tokenizer_load(session *s, const char *path, qsur_error *err);
/* The session tokenizer, or an error (starting with `who`, a file name, when
 * not "") when none is loaded or its ids do not fit the model's vocabulary. */
int text_need_tokenizer(session *s, const char *who, const qsur_tokenizer **tok, qsur_error *err);

/* The token stream of a text file (cached; borrowed until the next call). */
int text_file_ids(session *s, const char *path, const qsur_token_ids **ids, qsur_error *err);
/* Evaluation windows of a text file; max_tokens > 0 keeps that many first. */
int text_eval_tokens(session *s, const char *path, int seq_len, int64_t max_tokens, qsur_tokens *t,
                     qsur_error *err);
/* Calibration windows of a text file (see above). */
int text_calib_tokens(session *s, const char *path, int seq_len, int samples, uint64_t seed, qsur_tokens *t,
                      qsur_error *err);
/* Calibration tokens from either kind of file: text -> text_calib_tokens,
 * else the first `samples` sequences of seq_len of the token file (0: all;
 * seed unused). */
int text_or_tokens_calib(session *s, const char *path, int seq_len, int samples, uint64_t seed,
                         qsur_tokens *t, qsur_error *err);
/* Evaluation tokens from either kind of file (text: all windows). */
int text_or_tokens_eval(session *s, const char *path, int seq_len, qsur_tokens *t, qsur_error *err);

#endif
