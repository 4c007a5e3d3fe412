/* Quantize and measure: quant, qsur, error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "commands.h"
#include "layer_state.h"
#include "model_commands.h"
#include "model_state.h"
#include "plot.h"
#include "channel_analysis.h"

/* One option of a quantizer: sym, sym-full, asym, tensor, row|channel|token, gN,
 * clip=R, clip=search, clip-norm=P, clip-grid=N (qsur/quant.h). *set gets the
 * bit of what it sets (symmetry 1, granularity 2, clipping 4, clip norm 8, clip
 * grid 16), so a spec that sets one thing twice ("sym,asym") is refused. */
static int parse_quant_opt(const char *o, qsur_quant_spec *q, int *set, qsur_error *err)
{
    static const char *const known = "sym, sym-full, asym, tensor, row, token, gN, clip=R, clip=search, "
                                     "clip-norm=P, clip-grid=N";
    long g;
    double c;
    int what;
    if (!strcmp(o, "sym") || !strcmp(o, "sym-full") || !strcmp(o, "asym")) {
        q->symmetric = o[0] == 's';
        if (q->symmetric)
            q->full = !strcmp(o, "sym-full");
        what = 1;
    } else if (!strcmp(o, "tensor")) {
        q->gran = QSUR_GRAN_TENSOR;
        what = 2;
    } else if (!strcmp(o, "row") || !strcmp(o, "channel") || !strcmp(o, "token")) {
        q->gran = QSUR_GRAN_ROW;
        what = 2;
    } else if (o[0] == 'g' && o[1] >= '0' && o[1] <= '9') {
        if (parse_long(o + 1, 1, 1 << 20, &g))
            return qsur_fail(err, QSUR_ERR_ARG, "bad value in '%s' (gN: a group of N = 1..%d columns)", o, 1 << 20);
        q->gran = QSUR_GRAN_GROUP;
        q->group = (int)g;
        what = 2;
    } else if (!strncmp(o, "clip-norm=", 10)) {
        if (parse_double(o + 10, 0.5, 16.0, &c))
            return qsur_fail(err, QSUR_ERR_ARG, "bad value in '%s' (clip-norm=P: an error norm P in [0.5, 16])", o);
        q->clip_norm = c;
        what = 8;
    } else if (!strncmp(o, "clip-grid=", 10)) {
        if (parse_long(o + 10, 1, 100, &g))
            return qsur_fail(err, QSUR_ERR_ARG, "bad value in '%s' (clip-grid=N: N = 1..100 ratios)", o);
        q->clip_grid = (int)g;
        what = 16;
    } else if (!strcmp(o, "clip=search")) {
        q->clip_search = 1;
        q->clip = 1.0;
        what = 4;
    } else if (!strncmp(o, "clip=", 5)) {
        if (parse_double(o + 5, 0.01, 1.0, &c))
            return qsur_fail(err, QSUR_ERR_ARG, "bad value in '%s' (clip=R: a ratio R in [0.01, 1], or clip=search)", o);
        q->clip = c;
        q->clip_search = 0;
        what = 4;
    } else {
        return qsur_fail(err, QSUR_ERR_ARG, "unknown quantizer option '%s' (%s)", o, known);
    }
    if (*set & what)
        return qsur_fail(err, QSUR_ERR_ARG, "'%s' sets the %s a second time in one spec", o,
                         what == 1 ? "symmetry" : what == 2 ? "granularity" : what == 4 ? "clipping"
                         : what == 8 ? "clip norm" : "clip grid");
    *set |= what;
    return QSUR_OK;
}

/* Bit widths like w4a8, w4a16kv4, w8, a4. 16 means "not quantized".
 * *kv_named is set when the token names the KV width. */
static int parse_bits(const char *t, qsur_quant_spec *wq, qsur_quant_spec *aq, int *kv, int *kv_named)
{
    const char *p = t;
    int seen = 0;
    while (*p) {
        qsur_quant_spec *q = NULL;
        int *dst = NULL;
        if (p[0] == 'w' || p[0] == 'W')
            q = wq, p++;
        else if (p[0] == 'a' || p[0] == 'A')
            q = aq, p++;
        else if ((p[0] == 'k' || p[0] == 'K') && (p[1] == 'v' || p[1] == 'V'))
            dst = kv, p += 2, *kv_named = 1;
        else
            return -1;
        char *end;
        long b = strtol(p, &end, 10);
        if (end == p || b < 2 || (b > 8 && b != 16))
            return -1;
        if (q)
            q->bits = (int)b;
        else
            *dst = (int)b;
        p = end;
        seen = 1;
    }
    return seen ? 0 : -1;
}

