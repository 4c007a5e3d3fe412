/* Encoding and decoding (the algorithms are described in qsur/tokenizer.h);
 * the loaders are tokenizer_json.c and tokenizer_llama2c.c. */
#include <stdlib.h>
#include <string.h>
#include "qsur/mapped_file.h"
#include "tokenizer_impl.h"
#include "unicode.h"

int qsur_tokenizer_load(qsur_tokenizer **out, const char *path, int vocab_hint, qsur_error *err)
{
    *out = NULL;
    qsur_mapped_file f;
    int rc = qsur_mapped_file_open(&f, path, err);
    if (rc)
        return rc;
    size_t i = 0;
    while (i < f.size && (f.data[i] == ' ' || f.data[i] == '\n' || f.data[i] == '\r' || f.data[i] == '\t'))
        i++;
    if (i < f.size && f.data[i] == '{')
        rc = qsur_tokenizer_load_hf_json(out, (const char *)f.data, f.size, path, err);
    else
        rc = qsur_tokenizer_load_llama2c(out, f.data, f.size, vocab_hint, path, err);
    qsur_mapped_file_close(&f);
    return rc;
}

qsur_tokenizer_kind qsur_tokenizer_kind_of(const qsur_tokenizer *t) { return t->kind; }

const char *qsur_tokenizer_kind_name(qsur_tokenizer_kind k)
{
    return k == QSUR_TOK_BYTE_LEVEL ? "byte-level BPE (tokenizer.json)"
         : k == QSUR_TOK_SENTENCEPIECE ? "SentencePiece BPE (tokenizer.json)"
                                       : "llama2.c tokenizer.bin";
}

int qsur_tokenizer_vocab_size(const qsur_tokenizer *t) { return t->n_ids; }
int qsur_tokenizer_bos(const qsur_tokenizer *t) { return t->bos; }
int qsur_tokenizer_eos(const qsur_tokenizer *t) { return t->eos; }

int qsur_tokenizer_is_special(const qsur_tokenizer *t, int id)
{
    return id >= 0 && id < t->n_ids && t->special[id];
}

const char *qsur_tokenizer_piece(const qsur_tokenizer *t, int id)
{
    if (id < 0 || id >= t->n_ids || t->raw_len[id] < 0)
        return NULL;
    return t->spell + t->spell_off[id];
}

int qsur_token_ids_push(qsur_token_ids *v, int id)
{
    if (v->n == v->cap) {
        int64_t nc = v->cap ? v->cap * 2 : 256;
        int *ids = realloc(v->ids, (size_t)nc * sizeof *ids);
        if (!ids)
            return QSUR_ERR_NOMEM;
        v->ids = ids;
        v->cap = nc;
    }
    v->ids[v->n++] = id;
    return QSUR_OK;
}

void qsur_token_ids_free(qsur_token_ids *v)
{
    free(v->ids);
    memset(v, 0, sizeof *v);
}

/* ---- encoding ------------------------------------------------------------ */

static int push_all(qsur_token_ids *out, const int *ids, int64_t n, qsur_error *err)
{
    for (int64_t i = 0; i < n; i++)
        if (qsur_token_ids_push(out, ids[i]))
            return qsur_fail(err, QSUR_ERR_NOMEM, "tokenizer: out of memory for %lld ids", (long long)out->n);
    return QSUR_OK;
}

/* Scratch of one encode call: symbol ids of the current word, normalized text. */
typedef struct {
    int *sym;
    int64_t cap;
    int64_t *word;    /* symbol index where each word starts (split_marker) */
    int64_t nword;
    char *norm;
    size_t norm_cap;
} scratch;

static int reserve_syms(scratch *sc, int64_t n)
{
    if (n <= sc->cap)
        return 0;
    int64_t nc = n < 256 ? 256 : n * 2;
    int *s = realloc(sc->sym, (size_t)nc * sizeof *s);
    if (!s)
        return -1;
    sc->sym = s;
    int64_t *w = realloc(sc->word, (size_t)(nc + 1) * sizeof *w);
    if (!w)
        return -1;
    sc->word = w;
    sc->cap = nc;
    return 0;
}

/* A word starts at a marker that follows a non-marker (tok_check_split);
 * s holds n bytes. */
static int word_starts(const qsur_tokenizer *t, const char *s, size_t n, size_t i)
{
    size_t ml = strlen(t->split_marker);
    return ml && i >= ml && i + ml <= n && !memcmp(s + i, t->split_marker, ml) &&
           (t->split_every || memcmp(s + i - ml, t->split_marker, ml));
}

/* Merges each word of sc->sym[0..m) (starts in sc->word) on its own and
 * appends the ids. */
