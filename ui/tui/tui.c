/* The TUI main loop: screen setup and restore, layout (re-done on every draw,
 * so SIGWINCH/KEY_RESIZE needs no special path), key routing, running command
 * lines with their output captured, the data the panels show, and the
 * progress bar for long work. */
#include <curses.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "command.h"
#include "layer_state.h"
#include "run_line.h"
#include "tui.h"
#include "tui_panel.h"

/* ------------------------------------------------------------------ output */

void tui_output(tui *t, const char *text) { tui_log_append(&t->output, text); }

/* s->stream while the TUI runs: appends text to the output panel as it
 * comes (`generate` streams tokens); NULL starts a new line. */
static void tui_stream(struct session *s, const char *text)
{
    if (!tui_active(s))
        return;
    tui *t = s->progress.ctx;
    tui_log_stream(&t->output, text);
    if (text && t->output.visible && t->output.draw) {
        t->output.draw(t, &t->output);
        refresh();
    }
}

void tui_status(tui *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->status, sizeof t->status, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- progress */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Draws the bar in the status line and polls the keyboard without blocking:
 * Esc or Ctrl-C (a key in raw mode, not a signal) asks the engine to stop. */
static int tui_progress_cb(void *ctx, double done, const char *what, double value)
{
    tui *t = ctx;
    double now = now_seconds();
    if (now - t->last_poll >= 0.05 || done >= 1.0) {
        t->last_poll = now;
        int y = t->rows - 2, width = t->cols - 46;
        if (width > 40)
            width = 40;
        if (width < 10)
            width = 10;
        int fill = (int)(done * width + 0.5);
        fill = fill < 0 ? 0 : fill > width ? width : fill;
        if (t->s->training) /* `ostquant model`: loss and QSUR of every layer, live */
            tui_ostquant_live_draw(t, t->s->training);
        move(y, 0);
        clrtoeol();
        attron(A_BOLD);
        mvaddch(y, 0, '[');
        for (int i = 0; i < width; i++)
            addch(i < fill ? '#' : '.');
        addch(']');
        attroff(A_BOLD);
        if (isnan(value))
            tui_textf(t, y, width + 3, t->cols - width - 3, "%5.1f%% %-20.20s  Esc: stop", 100.0 * done,
                      what ? what : "");
        else
            tui_textf(t, y, width + 3, t->cols - width - 3, "%5.1f%% %-16.16s %.6g  Esc: stop",
                      100.0 * done, what ? what : "", value);
        refresh();
        nodelay(stdscr, TRUE);
        for (int ch; (ch = getch()) != ERR;) {
            if (ch == 27 || ch == 3) {
                /* through the session's flag when there is one, so a command
                 * that honours the stop and carries on (`ostquant model` fuses
                 * and captures the best transforms) can clear it */
                if (t->s->interrupted)
                    *t->s->interrupted = 1;
                else
                    t->interrupt = 1;
            }
            else if (t->npending < (int)(sizeof t->pending / sizeof t->pending[0]))
                t->pending[t->npending++] = ch; /* typed ahead: not lost */
        }
        nodelay(stdscr, FALSE);
    }
    return t->interrupt || (t->s->interrupted && *t->s->interrupted);
}

int tui_active(const struct session *s)
{
    return s->progress.fn == tui_progress_cb;
}

/* ------------------------------------------------------------------- data */

/* Every panel that owns its data reads it again (update), after every
 * command and selection change; draw_all then only paints. */
static void tui_refresh(tui *t)
{
    tui_panel *panels[] = {&t->layers, &t->dist, &t->metrics, &t->stack, &t->output, &t->cmdline, &t->demo};
    for (size_t i = 0; i < sizeof panels / sizeof panels[0]; i++)
        if (panels[i]->update)
            panels[i]->update(t, panels[i]);
}

/* --------------------------------------------------------------- commands */

int tui_exec(tui *t, const char *line, int flags)
{
    session *s = t->s;
    if (flags & (TUI_ECHO | TUI_QUIET)) {
        char *e = NULL;
        if (asprintf(&e, "> %s", line) >= 0)
            tui_output(t, e);
        free(e);
    }
    tui_status(t, "running: %s", line);
    move(t->rows - 2, 0);
    clrtoeol();
    tui_text(t, t->rows - 2, 0, t->cols, t->status);
    refresh();

    t->interrupt = 0;
    char *buf = NULL;
    int rc = session_run_line(s, line, RUN_CAPTURE, &buf);
    if (buf && (!(flags & TUI_QUIET) || rc != QSUR_OK))
        tui_output(t, buf);
    free(buf);
    if (s->quit) {
        /* `quit` typed in the TUI leaves the TUI, not the program around it. */
        s->quit = 0;
        t->quit = 1;
    }
    if (rc == QSUR_ERR_INTERRUPTED)
        tui_status(t, "interrupted: %s (the session is unchanged)", line);
    else if (rc != QSUR_OK)
        tui_status(t, "failed: %s (see the output)", line);
    else
        tui_status(t, "ok: %s", line);
    tui_refresh(t);
    return rc;
}

int tui_exec_fmt(tui *t, const char *fmt, ...)
{
    char line[TUI_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    return tui_exec(t, line, TUI_ECHO);
}

/* ------------------------------------------------------------------ layout */

static void layout(tui *t)
{
    getmaxyx(stdscr, t->rows, t->cols);
    t->too_small = t->rows < TUI_MIN_ROWS || t->cols < TUI_MIN_COLS;
    if (t->too_small)
        return;
    int rows = t->rows, cols = t->cols;
    int out_h = rows >= 40 ? 9 : rows >= 30 ? 6 : 3;
    t->cmdline.r = (tui_rect){rows - 3, 0, 1, cols};
    t->output.r = (tui_rect){rows - 3 - out_h, 0, out_h, cols};
    int top = 1, main_h = rows - 3 - out_h - top;
    int lw = cols / 4;
    lw = lw < 26 ? 26 : lw > 40 ? 40 : lw;
    int stack_h = main_h / 3 < 5 ? 5 : main_h / 3;
    t->layers.r = (tui_rect){top, 0, main_h - stack_h, lw};
    t->stack.r = (tui_rect){top + main_h - stack_h, 0, stack_h, lw};
    int metrics_h = main_h >= 24 ? 12 : 11; /* 11: column headings go into the border */
    t->metrics.r = (tui_rect){top, lw, metrics_h, cols - lw};
    t->dist.r = (tui_rect){top + metrics_h, lw, main_h - metrics_h, cols - lw};
    /* The teaching view takes the metrics and distribution area. */
    t->demo.r = (tui_rect){top, lw, main_h, cols - lw};
    t->metrics.visible = !t->demo_mode;
    t->dist.visible = !t->demo_mode;
    t->demo.visible = t->demo_mode;
}

static void draw_title(tui *t)
{
    session *s = t->s;
    attron(A_REVERSE);
    move(0, 0);
    for (int i = 0; i < t->cols; i++)
        addch(' ');
    char wq[96], aq[96];
    qsur_quant_describe(&s->wq, wq, sizeof wq);
    qsur_quant_describe(&s->aq, aq, sizeof aq);
    const layer_state *l = s->current >= 0 && s->current < s->nlayers ? &s->layers[s->current] : NULL;
    char name[2 * QSUR_NAME_MAX + 8] = "(none)";
    if (l && l->w_name[0] && l->x_name[0])
        snprintf(name, sizeof name, "%s+%s", l->w_name, l->x_name);
    else if (l)
        snprintf(name, sizeof name, "%s", l->name);
    attron(A_BOLD);
    tui_text(t, 0, 1, 5, "qsur");
    attroff(A_BOLD);
    tui_textf(t, 0, 7, t->cols - 8, "layer %s  stack %d  W: %s  X: %s", name, l ? layer_stack_depth(l) : 0,
              wq, aq);
    attroff(A_REVERSE);
}

/* draw_fkeys and draw_help: from the key table, below global_key. */
static void draw_fkeys(tui *t);
static void draw_help(tui *t);

/* The redraw counter of tests (see tui.show_frames): drawn after everything
 * else of the frame, in the last cells of the last row, which curses sends
 * last (it updates the screen top to bottom). */
static void draw_frame_count(tui *t)
{
    t->frames++;
    if (!t->show_frames || t->cols < 16)
        return;
    char c[32];
    int n = snprintf(c, sizeof c, " frame %lu", t->frames);
    mvaddnstr(t->rows - 1, t->cols - n - 1, c, n);
}

static void draw_all(tui *t)
{
    layout(t);
    erase();
    if (t->too_small) {
        curs_set(0);
        int len = (int)strlen(TUI_TOO_SMALL);
        int x = (t->cols - len) / 2, y = t->rows / 2;
        mvaddnstr(y < 0 ? 0 : y, x < 0 ? 0 : x, TUI_TOO_SMALL, t->cols > 0 ? t->cols : len);
        draw_frame_count(t);
        refresh();
        return;
    }
    draw_title(t);
    tui_panel *panels[] = {&t->layers, &t->stack, &t->metrics, &t->dist, &t->demo, &t->output};
    for (size_t i = 0; i < sizeof panels / sizeof panels[0]; i++)
        if (panels[i]->visible)
            panels[i]->draw(t, panels[i]);
    move(t->rows - 2, 0);
    clrtoeol();
    tui_text(t, t->rows - 2, 0, t->cols, t->status);
    draw_fkeys(t);
    if (t->show_help)
        draw_help(t);
    draw_frame_count(t);
    /* The command line last, so the cursor ends up in it when focused. */
    t->cmdline.draw(t, &t->cmdline);
    curs_set(t->focus == &t->cmdline ? 1 : 0);
    refresh();
}

/* -------------------------------------------------------------------- keys */

static layer_state *current_layer(tui *t)
{
    session *s = t->s;
    return s->current >= 0 && s->current < s->nlayers ? &s->layers[s->current] : NULL;
}

static void change_bits(tui *t, int delta)
{
    int wb = t->s->wq.bits, ab = t->s->aq.bits;
    /* 16 = not quantized: one step below it is 8 bits, one above 8 is 16. */
    if (delta < 0) {
        wb = wb >= 16 ? 8 : wb > 2 ? wb - 1 : 2;
        ab = ab >= 16 ? 8 : ab > 2 ? ab - 1 : 2;
    } else {
        wb = wb >= 8 ? 16 : wb + 1;
        ab = ab >= 8 ? 16 : ab + 1;
    }
    tui_exec_fmt(t, "quant w%da%d", wb, ab);
}

static void cycle_granularity(tui *t)
{
    int64_t d = 0, rows;
    if (!tui_dist_matrix(t, &rows, &d, NULL))
        d = 0;
    int g = 0;
    for (int c = 128; c >= 8 && !g; c /= 2)
        if (d > c && d % c == 0)
            g = c;
    switch (t->s->wq.gran) {
    case QSUR_GRAN_TENSOR:
        tui_exec(t, "quant w:row a:token", TUI_ECHO);
        break;
    case QSUR_GRAN_ROW:
        /* groups when a size divides the channels, else straight back to tensor */
        if (g)
            tui_exec_fmt(t, "quant w:g%d a:g%d", g, g);
        else
            tui_exec(t, "quant w:tensor a:tensor", TUI_ECHO);
        break;
    default:
        tui_exec(t, "quant w:tensor a:tensor", TUI_ECHO);
        break;
    }
}

static void cycle_clipping(tui *t)
{
    const qsur_quant_spec *q = &t->s->wq;
    if (q->clip_search)
        tui_exec(t, "quant w:clip=1 a:clip=1", TUI_ECHO);
    else if (q->clip < 1.0)
        tui_exec(t, "quant w:clip=search a:clip=search", TUI_ECHO);
    else
        tui_exec(t, "quant w:clip=0.9 a:clip=0.9", TUI_ECHO);
}

static void smooth(tui *t)
{
    layer_state *l;
    if (tui_exec_fmt(t, "scale smooth %.2f", t->smooth_alpha) == QSUR_OK && (l = current_layer(t)))
        t->smooth_depth = layer_stack_depth(l);
}

static void smooth_alpha(tui *t, double delta)
{
    double a = t->smooth_alpha + delta;
    a = a < 0.05 ? 0.05 : a > 0.95 ? 0.95 : a;
    t->smooth_alpha = round(a * 100.0) / 100.0;
    layer_state *l = current_layer(t);
    /* Only redo the smooth step when it is still the top of the stack. */
    if (l && t->smooth_depth > 0 && layer_stack_depth(l) == t->smooth_depth) {
        if (tui_exec(t, "undo", TUI_ECHO) == QSUR_OK)
            smooth(t);
    } else {
        tui_status(t, "SmoothQuant alpha %.2f: press s to apply", t->smooth_alpha);
    }
}

/* ---- the key table: global keys, the help screen and the function-key bar --- */

static void key_quit(tui *t) { t->quit = 1; }
static void key_help(tui *t) { t->show_help = 1; }
static void key_cmdline(tui *t) { tui_cmdline_start(t, ""); }
static void key_save(tui *t) { tui_cmdline_start(t, "save "); }
static void key_focus(tui *t) { t->focus = t->focus == &t->layers ? &t->dist : &t->layers; }
static void key_hadamard(tui *t) { tui_exec(t, "rotate hadamard", TUI_ECHO); }
static void key_random(tui *t) { tui_exec(t, "rotate random", TUI_ECHO); }
static void key_pca(tui *t) { tui_exec(t, "rotate pca", TUI_ECHO); }
static void key_smooth(tui *t) { smooth(t); }
static void key_alpha_up(tui *t) { smooth_alpha(t, 0.05); }
static void key_alpha_down(tui *t) { smooth_alpha(t, -0.05); }
static void key_undo(tui *t) { tui_exec(t, "undo", TUI_ECHO); }
static void key_redo(tui *t) { tui_exec(t, "redo", TUI_ECHO); }
static void key_bits_down(tui *t) { change_bits(t, -1); }
static void key_bits_up(tui *t) { change_bits(t, +1); }
static void key_view(tui *t) { tui_dist_next_view(t); }
static void key_redraw(tui *t)
{
    (void)t;
    clearok(stdscr, TRUE);
}

static void key_side(tui *t) { tui_dist_toggle_side(t); }

static void key_demo(tui *t)
{
    t->demo_mode = !t->demo_mode;
    if (t->demo_mode && t->demo.key)
        t->demo.key(t, &t->demo, 0); /* lets the demo start its model */
}

static void key_page_up(tui *t) { tui_log_scroll(&t->output, +1); }

static void key_page_down(tui *t) { tui_log_scroll(&t->output, -1); }

/* One binding: a key and an alternative (a function key), how the help shows
 * them, the function-key bar's label, the help text and the action. Rows
 * without an action document keys a panel handles itself. */
typedef struct {
    int key, alt;
    const char *shown, *fkey_label, *help;
    void (*action)(tui *t);
} tui_binding;

static const tui_binding bindings[] = {
    {'?', KEY_F(1), "? F1", "Help", "this help", key_help},
    {':', KEY_F(2), ": F2", "Cmd", "command line", key_cmdline},
    {'d', KEY_F(3), "d F3", "View", "view: bars/hists/heatmap", key_view},
    {'t', KEY_F(4), "t F4", "Demo", "teaching view", key_demo},
    {'u', KEY_F(5), "u F5", "Undo", "undo", key_undo},
    {'U', KEY_F(6), "U F6", "Redo", "redo", key_redo},
    {'b', KEY_F(7), "b F7", "Bits-", "fewer bits", key_bits_down},
    {'B', KEY_F(8), "B F8", "Bits+", "more bits", key_bits_up},
    {0, KEY_F(9), "F9", "Save", "save FILE", key_save},
    {'q', KEY_F(10), "q F10", "Quit", "leave", key_quit},
    {'h', 0, "h", NULL, "rotate hadamard", key_hadamard},
    {'r', 0, "r", NULL, "rotate random", key_random},
    {'p', 0, "p", NULL, "rotate pca", key_pca},
    {'s', 0, "s", NULL, "scale smooth ALPHA", key_smooth},
    {'+', '=', "+", NULL, "alpha +0.05 and redo", key_alpha_up},
    {'-', 0, "-", NULL, "alpha -0.05 and redo", key_alpha_down},
    {'g', 0, "g", NULL, "cycle granularity", cycle_granularity},
    {'c', 0, "c", NULL, "cycle clipping", cycle_clipping},
    {'w', 0, "w", NULL, "distribution of X or W", key_side},
    {'\t', 0, "Tab", NULL, "focus list/distribution", key_focus},
    {KEY_PPAGE, 0, "PgUp", NULL, "scroll the output up", key_page_up},
    {KEY_NPAGE, 0, "PgDn", NULL, "scroll the output down", key_page_down},
    {12, 0, "Ctrl-L", NULL, "redraw the screen", key_redraw},
    {0, 0, "Up/Dn Enter", NULL, "pick a layer (`use`)", NULL},
    {0, 0, "Left/Right", NULL, "channel (histogram)", NULL},
    {0, 0, "arrows [ ]", NULL, "teaching: rotate, scale", NULL},
    {0, 0, "Esc Ctrl-C", NULL, "stop long work", NULL},
};
#define NBINDINGS ((int)(sizeof bindings / sizeof bindings[0]))

static void global_key(tui *t, int ch)
{
    for (int i = 0; i < NBINDINGS; i++)
        if (bindings[i].action && ch && (ch == bindings[i].key || ch == bindings[i].alt)) {
            bindings[i].action(t);
            return;
        }
}

static void draw_fkeys(tui *t)
{
    int y = t->rows - 1, x = 0;
    move(y, 0);
    clrtoeol();
    for (int f = 1; f <= 10 && x < t->cols; f++) {
        const char *label = "";
        for (int i = 0; i < NBINDINGS; i++)
            if (bindings[i].alt == KEY_F(f) && bindings[i].fkey_label)
                label = bindings[i].fkey_label;
        char num[4];
        snprintf(num, sizeof num, "F%d", f);
        tui_text(t, y, x, t->cols - x, num);
        x += (int)strlen(num);
        int w = t->cols / 10 - (int)strlen(num);
        if (w < 5)
            w = 5;
        attron(tui_attr(t, TUI_PAIR_TITLE, A_REVERSE));
        tui_textf(t, y, x, t->cols - x, "%-*.*s", w, w, label);
        attroff(tui_attr(t, TUI_PAIR_TITLE, A_REVERSE));
        x += w;
    }
}

/* The bindings in two columns (they fit a 24-line terminal that way). */
static void draw_help(tui *t)
{
    int rows = (NBINDINGS + 1) / 2, w = 76, h = rows + 5;
    tui_rect r = {(t->rows - h) / 2, (t->cols - w) / 2, h, w};
    for (int j = 0; j < h; j++) {
        move(r.y + j, r.x);
        for (int i = 0; i < w; i++)
            addch(' ');
    }
    tui_box(t, &r, "help", TUI_ECHO);
    tui_text(t, r.y + 1, r.x + 2, w - 4, "Keys (each runs a command, so `save FILE` replays it):");
    for (int i = 0; i < NBINDINGS; i++)
        tui_textf(t, r.y + 2 + i % rows, r.x + 2 + (i / rows) * 37, 36, "%-11s %s", bindings[i].shown,
                  bindings[i].help);
    tui_text(t, r.y + h - 2, r.x + 2, w - 4, "Any key closes this help.");
}

static void handle_key(tui *t, int ch)
{
    if (ch == KEY_RESIZE)
        return; /* draw_all lays everything out again */
    if (t->show_help) {
        t->show_help = 0;
        return;
    }
    if (t->too_small) {
        if (ch == 'q' || ch == KEY_F(10))
            t->quit = 1;
        return;
    }
    if (t->focus == &t->cmdline) {
        t->cmdline.key(t, &t->cmdline, ch);
        return;
    }
    if (t->demo_mode && t->demo.key(t, &t->demo, ch))
        return;
    if (t->focus->key && t->focus->key(t, t->focus, ch))
        return;
    /* Unfocused panels still take their navigation keys. */
    if (t->focus != &t->layers && t->layers.key(t, &t->layers, ch))
        return;
    if (!t->demo_mode && t->focus != &t->dist && t->dist.key(t, &t->dist, ch))
        return;
    global_key(t, ch);
}

/* ------------------------------------------------------------------- setup */

static void colors_init(tui *t)
{
    t->color = t->s->set.color && !getenv("NO_COLOR") && has_colors();
    if (!t->color)
        return;
    start_color();
    use_default_colors();
    init_pair(TUI_PAIR_TITLE, COLOR_BLACK, COLOR_CYAN);
    init_pair(TUI_PAIR_OUTLIER, COLOR_RED, -1);
    init_pair(TUI_PAIR_GOOD, COLOR_GREEN, -1);
    init_pair(TUI_PAIR_BAD, COLOR_RED, -1);
    init_pair(TUI_PAIR_FOCUS, COLOR_CYAN, -1);
    init_pair(TUI_PAIR_BAR, COLOR_BLUE, -1);
}

static void tui_free(tui *t)
{
    tui_panel *panels[] = {&t->layers, &t->dist, &t->metrics, &t->stack, &t->output, &t->cmdline, &t->demo};
    for (size_t i = 0; i < sizeof panels / sizeof panels[0]; i++)
        if (panels[i]->free_state)
            panels[i]->free_state(panels[i]);
}

/* The terminal set up for the screen and the panels made. */
static void tui_start(tui *t, session *s)
{
    t->s = s;
    t->utf8 = s->set.utf8;
    t->smooth_alpha = 0.5;
    t->show_frames = getenv("QSUR_TUI_FRAMES") != NULL;
    raw(); /* Ctrl-C arrives as a key: it stops long work instead of killing us */
    noecho();
    nonl();
    keypad(stdscr, TRUE);
    set_escdelay(25);
    colors_init(t);
    tui_panel_layers_init(&t->layers);
    tui_panel_dist_init(&t->dist);
    tui_panel_metrics_init(&t->metrics);
    tui_panel_stack_init(&t->stack);
    tui_panel_output_init(&t->output);
    tui_panel_cmdline_init(&t->cmdline);
    tui_panel_demo_init(&t->demo);
    t->focus = &t->layers;
    /* Long engine work draws its bar here and listens for Esc while the TUI runs. */
    t->saved_progress = s->progress;
    s->progress.fn = tui_progress_cb;
    s->progress.ctx = t;
    s->stream = tui_stream;
}

/* Keys until `q`: typed-ahead keys first, a redraw before each wait. */
static void tui_loop(tui *t)
{
    int errs = 0;
    while (!t->quit) {
        int ch;
        if (t->npending > 0) {
            ch = t->pending[0];
            memmove(t->pending, t->pending + 1, (size_t)--t->npending * sizeof *t->pending);
        } else {
            draw_all(t);
            ch = getch();
        }
        if (ch == ERR) {
            /* A blocking getch fails again and again only when the terminal
             * is gone (closed with SIGHUP ignored or intercepted): leave
             * rather than redraw to nowhere at full speed. */
            if (++errs >= 100)
                t->quit = 1;
            continue;
        }
        errs = 0;
        handle_key(t, ch);
    }
}

int tui_run(session *s, qsur_error *err)
{
    if (tui_active(s))
        return qsur_fail(err, QSUR_ERR_ARG, "the TUI is already open");
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO))
        return qsur_fail(err, QSUR_ERR_ARG, "the TUI needs a terminal on standard input and output");
    const char *term = getenv("TERM");
    SCREEN *scr = newterm(NULL, stdout, stdin);
    if (!scr)
        return qsur_fail(err, QSUR_ERR_ARG, "cannot open the terminal '%s' (is TERM right?)",
                         term ? term : "(unset)");
    set_term(scr);
    fflush(stdout);
    tui *t = calloc(1, sizeof *t);
    if (!t) {
        endwin();
        delscreen(scr);
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    }
    tui_start(t, s);
    report_format saved_format = s->set.format;
    s->set.format = FORMAT_HUMAN;
    layout(t);
    tui_refresh(t);
    tui_output(t, "qsur workbench: F1 or ? for keys, : for a command line, q to leave.");
    tui_status(t, "%s", s->current >= 0 ? "ready" : "pick a layer: Up/Down, Enter");
    tui_loop(t);
    s->progress = t->saved_progress;
    s->stream = NULL;
    s->set.format = saved_format;
    erase();
    refresh();
    endwin();
    delscreen(scr);
    tui_free(t);
    free(t);
    return QSUR_OK;
}
