/* Transform stack: the current layer's steps (the newest last, "> " on the
 * current one, undone steps marked), read from the layer's qsur_stack, and
 * the SmoothQuant alpha the `s` key applies. */
#include <curses.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/stack.h"
#include "tui_panel.h"

typedef struct {
    char **lines;
    int n;
} stack_view;

static void clear_lines(stack_view *v)
{
    for (int i = 0; i < v->n; i++)
        free(v->lines[i]);
    free(v->lines);
    v->lines = NULL;
    v->n = 0;
}

static void add_line(stack_view *v, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add_line(stack_view *v, const char *fmt, ...)
{
    char **q = realloc(v->lines, (size_t)(v->n + 1) * sizeof *q);
    if (!q)
        return;
    v->lines = q;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&q[v->n], fmt, ap) >= 0)
        v->n++;
    va_end(ap);
}

static void update(tui *t, tui_panel *p)
{
    stack_view *v = p->state;
    if (!v)
        return;
    clear_lines(v);
    session *s = t->s;
    if (s->current < 0 || s->current >= s->nlayers)
        return;
    const qsur_stack *st = s->layers[s->current].stack;
    int depth = st ? qsur_stack_depth(st) : 0, redo = st ? qsur_stack_redo_depth(st) : 0;
    add_line(v, "%s0. original", depth == 0 ? "> " : "  ");
    for (int i = 1; i <= depth + redo; i++) {
        const qsur_transform *step = qsur_stack_step(st, i);
        add_line(v, "%s%d. %s%s", i == depth ? "> " : "  ", i, step ? step->desc : "?",
                 i > depth ? " (undone)" : "");
    }
}

static void draw(tui *t, tui_panel *p)
{
    stack_view *v = p->state;
    tui_rect *r = &p->r;
    tui_box(t, r, "transform stack", 0);
    int h = r->h - 2, w = r->w - 2;
    /* Keep the newest steps in view: show the tail when the list is long. */
    int n = v ? v->n : 0, shown = h - 1, first = n > shown ? n - shown : 0;
    for (int i = first, y = r->y + 1; i < n && y < r->y + 1 + shown; i++, y++)
        tui_text(t, y, r->x + 1, w, v->lines[i]);
    if (t->s->current < 0)
        tui_text(t, r->y + 1, r->x + 1, w, "(no layer)");
    attron(A_DIM);
    tui_textf(t, r->y + h, r->x + 1, w, "s: smooth alpha %.2f (+/-)", t->smooth_alpha);
    attroff(A_DIM);
}

static void free_state(tui_panel *p)
{
    if (p->state)
        clear_lines(p->state);
    free(p->state);
    p->state = NULL;
}

void tui_panel_stack_init(tui_panel *p)
{
    p->title = "stack";
    p->visible = 1;
    p->draw = draw;
    p->key = NULL;
    p->update = update;
    p->free_state = free_state;
    p->state = calloc(1, sizeof(stack_view));
}
