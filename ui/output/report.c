/* Rendering of command results as human text or one JSON object per command. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "report.h"
#include "text_escape.h"

static void strbuf_reserve(strbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->buf, cap);
    if (!p)
        abort(); /* UI text buffers are tiny; running out here means the process is lost */
    b->buf = p;
    b->cap = cap;
}

void strbuf_addf(strbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    strbuf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->buf + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void strbuf_add_json_string(strbuf *b, const char *s)
{
    strbuf_addf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            strbuf_addf(b, "\\%c", *p);
        else if (*p == '\n')
            strbuf_addf(b, "\\n");
        else if (*p < 0x20)
            strbuf_addf(b, "\\u%04x", *p);
        else
            strbuf_addf(b, "%c", *p);
    }
    strbuf_addf(b, "\"");
}

void strbuf_free(strbuf *b)
{
    free(b->buf);
    memset(b, 0, sizeof *b);
}

void report_begin(report *r, FILE *out, report_format fmt, const char *command)
{
    memset(r, 0, sizeof *r);
    r->out = out;
    r->format = fmt;
    r->command = command;
}

static void json_key(report *r, const char *key)
{
    strbuf_addf(&r->json, r->json_fields++ ? "," : "");
    strbuf_add_json_string(&r->json, key);
    strbuf_addf(&r->json, ":");
}

/* JSON has no inf/nan: they become null (a log10 QSUR of -inf means "singular"). */
static void json_number(strbuf *b, double v)
{
    if (isfinite(v))
        strbuf_addf(b, "%.17g", v);
    else
        strbuf_addf(b, "null");
}

static void human_label(report *r, const char *key, const char *label)
{
    strbuf_addf(&r->human, "  %-26s ", label ? label : key);
}

void rep_num(report *r, const char *key, const char *label, double v, const char *human_fmt)
{
    json_key(r, key);
    json_number(&r->json, v);
    human_label(r, key, label);
    if (isnan(v)) /* "not applicable" (e.g. -inf minus -inf): say so, not "-nan" */
        strbuf_addf(&r->human, "-");
    else
        strbuf_addf(&r->human, human_fmt ? human_fmt : "%.6g", v);
    strbuf_addf(&r->human, "\n");
}

void rep_int(report *r, const char *key, const char *label, long long v)
{
    json_key(r, key);
    strbuf_addf(&r->json, "%lld", v);
    human_label(r, key, label);
    strbuf_addf(&r->human, "%lld\n", v);
}

/* Strings from files (tensor names, paths) reach the terminal escaped. */
static void human_escaped(strbuf *b, const char *fmt, const char *v)
{
    char *e = text_escape_dup(v);
    if (!e)
        abort(); /* as strbuf_reserve: UI text buffers are tiny */
    strbuf_addf(b, fmt, e);
    free(e);
}

void rep_str(report *r, const char *key, const char *label, const char *v)
{
    json_key(r, key);
    strbuf_add_json_string(&r->json, v);
    human_label(r, key, label);
    human_escaped(&r->human, "%s\n", v);
}

void rep_bool(report *r, const char *key, const char *label, int v)
{
    json_key(r, key);
    strbuf_addf(&r->json, v ? "true" : "false");
    human_label(r, key, label);
    strbuf_addf(&r->human, "%s\n", v ? "yes" : "no");
}

void rep_json_nums(report *r, const char *key, const double *v, int64_t n)
{
    json_key(r, key);
    strbuf_addf(&r->json, "[");
    for (int64_t i = 0; i < n; i++) {
        if (i)
            strbuf_addf(&r->json, ",");
        json_number(&r->json, v[i]);
    }
    strbuf_addf(&r->json, "]");
}

void rep_json_ints(report *r, const char *key, const int64_t *v, int64_t n)
{
    json_key(r, key);
    strbuf_addf(&r->json, "[");
    for (int64_t i = 0; i < n; i++)
        strbuf_addf(&r->json, i ? ",%lld" : "%lld", (long long)v[i]);
    strbuf_addf(&r->json, "]");
}