static void show_spec(session *s, report *r)
{
    char wq[96], aq[96];
    qsur_quant_describe(&s->wq, wq, sizeof wq);
    qsur_quant_describe(&s->aq, aq, sizeof aq);
    rep_str(r, "weight", "weight quantizer", wq);
    rep_str(r, "activation", "activation quantizer", aq);
    if (s->aoq.bits > 0) {
        qsur_quant_describe(&s->aoq, aq, sizeof aq);
        rep_str(r, "activation_wo", "wo input quantizer", aq);
    }
    if (s->model || s->online_w2) /* what rotate/ostquant model will do with it */
        rep_str(r, "online_w2", "online w2 Hadamard",
                s->online_w2 ? "on (rotate/ostquant model keep it with float activations too)"
                             : "auto (only with quantized activations)");
}

/* Named quantizer sets (`preset=NAME`): each is a bits word and the specs
 * of w:, a:, ao:, kv:, applied before the words given, so those override it.
 * paper-*: the OSTQuant / QuaRot code's defaults
 * (docs/ostquant.md, "The official protocol"): weights symmetric INT4 on the
 * full grid -8..7 per output channel with that code's clip search (error
 * |.|^2.4, ratios 1.00 .. 0.21); activations asymmetric per token; wo's
 * input asymmetric per head; K (after RoPE and the q/k Hadamard) and V
 * asymmetric per head per token; q is never quantized. */
typedef struct {
    const char *name;
    const char *bits;
    const char *spec[4]; /* in the order of quant_opts' rows Q_W, Q_A, Q_AO, Q_KV */
    int online_w2;       /* the code keeps its online down_proj Hadamard in every
                            configuration (online_hadamard=down), weight-only too */
} quant_preset;

/* in the order of quant_opts' choices */
static const quant_preset presets[] = {
    {"paper-w4a4kv4", "w4a4kv4",
     {"sym-full,row,clip=search,clip-norm=2.4,clip-grid=80", "asym,token,clip=1", "asym,head,clip=1",
      "asym,row,clip=1"}, 1},
    {"paper-w4a16kv16", "w4a16kv16",
     {"sym-full,row,clip=search,clip-norm=2.4,clip-grid=80", "asym,token,clip=1", "same", "asym,row,clip=1"}, 1},
};

/* One comma-separated word of options into q (a copy is cut up). */
static int parse_quant_opts(const char *word, qsur_quant_spec *q, session *s, int ao, qsur_error *err)
{
    char *opts = strdup(word), *save = NULL;
    if (!opts)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    int rc = QSUR_OK, set = 0;
    for (char *o = strtok_r(opts, ",", &save); o && rc == QSUR_OK; o = strtok_r(NULL, ",", &save)) {
        if (ao && !strcmp(o, "same")) {
            q->bits = 0; /* follow a: */
        } else if (ao && !strcmp(o, "head")) {
            if (!s->model)
                rc = qsur_fail(err, QSUR_ERR_ARG, "ao:head needs a model (its head size): `model load` first");
            else
                q->gran = QSUR_GRAN_GROUP, q->group = s->model->cfg.head_size, q->bits = 1;
        } else {
            rc = parse_quant_opt(o, q, &set, err);
            if (ao)
                q->bits = 1; /* own spec from now on; its width is aq's (below) */
        }
    }
    free(opts);
    return rc;
}

/* quant's options: the bit-width words are positional (parse_bits); each
 * quantizer's spec is a key:OPTS row, applied by parse_quant_opts. */
