/* Command line (`:` focuses it): any command of the table, ';' separating
 * several, run through tui_exec so output lands in the log and state changes
 * are logged. Up/Down walk the history, Tab completes from the command table
 * (command names, then each command's own words or tensor names). */
#include <curses.h>
#include <stdlib.h>
#include <string.h>
#include "complete.h"
#include "tui_panel.h"

#define PROMPT ":"

/* The panel's data: the line being edited and the history of lines run. */
typedef struct {
    char line[TUI_LINE_MAX];
    int len, cursor;
    char *history[TUI_HISTORY_MAX];
    int nhistory, hist_pos;
    char completion_msg[160];
} cmdline_state;

void tui_cmdline_start(tui *t, const char *prefill)
{
    cmdline_state *c = t->cmdline.state;
    snprintf(c->line, sizeof c->line, "%s", prefill);
    c->len = c->cursor = (int)strlen(c->line);
    c->hist_pos = c->nhistory;
    t->focus = &t->cmdline;
}

static void draw(tui *t, tui_panel *p)
{
    cmdline_state *c = t->cmdline.state;
    tui_rect *r = &p->r;
    int focused = t->focus == p;
    move(r->y, r->x);
    clrtoeol();
    if (!focused) {
        attron(A_DIM);
        tui_text(t, r->y, r->x, r->w, ": command line  (Tab completes, Up/Down history, Enter runs, Esc leaves)");
        attroff(A_DIM);
        return;
    }
    /* Scroll horizontally so the cursor stays visible. */
    int avail = r->w - 2, start = c->cursor > avail - 1 ? c->cursor - (avail - 1) : 0;
    attron(A_BOLD);
    mvaddstr(r->y, r->x, PROMPT);
    attroff(A_BOLD);
    tui_text(t, r->y, r->x + 1, avail, c->line + start);
    move(r->y, r->x + 1 + (c->cursor - start));
}

static void set_line(tui *t, const char *s)
{
    cmdline_state *c = t->cmdline.state;
    snprintf(c->line, sizeof c->line, "%s", s);
    c->len = c->cursor = (int)strlen(c->line);
}

static void insert_text(tui *t, const char *s)
{
    cmdline_state *c = t->cmdline.state;
    int n = (int)strlen(s);
    if (c->len + n >= TUI_LINE_MAX)
        return;
    memmove(c->line + c->cursor + n, c->line + c->cursor, (size_t)(c->len - c->cursor + 1));
    memcpy(c->line + c->cursor, s, (size_t)n);
    c->len += n;
    c->cursor += n;
}

/* Tab: the REPL's completion (command names, then what the command table
 * says each command's arguments are), applied to the word before the cursor. */
static void complete(tui *t)
{
    const cmdline_state *ed = t->cmdline.state;
    int start = ed->cursor;
    while (start > 0 && ed->line[start - 1] != ' ' && ed->line[start - 1] != ';')
        start--;
    char prefix[TUI_LINE_MAX], upto[TUI_LINE_MAX];
    snprintf(prefix, sizeof prefix, "%.*s", ed->cursor - start, ed->line + start);
    snprintf(upto, sizeof upto, "%.*s", ed->cursor, ed->line);
    int want_files = 0;
    char **c = command_candidates(t->s, upto, start, prefix, &want_files);
    int n = 0;
    while (c && c[n])
        n++;
    if (n == 0) {
        tui_status(t, want_files ? "type the file name (no file completion here)" : "no completion for '%s'",
                   prefix);
        command_candidates_free(c);
        return;
    }
    /* Longest common prefix of the candidates. */
    size_t common = strlen(c[0]), have = strlen(prefix);
    for (int i = 1; i < n; i++) {
        size_t k = 0;
        while (k < common && c[i][k] == c[0][k])
            k++;
        common = k;
    }
    if (common > have) {
        char add[TUI_LINE_MAX];
        snprintf(add, sizeof add, "%.*s", (int)(common - have), c[0] + have);
        insert_text(t, add);
    }
    if (n == 1) {
        insert_text(t, " ");
        tui_status(t, "%s", "");
    } else {
        char list[256];
        size_t o = 0;
        for (int i = 0; i < n && o + 2 < sizeof list; i++)
            o += (size_t)snprintf(list + o, sizeof list - o, "%s ", c[i]);
        tui_status(t, "%s", list);
    }
    command_candidates_free(c);
}

