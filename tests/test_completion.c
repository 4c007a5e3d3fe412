/* REPL pieces that need no terminal: the prompt text and Tab's candidates
 * (command names, sub-argument words, tensor names, file-path hand-off).
 * tests/test_repl.sh drives the same through a real pseudo-terminal. */
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "command.h"
#include "layer_state.h"
#include "complete.h"
#include "repl.h"
#include "session.h"

/* Candidates as one space-separated string ("" for none). */
static char *cands(const session *s, const char *line, int *files)
{
    int start = (int)strlen(line);
    while (start > 0 && !strchr(" \t;\"'", line[start - 1]))
        start--;
    int f = 0;
    char **c = command_candidates(s, line, start, line + start, &f);
    if (files)
        *files = f;
    static char buf[4096];
    buf[0] = '\0';
    for (char **p = c; p && *p; p++) {
        if (p != c)
            strcat(buf, " ");
        strcat(buf, *p);
    }
    command_candidates_free(c);
    return buf;
}

/* The command names starting with prefix, sorted, space-separated: what Tab
 * must offer for a command name (the table grows; the rule does not). */
static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static char *names_with(const char *prefix)
{
    static char buf[4096];
    const char *v[256];
    int n = 0;
    for (int i = 0; i < command_count && n < 256; i++)
        if (strncmp(command_table[i].name, prefix, strlen(prefix)) == 0)
            v[n++] = command_table[i].name;
    qsort(v, (size_t)n, sizeof *v, cmp_name);
    buf[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(buf, " ");
        strcat(buf, v[i]);
    }
    return buf;
}

static void add_tensor(session *s, const char *name)
{
    qsur_tensor *t = NULL;
    qsur_error err;
    CHECK_OK(qsur_tensor_new2(&t, name, 2, 2, &err), err);
    CHECK_OK(qsur_workspace_put(&s->ws, t, &err), err);
}

