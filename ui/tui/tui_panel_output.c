/* Output log: what every command printed (its human report), with the
 * command line itself echoed as "> line" and errors as "error: ...".
 * PgUp/PgDn scroll it (tui.c). */
#include <curses.h>
#include <string.h>
#include "tui_panel.h"

static void draw(tui *t, tui_panel *p)
{
    tui_rect *r = &p->r;
    int h = r->h - 2, w = r->w - 2;
    int max_scroll = t->nout > h ? t->nout - h : 0;
    if (t->out_scroll > max_scroll)
        t->out_scroll = max_scroll;
    char title[64];
    if (t->out_scroll)
        snprintf(title, sizeof title, "output (scrolled %d, PgDn)", t->out_scroll);
    else
        snprintf(title, sizeof title, "output");
    tui_box(t, r, title, 0);
    int first = t->nout - h - t->out_scroll;
    if (first < 0)
        first = 0;
    for (int i = 0; i < h && first + i < t->nout; i++) {
        const char *line = t->out[(t->out_head + first + i) % TUI_OUTPUT_MAX];
        int attr = !strncmp(line, "error: ", 7) ? tui_attr(t, TUI_PAIR_BAD, A_BOLD)
                   : !strncmp(line, "> ", 2)    ? (int)A_BOLD
                                                : (int)A_NORMAL;
        attron(attr);
        tui_text(t, r->y + 1 + i, r->x + 1, w, line);
        attroff(attr);
    }
}

void tui_panel_output_init(tui_panel *p)
{
    p->title = "output";
    p->visible = 1;
    p->draw = draw;
    p->key = NULL;
}
