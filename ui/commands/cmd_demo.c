/* `demo`: the 2-D ellipse-in-a-square picture of QSUR (see demo.h). */
#include <math.h>
#include <string.h>
#include "commands.h"
#include "demo.h"
#include "plot.h"

static void show(session *s, report *r)
{
    demo_state *d = &s->demo;
    int asym = s->set.qsur_asym;
    demo_qsur q;
    if (demo_qsur_2d(d->cov, d->mean, s->set.qsur_alpha, asym, &q) != 0)
        return;
    plot_style st = plot_style_for(s);
    st.height = 0;
    plot_lines pl = {0};
    demo_draw(&pl, &st, d, s->set.qsur_alpha, asym);
    plot_lines_to_report(&pl, r);
    plot_lines_free(&pl);
    double corr = d->cov[0][1] / sqrt(d->cov[0][0] * d->cov[1][1]);
    rep_num(r, "cov_xx", "covariance S_xx", d->cov[0][0], "%.4g");
    rep_num(r, "cov_xy", "covariance S_xy", d->cov[0][1], "%.4g");
    rep_num(r, "cov_yy", "covariance S_yy", d->cov[1][1], "%.4g");
    rep_num(r, "corr", "correlation", corr, "%.4f");
    rep_num(r, "angle", "major axis (degrees)", q.angle, "%.2f");
    rep_num(r, "alpha", "confidence alpha", s->set.qsur_alpha, "%g");
    rep_num(r, "c", "c = sqrt(-2 ln(1-alpha))", q.c, "%.4f");
    rep_num(r, "ellipse_area", "ellipse area", q.area, "%.4g");
    rep_num(r, "square_side", asym ? "square side (asym)" : "square side (sym)", q.side, "%.4g");
    rep_num(r, "qsur", "QSUR = area / side^2", q.qsur, "%.4f");
    rep_num(r, "qsur_best", "best possible (circle)", M_PI / 4, "%.4f");
    rep_str(r, "cube", "cube", asym ? "asym" : "sym");
    double spread = d->cov[0][0] / d->cov[1][1];
    if (fabs(q.angle) > 0.5 && fabs(fabs(q.angle) - 90) > 0.5) {
        /* 45 degrees off the principal axes equalises S_xx and S_yy: the best a
         * rotation alone can do (what Hadamard does to an outlier axis). */
        double eq = 45.0 - q.angle;
        if (eq > 90)
            eq -= 90;
        if (fabs(spread - 1) > 0.01)
            rep_line(r, "hint: `demo rotate %.2f` equalises the spreads (best rotation alone);", eq);
        rep_line(r, "hint: `demo rotate %.2f` aligns the ellipse with the axes, then `demo scale` makes it a circle",
                 -q.angle);
    } else if (fabs(spread - 1) > 0.01) {
        int x_major = d->cov[0][0] > d->cov[1][1];
        rep_line(r, "hint: `demo scale %.4g %.4g` makes the spreads equal: a circle, QSUR = pi/4",
                 x_major ? sqrt(d->cov[1][1] / d->cov[0][0]) : 1.0,
                 x_major ? 1.0 : sqrt(d->cov[0][0] / d->cov[1][1]));
    }
}

/* The teaching model starts at its defaults the first time it is used. */
static demo_state *demo_of(session *s)
{
    if (!s->demo.active)
        demo_start(&s->demo, DEMO_CORR_DEFAULT, DEMO_OUTLIER_DEFAULT);
    return &s->demo;
}

/* `demo [CORR [OUTLIER_SCALE]]`: a new Gaussian, or (no words) the current one. */
const opt_spec demo_args[] = {
    {"CORR", OPT_REAL, -0.99, 0.99, NULL, NULL, NULL, OPT_LOG_NEVER, "correlation of x and y"},
    {"OUTLIER_SCALE", OPT_REAL, 0.01, 100, NULL, "4", NULL, OPT_LOG_NEVER, "how much wider the x (outlier) axis is"},
    OPT_END};

int cmd_demo(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argv, (void)err;
    demo_state *d = demo_of(s);
    if (argc >= 1)
        demo_start(d, a->arg[0].d, a->arg[1].d);
    show(s, r);
    return QSUR_OK;
}

static const opt_spec demo_rotate_args[] = {
    {"DEGREES", OPT_REAL, -3600, 3600, NULL, NULL, NULL, OPT_LOG_NEVER, "counter-clockwise angle"}, OPT_END};

static int demo_rotate_cmd(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc, (void)argv, (void)err;
    demo_rotate(demo_of(s), a->arg[0].d);
    show(s, r);
    return QSUR_OK;
}

static const opt_spec demo_scale_args[] = {
    {"A", OPT_REAL, 1e-3, 1e3, NULL, NULL, NULL, OPT_LOG_NEVER, "factor of x"},
    {"B", OPT_REAL, 1e-3, 1e3, NULL, NULL, NULL, OPT_LOG_NEVER, "factor of y"},
    OPT_END};

static int demo_scale_cmd(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc, (void)argv, (void)err;
    demo_scale(demo_of(s), a->arg[0].d, a->arg[1].d);
    show(s, r);
    return QSUR_OK;
}

static int demo_reset_cmd(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc, (void)argv, (void)err;
    demo_reset(demo_of(s));
    show(s, r);
    return QSUR_OK;
}

/* The sub-commands of `demo` (the parent entry is in command_table.c). */
const command demo_subs[] = {
    {"rotate", 1, 1, 0, COMPLETE_NONE, NULL, "demo rotate DEGREES", "rotate the points (S -> R S R^T)", NULL, NULL,
     NULL, NULL, demo_rotate_cmd, demo_rotate_args},
    {"scale", 2, 2, 0, COMPLETE_NONE, NULL, "demo scale A B", "multiply x by A and y by B (S -> D S D)", NULL, NULL,
     NULL, NULL, demo_scale_cmd, demo_scale_args},
    {"reset", 0, 0, 0, COMPLETE_NONE, NULL, "demo reset", "back to the last `demo CORR OUTLIER_SCALE`", NULL,
     demo_reset_cmd, NULL, NULL, NULL, NULL},
    COMMAND_END};
