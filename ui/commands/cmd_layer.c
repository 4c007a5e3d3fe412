/* Load and look: load, layers, use, info, stats, outliers, hist. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "commands.h"
#include "channel_analysis.h"
#include "layer_state.h"
#include "plot.h"
#include "qsur/llama.h"
#include "qsur/loader.h"
#include "qsur/stats.h"

int cmd_load(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    const char *prefix = argc > 1 ? argv[1] : NULL;
    int before = s->ws.count;
    int n = qsur_load_file(&s->ws, argv[0], prefix, &s->progress, err);
    if (n < 0)
        return -n;
    session_drop_stale_layers(s);
    /* Log an absolute path so the saved script replays from any directory. */
    char abs[PATH_MAX];
    const char *path = realpath(argv[0], abs) ? abs : argv[0];
    if (prefix)
        session_log_as(s, "load \"%s\" \"%s\"", path, prefix);
    else
        session_log_as(s, "load \"%s\"", path);
    rep_str(r, "file", "loaded", argv[0]);
    rep_int(r, "tensors", "tensors", n);
    rep_int(r, "new", "new names", s->ws.count - before);
    return QSUR_OK;
}

int cmd_layers(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    (void)err;
    static const char *const keys[] = {"name", "shape", "selected"};
    static const int widths[] = {-40, -14, 8};
    rep_table_begin(r, "tensors", 3, keys, widths);
    layer_state *cur = s->current >= 0 ? &s->layers[s->current] : NULL;
    for (int i = 0; i < s->ws.count; i++) {
        const qsur_tensor *t = s->ws.items[i];
        char shape[64];
        qsur_tensor_shape_str(t, shape, sizeof shape);
        const char *sel = "";
        if (cur && !strcmp(cur->w_name, t->name))
            sel = "W";
        else if (cur && !strcmp(cur->x_name, t->name))
            sel = "X";
        rep_cell_str(r, t->name);
        rep_cell_str(r, shape);
        rep_cell_str(r, sel);
    }
    rep_table_end(r);
    return QSUR_OK;
}

int cmd_use(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    const char *w = NULL, *x = NULL;
    if (!strcmp(argv[0], "-x")) {
        if (argc != 2)
            return qsur_fail(err, QSUR_ERR_ARG, "expected `use -x ACTIVATION`");
        x = argv[1];
    } else {
        w = argv[0];
        x = argc > 1 ? argv[1] : NULL;
    }
    /* One model weight whose captured input is present (`calib`): pair them. */
    char in[QSUR_NAME_MAX];
    if (w && !x && qsur_llama_input_of(w, in, sizeof in) && qsur_workspace_find(&s->ws, in))
        x = in;
    int rc = session_use_layer(s, w, x, err);
    if (rc != QSUR_OK)
        return rc;
    layer_state *l = &s->layers[s->current];
    rep_str(r, "layer", "layer", l->name);
    rep_str(r, "weight", "weight (W)", l->w_name[0] ? l->w_name : "-");
    rep_str(r, "activation", "activation (X)", l->x_name[0] ? l->x_name : "-");
    rep_int(r, "transforms", "transforms on stack", layer_stack_depth(l));
    return QSUR_OK;
}

int cmd_info(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_view v;
    int rc = layer_view_get(s, l, 0, &v, err);
    if (rc != QSUR_OK)
        return rc;
    char wq[96], aq[96];
    qsur_quant_describe(&s->wq, wq, sizeof wq);
    qsur_quant_describe(&s->aq, aq, sizeof aq);
    rep_str(r, "layer", "layer", l->name);
    rep_str(r, "weight", "weight (W)", l->w_name[0] ? l->w_name : "-");
    if (v.w) {
        rep_int(r, "out", "  out channels", v.m);
        rep_int(r, "in", "  in channels", v.d);
    }
    rep_str(r, "activation", "activation (X)", l->x_name[0] ? l->x_name : "-");
    if (v.x) {
        rep_int(r, "tokens", "  tokens", v.n);
        rep_int(r, "channels", "  channels", v.d);
    }
    rep_str(r, "wquant", "weight quantizer", wq);
    rep_str(r, "aquant", "activation quantizer", aq);
    rep_int(r, "transforms", "transforms on stack", layer_stack_depth(l));
    return QSUR_OK;
}

/* Which matrix of the current layer a command looks at: `x` or `w`, defaulting
 * to the activations when the layer has them (that is where outliers live).
 * stats/outliers/heatmap/hist check their positional words here and in the
 * handlers, not with typed rows (command.args): the first word is optional
 * and a CHANNEL's range is the chosen matrix's width, which no static row
 * can state. */
