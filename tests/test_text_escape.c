/* text_escape: terminal controls (C0, DEL, C1 as UTF-8 or raw) and invalid
 * UTF-8 become \xHH per byte; printable ASCII and valid UTF-8 (box drawing,
 * accents, emoji) pass unchanged; truncation never splits a piece and the
 * returned length is what the whole result needs. */
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "text_escape.h"

static void expect(const char *in, const char *want)
{
    char out[256];
    size_t n = text_escape(out, sizeof out, in);
    CHECK_MSG(!strcmp(out, want), "escape of [%s]: got [%s], want [%s]", in, out, want);
    CHECK_MSG(n == strlen(want), "length %zu, want %zu", n, strlen(want));
    CHECK(text_needs_escape(in) == (strcmp(in, want) != 0));
    char *d = text_escape_dup(in);
    CHECK(d && !strcmp(d, want));
    free(d);
}

int main(void)
{
    expect("layers.0.attention.wq", "layers.0.attention.wq");
    expect("", "");
    expect("a\x1b[31mred\x07", "a\\x1b[31mred\\x07");   /* ESC, BEL */
    expect("tab\there\nnl\r", "tab\\x09here\\x0anl\\x0d");
    expect("del\x7f", "del\\x7f");
    expect("\xc2\x9b" "2J", "\\xc2\\x9b2J");             /* U+009B CSI encoded in UTF-8 */
    expect("raw\x9b" "2J", "raw\\x9b2J");                /* a raw C1 byte (Latin-1 CSI) */
    expect("caf\xc3\xa9 \xe2\x94\x8c\xe2\x94\x80 \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x94\x8c\xe2\x94\x80 \xf0\x9f\x98\x80");
    expect("\xc0\xaf", "\\xc0\\xaf");                    /* overlong '/' */
    expect("\xe2\x94", "\\xe2\\x94");                    /* truncated sequence */
    expect("\xed\xa0\x80", "\\xed\\xa0\\x80");           /* a UTF-16 surrogate */
    /* already escaped text is left as it is (the backslash is printable) */
    expect("a\\x1b", "a\\x1b");

    /* truncation: whole pieces only, always terminated, full length returned */
    char small[8];
    size_t n = text_escape(small, sizeof small, "ab\x1b" "cd");
    CHECK_MSG(!strcmp(small, "ab\\x1bc"), "truncated: [%s]", small);
    CHECK(n == strlen("ab\\x1bcd"));
    n = text_escape(small, 5, "ab\x1b" "cd");
    CHECK_MSG(!strcmp(small, "ab"), "no half escape: [%s]", small);
    n = text_escape(small, 4, "\xe2\x94\x8c\xe2\x94\x8c");
    CHECK_MSG(!strcmp(small, "\xe2\x94\x8c"), "no half UTF-8: [%s]", small);
    CHECK(text_escape(NULL, 0, "\x1b") == 4);
    return check_done();
}
