/* Session commands: help, set, run, save, history, echo, quit. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "command.h"
#include "layer_state.h"
#include "commands.h"
#include "qsur/atomic_file.h"
#include "script.h"
#include "session.h"

static void help_line(void *ctx, const char *line)
{
    rep_line(ctx, "  %s", line);
}

int cmd_help(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)s;
    if (argc == 1) {
        const command *c = command_find(argv[0]);
        if (!c)
            return qsur_fail(err, QSUR_ERR_ARG, "no command named '%s' (try `help`)", argv[0]);
        rep_str(r, "name", "command", c->name);
        rep_str(r, "usage", "usage", c->usage);
        rep_str(r, "summary", "summary", c->summary);
        rep_line(r, "%s", "");
        /* Help paragraphs are kept as single strings with \n; show them line by line. */
        const char *p = c->help;
        while (p && *p) {
            const char *nl = strchr(p, '\n');
            int n = nl ? (int)(nl - p) : (int)strlen(p);
            rep_line(r, "  %.*s", n, p);
            p = nl ? nl + 1 : p + n;
        }
        if (c->subs || c->opts) {
            rep_line(r, "%s", "");
            command_each_option_line(c, help_line, r);
        }
        return QSUR_OK;
    }
    static const char *const keys[] = {"command", "summary"};
    static const int widths[] = {-11, -60};
    rep_table_begin(r, "commands", 2, keys, widths);
    for (int i = 0; i < command_count; i++) {
        rep_cell_str(r, command_table[i].name);
        rep_cell_str(r, command_table[i].summary);
    }
    rep_table_end(r);
    rep_line(r, "help NAME shows a command's usage and details.");
    return QSUR_OK;
}

int parse_double(const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double d = strtod(v, &end);
    if (errno || end == v || *end || !(d >= lo && d <= hi))
        return -1;
    *out = d;
    return 0;
}

int parse_long(const char *v, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long d = strtol(v, &end, 10);
    if (errno || end == v || *end || d < lo || d > hi)
        return -1;
    *out = d;
    return 0;
}

static void show_settings(session *s, report *r)
{
    rep_str(r, "format", "format", s->set.format == FORMAT_JSON ? "json" : "human");
    rep_str(r, "errexit", "errexit", s->set.errexit ? "on" : "off");
    rep_str(r, "echo", "echo", s->set.echo ? "on" : "off");
    rep_str(r, "color", "color", s->set.color ? "on" : "off");
    rep_num(r, "outlier_k", "outlier_k", s->set.outlier_k, "%g");
    rep_num(r, "alpha", "alpha (QSUR confidence)", s->set.qsur_alpha, "%g");
    rep_str(r, "cube", "cube (QSUR)", s->set.qsur_asym ? "asym" : "sym");
    rep_str(r, "qsur_method", "qsur_method", qsur_method_name((qsur_method)s->set.qsur_method));
    rep_int(r, "bins", "bins (0 = auto)", s->set.hist_bins);
    if (s->set.error_tokens < 0)
        rep_str(r, "error_tokens", "error_tokens", "auto");
    else if (s->set.error_tokens == 0)
        rep_str(r, "error_tokens", "error_tokens", "all");
    else
        rep_int(r, "error_tokens", "error_tokens", s->set.error_tokens);
    rep_int(r, "seed", "seed (next)", (long long)s->set.seed);
    rep_str(r, "device", "device (ppl, calib, generate, gptq model, quant, rotate model)", s->set.device < 0 ? "auto (gpu when one is usable)"
                                          : s->set.device ? "gpu" : "cpu");
}

/* `set` alone lists the settings; `set KEY VALUE` is a sub-command entry per
 * setting, its VALUE a typed row (so errors, completion and the docs come
 * from the rows). */
int cmd_set(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    if (argc > 0)
        return qsur_fail(err, QSUR_ERR_ARG, "unknown setting '%s' (format, errexit, echo, color, outlier_k, alpha, "
                         "cube, qsur_method, bins, error_tokens, seed, device)", argv[0]);
    show_settings(s, r);
    return QSUR_OK;
}

