/* Typed option specs (see option.h): one parser, one usage writer, one log
 * writer, one completion source for every KEY=VALUE option. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "option.h"

int opt_count(const opt_spec *spec)
{
    int n = 0;
    while (spec && spec[n].key)
        n++;
    return n;
}

int opt_find(const opt_spec *spec, const char *word)
{
    const char *eq = strchr(word, '=');
    size_t k = eq ? (size_t)(eq - word) : strlen(word);
    for (int i = 0; spec && spec[i].key; i++) { /* key:OPTS (its OPTS may hold '=') */
        size_t kl = strlen(spec[i].key);
        if (spec[i].type == OPT_QUANT && !strncmp(spec[i].key, word, kl) && word[kl] == ':')
            return i;
    }
    for (int i = 0; spec && spec[i].key; i++) {
        if (spec[i].type == OPT_QUANT)
            continue;
        int flag = spec[i].type == OPT_FLAG;
        if (flag != !eq) /* a flag is a bare word, every other option has '=' */
            continue;
        if (strlen(spec[i].key) == k && !strncmp(spec[i].key, word, k))
            return i;
    }
    return -1;
}

/* The index of word in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *word)
{
    size_t n = strlen(word);
    int i = 0;
    for (const char *p = choices; p; i++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && !strncmp(p, word, n))
            return i;
        p = bar ? bar + 1 : NULL;
    }
    return -1;
}

int opt_value_parse(const opt_spec *o, const char *text, opt_value *v)
{
    char *end;
    errno = 0;
    switch (o->type) {
    case OPT_INT: {
        long l = strtol(text, &end, 10);
        /* compared as doubles: hi may be LONG_MAX, which no long cast of it holds */
        if (errno || end == text || *end || (double)l < o->lo || (double)l > o->hi)
            return -1;
        v->i = l;
        return 0;
    }
    case OPT_REAL: {
        double d = strtod(text, &end);
        if (errno || end == text || *end || !(d >= o->lo && d <= o->hi))
            return -1;
        v->d = d;
        return 0;
    }
    case OPT_CHOICE: {
        int c = choice_index(o->choices, text);
        if (c < 0)
            return -1;
        v->i = c;
        v->s = text;
        return 0;
    }
    case OPT_TEXT:
    case OPT_FILE:
    case OPT_QUANT:
        v->s = text;
        return 0;
    case OPT_FLAG:
        v->i = 1;
        return 0;
    }
    return -1;
}

int opt_parse(const opt_spec *spec, int max_pos, int argc, char **argv, opt_args *a,
              const char *usage, qsur_error *err)
{
    memset(a, 0, sizeof *a);
    a->spec = spec;
    for (int i = 0; spec && spec[i].key; i++)
        if (spec[i].def && opt_value_parse(&spec[i], spec[i].def, &a->v[i]))
            return qsur_fail(err, QSUR_ERR_ARG, "option %s: bad default '%s'", spec[i].key, spec[i].def);
    for (int w = 0; w < argc; w++) {
        const char *word = argv[w];
        int i = opt_find(spec, word);
        if (i >= 0) {
            const char *eq = spec[i].type == OPT_QUANT ? word + strlen(spec[i].key) : strchr(word, '=');
            if (opt_value_parse(&spec[i], eq ? eq + 1 : word, &a->v[i])) {
                if (spec[i].type == OPT_CHOICE) /* name the choices: they are the whole answer */
                    return qsur_fail(err, QSUR_ERR_ARG, "unknown %s '%s' (expected %s; %s)", spec[i].key, eq + 1,
                                     spec[i].choices, usage);
                return qsur_fail(err, QSUR_ERR_ARG, "bad value in '%s' (%s)", word, usage);
            }
            a->v[i].given = 1;
        } else if ((max_pos < 0 || a->npos < max_pos) && a->npos < OPT_MAX_WORDS) {
            a->pos[a->npos++] = argv[w];
        } else {
            return qsur_fail(err, QSUR_ERR_ARG, "unknown option '%s' (%s)", word, usage);
        }
    }
    return QSUR_OK;
}

