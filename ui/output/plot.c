/* Terminal plots rendered as lines of text (see plot.h). */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include "plot.h"
#include "text_escape.h"

/* Eighth blocks: index = eighths filled (1..8). */
static const char *const hblocks[9] = {"", "▏", "▎", "▍", "▌", "▋", "▊", "▉", "█"};
static const char *const vblocks[9] = {" ", "▁", "▂", "▃", "▄", "▅", "▆", "▇", "█"};
/* ASCII stand-ins for a partly filled cell of a vertical bar, by eighths. */
static const char ascii_v[9] = {' ', '.', '.', ':', '-', '=', '+', '*', '#'};
static const char *const ascii_shades = " .:-=+*#%@";
static const char *const utf8_shades[5] = {" ", "░", "▒", "▓", "█"};

#define SGR_RED "31"
#define SGR_YELLOW "33"
#define MARGIN 8 /* "%7s" label + axis character */

int plot_terminal_width(void)
{
    int w = 0;
    const char *env = getenv("COLUMNS");
    if (env && *env)
        w = atoi(env);
    if (w <= 0) {
        struct winsize ws;
        if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
            w = ws.ws_col;
    }
    if (w <= 0)
        w = 80;
    return w < PLOT_MIN_WIDTH ? PLOT_MIN_WIDTH : w;
}

static int style_width(const plot_style *st)
{
    return st->width < PLOT_MIN_WIDTH ? PLOT_MIN_WIDTH : st->width;
}

static int style_height(const plot_style *st)
{
    return st->height > 0 ? st->height : PLOT_DEFAULT_HEIGHT;
}

void plot_lines_free(plot_lines *p)
{
    for (int i = 0; i < p->count; i++)
        free(p->lines[i]);
    free(p->lines);
    memset(p, 0, sizeof *p);
}

void plot_lines_to_report(const plot_lines *p, report *r)
{
    for (int i = 0; i < p->count; i++)
        rep_line_styled(r, p->lines[i]);
}

/* Skips an ANSI CSI sequence starting at p (ESC '[' ... final byte). */
static const char *skip_escape(const char *p)
{
    p++;
    if (*p == '[') {
        p++;
        while (*p && !(*p >= 0x40 && *p <= 0x7e))
            p++;
        if (*p)
            p++;
    }
    return p;
}

int plot_display_width(const char *line)
{
    int w = 0;
    for (const char *p = line; *p;) {
        if (*p == '\033') {
            p = skip_escape(p);
            continue;
        }
        if (((unsigned char)*p & 0xc0) != 0x80)
            w++;
        p++;
    }
    return w;
}

void plot_lines_add(plot_lines *p, const plot_style *st, const char *line)
{
    int width = style_width(st);
    size_t n = strlen(line);
    char *copy = malloc(n + 8);
    if (!copy)
        return; /* a missing plot line is not worth losing the session */
    /* Copy up to width display columns; a cut inside a coloured run gets a reset. */
    int cols = 0, escaped = 0;
    char *o = copy;
    const char *q = line;
    while (*q) {
        if (*q == '\033') {
            const char *e = skip_escape(q);
            memcpy(o, q, (size_t)(e - q));
            o += e - q;
            q = e;
            escaped = 1;
            continue;
        }
        if (((unsigned char)*q & 0xc0) != 0x80) {
            if (cols == width)
                break;
            cols++;
        }
        *o++ = *q++;
    }
    if (*q && escaped)
        o = stpcpy(o, "\033[0m");
    *o = '\0';
    if (p->count == p->cap) {
        int cap = p->cap ? p->cap * 2 : 16;
        char **nl = realloc(p->lines, (size_t)cap * sizeof *nl);
        if (!nl) {
            free(copy);
            return;
        }
        p->lines = nl;
        p->cap = cap;
    }
    p->lines[p->count++] = copy;
}

/* ---- one line under construction -------------------------------------------- */

typedef struct {
    strbuf b;
    const plot_style *st;
    int colored;
} row;

static void row_init(row *r, const plot_style *st)
{
    memset(r, 0, sizeof *r);
    r->st = st;
}

