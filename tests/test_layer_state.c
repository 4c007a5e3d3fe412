/* The workbench's layer metrics through the real command table: QSUR after
 * transforms computed incrementally (log-det carried, moments recomputed) must
 * equal a full recomputation (new eigen-decomposition) on the transformed
 * matrices; Hadamard must raise QSUR of the outlier-heavy sample layer and
 * lower its output error; undo must restore the original numbers exactly. */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include "check.h"
#include "command.h"
#include "layer_state.h"
#include "layer_transform.h"
#include "qsur/qsur.h"
#include "session.h"

static void run(session *s, const char *line)
{
    qsur_error err;
    int rc = command_execute(s, line, &err);
    CHECK_MSG(rc == QSUR_OK, "`%s` failed: %s", line, err.msg);
}

static double full_log10(const float *a, int64_t n, int64_t d)
{
    qsur_options opt = qsur_options_default();
    qsur_result res;
    qsur_error err;
    int rc = qsur_compute(a, n, d, &opt, &res, NULL, &err);
    CHECK_OK(rc, err);
    return res.log10_qsur;
}

static void check_incremental(session *s, const char *what)
{
    layer_state *l = &s->layers[s->current];
    layer_metrics m;
    qsur_error err;
    CHECK_OK(layer_metrics_compute(s, l, 0, &m, &err), err);
    layer_view v;
    CHECK_OK(layer_view_get(s, l, 0, &v, &err), err);
    double fx = full_log10(v.x, v.n, v.d), fw = full_log10(v.w, v.m, v.d);
    CHECK_MSG(fabs(m.qx.log10_qsur - fx) <= 1e-6 * fabs(fx), "%s: X incremental %.12g vs full %.12g",
              what, m.qx.log10_qsur, fx);
    CHECK_MSG(fabs(m.qw.log10_qsur - fw) <= 1e-6 * fabs(fw), "%s: W incremental %.12g vs full %.12g",
              what, m.qw.log10_qsur, fw);
}

/* The errors shown for the current state against an independent recomputation:
 * fake quant + metrics of each side on its own, and the output error of the
 * quantized current layer against the ORIGINAL float output on the same
 * evenly spaced tokens (row i*n/k), through qsur_layer_output_error. */
static void check_errors(session *s, const char *what)
{
    layer_state *l = &s->layers[s->current];
    layer_metrics m;
    qsur_error err;
    CHECK_OK(layer_metrics_compute(s, l, 0, &m, &err), err);
    layer_view o, v;
    CHECK_OK(layer_view_get(s, l, 1, &o, &err), err);
    CHECK_OK(layer_view_get(s, l, 0, &v, &err), err);
    float *xq = malloc(sizeof(float) * (size_t)(v.n * v.d)), *wq = malloc(sizeof(float) * (size_t)(v.m * v.d));
    CHECK_OK(qsur_fake_quant(&s->aq, v.x, v.n, v.d, xq, NULL, &err), err);
    CHECK_OK(qsur_fake_quant(&s->wq, v.w, v.m, v.d, wq, NULL, &err), err);
    qsur_error_metrics ex, ew;
    qsur_error_metrics_compute(v.x, xq, v.n * v.d, &ex);
    qsur_error_metrics_compute(v.w, wq, v.m * v.d, &ew);
    CHECK_MSG(fabs(m.ex.mse - ex.mse) <= 1e-12 * ex.mse && fabs(m.ew.mse - ew.mse) <= 1e-12 * ew.mse,
              "%s: MSE X %.15g vs %.15g, W %.15g vs %.15g", what, m.ex.mse, ex.mse, m.ew.mse, ew.mse);
    int64_t k = m.out_err_tokens;
    CHECK(k >= 1 && k <= v.n);
    float *xs = malloc(sizeof(float) * (size_t)(k * v.d)), *xqs = malloc(sizeof(float) * (size_t)(k * v.d));
    for (int64_t i = 0; i < k; i++) {
        memcpy(xs + i * v.d, o.x + (i * v.n / k) * v.d, sizeof(float) * (size_t)v.d);
        memcpy(xqs + i * v.d, xq + (i * v.n / k) * v.d, sizeof(float) * (size_t)v.d);
    }
    double want;
    CHECK_OK(qsur_layer_output_error(xs, xqs, o.w, wq, k, v.d, v.m, &want, &err), err);
    CHECK_MSG(fabs(m.out_err - want) <= 1e-5 * want, "%s: output error %.9g vs %.9g on %lld tokens",
              what, m.out_err, want, (long long)k);
    /* Cached and recomputed numbers are the same numbers. */
    layer_metrics again;
    layer_metrics_forget(l, 0);
    CHECK_OK(layer_metrics_compute(s, l, 0, &again, &err), err);
    CHECK(again.out_err == m.out_err && again.ex.mse == m.ex.mse && again.qw.log10_qsur == m.qw.log10_qsur);
    free(xq);
    free(wq);
    free(xs);
    free(xqs);
}

