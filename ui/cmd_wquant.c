/* Weight quantizers on the current layer: gptq, quantease, awq, cqe. Each compares
 * its weight-only output error ||X W^T - X Q^T|| / ||X W^T|| with plain
 * round-to-nearest under the same weight quantizer, on the layer's current
 * (possibly transformed) X and W. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qsur/clock.h"
#include "commands.h"
#include "layer_state.h"
#include "model_state.h"
#include "qsur/awq.h"
#include "qsur/cqe.h"
#include "qsur/gptq.h"
#include "qsur/quantease.h"

typedef struct {
    layer_view v;
    qsur_wquant_layer L;
    float *Q, *rtn;
    double rtn_err;
} wq_job;

static void job_free(wq_job *j)
{
    free(j->Q);
    free(j->rtn);
}

/* Checks the layer has X and W, allocates Q and computes the RTN baseline. */
static int job_begin(session *s, const char *who, wq_job *j, qsur_error *err)
{
    memset(j, 0, sizeof *j);
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    int rc = layer_view_get(s, l, 0, &j->v, err);
    if (rc != QSUR_OK)
        return rc;
    if (!j->v.x || !j->v.w)
        return qsur_fail(err, QSUR_ERR_ARG, "%s needs a weight and its activations (layer %s; `use W X`)",
                         who, l->name);
    if (s->wq.bits >= 16)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: the weight quantizer is off (w16); set bits with `quant w4`", who);
    j->L = (qsur_wquant_layer){j->v.w, j->v.m, j->v.d, j->v.x, j->v.n, NULL};
    j->Q = qsur_alloc((size_t)(j->v.m * j->v.d), sizeof(float));
    j->rtn = qsur_alloc((size_t)(j->v.m * j->v.d), sizeof(float));
    if (!j->Q || !j->rtn) {
        job_free(j);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", who);
    }
    rc = qsur_fake_quant(&s->wq, j->v.w, j->v.m, j->v.d, j->rtn, &s->progress, err);
    if (rc == QSUR_OK)
        rc = qsur_layer_output_error(j->v.x, NULL, j->v.w, j->rtn, j->v.n, j->v.d, j->v.m, &j->rtn_err, err);
    if (rc != QSUR_OK)
        job_free(j);
    return rc;
}

static int job_end(session *s, wq_job *j, report *r, const char *method, double t0, qsur_error *err)
{
    double e;
    int rc = qsur_layer_output_error(j->v.x, NULL, j->v.w, j->Q, j->v.n, j->v.d, j->v.m, &e, err);
    if (rc == QSUR_OK) {
        char wq[96];
        qsur_quant_describe(&s->wq, wq, sizeof wq);
        rep_str(r, "wquant", "weight quantizer", wq);
        rep_num(r, "rtn_output_error", "RTN output error", j->rtn_err, "%.6g");
        char key[64], label[64];
        snprintf(key, sizeof key, "%s_output_error", method);
        snprintf(label, sizeof label, "%s output error", method);
        rep_num(r, key, label, e, "%.6g");
        rep_num(r, "ratio", "  vs RTN", e / j->rtn_err, "%.3fx");
        rep_num(r, "seconds", "time (s)", qsur_seconds() - t0, "%.3f");
    }
    job_free(j);
    return rc;
}

/* `METHOD model ...` selects the whole-model mode (model_state.h). */
static int model_mode(int *argc, char ***argv)
{
    if (*argc > 0 && !strcmp((*argv)[0], "model")) {
        (*argc)--;
        (*argv)++;
        return 1;
    }
    return 0;
}

/* `layers=N` of the model mode (only the first N blocks), taken out of argv;
 * 0 when absent. */
static int model_layers(int model, int *argc, char **argv, long *layers, qsur_error *err)
{
    *layers = 0;
    for (int i = 0; model && i < *argc; i++) {
        if (strncmp(argv[i], "layers=", 7))
            continue;
        if (parse_long(argv[i] + 7, 1, 1L << 20, layers))
            return qsur_fail(err, QSUR_ERR_ARG, "bad value in %s (expected layers=N, N >= 1)", argv[i]);
        memmove(argv + i, argv + i + 1, (size_t)(*argc - i - 1) * sizeof *argv);
        (*argc)--;
        i--;
    }
    return QSUR_OK;
}

/* Appends " layers=N" to the canonical command when set. */
static void canon_layers(char *canon, size_t n, long layers)
{
    if (layers > 0)
        snprintf(canon + strlen(canon), n - strlen(canon), " layers=%ld", layers);
}

