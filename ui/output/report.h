/* Command output: one report per command, rendered either as human text
 * (aligned "label  value" lines, tables, plots) or, with `set format json`,
 * as exactly one JSON object per command on one line.
 *
 * Handlers never printf: they add fields, table rows and text lines here, so
 * every command is machine-readable for free. */
#ifndef QSUR_UI_REPORT_H
#define QSUR_UI_REPORT_H

#include <stdint.h>
#include <stdio.h>

typedef enum { FORMAT_HUMAN, FORMAT_JSON } report_format;

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

void strbuf_addf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void strbuf_add_json_string(strbuf *b, const char *s);
void strbuf_free(strbuf *b);

typedef struct {
    FILE *out;
    report_format format;
    const char *command;  /* name of the running command */
    strbuf human;         /* human rendering, printed at the end */
    strbuf json;          /* fields of the JSON object */
    strbuf text;          /* JSON: free text lines (plots) as an array */
    int json_fields;
    int table_cols;       /* >0 while a table is open */
    int table_rows;
    int row_cells;
    int widths[16];
    char keys[16][32];
} report;

void report_begin(report *r, FILE *out, report_format fmt, const char *command);
/* Prints the report. ok=0 adds "error": message in JSON; in human mode the
 * caller prints the error itself (it knows FILE:LINE). */
void report_end(report *r, int ok, const char *error_message);

/* A labelled value. key is the JSON key; label is the human text (NULL: key). */
void rep_num(report *r, const char *key, const char *label, double v, const char *human_fmt);
void rep_int(report *r, const char *key, const char *label, long long v);
void rep_str(report *r, const char *key, const char *label, const char *v);
void rep_bool(report *r, const char *key, const char *label, int v);
/* Arrays that only machine readers want (histogram counts, per-channel
 * values): JSON only; the human view shows a plot of them instead. */
void rep_json_nums(report *r, const char *key, const double *v, int64_t n);
void rep_json_ints(report *r, const char *key, const int64_t *v, int64_t n);
/* A line of human text (notes). In JSON it goes to the "text" array. Control
 * characters in it are escaped for the terminal (text_escape.h). */
void rep_line(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A line the program styled itself (a plot with its ANSI colours): printed
 * as is; whatever came from files in it was escaped when it was built. */
void rep_line_styled(report *r, const char *line);
/* Tables: keys are JSON keys and human headers; widths are human column widths
 * (negative: left-aligned). In JSON a table is an array of objects under name. */
void rep_table_begin(report *r, const char *name, int ncols, const char *const *keys, const int *widths);
void rep_cell_num(report *r, double v, const char *human_fmt);
void rep_cell_int(report *r, long long v);
void rep_cell_str(report *r, const char *v);
void rep_table_end(report *r);

#endif