static void row_text(row *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void row_text(row *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *t = NULL;
    int n = vasprintf(&t, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    strbuf_addf(&r->b, "%s", t);
    free(t);
}

static void row_repeat(row *r, const char *glyph, int n)
{
    for (int i = 0; i < n; i++)
        strbuf_addf(&r->b, "%s", glyph);
}

static void row_color(row *r, const char *sgr)
{
    if (r->st->color && sgr) {
        strbuf_addf(&r->b, "\033[%sm", sgr);
        r->colored = 1;
    }
}

static void row_plain(row *r)
{
    if (r->colored) {
        strbuf_addf(&r->b, "\033[0m");
        r->colored = 0;
    }
}

static void row_finish(row *r, plot_lines *out)
{
    row_plain(r);
    plot_lines_add(out, r->st, r->b.buf ? r->b.buf : "");
    strbuf_free(&r->b);
}

static void add_text(plot_lines *out, const plot_style *st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_text(plot_lines *out, const plot_style *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *t = NULL;
    int n = vasprintf(&t, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    char *e = text_escape_dup(t); /* titles name tensors */
    plot_lines_add(out, st, e ? e : "");
    free(e);
    free(t);
}

/* ---- shared pieces of vertical plots ------------------------------------------ */

/* Eighths of a bar of height rows for v on a [0, vmax] scale; a non-zero value
 * gets at least one eighth so it never disappears. */
static int bar_eighths(double v, double vmax, int rows)
{
    if (!(v > 0) || !(vmax > 0))
        return 0;
    double e = v / vmax * rows * 8.0;
    int k = (int)lround(e);
    if (k < 1)
        k = 1;
    if (k > rows * 8)
        k = rows * 8;
    return k;
}

static const char *v_glyph(const plot_style *st, int fill, char *tmp)
{
    if (fill < 0)
        fill = 0;
    if (fill > 8)
        fill = 8;
    if (st->utf8)
        return vblocks[fill];
    tmp[0] = ascii_v[fill];
    tmp[1] = '\0';
    return tmp;
}

/* Columns of height h (eighths) drawn top-down; mark[j] colours column j red.
 * left labels: top row shows top_label, bottom row bottom_label. */
static void draw_columns(plot_lines *out, const plot_style *st, const int *h, const int *mark,
                         int ncols, int colw, int rows, const char *top_label,
                         const char *bottom_label)
{
    char tmp[2];
    for (int r = 0; r < rows; r++) {
        row ln;
        row_init(&ln, st);
        const char *lab = r == 0 ? top_label : (r == rows - 1 ? bottom_label : "");
        row_text(&ln, "%7.7s%s", lab, st->utf8 ? "┤" : "|");
        int level = rows - 1 - r;
        for (int j = 0; j < ncols; j++) {
            int fill = h[j] - level * 8;
            if (mark && mark[j] && fill > 0)
                row_color(&ln, SGR_RED);
            row_repeat(&ln, v_glyph(st, fill, tmp), colw);
            row_plain(&ln);
        }
        row_finish(&ln, out);
    }
    row ax;
    row_init(&ax, st);
    row_text(&ax, "%7s%s", "", st->utf8 ? "└" : "+");
    row_repeat(&ax, st->utf8 ? "─" : "-", ncols * colw);
    row_finish(&ax, out);
}

/* "lo ... hi" under an axis of span columns starting after the margin. */
static void axis_labels(plot_lines *out, const plot_style *st, const char *lo, const char *hi,
                        int span)
{
    int pad = span - (int)strlen(lo) - (int)strlen(hi);
    if (pad < 1)
        pad = 1;
    add_text(out, st, "%8s%s%*s%s", "", lo, pad, "", hi);
}

/* ---- histograms ---------------------------------------------------------------- */

/* Sums adjacent bins so at most max_out remain; returns the new count. */
static int merge_bins(const int64_t *counts, int nbins, int max_out, int64_t **merged, int *group)
{
    int g = (nbins + max_out - 1) / max_out;
    if (g < 1)
        g = 1;
    int n = (nbins + g - 1) / g;
    int64_t *m = calloc((size_t)(n > 0 ? n : 1), sizeof *m);
    if (!m)
        return -1;
    for (int i = 0; i < nbins; i++)
        m[i / g] += counts[i];
    *merged = m;
    *group = g;
    return n;
}

void plot_hist_h(plot_lines *out, const plot_style *st, const int64_t *counts, int nbins,
                 double lo, double hi)
{
    if (nbins <= 0)
        return;
    int64_t *m = NULL;
    int g = 1;
    int n = merge_bins(counts, nbins, style_height(st) * 2, &m, &g);
    if (n < 0)
        return;
    int64_t cmax = 0;
    for (int i = 0; i < n; i++)
        if (m[i] > cmax)
            cmax = m[i];
    /* "%10.4g %9lld |" = 22 columns of labels, the rest is bar. */
    int bw = style_width(st) - 22;
    double w = (hi - lo) / nbins * g;
    for (int i = 0; i < n; i++) {
        row ln;
        row_init(&ln, st);
        row_text(&ln, "%10.4g %9lld %s", lo + w * i, (long long)m[i], st->utf8 ? "│" : "|");
        if (cmax > 0 && m[i] > 0) {
            double frac = (double)m[i] / (double)cmax;
            if (st->utf8) {
                int e = (int)lround(frac * bw * 8);
                if (e < 1)
                    e = 1;
                row_repeat(&ln, hblocks[8], e / 8);
                row_text(&ln, "%s", hblocks[e % 8]);
            } else {
                int k = (int)lround(frac * bw);
                row_repeat(&ln, "#", k < 1 ? 1 : k);
            }
        }
        row_finish(&ln, out);
    }
    add_text(out, st, "%10.4g (upper edge; %d bin%s per row)", hi, g, g == 1 ? "" : "s");
    free(m);
}

void plot_hist_v(plot_lines *out, const plot_style *st, const int64_t *counts, int nbins,
                 double lo, double hi, int64_t count_max, const char *title)
{
    if (nbins <= 0)
        return;
    int avail = style_width(st) - MARGIN;
    int64_t *m = NULL;
    int g = 1;
    int n = merge_bins(counts, nbins, avail, &m, &g);
    if (n < 0)
        return;
    int colw = avail / n;
    if (colw > 4)
        colw = 4;
    if (colw < 1)
        colw = 1;
    int64_t cmax = count_max;
    for (int i = 0; i < n; i++)
        if (m[i] > cmax)
            cmax = m[i];
    int rows = style_height(st);
    int *h = malloc((size_t)n * sizeof *h);
    if (!h) {
        free(m);
        return;
    }
    for (int i = 0; i < n; i++)
        h[i] = bar_eighths((double)m[i], (double)cmax, rows);
    if (title)
        add_text(out, st, "%s", title);
    char top[32];
    snprintf(top, sizeof top, "%lld", (long long)cmax);
    draw_columns(out, st, h, NULL, n, colw, rows, top, "0");
    char los[32], his[32];
    snprintf(los, sizeof los, "%.4g", lo);
    snprintf(his, sizeof his, "%.4g", hi);
    axis_labels(out, st, los, his, n * colw);
    free(h);
    free(m);
}

/* ---- max-pooling (the REPL's plots and the TUI's panels share it) ---------------- */

double plot_pool_max(const double *v, int64_t n, int ncol, double *col)
{
    double vmax = 0;
    for (int j = 0; j < ncol; j++)
        col[j] = 0;
    for (int64_t c = 0; c < n; c++) {
        double a = isfinite(v[c]) ? fabs(v[c]) : 0.0;
        double *d = &col[c * ncol / n];
        if (a > *d)
            *d = a;
        if (a > vmax)
            vmax = a;
    }
    return vmax;
}

double plot_pool_abs2d(const float *x, int64_t rows, int64_t cols, int H, int W, double *cell)
{
    double vmax = 0;
    for (size_t k = 0; k < (size_t)H * (size_t)W; k++)
        cell[k] = 0;
    for (int64_t i = 0; i < rows; i++) {
        int ci = (int)(i * H / rows);
        for (int64_t j = 0; j < cols; j++) {
            float f = x[i * cols + j];
            double a = isfinite(f) ? fabs((double)f) : 0.0;
            double *c = &cell[(size_t)ci * (size_t)W + (size_t)(j * W / cols)];
            if (a > *c)
                *c = a;
            if (a > vmax)
                vmax = a;
        }
    }
    return vmax;
}

/* ---- channel bars --------------------------------------------------------------- */

static void bars(plot_lines *out, const plot_style *st, const double *absmax, int64_t n,
                 double threshold, double ymax, const char *title, const char *xname,
                 double base);

void plot_channel_bars(plot_lines *out, const plot_style *st, const double *absmax, int64_t n,
                       double threshold, double ymax, const char *title)
{
    bars(out, st, absmax, n, threshold, ymax, title, "channel", 0.0);
}

void plot_series(plot_lines *out, const plot_style *st, const double *v, int64_t n,
                 const char *xname, const char *title)
{
    /* A curve is read by its changes: start the axis a little below the
     * minimum instead of at 0, where every bar would look full. */
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (isfinite(v[i])) {
            lo = fmin(lo, v[i]);
            hi = fmax(hi, v[i]);
        }
    if (!(hi >= lo))
        return;
    double base = lo - 0.05 * (hi - lo > 0 ? hi - lo : fabs(lo) + 1.0);
    double *shifted = malloc((size_t)n * sizeof *shifted);
    if (!shifted)
        return;
    for (int64_t i = 0; i < n; i++)
        shifted[i] = isfinite(v[i]) ? v[i] - base : 0.0;
    bars(out, st, shifted, n, 0, 0, title, xname, base);
    free(shifted);
}

/* Bars of |v| max-pooled into the width, the axis starting at base (labels
 * only: values are already relative to it); xname labels the last index. */
static void bars(plot_lines *out, const plot_style *st, const double *absmax, int64_t n,
                 double threshold, double ymax, const char *title, const char *xname,
                 double base)
{
    if (n <= 0)
        return;
    int avail = style_width(st) - MARGIN;
    int ncols = n > avail ? avail : (int)n;
    int colw = n > avail ? 1 : avail / (int)n;
    if (colw > 3)
        colw = 3;
    double *v = calloc((size_t)ncols, sizeof *v);
    int *mark = calloc((size_t)ncols, sizeof *mark);
    int *h = calloc((size_t)ncols, sizeof *h);
    if (!v || !mark || !h)
        goto done;
    /* Max-pool channels into columns so an outlier channel is never averaged away. */
    double pooled_max = plot_pool_max(absmax, n, ncols, v);
    double vmax = ymax <= 0 ? fmax(ymax, pooled_max) : ymax;
    int any = 0;
    for (int64_t c = 0; c < n; c++)
        if (threshold > 0 && isfinite(absmax[c]) && fabs(absmax[c]) > threshold)
            mark[c * ncols / n] = any = 1;
    int rows = style_height(st);
    for (int j = 0; j < ncols; j++)
        h[j] = bar_eighths(v[j], vmax, rows);
    if (title) {
        if (threshold > 0)
            add_text(out, st, "%s  (! = absmax > %.4g)", title, threshold);
        else
            add_text(out, st, "%s", title);
    }
    char top[32], bottom[32];
    snprintf(top, sizeof top, "%.3g", base + vmax);
    snprintf(bottom, sizeof bottom, "%.3g", base);
    draw_columns(out, st, h, mark, ncols, colw, rows, top, bottom);
    if (any) {
        row mk;
        row_init(&mk, st);
        row_text(&mk, "%8s", "");
        for (int j = 0; j < ncols; j++) {
            if (mark[j]) {
                row_color(&mk, SGR_RED);
                row_repeat(&mk, "!", colw);
                row_plain(&mk);
            } else {
                row_repeat(&mk, " ", colw);
            }
        }
        row_finish(&mk, out);
    }
    char hi[48];
    snprintf(hi, sizeof hi, "%s %lld", xname, (long long)(n - 1));
    axis_labels(out, st, "0", hi, ncols * colw);
done:
    free(v);
    free(mark);
    free(h);
}

void plot_channel_bars_pair(plot_lines *out, const plot_style *st, const double *before,
                            const double *after, int64_t n, double threshold_before,
                            double threshold_after, const char *label_a, const char *label_b)
{
    double ymax = 0;
    for (int64_t c = 0; c < n; c++) {
        if (isfinite(before[c]) && fabs(before[c]) > ymax)
            ymax = fabs(before[c]);
        if (isfinite(after[c]) && fabs(after[c]) > ymax)
            ymax = fabs(after[c]);
    }
    if (!(ymax > 0))
        ymax = 1;
    plot_channel_bars(out, st, before, n, threshold_before, ymax, label_a);
    plot_channel_bars(out, st, after, n, threshold_after, ymax, label_b);
}

/* ---- heatmap --------------------------------------------------------------------- */

void plot_heatmap(plot_lines *out, const plot_style *st, const float *x, int64_t rows,
                  int64_t cols)
{
    if (rows <= 0 || cols <= 0)
        return;
    int W = style_width(st) - 2;
    int H = style_height(st);
    if (cols < W)
        W = (int)cols;
    if (rows < H)
        H = (int)rows;
    double *cell = calloc((size_t)W * (size_t)H, sizeof *cell);
    if (!cell)
        return;
    double vmax = plot_pool_abs2d(x, rows, cols, H, W, cell);
    int L = st->utf8 ? 5 : (int)strlen(ascii_shades);
    const char *bar = st->utf8 ? "─" : "-";
    row top;
    row_init(&top, st);
    row_text(&top, "%s", st->utf8 ? "┌" : "+");
    row_repeat(&top, bar, W);
    row_text(&top, "%s", st->utf8 ? "┐" : "+");
    row_finish(&top, out);
    for (int i = 0; i < H; i++) {
        row ln;
        row_init(&ln, st);
        row_text(&ln, "%s", st->utf8 ? "│" : "|");
        for (int j = 0; j < W; j++) {
            double v = cell[(size_t)i * (size_t)W + (size_t)j];
            /* ceil: any non-zero cell is visible; only values near vmax reach the top. */
            int lvl = vmax > 0 ? (int)ceil(v / vmax * (L - 1)) : 0;
            if (lvl > L - 1)
                lvl = L - 1;
            if (4 * lvl >= 3 * (L - 1))
                row_color(&ln, SGR_RED);
            else if (2 * lvl >= L - 1)
                row_color(&ln, SGR_YELLOW);
            if (st->utf8)
                row_text(&ln, "%s", utf8_shades[lvl]);
            else
                row_text(&ln, "%c", ascii_shades[lvl]);
            row_plain(&ln);
        }
        row_text(&ln, "%s", st->utf8 ? "│" : "|");
        row_finish(&ln, out);
    }
    row bot;
    row_init(&bot, st);
    row_text(&bot, "%s", st->utf8 ? "└" : "+");
    row_repeat(&bot, bar, W);
    row_text(&bot, "%s", st->utf8 ? "┘" : "+");
    row_finish(&bot, out);
    row lg;
    row_init(&lg, st);
    row_text(&lg, "|x| 0 ");
    for (int l = 0; l < L; l++)
        row_text(&lg, "%s", st->utf8 ? utf8_shades[l] : (char[]){ascii_shades[l], 0});
    row_text(&lg, " %.4g (linear)", vmax);
    row_finish(&lg, out);
    add_text(out, st, "cell = max over %lldx%lld (tokens x channels)",
             (long long)((rows + H - 1) / H), (long long)((cols + W - 1) / W));
    free(cell);
}

/* ---- before / after ------------------------------------------------------------- */

static void bin_values(const float *x, int64_t n, double lo, double hi, int nbins, int64_t *counts)
{
    double w = (hi - lo) / nbins;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            continue;
        int b = w > 0 ? (int)((x[i] - lo) / w) : 0;
        if (b >= nbins)
            b = nbins - 1; /* the maximum falls in the last, closed bin */
        if (b < 0)
            b = 0;
        counts[b]++;
    }
}

void plot_before_after(plot_lines *out, const plot_style *st, const float *a, int64_t na,
                       const float *b, int64_t nb, int nbins, const char *label_a,
                       const char *label_b)
{
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < na; i++)
        if (isfinite(a[i]))
            lo = fmin(lo, a[i]), hi = fmax(hi, a[i]);
    for (int64_t i = 0; i < nb; i++)
        if (isfinite(b[i]))
            lo = fmin(lo, b[i]), hi = fmax(hi, b[i]);
    if (!(lo <= hi))
        return;
    if (lo == hi)
        lo -= 0.5, hi += 0.5;
    /* No more bins than columns: plot_hist_v would merge them and the shared
     * count scale computed here would no longer hold. */
    int avail = style_width(st) - MARGIN;
    if (nbins <= 0 || nbins > avail)
        nbins = avail;
    int64_t *ca = calloc((size_t)nbins, sizeof *ca);
    int64_t *cb = calloc((size_t)nbins, sizeof *cb);
    if (ca && cb) {
        bin_values(a, na, lo, hi, nbins, ca);
        bin_values(b, nb, lo, hi, nbins, cb);
        int64_t cmax = 1;
        for (int i = 0; i < nbins; i++)
            cmax = ca[i] > cmax ? ca[i] : cmax, cmax = cb[i] > cmax ? cb[i] : cmax;
        plot_hist_v(out, st, ca, nbins, lo, hi, cmax, label_a);
        plot_hist_v(out, st, cb, nbins, lo, hi, cmax, label_b);
    }
    free(ca);
    free(cb);
}
