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
#include "model_commands.h"
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

/* The handlers of a method's entry (the current layer) and of its `model`
 * sub-command (every linear): both run run_NAME, told apart by `model`. */
#define MODE_HANDLERS(name)                                                                              \
    int cmd_##name(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)          \
    {                                                                                                    \
        (void)argc, (void)argv;                                                                          \
        return run_##name(s, 0, a, r, err);                                                              \
    }                                                                                                    \
    static int cmd_##name##_model(session *s, int argc, char **argv, opt_args *a, report *r,            \
                                  qsur_error *err)                                                       \
    {                                                                                                    \
        (void)argc, (void)argv;                                                                          \
        return run_##name(s, 1, a, r, err);                                                              \
    }

/* Each method runs on the current layer (the entry's own options) or, as
 * `METHOD model ...`, on every linear of the model (the sub-command entry);
 * both share one handler, which tells them apart by the spec it got. */
/* `layers=N` of every model mode: only the first N blocks (mo.layers). */
#define LAYERS_OPT \
    {"layers", OPT_INT, 1, 1L << 20, NULL, NULL, NULL, OPT_LOG_GIVEN, "only the first N blocks (the others keep their form)"}

/* The model specs repeat the layer specs' rows first, so one index enum
 * reads both. */
#define GPTQ_LAYER_ROWS \
    {"act", OPT_FLAG, 0, 0, NULL, NULL, NULL, OPT_LOG_GIVEN, "quantize columns in decreasing H_jj order"}, \
    {"static-groups", OPT_FLAG, 0, 0, NULL, NULL, NULL, OPT_LOG_GIVEN, \
     "group maps fitted on the original weight, not the error-fed one"}, \
    {"damp", OPT_REAL, 0, 1, NULL, "0.01", "P", OPT_LOG_ALWAYS, "damping, times mean(diag H)"}
enum { GPTQ_ACT, GPTQ_STATIC, GPTQ_DAMP, GPTQ_FLOAT_ACTS, GPTQ_LAYERS };
const opt_spec gptq_opts[] = {GPTQ_LAYER_ROWS, OPT_END};
static const opt_spec gptq_model_opts[] = {
    GPTQ_LAYER_ROWS,
    {"float-acts", OPT_FLAG, 0, 0, NULL, NULL, NULL, OPT_LOG_GIVEN,
     "capture inputs with the activation/KV quantizers off (as the QuaRot/OSTQuant code)"},
    LAYERS_OPT, OPT_END};

/* The whole-model pass of a method: its log line from the spec rows after
 * `head`, then model_wquant with it. */
static int run_model(session *s, qsur_llama_wquant_opts *mo, const char *head, const opt_args *a,
                     report *r, qsur_error *err)
{
    char *canon = opt_log_line(head, a);
    int rc = canon ? model_wquant(s, mo, canon, r, err) : qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    free(canon);
    return rc;
}

