/* The Llama-3 pre-tokenizer: Split on the regex
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * with behaviour Isolated: every match is a piece. Written out by hand, one
 * alternative after the other as the regex engine tries them at a position
 * (leftmost alternative that matches wins, each quantifier greedy), instead
 * of linking a regex library: the alternatives never need backtracking except
 * \s+(?!\S), which gives back one space when a non-space follows. */
#include "tokenizer_impl.h"
#include "unicode.h"

typedef struct {
    const unsigned char *s;
    size_t n;
} text;

/* Code point and class at byte offset i (i == n: the end, class 0). */
static uint32_t cp_at(const text *t, size_t i, int *len, int *cls)
{
    if (i >= t->n) {
        *len = 0;
        *cls = 0;
        return QSUR_UNICODE_INVALID;
    }
    uint32_t c = qsur_utf8_decode(t->s + i, t->n - i, len);
    *cls = qsur_unicode_class(c);
    return c;
}

static int is_crlf(uint32_t c) { return c == '\r' || c == '\n'; }

/* ASCII case folding plus U+017F LATIN SMALL LETTER LONG S, which Unicode
 * case folding maps to 's' (the (?i:...) group is case-insensitive). */
static uint32_t fold(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    return c == 0x17F ? 's' : c;
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d) at i: the end, or 0. */
static size_t contraction(const text *t, size_t i)
{
    if (t->s[i] != '\'')
        return 0;
    int l1, l2, c;
    uint32_t a = fold(cp_at(t, i + 1, &l1, &c));
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return i + 1 + (size_t)l1;
    uint32_t b = fold(cp_at(t, i + 1 + (size_t)l1, &l2, &c));
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return i + 1 + (size_t)l1 + (size_t)l2;
    return 0;
}

size_t tok_llama3_piece(const unsigned char *s, size_t n)
{
    text t = {s, n};
    int len, cls, len2, cls2;
    uint32_t c = cp_at(&t, 0, &len, &cls);
    size_t e = contraction(&t, 0);
    if (e)
        return e;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!is_crlf(c) && !(cls & QSUR_UC_NUMBER)) {
        size_t i = cls & QSUR_UC_LETTER ? 0 : (size_t)len;
        cp_at(&t, i, &len2, &cls2);
        if (cls2 & QSUR_UC_LETTER) {
            while (cls2 & QSUR_UC_LETTER) {
                i += (size_t)len2;
                cp_at(&t, i, &len2, &cls2);
            }
            return i;
        }
    }
    /* \p{N}{1,3} */
    if (cls & QSUR_UC_NUMBER) {
        size_t i = (size_t)len;
        for (int k = 1; k < 3; k++) {
            cp_at(&t, i, &len2, &cls2);
            if (!(cls2 & QSUR_UC_NUMBER))
                break;
            i += (size_t)len2;
        }
        return i;
    }
    /* ' ?[^\s\p{L}\p{N}]+[\r\n]*': an invalid byte counts as such a character */
    {
        size_t i = c == ' ' ? 1 : 0;
        uint32_t d = cp_at(&t, i, &len2, &cls2);
        if (i < n && !cls2) {
            while (i < n && !cls2) {
                i += (size_t)len2;
                d = cp_at(&t, i, &len2, &cls2);
            }
            while (i < n && is_crlf(d)) {
                i += (size_t)len2;
                d = cp_at(&t, i, &len2, &cls2);
            }
            return i;
        }
    }
    /* the run of spaces at 0; where its last \r or \n ends */
    size_t i = 0, last_crlf = 0, before_last = 0;
    uint32_t d = c;
    cls2 = cls;
    len2 = len;
    while (cls2 & QSUR_UC_SPACE) {
        before_last = i;
        i += (size_t)len2;
        if (is_crlf(d))
            last_crlf = i;
        d = cp_at(&t, i, &len2, &cls2);
    }
    if (last_crlf) /* \s*[\r\n]+ */
        return last_crlf;
    if (i > before_last && before_last > 0 && i < n) /* \s+(?!\S): leave the last space */
        return before_last;
    if (i > 0) /* \s+ */
        return i;
    return (size_t)len; /* not reached: every character is one of the classes above */
}