enum { Q_W, Q_A, Q_AO, Q_KV, Q_PRESET, Q_ONLINE_W2 };
const opt_spec quant_opts[] = {
    {"w", OPT_QUANT, 0, 0, NULL, NULL, NULL, OPT_LOG_NEVER, "the weight quantizer's options"},
    {"a", OPT_QUANT, 0, 0, NULL, NULL, NULL, OPT_LOG_NEVER, "the activation quantizer's options"},
    {"ao", OPT_QUANT, 0, 0, NULL, NULL, NULL, OPT_LOG_NEVER,
     "wo's input alone (width of a:), plus head (groups of head_size) and same (back to a:)"},
    {"kv", OPT_QUANT, 0, 0, NULL, NULL, NULL, OPT_LOG_NEVER, "the KV-cache quantizer's options"},
    {"preset", OPT_CHOICE, 0, 0, "paper-w4a4kv4|paper-w4a16kv16", NULL, "NAME", OPT_LOG_GIVEN,
     "a named set of quantizers, before the words given"},
    {"online-w2", OPT_CHOICE, 0, 0, "auto|on", NULL, NULL, OPT_LOG_GIVEN,
     "online Hadamard before w2 in rotate/ostquant model: auto (only with quantized activations) or on"},
    OPT_END};

/* The specs of w:, a:, kv: (the preset's, then the words given) into wq, aq,
 * kvq; the ao: texts, which start from aq as it is after them, into ao. */
static int apply_specs(session *s, const quant_preset *pre, const opt_args *a, qsur_quant_spec *q[3],
                       const char *ao[2], int *nao, qsur_error *err)
{
    static const int row[3] = {Q_W, Q_A, Q_KV};
    for (int k = 0; k < 3; k++) {
        int rc;
        if (pre && (rc = parse_quant_opts(pre->spec[row[k]], q[k], s, 0, err)) != QSUR_OK)
            return rc;
        if (a->v[row[k]].given && (rc = parse_quant_opts(a->v[row[k]].s, q[k], s, 0, err)) != QSUR_OK)
            return rc;
    }
    *nao = 0;
    if (pre)
        ao[(*nao)++] = pre->spec[Q_AO];
    if (a->v[Q_AO].given)
        ao[(*nao)++] = a->v[Q_AO].s;
    return QSUR_OK;
}

int cmd_quant(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    qsur_quant_spec wq = s->wq, aq = s->aq, kvq = s->kvq, aoq = s->aoq;
    int kv = s->kvq.bits, kv_named = 0, bits_token = 0, rc;
    const quant_preset *pre = a->v[Q_PRESET].given ? &presets[a->v[Q_PRESET].i] : NULL;
    const char *words[OPT_MAX_WORDS + 1];
    int nw = 0;
    if (pre)
        words[nw++] = pre->bits;
    for (int i = 0; i < argc && nw <= OPT_MAX_WORDS; i++)
        words[nw++] = argv[i];
    for (int i = 0; i < nw; i++) {
        if (parse_bits(words[i], &wq, &aq, &kv, &kv_named))
            return qsur_fail(err, QSUR_ERR_ARG,
                             "'%s': expected bit widths like w4a8kv4 (2..8, or 16 = float), preset=NAME or "
                             "w:OPTS / a:OPTS / ao:OPTS / kv:OPTS", words[i]);
        bits_token = 1;
    }
    qsur_quant_spec *q[3] = {&wq, &aq, &kvq};
    const char *ao[2];
    int nao;
    if ((rc = apply_specs(s, pre, a, q, ao, &nao, err)) != QSUR_OK)
        return rc;
    if (nao > 0 && aoq.bits == 0)
        aoq = aq;
    for (int i = 0; i < nao; i++)
        if ((rc = parse_quant_opts(ao[i], &aoq, s, 1, err)) != QSUR_OK)
            return rc;
    if (aoq.bits > 0)
        aoq.bits = aq.bits;
    if (aoq.bits > 0 && aoq.bits < 16 && s->model && qsur_quant_validate(&aoq, s->model->cfg.dim, err))
        return QSUR_ERR_ARG;
    /* `quant w4a8` means KV off; `quant w:g128` alone keeps every width. */
    if (bits_token && !kv_named)
        kv = 16;
    kvq.bits = kv;
    layer_state *l = s->current >= 0 ? &s->layers[s->current] : NULL;
    if (l) {
        qsur_error perr;
        layer_view v;
        if (layer_view_get(s, l, 0, &v, &perr) == QSUR_OK) {
            if (qsur_quant_validate(&wq, v.d, err) != QSUR_OK || qsur_quant_validate(&aq, v.d, err) != QSUR_OK)
                return QSUR_ERR_ARG;
        }
    } else {
        if (qsur_quant_validate(&wq, wq.gran == QSUR_GRAN_GROUP ? wq.group : 1, err) != QSUR_OK ||
            qsur_quant_validate(&aq, aq.gran == QSUR_GRAN_GROUP ? aq.group : 1, err) != QSUR_OK)
            return QSUR_ERR_ARG;
    }
    qsur_quant_spec old_w = s->wq, old_a = s->aq, old_kv = s->kvq, old_ao = s->aoq;
    int old_online_w2 = s->online_w2;
    s->wq = wq;
    s->aq = aq;
    s->kvq = kvq;
    s->aoq = aoq;
    if (pre)
        s->online_w2 = pre->online_w2;
    if (a->v[Q_ONLINE_W2].given)
        s->online_w2 = a->v[Q_ONLINE_W2].i == 1;
    /* With a model loaded the same spec quantizes it (weights RTN from the
     * float weights, activations per token, KV per head per token). */
    rc = model_apply_quant(s, r, err);
    if (rc != QSUR_OK) {
        s->wq = old_w, s->aq = old_a, s->kvq = old_kv, s->aoq = old_ao;
        s->online_w2 = old_online_w2;
        return rc;
    }
    show_spec(s, r);
    return QSUR_OK;
}

