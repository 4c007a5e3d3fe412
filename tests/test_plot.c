/* Terminal plots: content (outlier bar is the tallest and marked, bar lengths
 * proportional to counts, heatmap hot spot where it belongs), widths in display
 * columns at 40 and 200 columns, no escapes without colour, pure ASCII fallback. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "check.h"
#include "demo.h"
#include "plot.h"

static plot_style style(int width, int utf8, int color)
{
    plot_style st = {width, 0, utf8, color};
    return st;
}

static int count_char(const char *s, char c)
{
    int n = 0;
    for (; *s; s++)
        n += *s == c;
    return n;
}

static int count_str(const char *s, const char *sub)
{
    int n = 0;
    size_t l = strlen(sub);
    for (const char *p = strstr(s, sub); p; p = strstr(p + l, sub))
        n++;
    return n;
}

/* Every kind of plot, for the generic width/escape/ASCII checks. */
static void render_all(plot_lines *pl, const plot_style *st)
{
    enum { N = 300, R = 50, C = 120 };
    static double absmax[N], after[N];
    static float x[R * C], y[R * C];
    for (int i = 0; i < N; i++) {
        absmax[i] = 1.0 + 0.3 * sin(i * 0.7);
        after[i] = 1.0 + 0.1 * cos(i);
    }
    absmax[123] = 40.0;
    for (int i = 0; i < R * C; i++) {
        x[i] = (float)sin(i * 0.37) * (i % C == 7 ? 30.0f : 1.0f);
        y[i] = (float)cos(i * 0.11);
    }
    int64_t counts[100];
    for (int i = 0; i < 100; i++)
        counts[i] = (int64_t)(1000 * exp(-(i - 50) * (i - 50) / 200.0));
    plot_hist_h(pl, st, counts, 100, -3.0, 3.0);
    plot_hist_v(pl, st, counts, 100, -3.0, 3.0, 0, "a histogram with a long title that goes on and on and on and on");
    plot_channel_bars(pl, st, absmax, N, 8.0, 0, "absmax per channel");
    plot_channel_bars_pair(pl, st, absmax, after, N, 8.0, 8.0, "before", "after");
    plot_heatmap(pl, st, x, R, C);
    plot_before_after(pl, st, x, R * C, y, R * C, 0, "before", "after");
    demo_state d;
    demo_start(&d, 0.6, 4.0);
    demo_draw(pl, st, &d, 0.99, 0);
    demo_draw(pl, st, &d, 0.99, 1);
}

static void check_generic(void)
{
    const int widths[2] = {40, 200};
    for (int wi = 0; wi < 2; wi++)
        for (int utf8 = 0; utf8 <= 1; utf8++)
            for (int color = 0; color <= 1; color++) {
                plot_style st = style(widths[wi], utf8, color);
                plot_lines pl = {0};
                render_all(&pl, &st);
                CHECK(pl.count > 50);
                int too_wide = 0, esc = 0, non_ascii = 0, max_w = 0;
                for (int i = 0; i < pl.count; i++) {
                    int w = plot_display_width(pl.lines[i]);
                    if (w > widths[wi])
                        too_wide++;
                    if (w > max_w)
                        max_w = w;
                    esc += strchr(pl.lines[i], '\033') != NULL;
                    for (const unsigned char *p = (const unsigned char *)pl.lines[i]; *p; p++)
                        non_ascii += *p >= 0x80;
                }
                CHECK_MSG(too_wide == 0, "width %d utf8 %d color %d: %d lines too wide (max %d)",
                          widths[wi], utf8, color, too_wide, max_w);
                /* The wide terminal really is used (not a fixed 80). */
                if (widths[wi] == 200)
                    CHECK_MSG(max_w > 150, "max width %d at 200 columns", max_w);
                if (color)
                    CHECK_MSG(esc > 0, "colour on: outliers and heat are coloured");
                else
                    CHECK_MSG(esc == 0, "colour off: %d lines with ESC", esc);
                if (!utf8)
                    CHECK_MSG(non_ascii == 0, "ASCII fallback: %d non-ASCII bytes", non_ascii);
                else
                    CHECK(non_ascii > 0);
                plot_lines_free(&pl);
            }
}

/* The outlier channel's column is the only one reaching the top row and the
 * only one marked '!', at the column the max-pooling puts it in. */