int main(void)
{
    session s;
    session_init(&s, stdout);

    char *p = repl_prompt(&s);
    CHECK_MSG(strcmp(p, "qsur [W4A4 tok/ch] > ") == 0, "prompt [%s]", p);
    free(p);
    s.layers = calloc(1, sizeof *s.layers);
    s.nlayers = s.layers_cap = 1;
    s.current = 0;
    strcpy(s.layers[0].name, "layers.0.w2");
    s.wq.bits = 3;
    s.wq.gran = QSUR_GRAN_GROUP;
    s.wq.group = 128;
    s.aq.bits = 16;
    s.aq.gran = QSUR_GRAN_TENSOR;
    p = repl_prompt(&s);
    CHECK_MSG(strcmp(p, "qsur [layers.0.w2 | W3A16 t/g128] > ") == 0, "prompt [%s]", p);
    free(p);

    int files = -1;
    char want[4096];
    snprintf(want, sizeof want, "%s", names_with("h"));
    CHECK(strstr(want, "help") != NULL && strstr(want, "history") != NULL);
    CHECK(strcmp(cands(&s, "h", &files), want) == 0 && files == 0);
    CHECK(strcmp(cands(&s, "hel", NULL), "help") == 0);
    CHECK(strcmp(cands(&s, "dem", NULL), "demo") == 0);
    CHECK(strcmp(cands(&s, "det", NULL), "detokenize") == 0);
    snprintf(want, sizeof want, "%s", names_with(""));
    CHECK(strcmp(cands(&s, "", NULL), want) == 0); /* all of them, sorted */
    CHECK(strstr(want, "echo") != NULL && strstr(want, "sleep") != NULL);
    CHECK(strcmp(cands(&s, "zz", NULL), "") == 0);
    /* help completes command names */
    snprintf(want, sizeof want, "%s", names_with("s"));
    CHECK(strstr(want, "save") && strstr(want, "set") && strstr(want, "sleep"));
    CHECK(strcmp(cands(&s, "help s", NULL), want) == 0);
    CHECK(strcmp(cands(&s, "help set s", NULL), "") == 0); /* help takes one */
    /* sub-argument words */
    CHECK(strcmp(cands(&s, "set c", NULL), "color cube") == 0);
    CHECK(strcmp(cands(&s, "demo r", NULL), "reset rotate") == 0);
    /* after ';' a new command starts; quotes hide ';' */
    CHECK(strcmp(cands(&s, "echo a; sl", NULL), "sleep") == 0);
    CHECK(strcmp(cands(&s, "echo 'a; se", NULL), "") == 0);
    /* file arguments are handed to readline's filename completion */
    cands(&s, "run sc", &files);
    CHECK(files == 1);
    cands(&s, "save \"my f", &files); /* the helper starts the word at 'f' */
    CHECK(files == 1);
    int f2 = 0;
    command_candidates_free(command_candidates(&s, "save \"my f", 6, "my f", &f2)); /* readline: at the quote */
    CHECK(f2 == 1);
    /* workspace tensors: COMPLETE_TENSOR (use), and after a COMPLETE_WORDS
     * command's first argument */
    CHECK(strcmp(cands(&s, "use l", NULL), "") == 0); /* empty workspace */
    add_tensor(&s, "layers.0.w1");
    add_tensor(&s, "layers.0.w2");
    add_tensor(&s, "tok_embeddings");
    CHECK(strcmp(cands(&s, "use layers.0.", NULL), "layers.0.w1 layers.0.w2") == 0);
    CHECK(strcmp(cands(&s, "use layers.0.w1 t", NULL), "tok_embeddings") == 0);
    CHECK(strcmp(cands(&s, "stats x layers.0.", NULL), "layers.0.w1 layers.0.w2") == 0);
    CHECK(strcmp(cands(&s, "stats x t", NULL), "tok_embeddings") == 0);
    /* typed positional arguments: a choice offers its words, a number nothing */
    CHECK(strcmp(cands(&s, "set ", NULL), "alpha bins color cube device echo errexit error_tokens format outlier_k "
                                          "qsur_method seed") == 0);
    CHECK(strcmp(cands(&s, "set format ", NULL), "human json") == 0);
    CHECK(strcmp(cands(&s, "set cube a", NULL), "asym") == 0);
    CHECK(strcmp(cands(&s, "set bins t", NULL), "") == 0);
    CHECK(strcmp(cands(&s, "set format json ", NULL), "") == 0);
    CHECK(strcmp(cands(&s, "demo ", NULL), "reset rotate scale") == 0);
    CHECK(strcmp(cands(&s, "scale ", NULL), "file smooth") == 0);
    CHECK(strcmp(cands(&s, "rotate hadamard ", NULL), "") == 0);
    CHECK(strcmp(cands(&s, "tokenizer ", NULL), "info load") == 0);
    CHECK(strcmp(cands(&s, "generate \"x\" t", NULL), "temp= top-p=") == 0);
    CHECK(strcmp(cands(&s, "quant w4 pre", NULL), "preset=paper-w4a16kv16 preset=paper-w4a4kv4") == 0);
    /* commands with nothing to complete offer nothing (no filename fallback) */
    CHECK(strcmp(cands(&s, "echo l", &files), "") == 0 && files == 0);
    CHECK(strcmp(cands(&s, "bogus x", &files), "") == 0 && files == 0);
    /* sub-commands, then their key= options at every position */
    CHECK(strcmp(cands(&s, "ostquant ", NULL), "layer model resume status") == 0);
    CHECK(strcmp(cands(&s, "ostquant m", NULL), "model") == 0);
    CHECK(strcmp(cands(&s, "ostquant model st", NULL), "stabilize= state= ste=const ste=minmax steps=") == 0);
    CHECK(strcmp(cands(&s, "ostquant model steps=3 lr=0.1 st", NULL), "stabilize= state= ste=const ste=minmax steps=") == 0);
    CHECK(strcmp(cands(&s, "ostquant model pre", NULL), "preset=paper preset=paper-tuned") == 0);
    CHECK(strcmp(cands(&s, "ostquant model loss=", NULL), "loss=ce loss=kltop loss=mse") == 0);
    CHECK(strcmp(cands(&s, "ostquant model no-", NULL), "no-scale no-womi") == 0);
    CHECK(strcmp(cands(&s, "ostquant model qsur-", NULL), "qsur-every= qsur-tokens=") == 0);
    CHECK(strcmp(cands(&s, "ostquant layer b", NULL), "block=") == 0);
    CHECK(strcmp(cands(&s, "ostquant layer t", NULL), "") == 0); /* options only, no tensors */
    CHECK(strcmp(cands(&s, "ostquant status ", NULL), "") == 0);
    /* resume FILE: the file position hands over to file names when no option
     * matches; after FILE only options */
    cands(&s, "ostquant resume st", &files);
    CHECK(files == 0);
    CHECK_MSG(strcmp(cands(&s, "ostquant resume st", NULL), "state= steps=") == 0, "[%s]", cands(&s, "ostquant resume st", NULL));
    cands(&s, "ostquant resume my", &files);
    CHECK(files == 1);
    cands(&s, "ostquant resume f.st q", &files);
    CHECK(files == 0 && strcmp(cands(&s, "ostquant resume f.st q", NULL), "qsur-every=") == 0);
    /* rotate: its own words and the `model` sub-command with its option */
    CHECK(strcmp(cands(&s, "rotate ", NULL), "hadamard model pca random rhadamard") == 0);
    CHECK(strcmp(cands(&s, "rotate model hadamard 3 st", NULL), "steps=") == 0);
    /* a method with its own options and a `model` sub-command */
    CHECK_MSG(strcmp(cands(&s, "gptq ", NULL), "act damp= model static-groups") == 0, "[%s]", cands(&s, "gptq ", NULL));
    CHECK(strcmp(cands(&s, "gptq model ", NULL), "act damp= float-acts layers= static-groups") == 0);
    CHECK(strcmp(cands(&s, "awq model 10 l", NULL), "layers=") == 0);
    CHECK(strcmp(cands(&s, "gptq act d", NULL), "damp=") == 0);
    CHECK(strcmp(cands(&s, "cqe model steps=3 w", NULL), "window=") == 0);
    CHECK(strcmp(cands(&s, "quantease model 3 i", NULL), "init=gptq init=rtn") == 0);
    /* every option of every spec is offered at positions 1, 2 and 3 */
    static const char *const subs[] = {"layer", "model", "resume"};
    static const char *const before[] = {"", "steps=1 ", "steps=1 no-scale "};
    for (int k = 0; k < 3; k++) {
        const command *c = command_sub(command_find("ostquant"), subs[k]);
        CHECK(c != NULL && c->opts != NULL);
        for (int i = 0; c && c->opts[i].key; i++)
            for (int b = 0; b < 3; b++) {
                char line[256], word[128];
                snprintf(word, sizeof word, "%s%s", c->opts[i].key,
                         c->opts[i].type == OPT_FLAG ? "" : c->opts[i].type == OPT_CHOICE ? "=ce" : "=");
                snprintf(line, sizeof line, "ostquant %s %s%s%.*s", subs[k], k == 2 ? "f " : "", before[b],
                         (int)strlen(c->opts[i].key), c->opts[i].key);
                const char *got = cands(&s, line, NULL);
                CHECK_MSG(strstr(got, c->opts[i].key) != NULL, "[%s] -> [%s]", line, got);
            }
    }
    session_free(&s);
    return check_done();
}