static const char *meta_of(const opt_spec *o)
{
    if (o->meta)
        return o->meta;
    switch (o->type) {
    case OPT_INT: return "N";
    case OPT_REAL: return "X";
    case OPT_CHOICE: return o->choices;
    case OPT_FILE: return "FILE";
    case OPT_QUANT: return "OPTS";
    default: return "TEXT";
    }
}

void opt_usage_word(const opt_spec *o, char *buf, size_t n)
{
    if (o->type == OPT_FLAG)
        snprintf(buf, n, "%s", o->key);
    else if (o->type == OPT_QUANT)
        snprintf(buf, n, "%s:%s", o->key, meta_of(o));
    else
        snprintf(buf, n, "%s=%s", o->key, meta_of(o));
}

void opt_usage(const opt_spec *spec, char *buf, size_t n)
{
    size_t len = 0;
    if (n)
        buf[0] = '\0';
    for (int i = 0; spec && spec[i].key && len + 1 < n; i++) {
        if (i && len + 3 < n) {
            buf[len++] = ',';
            buf[len++] = ' ';
        }
        opt_usage_word(&spec[i], buf + len, n - len);
        len += strlen(buf + len);
    }
}

void opt_format(const opt_spec *o, const opt_value *v, char *buf, size_t n)
{
    switch (o->type) {
    case OPT_INT: snprintf(buf, n, "%s=%ld", o->key, v->i); break;
    case OPT_REAL: {
        /* the shortest of %.15g..%.17g that reads back exactly: replays match */
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(buf, n, "%s=%.*g", o->key, prec, v->d);
            if (strtod(buf + strlen(o->key) + 1, NULL) == v->d)
                break;
        }
        break;
    }
    case OPT_CHOICE: { /* from the index: a handler may set .i to the value it used */
        const char *p = o->choices;
        for (long k = 0; p && k < v->i; k++)
            p = strchr(p, '|') ? strchr(p, '|') + 1 : NULL;
        const char *bar = p ? strchr(p, '|') : NULL;
        snprintf(buf, n, "%s=%.*s", o->key, p ? bar ? (int)(bar - p) : (int)strlen(p) : 0, p ? p : "");
        break;
    }
    case OPT_TEXT: snprintf(buf, n, "%s=%s", o->key, v->s ? v->s : ""); break;
    case OPT_FILE: snprintf(buf, n, "%s=\"%s\"", o->key, v->s ? v->s : ""); break;
    case OPT_FLAG: snprintf(buf, n, "%s", o->key); break;
    case OPT_QUANT: snprintf(buf, n, "%s:%s", o->key, v->s ? v->s : ""); break;
    }
}

char *opt_log_line(const char *head, const opt_args *a)
{
    size_t cap = strlen(head) + 1, len = strlen(head);
    char *line = malloc(cap);
    if (!line)
        return NULL;
    memcpy(line, head, len + 1);
    for (int i = 0; a->spec && a->spec[i].key; i++) {
        const opt_spec *o = &a->spec[i];
        const opt_value *v = &a->v[i];
        int show = o->log == OPT_LOG_ALWAYS ? o->type != OPT_FLAG || v->i
                   : o->log == OPT_LOG_GIVEN ? (o->type == OPT_FLAG ? v->i != 0 : v->given)
                                             : 0;
        if (!show)
            continue;
        char word[4200];
        opt_format(o, v, word, sizeof word);
        size_t w = strlen(word);
        char *nl = realloc(line, len + w + 2);
        if (!nl) {
            free(line);
            return NULL;
        }
        line = nl;
        line[len++] = ' ';
        memcpy(line + len, word, w + 1);
        len += w;
    }
    return line;
}

void opt_complete(const opt_spec *spec, void (*add)(void *ctx, const char *word), void *ctx)
{
    char word[256];
    for (int i = 0; spec && spec[i].key; i++) {
        const opt_spec *o = &spec[i];
        if (o->type == OPT_FLAG) {
            add(ctx, o->key);
        } else if (o->type == OPT_CHOICE) {
            for (const char *p = o->choices; p;) {
                const char *bar = strchr(p, '|');
                int len = bar ? (int)(bar - p) : (int)strlen(p);
                snprintf(word, sizeof word, "%s=%.*s", o->key, len, p);
                add(ctx, word);
                p = bar ? bar + 1 : NULL;
            }
        } else {
            snprintf(word, sizeof word, o->type == OPT_QUANT ? "%s:" : "%s=", o->key);
            add(ctx, word);
        }
    }
}