static void run_line(tui *t)
{
    cmdline_state *c = t->cmdline.state;
    const char *p = c->line;
    while (*p == ' ')
        p++;
    t->focus = &t->layers;
    if (!*p)
        return;
    if (c->nhistory == 0 || strcmp(c->history[c->nhistory - 1], c->line)) {
        if (c->nhistory == TUI_HISTORY_MAX) {
            free(c->history[0]);
            memmove(c->history, c->history + 1, (TUI_HISTORY_MAX - 1) * sizeof *c->history);
            c->nhistory--;
        }
        char *copy = strdup(c->line);
        if (copy)
            c->history[c->nhistory++] = copy;
    }
    char line[TUI_LINE_MAX];
    snprintf(line, sizeof line, "%s", p);
    c->len = c->cursor = 0;
    c->line[0] = '\0';
    tui_exec(t, line, TUI_ECHO);
}

/* Keys that edit the line in place (readline's); 0 when ch is none of them. */
static int edit_key(tui *t, int ch)
{
    cmdline_state *c = t->cmdline.state;
    switch (ch) {
    case KEY_BACKSPACE:
    case 127:
    case 8:
        if (c->cursor > 0) {
            memmove(c->line + c->cursor - 1, c->line + c->cursor, (size_t)(c->len - c->cursor + 1));
            c->cursor--;
            c->len--;
        } else if (c->len == 0) {
            t->focus = &t->layers; /* backspace on an empty line leaves, like vim */
        }
        return 1;
    case KEY_DC:
    case 4: /* Ctrl-D */
        if (c->cursor < c->len) {
            memmove(c->line + c->cursor, c->line + c->cursor + 1, (size_t)(c->len - c->cursor));
            c->len--;
        }
        return 1;
    case KEY_LEFT:
    case 2:
        c->cursor -= c->cursor > 0;
        return 1;
    case KEY_RIGHT:
    case 6:
        c->cursor += c->cursor < c->len;
        return 1;
    case KEY_HOME:
    case 1:
        c->cursor = 0;
        return 1;
    case KEY_END:
    case 5:
        c->cursor = c->len;
        return 1;
    case 21: /* Ctrl-U */
        memmove(c->line, c->line + c->cursor, (size_t)(c->len - c->cursor + 1));
        c->len -= c->cursor;
        c->cursor = 0;
        return 1;
    default:
        return 0;
    }
}

/* History, completion, running the line, scrolling the output, leaving. */
static int key(tui *t, tui_panel *p, int ch)
{
    cmdline_state *c = t->cmdline.state;
    (void)p;
    if (edit_key(t, ch))
        return 1;
    switch (ch) {
    case 27: /* Esc */
    case 7:  /* Ctrl-G */
        t->focus = &t->layers;
        return 1;
    case '\r':
    case '\n':
    case KEY_ENTER:
        run_line(t);
        return 1;
    case KEY_UP:
        if (c->hist_pos > 0)
            set_line(t, c->history[--c->hist_pos]);
        return 1;
    case KEY_DOWN:
        if (c->hist_pos < c->nhistory - 1)
            set_line(t, c->history[++c->hist_pos]);
        else {
            c->hist_pos = c->nhistory;
            set_line(t, "");
        }
        return 1;
    case '\t':
        complete(t);
        return 1;
    case KEY_PPAGE:
        tui_log_scroll(&t->output, +1);
        return 1;
    case KEY_NPAGE:
        tui_log_scroll(&t->output, -1);
        return 1;
    case KEY_F(10):
        t->quit = 1;
        return 1;
    default:
        if (ch >= 32 && ch < 256 && ch != 127) {
            /* Bytes of a UTF-8 character arrive one by one; keep them as typed. */
            char s[2] = {(char)ch, '\0'};
            insert_text(t, s);
        }
        return 1;
    }
}

static void free_state(tui_panel *p)
{
    cmdline_state *c = p->state;
    for (int i = 0; c && i < c->nhistory; i++)
        free(c->history[i]);
    free(c);
    p->state = NULL;
}

void tui_panel_cmdline_init(tui_panel *p)
{
    p->title = "command";
    p->visible = 1;
    p->draw = draw;
    p->key = key;
    p->free_state = free_state;
    p->state = calloc(1, sizeof(cmdline_state));
}
