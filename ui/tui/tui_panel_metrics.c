/* Metrics: log10 QSUR and QSUR^(1/d) of X and W, fake-quant MSE and SQNR,
 * and the layer output error, each before the transform stack (base=1), now
 * (base=0) and the change. The "now" column uses exactly the formats of the
 * batch `qsur` and `error` commands, so a number seen here can be checked
 * against `qsur -c '...; qsur; error'` character for character. */
#include <curses.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tui_panel.h"

/* The panel's data: the current layer's metrics before the stack and now,
 * or why there are none. */
typedef struct {
    int have;
    layer_metrics base, cur;
    char msg[QSUR_ERROR_MAX];
} metrics_view;

static void free_view(tui_panel *p)
{
    free(p->state);
    p->state = NULL;
}

static void update(tui *t, tui_panel *p)
{
    metrics_view *v = p->state;
    session *s = t->s;
    v->have = 0;
    v->msg[0] = '\0';
    if (s->current < 0 || s->current >= s->nlayers) {
        snprintf(v->msg, sizeof v->msg, "no layer selected: pick one in the layer list (Up/Down, Enter)");
        return;
    }
    layer_state *l = &s->layers[s->current];
    qsur_error err;
    int rc = layer_metrics_compute(s, l, 1, &v->base, &err);
    if (rc == QSUR_OK)
        rc = layer_metrics_compute(s, l, 0, &v->cur, &err);
    v->have = rc == QSUR_OK;
    if (rc)
        snprintf(v->msg, sizeof v->msg, "%s", err.msg);
}

typedef struct {
    const char *label;
    double before, now;
    const char *fmt, *dfmt;
    int higher_is_better;
} metric_row;

static void draw_row(tui *t, int y, int x, int w, const metric_row *m)
{
    char b[32], n[32], d[32];
    snprintf(b, sizeof b, m->fmt, m->before);
    snprintf(n, sizeof n, m->fmt, m->now);
    double delta = m->now - m->before;
    if (isfinite(delta))
        snprintf(d, sizeof d, m->dfmt, delta);
    else
        snprintf(d, sizeof d, "%s", isnan(delta) ? "" : "-");
    tui_textf(t, y, x, w, "%-12s %12s %12s", m->label, b, n);
    int attr = A_NORMAL;
    /* Printed at its precision, a change that rounds to zero is no change. */
    char zero[32];
    snprintf(zero, sizeof zero, m->dfmt, 0.0);
    int same = !isfinite(delta) || delta == 0 || !strcmp(d + 1, zero + 1);
    if (!same) {
        int good = (delta > 0) == m->higher_is_better;
        attr = good ? tui_attr(t, TUI_PAIR_GOOD, A_BOLD) : tui_attr(t, TUI_PAIR_BAD, A_UNDERLINE);
    }
    attron(attr);
    tui_textf(t, y, x + 39, w - 39, " %12s", same ? "0" : d);
    attroff(attr);
}

static void draw(tui *t, tui_panel *p)
{
    tui_rect *r = &p->r;
    int inner = r->w - 2;
    int headed = r->h >= 12; /* else the column headings go into the border title */
    tui_box(t, r, headed ? "QSUR and quantization error" : "metric  before stack / now / change", 0);
    int y = r->y + 1, x = r->x + 1;
    const metrics_view *v = p->state;
    if (!v->have) {
        tui_text(t, y, x, inner, v->msg);
        return;
    }
    if (headed) {
        attron(A_BOLD);
        tui_textf(t, y++, x, inner, "%-12s %12s %12s %13s", "", "before stack", "now", "change");
        attroff(A_BOLD);
    }
    const layer_metrics *b = &v->base, *c = &v->cur;
    metric_row rows[9];
    int n = 0;
    if (c->has_x) {
        rows[n++] = (metric_row){"X log10 QSUR", b->qx.log10_qsur, c->qx.log10_qsur, "%.4f", "%+.4f", 1};
        rows[n++] = (metric_row){"X QSUR^(1/d)", b->qx.per_dim, c->qx.per_dim, "%.6f", "%+.6f", 1};
    }
    if (c->has_w) {
        rows[n++] = (metric_row){"W log10 QSUR", b->qw.log10_qsur, c->qw.log10_qsur, "%.4f", "%+.4f", 1};
        rows[n++] = (metric_row){"W QSUR^(1/d)", b->qw.per_dim, c->qw.per_dim, "%.6f", "%+.6f", 1};
    }
    if (c->has_x) {
        rows[n++] = (metric_row){"X MSE", b->ex.mse, c->ex.mse, "%.6g", "%+.3g", 0};
        rows[n++] = (metric_row){"X SQNR (dB)", b->ex.sqnr_db, c->ex.sqnr_db, "%.3f", "%+.3f", 1};
    }
    if (c->has_w) {
        rows[n++] = (metric_row){"W MSE", b->ew.mse, c->ew.mse, "%.6g", "%+.3g", 0};
        rows[n++] = (metric_row){"W SQNR (dB)", b->ew.sqnr_db, c->ew.sqnr_db, "%.3f", "%+.3f", 1};
    }
    if (c->has_x && c->has_w)
        rows[n++] = (metric_row){"output error", b->out_err, c->out_err, "%.6g", "%+.3g", 0};
    for (int i = 0; i < n && y < r->y + r->h - 1; i++)
        draw_row(t, y++, x, inner, &rows[i]);
    if (y < r->y + r->h - 1 && ((c->has_x && c->qx.singular) || (c->has_w && c->qw.singular)))
        tui_textf(t, y, x, inner, "QSUR = 0: %s", c->has_x && c->qx.singular ? c->qx.reason : c->qw.reason);
}

void tui_panel_metrics_init(tui_panel *p)
{
    p->title = "metrics";
    p->visible = 1;
    p->draw = draw;
    p->key = NULL;
    p->update = update;
    p->free_state = free_view;
    p->state = calloc(1, sizeof(metrics_view));
}