int cmd_gptq(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    qsur_gptq_opts o = qsur_gptq_default();
    int model = model_mode(&argc, &argv), float_acts = 0;
    long nlayers = 0;
    if (model_layers(model, &argc, argv, &nlayers, err))
        return QSUR_ERR_ARG;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "act"))
            o.act_order = 1;
        else if (!strcmp(argv[i], "static-groups"))
            o.static_groups = 1;
        else if (!strncmp(argv[i], "damp=", 5) && !parse_double(argv[i] + 5, 0.0, 1.0, &o.percdamp))
            ;
        else if (model && !strcmp(argv[i], "float-acts"))
            float_acts = 1;
        else
            return option_fail(err, argv[i], model ? "act, static-groups, damp=P, float-acts" : "act, static-groups, damp=P");
    }
    if (model) {
        qsur_llama_wquant_opts mo = qsur_llama_wquant_default();
        mo.method = QSUR_MWQ_GPTQ;
        mo.gptq = o;
        mo.float_acts = float_acts;
        char canon[112];
        snprintf(canon, sizeof canon, "gptq model%s%s damp=%.17g%s", o.act_order ? " act" : "",
                 o.static_groups ? " static-groups" : "", o.percdamp, float_acts ? " float-acts" : "");
        mo.layers = (int)nlayers;
        canon_layers(canon, sizeof canon, nlayers);
        return model_wquant(s, &mo, canon, r, err);
    }
    session_log_as(s, "%s", ""); /* the layer mode changes nothing */
    wq_job j;
    double t0 = qsur_seconds();
    int rc = job_begin(s, "gptq", &j, err);
    if (rc != QSUR_OK)
        return rc;
    rc = qsur_gptq(&j.L, &s->wq, &o, j.Q, NULL, &s->progress, err);
    if (rc != QSUR_OK) {
        job_free(&j);
        return rc;
    }
    rep_bool(r, "act_order", "act order", o.act_order);
    rep_bool(r, "static_groups", "static groups", o.static_groups);
    rep_num(r, "damp", "damping (x mean diag H)", o.percdamp, "%g");
    return job_end(s, &j, r, "gptq", t0, err);
}

int cmd_quantease(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    qsur_quantease_opts o = qsur_quantease_default();
    long sweeps;
    int model = model_mode(&argc, &argv);
    long nlayers = 0;
    if (model_layers(model, &argc, argv, &nlayers, err))
        return QSUR_ERR_ARG;
    for (int i = 0; i < argc; i++) {
        if (!parse_long(argv[i], 1, 1000, &sweeps))
            o.sweeps = (int)sweeps;
        else if (!strncmp(argv[i], "outliers=", 9) && !parse_double(argv[i] + 9, 0.0, 0.5, &o.outlier_frac))
            ;
        else if (!strcmp(argv[i], "init=gptq"))
            o.init = QSUR_QE_INIT_GPTQ;
        else if (!strcmp(argv[i], "init=rtn"))
            o.init = QSUR_QE_INIT_RTN;
        else
            return option_fail(err, argv[i], "SWEEPS, outliers=P, init=rtn|gptq");
    }
    if (model) {
        qsur_llama_wquant_opts mo = qsur_llama_wquant_default();
        mo.method = QSUR_MWQ_QUANTEASE;
        mo.quantease = o;
        char canon[128];
        snprintf(canon, sizeof canon, "quantease model %d outliers=%.17g init=%s", o.sweeps, o.outlier_frac,
                 o.init == QSUR_QE_INIT_GPTQ ? "gptq" : "rtn");
        mo.layers = (int)nlayers;
        canon_layers(canon, sizeof canon, nlayers);
        return model_wquant(s, &mo, canon, r, err);
    }
    session_log_as(s, "%s", "");
    wq_job j;
    double t0 = qsur_seconds();
    int rc = job_begin(s, "quantease", &j, err);
    if (rc != QSUR_OK)
        return rc;
    double *obj = calloc((size_t)o.sweeps + 1, sizeof *obj);
    qsur_outliers out;
    memset(&out, 0, sizeof out);
    if (!obj) {
        job_free(&j);
        return qsur_fail(err, QSUR_ERR_NOMEM, "quantease: out of memory");
    }
    rc = qsur_quantease(&j.L, &s->wq, &o, j.Q, NULL, &out, obj, &s->progress, err);
    if (rc == QSUR_OK) {
        rep_int(r, "sweeps", "sweeps", o.sweeps);
        static const char *const keys[] = {"sweep", "objective"};
        static const int widths[] = {5, 14};
        rep_table_begin(r, "objective", 2, keys, widths);
        for (int i = 0; i <= o.sweeps; i++) {
            rep_cell_int(r, i);
            rep_cell_num(r, obj[i], "%.8g");
        }
        rep_table_end(r);
        if (o.outlier_frac > 0) {
            rep_int(r, "outliers", "weights kept in float", out.count);
            rep_num(r, "outlier_overhead", "  memory overhead", out.overhead, "%.3f");
        }
    }
    free(obj);
    qsur_outliers_free(&out);
    if (rc != QSUR_OK) {
        job_free(&j);
        return rc;
    }
    return job_end(s, &j, r, "quantease", t0, err);
}

