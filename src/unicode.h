/* Unicode pieces the tokenizers need (private to the engine): UTF-8 decoding
 * that never fails, the general categories L and N and the White_Space
 * property as the Llama-3 pre-tokenizer regex uses them (\p{L}, \p{N}, \s),
 * and GPT-2's byte <-> code point map of byte-level BPE. */
#ifndef QSUR_UNICODE_H
#define QSUR_UNICODE_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t lo, hi; /* inclusive */
} qsur_unicode_range;

extern const qsur_unicode_range qsur_unicode_letters[];
extern const int qsur_unicode_letters_count;
extern const qsur_unicode_range qsur_unicode_numbers[];
extern const int qsur_unicode_numbers_count;

/* A code point that no valid UTF-8 decodes to: an invalid byte stands for
 * itself as one "other" character (neither letter, number nor space). */
#define QSUR_UNICODE_INVALID 0xFFFFFFFFu

/* Decodes the character at s[0..n), n >= 1; *len gets its byte length (1 for
 * an invalid or truncated sequence, which returns QSUR_UNICODE_INVALID). */
uint32_t qsur_utf8_decode(const unsigned char *s, size_t n, int *len);

enum { QSUR_UC_LETTER = 1, QSUR_UC_NUMBER = 2, QSUR_UC_SPACE = 4 };
/* Bit set of QSUR_UC_* for cp (0 for QSUR_UNICODE_INVALID). */
int qsur_unicode_class(uint32_t cp);

/* GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the
 * other 68 bytes to U+0100.. in byte order. */
uint32_t qsur_byte_to_unicode(unsigned char b);
/* The inverse: the byte of cp, or -1 when cp is not in the map. */
int qsur_unicode_to_byte(uint32_t cp);

#endif