/* on|off and the words that mean the same: an even index is "on" */
#define ON_OFF "on|off|yes|no|true|false|1|0"
/* the value's row (its help is the sub-command's summary) */
#define SET_ROW(key, type, lo, hi, choices, help) \
    static const char set_##key##_help[] = help; \
    static const opt_spec set_##key##_arg[] = {{#key, type, lo, hi, choices, NULL, NULL, OPT_LOG_NEVER, NULL}, OPT_END}
#define SET_FN(key) static int set_##key(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
#define UNUSED (void)argc, (void)argv, (void)r, (void)err

SET_ROW(format, OPT_CHOICE, 0, 0, "human|json", "human tables, or one JSON object per command");
SET_FN(format)
{
    UNUSED;
    s->set.format = a->arg[0].i ? FORMAT_JSON : FORMAT_HUMAN;
    r->format = s->set.format;
    session_log_as(s, "%s", ""); /* display only: a replay keeps its own format */
    return QSUR_OK;
}

SET_ROW(errexit, OPT_CHOICE, 0, 0, ON_OFF, "scripts stop at the first error (default on)");
SET_FN(errexit)
{
    UNUSED;
    s->set.errexit = a->arg[0].i % 2 == 0;
    return QSUR_OK;
}

SET_ROW(echo, OPT_CHOICE, 0, 0, ON_OFF, "scripts print each command (as `qsur> CMD`) before running it");
SET_FN(echo)
{
    UNUSED;
    s->set.echo = a->arg[0].i % 2 == 0;
    session_log_as(s, "%s", "");
    return QSUR_OK;
}

SET_ROW(color, OPT_CHOICE, 0, 0, ON_OFF, "ANSI colour in plots (never when NO_COLOR is set)");
SET_FN(color)
{
    UNUSED;
    s->set.color = a->arg[0].i % 2 == 0 && !getenv("NO_COLOR");
    session_log_as(s, "%s", "");
    return QSUR_OK;
}

SET_ROW(outlier_k, OPT_REAL, 1, 1e6, NULL, "a channel is an outlier when absmax > K x median absmax (default 8)");
SET_FN(outlier_k)
{
    UNUSED;
    s->set.outlier_k = a->arg[0].d;
    return QSUR_OK;
}

SET_ROW(alpha, OPT_REAL, 1e-6, 1 - 1e-12, NULL, "confidence level of the QSUR ellipsoid (default 0.99)");
SET_FN(alpha)
{
    UNUSED;
    s->set.qsur_alpha = a->arg[0].d;
    return QSUR_OK;
}

SET_ROW(cube, OPT_CHOICE, 0, 0, "sym|asym", "QSUR cube: centred at 0 (sym, default) or spanning [min,max]");
SET_FN(cube)
{
    UNUSED;
    s->set.qsur_asym = (int)a->arg[0].i;
    return QSUR_OK;
}

/* in qsur_method's order: QSUR_METHOD_EIG_DOUBLE, _EIG_FLOAT, _CHOLESKY */
SET_ROW(qsur_method, OPT_CHOICE, 0, 0, "eig-double|eig-float|cholesky",
        "how the original covariance's log-det is found (dsyevd; ssyevd, ~3x faster; dpotrf, fastest)");
SET_FN(qsur_method)
{
    UNUSED;
    static const int methods[] = {QSUR_METHOD_EIG_DOUBLE, QSUR_METHOD_EIG_FLOAT, QSUR_METHOD_CHOLESKY};
    s->set.qsur_method = methods[a->arg[0].i];
    /* Layers remember the log-det of their original covariance; a new method recomputes it. */
    for (int i = 0; i < s->nlayers; i++)
        layer_metrics_forget(&s->layers[i], 1);
    return QSUR_OK;
}

SET_ROW(bins, OPT_INT, 0, 10000, NULL, "histogram bins, 0 = automatic (Freedman-Diaconis)");
SET_FN(bins)
{
    UNUSED;
    s->set.hist_bins = (int)a->arg[0].i;
    return QSUR_OK;
}

/* auto, all or a count: a choice row whose other words are read by the count row */
SET_ROW(error_tokens, OPT_TEXT, 0, 0, NULL,
        "auto|all|N tokens for the layer output error (auto: evenly spaced ones when tokens x in x out > 2^30)");