int cmd_awq(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    qsur_awq_opts o = qsur_awq_default();
    long grid;
    int model = model_mode(&argc, &argv);
    long nlayers = 0;
    if (model_layers(model, &argc, argv, &nlayers, err))
        return QSUR_ERR_ARG;
    if (argc > 1)
        return qsur_fail(err, QSUR_ERR_ARG, "usage: awq [model] [GRID]");
    if (argc == 1) {
        if (parse_long(argv[0], 1, 1000, &grid))
            return qsur_fail(err, QSUR_ERR_ARG, "expected a grid size 1..1000, got '%s'", argv[0]);
        o.grid = (int)grid;
    }
    if (model) {
        qsur_llama_wquant_opts mo = qsur_llama_wquant_default();
        mo.method = QSUR_MWQ_AWQ;
        mo.awq = o;
        char canon[128];
        snprintf(canon, sizeof canon, "awq model %d", o.grid);
        mo.layers = (int)nlayers;
        canon_layers(canon, sizeof canon, nlayers);
        return model_wquant(s, &mo, canon, r, err);
    }
    session_log_as(s, "%s", "");
    wq_job j;
    double t0 = qsur_seconds();
    int rc = job_begin(s, "awq", &j, err);
    if (rc != QSUR_OK)
        return rc;
    qsur_awq_result res;
    rc = qsur_awq(&j.L, &s->wq, &o, j.Q, NULL, NULL, &res, &s->progress, err);
    if (rc != QSUR_OK) {
        job_free(&j);
        return rc;
    }
    rep_num(r, "alpha", "best exponent a", res.alpha, "%.3f");
    return job_end(s, &j, r, "awq", t0, err);
}

int cmd_cqe(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    qsur_cqe_opts o = qsur_cqe_default();
    long v;
    int window = -1; /* model mode: 0 = sequential layer scope, K > 0 cross-layer */
    int model = model_mode(&argc, &argv);
    long nlayers = 0;
    if (model_layers(model, &argc, argv, &nlayers, err))
        return QSUR_ERR_ARG;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "steps=", 6) && !parse_long(argv[i] + 6, 0, 100000, &v))
            o.steps = (int)v;
        else if (!strncmp(argv[i], "lr=", 3) && !parse_double(argv[i] + 3, 0.0, 1.0, &o.lr))
            ;
        else if (!strncmp(argv[i], "band=", 5) && !parse_long(argv[i] + 5, 0, 1000, &v))
            o.band = (int)v;
        else if (!strncmp(argv[i], "rank=", 5) && !parse_long(argv[i] + 5, 0, 1L << 30, &v))
            o.rank = v;
        else if (!strncmp(argv[i], "window=", 7) && !parse_long(argv[i] + 7, 0, 1000, &v))
            window = (int)v;
        else
            return option_fail(err, argv[i], "steps=N, lr=X, band=B, rank=R, window=K");
    }
    if (model && window < 0)
        window = 2;
    if (window >= 0 && !model)
        return qsur_fail(err, QSUR_ERR_ARG, "window=K (cross-layer learning) needs model mode: `cqe model window=K`");
    if (model && window > 0) {
        qsur_cqe_cross_opts co = qsur_cqe_cross_default();
        co.layer = o;
        co.window = window;
        char canon[160];
        snprintf(canon, sizeof canon, "cqe model steps=%d lr=%.17g band=%d rank=%lld window=%d", o.steps, o.lr,
                 o.band, (long long)o.rank, window);
        return model_cqe_cross(s, &co, canon, r, err);
    }
    if (model) {
        qsur_llama_wquant_opts mo = qsur_llama_wquant_default();
        mo.method = QSUR_MWQ_CQE;
        mo.cqe = o;
        char canon[128];
        snprintf(canon, sizeof canon, "cqe model steps=%d lr=%.17g band=%d rank=%lld window=0", o.steps, o.lr,
                 o.band, (long long)o.rank);
        mo.layers = (int)nlayers;
        canon_layers(canon, sizeof canon, nlayers);
        return model_wquant(s, &mo, canon, r, err);
    }
    session_log_as(s, "%s", "");
    wq_job j;
    double t0 = qsur_seconds();
    int rc = job_begin(s, "cqe", &j, err);
    if (rc != QSUR_OK)
        return rc;
    qsur_cqe_result res;
    rc = qsur_cqe(&j.L, &s->wq, &o, j.Q, NULL, NULL, &res, &s->progress, err);
    if (rc != QSUR_OK) {
        job_free(&j);
        return rc;
    }
    rep_int(r, "steps", "Adam steps", o.steps);
    rep_num(r, "lr", "lr (x rms sing. value)", o.lr, "%g");
    rep_int(r, "band", "band half-width b", res.band);
    rep_int(r, "rank", "rank r", (long long)res.rank);
    rep_int(r, "best_step", "best step", res.best_step);
    rep_num(r, "loss_ratio", "objective vs RTN", res.rtn_loss > 0 ? res.loss / res.rtn_loss : 1.0, "%.4f");
    return job_end(s, &j, r, "cqe", t0, err);
}
