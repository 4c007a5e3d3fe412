/* Dispatch: tokenize a line, find the command, check arity, run, log. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include "command.h"
#include "progress_line.h"
#include "session.h"
#include "text_escape.h"

#define MAX_WORDS 64

const command *command_find(const char *name)
{
    for (int i = 0; i < command_count; i++)
        if (strcmp(command_table[i].name, name) == 0)
            return &command_table[i];
    return NULL;
}

int command_tokenize(char *buf, char **argv, int max_words, qsur_error *err)
{
    int argc = 0;
    char *in = buf, *out = buf;
    while (*in) {
        while (*in == ' ' || *in == '\t' || *in == '\n' || *in == '\r')
            in++;
        if (!*in)
            break;
        if (argc == max_words)
            return qsur_fail(err, QSUR_ERR_ARG, "too many words (at most %d)", max_words), -1;
        argv[argc++] = out;
        while (*in && *in != ' ' && *in != '\t' && *in != '\n' && *in != '\r') {
            if (*in == '\'' || *in == '"') {
                char q = *in++;
                while (*in && *in != q) {
                    if (q == '"' && *in == '\\' && in[1])
                        in++;
                    *out++ = *in++;
                }
                if (*in != q)
                    return qsur_fail(err, QSUR_ERR_ARG, "unterminated %c quote", q), -1;
                in++;
            } else {
                *out++ = *in++;
            }
        }
        if (*in)
            in++;
        *out++ = '\0';
    }
    return argc;
}

char *command_quote(const char *w)
{
    int plain = *w != '\0';
    for (const char *p = w; *p; p++)
        if (strchr(" \t\n\r'\"#;\\", *p))
            plain = 0;
    char *q = malloc(strlen(w) * 2 + 3);
    if (!q)
        return NULL;
    if (plain)
        return strcpy(q, w);
    char *o = q;
    *o++ = '"';
    for (const char *p = w; *p; p++) {
        if (*p == '"' || *p == '\\')
            *o++ = '\\';
        *o++ = *p;
    }
    *o++ = '"';
    *o = '\0';
    return q;
}

static void append_word(char **line, size_t *len, const char *w)
{
    char *q = command_quote(w);
    char *n = q ? realloc(*line, *len + strlen(q) + 2) : NULL;
    if (!n) {
        free(q);
        return;
    }
    *line = n;
    char *o = n + *len;
    if (*len)
        *o++ = ' ';
    o = stpcpy(o, q);
    *len = (size_t)(o - n);
    free(q);
}

/* The option a word sets: "KEY=" (KEY of letters, digits, '_', '-'), "KEY:"
 * of a quantizer-spec row (`quant w:...`; a tensor may be named "x:0"), or
 * the whole word when it is one of the command's flag words (`no-scale`);
 * length 0 for other words (names, paths, numbers). */
static size_t option_key(const command *c, const char *w)
{
    int q = opt_find(c->opts, w);
    if (q >= 0 && c->opts[q].type == OPT_QUANT)
        return strlen(c->opts[q].key) + 1;
    size_t i = 0;
    while (isalnum((unsigned char)w[i]) || w[i] == '_' || w[i] == '-')
        i++;
    if (i > 0 && w[i] == '=')
        return i + 1;
    if (!strchr(w, '=') && (opt_find(c->opts, w) >= 0))
        return strlen(w);
    for (const command *sub = c->subs; sub && sub->name; sub++)
        if (!strchr(w, '=') && opt_find(sub->opts, w) >= 0)
            return strlen(w);
    for (const char *const *k = c->words; k && *k; k++) {
        if (!strcmp(*k, w) && !strchr(w, '='))
            return strlen(w);
    }
    return 0;
}

/* An option given twice would silently take the last value: refuse it here,
 * once for every command (free-text commands like `echo` excepted). */
static int check_repeated_options(const command *c, int argc, char **argv, qsur_error *err)
{
    if (c->max_args < 0)
        return QSUR_OK;
    for (int i = 1; i < argc; i++) {
        size_t k = option_key(c, argv[i]);
        for (int j = 0; j < i && k; j++)
            if (option_key(c, argv[j]) == k && !strncmp(argv[i], argv[j], k))
                return qsur_fail(err, QSUR_ERR_ARG, "%s: option '%.*s' given twice ('%s', then '%s'): give it once",
                                 c->name, (int)k, argv[i], argv[j], argv[i]);
    }
    return QSUR_OK;
}

/* Errors found before a handler runs still give JSON readers their one object. */
static void report_error_only(session *s, const char *name, const char *msg)
{
    if (s->set.format != FORMAT_JSON)
        return;
    report r;
    report_begin(&r, s->out, s->set.format, name);
    report_end(&r, 0, msg);
}

