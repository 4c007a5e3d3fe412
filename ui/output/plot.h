/* Terminal plots: histograms, per-channel absmax bars with outliers marked,
 * |value| heatmaps and before/after views.
 *
 * Every plot renders into a plot_lines (an array of strings, each at most
 * style.width display columns), so the same picture goes to the REPL and
 * scripts (plot_lines_to_report -> rep_line, which also fills the JSON "text"
 * array) and to the TUI (draw line i at row y+i of a panel; pass color = 0 and
 * the TUI sees plain UTF-8 whose marker characters still carry the meaning).
 *
 * Colour is a decoration only: everything colour says is also said by a
 * character ('!' under an outlier channel, the shade ramp of a heatmap), so
 * NO_COLOR and `set color off` lose nothing. With utf8 = 0 the output is pure
 * ASCII ('#' bars, " .:-=+*#%@" shades). */
#ifndef QSUR_UI_PLOT_H
#define QSUR_UI_PLOT_H

#include <stdint.h>
#include "report.h"


#define PLOT_MIN_WIDTH 40
#define PLOT_DEFAULT_HEIGHT 10

typedef struct {
    int width;   /* display columns available; clamped to >= PLOT_MIN_WIDTH */
    int height;  /* rows of a vertical plot or heatmap (<= 0: PLOT_DEFAULT_HEIGHT) */
    int utf8;    /* block/shade characters; 0: ASCII only */
    int color;   /* ANSI colour escapes; 0: none at all */
} plot_style;

typedef struct {
    char **lines;
    int count, cap;
} plot_lines;

/* Terminal width: $COLUMNS, else TIOCGWINSZ on stdout, else 80; at least 40. */
int plot_terminal_width(void);
void plot_lines_free(plot_lines *p);
/* Appends every line to the report (rep_line) and frees nothing. */
void plot_lines_to_report(const plot_lines *p, report *r);
/* Display columns of a line: UTF-8 code points, ANSI escapes not counted. */
int plot_display_width(const char *line);

/* Histogram as one horizontal bar per bin ("lower-edge count |bar"), bars in
 * eighth blocks (ASCII '#'), length proportional to count / max count. More
 * bins than style.height*2 rows are merged (adjacent counts summed). */
void plot_hist_h(plot_lines *out, const plot_style *st, const int64_t *counts, int nbins,
                 double lo, double hi);
/* Histogram as vertical columns over [lo, hi] (style.height rows, ▁..█ or
 * ASCII). count_max > 0 fixes the vertical scale (shared-scale views);
 * 0 uses the largest count. Bins beyond the width are merged. title may be NULL. */
void plot_hist_v(plot_lines *out, const plot_style *st, const int64_t *counts, int nbins,
                 double lo, double hi, int64_t count_max, const char *title);

/* Max-pooling shared by every plot (the REPL's and the TUI's): value c of n
 * goes to column c * ncol / n; NaN and Inf count as 0, so a broken value
 * never hides or fakes a peak. Return the largest |value|. */
double plot_pool_max(const double *v, int64_t n, int ncol, double *col);
/* |x| of a rows x cols matrix into H x W cells (row-major), the same way. */
double plot_pool_abs2d(const float *x, int64_t rows, int64_t cols, int H, int W, double *cell);

/* Per-channel absmax as vertical bars (channels max-pooled to the width).
 * Channels whose absmax > threshold (e.g. outlier_k x median; <= 0: none) are
 * outliers: their column is red (colour) AND marked '!' on the marker row
 * under the axis. ymax > 0 fixes the scale (before/after), 0 = largest value. */
void plot_channel_bars(plot_lines *out, const plot_style *st, const double *absmax, int64_t n,
                       double threshold, double ymax, const char *title);

/* A series (e.g. a loss per step) as the same max-pooled bars; xname labels
 * the x axis ("step"). */
void plot_series(plot_lines *out, const plot_style *st, const double *v, int64_t n,
                 const char *xname, const char *title);

/* |x| of a rows x cols row-major matrix (tokens x channels) max-pooled into
 * style.height rows x (width - 2) columns, as shade characters, followed by a
 * legend of the value range. */
void plot_heatmap(plot_lines *out, const plot_style *st, const float *x, int64_t rows,
                  int64_t cols);

/* Before/after: histograms of a and b over one shared range with one shared
 * count scale, stacked (a above b). nbins <= 0: the width decides. */
void plot_before_after(plot_lines *out, const plot_style *st, const float *a, int64_t na,
                       const float *b, int64_t nb, int nbins, const char *label_a,
                       const char *label_b);
/* Before/after channel absmax bars, stacked on one shared scale. */
void plot_channel_bars_pair(plot_lines *out, const plot_style *st, const double *before,
                            const double *after, int64_t n, double threshold_before,
                            double threshold_after, const char *label_a, const char *label_b);

/* Low-level: append a line (takes a copy; clipped to st->width columns). */
void plot_lines_add(plot_lines *p, const plot_style *st, const char *line);

#endif