static int merge_words(const qsur_tokenizer *t, scratch *sc, int64_t m, qsur_token_ids *out, qsur_error *err)
{
    sc->word[sc->nword] = m;
    int64_t from = 0;
    for (int64_t w = 0; w <= sc->nword; w++) {
        int64_t end = w < sc->nword ? sc->word[w] : m, n = end - from;
        if (n <= 0)
            continue;
        int rc = tok_bpe_merge(t, sc->sym + from, &n, err);
        if (!rc)
            rc = push_all(out, sc->sym + from, n, err);
        if (rc)
            return rc;
        from = end;
    }
    return QSUR_OK;
}

static int nomem(qsur_error *err) { return qsur_fail(err, QSUR_ERR_NOMEM, "tokenizer: out of memory"); }

/* Byte-level: the Llama-3 split, then each piece on its own. */
static int encode_byte_level(const qsur_tokenizer *t, const unsigned char *s, size_t n, scratch *sc,
                             qsur_token_ids *out, qsur_error *err)
{
    for (size_t i = 0; i < n;) {
        size_t len = tok_llama3_piece(s + i, n - i);
        int whole = t->ignore_merges ? tok_map_find(t, (const char *)s + i, (int)len) : -1;
        int rc;
        if (whole >= 0) {
            rc = push_all(out, &whole, 1, err);
        } else {
            if (reserve_syms(sc, (int64_t)len))
                return nomem(err);
            for (size_t k = 0; k < len; k++)
                sc->sym[k] = t->byte_id[s[i + k]];
            int64_t m = (int64_t)len;
            rc = tok_bpe_merge(t, sc->sym, &m, err);
            if (!rc)
                rc = push_all(out, sc->sym, m, err);
        }
        if (rc)
            return rc;
        i += len;
    }
    return QSUR_OK;
}

static int norm_add(scratch *sc, size_t *k, const char *s, size_t n)
{
    if (*k + n + 1 > sc->norm_cap) {
        size_t nc = (*k + n + 1) * 2;
        char *b = realloc(sc->norm, nc);
        if (!b)
            return -1;
        sc->norm = b;
        sc->norm_cap = nc;
    }
    memcpy(sc->norm + *k, s, n);
    *k += n;
    return 0;
}

/* Applies the normalizer steps to s[0..n) into sc->norm; returns the length
 * or -1 when out of memory. Prepend adds to non-empty text only; first: the
 * segment starts the text (Metaspace's prepend_scheme "first"). */
static int64_t normalize(const qsur_tokenizer *t, const char *s, size_t n, int first, scratch *sc)
{
    size_t k = 0;
    if (norm_add(sc, &k, s, n))
        return -1;
    for (int st = 0; st < t->n_norm; st++) {
        const tok_step *p = &t->norm[st];
        char *src = malloc(k + 1);
        if (!src)
            return -1;
        memcpy(src, sc->norm, k);
        size_t len = k, from = strlen(p->from);
        k = 0;
        int bad = 0;
        size_t tl = strlen(p->to);
        int meta_skip = p->kind == STEP_META_PREPEND &&
                        ((p->start && !first) || (len >= tl && !memcmp(src, p->to, tl)));
        if (p->kind == STEP_PREPEND || p->kind == STEP_META_PREPEND) {
            if (len && !meta_skip)
                bad = norm_add(sc, &k, p->to, tl);
            if (!bad && len)
                bad = norm_add(sc, &k, src, len);
        } else {
            for (size_t i = 0; i < len && !bad;) {
                if (from && i + from <= len && !memcmp(src + i, p->from, from)) {
                    bad = norm_add(sc, &k, p->to, strlen(p->to));
                    i += from;
                } else {
                    bad = norm_add(sc, &k, src + i, 1);
                    i++;
                }
            }
        }
        free(src);
        if (bad)
            return -1;
    }
    return (int64_t)k;
}

/* SentencePiece BPE: the normalized segment is one word of characters; a
 * character missing from the vocabulary becomes its <0xXX> byte tokens
 * (byte_fallback) or <unk> (runs fused when fuse_unk). */