static void check_outlier_bars(int64_t n, int width, int64_t outlier)
{
    double *a = malloc((size_t)n * sizeof *a);
    for (int64_t i = 0; i < n; i++)
        a[i] = 1.0 + 0.5 * (double)(i % 7) / 7.0;
    a[outlier] = 25.0;
    plot_style st = style(width, 0, 0);
    plot_lines pl = {0};
    plot_channel_bars(&pl, &st, a, n, 8.0 * 1.25, 0, NULL);
    /* Layout: 10 bar rows, axis, marker row, labels. Margin is 8 columns. */
    CHECK(pl.count == 13);
    int avail = width - 8;
    int64_t ncols = n > avail ? avail : n;
    int colw = n > avail ? 1 : (int)(avail / n > 3 ? 3 : avail / n);
    int expect_col = 8 + (int)(outlier * ncols / n) * colw;
    const char *top = pl.lines[0];
    int filled = 0, where = -1;
    for (int c = 8; top[c]; c++)
        if (top[c] != ' ') {
            filled++;
            if (where < 0)
                where = c;
        }
    CHECK_MSG(filled == colw && where == expect_col, "n=%lld: top row filled %d at %d, expected %d at %d",
              (long long)n, filled, where, colw, expect_col);
    /* Every other column is far shorter: its bar ends below row 8 (1.5/25 of 10 rows). */
    int tallest_other = 0;
    for (int r = 0; r < 10; r++)
        for (int c = 8; pl.lines[r][c]; c++)
            if (pl.lines[r][c] != ' ' && (c < expect_col || c >= expect_col + colw))
                tallest_other = tallest_other > 10 - r ? tallest_other : 10 - r;
    CHECK_MSG(tallest_other <= 1, "other bars reach %d rows", tallest_other);
    const char *marks = pl.lines[11];
    CHECK(count_char(marks, '!') == colw);
    CHECK((int)(strchr(marks, '!') - marks) == expect_col);
    plot_lines_free(&pl);

    /* With colour the outlier bar is red, and nothing else is. */
    st.color = 1;
    plot_channel_bars(&pl, &st, a, n, 8.0 * 1.25, 0, NULL);
    CHECK(count_str(pl.lines[0], "\033[31m") == 1);
    CHECK(strchr(pl.lines[9], '\033') != NULL);
    plot_lines_free(&pl);
    free(a);
}

/* Counts 1, 2, 4, 8: horizontal bars of bw/8, bw/4, bw/2, bw columns. */
static void check_hist_hand(void)
{
    const int64_t counts[4] = {1, 2, 4, 8};
    int width = 62, bw = width - 22; /* 22 columns of labels */
    plot_style st = style(width, 0, 0);
    plot_lines pl = {0};
    plot_hist_h(&pl, &st, counts, 4, 0.0, 4.0);
    CHECK(pl.count == 5);
    for (int i = 0; i < 4; i++) {
        int expect = (int)(bw * counts[i] / 8);
        CHECK_MSG(count_char(pl.lines[i], '#') == expect, "bin %d: %d '#', expected %d", i,
                  count_char(pl.lines[i], '#'), expect);
        char lab[32];
        snprintf(lab, sizeof lab, "%10.4g %9lld |", (double)i, (long long)counts[i]);
        CHECK(strncmp(pl.lines[i], lab, strlen(lab)) == 0);
    }
    plot_lines_free(&pl);
    /* UTF-8: the same lengths in full blocks. */
    st.utf8 = 1;
    plot_hist_h(&pl, &st, counts, 4, 0.0, 4.0);
    for (int i = 0; i < 4; i++)
        CHECK(count_str(pl.lines[i], "█") == (int)(bw * counts[i] / 8));
    plot_lines_free(&pl);
    /* A count of 3 on a scale of 8 over 40 columns is 15 columns exactly. */
    const int64_t c2[2] = {3, 8};
    plot_hist_h(&pl, &st, c2, 2, 0.0, 1.0);
    CHECK(count_str(pl.lines[0], "█") == 15);
    plot_lines_free(&pl);
    /* 3/16 of 40 columns = 7.5: 7 full blocks and a half block. */
    const int64_t c3[2] = {3, 16};
    plot_hist_h(&pl, &st, c3, 2, 0.0, 1.0);
    CHECK(count_str(pl.lines[0], "█") == 7 && count_str(pl.lines[0], "▌") == 1);
    plot_lines_free(&pl);

    /* Vertical: counts 2, 4, 8 on 8 rows are columns of 2, 4 and 8 full cells. */
    const int64_t v[3] = {2, 4, 8};
    plot_style vs = {40, 8, 0, 0};
    plot_hist_v(&pl, &vs, v, 3, 0.0, 3.0, 0, NULL);
    CHECK(pl.count == 8 + 2);
    int colw = 4; /* (40 - 8) / 3 = 10, capped at 4 */
    for (int b = 0; b < 3; b++) {
        int full = 0;
        for (int r = 0; r < 8; r++)
            full += pl.lines[r][8 + b * colw] == '#';
        CHECK_MSG(full == (int)v[b], "column %d: %d full cells, expected %d", b, full, (int)v[b]);
    }
    CHECK(strncmp(pl.lines[0], "      8|", 8) == 0); /* the scale's top label */
    plot_lines_free(&pl);
    /* A fixed scale of 16 halves them (shared-scale before/after views). */
    plot_hist_v(&pl, &vs, v, 3, 0.0, 3.0, 16, NULL);
    int full = 0;
    for (int r = 0; r < 8; r++)
        full += pl.lines[r][8 + 2 * colw] == '#';
    CHECK(full == 4);
    plot_lines_free(&pl);
}

