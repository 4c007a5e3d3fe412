/* Distribution of the current layer's X (or W, `w`): `d` cycles
 *   bars     per-channel absmax, channels max-pooled to the panel width;
 *            outlier channels (absmax > outlier_k x median) drawn bold (red
 *            with colour) AND marked '!' in reverse video on the row under the
 *            axis, so the highlight survives NO_COLOR and monochrome terminals;
 *   hist     histogram of the selected channel (Left/Right, n/N next outlier);
 *   hist all histogram of the whole tensor;
 *   heatmap  |x| tokens x channels, max-pooled, as shades; outliers marked.
 * Everything is drawn from the CURRENT (transformed) matrix; the pooling is
 * plot.c's (the REPL's plots pool, and treat NaN, the same way). */
#include <curses.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "channel_analysis.h"
#include "plot.h"
#include "tui_panel.h"

/* The panel's data (update reads it from the session and the engine after
 * every command): which matrix, which view, the selected channel and every
 * channel's statistics with its outlier flag. */
typedef struct {
    int side_w;            /* 0: X (activation), 1: W */
    dist_view view;
    int64_t channel;       /* selected channel (histogram view); -1: the largest */
    qsur_channel_stat *st; /* absmax of every channel; full statistics of the selected one */
    unsigned char *outlier;
    int64_t nchan, noutliers;
    double median;
} dist_state;

const float *tui_dist_matrix(tui *t, int64_t *rows, int64_t *cols, const char **name)
{
    dist_state *d = t->dist.state;
    session *s = t->s;
    if (s->current < 0 || s->current >= s->nlayers)
        return NULL;
    layer_state *l = &s->layers[s->current];
    layer_view v;
    qsur_error err;
    if (layer_view_get(s, l, 0, &v, &err) != QSUR_OK)
        return NULL;
    int want_w = d->side_w ? v.w != NULL : v.x == NULL;
    if (name)
        *name = want_w ? l->w_name : l->x_name;
    *rows = want_w ? v.m : v.n;
    *cols = v.d;
    return want_w ? v.w : v.x;
}

/* Full statistics (std, kurtosis, ...) of the selected channel only: the
 * other channels need just their absmax, which one vectorised pass gives
 * (a quarter of the full statistics' time on every redraw of a big layer). */
static void channel_detail(tui *t)
{
    dist_state *d = t->dist.state;
    int64_t rows, cols;
    const float *a = tui_dist_matrix(t, &rows, &cols, NULL);
    if (!a || !d->st || d->channel < 0 || d->channel >= d->nchan || cols != d->nchan)
        return;
    float *col = malloc((size_t)rows * sizeof *col);
    if (!col)
        return;
    for (int64_t i = 0; i < rows; i++)
        col[i] = a[i * cols + d->channel];
    qsur_channel_stat one;
    qsur_error err;
    if (qsur_channel_stats(col, rows, 1, &one, NULL, &err) == QSUR_OK)
        d->st[d->channel] = one;
    free(col);
}

/* update: the channels of the matrix shown, and the selected one in full. */
static void update(tui *t, tui_panel *p)
{
    dist_state *d = p->state;
    free(d->st);
    free(d->outlier);
    d->st = NULL;
    d->outlier = NULL;
    d->nchan = d->noutliers = 0;
    int64_t rows, cols;
    const float *a = tui_dist_matrix(t, &rows, &cols, NULL);
    if (!a || cols <= 0 || rows <= 0)
        return;
    channel_analysis ca;
    qsur_error err;
    unsigned char *flag = calloc((size_t)cols, 1);
    if (!flag || channel_analysis_run(t->s, a, rows, cols, t->s->set.outlier_k, CHANNEL_ABSMAX_ONLY, &ca,
                                      &err) != QSUR_OK) {
        free(flag);
        return;
    }
    for (int64_t i = 0; i < ca.nout; i++)
        flag[ca.idx[i]] = 1;
    d->st = ca.st; /* taken over; the selected channel gets its full stats below */
    ca.st = NULL;
    d->outlier = flag;
    d->nchan = cols;
    d->noutliers = ca.nout;
    d->median = ca.median;
    channel_analysis_free(&ca);
    if (d->channel < 0 || d->channel >= cols) {
        /* Start on the largest channel: that is the one worth a histogram. */
        int64_t top;
        qsur_topk_absmax(d->st, cols, 1, &top);
        d->channel = top;
    }
    channel_detail(t);
}

