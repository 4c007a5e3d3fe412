/* Decoding: each id's text (byte-level pieces are already raw bytes), then
 * the decoder steps of the tokenizer.json in order, as the `tokenizers`
 * crate runs them over the list of token strings: Replace and ByteFallback
 * per token, Fuse joins them, Strip trims each token's ends. */
#include <stdlib.h>
#include <string.h>
#include "tokenizer_impl.h"

typedef struct {
    char *s;
    size_t n;
} piece;

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* In place when `to` is not longer than `from`, else into a new buffer. */
static int replace_all(piece *p, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), hits = 0;
    if (!fl)
        return 0;
    for (size_t i = 0; i + fl <= p->n; i++)
        if (!memcmp(p->s + i, from, fl)) {
            hits++;
            i += fl - 1;
        }
    if (!hits)
        return 0;
    char *o = malloc(p->n + hits * tl + 1);
    if (!o)
        return -1;
    size_t k = 0;
    for (size_t i = 0; i < p->n;) {
        if (i + fl <= p->n && !memcmp(p->s + i, from, fl)) {
            memcpy(o + k, to, tl);
            k += tl;
            i += fl;
        } else {
            o[k++] = p->s[i++];
        }
    }
    free(p->s);
    p->s = o;
    p->n = k;
    return 0;
}

/* "<0xXX>" -> the byte (ByteFallback) */
static void byte_fallback(piece *p)
{
    if (p->n == 6 && !memcmp(p->s, "<0x", 3) && p->s[5] == '>' && hexval(p->s[3]) >= 0 && hexval(p->s[4]) >= 0) {
        p->s[0] = (char)(hexval(p->s[3]) * 16 + hexval(p->s[4]));
        p->n = 1;
    }
}

static void strip(piece *p, char c, int start, int stop)
{
    size_t a = 0, b = p->n;
    for (int i = 0; i < start && a < b && p->s[a] == c; i++)
        a++;
    for (int i = 0; i < stop && b > a && p->s[b - 1] == c; i++)
        b--;
    memmove(p->s, p->s + a, b - a);
    p->n = b - a;
}

static int fuse(piece *ps, int64_t *n)
{
    size_t total = 0;
    for (int64_t i = 0; i < *n; i++)
        total += ps[i].n;
    char *o = malloc(total + 1);
    if (!o)
        return -1;
    size_t k = 0;
    for (int64_t i = 0; i < *n; i++) {
        memcpy(o + k, ps[i].s, ps[i].n);
        k += ps[i].n;
        free(ps[i].s);
    }
    ps[0].s = o;
    ps[0].n = k;
    *n = *n ? 1 : 0;
    if (!k && !*n)
        free(o);
    return 0;
}

int qsur_tokenizer_decode(const qsur_tokenizer *t, const int *ids, int64_t n, char **out, size_t *len,
                          qsur_error *err)
{
    *out = NULL;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n_ids || t->raw_len[ids[i]] < 0)
            return qsur_fail(err, QSUR_ERR_ARG, "token id %d (position %lld) is not in the tokenizer's vocabulary "
                             "(0..%d)", ids[i], (long long)i, t->n_ids - 1);
    piece *ps = calloc((size_t)(n > 0 ? n : 1), sizeof *ps);
    int64_t np = n, bad = !ps;
    for (int64_t i = 0; i < n && !bad; i++) {
        int id = ids[i];
        ps[i].n = (size_t)t->raw_len[id];
        ps[i].s = malloc(ps[i].n + 1);
        bad = !ps[i].s;
        if (!bad)
            memcpy(ps[i].s, t->raw + t->raw_off[id], ps[i].n);
    }
    for (int st = 0; st < t->n_dec && !bad; st++) {
        const tok_step *d = &t->dec[st];
        if (d->kind == STEP_FUSE) {
            bad = fuse(ps, &np) != 0;
            continue;
        }
        for (int64_t i = 0; i < np && !bad; i++) {
            if (d->kind == STEP_REPLACE)
                bad = replace_all(&ps[i], d->from, d->to) != 0;
            else if (d->kind == STEP_BYTE_FALLBACK)
                byte_fallback(&ps[i]);
            else if (d->kind == STEP_STRIP)
                strip(&ps[i], d->from[0], d->start, d->stop);
            else if (d->kind == STEP_META_DEC)
                bad = replace_all(&ps[i], d->from, i == 0 && d->start ? "" : " ") != 0;
            /* STEP_BYTE_LEVEL: the pieces already hold the bytes */
        }
    }
    if (!bad && np > 1)
        bad = fuse(ps, &np) != 0;
    char *o = NULL;
    size_t k = 0;
    if (!bad) {
        o = np ? ps[0].s : malloc(1);
        k = np ? ps[0].n : 0;
        if (np)
            ps[0].s = NULL;
        bad = !o;
    }
    for (int64_t i = 0; ps && i < np; i++)
        free(ps[i].s);
    free(ps);
    if (bad) {
        free(o);
        return qsur_fail(err, QSUR_ERR_NOMEM, "decoding: out of memory for %lld ids", (long long)n);
    }
    char *r = realloc(o, k + 1);
    if (r)
        o = r;
    o[k] = '\0';
    *out = o;
    if (len)
        *len = k;
    return QSUR_OK;
}
