/* Transform stack: what the `stack` command prints for the current layer
 * (the newest step last), and the SmoothQuant alpha the `s` key applies. */
#include <curses.h>
#include "tui_panel.h"

static void draw(tui *t, tui_panel *p)
{
    tui_rect *r = &p->r;
    tui_box(t, r, "transform stack", 0);
    int h = r->h - 2, w = r->w - 2;
    /* Keep the newest steps in view: show the tail when the list is long. */
    int shown = h - 1, first = t->nstack > shown ? t->nstack - shown : 0;
    for (int i = first, y = r->y + 1; i < t->nstack && y < r->y + 1 + shown; i++, y++)
        tui_text(t, y, r->x + 1, w, t->stack_lines[i]);
    if (t->s->current < 0)
        tui_text(t, r->y + 1, r->x + 1, w, "(no layer)");
    attron(A_DIM);
    tui_textf(t, r->y + h, r->x + 1, w, "s: smooth alpha %.2f (+/-)", t->smooth_alpha);
    attroff(A_DIM);
}

void tui_panel_stack_init(tui_panel *p)
{
    p->title = "stack";
    p->visible = 1;
    p->draw = draw;
    p->key = NULL;
}