/* Row of markers under a plot: '!' (reverse, bold) under columns holding an
 * outlier channel, '^' under the selected channel. Channel j sits in column
 * j * ncol / n, as plot.c's pooling puts it. */
static void marker_row(tui *t, int y, int x, int ncol)
{
    dist_state *d = t->dist.state;
    if (d->nchan <= 0 || ncol <= 0)
        return;
    for (int64_t j = 0; j < d->nchan; j++)
        if (d->outlier[j]) {
            int a = tui_attr(t, TUI_PAIR_OUTLIER, A_REVERSE | A_BOLD) | A_REVERSE;
            attron(a);
            mvaddch(y, x + (int)(j * ncol / d->nchan), '!');
            attroff(a);
        }
    if (d->channel >= 0 && d->channel < d->nchan) {
        int c = (int)(d->channel * ncol / d->nchan);
        if ((mvinch(y, x + c) & A_CHARTEXT) != '!')
            mvaddch(y, x + c, '^');
    }
}

static void draw_bars(tui *t, int y, int x, int h, int w)
{
    dist_state *d = t->dist.state;
    int label_w = 8, ncol = w - label_w;
    if (ncol > d->nchan)
        ncol = (int)d->nchan;
    int axis = h >= 6; /* on a short panel the bars need the axis row more */
    int bar_h = h - 1 - axis; /* marker row and axis row below */
    if (ncol < 1 || bar_h < 1)
        return;
    double *absmax = malloc((size_t)d->nchan * sizeof *absmax), *col = malloc((size_t)ncol * sizeof *col);
    int *out = calloc((size_t)ncol, sizeof *out);
    if (!absmax || !col || !out) {
        free(absmax), free(col), free(out);
        return;
    }
    for (int64_t j = 0; j < d->nchan; j++) {
        absmax[j] = d->st[j].absmax;
        out[j * ncol / d->nchan] |= d->outlier[j];
    }
    double ymax = plot_pool_max(absmax, d->nchan, ncol, col);
    if (!(ymax > 0))
        ymax = 1;
    tui_textf(t, y, x, label_w, "%7.3g", ymax);
    tui_textf(t, y + bar_h - 1, x, label_w, "%7s", "0");
    for (int c = 0; c < ncol; c++) {
        int eighths = (int)(col[c] / ymax * bar_h * 8 + 0.5);
        int a = out[c] ? tui_attr(t, TUI_PAIR_OUTLIER, A_BOLD) | (int)A_BOLD : tui_attr(t, TUI_PAIR_BAR, A_NORMAL);
        attron(a);
        for (int r = 0; r < bar_h; r++) {
            int cell = eighths - 8 * (bar_h - 1 - r);
            tui_vbar_cell(t, y + r, x + label_w + c, cell);
        }
        attroff(a);
    }
    free(absmax), free(col), free(out);
    marker_row(t, y + bar_h, x + label_w, ncol);
    if (!axis)
        return;
    tui_textf(t, y + bar_h + 1, x + label_w, ncol, "ch 0");
    char right[32];
    snprintf(right, sizeof right, "%lld", (long long)d->nchan - 1);
    tui_text(t, y + bar_h + 1, x + label_w + ncol - (int)strlen(right), (int)strlen(right), right);
}