static int run_gptq(session *s, int model, opt_args *a, report *r, qsur_error *err)
{
    qsur_gptq_opts o = qsur_gptq_default();
    o.act_order = (int)a->v[GPTQ_ACT].i;
    o.static_groups = (int)a->v[GPTQ_STATIC].i;
    o.percdamp = a->v[GPTQ_DAMP].d;
    if (model) {
        qsur_llama_wquant_opts mo = qsur_llama_wquant_default();
        mo.method = QSUR_MWQ_GPTQ;
        mo.gptq = o;
        mo.float_acts = (int)a->v[GPTQ_FLOAT_ACTS].i;
        mo.layers = (int)a->v[GPTQ_LAYERS].i;
        return run_model(s, &mo, "gptq model", a, r, err);
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

MODE_HANDLERS(gptq)

#define QE_LAYER_ROWS \
    {"outliers", OPT_REAL, 0, 0.5, NULL, "0", "P", OPT_LOG_ALWAYS, "fraction of the weights kept in float"}, \
    {"init", OPT_CHOICE, 0, 0, "rtn|gptq", "rtn", NULL, OPT_LOG_ALWAYS, "grid and start point"}
enum { QE_OUTLIERS, QE_INIT, QE_LAYERS };
const opt_spec quantease_opts[] = {QE_LAYER_ROWS, OPT_END};
static const opt_spec quantease_model_opts[] = {QE_LAYER_ROWS, LAYERS_OPT, OPT_END};

const opt_spec quantease_args[] = {
    {"SWEEPS", OPT_INT, 1, 1000, NULL, "3", NULL, OPT_LOG_NEVER, "coordinate-descent passes"}, OPT_END};

static int run_quantease(session *s, int model, opt_args *a, report *r, qsur_error *err)
{
    qsur_quantease_opts o = qsur_quantease_default();
    o.sweeps = (int)a->arg[0].i;
    o.outlier_frac = a->v[QE_OUTLIERS].d;
    o.init = a->v[QE_INIT].i == 1 ? QSUR_QE_INIT_GPTQ : QSUR_QE_INIT_RTN;
    if (model) {
        qsur_llama_wquant_opts mo = qsur_llama_wquant_default();
        mo.method = QSUR_MWQ_QUANTEASE;
        mo.quantease = o;
        mo.layers = (int)a->v[QE_LAYERS].i;
        char head[64];
        snprintf(head, sizeof head, "quantease model %d", o.sweeps);
        return run_model(s, &mo, head, a, r, err);
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

MODE_HANDLERS(quantease)

const opt_spec awq_opts[] = {OPT_END}; /* GRID only */
static const opt_spec awq_model_opts[] = {LAYERS_OPT, OPT_END};

const opt_spec awq_args[] = {
    {"GRID", OPT_INT, 1, 1000, NULL, "20", NULL, OPT_LOG_NEVER, "exponents searched: GRID + 1 in [0, 1]"}, OPT_END};

static int run_awq(session *s, int model, opt_args *a, report *r, qsur_error *err)
{
    qsur_awq_opts o = qsur_awq_default();
    o.grid = (int)a->arg[0].i;
    if (model) {
        qsur_llama_wquant_opts mo = qsur_llama_wquant_default();
        mo.method = QSUR_MWQ_AWQ;
        mo.awq = o;
        mo.layers = (int)a->v[0].i;
        char head[64];
        snprintf(head, sizeof head, "awq model %d", o.grid);
        return run_model(s, &mo, head, a, r, err);
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

MODE_HANDLERS(awq)

#define CQE_LAYER_ROWS \
    {"steps", OPT_INT, 0, 100000, NULL, "100", NULL, OPT_LOG_ALWAYS, "Adam steps"}, \
    {"lr", OPT_REAL, 0, 1, NULL, "0.001", NULL, OPT_LOG_ALWAYS, "learning rate, times the rms singular value"}, \
    {"band", OPT_INT, 0, 1000, NULL, "1", "B", OPT_LOG_ALWAYS, "band half-width of D (0: diagonal)"}, \
    {"rank", OPT_INT, 0, 1L << 30, NULL, "0", "R", OPT_LOG_ALWAYS, "top singular triplets (0: all)"}, \
    {"window", OPT_INT, 0, 1000, NULL, "2", "K", OPT_LOG_ALWAYS, \
     "model mode: blocks learned jointly (0: the layer scope per linear)"}
enum { CQE_STEPS, CQE_LR, CQE_BAND, CQE_RANK, CQE_WINDOW, CQE_LAYERS };
const opt_spec cqe_opts[] = {CQE_LAYER_ROWS, OPT_END};
/* layers=N applies to window=0 (the sequential scope) only, as before */
static const opt_spec cqe_model_opts[] = {CQE_LAYER_ROWS, LAYERS_OPT, OPT_END};

static int cqe_model(session *s, qsur_cqe_opts o, opt_args *a, report *r, qsur_error *err)
{
    int window = (int)a->v[CQE_WINDOW].i, rc;
    char *canon = opt_log_line("cqe model", a);
    if (!canon)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    if (window > 0) {
        qsur_cqe_cross_opts co = qsur_cqe_cross_default();
        co.layer = o;
        co.window = window;
        rc = model_cqe_cross(s, &co, canon, r, err);
    } else {
        qsur_llama_wquant_opts mo = qsur_llama_wquant_default();
        mo.method = QSUR_MWQ_CQE;
        mo.cqe = o;
        mo.layers = (int)a->v[CQE_LAYERS].i;
        rc = model_wquant(s, &mo, canon, r, err);
    }
    free(canon);
    return rc;
}

static int run_cqe(session *s, int model, opt_args *a, report *r, qsur_error *err)
{
    qsur_cqe_opts o = qsur_cqe_default();
    o.steps = (int)a->v[CQE_STEPS].i;
    o.lr = a->v[CQE_LR].d;
    o.band = (int)a->v[CQE_BAND].i;
    o.rank = a->v[CQE_RANK].i;
    if (a->v[CQE_WINDOW].given && !model)
        return qsur_fail(err, QSUR_ERR_ARG, "window=K (cross-layer learning) needs model mode: `cqe model window=K`");
    if (model)
        return cqe_model(s, o, a, r, err);
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

MODE_HANDLERS(cqe)

/* The `model` sub-command of each method (the parent entries are in command_table.c). */
#define MODEL_SUB(usage, npos, spec, run, args) \
    {{"model", 0, npos, 0, COMPLETE_NONE, NULL, usage, "every linear of the model", NULL, NULL, NULL, spec, run, args}, \
     COMMAND_END}
const command gptq_subs[] = MODEL_SUB("gptq model", 0, gptq_model_opts, cmd_gptq_model, NULL);
const command quantease_subs[] = MODEL_SUB("quantease model [SWEEPS]", 1, quantease_model_opts, cmd_quantease_model,
                                           quantease_args);
const command awq_subs[] = MODEL_SUB("awq model [GRID]", 1, awq_model_opts, cmd_awq_model, awq_args);
const command cqe_subs[] = MODEL_SUB("cqe model", 0, cqe_model_opts, cmd_cqe_model, NULL);
