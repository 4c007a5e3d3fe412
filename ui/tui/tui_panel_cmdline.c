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

void tui_cmdline_start(tui *t, const char *prefill)
{
    snprintf(t->line, sizeof t->line, "%s", prefill);
    t->len = t->cursor = (int)strlen(t->line);
    t->hist_pos = t->nhistory;
    t->focus = &t->cmdline;
}

static void draw(tui *t, tui_panel *p)
{
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
    int avail = r->w - 2, start = t->cursor > avail - 1 ? t->cursor - (avail - 1) : 0;
    attron(A_BOLD);
    mvaddstr(r->y, r->x, PROMPT);
    attroff(A_BOLD);
    tui_text(t, r->y, r->x + 1, avail, t->line + start);
    move(r->y, r->x + 1 + (t->cursor - start));
}

static void set_line(tui *t, const char *s)
{
    snprintf(t->line, sizeof t->line, "%s", s);
    t->len = t->cursor = (int)strlen(t->line);
}

static void insert_text(tui *t, const char *s)
{
    int n = (int)strlen(s);
    if (t->len + n >= TUI_LINE_MAX)
        return;
    memmove(t->line + t->cursor + n, t->line + t->cursor, (size_t)(t->len - t->cursor + 1));
    memcpy(t->line + t->cursor, s, (size_t)n);
    t->len += n;
    t->cursor += n;
}

/* Tab: the REPL's completion (command names, then what the command table
 * says each command's arguments are), applied to the word before the cursor. */
static void complete(tui *t)
{
    int start = t->cursor;
    while (start > 0 && t->line[start - 1] != ' ' && t->line[start - 1] != ';')
        start--;
    char prefix[TUI_LINE_MAX], upto[TUI_LINE_MAX];
    snprintf(prefix, sizeof prefix, "%.*s", t->cursor - start, t->line + start);
    snprintf(upto, sizeof upto, "%.*s", t->cursor, t->line);
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
    const char *p = t->line;
    while (*p == ' ')
        p++;
    t->focus = &t->layers;
    if (!*p)
        return;
    if (t->nhistory == 0 || strcmp(t->history[t->nhistory - 1], t->line)) {
        if (t->nhistory == TUI_HISTORY_MAX) {
            free(t->history[0]);
            memmove(t->history, t->history + 1, (TUI_HISTORY_MAX - 1) * sizeof *t->history);
            t->nhistory--;
        }
        char *copy = strdup(t->line);
        if (copy)
            t->history[t->nhistory++] = copy;
    }
    char line[TUI_LINE_MAX];
    snprintf(line, sizeof line, "%s", p);
    t->len = t->cursor = 0;
    t->line[0] = '\0';
    tui_exec(t, line, TUI_ECHO);
}

/* One switch over the line editor's keys (about 90 lines), kept whole so the
 * key map reads in one place. */
static int key(tui *t, tui_panel *p, int ch)
{
    (void)p;
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
    case KEY_BACKSPACE:
    case 127:
    case 8:
        if (t->cursor > 0) {
            memmove(t->line + t->cursor - 1, t->line + t->cursor, (size_t)(t->len - t->cursor + 1));
            t->cursor--;
            t->len--;
        } else if (t->len == 0) {
            t->focus = &t->layers; /* backspace on an empty line leaves, like vim */
        }
        return 1;
    case KEY_DC:
    case 4: /* Ctrl-D */
        if (t->cursor < t->len) {
            memmove(t->line + t->cursor, t->line + t->cursor + 1, (size_t)(t->len - t->cursor));
            t->len--;
        }
        return 1;
    case KEY_LEFT:
    case 2:
        if (t->cursor > 0)
            t->cursor--;
        return 1;
    case KEY_RIGHT:
    case 6:
        if (t->cursor < t->len)
            t->cursor++;
        return 1;
    case KEY_HOME:
    case 1:
        t->cursor = 0;
        return 1;
    case KEY_END:
    case 5:
        t->cursor = t->len;
        return 1;
    case 21: /* Ctrl-U */
        memmove(t->line, t->line + t->cursor, (size_t)(t->len - t->cursor + 1));
        t->len -= t->cursor;
        t->cursor = 0;
        return 1;
    case KEY_UP:
        if (t->hist_pos > 0)
            set_line(t, t->history[--t->hist_pos]);
        return 1;
    case KEY_DOWN:
        if (t->hist_pos < t->nhistory - 1)
            set_line(t, t->history[++t->hist_pos]);
        else {
            t->hist_pos = t->nhistory;
            set_line(t, "");
        }
        return 1;
    case '\t':
        complete(t);
        return 1;
    case KEY_PPAGE:
        t->out_scroll += t->output.r.h - 2;
        return 1;
    case KEY_NPAGE:
        t->out_scroll = t->out_scroll > t->output.r.h - 2 ? t->out_scroll - (t->output.r.h - 2) : 0;
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

void tui_panel_cmdline_init(tui_panel *p)
{
    p->title = "command";
    p->visible = 1;
    p->draw = draw;
    p->key = key;
}