static void draw_hist(tui *t, int y, int x, int h, int w, int64_t col)
{
    int64_t rows, cols;
    const float *a = tui_dist_matrix(t, &rows, &cols, NULL);
    int label_w = 8, nb = w - label_w, bar_h = h - 1;
    if (!a || nb < 4 || bar_h < 1)
        return;
    qsur_hist *hist;
    qsur_error err;
    if (qsur_hist_new(&hist, a, rows, cols, col, nb, &err) != QSUR_OK) {
        tui_text(t, y, x, w, err.msg);
        return;
    }
    int64_t peak = 1;
    for (int i = 0; i < hist->nbins; i++)
        if (hist->counts[i] > peak)
            peak = hist->counts[i];
    tui_textf(t, y, x, label_w, "%7lld", (long long)peak);
    tui_textf(t, y + bar_h - 1, x, label_w, "%7s", "0");
    attron(tui_attr(t, TUI_PAIR_BAR, A_NORMAL));
    for (int i = 0; i < hist->nbins; i++) {
        /* A non-empty bin gets at least one eighth: rare tail values must show. */
        int eighths = (int)((double)hist->counts[i] / (double)peak * bar_h * 8 + 0.5);
        if (hist->counts[i] > 0 && eighths == 0)
            eighths = 1;
        for (int r = 0; r < bar_h; r++)
            tui_vbar_cell(t, y + r, x + label_w + i, eighths - 8 * (bar_h - 1 - r));
    }
    attroff(tui_attr(t, TUI_PAIR_BAR, A_NORMAL));
    char lo[32], hi[32];
    snprintf(lo, sizeof lo, "%.4g", hist->lo);
    snprintf(hi, sizeof hi, "%.4g", hist->hi);
    tui_text(t, y + bar_h, x + label_w, nb, lo);
    tui_text(t, y + bar_h, x + label_w + nb - (int)strlen(hi), (int)strlen(hi), hi);
    qsur_hist_free(hist);
}

static void draw_heatmap(tui *t, int y, int x, int h, int w)
{
    int64_t rows, cols;
    const float *a = tui_dist_matrix(t, &rows, &cols, NULL);
    int hr = h - 2, wc = w - 8; /* marker row, legend row */
    if (!a || hr < 1 || wc < 4)
        return;
    if (wc > cols)
        wc = (int)cols;
    if (hr > rows)
        hr = (int)rows;
    double *cell = calloc((size_t)hr * (size_t)wc, sizeof *cell);
    if (!cell)
        return;
    double vmax = plot_pool_abs2d(a, rows, cols, hr, wc, cell);
    tui_text(t, y, x, 8, "tokens");
    tui_textf(t, y + 1, x, 8, "%lld", (long long)rows);
    for (int r = 0; r < hr; r++)
        for (int c = 0; c < wc; c++)
            tui_shade(t, y + r, x + 8 + c, vmax > 0 ? cell[r * wc + c] / vmax : 0);
    free(cell);
    marker_row(t, y + hr, x + 8, wc);
    tui_textf(t, y + hr + 1, x + 8, wc, "|x| max-pooled, darkest = %.4g   channels 0..%lld", vmax,
              (long long)cols - 1);
}