void session_log_opts(session *s, const char *head, const opt_args *a)
{
    char *line = opt_log_line(head, a);
    free(s->log_override);
    s->log_override = line;
}

const command *command_sub(const command *c, const char *name)
{
    for (const command *sub = c->subs; sub && sub->name; sub++)
        if (!strcmp(sub->name, name))
            return sub;
    return NULL;
}

void command_opt_usage(const command *c, char *buf, size_t n)
{
    opt_usage(c->opts, buf, n);
}

/* The generated lines of one entry: its positional rows, then its options. */
static void entry_lines(const command *e, void (*fn)(void *ctx, const char *line), void *ctx)
{
    char line[1400], d[900];
    for (int i = 0; e->args && e->args[i].key; i++) {
        if (!e->args[i].help && e->args[i].type != OPT_INT && e->args[i].type != OPT_REAL)
            continue; /* its usage says it all: `set format human|json` */
        opt_describe_arg(&e->args[i], d, sizeof d);
        snprintf(line, sizeof line, "    %s", d);
        fn(ctx, line);
    }
    for (int i = 0; e->opts && e->opts[i].key; i++) {
        opt_describe(&e->opts[i], d, sizeof d);
        snprintf(line, sizeof line, "    %s", d);
        fn(ctx, line);
    }
}

/* The usage and summary of an entry, then its lines. */
static void entry_block(const command *e, const char *summary, void (*fn)(void *ctx, const char *line), void *ctx)
{
    char usage[1024], line[1400];
    command_usage(e, usage, sizeof usage);
    snprintf(line, sizeof line, "%s: %s", usage, summary ? summary : "");
    fn(ctx, line);
    entry_lines(e, fn, ctx);
}

void command_each_option_line(const command *c, void (*fn)(void *ctx, const char *line), void *ctx)
{
    if (!c->subs) {
        entry_lines(c, fn, ctx);
        return;
    }
    if (c->opts || c->args) /* the entry's own mode first */
        entry_block(c, c->summary, fn, ctx);
    for (const command *sub = c->subs; sub->name; sub++)
        entry_block(sub, sub->summary, fn, ctx);
}

void command_usage(const command *c, char *buf, size_t n)
{
    size_t len = (size_t)snprintf(buf, n, "%s", c->usage);
    char word[512];
    for (int i = 0; c->opts && c->opts[i].key && len < n; i++) {
        opt_usage_word(&c->opts[i], word, sizeof word);
        len += (size_t)snprintf(buf + len, n - len, " [%s]", word);
    }
}

/* "ostquant: expected 1 argument, got 0 (usage: ...)" */
static int arity_fail(const command *c, const char *name, int nargs, qsur_error *err)
{
    return qsur_fail(err, QSUR_ERR_ARG, "%s: expected %s%d argument%s, got %d (usage: %s)", name,
                     c->max_args < 0 ? "at least " : (c->min_args == c->max_args ? "" : "up to "),
                     c->max_args < 0 || c->min_args == c->max_args ? c->min_args : c->max_args,
                     (c->max_args < 0 ? c->min_args : c->max_args) == 1 ? "" : "s", nargs, c->usage);
}

