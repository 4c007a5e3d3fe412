/* Teaching view (`t`): the 2-D picture of QSUR from the `demo` command — a
 * Gaussian's confidence ellipse inside the quantization square — made
 * interactive. Left/Right rotate by 5 degrees, Up/Down by 15, `[`/`]` shrink
 * or stretch the x (outlier) axis, `0` resets. Each key runs the matching
 * `demo rotate|scale|reset` command (logged, replayable); the picture and the
 * closed-form QSUR come from ui/session/demo.c, the same code the REPL uses. */
#include <curses.h>
#include <math.h>
#include "demo.h"
#include "tui_panel.h"

static void draw(tui *t, tui_panel *p)
{
    tui_rect *r = &p->r;
    tui_box(t, r, "teaching view: QSUR in 2-D  (arrows rotate, [ ] scale x, 0 reset, t leave)", 0);
    session *s = t->s;
    int y = r->y + 1, x = r->x + 1, h = r->h - 2, w = r->w - 2;
    if (!s->demo.active) {
        tui_text(t, y, x, w, "press t again to start the demo");
        return;
    }
    demo_qsur q;
    if (demo_qsur_2d(s->demo.cov, s->demo.mean, s->set.qsur_alpha, s->set.qsur_asym, &q) != 0) {
        tui_text(t, y, x, w, "the covariance is not positive definite: press 0 to reset");
        return;
    }
    /* The picture is 2k+1 rows by 4k+1 columns (cells are ~2x taller than wide). */
    int pic_w = w - 34;
    if (pic_w > 4 * ((h - 1) / 2) + 1)
        pic_w = 4 * ((h - 1) / 2) + 1;
    plot_style st = {.width = pic_w, .height = h, .utf8 = t->utf8, .color = 0};
    plot_lines pl = {0};
    demo_draw(&pl, &st, &s->demo, s->set.qsur_alpha, s->set.qsur_asym);
    int used = 0;
    for (int i = 0; i < pl.count && i < h; i++) {
        tui_text(t, y + i, x, w, pl.lines[i]);
        int dw = tui_display_width(pl.lines[i]);
        used = dw > used ? dw : used;
    }
    plot_lines_free(&pl);
    int tx = x + used + 3, tw = w - used - 3;
    const double best = M_PI / 4;
    tui_textf(t, y + 0, tx, tw, "ellipse %.0f%% of points (alpha)", 100 * s->set.qsur_alpha);
    tui_textf(t, y + 2, tx, tw, "major axis  %7.1f deg", q.angle);
    tui_textf(t, y + 3, tx, tw, "var x, y    %7.3g %7.3g", s->demo.cov[0][0], s->demo.cov[1][1]);
    tui_textf(t, y + 4, tx, tw, "det S       %7.4g", q.det);
    tui_textf(t, y + 5, tx, tw, "area        %7.4g", q.area);
    tui_textf(t, y + 6, tx, tw, "square side %7.4g", q.side);
    attron(A_BOLD);
    tui_textf(t, y + 8, tx, tw, "QSUR        %.4f", q.qsur);
    attroff(A_BOLD);
    tui_textf(t, y + 9, tx, tw, "best pi/4 = %.4f (%.0f%%)", best, 100 * q.qsur / best);
    tui_text(t, y + 11, tx, tw, "Best rotation alone: equal spreads");
    tui_text(t, y + 12, tx, tw, "(major axis at +-45 deg). Best of all:");
    tui_text(t, y + 13, tx, tw, "align (0 deg), then [ ] to a circle.");
}

static int key(tui *t, tui_panel *p, int ch)
{
    (void)p;
    session *s = t->s;
    if (ch == 0) { /* entering the view */
        if (!s->demo.active)
            tui_exec(t, "demo", TUI_QUIET);
        return 1;
    }
    switch (ch) {
    case KEY_LEFT:
        tui_exec(t, "demo rotate 5", TUI_QUIET);
        return 1;
    case KEY_RIGHT:
        tui_exec(t, "demo rotate -5", TUI_QUIET);
        return 1;
    case KEY_UP:
        tui_exec(t, "demo rotate 15", TUI_QUIET);
        return 1;
    case KEY_DOWN:
        tui_exec(t, "demo rotate -15", TUI_QUIET);
        return 1;
    case '[':
        tui_exec(t, "demo scale 0.8 1", TUI_QUIET);
        return 1;
    case ']':
        tui_exec(t, "demo scale 1.25 1", TUI_QUIET);
        return 1;
    case '0':
        tui_exec(t, "demo reset", TUI_QUIET);
        return 1;
    default:
        return 0;
    }
}

void tui_panel_demo_init(tui_panel *p)
{
    p->title = "demo";
    p->visible = 0;
    p->draw = draw;
    p->key = key;
}