static void qsur_fields(report *r, const char *prefix, const char *label, const qsur_result *q,
                        const qsur_result *b)
{
    char key[64], lab[96];
    snprintf(key, sizeof key, "%s_log10_qsur", prefix);
    snprintf(lab, sizeof lab, "%s log10 QSUR", label);
    rep_num(r, key, lab, q->log10_qsur, "%.4f");
    snprintf(key, sizeof key, "%s_qsur_per_dim", prefix);
    snprintf(lab, sizeof lab, "%s QSUR^(1/d)", label);
    rep_num(r, key, lab, q->per_dim, "%.6f");
    if (b) {
        snprintf(key, sizeof key, "%s_log10_qsur_base", prefix);
        snprintf(lab, sizeof lab, "%s   before transforms", label);
        rep_num(r, key, lab, b->log10_qsur, "%.4f");
    }
    if (q->singular) {
        snprintf(key, sizeof key, "%s_singular_reason", prefix);
        snprintf(lab, sizeof lab, "%s   QSUR = 0 because", label);
        rep_str(r, key, lab, q->reason);
    }
}

int cmd_qsur(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_metrics cur, base;
    int rc = layer_metrics_compute(s, l, 0, &cur, err);
    if (rc == QSUR_OK)
        rc = layer_metrics_compute(s, l, 1, &base, err);
    if (rc != QSUR_OK)
        return rc;
    int transformed = layer_stack_depth(l) > 0;
    rep_str(r, "layer", "layer", l->name);
    rep_str(r, "cube", "cube", s->set.qsur_asym ? "asym" : "sym");
    rep_num(r, "alpha", "alpha", s->set.qsur_alpha, "%g");
    if (cur.has_x) {
        rep_int(r, "x_dims", "X dims (d)", cur.qx.d);
        qsur_fields(r, "x", "X", &cur.qx, transformed ? &base.qx : NULL);
    }
    if (cur.has_w)
        qsur_fields(r, "w", "W", &cur.qw, transformed ? &base.qw : NULL);
    return QSUR_OK;
}

int cmd_error(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_metrics m;
    int rc = layer_metrics_compute(s, l, 0, &m, err);
    if (rc != QSUR_OK)
        return rc;
    char wq[96], aq[96];
    qsur_quant_describe(&s->wq, wq, sizeof wq);
    qsur_quant_describe(&s->aq, aq, sizeof aq);
    rep_str(r, "layer", "layer", l->name);
    if (m.has_x) {
        rep_str(r, "aquant", "X quantizer", aq);
        rep_num(r, "x_mse", "X MSE", m.ex.mse, "%.6g");
        rep_num(r, "x_rel_fro", "X relative Frobenius", m.ex.rel_fro, "%.6g");
        rep_num(r, "x_sqnr_db", "X SQNR (dB)", m.ex.sqnr_db, "%.3f");
    }
    if (m.has_w) {
        rep_str(r, "wquant", "W quantizer", wq);
        rep_num(r, "w_mse", "W MSE", m.ew.mse, "%.6g");
        rep_num(r, "w_rel_fro", "W relative Frobenius", m.ew.rel_fro, "%.6g");
        rep_num(r, "w_sqnr_db", "W SQNR (dB)", m.ew.sqnr_db, "%.3f");
    }
    if (m.has_x && m.has_w) {
        rep_num(r, "output_error", "layer output error", m.out_err, "%.6g");
        if (m.out_err_tokens < m.qx.n)
            rep_int(r, "output_error_tokens", "  measured on tokens", m.out_err_tokens);
    }
    return QSUR_OK;
}

