/* Output log: what every command printed (its human report), with the
 * command line itself echoed as "> line" and errors as "error: ...".
 * The panel owns the log (a ring of lines and a scroll offset); the line
 * runner writes into it only through tui_log_append / tui_log_stream, and
 * PgUp/PgDn move it through tui_log_scroll. Draw only paints. */
#include <curses.h>
#include <stdlib.h>
#include <string.h>
#include "tui_panel.h"

#define LOG_MAX 2000

typedef struct {
    char *line[LOG_MAX]; /* ring: the oldest at head */
    int n, head;
    int scroll;          /* lines scrolled up from the bottom */
} output_log;

static void push_line(output_log *g, const char *s, size_t n)
{
    char *copy = strndup(s, n);
    if (!copy)
        return;
    if (g->n == LOG_MAX) {
        free(g->line[g->head]);
        g->line[g->head] = copy;
        g->head = (g->head + 1) % LOG_MAX;
    } else {
        g->line[(g->head + g->n++) % LOG_MAX] = copy;
    }
}

void tui_log_append(tui_panel *p, const char *text)
{
    output_log *g = p->state;
    if (!g)
        return;
    for (const char *s = text; *s;) {
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        push_line(g, s, n);
        s += n + (nl ? 1 : 0);
    }
    g->scroll = 0;
}

void tui_log_stream(tui_panel *p, const char *text)
{
    output_log *g = p->state;
    if (!g)
        return;
    if (!text) { /* a new stream starts on a line of its own */
        push_line(g, "", 0);
        return;
    }
    for (const char *s = text; *s;) {
        const char *nl = strchr(s, '\n');
        size_t n = nl ? (size_t)(nl - s) : strlen(s);
        if (!g->n)
            push_line(g, "", 0);
        int last = (g->head + g->n - 1) % LOG_MAX;
        size_t old = strlen(g->line[last]);
        char *grown = realloc(g->line[last], old + n + 1);
        if (grown) {
            memcpy(grown + old, s, n);
            grown[old + n] = '\0';
            g->line[last] = grown;
        }
        if (nl)
            push_line(g, "", 0);
        s += n + (nl ? 1 : 0);
    }
    g->scroll = 0;
}

void tui_log_scroll(tui_panel *p, int pages)
{
    output_log *g = p->state;
    if (!g)
        return;
    int h = p->r.h - 2;
    int max_scroll = g->n > h ? g->n - h : 0;
    g->scroll += pages * h;
    if (g->scroll > max_scroll)
        g->scroll = max_scroll;
    if (g->scroll < 0)
        g->scroll = 0;
}

static void draw(tui *t, tui_panel *p)
{
    const output_log *g = p->state;
    tui_rect *r = &p->r;
    int h = r->h - 2, w = r->w - 2;
    int n = g ? g->n : 0;
    int max_scroll = n > h ? n - h : 0;
    int scroll = g && g->scroll < max_scroll ? g->scroll : max_scroll; /* after a resize */
    char title[64];
    if (scroll)
        snprintf(title, sizeof title, "output (scrolled %d, PgDn)", scroll);
    else
        snprintf(title, sizeof title, "output");
    tui_box(t, r, title, 0);
    int first = n - h - scroll;
    if (first < 0)
        first = 0;
    for (int i = 0; i < h && first + i < n; i++) {
        const char *line = g->line[(g->head + first + i) % LOG_MAX];
        int attr = !strncmp(line, "error: ", 7) ? tui_attr(t, TUI_PAIR_BAD, A_BOLD)
                   : !strncmp(line, "> ", 2)    ? (int)A_BOLD
                                                : (int)A_NORMAL;
        attron(attr);
        tui_text(t, r->y + 1 + i, r->x + 1, w, line);
        attroff(attr);
    }
}

static void free_state(tui_panel *p)
{
    output_log *g = p->state;
    for (int i = 0; g && i < g->n; i++)
        free(g->line[(g->head + i) % LOG_MAX]);
    free(g);
    p->state = NULL;
}

void tui_panel_output_init(tui_panel *p)
{
    p->title = "output";
    p->visible = 1;
    p->draw = draw;
    p->key = NULL;
    p->free_state = free_state;
    p->state = calloc(1, sizeof(output_log));
}