void opt_describe(const opt_spec *o, char *buf, size_t n)
{
    char word[256], range[96] = "", def[96] = "";
    opt_usage_word(o, word, sizeof word);
    if (o->type == OPT_INT)
        snprintf(range, sizeof range, o->hi >= (double)LONG_MAX ? "; >= %.0f" : "; %.0f..%.0f", o->lo, o->hi);
    else if (o->type == OPT_REAL)
        snprintf(range, sizeof range, "; %g..%g", o->lo, o->hi);
    if (o->def)
        snprintf(def, sizeof def, "; default %s", o->def);
    snprintf(buf, n, "%-18s %s%s%s", word, o->help ? o->help : "", def, range);
}

/* "human or json", "eig-double, eig-float or cholesky" */
static void choices_text(const char *choices, char *buf, size_t n)
{
    size_t len = 0;
    int count = 1;
    for (const char *p = choices; *p; p++)
        count += *p == '|';
    int k = 0;
    for (const char *p = choices; p && len + 1 < n; k++) {
        const char *bar = strchr(p, '|');
        int w = bar ? (int)(bar - p) : (int)strlen(p);
        len += (size_t)snprintf(buf + len, n - len, "%s%.*s", k == 0 ? "" : k == count - 1 ? " or " : ", ", w, p);
        p = bar ? bar + 1 : NULL;
    }
}

int opt_parse_args(const opt_spec *args, opt_args *a, qsur_error *err)
{
    int rows = opt_count(args);
    if (args && a->npos > rows)
        return qsur_fail(err, QSUR_ERR_ARG, "unexpected argument '%s' (%d at most)", a->pos[rows], rows);
    for (int i = 0; args && args[i].key && i < OPT_MAX_ARGS; i++) {
        const opt_spec *o = &args[i];
        opt_value *v = &a->arg[i];
        memset(v, 0, sizeof *v);
        const char *text = i < a->npos ? a->pos[i] : o->def;
        v->given = i < a->npos;
        if (!text || !opt_value_parse(o, text, v))
            continue;
        char want[512];
        if (o->type == OPT_CHOICE)
            choices_text(o->choices, want, sizeof want);
        else if (o->type == OPT_INT)
            snprintf(want, sizeof want, o->hi >= (double)LONG_MAX ? "a whole number >= %.0f" : "a whole number in %.0f..%.0f",
                     o->lo, o->hi);
        else
            snprintf(want, sizeof want, "a number in [%g, %g]", o->lo, o->hi);
        if (!v->given)
            return qsur_fail(err, QSUR_ERR_ARG, "%s: bad default '%s'", o->key, text);
        return qsur_fail(err, QSUR_ERR_ARG, "%s: expected %s, got '%s'", o->key, want, text);
    }
    return QSUR_OK;
}

void opt_describe_arg(const opt_spec *o, char *buf, size_t n)
{
    char range[96] = "", def[96] = "";
    if (o->type == OPT_INT)
        snprintf(range, sizeof range, o->hi >= (double)LONG_MAX ? "; >= %.0f" : "; %.0f..%.0f", o->lo, o->hi);
    else if (o->type == OPT_REAL)
        snprintf(range, sizeof range, "; %g..%g", o->lo, o->hi);
    if (o->def)
        snprintf(def, sizeof def, "; default %s", o->def);
    const char *name = o->type == OPT_CHOICE ? o->choices : o->key;
    if (o->help)
        snprintf(buf, n, "%-18s %s%s%s", name, o->help, def, range);
    else /* no help: the range alone, without its "; " */
        snprintf(buf, n, "%-18s %s%s", name, range[0] ? range + 2 : "", def);
}

void opt_complete_arg(const opt_spec *o, void (*add)(void *ctx, const char *word), void *ctx)
{
    char word[256];
    for (const char *p = o->type == OPT_CHOICE ? o->choices : NULL; p;) {
        const char *bar = strchr(p, '|');
        int len = bar ? (int)(bar - p) : (int)strlen(p);
        snprintf(word, sizeof word, "%.*s", len, p);
        add(ctx, word);
        p = bar ? bar + 1 : NULL;
    }
}