static void compare_row(report *r, const char *metric, double before, double after, const char *fmt)
{
    rep_cell_str(r, metric);
    rep_cell_num(r, before, fmt);
    rep_cell_num(r, after, fmt);
    rep_cell_num(r, after - before, fmt);
}

int cmd_compare(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_metrics b, a;
    int rc = layer_metrics_compute(s, l, 1, &b, err);
    if (rc == QSUR_OK)
        rc = layer_metrics_compute(s, l, 0, &a, err);
    if (rc != QSUR_OK)
        return rc;
    rep_str(r, "layer", "layer", l->name);
    rep_int(r, "transforms", "transforms on stack", layer_stack_depth(l));
    static const char *const keys[] = {"metric", "before", "after", "change"};
    static const int widths[] = {-18, 12, 12, 12};
    rep_table_begin(r, "metrics", 4, keys, widths);
    if (a.has_x) {
        compare_row(r, "X log10 QSUR", b.qx.log10_qsur, a.qx.log10_qsur, "%.4f");
        compare_row(r, "X QSUR^(1/d)", b.qx.per_dim, a.qx.per_dim, "%.6f");
        compare_row(r, "X SQNR dB", b.ex.sqnr_db, a.ex.sqnr_db, "%.3f");
    }
    if (a.has_w) {
        compare_row(r, "W log10 QSUR", b.qw.log10_qsur, a.qw.log10_qsur, "%.4f");
        compare_row(r, "W QSUR^(1/d)", b.qw.per_dim, a.qw.per_dim, "%.6f");
        compare_row(r, "W SQNR dB", b.ew.sqnr_db, a.ew.sqnr_db, "%.3f");
    }
    if (a.has_x && a.has_w)
        compare_row(r, "output error", b.out_err, a.out_err, "%.6g");
    rep_table_end(r);

    /* The picture: channel absmax before and after, on one scale. */
    layer_view vb, va;
    rc = layer_view_get(s, l, 1, &vb, err);
    if (rc == QSUR_OK)
        rc = layer_view_get(s, l, 0, &va, err);
    if (rc != QSUR_OK)
        return rc;
    int use_w = !va.x || (argc == 1 && !strcmp(argv[0], "w"));
    if (argc == 1 && strcmp(argv[0], "w") && strcmp(argv[0], "x"))
        return qsur_fail(err, QSUR_ERR_ARG, "usage: compare [x|w]");
    if (use_w && !va.w)
        return qsur_fail(err, QSUR_ERR_ARG, "layer %s has no weight", l->name);
    int64_t rows = use_w ? va.m : va.n, d = va.d;
    /* Outliers are judged against each state's own median, as `outliers` does. */
    channel_analysis before, after;
    rc = channel_analysis_run(s, use_w ? vb.w : vb.x, rows, d, s->set.outlier_k, CHANNEL_ABSMAX_ONLY, &before, err);
    if (rc != QSUR_OK)
        return rc;
    rc = channel_analysis_run(s, use_w ? va.w : va.x, rows, d, s->set.outlier_k, CHANNEL_ABSMAX_ONLY, &after, err);
    if (rc == QSUR_OK) {
        plot_style ps = plot_style_for(s);
        plot_lines pl = {0};
        plot_channel_bars_pair(&pl, &ps, before.absmax, after.absmax, d, before.threshold, after.threshold,
                               use_w ? "W channel absmax, before" : "X channel absmax, before",
                               use_w ? "W channel absmax, after" : "X channel absmax, after");
        plot_lines_to_report(&pl, r);
        plot_lines_free(&pl);
        channel_analysis_free(&after);
    }
    channel_analysis_free(&before);
    return rc;
}
