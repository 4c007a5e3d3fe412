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

static int parse_seed(session *s, int argc, char **argv, int at, unsigned long long *seed,
                      qsur_error *err)
{
    if (argc > at) {
        long v;
        if (parse_long(argv[at], 0, LONG_MAX, &v))
            return qsur_fail(err, QSUR_ERR_ARG, "expected a seed (integer >= 0), got '%s'", argv[at]);
        *seed = (unsigned long long)v;
    } else {
        *seed = session_next_seed(s);
    }
    return QSUR_OK;
}

/* `rotate model ...` is a sub-command entry (rotate_subs, cmd_model.c's handler). */
const command rotate_subs[] = {
    {"model", 1, 2, 0, COMPLETE_NONE, NULL, "rotate model hadamard [SEED]",
     "QuaRot-style rotation of the whole model", NULL, NULL, NULL, rotate_model_opts, cmd_rotate_model},
    {NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL}};

int cmd_rotate(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    if (argc > 2)
        return qsur_fail(err, QSUR_ERR_ARG, "expected `rotate KIND [SEED]` (or `rotate model hadamard ...`)");
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_view v;
    int rc = layer_view_get(s, l, 0, &v, err);
    if (rc != QSUR_OK)
        return rc;
    const char *kind = argv[0];
    qsur_transform *t = NULL;
    unsigned long long seed = 0;
    if (!strcmp(kind, "hadamard") || !strcmp(kind, "rhadamard")) {
        /* The seed matters even for the plain Hadamard: sizes with no Hadamard
         * matrix (172 = 4 x 43) use a seeded random block, so it is always logged. */
        int randomized = kind[0] == 'r';
        if ((rc = parse_seed(s, argc, argv, 1, &seed, err)) != QSUR_OK)
            return rc;
        rc = qsur_transform_hadamard_new(&t, v.d, randomized, seed, err);
        session_log_as(s, "rotate %s %llu", kind, seed);
    } else if (!strcmp(kind, "random")) {
        if ((rc = parse_seed(s, argc, argv, 1, &seed, err)) != QSUR_OK)
            return rc;
        rc = qsur_transform_random_orthogonal_new(&t, v.d, seed, err);
        session_log_as(s, "rotate random %llu", seed);
    } else if (!strcmp(kind, "pca")) {
        if (argc > 1)
            return qsur_fail(err, QSUR_ERR_ARG, "rotate pca takes no further arguments");
        if (!v.x)
            return qsur_fail(err, QSUR_ERR_ARG, "rotate pca needs activations (layer %s has none)", l->name);
        rc = qsur_transform_pca_new(&t, v.x, v.n, v.d, &s->progress, err);
    } else {
        return qsur_fail(err, QSUR_ERR_ARG, "unknown rotation '%s' (hadamard, rhadamard, random, pca)", kind);
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

int cmd_scale(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_view v;
    int rc = layer_view_get(s, l, 0, &v, err);
    if (rc != QSUR_OK)
        return rc;
    qsur_transform *t = NULL;
    if (!strcmp(argv[0], "smooth")) {
        double alpha = 0.5;
        if (argc > 1 && parse_double(argv[1], 0.0, 1.0, &alpha))
            return qsur_fail(err, QSUR_ERR_ARG, "smooth: expected alpha in [0,1], got '%s'", argv[1]);
        if (!v.x || !v.w)
            return qsur_fail(err, QSUR_ERR_ARG, "scale smooth needs both activations and a weight (layer %s)", l->name);
        rc = qsur_transform_smoothquant_new(&t, v.x, v.n, v.w, v.m, v.d, alpha, err);
        session_log_as(s, "scale smooth %.17g", alpha);
    } else if (!strcmp(argv[0], "file")) {
        if (argc != 2)
            return qsur_fail(err, QSUR_ERR_ARG, "expected `scale file FILE`");
        float *vec = NULL;
        rc = load_scale_vector(argv[1], v.d, &vec, err);
        if (rc == QSUR_OK)
            rc = qsur_transform_scale_new(&t, vec, v.d, argv[1], err);
        free(vec);
        char abs[PATH_MAX];
        session_log_as(s, "scale file \"%s\"", realpath(argv[1], abs) ? abs : argv[1]);
    } else {
        return qsur_fail(err, QSUR_ERR_ARG, "unknown scaling '%s' (smooth [ALPHA], file FILE)", argv[0]);
    }
    if (rc != QSUR_OK)
        return rc;
    rep_str(r, "step", "applied", t->desc);
    rep_num(r, "log_det", "sum ln s", t->log_det, "%.6g");
    rc = layer_transform_push(s, l, t, err);
    if (rc != QSUR_OK)
        return rc;
    return report_state(s, l, r, err);
}

static int stack_op(session *s, report *r, qsur_error *err, int op)
{
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    int rc = QSUR_OK;
    if (!l->stack) {
        if (op != 2)
            return qsur_fail(err, QSUR_ERR_ARG, "nothing to %s: layer %s has no transforms",
                             op == 0 ? "undo" : "redo", l->name);
    } else if (op == 0) {
        rc = qsur_stack_undo(l->stack, err);
    } else if (op == 1) {
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
    return stack_op(s, r, err, 0);
}

int cmd_redo(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    return stack_op(s, r, err, 1);
}

int cmd_reset(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    return stack_op(s, r, err, 2);
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
