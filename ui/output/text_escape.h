/* Text from files (tensor names, paths, messages that quote them) shown to a
 * person: terminal control characters in it could move the cursor, retitle
 * the window or worse, so they are shown as \xHH instead. The one function
 * every human-facing output path uses (reports, errors, plots, prompt, TUI). */
#ifndef QSUR_UI_TEXT_ESCAPE_H
#define QSUR_UI_TEXT_ESCAPE_H

#include <stddef.h>

/* Copies src into dst (size n, always terminated when n > 0), writing every
 * C0 control (bytes < 0x20), DEL, C1 control (U+0080..U+009F) and byte that
 * is not part of valid UTF-8 as the four characters \xHH (per byte). Returns
 * the length the whole result needs (snprintf style). */
size_t text_escape(char *dst, size_t n, const char *src);
/* The same into a new string (malloc'ed; NULL when out of memory). */
char *text_escape_dup(const char *src);
/* Whether text_escape would change src. */
int text_needs_escape(const char *src);

#endif
