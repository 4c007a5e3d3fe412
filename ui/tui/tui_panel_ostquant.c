/* The live view of `ostquant model|resume` in the TUI: while training runs,
 * the progress callback draws it over the metrics and distribution area (the
 * rectangle of the teaching view): the latest loss, KL-Top and eval
 * perplexity, the loss curve so far, and the latest QSUR of every transformed
 * layer (log10 QSUR and QSUR^(1/d) per layer and site, activations X and
 * stacked weights W; green: higher than at the first measurement, red: lower).
 * The next full redraw after the command restores the panels; `ostquant
 * status` prints the same table afterwards. Nothing here changes state. */
#include <curses.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "ostquant_live.h"
#include "plot.h"
#include "tui_panel.h"

/* "  -59.09 0.1193" (wide) or "  -59.09" (narrow); a singular site reads
 * "sing." (QSUR = 0: fewer rows than dimensions). */
static void cell(tui *t, int y, int x, int w, int wide, double lg, double pd, int singular, double ref)
{
    char buf[32];
    if (singular)
        snprintf(buf, sizeof buf, "%8s%s", "sing.", wide ? "       " : "");
    else if (wide)
        snprintf(buf, sizeof buf, "%8.2f %6.4f", lg, pd);
    else
        snprintf(buf, sizeof buf, "%8.2f", lg);
    int attr = A_NORMAL;
    if (!singular && isfinite(ref) && lg != ref) /* decoration only: the numbers say it */
        attr = lg > ref ? tui_attr(t, TUI_PAIR_GOOD, A_BOLD) : tui_attr(t, TUI_PAIR_BAD, A_NORMAL);
    attron(attr);
    tui_text(t, y, x, w, buf);
    attroff(attr);
}

/* One block (X or W): a header row and one row per layer; returns rows used. */
static int block(tui *t, int y, int x, int w, int rows, int wide, const qsur_llama_qsur *q,
                 const qsur_llama_qsur *first, int weight)
{
    int cw = wide ? 16 : 10, used = 0;
    if (rows < 2)
        return 0;
    attron(A_BOLD);
    tui_text(t, y, x, w, weight ? "W" : "X");
    for (int s = 0; s < QSUR_SITE_COUNT; s++) {
        char h[32];
        snprintf(h, sizeof h, "%*s", wide ? 15 : 8, qsur_site_name(s));
        tui_text(t, y, x + 4 + s * cw, w - 4 - s * cw, h);
    }
    attroff(A_BOLD);
    used++;
    for (int l = 0; l < q->n_layers && used < rows; l++, used++) {
        if (used == rows - 1 && l < q->n_layers - 1) {
            tui_textf(t, y + used, x, w, "... %d more layers: `ostquant status`", q->n_layers - l);
            used++;
            break;
        }
        tui_textf(t, y + used, x, w, "L%d", l);
        for (int s = 0; s < QSUR_SITE_COUNT; s++) {
            const qsur_site_qsur *c = &q->sites[l * QSUR_SITE_COUNT + s];
            const qsur_site_qsur *f = first && first->nsites == q->nsites ? &first->sites[l * QSUR_SITE_COUNT + s] : NULL;
            double ref = f ? (weight ? f->w_log10 : f->x_log10) : NAN;
            if (weight)
                cell(t, y + used, x + 4 + s * cw, w - 4 - s * cw, wide, c->w_log10, c->w_per_dim, c->w_singular, ref);
            else
                cell(t, y + used, x + 4 + s * cw, w - 4 - s * cw, wide, c->x_log10, c->x_per_dim, c->x_singular, ref);
        }
    }
    return used;
}

void tui_ostquant_live_draw(tui *t, const qsur_ostquant *o)
{
    if (t->too_small || !o)
        return;
    tui_rect r = t->demo.r; /* the metrics + distribution area */
    for (int j = 0; j < r.h; j++) {
        move(r.y + j, r.x);
        for (int i = 0; i < r.w && r.x + i < t->cols; i++)
            addch(' ');
    }
    char title[96];
    snprintf(title, sizeof title, "OSTQuant live: step %d/%d", o->step, o->opts.steps);
    tui_box(t, &r, title, 1);
    int y = r.y + 1, x = r.x + 1, w = r.w - 2, h = r.h - 2, bottom = r.y + 1 + h;
    const qsur_ostquant_log *last = o->nlog > 0 ? &o->log[o->nlog - 1] : NULL;
    double ppl = NAN;
    int ppl_step = 0;
    for (int i = o->nlog - 1; i >= 0; i--)
        if (!isnan(o->log[i].ppl)) {
            ppl = o->log[i].ppl;
            ppl_step = o->log[i].step;
            break;
        }
    if (last)
        tui_textf(t, y++, x, w, "loss %.4f  kl %.4f  ema %.4f  best selection %.4f (step %d)", last->loss,
                  last->kltop, o->ema, o->best_ema, o->best_step);
    else
        tui_text(t, y++, x, w, "starting: measuring the transforms' QSUR at step 0");
    if (!isnan(ppl))
        tui_textf(t, y++, x, w, "eval perplexity %.3f (step %d)", ppl, ppl_step);
    const qsur_llama_qsur *q = o->nqlog > 0 ? &o->qlog[o->nqlog - 1] : NULL;
    int L = q ? q->n_layers : 0;
    int table = q ? 2 + (L + 1) * 2 : 0; /* heading + two blocks + summary */
    /* the loss curve takes what the table leaves (plot: rows + axis + labels) */
    int curve = bottom - y - table - 1;
    if (curve > 10)
        curve = 10;
    if (o->nlog >= 2 && curve >= 3 && w >= PLOT_MIN_WIDTH) {
        double *v = malloc((size_t)o->nlog * sizeof *v);
        if (v) {
            for (int i = 0; i < o->nlog; i++)
                v[i] = o->log[i].loss;
            plot_style st = {.width = w, .height = curve - 2, .utf8 = t->utf8, .color = 0};
            plot_lines pl = {0};
            plot_series(&pl, &st, v, o->nlog, "step", NULL);
            for (int i = 0; i < pl.count && y < bottom; i++)
                tui_text(t, y++, x, w, pl.lines[i]);
            plot_lines_free(&pl);
            free(v);
        }
    }
    if (!q || y >= bottom)
        return;
    int wide = w >= 4 + QSUR_SITE_COUNT * 16;
    attron(A_BOLD);
    tui_textf(t, y++, x, w, "QSUR of every transformed layer, step %d: log10%s (%lld tokens, %s, %.0f ms)",
              q->step, wide ? " ^(1/d)" : "", (long long)q->n_tokens, qsur_cube_name(q->cube), 1e3 * q->seconds);
    attroff(A_BOLD);
    const qsur_llama_qsur *first = &o->qlog[0];
    y += block(t, y, x, w, bottom - y - 1, wide, q, first, 0);
    char worst[32] = "-";
    if (q->x_worst >= 0)
        ostquant_site_label(&q->sites[q->x_worst], worst, sizeof worst);
    if (y < bottom)
        tui_textf(t, y++, x, w, "X log10 mean %.2f  ^(1/d) mean %.4f  min %.4f (%s)  W ^(1/d) mean %.4f",
                  q->x_log10_mean, q->x_pd_mean, q->x_pd_min, worst, q->w_pd_mean);
    if (bottom - y >= 2)
        y += block(t, y, x, w, bottom - y, wide, q, first, 1);
}