/* The sub-command argv[0] names: "expected `ostquant layer|model ...`, got 'x'". */
static const command *pick_sub(const command *c, const char *word, qsur_error *err)
{
    const command *sub = command_sub(c, word);
    if (sub)
        return sub;
    char names[512] = "";
    size_t len = 0;
    for (const command *p = c->subs; p->name && len < sizeof names; p++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", p == c->subs ? "" : "|", p->name);
    qsur_fail(err, QSUR_ERR_ARG, "expected `%s %s ...`, got '%s'", c->name, names, word);
    return NULL;
}

/* Runs c's handler, or, for a command with options, parses them first. */
static int run_handler(session *s, const command *c, int nargs, char **args, report *r, qsur_error *herr)
{
    if (!c->opts && !c->args) {
        if (nargs < c->min_args || (c->max_args >= 0 && nargs > c->max_args))
            return qsur_fail(herr, QSUR_ERR_ARG, "usage: %s", c->usage);
        return c->handler(s, nargs, args, r, herr);
    }
    char usage[1024];
    command_opt_usage(c, usage, sizeof usage);
    opt_args *a = malloc(sizeof *a);
    if (!a)
        return qsur_fail(herr, QSUR_ERR_NOMEM, "out of memory");
    int rc = opt_parse(c->opts, c->max_args, nargs, args, a, usage, herr);
    if (!rc && a->npos < c->min_args) {
        command_usage(c, usage, sizeof usage);
        rc = qsur_fail(herr, QSUR_ERR_ARG, "usage: %s", usage);
    }
    if (!rc)
        rc = opt_parse_args(c->args, a, herr);
    if (!rc)
        rc = c->run(s, a->npos, a->pos, a, r, herr);
    free(a);
    return rc;
}

/* Dispatches to the entry (or sub-command entry) and runs it with its report. */
static int run_command(session *s, const command *c, int argc, char **argv, qsur_error *err)
{
    report r;
    report_begin(&r, s->out, s->set.format, c->name);
    qsur_error herr;
    herr.msg[0] = '\0';
    const command *e = c;
    int nargs = argc - 1, rc = QSUR_OK;
    char **args = argv + 1;
    const command *sub = c->subs && nargs > 0 ? command_sub(c, args[0]) : NULL;
    if (sub) {
        e = sub;
        nargs--;
        args++;
    } else if (c->subs && !c->run && !c->handler) { /* a sub-command is required */
        e = nargs > 0 ? pick_sub(c, args[0], &herr) : NULL;
        rc = QSUR_ERR_ARG;
    }
    if (!rc)
        rc = e->run || e->handler ? run_handler(s, e, nargs, args, &r, &herr) : QSUR_ERR_ARG;
    progress_line_done(s); /* the result must not share a line with a half-drawn bar */
    if (rc != QSUR_OK) {
        /* Engine messages already name the file or tensor; prefix the command
         * unless the message already starts with it ("export: ...",
         * "ostquant model: ..."): one prefix, never "export: export:". */
        const char *m = herr.msg[0] ? herr.msg : qsur_status_name(rc);
        size_t n = strlen(c->name);
        if (!strncmp(m, c->name, n) && (m[n] == ':' || m[n] == ' '))
            qsur_fail(err, rc, "%s", m);
        else
            qsur_fail(err, rc, "%s: %s", c->name, m);
        report_end(&r, 0, err->msg);
    } else {
        report_end(&r, 1, NULL);
    }
    return rc;
}

/* Records a successful state-changing command: the handler's canonical form,
 * or the words as typed (quoted where needed). */
static void log_command(session *s, int argc, char **argv)
{
    if (s->log_override) {
        if (s->log_override[0]) /* "" means: nothing to replay */
            session_log_append(s, s->log_override);
        return;
    }
    char *canon = NULL;
    size_t len = 0;
    for (int i = 0; i < argc; i++)
        append_word(&canon, &len, argv[i]);
    if (canon)
        session_log_append(s, canon);
    free(canon);
}

static int execute_line(session *s, const char *line, qsur_error *err)
{
    char *buf = strdup(line);
    if (!buf)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    char *argv[MAX_WORDS];
    qsur_error terr;
    int argc = command_tokenize(buf, argv, MAX_WORDS, &terr);
    int rc = QSUR_OK;
    const command *c = NULL;
    if (argc < 0) {
        rc = qsur_fail(err, QSUR_ERR_ARG, "%s", terr.msg);
    } else if (argc > 0 && !(c = command_find(argv[0]))) {
        rc = qsur_fail(err, QSUR_ERR_ARG, "%s: unknown command (try `help`)", argv[0]);
        report_error_only(s, argv[0], err->msg);
    } else if (c && !c->opts && (argc - 1 < c->min_args || (c->max_args >= 0 && argc - 1 > c->max_args))) {
        /* (an entry with options counts its positional words when they are parsed) */
        rc = arity_fail(c, c->name, argc - 1, err);
        report_error_only(s, c->name, err->msg);
    } else if (c && check_repeated_options(c, argc - 1, argv + 1, err) != QSUR_OK) {
        rc = QSUR_ERR_ARG;
        report_error_only(s, c->name, err->msg);
    } else if (c) {
        if (s->interrupted)
            *s->interrupted = 0;
        free(s->log_override);
        s->log_override = NULL;
        rc = run_command(s, c, argc, argv, err);
        if (rc == QSUR_OK && (c->flags & CMD_LOGGED))
            log_command(s, argc, argv);
        free(s->log_override);
        s->log_override = NULL;
    }
    free(buf);
    return rc;
}

int command_execute(session *s, const char *line, qsur_error *err)
{
    int rc = execute_line(s, line, err);
    /* Messages quote names from files: every front end prints them to a
     * terminal, so control characters in them are escaped here, once. */
    if (rc != QSUR_OK && text_needs_escape(err->msg)) {
        char tmp[sizeof err->msg];
        text_escape(tmp, sizeof tmp, err->msg);
        memcpy(err->msg, tmp, sizeof tmp);
    }
    return rc;
}
