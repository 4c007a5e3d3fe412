/* Internals of the TUI shared by ui/tui/tui.c and the panels (ui/tui/tui_panel_*.c).
 *
 * A panel is one struct with its own draw and key functions (htop/tig style)
 * and its own data behind `state`: the layer list, distribution, metrics,
 * stack and command line read theirs from the session and the engine in
 * `update` (after every command; tui_refresh runs them all) and only paint
 * in `draw`. The output log owns the lines commands printed; tui_exec and
 * generate's stream write into it only through tui_log_append/_stream.
 * tui.c lays the panels out and routes keys (one binding table).
 * Panels change state ONLY by running command lines through tui_exec(), so
 * everything is logged. */
#ifndef QSUR_UI_TUI_PANEL_H
#define QSUR_UI_TUI_PANEL_H

#include <signal.h>
#include <stdint.h>
#include "layer_state.h"
#include "qsur/stats.h"
#include "session.h"

#define TUI_MIN_COLS 80
#define TUI_MIN_ROWS 24
#define TUI_TOO_SMALL "terminal too small (need 80x24)"

typedef struct {
    int y, x, h, w;
} tui_rect;

struct tui;

/* A panel that owns its data (htop's Meter: update separate from draw) keeps
 * it behind state: update reads it from the session and the engine APIs
 * after every command (never from text a command printed), draw only
 * paints it, free_state releases it. */
typedef struct tui_panel {
    const char *title;
    tui_rect r;        /* outer rectangle including the border */
    int visible;
    void (*draw)(struct tui *t, struct tui_panel *p);
    int (*key)(struct tui *t, struct tui_panel *p, int ch); /* 1 = consumed */
    void (*update)(struct tui *t, struct tui_panel *p);     /* NULL: reads tui's shared data */
    void (*free_state)(struct tui_panel *p);
    void *state;
} tui_panel;

/* Distribution panel views, cycled by `d`. */
typedef enum { DIST_BARS, DIST_HIST_CHANNEL, DIST_HIST_ALL, DIST_HEATMAP, DIST_NVIEWS } dist_view;

/* One entry of the layer list: a weight with its paired activation, or one alone. */
typedef struct {
    char w[QSUR_NAME_MAX], x[QSUR_NAME_MAX];
    char shape[48];
    int matrix;        /* 2-D: can be selected with `use` */
} tui_layer_item;

#define TUI_HISTORY_MAX 200
#define TUI_LINE_MAX 512

typedef struct tui {
    session *s;
    int rows, cols;
    int utf8, color;
    int quit;
    int too_small;
    int show_help;
    int demo_mode;     /* teaching view replaces the distribution panel */
    /* QSUR_TUI_FRAMES set: "frame N" in the bottom-right corner, the last cell
     * curses sends, so a test that sees frame N knows the whole of frame N
     * reached the terminal (not just its top rows) */
    int show_frames;
    unsigned long frames;

    tui_panel layers, dist, metrics, stack, output, cmdline, demo;
    tui_panel *focus;  /* &layers, &dist, or &cmdline */

    /* SmoothQuant alpha for `s`; the stack depth right after our last smooth step */
    double smooth_alpha;
    int smooth_depth;

    /* status line and progress */
    char status[256];
    double last_poll;
    volatile sig_atomic_t interrupt;
    int pending[64];   /* keys typed during work, handled after it (in order) */
    int npending;
    qsur_progress saved_progress;
} tui;

/* ---- tui.c ---- */
/* Runs a command line (';' separates commands) through command_execute with
 * s->out captured into the output log. Flags: TUI_ECHO shows "> line" first;
 * TUI_QUIET echoes the line but keeps its output only when it fails (the
 * demo's picture is drawn by its panel, not repeated in the log). Refreshes
 * the data afterwards. Returns QSUR_OK or the first failing command's code. */
enum { TUI_ECHO = 1, TUI_QUIET = 2 };
int tui_exec(tui *t, const char *line, int flags);
int tui_exec_fmt(tui *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends text (may hold several lines) to the output log. */
void tui_output(tui *t, const char *text);
void tui_status(tui *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- tui_draw.c: drawing primitives (UTF-8 or ASCII) ---- */
enum { TUI_PAIR_TITLE = 1, TUI_PAIR_OUTLIER, TUI_PAIR_GOOD, TUI_PAIR_BAD, TUI_PAIR_FOCUS, TUI_PAIR_BAR };
void tui_box(tui *t, const tui_rect *r, const char *title, int focused);
/* Text at (y, x) clipped to w display columns (UTF-8 aware). */
void tui_text(tui *t, int y, int x, int w, const char *s);
void tui_textf(tui *t, int y, int x, int w, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* A vertical bar cell: eighths 0..8 of a cell filled (ASCII: '#' when >= 4). */
void tui_vbar_cell(tui *t, int y, int x, int eighths);
/* A shade for intensity v in [0,1] (UTF-8 " ░▒▓█", ASCII " .:-=+*#%@"). */
void tui_shade(tui *t, int y, int x, double v);
/* Display columns of a UTF-8 string. */
int tui_display_width(const char *s);
/* Attribute for a colour pair when colour is on, else the given fallback attribute. */
int tui_attr(tui *t, int pair, int fallback);

/* ---- panels ---- */
void tui_panel_layers_init(tui_panel *p);
void tui_panel_dist_init(tui_panel *p);
/* tui_panel_dist.c: the matrix it shows (X or W of the current layer; NULL
 * when none), and what the global keys change in it (`d` view, `w` side, a
 * new layer's channel). */
const float *tui_dist_matrix(tui *t, int64_t *rows, int64_t *cols, const char **name);
void tui_dist_next_view(tui *t);
void tui_dist_toggle_side(tui *t);
void tui_dist_forget_channel(tui *t);
void tui_panel_metrics_init(tui_panel *p);
void tui_panel_stack_init(tui_panel *p);
void tui_panel_output_init(tui_panel *p);
/* tui_panel_output.c: the output log's only writers. append adds text (may
 * hold several lines); stream continues the last line (NULL starts a new
 * one); both scroll back to the bottom. scroll moves by pages (+1 up, -1 down). */
void tui_log_append(tui_panel *output, const char *text);
void tui_log_stream(tui_panel *output, const char *text);
void tui_log_scroll(tui_panel *output, int pages);
void tui_panel_cmdline_init(tui_panel *p);
void tui_panel_demo_init(tui_panel *p);
/* tui_panel_ostquant.c: the live view of a running `ostquant model` (loss,
 * loss curve, QSUR of every transformed layer), drawn by the progress
 * callback over the metrics and distribution area. */
struct qsur_ostquant;
void tui_ostquant_live_draw(tui *t, const struct qsur_ostquant *o);
/* Focuses the command line with text already typed (e.g. "save "). */
void tui_cmdline_start(tui *t, const char *prefill);

#endif
