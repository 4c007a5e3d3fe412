/* Typed KEY=VALUE option specs: a command (or sub-command) declares its
 * options once, as a NULL-terminated opt_spec array, and parsing, range
 * checks, the usage line, `help`, docs/commands.md, Tab completion of `key=`
 * at any argument position and the replayable log line all come from that
 * declaration (the Redis command-definition idea in plain C). */
#ifndef QSUR_UI_OPTION_H
#define QSUR_UI_OPTION_H

#include <limits.h>
#include <stddef.h>
#include "qsur/error.h"

#define OPT_MAX 48       /* options of one command, at most */
#define OPT_MAX_WORDS 64 /* words of one command line, at most */
#define OPT_MAX_ARGS 8   /* typed positional arguments of one command, at most */

typedef enum {
    OPT_INT,    /* key=N, a whole number in [lo, hi] */
    OPT_REAL,   /* key=X, a number in [lo, hi] */
    OPT_CHOICE, /* key=one|of|these (choices); the value's index is .i */
    OPT_TEXT,   /* key=TEXT */
    OPT_FILE,   /* key=FILE (a path: completed as a file, logged quoted) */
    OPT_FLAG,   /* the bare word `key` ("no-scale"); .i = 1 when given */
    OPT_QUANT   /* key:OPTS, a quantizer spec ("w:sym,g128"); .s = OPTS, which
                 * the handler applies with the quantizer spec parser */
} opt_type;

/* When the option appears in the replayable log line. */
typedef enum {
    OPT_LOG_GIVEN,  /* only when given (a flag: when set) */
    OPT_LOG_ALWAYS, /* always, with its effective value */
    OPT_LOG_NEVER   /* never (the handler logs it itself, or it does not replay) */
} opt_log_mode;

typedef struct {
    const char *key;
    opt_type type;
    double lo, hi;        /* OPT_INT, OPT_REAL: accepted range */
    const char *choices;  /* OPT_CHOICE: "kltop|ce|mse" */
    const char *def;      /* default as the user would type it; NULL: none or computed */
    const char *meta;     /* placeholder in the usage ("N", "OUT"); NULL: from the type */
    opt_log_mode log;
    const char *help;     /* one line for `help` and docs/commands.md */
} opt_spec;

/* No upper bound for an OPT_INT row (a double: LONG_MAX itself does not fit). */
#define OPT_NO_MAX ((double)LONG_MAX)

/* The row that ends a spec array. */
#define OPT_END {NULL, 0, 0, 0, NULL, NULL, NULL, 0, NULL}

typedef struct {
    int given;      /* the user typed it */
    long i;         /* OPT_INT value, OPT_CHOICE index, OPT_FLAG 0/1 */
    double d;       /* OPT_REAL value */
    const char *s;  /* OPT_TEXT/OPT_FILE value (borrowed from argv or the spec), OPT_CHOICE word */
} opt_value;

/* Parsed words of one command: positional arguments in order, options by
 * their index in the spec, and the typed values of the positional arguments
 * a command declares (command.args: spec rows whose key is the name the
 * usage shows, "DEGREES"; a row with a default may be left out). */
typedef struct {
    const opt_spec *spec;
    opt_value v[OPT_MAX];
    char *pos[OPT_MAX_WORDS];
    int npos;
    opt_value arg[OPT_MAX_ARGS];
} opt_args;

int opt_count(const opt_spec *spec);
/* Index of the option a word sets ("steps=3" -> steps, "no-scale" -> the
 * flag, "w:sym" -> the OPT_QUANT row w), or -1 when the word is not one of
 * spec's options. */
int opt_find(const opt_spec *spec, const char *word);

/* Fills a from the defaults, then from argv: a word that names an option
 * sets it (checked against its type and range), any other word is
 * positional. Errors (QSUR_ERR_ARG, err filled, usage in the message):
 * "bad value in 'steps=-1' (USAGE)", "unknown option 'w=1' (USAGE)" for a
 * KEY=VALUE word of another key, or a positional word beyond max_pos
 * (max_pos < 0: any number). */
int opt_parse(const opt_spec *spec, int max_pos, int argc, char **argv, opt_args *a,
              const char *usage, qsur_error *err);

/* Types a->pos against the positional rows args (row i for word i; a word
 * beyond the rows is an error); rows not given take their default. Errors:
 * "DEGREES: expected a number in [-3600, 3600], got 'x'", "format: expected
 * human or json, got 'x'" (QSUR_ERR_ARG). */
int opt_parse_args(const opt_spec *args, opt_args *a, qsur_error *err);
/* Sets v from text per o's type and range; -1 when text is not a valid value. */
int opt_value_parse(const opt_spec *o, const char *text, opt_value *v);

/* One option as the usage shows it: "steps=N", "loss=kltop|ce|mse", "no-scale", "w:OPTS". */
void opt_usage_word(const opt_spec *o, char *buf, size_t n);
/* "steps=N, lr=X, loss=kltop|ce|mse, no-scale, calib=FILE" into buf. */
void opt_usage(const opt_spec *spec, char *buf, size_t n);

/* One line for `help` and the docs: "steps=N  training steps; default 150; 0..1000000". */
void opt_describe(const opt_spec *o, char *buf, size_t n);
/* The same for a positional row: "DEGREES  rotation angle; -3600..3600",
 * "human|json  ...". */
void opt_describe_arg(const opt_spec *o, char *buf, size_t n);

/* A value as logged: numbers in the shortest text that reads back to the
 * same double, files quoted. Writes "key=value" (or the flag word). */
void opt_format(const opt_spec *o, const opt_value *v, char *buf, size_t n);

/* The canonical line: head, then every option per its log mode, in spec
 * order (each option once, explicit values, so a replay does the same).
 * Returns a malloc'ed line or NULL (out of memory). */
char *opt_log_line(const char *head, const opt_args *a);

/* Completion words for options: "key=" for valued options, "key=CHOICE" for
 * each choice, the flag words. Calls add(ctx, word) for each. */
void opt_complete(const opt_spec *spec, void (*add)(void *ctx, const char *word), void *ctx);
/* Completion words of a positional row: its choices (none for other types). */
void opt_complete_arg(const opt_spec *o, void (*add)(void *ctx, const char *word), void *ctx);

#endif
