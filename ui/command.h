/* The command table: the single source for dispatch, arity checks, help text,
 * Tab completion and the generated command reference (docs/commands.md).
 * The REPL, script files, `qsur -c`, stdin and the TUI's command line all
 * run commands through command_execute(). */
#ifndef QSUR_UI_COMMAND_H
#define QSUR_UI_COMMAND_H

#include "qsur/error.h"
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

typedef struct {
    const char *name;
    int min_args, max_args;  /* arguments after the name; max -1 = any */
    int flags;
    complete_kind complete;
    const char *const *words;  /* sub-arguments for COMPLETE_WORDS, NULL-terminated */
    const char *usage;         /* "rotate hadamard|random|pca [SEED]" */
    const char *summary;       /* one line */
    const char *help;          /* paragraph(s) for `help NAME` */
    command_handler handler;
} command;

extern const command command_table[];
extern const int command_count;

const command *command_find(const char *name);

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