static int pick_side(session *s, int *argc, char ***argv, const float **a, int64_t *rows, int64_t *cols,
              const char **which, qsur_error *err)
{
    /* Set on every path: GCC -O3 cannot see that callers read them only on success. */
    *a = NULL;
    *rows = *cols = 0;
    *which = "";
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_view v;
    int rc = layer_view_get(s, l, 0, &v, err);
    if (rc != QSUR_OK)
        return rc;
    int want_w = !v.x;
    if (*argc > 0 && (!strcmp((*argv)[0], "x") || !strcmp((*argv)[0], "w"))) {
        want_w = (*argv)[0][0] == 'w';
        (*argc)--;
        (*argv)++;
    }
    if (want_w && !v.w)
        return qsur_fail(err, QSUR_ERR_ARG, "layer %s has no weight", l->name);
    if (!want_w && !v.x)
        return qsur_fail(err, QSUR_ERR_ARG, "layer %s has no activations", l->name);
    *a = want_w ? v.w : v.x;
    *rows = want_w ? v.m : v.n;
    *cols = v.d;
    *which = want_w ? l->w_name : l->x_name;
    return QSUR_OK;
}

static void stat_row(report *r, int64_t j, const qsur_channel_stat *c)
{
    rep_cell_int(r, j);
    rep_cell_num(r, c->min, "%.4g");
    rep_cell_num(r, c->max, "%.4g");
    rep_cell_num(r, c->absmax, "%.4g");
    rep_cell_num(r, c->mean, "%.4g");
    rep_cell_num(r, c->std, "%.4g");
    rep_cell_num(r, c->kurtosis, "%.3g");
}

int cmd_stats(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    const float *a;
    int64_t rows, cols;
    const char *which;
    int rc = pick_side(s, &argc, &argv, &a, &rows, &cols, &which, err);
    if (rc != QSUR_OK)
        return rc;
    long topk = 10, channel = -1;
    if (argc == 2 && !strcmp(argv[0], "top")) {
        if (parse_long(argv[1], 1, 1000000, &topk))
            return qsur_fail(err, QSUR_ERR_ARG, "top: expected a count >= 1, got '%s'", argv[1]);
    } else if (argc == 1) {
        if (parse_long(argv[0], 0, (long)cols - 1, &channel))
            return qsur_fail(err, QSUR_ERR_ARG, "expected a channel 0..%lld or `top K`, got '%s'",
                             (long long)cols - 1, argv[0]);
    } else if (argc != 0) {
        return qsur_fail(err, QSUR_ERR_ARG, "usage: stats [x|w] [CHANNEL | top K]");
    }
    channel_analysis ca;
    rc = channel_analysis_run(s, a, rows, cols, s->set.outlier_k, CHANNEL_FULL_STATS, &ca, err);
    if (rc != QSUR_OK)
        return rc;
    rep_str(r, "tensor", "tensor", which);
    rep_int(r, "rows", "rows", rows);
    rep_int(r, "channels", "channels", cols);
    rep_num(r, "median_absmax", "median channel absmax", ca.median, "%.4g");
    rep_int(r, "outliers", "outlier channels", ca.nout);
    rep_num(r, "outlier_k", "  (absmax > k x median, k)", s->set.outlier_k, "%g");
    static const char *const keys[] = {"channel", "min", "max", "absmax", "mean", "std", "kurtosis"};
    static const int widths[] = {7, 10, 10, 10, 10, 10, 9};
    rep_table_begin(r, "channels", 7, keys, widths);
    if (channel >= 0) {
        stat_row(r, channel, &ca.st[channel]);
    } else {
        int64_t k = qsur_topk_absmax(ca.st, cols, topk, ca.idx);
        for (int64_t i = 0; i < k; i++)
            stat_row(r, ca.idx[i], &ca.st[ca.idx[i]]);
    }
    rep_table_end(r);
    channel_analysis_free(&ca);
    return QSUR_OK;
}

