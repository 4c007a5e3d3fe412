/* UTF-8, character classes and the GPT-2 byte map (see unicode.h). */
#include "unicode.h"

uint32_t qsur_utf8_decode(const unsigned char *s, size_t n, int *len)
{
    unsigned c = s[0];
    *len = 1;
    if (c < 0x80)
        return c;
    int need = c >= 0xF0 && c <= 0xF4 ? 3 : c >= 0xE0 ? (c <= 0xEF ? 2 : -1) : c >= 0xC2 ? 1 : -1;
    if (need < 0 || (size_t)need >= n)
        return QSUR_UNICODE_INVALID;
    uint32_t cp = c & (0x3Fu >> need);
    for (int i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return QSUR_UNICODE_INVALID;
        cp = cp << 6 | (s[i] & 0x3Fu);
    }
    /* overlong forms, surrogates and values past U+10FFFF are invalid */
    static const uint32_t min_cp[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[need] || (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
        return QSUR_UNICODE_INVALID;
    *len = need + 1;
    return cp;
}

static int in_ranges(const qsur_unicode_range *r, int n, uint32_t cp)
{
    int lo = 0, hi = n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cp < r[mid].lo)
            hi = mid - 1;
        else if (cp > r[mid].hi)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

/* White_Space (what \s matches in the Oniguruma regex engine of Hugging Face
 * tokenizers): TAB..CR, space, NEL, NBSP, OGHAM SPACE MARK, U+2000..200A,
 * LINE/PARAGRAPH SEPARATOR, NNBSP, MMSP, IDEOGRAPHIC SPACE. */
static int is_space(uint32_t cp)
{
    return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

int qsur_unicode_class(uint32_t cp)
{
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return QSUR_UC_LETTER;
        if (cp >= '0' && cp <= '9')
            return QSUR_UC_NUMBER;
        return is_space(cp) ? QSUR_UC_SPACE : 0;
    }
    if (cp == QSUR_UNICODE_INVALID)
        return 0;
    if (is_space(cp))
        return QSUR_UC_SPACE;
    if (in_ranges(qsur_unicode_letters, qsur_unicode_letters_count, cp))
        return QSUR_UC_LETTER;
    return in_ranges(qsur_unicode_numbers, qsur_unicode_numbers_count, cp) ? QSUR_UC_NUMBER : 0;
}

/* Bytes GPT-2 keeps as themselves: '!'..'~', U+00A1..U+00AC, U+00AE..U+00FF. */
static int byte_kept(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

/* The 68 other bytes, in order: 0x00..0x20, 0x7F..0xA0, 0xAD. */
uint32_t qsur_byte_to_unicode(unsigned char b)
{
    if (byte_kept(b))
        return b;
    if (b <= 0x20)
        return 0x100u + b;
    if (b >= 0x7F && b <= 0xA0)
        return 0x100u + 33 + (b - 0x7Fu);
    return 0x143; /* 0xAD, soft hyphen */
}

int qsur_unicode_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_kept(cp) ? (int)cp : -1;
    uint32_t n = cp - 0x100;
    return n < 33 ? (int)n : n < 67 ? (int)(0x7F + n - 33) : n == 67 ? 0xAD : -1;
}
