/* The command table: the single source for dispatch, arity checks, help text,
 * Tab completion and the generated command reference (docs/commands.md).
 * The REPL, script files, `qsur -c`, stdin and the TUI's command line all
 * run commands through command_execute(). */
#ifndef QSUR_UI_COMMAND_H
#define QSUR_UI_COMMAND_H

#include "qsur/error.h"
#include "option.h"
#include "report.h"

struct session;

enum {
    CMD_LOGGED = 1 << 0,  /* changes state: recorded in the session log and by `save` */
    CMD_LONG = 1 << 1     /* may run long: shows progress, Ctrl-C interrupts it */
};

/* What Tab completes for the arguments of a command. */
typedef enum {
    COMPLETE_NONE,
    COMPLETE_FILE,     /* file paths */
    COMPLETE_TENSOR,   /* names of workspace tensors */
    COMPLETE_WORDS,    /* the words list (first argument), then tensors */
    COMPLETE_COMMAND   /* command names (help) */
} complete_kind;

typedef int (*command_handler)(struct session *s, int argc, char **argv,
                               report *r, qsur_error *err);

/* A handler of a command with typed options: the options are parsed and
 * range-checked before it runs; it gets the positional words (argc/argv, the
 * sub-command's name already taken off) and the parsed values. */
typedef int (*command_opt_handler)(struct session *s, int argc, char **argv, opt_args *opt,
                                   report *r, qsur_error *err);

typedef struct command {
    const char *name;
    int min_args, max_args;  /* arguments after the name; max -1 = any (with
                                opts: positional words only, options not counted) */
    int flags;
    complete_kind complete;
    const char *const *words;  /* sub-arguments for COMPLETE_WORDS, NULL-terminated */
    const char *usage;         /* "rotate hadamard|random|pca [SEED]" */
    const char *summary;       /* one line */
    const char *help;          /* paragraph(s) for `help NAME` */
    command_handler handler;
    /* A command with sub-commands (`ostquant model|layer|...`) names its
     * entries here (NULL-terminated by name); the first argument picks one and
     * the rest goes to it. */
    const struct command *subs;
    const opt_spec *opts;      /* typed KEY=VALUE options (NULL-terminated), or NULL */
    command_opt_handler run;   /* with opts or args: the handler that gets them */
    /* typed positional arguments, in order (option.h's opt_parse_args): the
     * handler gets their values in opt_args.arg; NULL: untyped words */
    const opt_spec *args;
} command;

/* The entry that ends a sub-command array. */
#define COMMAND_END {0}

extern const command command_table[];
extern const int command_count;

const command *command_find(const char *name);
/* Records the running command as head and a's options (option.h's
 * opt_log_line) for the session log. */
void session_log_opts(struct session *s, const char *head, const opt_args *a);
/* The sub-command of c named name, or NULL. */
const command *command_sub(const command *c, const char *name);
/* "steps=N lr=X ..." for c's options: the text of option errors. */
void command_opt_usage(const command *c, char *buf, size_t n);
/* The generated part of `help NAME` and docs/commands.md: for each
 * sub-command its usage and summary, and one line per option (opt_describe). */
void command_each_option_line(const command *c, void (*fn)(void *ctx, const char *line), void *ctx);
/* The full usage: c->usage, then "[key=VALUE]" for each option. */
void command_usage(const command *c, char *buf, size_t n);

/* Split a command line into words: whitespace separates, '...' and "..."
 * quote, backslash escapes inside double quotes. Returns the word count or -1
 * with err filled (unterminated quote, too many words). argv points into buf. */
int command_tokenize(char *buf, char **argv, int max_words, qsur_error *err);

/* A word as the tokenizer reads it back: as is when plain, else in double
 * quotes with " and \ escaped (malloc'ed; NULL when out of memory). Used for
 * the session log and to build command lines from paths. */
char *command_quote(const char *w);

/* Runs one command line (no comments, no ';'). Returns QSUR_OK or an error code
 * with err filled as "CMD: message". An empty line is OK. */
int command_execute(struct session *s, const char *line, qsur_error *err);

#endif
