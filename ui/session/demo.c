/* The 2-D teaching model behind `demo` (see demo.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "demo.h"

void demo_start(demo_state *d, double corr, double outlier)
{
    memset(d, 0, sizeof *d);
    d->active = 1;
    d->corr = corr;
    d->outlier = outlier;
    d->cov[0][0] = outlier * outlier;
    d->cov[0][1] = d->cov[1][0] = corr * outlier;
    d->cov[1][1] = 1.0;
}

void demo_reset(demo_state *d)
{
    demo_start(d, d->corr, d->outlier);
}

/* S <- A S A^T and mu <- A mu for a 2x2 A. */
static void transform(demo_state *d, const double a[2][2])
{
    double t[2][2], s[2][2], m[2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            t[i][j] = a[i][0] * d->cov[0][j] + a[i][1] * d->cov[1][j];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            s[i][j] = t[i][0] * a[j][0] + t[i][1] * a[j][1];
    /* Keep S exactly symmetric so repeated rotations do not drift apart. */
    s[0][1] = s[1][0] = 0.5 * (s[0][1] + s[1][0]);
    for (int i = 0; i < 2; i++)
        m[i] = a[i][0] * d->mean[0] + a[i][1] * d->mean[1];
    for (int i = 0; i < 2; i++) {
        d->cov[i][0] = s[i][0];
        d->cov[i][1] = s[i][1];
        d->mean[i] = m[i];
    }
}

void demo_rotate(demo_state *d, double degrees)
{
    double t = degrees * M_PI / 180.0, c = cos(t), s = sin(t);
    const double r[2][2] = {{c, -s}, {s, c}};
    transform(d, r);
}

void demo_scale(demo_state *d, double a, double b)
{
    const double m[2][2] = {{a, 0}, {0, b}};
    transform(d, m);
}

int demo_qsur_2d(const double cov[2][2], const double mean[2], double alpha, int asym,
                 demo_qsur *q)
{
    double a = cov[0][0], b = cov[0][1], e = cov[1][1];
    double det = a * e - b * b;
    if (!(alpha > 0 && alpha < 1) || !(a > 0) || !(e > 0) || !(det > 0))
        return -1;
    /* chi-square with 2 dof is exponential with mean 2: CDF 1 - exp(-x/2). */
    double c2 = -2.0 * log1p(-alpha);
    double c = sqrt(c2);
    double r0 = c * sqrt(a), r1 = c * sqrt(e);
    double side;
    if (asym)
        side = fmax(mean[0] + r0, mean[1] + r1) - fmin(mean[0] - r0, mean[1] - r1);
    else
        side = 2.0 * fmax(fabs(mean[0]) + r0, fabs(mean[1]) + r1);
    q->c = c;
    q->det = det;
    q->area = M_PI * c2 * sqrt(det);
    q->side = side;
    q->qsur = q->area / (side * side);
    q->angle = 0.5 * atan2(2.0 * b, a - e) * 180.0 / M_PI;
    return 0;
}

/* The picture is drawn on a character grid first ('.' inside, 'c' '-' '|'
 * the square, '*' the outline, '+' the origin), then written out row by
 * row: the square, the ellipse and the labels share the grid's scale. */
typedef struct {
    char *cell;
    int R, C;
    double lo, side, step_x, step_y; /* the square's corner and side; cell size */
} demo_grid;

/* Inside: (v - mu)^T S^-1 (v - mu) <= c^2; the square's border over it. */
static void grid_fill(demo_grid *g, const demo_state *d, const demo_qsur *q)
{
    double ia = d->cov[1][1] / q->det, ib = -d->cov[0][1] / q->det, ie = d->cov[0][0] / q->det;
    for (int i = 0; i < g->R; i++) {
        double y = g->lo + g->side - i * g->step_y - d->mean[1];
        for (int j = 0; j < g->C; j++) {
            double x = g->lo + j * g->step_x - d->mean[0];
            int edge_r = i == 0 || i == g->R - 1, edge_c = j == 0 || j == g->C - 1;
            char *c = &g->cell[i * g->C + j];
            *c = ia * x * x + 2 * ib * x * y + ie * y * y <= q->c * q->c ? '.' : ' ';
            if (edge_r || edge_c)
                *c = edge_r && edge_c ? 'c' : edge_r ? '-' : '|';
        }
    }
}

/* Outline: mu + c L (cos t, sin t) with L L^T = S (Cholesky). It is drawn over
 * the border on purpose: where the ellipse touches the square is the point. */
static void grid_outline(demo_grid *g, const demo_state *d, const demo_qsur *q)
{
    double l00 = sqrt(d->cov[0][0]), l10 = d->cov[0][1] / l00;
    double l11 = sqrt(fmax(d->cov[1][1] - l10 * l10, 0.0));
    for (int t = 0; t < 720; t++) {
        double ct = cos(t * M_PI / 360), stt = sin(t * M_PI / 360);
        double x = d->mean[0] + q->c * l00 * ct;
        double y = d->mean[1] + q->c * (l10 * ct + l11 * stt);
        int j = (int)lround((x - g->lo) / g->step_x), i = (int)lround((g->lo + g->side - y) / g->step_y);
        if (i >= 0 && i < g->R && j >= 0 && j < g->C && g->cell[i * g->C + j] != 'c')
            g->cell[i * g->C + j] = '*';
    }
    int oi = (int)lround((g->lo + g->side) / g->step_y), oj = (int)lround(-g->lo / g->step_x);
    if (oi > 0 && oi < g->R - 1 && oj > 0 && oj < g->C - 1 && g->cell[oi * g->C + oj] != '*')
        g->cell[oi * g->C + oj] = '+';
}

/* One grid cell as the terminal shows it (UTF-8 box drawing or ASCII). */
static const char *cell_text(char g, int i, int j, int utf8)
{
    switch (g) {
    case 'c': return utf8 ? (i == 0 ? (j == 0 ? "┌" : "┐") : (j == 0 ? "└" : "┘")) : "+";
    case '-': return utf8 ? "─" : "-";
    case '|': return utf8 ? "│" : "|";
    case '.': return utf8 ? "░" : ".";
    case '*': return utf8 ? "●" : "*";
    case '+': return utf8 ? "┼" : "+";
    default: return " ";
    }
}

static void grid_write(const demo_grid *g, plot_lines *out, const plot_style *st, int pad)
{
    for (int i = 0; i < g->R; i++) {
        strbuf b = {0};
        strbuf_addf(&b, "%*s", pad, "");
        for (int j = 0; j < g->C; j++) {
            char c = g->cell[i * g->C + j];
            const char *u = cell_text(c, i, j, st->utf8);
            if (c == '*' && st->color)
                strbuf_addf(&b, "\033[33m%s\033[0m", u);
            else
                strbuf_addf(&b, "%s", u);
        }
        plot_lines_add(out, st, b.buf);
        strbuf_free(&b);
    }
}

void demo_draw(plot_lines *out, const plot_style *st, const demo_state *d, double alpha, int asym)
{
    demo_qsur q;
    if (demo_qsur_2d(d->cov, d->mean, alpha, asym, &q) != 0)
        return;
    int width = st->width < PLOT_MIN_WIDTH ? PLOT_MIN_WIDTH : st->width;
    /* Terminal cells are about twice as tall as wide: 2 columns per row keeps
     * the square square. R = 2k+1 rows, C = 4k+1 columns. */
    int k = (width - 1) / 4;
    if (k > 10)
        k = 10;
    demo_grid g = {NULL, 2 * k + 1, 4 * k + 1, -q.side / 2, q.side, 0, 0};
    /* The square: centred at 0 (sym) or spanning [lo, lo + side] (asym). */
    if (asym) {
        double r0 = q.c * sqrt(d->cov[0][0]), r1 = q.c * sqrt(d->cov[1][1]);
        g.lo = fmin(d->mean[0] - r0, d->mean[1] - r1);
    }
    g.step_x = q.side / (g.C - 1);
    g.step_y = q.side / (g.R - 1);
    if (!(g.cell = malloc((size_t)g.R * (size_t)g.C)))
        return;
    grid_fill(&g, d, &q);
    grid_outline(&g, d, &q);
    int pad = (width - g.C) / 2;
    grid_write(&g, out, st, pad > 8 ? 8 : pad);
    free(g.cell);
}
