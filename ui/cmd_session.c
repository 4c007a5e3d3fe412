/* Session commands: help, set, run, save, history, echo, quit. */
#include <ctype.h>
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

static int parse_on_off(const char *v, int *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "1") || !strcmp(v, "yes") || !strcmp(v, "true"))
        return *out = 1, 0;
    if (!strcmp(v, "off") || !strcmp(v, "0") || !strcmp(v, "no") || !strcmp(v, "false"))
        return *out = 0, 0;
    return -1;
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

/* 1 when usage names the option key (the word up to and including '='), as
 * a whole word: "seqs=" must not match inside "max_seqs=". */
static int usage_has_key(const char *usage, const char *word)
{
    const char *eq = strchr(word, '=');
    if (!eq)
        return 0;
    size_t k = (size_t)(eq - word) + 1;
    for (const char *p = usage; *p; p++) {
        if (strncmp(p, word, k))
            continue;
        char before = p == usage ? ' ' : p[-1];
        if (!isalnum((unsigned char)before) && before != '_' && before != '-')
            return 1;
    }
    return 0;
}

int option_fail(qsur_error *err, const char *word, const char *usage)
{
    if (usage_has_key(usage, word))
        return qsur_fail(err, QSUR_ERR_ARG, "bad value in '%s' (%s)", word, usage);
    return qsur_fail(err, QSUR_ERR_ARG, "unknown option '%s' (%s)", word, usage);
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
    rep_str(r, "device", "device (ppl, calib, generate, gptq model, quant)", s->set.device < 0 ? "auto (gpu when one is usable)"
                                          : s->set.device ? "gpu" : "cpu");
}

int cmd_set(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    if (argc == 0) {
        show_settings(s, r);
        return QSUR_OK;
    }
    if (argc != 2)
        return qsur_fail(err, QSUR_ERR_ARG, "expected `set KEY VALUE` (or `set` to list)");
    const char *k = argv[0], *v = argv[1];
    double d;
    long l;
    int b;
    if (!strcmp(k, "format")) {
        if (!strcmp(v, "json"))
            s->set.format = FORMAT_JSON;
        else if (!strcmp(v, "human"))
            s->set.format = FORMAT_HUMAN;
        else
            return qsur_fail(err, QSUR_ERR_ARG, "format: expected human or json, got '%s'", v);
        r->format = s->set.format;
        session_log_as(s, "%s", ""); /* display only: a replay keeps its own format */
    } else if (!strcmp(k, "errexit")) {
        if (parse_on_off(v, &b))
            return qsur_fail(err, QSUR_ERR_ARG, "errexit: expected on or off, got '%s'", v);
        s->set.errexit = b;
    } else if (!strcmp(k, "echo")) {
        if (parse_on_off(v, &b))
            return qsur_fail(err, QSUR_ERR_ARG, "echo: expected on or off, got '%s'", v);
        s->set.echo = b;
        session_log_as(s, "%s", "");
    } else if (!strcmp(k, "color")) {
        if (parse_on_off(v, &b))
            return qsur_fail(err, QSUR_ERR_ARG, "color: expected on or off, got '%s'", v);
        s->set.color = b && !getenv("NO_COLOR");
        session_log_as(s, "%s", "");
    } else if (!strcmp(k, "outlier_k")) {
        if (parse_double(v, 1.0, 1e6, &d))
            return qsur_fail(err, QSUR_ERR_ARG, "outlier_k: expected a number >= 1, got '%s'", v);
        s->set.outlier_k = d;
    } else if (!strcmp(k, "alpha")) {
        if (parse_double(v, 1e-6, 1 - 1e-12, &d))
            return qsur_fail(err, QSUR_ERR_ARG, "alpha: expected a confidence level in (0,1), got '%s'", v);
        s->set.qsur_alpha = d;
    } else if (!strcmp(k, "cube")) {
        if (strcmp(v, "sym") && strcmp(v, "asym"))
            return qsur_fail(err, QSUR_ERR_ARG, "cube: expected sym or asym, got '%s'", v);
        s->set.qsur_asym = !strcmp(v, "asym");
    } else if (!strcmp(k, "qsur_method")) {
        int m = !strcmp(v, "eig-double") ? QSUR_METHOD_EIG_DOUBLE
              : !strcmp(v, "eig-float")  ? QSUR_METHOD_EIG_FLOAT
              : !strcmp(v, "cholesky")   ? QSUR_METHOD_CHOLESKY : -1;
        if (m < 0)
            return qsur_fail(err, QSUR_ERR_ARG, "qsur_method: expected eig-double, eig-float or cholesky, got '%s'", v);
        s->set.qsur_method = m;
        /* Layers remember the log-det of their original covariance; a new method recomputes it. */
        for (int i = 0; i < s->nlayers; i++)
            layer_metrics_forget(&s->layers[i], 1);
    } else if (!strcmp(k, "bins")) {
        if (parse_long(v, 0, 10000, &l))
            return qsur_fail(err, QSUR_ERR_ARG, "bins: expected 0 (auto) .. 10000, got '%s'", v);
        s->set.hist_bins = (int)l;
    } else if (!strcmp(k, "error_tokens")) {
        if (!strcmp(v, "auto"))
            s->set.error_tokens = -1;
        else if (!strcmp(v, "all"))
            s->set.error_tokens = 0;
        else if (parse_long(v, 1, 1L << 40, &l))
            return qsur_fail(err, QSUR_ERR_ARG, "error_tokens: expected auto, all or a token count >= 1, got '%s'", v);
        else
            s->set.error_tokens = l;
    } else if (!strcmp(k, "seed")) {
        if (parse_long(v, 0, 0x7fffffffL, &l))
            return qsur_fail(err, QSUR_ERR_ARG, "seed: expected an integer >= 0, got '%s'", v);
        s->set.seed = (unsigned long long)l;
    } else if (!strcmp(k, "device")) {
        if (!strcmp(v, "cpu")) {
            s->set.device = 0;
        } else if (!strcmp(v, "gpu")) {
            s->set.device = 1;
            if (!session_use_gpu(s)) {
                s->set.device = -1;
                return qsur_fail(err, QSUR_ERR_ARG, "device gpu: no usable GPU (%s)", s->gpu_info.why);
            }
        } else if (!strcmp(v, "auto")) {
            s->set.device = -1;
        } else {
            return qsur_fail(err, QSUR_ERR_ARG, "device: expected cpu, gpu or auto, got '%s'", v);
        }
    } else {
        return qsur_fail(err, QSUR_ERR_ARG,
                         "unknown setting '%s' (format, errexit, echo, color, outlier_k, alpha, cube, qsur_method, bins, error_tokens, seed, device)", k);
    }
    return QSUR_OK;
}

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
