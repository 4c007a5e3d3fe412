/* Transform: rotate, scale, undo, redo, reset, stack. Every change reports the
 * new QSUR and the equivalence error, so a user sees at once that the pair
 * left X W^T alone and what it did to the distribution. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "commands.h"
#include "layer_transform.h"
#include "model_commands.h"
#include "model_state.h"
#include "qsur/loader.h"

/* The numbers shown after any change of the stack. */
static int report_state(session *s, layer_state *l, report *r, qsur_error *err)
{
    layer_metrics m;
    int rc = layer_metrics_compute(s, l, 0, &m, err);
    if (rc != QSUR_OK)
        return rc;
    double eq;
    rc = layer_transform_equivalence(s, l, &eq, err);
    if (rc != QSUR_OK)
        return rc;
    rep_int(r, "depth", "transforms on stack", layer_transform_depth(l));
    if (m.has_x)
        rep_num(r, "x_log10_qsur", "X log10 QSUR", m.qx.log10_qsur, "%.4f");
    if (m.has_w)
        rep_num(r, "w_log10_qsur", "W log10 QSUR", m.qw.log10_qsur, "%.4f");
    if (m.has_x && m.has_w) {
        rep_num(r, "output_error", "layer output error", m.out_err, "%.6g");
        if (m.out_err_tokens < m.qx.n)
            rep_int(r, "output_error_tokens", "  measured on tokens", m.out_err_tokens);
        rep_num(r, "equivalence_error", "equivalence error", eq, "%.3g");
    }
    return QSUR_OK;
}

/* `rotate model ...` is a sub-command entry (rotate_subs, cmd_model.c's handler). */
const command rotate_subs[] = {
    {"model", 1, 2, 0, COMPLETE_NONE, NULL, "rotate model hadamard [SEED]",
     "QuaRot-style rotation of the whole model", NULL, NULL, NULL, rotate_model_opts, cmd_rotate_model,
     rotate_model_args},
    COMMAND_END};

enum { ROT_HADAMARD, ROT_RHADAMARD, ROT_RANDOM, ROT_PCA };
const opt_spec rotate_args[] = {
    {"KIND", OPT_CHOICE, 0, 0, "hadamard|rhadamard|random|pca", NULL, NULL, OPT_LOG_NEVER, "the rotation"},
    {"SEED", OPT_INT, 0, OPT_NO_MAX, NULL, NULL, NULL, OPT_LOG_NEVER, "its seed (default: the session's next)"},
    OPT_END};

int cmd_rotate(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc;
    long kind_i = a->arg[0].i;
    if (kind_i == ROT_PCA && a->arg[1].given)
        return qsur_fail(err, QSUR_ERR_ARG, "rotate pca takes no further arguments");
    /* drawn only when used (pca takes none), as before */
    unsigned long long seed = kind_i == ROT_PCA ? 0 : a->arg[1].given ? (unsigned long long)a->arg[1].i
                                                                      : session_next_seed(s);
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_view v;
    int rc = layer_view_get(s, l, 0, &v, err);
    if (rc != QSUR_OK)
        return rc;
    const char *kind = argv[0];
    qsur_transform *t = NULL;
    if (kind_i == ROT_HADAMARD || kind_i == ROT_RHADAMARD) {
        /* The seed matters even for the plain Hadamard: sizes with no Hadamard
         * matrix (172 = 4 x 43) use a seeded random block, so it is always logged. */
        rc = qsur_transform_hadamard_new(&t, v.d, kind_i == ROT_RHADAMARD, seed, err);
        session_log_as(s, "rotate %s %llu", kind, seed);
    } else if (kind_i == ROT_RANDOM) {
        rc = qsur_transform_random_orthogonal_new(&t, v.d, seed, err);
        session_log_as(s, "rotate random %llu", seed);
    } else {
        if (!v.x)
            return qsur_fail(err, QSUR_ERR_ARG, "rotate pca needs activations (layer %s has none)", l->name);
        rc = qsur_transform_pca_new(&t, v.x, v.n, v.d, &s->progress, err);
    }
    if (rc != QSUR_OK)
        return rc;
    rep_str(r, "step", "applied", t->desc);
    rc = layer_transform_push(s, l, t, err);
    if (rc != QSUR_OK)
        return rc;
    return report_state(s, l, r, err);
}

/* A scaling vector from a file: one tensor with exactly d positive entries. */
static int load_scale_vector(const char *path, int64_t d, float **out, qsur_error *err)
{
    qsur_workspace tmp;
    qsur_workspace_init(&tmp);
    int n = qsur_load_file(&tmp, path, NULL, NULL, err);
    if (n < 0)
        return -n;
    int rc = QSUR_OK;
    if (n != 1 || qsur_tensor_numel(tmp.items[0]) != d) {
        rc = qsur_fail(err, QSUR_ERR_ARG, "%s: expected one tensor of %lld scales, found %d tensor(s) of %lld values",
                       path, (long long)d, n, (long long)qsur_tensor_numel(tmp.items[0]));
    } else {
        *out = malloc((size_t)d * sizeof **out);
        if (!*out)
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
        else
            memcpy(*out, tmp.items[0]->data, (size_t)d * sizeof **out);
    }
    qsur_workspace_clear(&tmp);
    return rc;
}