static void draw(tui *t, tui_panel *p)
{
    dist_state *d = t->dist.state;
    tui_rect *r = &p->r;
    static const char *const names[] = {"absmax per channel", "histogram: channel", "histogram: whole tensor",
                                        "heatmap |x|"};
    const char *name = "";
    int64_t rows = 0, cols = 0;
    const float *a = tui_dist_matrix(t, &rows, &cols, &name);
    char title[QSUR_NAME_MAX + 96];
    if (d->view == DIST_HIST_CHANNEL)
        snprintf(title, sizeof title, "%s %lld of %s  [d]", names[d->view], (long long)d->channel, name);
    else
        snprintf(title, sizeof title, "%s of %s  [d]", names[d->view], a ? name : "-");
    tui_box(t, r, title, t->focus == p);
    int y = r->y + 1, x = r->x + 1, h = r->h - 2, w = r->w - 2;
    if (!a || !d->st) {
        tui_text(t, y, x, w, "no matrix: select a layer with an activation or weight");
        return;
    }
    /* First line: the outlier summary, the same numbers `outliers` prints. */
    char line[512];
    int o = snprintf(line, sizeof line, "%lldx%lld  outliers (absmax > %gx median %.4g): %lld",
                     (long long)rows, (long long)cols, t->s->set.outlier_k, d->median,
                     (long long)d->noutliers);
    int listed = 0;
    for (int64_t j = 0; j < d->nchan && o < (int)sizeof line - 16; j++)
        if (d->outlier[j]) {
            o += snprintf(line + o, sizeof line - (size_t)o, "%s%lld", listed ? " " : " ch ", (long long)j);
            listed++;
        }
    tui_text(t, y, x, w, line);
    if (h < 4)
        return;
    switch (d->view) {
    case DIST_BARS:
        draw_bars(t, y + 1, x, h - 1, w);
        break;
    case DIST_HIST_CHANNEL:
        draw_hist(t, y + 1, x, h - 1, w, d->channel);
        break;
    case DIST_HIST_ALL:
        draw_hist(t, y + 1, x, h - 1, w, -1);
        break;
    default:
        draw_heatmap(t, y + 1, x, h - 1, w);
        break;
    }
}

static void next_outlier(tui *t, int dir)
{
    dist_state *d = t->dist.state;
    for (int64_t k = 1; k <= d->nchan; k++) {
        int64_t j = ((d->channel + dir * k) % d->nchan + d->nchan) % d->nchan;
        if (d->outlier[j]) {
            d->channel = j;
            return;
        }
    }
}

static int key(tui *t, tui_panel *p, int ch)
{
    dist_state *d = t->dist.state;
    (void)p;
    if (!d->st)
        return 0;
    switch (ch) {
    case KEY_LEFT:
        if (d->channel > 0)
            d->channel--;
        break;
    case KEY_RIGHT:
        if (d->channel + 1 < d->nchan)
            d->channel++;
        break;
    case KEY_SLEFT:
        d->channel = d->channel >= 16 ? d->channel - 16 : 0;
        break;
    case KEY_SRIGHT:
        d->channel = d->channel + 16 < d->nchan ? d->channel + 16 : d->nchan - 1;
        break;
    case 'n':
        next_outlier(t, 1);
        break;
    case 'N':
        next_outlier(t, -1);
        break;
    default:
        return 0;
    }
    channel_detail(t);
    tui_status(t, "channel %lld: absmax %.4g  std %.4g  kurtosis %.3g%s", (long long)d->channel,
               d->st[d->channel].absmax, d->st[d->channel].std, d->st[d->channel].kurtosis,
               d->outlier[d->channel] ? "  (outlier)" : "");
    return 1;
}

static void free_state(tui_panel *p)
{
    dist_state *d = p->state;
    if (d) {
        free(d->st);
        free(d->outlier);
    }
    free(d);
    p->state = NULL;
}

void tui_dist_next_view(tui *t)
{
    dist_state *d = t->dist.state;
    d->view = (dist_view)((d->view + 1) % DIST_NVIEWS);
}

void tui_dist_toggle_side(tui *t)
{
    dist_state *d = t->dist.state;
    d->side_w = !d->side_w;
    d->channel = -1;
    update(t, &t->dist);
}

void tui_dist_forget_channel(tui *t)
{
    dist_state *d = t->dist.state;
    d->channel = -1;
}

void tui_panel_dist_init(tui_panel *p)
{
    p->title = "distribution";
    p->visible = 1;
    p->draw = draw;
    p->key = key;
    p->update = update;
    p->free_state = free_state;
    dist_state *d = calloc(1, sizeof *d);
    if (d)
        d->channel = -1;
    p->state = d;
}
