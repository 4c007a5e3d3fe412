/* The tokenizer's private representation, shared by its loaders
 * (tokenizer_json.c, tokenizer_llama2c.c) and encoders (tokenizer.c,
 * tokenizer_bpe.c, tokenizer_pretok.c). */
#ifndef QSUR_TOKENIZER_IMPL_H
#define QSUR_TOKENIZER_IMPL_H

#include "qsur/tokenizer.h"

/* String -> id, open addressing over an arena of strings (not NUL-ended:
 * byte-level pieces may hold any byte). */
typedef struct {
    uint64_t *slot;   /* high 32 bits of the key's hash << 32 | (id + 1); 0 = empty
                         (the hash bits let most misses skip the memcmp) */
    size_t cap;       /* power of two */
} tok_strmap;

/* (left id, right id) -> merge: BPE's merge table keyed by the pair. */
typedef struct {
    uint64_t *key;    /* (left + 1) << 32 | (right + 1); 0 = empty */
    int *new_id;
    double *prio;     /* rank (HF) or -score (llama2.c): lower merges first */
    size_t cap, count;
} tok_pairmap;

typedef struct {
    char *text;       /* owned, `len` bytes */
    int len, id;
} tok_added;

/* One normalizer or decoder step of a tokenizer.json. */
typedef enum { STEP_PREPEND, STEP_REPLACE, STEP_BYTE_FALLBACK, STEP_FUSE, STEP_STRIP,
               STEP_BYTE_LEVEL,
               STEP_META_PREPEND, /* Metaspace: prepend `to` unless the text starts with it;
                                     start = 1: only to the text's first segment */
               STEP_META_DEC      /* Metaspace decoder: `from` -> " ", dropped in the first
                                     token when start = 1 */
} tok_step_kind;
typedef struct {
    tok_step_kind kind;
    char from[16], to[16]; /* PREPEND: to; REPLACE: from -> to; STRIP: from (one char) */
    int start, stop;       /* STRIP */
} tok_step;

#define TOK_MAX_STEPS 8

struct qsur_tokenizer {
    qsur_tokenizer_kind kind;
    int n_ids;
    /* per id: the bytes the id stands for (byte-level: decoded from GPT-2's
     * map; byte tokens <0xXX> keep their spelling) and the vocabulary spelling */
    char *raw, *spell;      /* arenas */
    size_t raw_used, raw_cap, spell_used, spell_cap;
    int64_t *raw_off, *spell_off;
    int *raw_len;           /* -1: unused id */
    unsigned char *special; /* per id: added/control token */
    float *score;           /* llama2.c only */
    tok_strmap map;         /* raw bytes -> id (model vocabulary, not added tokens) */
    tok_pairmap merges;
    int byte_id[256];       /* id of each single byte (byte-level) / <0xXX> (byte fallback) / -1 */
    tok_added *added;
    int n_added;
    int bos, eos, unk;
    int byte_fallback, fuse_unk, ignore_merges;
    /* SentencePiece kinds: the word marker ("▁", llama2.c: " ") when no merge
     * result has a marker right after another character (tok_check_split),
     * so a marker after a non-marker starts an independent word; else "" */
    char split_marker[4];
    int split_every;        /* Metaspace split: every marker starts a word */
    tok_step norm[TOK_MAX_STEPS], dec[TOK_MAX_STEPS];
    int n_norm, n_dec;
};

/* A new empty tokenizer for n_ids ids (all unused). */
int tok_new(qsur_tokenizer **out, qsur_tokenizer_kind kind, int n_ids, qsur_error *err);
/* Sets id's raw bytes and spelling (copied); keeps the first raw -> id. */
int tok_set_piece(qsur_tokenizer *t, int id, const char *raw, int raw_len, const char *spell,
                  int spell_len, qsur_error *err);
/* Builds t->map from the pieces set so far (ids with !special). */
int tok_build_map(qsur_tokenizer *t, qsur_error *err);
int tok_map_find(const qsur_tokenizer *t, const char *s, int len);

/* Room for n pairs without rehashing; -1 when out of memory. */
int tok_pair_reserve(tok_pairmap *m, size_t n);
int tok_pair_put(tok_pairmap *m, int a, int b, int new_id, double prio);
/* 1 and *new_id, *prio when (a, b) merges; 0 when not. */
int tok_pair_get(const tok_pairmap *m, int a, int b, int *new_id, double *prio);

/* Sets t->split_marker to marker when the merges allow it (see above). */
void tok_check_split(qsur_tokenizer *t, const char *marker);

/* BPE merges on the symbols ids[0..n) in place; *n shrinks. Priority and
 * result of a pair come from t->merges (rank) or, for llama2.c, from the
 * score of the concatenation. */
int tok_bpe_merge(const qsur_tokenizer *t, int *ids, int64_t *n, qsur_error *err);

/* The Llama-3 split: the end of the piece that starts at s[0] (n > 0 bytes). */
size_t tok_llama3_piece(const unsigned char *s, size_t n);

#endif