static const opt_spec error_tokens_count = {"error_tokens", OPT_INT, 1, 1L << 40, NULL, NULL, NULL, OPT_LOG_NEVER, NULL};
SET_FN(error_tokens)
{
    UNUSED;
    const char *v = a->arg[0].s;
    opt_value n;
    if (!strcmp(v, "auto") || !strcmp(v, "all"))
        s->set.error_tokens = v[1] == 'u' ? -1 : 0;
    else if (opt_value_parse(&error_tokens_count, v, &n))
        return qsur_fail(err, QSUR_ERR_ARG, "error_tokens: expected auto, all or a token count >= 1, got '%s'", v);
    else
        s->set.error_tokens = n.i;
    return QSUR_OK;
}

SET_ROW(seed, OPT_INT, 0, 0x7fffffffL, NULL, "next seed for commands given none (they log the seed they used)");
SET_FN(seed)
{
    UNUSED;
    s->set.seed = (unsigned long long)a->arg[0].i;
    return QSUR_OK;
}

SET_ROW(device, OPT_CHOICE, 0, 0, "cpu|gpu|auto", "where ppl, calib, generate, gptq model and quant run: auto = the GPU when usable");
SET_FN(device)
{
    UNUSED;
    s->set.device = a->arg[0].i == 2 ? -1 : (int)a->arg[0].i;
    if (s->set.device == 1 && !session_use_gpu(s)) {
        s->set.device = -1;
        return qsur_fail(err, QSUR_ERR_ARG, "device gpu: no usable GPU (%s)", s->gpu_info.why);
    }
    return QSUR_OK;
}

#define SET_SUB(key, meta) \
    {#key, 1, 1, 0, COMPLETE_NONE, NULL, "set " #key " " meta, set_##key##_help, NULL, NULL, NULL, NULL, set_##key, \
     set_##key##_arg}
/* In the order `set` lists them (the parent entry is in command_table.c). */
const command set_subs[] = {
    SET_SUB(format, "human|json"), SET_SUB(errexit, "on|off"), SET_SUB(echo, "on|off"), SET_SUB(color, "on|off"),
    SET_SUB(outlier_k, "K"), SET_SUB(alpha, "A"), SET_SUB(cube, "sym|asym"),
    SET_SUB(qsur_method, "eig-double|eig-float|cholesky"), SET_SUB(bins, "N"), SET_SUB(error_tokens, "auto|all|N"),
    SET_SUB(seed, "N"), SET_SUB(device, "cpu|gpu|auto"), COMMAND_END};

int cmd_run(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)r;
    return script_run_file(s, argv[0], err);
}

int cmd_save(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    strbuf b = {0};
    strbuf_addf(&b, "# qsur session: %d commands; replay with `qsur -f %s` or `run %s`\n",
                s->log.count, argv[0], argv[0]);
    for (int i = 0; i < s->log.count; i++)
        strbuf_addf(&b, "%s\n", s->log.lines[i]);
    qsur_atomic_file f;
    int rc = qsur_atomic_open(&f, argv[0], err);
    if (rc == QSUR_OK) {
        rc = qsur_atomic_write(&f, b.buf, b.len, err);
        if (rc == QSUR_OK)
            rc = qsur_atomic_commit(&f, err);
        else
            qsur_atomic_abort(&f);
    }
    strbuf_free(&b);
    if (rc == QSUR_OK) {
        rep_str(r, "file", "saved to", argv[0]);
        rep_int(r, "commands", "commands", s->log.count);
    }
    return rc;
}

int cmd_history(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    (void)err;
    static const char *const keys[] = {"n", "command"};
    static const int widths[] = {4, -60};
    rep_table_begin(r, "log", 2, keys, widths);
    for (int i = 0; i < s->log.count; i++) {
        rep_cell_int(r, i + 1);
        rep_cell_str(r, s->log.lines[i]);
    }
    rep_table_end(r);
    return QSUR_OK;
}

int cmd_echo(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)s;
    (void)err;
    strbuf b = {0};
    for (int i = 0; i < argc; i++)
        strbuf_addf(&b, i ? " %s" : "%s", argv[i]);
    rep_line(r, "%s", b.buf ? b.buf : "");
    strbuf_free(&b);
    return QSUR_OK;
}

int cmd_quit(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    (void)argv;
    (void)r;
    (void)err;
    s->quit = 1;
    return QSUR_OK;
}
