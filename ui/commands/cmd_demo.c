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

int cmd_demo(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    demo_state *d = &s->demo;
    if (!d->active)
        demo_start(d, DEMO_CORR_DEFAULT, DEMO_OUTLIER_DEFAULT);
    double a, b;
    if (argc >= 1 && !strcmp(argv[0], "rotate")) {
        if (argc != 2 || parse_double(argv[1], -3600, 3600, &a))
            return qsur_fail(err, QSUR_ERR_ARG, "expected `demo rotate DEGREES` (-3600..3600)");
        demo_rotate(d, a);
    } else if (argc >= 1 && !strcmp(argv[0], "scale")) {
        if (argc != 3 || parse_double(argv[1], 1e-3, 1e3, &a) || parse_double(argv[2], 1e-3, 1e3, &b))
            return qsur_fail(err, QSUR_ERR_ARG, "expected `demo scale A B` with A, B in [0.001, 1000]");
        demo_scale(d, a, b);
    } else if (argc >= 1 && !strcmp(argv[0], "reset")) {
        if (argc != 1)
            return qsur_fail(err, QSUR_ERR_ARG, "expected `demo reset` with no arguments");
        demo_reset(d);
    } else if (argc >= 1) {
        a = DEMO_CORR_DEFAULT;
        b = DEMO_OUTLIER_DEFAULT;
        if (argc > 2)
            return qsur_fail(err, QSUR_ERR_ARG, "expected `demo [CORR] [OUTLIER_SCALE]`, rotate, scale or reset");
        if (parse_double(argv[0], -0.99, 0.99, &a))
            return qsur_fail(err, QSUR_ERR_ARG, "CORR: expected a correlation in [-0.99, 0.99], got '%s'", argv[0]);
        if (argc >= 2 && parse_double(argv[1], 0.01, 100, &b))
            return qsur_fail(err, QSUR_ERR_ARG, "OUTLIER_SCALE: expected a number in [0.01, 100], got '%s'",
                             argv[1]);
        demo_start(d, a, b);
    }
    show(s, r);
    return QSUR_OK;
}