/* The end of both scalings: push t (made by the caller, rc its status). */
static int scale_push(session *s, layer_state *l, qsur_transform *t, int rc, report *r, qsur_error *err)
{
    if (rc != QSUR_OK)
        return rc;
    rep_str(r, "step", "applied", t->desc);
    rep_num(r, "log_det", "sum ln s", t->log_det, "%.6g");
    rc = layer_transform_push(s, l, t, err);
    if (rc != QSUR_OK)
        return rc;
    return report_state(s, l, r, err);
}

static const opt_spec smooth_args[] = {
    {"ALPHA", OPT_REAL, 0, 1, NULL, "0.5", NULL, OPT_LOG_NEVER, "migration strength"}, OPT_END};

static int scale_smooth(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc, (void)argv;
    layer_view v;
    layer_state *l = session_layer(s, err);
    int rc = l ? layer_view_get(s, l, 0, &v, err) : QSUR_ERR_ARG;
    if (rc != QSUR_OK)
        return rc;
    double alpha = a->arg[0].d;
    if (!v.x || !v.w)
        return qsur_fail(err, QSUR_ERR_ARG, "scale smooth needs both activations and a weight (layer %s)", l->name);
    qsur_transform *t = NULL;
    rc = qsur_transform_smoothquant_new(&t, v.x, v.n, v.w, v.m, v.d, alpha, err);
    session_log_as(s, "scale smooth %.17g", alpha);
    return scale_push(s, l, t, rc, r, err);
}

static const opt_spec file_args[] = {
    {"FILE", OPT_FILE, 0, 0, NULL, NULL, NULL, OPT_LOG_NEVER, ".npy/.safetensors with one tensor of d positive values"},
    OPT_END};

static int scale_file(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc, (void)argv;
    layer_view v;
    layer_state *l = session_layer(s, err);
    int rc = l ? layer_view_get(s, l, 0, &v, err) : QSUR_ERR_ARG;
    if (rc != QSUR_OK)
        return rc;
    const char *path = a->arg[0].s;
    float *vec = NULL;
    qsur_transform *t = NULL;
    rc = load_scale_vector(path, v.d, &vec, err);
    if (rc == QSUR_OK)
        rc = qsur_transform_scale_new(&t, vec, v.d, path, err);
    free(vec);
    char abs[PATH_MAX];
    session_log_as(s, "scale file \"%s\"", realpath(path, abs) ? abs : path);
    return scale_push(s, l, t, rc, r, err);
}

/* The sub-commands of `scale` (the parent entry is in command_table.c). */
const command scale_subs[] = {
    {"smooth", 0, 1, 0, COMPLETE_NONE, NULL, "scale smooth [ALPHA]", "SmoothQuant scales from X and W", NULL, NULL,
     NULL, NULL, scale_smooth, smooth_args},
    {"file", 1, 1, 0, COMPLETE_FILE, NULL, "scale file FILE", "scales from a file", NULL, NULL, NULL, NULL,
     scale_file, file_args},
    COMMAND_END};

typedef enum { STACK_UNDO, STACK_REDO, STACK_RESET } stack_op_kind;

static int stack_op(session *s, report *r, qsur_error *err, stack_op_kind op)
{
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    int rc = QSUR_OK;
    if (!l->stack) {
        if (op != STACK_RESET)
            return qsur_fail(err, QSUR_ERR_ARG, "nothing to %s: layer %s has no transforms",
                             op == STACK_UNDO ? "undo" : "redo", l->name);
    } else if (op == STACK_UNDO) {
        rc = qsur_stack_undo(l->stack, err);
    } else if (op == STACK_REDO) {
        rc = qsur_stack_redo(l->stack, err);
    } else {
        rep_int(r, "undone", "steps undone", qsur_stack_reset(l->stack));
    }
    if (rc != QSUR_OK)
        return rc;
    return report_state(s, l, r, err);
}

int cmd_undo(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    return stack_op(s, r, err, STACK_UNDO);
}

int cmd_redo(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    return stack_op(s, r, err, STACK_REDO);
}

int cmd_reset(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    return stack_op(s, r, err, STACK_RESET);
}

int cmd_stack(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    rep_str(r, "layer", "layer", l->name);
    if (!l->stack) {
        rep_int(r, "depth", "transforms on stack", 0);
        return QSUR_OK;
    }
    rep_int(r, "depth", "transforms on stack", qsur_stack_depth(l->stack));
    rep_int(r, "redo", "undone (redo-able)", qsur_stack_redo_depth(l->stack));
    rep_num(r, "log_det", "cumulative sum ln s", qsur_stack_log_det(l->stack), "%.6g");
    rep_num(r, "megabytes", "snapshot memory (MB)", (double)qsur_stack_bytes(l->stack) / 1e6, "%.2f");
    char buf[8192];
    qsur_stack_describe(l->stack, buf, sizeof buf);
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        rep_line(r, "%s", line);
    return QSUR_OK;
}