static int encode_sentencepiece(const qsur_tokenizer *t, const char *s, size_t n, int first, scratch *sc,
                                qsur_token_ids *out, qsur_error *err)
{
    int64_t len = normalize(t, s, n, first, sc);
    if (len < 0 || reserve_syms(sc, len))
        return nomem(err);
    const unsigned char *u = (const unsigned char *)sc->norm;
    int64_t m = 0;
    sc->nword = 0;
    for (int64_t i = 0; i < len;) {
        if (word_starts(t, sc->norm, (size_t)len, (size_t)i))
            sc->word[sc->nword++] = m;
        int cl;
        qsur_utf8_decode(u + i, (size_t)(len - i), &cl);
        int id = tok_map_find(t, sc->norm + i, cl);
        int fallback = id < 0 && t->byte_fallback;
        for (int k = 0; fallback && k < cl; k++)
            fallback = t->byte_id[u[i + k]] >= 0;
        if (id >= 0) {
            sc->sym[m++] = id;
        } else if (fallback) {
            for (int k = 0; k < cl; k++)
                sc->sym[m++] = t->byte_id[u[i + k]];
        } else if (t->unk < 0) {
            return qsur_fail(err, QSUR_ERR_ARG, "tokenizer: byte offset %lld: a character without a token and "
                             "no <unk>", (long long)i);
        } else if (!(t->fuse_unk && m > 0 && sc->sym[m - 1] == t->unk)) {
            sc->sym[m++] = t->unk;
        }
        i += cl;
    }
    return merge_words(t, sc, m, out, err);
}

/* llama2.c's encode(): dummy-prefix " ", then each UTF-8 sequence (at most
 * 4 bytes, grouped exactly as run.c does) or its bytes + 3, then merges. */
static int encode_llama2c(const qsur_tokenizer *t, const unsigned char *s, size_t n, scratch *sc,
                          qsur_token_ids *out, qsur_error *err)
{
    if (n == 0)
        return QSUR_OK;
    if (reserve_syms(sc, (int64_t)n + 1))
        return nomem(err);
    int64_t m = 0;
    int space = tok_map_find(t, " ", 1);
    if (space >= 0)
        sc->sym[m++] = space;
    size_t start = 0;
    sc->nword = 0;
    for (size_t i = 0; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            start = i;
        if (start == i && word_starts(t, (const char *)s, n, i))
            sc->word[sc->nword++] = m;
        if (i + 1 < n && (s[i + 1] & 0xC0) == 0x80 && i + 1 - start < 4)
            continue;
        int id = tok_map_find(t, (const char *)s + start, (int)(i + 1 - start));
        if (id >= 0)
            sc->sym[m++] = id;
        else
            for (size_t k = start; k <= i; k++)
                sc->sym[m++] = s[k] + 3;
        start = i + 1;
    }
    return merge_words(t, sc, m, out, err);
}

static int encode_segment(const qsur_tokenizer *t, const char *s, size_t n, int first, scratch *sc,
                          qsur_token_ids *out, qsur_error *err)
{
    if (n == 0)
        return QSUR_OK;
    if (t->kind == QSUR_TOK_BYTE_LEVEL)
        return encode_byte_level(t, (const unsigned char *)s, n, sc, out, err);
    return encode_sentencepiece(t, s, n, first, sc, out, err);
}

/* The longest added token that starts at s[i], or -1. */
static int added_at(const qsur_tokenizer *t, const char *s, size_t n, size_t i)
{
    int best = -1;
    for (int k = 0; k < t->n_added; k++) {
        const tok_added *a = &t->added[k];
        if ((size_t)a->len <= n - i && !memcmp(s + i, a->text, (size_t)a->len) &&
            (best < 0 || a->len > t->added[best].len))
            best = k;
    }
    return best;
}

int qsur_tokenizer_encode(const qsur_tokenizer *t, const char *text, size_t len, int add_bos,
                          qsur_token_ids *out, qsur_error *err)
{
    scratch sc = {NULL, 0, NULL, 0, NULL, 0};
    int rc = QSUR_OK;
    if (add_bos && t->bos >= 0)
        rc = push_all(out, &t->bos, 1, err);
    if (!rc && t->kind == QSUR_TOK_LLAMA2C) {
        rc = encode_llama2c(t, (const unsigned char *)text, len, &sc, out, err);
    } else {
        /* added tokens are cut out of the raw text first (never normalized) */
        unsigned char first[256] = {0};
        for (int k = 0; k < t->n_added; k++)
            first[(unsigned char)t->added[k].text[0]] = 1;
        size_t pos = 0;
        while (!rc && pos < len) { /* the leftmost added token, then the longest there */
            size_t at = pos;
            int k = -1;
            for (; at < len; at++)
                if (first[(unsigned char)text[at]] && (k = added_at(t, text, len, at)) >= 0)
                    break;
            rc = encode_segment(t, text + pos, at - pos, pos == 0, &sc, out, err);
            if (!rc && k >= 0)
                rc = push_all(out, &t->added[k].id, 1, err);
            pos = k >= 0 ? at + (size_t)t->added[k].len : len;
        }
    }
    free(sc.sym);
    free(sc.word);
    free(sc.norm);
    return rc;
}