int main(void)
{
    FILE *sink = fopen("/dev/null", "w");
    session s;
    session_init(&s, sink);
    char line[4096];
    snprintf(line, sizeof line, "load %s", check_source("sample_data/layer.safetensors"));
    run(&s, line);
    run(&s, "use W X");
    run(&s, "quant w4a4");

    qsur_error err;
    layer_metrics base, had, back;
    CHECK_OK(layer_metrics_compute(&s, &s.layers[0], 0, &base, &err), err);
    CHECK(base.has_x && base.has_w && !base.qx.singular && !base.qw.singular);

    run(&s, "rotate hadamard 3");
    CHECK_OK(layer_metrics_compute(&s, &s.layers[0], 0, &had, &err), err);
    check_incremental(&s, "hadamard");
    /* The sample's four massive channels make the cube far larger than the
     * ellipsoid; spreading them over all channels must fill it better. */
    CHECK_MSG(had.qx.log10_qsur > base.qx.log10_qsur + 50, "X log10 QSUR %g -> %g",
              base.qx.log10_qsur, had.qx.log10_qsur);
    CHECK_MSG(had.out_err < 0.6 * base.out_err, "output error %g -> %g", base.out_err, had.out_err);
    /* A rotation leaves the log-determinant alone. */
    CHECK_NEAR(had.qx.log_det, base.qx.log_det, 1e-9 * fabs(base.qx.log_det));

    run(&s, "scale smooth 0.5");
    check_incremental(&s, "hadamard + smoothquant");
    run(&s, "rotate random 11");
    check_incremental(&s, "hadamard + smoothquant + random");
    run(&s, "rotate pca");
    check_incremental(&s, "+ pca");

    check_errors(&s, "all tokens, per-token/per-channel");
    run(&s, "set error_tokens 100");
    check_errors(&s, "100 tokens");
    run(&s, "quant a:tensor");
    check_errors(&s, "100 tokens, per-tensor activations");
    run(&s, "quant a:row");
    run(&s, "set error_tokens auto");

    run(&s, "reset");
    CHECK_OK(layer_metrics_compute(&s, &s.layers[0], 0, &back, &err), err);
    CHECK(back.qx.log10_qsur == base.qx.log10_qsur && back.qw.log10_qsur == base.qw.log10_qsur);
    CHECK(back.out_err == base.out_err && back.ex.mse == base.ex.mse);
    /* At the original the transform pair is the identity: exactly no error. */
    double eq;
    CHECK_OK(layer_transform_equivalence(&s, &s.layers[0], &eq, &err), err);
    CHECK(eq == 0.0);
    run(&s, "redo");
    CHECK_OK(layer_transform_equivalence(&s, &s.layers[0], &eq, &err), err);
    CHECK_MSG(eq > 0 && eq < 1e-5, "equivalence error after a Hadamard %g", eq);

    /* A real weight whose input size 172 = 4 x 43 takes the Williamson matrix. */
    snprintf(line, sizeof line, "load %s", check_shared("data/stories260K.bin"));
    run(&s, line);
    run(&s, "use layers.0.feed_forward.w2");
    run(&s, "stats w");
    run(&s, "qsur");
    run(&s, "rotate hadamard 5");
    const qsur_transform *t = qsur_stack_step(s.layers[s.current].stack, 1);
    CHECK(t && strstr(t->desc, "hadamard 172 (williamson 43)"));
    run(&s, "error");

    session_free(&s);
    fclose(sink);
    return check_done();
}
