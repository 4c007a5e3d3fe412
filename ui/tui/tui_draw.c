/* Drawing primitives of the TUI. Box drawing and block characters are UTF-8
 * only when the locale is UTF-8 (ncursesw then takes the multibyte strings);
 * otherwise plain ASCII, never the VT100 alternate character set, so the
 * screen reads the same on a dumb `linux` console or through a logger.
 * Colour is only a decoration: every highlight has an attribute fallback. */
#include <curses.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "text_escape.h"
#include "tui_panel.h"

int tui_attr(tui *t, int pair, int fallback)
{
    return t->color ? (int)COLOR_PAIR(pair) | fallback : fallback;
}

/* Bytes of the UTF-8 sequence starting with byte c (1 for invalid bytes). */
static int utf8_len(unsigned char c)
{
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0)
        return 2;
    if ((c & 0xF0) == 0xE0)
        return 3;
    if ((c & 0xF8) == 0xF0)
        return 4;
    return 1;
}

int tui_display_width(const char *s)
{
    int w = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p += utf8_len(*p))
        w++;
    return w;
}

void tui_text(tui *t, int y, int x, int w, const char *s)
{
    if (w <= 0 || y < 0 || y >= t->rows || x >= t->cols)
        return;
    if (x + w > t->cols)
        w = t->cols - x;
    /* Control characters (a tensor name from a file) shown as \xHH; then cut
     * at w code points; in ASCII mode non-ASCII bytes become '?'. */
    char safe[1024];
    text_escape(safe, sizeof safe, s);
    char buf[1024];
    size_t o = 0;
    int cols = 0;
    for (const unsigned char *p = (const unsigned char *)safe; *p && cols < w && o + 5 < sizeof buf;) {
        int n = utf8_len(*p);
        if (n > 1 && !t->utf8) {
            buf[o++] = '?';
        } else {
            for (int i = 0; i < n && p[i]; i++)
                buf[o++] = (char)p[i];
        }
        for (int i = 0; i < n && *p; i++)
            p++;
        cols++;
    }
    buf[o] = '\0';
    mvaddstr(y, x, buf);
}

void tui_textf(tui *t, int y, int x, int w, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tui_text(t, y, x, w, buf);
}

void tui_box(tui *t, const tui_rect *r, const char *title, int focused)
{
    if (r->h < 2 || r->w < 2)
        return;
    const char *h = t->utf8 ? "─" : "-", *v = t->utf8 ? "│" : "|";
    const char *tl = t->utf8 ? "┌" : "+", *tr = t->utf8 ? "┐" : "+";
    const char *bl = t->utf8 ? "└" : "+", *br = t->utf8 ? "┘" : "+";
    int attr = focused ? tui_attr(t, TUI_PAIR_FOCUS, A_BOLD) : (int)A_NORMAL;
    attron(attr);
    mvaddstr(r->y, r->x, tl);
    for (int i = 1; i < r->w - 1; i++)
        addstr(h);
    addstr(tr);
    for (int j = 1; j < r->h - 1; j++) {
        mvaddstr(r->y + j, r->x, v);
        mvaddstr(r->y + j, r->x + r->w - 1, v);
    }
    mvaddstr(r->y + r->h - 1, r->x, bl);
    for (int i = 1; i < r->w - 1; i++)
        addstr(h);
    addstr(br);
    attroff(attr);
    if (title && r->w > 6) {
        attron(A_BOLD | (focused ? A_REVERSE : 0));
        tui_textf(t, r->y, r->x + 2, r->w - 4, " %s ", title);
        attroff(A_BOLD | (focused ? A_REVERSE : 0));
    }
}

void tui_vbar_cell(tui *t, int y, int x, int eighths)
{
    static const char *const blocks[] = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
    if (eighths < 0)
        eighths = 0;
    if (eighths > 8)
        eighths = 8;
    if (t->utf8)
        mvaddstr(y, x, blocks[eighths]);
    else
        mvaddch(y, x, eighths >= 4 ? '#' : (eighths > 0 ? '.' : ' '));
}

void tui_shade(tui *t, int y, int x, double v)
{
    static const char *const u[] = {" ", "░", "▒", "▓", "█"};
    static const char a[] = " .:-=+*#%@";
    if (!(v > 0))
        v = 0;
    if (v > 1)
        v = 1;
    if (t->utf8) {
        int i = (int)(v * 4 + 0.5);
        mvaddstr(y, x, u[i]);
    } else {
        int i = (int)(v * 9 + 0.5);
        mvaddch(y, x, (chtype)(unsigned char)a[i]);
    }
}
