/* The `demo` model: closed-form 2-D QSUR against hand values, against the
 * engine's qsur_from_moments (same moments) and qsur_compute (sampled points),
 * the rotation/scaling algebra, and the command through the session. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "command.h"
#include "demo.h"
#include "qsur/qsur.h"
#include "session.h"

/* Engine QSUR from the same moments: QSUR = 10^log10_qsur. */
static double engine_qsur(const demo_state *d, double alpha, int asym, qsur_result *res)
{
    double var[2] = {d->cov[0][0], d->cov[1][1]};
    double det = d->cov[0][0] * d->cov[1][1] - d->cov[0][1] * d->cov[0][1];
    qsur_options opt = qsur_options_default();
    opt.alpha = alpha;
    opt.cube = asym ? QSUR_CUBE_ASYM : QSUR_CUBE_SYM;
    qsur_from_moments(d->mean, var, log(det), 1000, 2, &opt, res);
    return pow(10.0, res->log10_qsur);
}

static double next_uniform(unsigned long long *st)
{
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    return ((double)(*st >> 11) + 0.5) / 9007199254740992.0;
}

int main(void)
{
    demo_state d;
    demo_qsur q;

    /* A circle centred in its square: pi c^2 / (2c)^2 = pi/4 at every alpha. */
    demo_start(&d, 0.0, 1.0);
    CHECK(demo_qsur_2d(d.cov, d.mean, 0.99, 0, &q) == 0);
    CHECK_NEAR(q.qsur, M_PI / 4, 1e-14);
    CHECK_NEAR(q.c * q.c, -2 * log(0.01), 1e-12); /* chi2(2) quantile */
    CHECK(demo_qsur_2d(d.cov, d.mean, 0.5, 0, &q) == 0);
    CHECK_NEAR(q.qsur, M_PI / 4, 1e-14);
    /* Outlier axis 4x, no correlation: area pi c^2 * 4, side 8c -> pi/16. */
    demo_start(&d, 0.0, 4.0);
    demo_qsur_2d(d.cov, d.mean, 0.99, 0, &q);
    CHECK_NEAR(q.qsur, M_PI / 16, 1e-14);
    CHECK_NEAR(q.angle, 0.0, 1e-12);
    /* Correlation 0.6 with the 4x axis: det = 16 (1 - 0.36). */
    demo_start(&d, 0.6, 4.0);
    demo_qsur_2d(d.cov, d.mean, 0.99, 0, &q);
    CHECK_NEAR(q.det, 16 * 0.64, 1e-12);
    CHECK_NEAR(q.qsur, M_PI * 0.8 * 4 / 64, 1e-14); /* pi c^2 sqrt(det) / (2 c 4)^2 */
    CHECK(demo_qsur_2d(d.cov, d.mean, 1.0, 0, &q) == -1);
    double singular[2][2] = {{1, 1}, {1, 1}}, zero[2] = {0, 0};
    CHECK(demo_qsur_2d(singular, zero, 0.99, 0, &q) == -1);

    /* Rotation keeps det S (the ellipse area) and undoes itself. */
    demo_start(&d, 0.6, 4.0);
    demo_state r = d;
    demo_rotate(&r, 37.0);
    double det0 = d.cov[0][0] * d.cov[1][1] - d.cov[0][1] * d.cov[0][1];
    double det1 = r.cov[0][0] * r.cov[1][1] - r.cov[0][1] * r.cov[0][1];
    CHECK_REL(det1, det0, 1e-12);
    CHECK_NEAR(r.cov[0][0] + r.cov[1][1], 17.0, 1e-12); /* trace too */
    demo_rotate(&r, -37.0);
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            CHECK_NEAR(r.cov[i][j], d.cov[i][j], 1e-12);
    /* Rotation alone: the best angle equalises S_xx and S_yy (45 degrees off the
     * principal axes, what a Hadamard rotation does to an outlier axis), giving
     * side^2 = 4 c^2 tr/2 and QSUR = pi sqrt(det) / (2 tr). No angle beats it. */
    demo_qsur_2d(d.cov, d.mean, 0.99, 0, &q);
    double angle0 = q.angle;
    r = d;
    demo_rotate(&r, 45.0 - angle0);
    CHECK_NEAR(r.cov[0][0], r.cov[1][1], 1e-12);
    demo_qsur q45;
    demo_qsur_2d(r.cov, r.mean, 0.99, 0, &q45);
    CHECK_NEAR(q45.qsur, M_PI * sqrt(det0) / (2 * 17.0), 1e-12);
    int beaten = 0;
    for (int a = 0; a < 180; a++) {
        demo_state t = d;
        demo_rotate(&t, a);
        demo_qsur qa;
        demo_qsur_2d(t.cov, t.mean, 0.99, 0, &qa);
        beaten += qa.qsur > q45.qsur + 1e-12;
    }
    CHECK(beaten == 0);
    /* Aligning the major axis with x is the worst rotation (the square must hold
     * the full major axis), but then scaling the spreads equal reaches pi/4. */
    double before = q.qsur;
    demo_rotate(&d, -angle0);
    CHECK_NEAR(d.cov[0][1], 0.0, 1e-12);
    demo_qsur_2d(d.cov, d.mean, 0.99, 0, &q);
    CHECK(q.qsur < before);
    demo_scale(&d, 1.0 / sqrt(d.cov[0][0]), 1.0 / sqrt(d.cov[1][1]));
    demo_qsur_2d(d.cov, d.mean, 0.99, 0, &q);
    CHECK_NEAR(q.qsur, M_PI / 4, 1e-12);
    /* Scaling: S -> D S D. */
    demo_start(&d, 0.5, 2.0);
    demo_scale(&d, 3.0, 0.5);
    CHECK_NEAR(d.cov[0][0], 36.0, 1e-12);
    CHECK_NEAR(d.cov[0][1], 1.5, 1e-12);
    CHECK_NEAR(d.cov[1][1], 0.25, 1e-12);
    demo_reset(&d);
    CHECK_NEAR(d.cov[0][0], 4.0, 1e-15);

    /* Against the engine, same moments: states after rotations/scalings, both
     * cubes, and a non-zero mean (where sym and asym differ). */
    const double alphas[3] = {0.9, 0.99, 0.999};
    for (int k = 0; k < 12; k++) {
        demo_start(&d, -0.8 + 0.15 * k, 0.5 + 0.7 * k);
        demo_rotate(&d, 13.0 * k);
        demo_scale(&d, 1.0 + 0.1 * k, 2.0 - 0.1 * k);
        d.mean[0] = 0.3 * k - 1.0;
        d.mean[1] = k % 2 ? 0.7 : -0.2;
        for (int asym = 0; asym <= 1; asym++) {
            double alpha = alphas[k % 3];
            qsur_result res;
            double e = engine_qsur(&d, alpha, asym, &res);
            CHECK(demo_qsur_2d(d.cov, d.mean, alpha, asym, &q) == 0);
            CHECK_REL(q.qsur, e, 1e-9);
            CHECK_REL(q.side, res.side, 1e-12);
            CHECK_REL(q.c, res.c, 1e-9);
        }
    }

    /* Against qsur_compute on points drawn from N(0, S): the sample moments
     * approach S, so the QSURs agree to about 1/sqrt(n). */
    demo_start(&d, 0.6, 4.0);
    demo_rotate(&d, 20.0);
    enum { N = 200000 };
    float *x = malloc(sizeof(float) * 2 * N);
    double l00 = sqrt(d.cov[0][0]), l10 = d.cov[0][1] / l00, l11 = sqrt(d.cov[1][1] - l10 * l10);
    unsigned long long seed = 12345;
    for (int i = 0; i < N; i++) {
        double u1 = next_uniform(&seed), u2 = next_uniform(&seed);
        double z0 = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2), z1 = sqrt(-2 * log(u1)) * sin(2 * M_PI * u2);
        x[2 * i] = (float)(l00 * z0);
        x[2 * i + 1] = (float)(l10 * z0 + l11 * z1);
    }
    qsur_options opt = qsur_options_default();
    qsur_result res;
    qsur_error err;
    CHECK_OK(qsur_compute(x, N, 2, &opt, &res, NULL, &err), err);
    demo_qsur_2d(d.cov, d.mean, 0.99, 0, &q);
    CHECK_REL(pow(10.0, res.log10_qsur), q.qsur, 0.02);
    free(x);

    /* The drawing: the square's corners, the ellipse's outline and inside, the origin. */
    plot_style st = {60, 0, 0, 0};
    plot_lines pl = {0};
    demo_start(&d, 0.0, 1.0);
    demo_draw(&pl, &st, &d, 0.99, 0);
    CHECK(pl.count == 21); /* R = 2k+1 rows with k = 10 */
    const char *first = pl.lines[0] + strspn(pl.lines[0], " ");
    CHECK(first[0] == '+' && first[strlen(first) - 1] == '+' && strlen(first) == 41);
    CHECK(strchr(pl.lines[10], '+') != NULL && strchr(pl.lines[10], '*') != NULL);
    /* The circle touches the square in the middle of each side (drawn on the border). */
    const char *mid = pl.lines[10] + strspn(pl.lines[10], " ");
    CHECK(mid[0] == '*' && mid[40] == '*');
    CHECK(first[20] == '*' && first[1] == '-');
    /* A thin ellipse (outlier x axis) leaves the top rows empty. */
    plot_lines_free(&pl);
    demo_start(&d, 0.0, 4.0);
    demo_draw(&pl, &st, &d, 0.99, 0);
    CHECK(strchr(pl.lines[3], '*') == NULL && strchr(pl.lines[3], '.') == NULL);
    plot_lines_free(&pl);

    /* The command: JSON numbers and the session log (replayable with `save`). */
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    session s;
    session_init(&s, out);
    s.set.format = FORMAT_JSON;
    CHECK_OK(command_execute(&s, "demo 0 1", &err), err);
    CHECK_OK(command_execute(&s, "demo scale 4 1", &err), err);
    CHECK_OK(command_execute(&s, "demo rotate 90", &err), err);
    CHECK(command_execute(&s, "demo 2", &err) == QSUR_ERR_ARG && strstr(err.msg, "CORR") != NULL);
    CHECK(command_execute(&s, "demo scale 1", &err) == QSUR_ERR_ARG);
    fflush(out);
    CHECK(strstr(buf, "\"qsur\":0.78539816339744") != NULL);
    CHECK(strstr(buf, "\"qsur\":0.19634954084936") != NULL); /* pi/16 */
    CHECK(s.log.count == 3 && strcmp(s.log.lines[2], "demo rotate 90") == 0);
    CHECK_NEAR(s.demo.cov[1][1], 16.0, 1e-12); /* the 4x axis is now y */
    session_free(&s);
    fclose(out);
    free(buf);
    return check_done();
}