static void check_heatmap(void)
{
    enum { R = 40, C = 64 };
    static float x[R * C];
    for (int i = 0; i < R * C; i++)
        x[i] = 0.01f * (float)((i * 7) % 5) - 0.02f;
    x[25 * C + 50] = -9.0f; /* |x| counts: a large negative is the hot spot */
    plot_style st = {40, 10, 0, 0};
    plot_lines pl = {0};
    plot_heatmap(&pl, &st, x, R, C);
    /* border, 10 rows, border, legend, pooling note */
    CHECK(pl.count == 14);
    int W = 38, at = 0, row = -1, col = -1;
    for (int r = 1; r <= 10; r++)
        for (int c = 0; pl.lines[r][c]; c++)
            if (pl.lines[r][c] == '@')
                at++, row = r - 1, col = c - 1;
    CHECK_MSG(at == 1, "%d hottest cells", at);
    CHECK(row == 25 * 10 / R && col == 50 * W / C);
    CHECK(strstr(pl.lines[12], "9") != NULL); /* legend shows the max |x| */
    plot_lines_free(&pl);
}

static void check_before_after(void)
{
    enum { N = 2000 };
    static float a[N], b[N];
    for (int i = 0; i < N; i++) {
        a[i] = (float)(i % 2 ? 10.0 : -10.0) * (float)(i % 10) / 10.0f;
        b[i] = (float)sin(i);
    }
    plot_style st = {60, 6, 1, 0};
    plot_lines pl = {0};
    plot_before_after(&pl, &st, a, N, b, N, 0, "before", "after");
    /* title + 6 rows + axis + labels, twice */
    CHECK(pl.count == 18);
    CHECK(strcmp(pl.lines[0], "before") == 0 && strcmp(pl.lines[9], "after") == 0);
    /* One shared count scale (same top label) and one shared range (same axis labels). */
    CHECK(strncmp(pl.lines[1], pl.lines[10], 7) == 0);
    CHECK(strcmp(pl.lines[8], pl.lines[17]) == 0);
    /* a spans [-8, 9] (even i: -(i%10), odd i: +(i%10)), b only [-1, 1]. */
    const char *ax = pl.lines[8];
    CHECK(strncmp(ax, "        -8 ", 11) == 0 && ax[strlen(ax) - 1] == '9' && ax[strlen(ax) - 2] == ' ');
    plot_lines_free(&pl);
}

static void check_width_and_clip(void)
{
    plot_style st = {40, 0, 0, 0};
    plot_lines pl = {0};
    char longline[300];
    memset(longline, 'x', sizeof longline - 1);
    longline[sizeof longline - 1] = '\0';
    plot_lines_add(&pl, &st, longline);
    CHECK(strlen(pl.lines[0]) == 40);
    plot_lines_add(&pl, &st, "\033[31m" "ééééééééééééééééééééééééééééééééééééééééééééééééé" "\033[0m");
    CHECK(plot_display_width(pl.lines[1]) == 40);
    size_t l = strlen(pl.lines[1]);
    CHECK(l > 4 && strcmp(pl.lines[1] + l - 4, "\033[0m") == 0); /* colour closed after the cut */
    st.width = 10; /* below the minimum: 40 is used */
    plot_lines_add(&pl, &st, longline);
    CHECK(strlen(pl.lines[2]) == 40);
    plot_lines_free(&pl);

    setenv("COLUMNS", "123", 1);
    CHECK(plot_terminal_width() == 123);
    setenv("COLUMNS", "20", 1);
    CHECK(plot_terminal_width() == PLOT_MIN_WIDTH);
    unsetenv("COLUMNS");
    if (!isatty(1))
        CHECK(plot_terminal_width() == 80);
}

/* A loss curve: 10 steps falling from 3.0 to 2.1. The axis starts just below
 * the minimum (2.1 - 5% of the range = 2.055, shown as 2.06), so the first step's bar fills the plot
 * and the last is nearly empty; the labels say which values the axis spans. */
static void check_series(void)
{
    plot_style st = {60, 8, 0, 0};
    double v[10];
    for (int i = 0; i < 10; i++)
        v[i] = 3.0 - 0.1 * i;
    plot_lines pl = {0};
    plot_series(&pl, &st, v, 10, "step", "loss");
    CHECK(pl.count >= 10);
    CHECK(strstr(pl.lines[0], "loss") != NULL);
    CHECK(strstr(pl.lines[1], "3") != NULL && strstr(pl.lines[8], "2.06") != NULL);
    CHECK(strstr(pl.lines[pl.count - 1], "step 9") != NULL);
    /* column of step 0 is '#' in the top row; the last step's is blank there */
    const char *top = strchr(pl.lines[1], '#');
    CHECK(top != NULL);
    int full_last = 0;
    for (const char *p = pl.lines[1]; *p; p++)
        full_last = *p == '#';
    CHECK(!full_last);
    plot_lines_free(&pl);
}

int main(void)
{
    check_generic();
    check_series();
    check_outlier_bars(64, 80, 37);     /* one column per channel */
    check_outlier_bars(20, 80, 3);      /* three columns per channel */
    check_outlier_bars(4096, 60, 3000); /* max-pooled: 4096 channels into 52 columns */
    check_outlier_bars(4096, 200, 4095);
    check_hist_hand();
    check_heatmap();
    check_before_after();
    check_width_and_clip();
    return check_done();
}
