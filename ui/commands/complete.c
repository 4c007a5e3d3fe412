/* Tab completion for the command language (see complete.h): the REPL's
 * readline hook and the TUI's command line both ask here. */
#include <stdlib.h>
#include <string.h>
#include "command.h"
#include "complete.h"
#include "session.h"

typedef struct {
    char **v;
    int n, cap;
    const char *text; /* the word being completed (for cand_add_word) */
} cand_list;

static void cand_add(cand_list *l, const char *text, const char *word)
{
    if (strncmp(word, text, strlen(text)) != 0)
        return;
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i], word))
            return;
    if (l->n + 2 > l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return;
        l->v = v;
        l->cap = cap;
    }
    char *w = strdup(word);
    if (w) {
        l->v[l->n++] = w;
        l->v[l->n] = NULL;
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void command_candidates_free(char **c)
{
    if (!c)
        return;
    for (char **p = c; *p; p++)
        free(*p);
    free(c);
}

static void cand_add_word(void *ctx, const char *word)
{
    cand_list *l = ctx;
    cand_add(l, l->text, word);
}

/* Candidates for argument number nargs of command c (args: the words before
 * it): a sub-command's name first, then at any position the `key=` words of
 * the entry's options beside what its positional arguments take. */
static void complete_args(const session *s, const command *c, char **args, int nargs, const char *text,
                          cand_list *l, int *want_files)
{
    if (!c)
        return;
    if (c->subs) {
        const command *sub = nargs > 0 ? command_sub(c, args[0]) : NULL;
        if (sub) {
            complete_args(s, sub, args + 1, nargs - 1, text, l, want_files);
            return;
        }
        if (nargs == 0)
            for (sub = c->subs; sub->name; sub++)
                cand_add(l, text, sub->name);
        if (!c->opts && !c->args && !c->handler && !c->run) /* a sub-command is required */
            return;
    }
    int npos = 0; /* positional words before this one */
    for (int i = 0; i < nargs; i++)
        npos += opt_find(c->opts, args[i]) < 0;
    if (c->opts) {
        l->text = text;
        opt_complete(c->opts, cand_add_word, l);
        if (c->max_args >= 0 && npos >= c->max_args)
            return;
    }
    if (c->args) { /* typed positionals: the row of this position says what fits */
        l->text = text;
        if (npos < opt_count(c->args))
            opt_complete_arg(&c->args[npos], cand_add_word, l);
        if (npos >= opt_count(c->args) || c->args[npos].type != OPT_FILE)
            return;
    }
    complete_kind k = c->complete;
    if (k == COMPLETE_FILE && !c->opts) {
        *want_files = 1;
    } else if (k == COMPLETE_FILE) {
        /* options and file names both fit: readline's file completion runs
         * when no option matches (repl's rl hook) */
        if (l->n == 0)
            *want_files = 1;
    } else if (k == COMPLETE_COMMAND && nargs == 0) {
        for (int i = 0; i < command_count; i++)
            cand_add(l, text, command_table[i].name);
    } else if (k == COMPLETE_WORDS && nargs == 0 && c->words) {
        for (const char *const *w = c->words; *w; w++)
            cand_add(l, text, *w);
    } else if (k == COMPLETE_TENSOR || (k == COMPLETE_WORDS && nargs > 0)) {
        for (int i = 0; i < s->ws.count; i++)
            cand_add(l, text, s->ws.items[i]->name);
    }
}

char **command_candidates(const session *s, const char *line, int start, const char *text,
                          int *want_files)
{
    *want_files = 0;
    /* The command being completed starts after the last ';' outside quotes. */
    int seg = 0, qpos = 0;
    char quote = 0;
    for (int i = 0; i < start && line[i]; i++) {
        if (quote) {
            if (line[i] == '\\' && quote == '"' && i + 1 < start)
                i++;
            else if (line[i] == quote)
                quote = 0;
        } else if (line[i] == '\'' || line[i] == '"') {
            quote = line[i];
            qpos = i;
        } else if (line[i] == ';') {
            seg = i + 1;
        }
    }
    /* Inside an open quote the word being completed starts at the quote. */
    int end = quote ? qpos : start;
    char *prefix = strndup(line + seg, (size_t)(end > seg ? end - seg : 0));
    if (!prefix)
        return NULL;
    char *words[64];
    qsur_error err;
    int nw = command_tokenize(prefix, words, 64, &err);
    cand_list l = {0};
    if (nw == 0) {
        for (int i = 0; i < command_count; i++)
            cand_add(&l, text, command_table[i].name);
    } else if (nw > 0) {
        complete_args(s, command_find(words[0]), words + 1, nw - 1, text, &l, want_files);
    }
    free(prefix);
    if (l.n == 0) {
        free(l.v);
        return NULL;
    }
    qsort(l.v, (size_t)l.n, sizeof *l.v, cmp_str);
    return l.v;
}