static void add_line(report *r, const char *line, int styled)
{
    if (styled)
        strbuf_addf(&r->human, "%s\n", line);
    else
        human_escaped(&r->human, "%s\n", line);
    strbuf_addf(&r->text, r->text.len ? "," : "");
    strbuf_add_json_string(&r->text, line);
}

void rep_line(report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = NULL;
    int n = vasprintf(&line, fmt, ap);
    va_end(ap);
    if (n < 0)
        abort();
    add_line(r, line, 0);
    free(line);
}

void rep_line_styled(report *r, const char *line)
{
    add_line(r, line, 1);
}

void rep_table_begin(report *r, const char *name, int ncols, const char *const *keys, const int *widths)
{
    if (ncols > 16)
        ncols = 16;
    r->table_cols = ncols;
    r->table_rows = 0;
    r->row_cells = 0;
    json_key(r, name);
    strbuf_addf(&r->json, "[");
    strbuf_addf(&r->human, " ");
    for (int i = 0; i < ncols; i++) {
        r->widths[i] = widths[i];
        snprintf(r->keys[i], sizeof r->keys[i], "%s", keys[i]);
        strbuf_addf(&r->human, " %*s", widths[i], keys[i]);
    }
    strbuf_addf(&r->human, "\n");
}

static void cell_start(report *r)
{
    if (r->row_cells == 0) {
        strbuf_addf(&r->json, r->table_rows ? ",{" : "{");
        strbuf_addf(&r->human, " ");
    } else {
        strbuf_addf(&r->json, ",");
    }
    strbuf_add_json_string(&r->json, r->keys[r->row_cells]);
    strbuf_addf(&r->json, ":");
}

static void cell_end(report *r)
{
    if (++r->row_cells == r->table_cols) {
        strbuf_addf(&r->json, "}");
        strbuf_addf(&r->human, "\n");
        r->row_cells = 0;
        r->table_rows++;
    }
}

void rep_cell_num(report *r, double v, const char *human_fmt)
{
    cell_start(r);
    json_number(&r->json, v);
    char tmp[64];
    if (isnan(v))
        snprintf(tmp, sizeof tmp, "-");
    else
        snprintf(tmp, sizeof tmp, human_fmt ? human_fmt : "%.6g", v);
    strbuf_addf(&r->human, " %*s", r->widths[r->row_cells], tmp);
    cell_end(r);
}

void rep_cell_int(report *r, long long v)
{
    cell_start(r);
    strbuf_addf(&r->json, "%lld", v);
    strbuf_addf(&r->human, " %*lld", r->widths[r->row_cells], v);
    cell_end(r);
}

void rep_cell_str(report *r, const char *v)
{
    cell_start(r);
    strbuf_add_json_string(&r->json, v);
    char *e = text_escape_dup(v);
    if (!e)
        abort();
    strbuf_addf(&r->human, " %*s", r->widths[r->row_cells], e);
    free(e);
    cell_end(r);
}

void rep_table_end(report *r)
{
    strbuf_addf(&r->json, "]");
    r->table_cols = 0;
}

void report_end(report *r, int ok, const char *error_message)
{
    if (r->format == FORMAT_JSON) {
        strbuf line = {0};
        strbuf_addf(&line, "{\"command\":");
        strbuf_add_json_string(&line, r->command ? r->command : "");
        strbuf_addf(&line, ",\"ok\":%s", ok ? "true" : "false");
        if (!ok) {
            strbuf_addf(&line, ",\"error\":");
            strbuf_add_json_string(&line, error_message ? error_message : "");
        }
        if (r->json.len)
            strbuf_addf(&line, ",%s", r->json.buf);
        if (r->text.len)
            strbuf_addf(&line, ",\"text\":[%s]", r->text.buf);
        strbuf_addf(&line, "}\n");
        fputs(line.buf, r->out);
        strbuf_free(&line);
    } else if (r->human.len) {
        fputs(r->human.buf, r->out);
    }
    fflush(r->out);
    strbuf_free(&r->human);
    strbuf_free(&r->json);
    strbuf_free(&r->text);
}