int cmd_outliers(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    const float *a;
    int64_t rows, cols;
    const char *which;
    int rc = pick_side(s, &argc, &argv, &a, &rows, &cols, &which, err);
    if (rc != QSUR_OK)
        return rc;
    double k = s->set.outlier_k;
    if (argc == 1 && parse_double(argv[0], 1.0, 1e6, &k))
        return qsur_fail(err, QSUR_ERR_ARG, "expected a threshold K >= 1, got '%s'", argv[0]);
    if (argc > 1)
        return qsur_fail(err, QSUR_ERR_ARG, "usage: outliers [x|w] [K]");
    channel_analysis ca;
    rc = channel_analysis_run(s, a, rows, cols, k, CHANNEL_ABSMAX_ONLY, &ca, err);
    if (rc != QSUR_OK)
        return rc;
    rep_str(r, "tensor", "tensor", which);
    rep_num(r, "k", "threshold k", k, "%g");
    rep_num(r, "median_absmax", "median channel absmax", ca.median, "%.4g");
    rep_int(r, "count", "outlier channels", ca.nout);
    static const char *const keys[] = {"channel", "absmax", "ratio"};
    static const int widths[] = {7, 10, 8};
    rep_table_begin(r, "outliers", 3, keys, widths);
    for (int64_t i = 0; i < ca.nout; i++) {
        rep_cell_int(r, ca.idx[i]);
        rep_cell_num(r, ca.absmax[ca.idx[i]], "%.4g");
        rep_cell_num(r, ca.median > 0 ? ca.absmax[ca.idx[i]] / ca.median : INFINITY, "%.1fx");
    }
    rep_table_end(r);
    plot_style ps = plot_style_for(s);
    plot_lines pl = {0};
    char title[QSUR_NAME_MAX + 64];
    snprintf(title, sizeof title, "%s: channel absmax ('!' = outlier, > %g x median)", which, k);
    plot_channel_bars(&pl, &ps, ca.absmax, cols, ca.threshold, 0, title);
    plot_lines_to_report(&pl, r);
    plot_lines_free(&pl);
    channel_analysis_free(&ca);
    return QSUR_OK;
}

int cmd_heatmap(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    const float *a;
    int64_t rows, cols;
    const char *which;
    int rc = pick_side(s, &argc, &argv, &a, &rows, &cols, &which, err);
    if (rc != QSUR_OK)
        return rc;
    if (argc > 0)
        return qsur_fail(err, QSUR_ERR_ARG, "usage: heatmap [x|w]");
    rep_str(r, "tensor", "tensor", which);
    rep_int(r, "rows", "rows", rows);
    rep_int(r, "channels", "channels", cols);
    plot_style ps = plot_style_for(s);
    plot_lines pl = {0};
    plot_heatmap(&pl, &ps, a, rows, cols);
    plot_lines_to_report(&pl, r);
    plot_lines_free(&pl);
    return QSUR_OK;
}

int cmd_hist(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    const float *a;
    int64_t rows, cols;
    const char *which;
    int rc = pick_side(s, &argc, &argv, &a, &rows, &cols, &which, err);
    if (rc != QSUR_OK)
        return rc;
    long channel = -1, bins = s->set.hist_bins;
    if (argc >= 1 && strcmp(argv[0], "all") &&
        parse_long(argv[0], 0, (long)cols - 1, &channel))
        return qsur_fail(err, QSUR_ERR_ARG, "expected a channel 0..%lld or `all`, got '%s'",
                         (long long)cols - 1, argv[0]);
    if (argc >= 2 && parse_long(argv[1], 1, QSUR_HIST_MAX_BINS, &bins))
        return qsur_fail(err, QSUR_ERR_ARG, "expected 1..%d bins, got '%s'", QSUR_HIST_MAX_BINS, argv[1]);
    if (argc > 2)
        return qsur_fail(err, QSUR_ERR_ARG, "usage: hist [x|w] [CHANNEL|all] [BINS]");
    qsur_hist *h;
    rc = qsur_hist_new(&h, a, rows, cols, channel, (int)bins, err);
    if (rc != QSUR_OK)
        return rc;
    rep_str(r, "tensor", "tensor", which);
    if (channel >= 0)
        rep_int(r, "channel", "channel", channel);
    rep_int(r, "n", "values", h->n);
    rep_int(r, "bins", "bins", h->nbins);
    rep_str(r, "rule", "bin rule", h->rule == QSUR_BINS_FIXED ? "fixed"
                                   : h->rule == QSUR_BINS_STURGES ? "sturges" : "freedman-diaconis");
    rep_json_nums(r, "edges", h->edges, h->nbins + 1);
    rep_json_ints(r, "counts", h->counts, h->nbins);
    plot_style st = plot_style_for(s);
    plot_lines pl = {0};
    char title[QSUR_NAME_MAX + 64];
    if (channel >= 0)
        snprintf(title, sizeof title, "%s channel %ld", which, channel);
    else
        snprintf(title, sizeof title, "%s (all values)", which);
    plot_hist_v(&pl, &st, h->counts, h->nbins, h->lo, h->hi, 0, title);
    plot_lines_to_report(&pl, r);
    plot_lines_free(&pl);
    qsur_hist_free(h);
    return QSUR_OK;
}
