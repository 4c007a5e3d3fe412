/* Escaping of control characters in text shown to people (see text_escape.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "text_escape.h"

/* Length of the valid, printable UTF-8 sequence at p, or 0 when the byte at p
 * must be escaped (control, DEL, C1, stray or overlong/invalid byte). */
static int printable_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x20 || c == 0x7f)
        return 0;
    if (c < 0x80)
        return 1;
    int n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if (n == 0)
        return 0;
    unsigned cp = n == 2 ? (c & 0x1f) << 6 | (p[1] & 0x3f)
                 : n == 3 ? (c & 0x0f) << 12 | (p[1] & 0x3f) << 6 | (p[2] & 0x3f)
                          : (c & 0x07) << 18 | (p[1] & 0x3f) << 12 | (p[2] & 0x3f) << 6 | (p[3] & 0x3f);
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
        return 0;
    return n;
}

size_t text_escape(char *dst, size_t n, const char *src)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)src; *p;) {
        int k = printable_len(p);
        char esc[5];
        const char *piece = (const char *)p;
        size_t len = (size_t)k;
        if (k == 0) {
            snprintf(esc, sizeof esc, "\\x%02x", *p);
            piece = esc;
            len = 4;
            k = 1;
        }
        /* never split a piece: a cut \xHH or UTF-8 sequence would be garbage */
        if (n > 0 && o + len < n)
            memcpy(dst + o, piece, len);
        else if (n > 0 && o < n)
            n = o + 1; /* full: stop writing, keep counting */
        o += len;
        p += k;
    }
    if (n > 0)
        dst[o < n ? o : n - 1] = '\0';
    return o;
}

char *text_escape_dup(const char *src)
{
    size_t need = text_escape(NULL, 0, src);
    char *d = malloc(need + 1);
    if (d)
        text_escape(d, need + 1, src);
    return d;
}

int text_needs_escape(const char *src)
{
    for (const unsigned char *p = (const unsigned char *)src; *p;) {
        int k = printable_len(p);
        if (k == 0)
            return 1;
        p += k;
    }
    return 0;
}
