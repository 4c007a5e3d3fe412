/* The readline prompt (see repl.h).
 *
 * Readline's alternate (callback) interface is used instead of readline():
 * the loop waits in pselect() with SIGINT unblocked only there, so Ctrl-C at
 * the prompt wakes it and the line is cleared, while readline itself installs
 * no signal handlers (rl_catch_signals = 0) and the one SIGINT handler stays
 * progress_line.c's, which long commands poll. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>
#include <readline/history.h>
#include <readline/readline.h>
#include "command.h"
#include "complete.h"
#include "layer_state.h"
#include "progress_line.h"
#include "repl.h"
#include "run_line.h"
#include "text_escape.h"
#include "script.h"

/* ---- prompt ------------------------------------------------------------------- */

static void spec_bits(const qsur_quant_spec *q, char *buf, size_t n)
{
    if (q->bits >= 16)
        snprintf(buf, n, "16");
    else
        snprintf(buf, n, "%d", q->bits);
}

static void spec_gran(const qsur_quant_spec *q, int is_act, char *buf, size_t n)
{
    switch (q->gran) {
    case QSUR_GRAN_TENSOR: snprintf(buf, n, "t"); break;
    case QSUR_GRAN_ROW: snprintf(buf, n, "%s", is_act ? "tok" : "ch"); break;
    case QSUR_GRAN_GROUP: snprintf(buf, n, "g%d", q->group); break;
    default: snprintf(buf, n, "?"); break;
    }
}

char *repl_prompt(const session *s)
{
    char wb[16], ab[16], wg[24], ag[24];
    spec_bits(&s->wq, wb, sizeof wb);
    spec_bits(&s->aq, ab, sizeof ab);
    spec_gran(&s->wq, 0, wg, sizeof wg);
    spec_gran(&s->aq, 1, ag, sizeof ag);
    const char *layer = s->current >= 0 && s->current < s->nlayers ? s->layers[s->current].name : NULL;
    char *p = NULL;
    int n;
    if (layer && *layer) {
        char safe[2 * QSUR_NAME_MAX];
        text_escape(safe, sizeof safe, layer);
        n = asprintf(&p, "qsur [%s | W%sA%s %s/%s] > ", safe, wb, ab, ag, wg);
    } else
        n = asprintf(&p, "qsur [W%sA%s %s/%s] > ", wb, ab, ag, wg);
    return n < 0 ? strdup("qsur> ") : p;
}

/* ---- readline glue -------------------------------------------------------------- *
 * Readline's callbacks take no context argument, so the running REPL is reached
 * through this one pointer, set only while repl_run is active. */
typedef struct {
    session *s;
    char *line;       /* the line readline handed over (owned) */
    int got_line;     /* on_line was called (line may be NULL: EOF) */
    char *history;    /* history file path, NULL without $HOME */
    int history_warned;
} repl_state;

static repl_state *active;

static void on_line(char *line)
{
    active->line = line;
    active->got_line = 1;
    /* Leave readline's line mode before the command runs: its output must not
     * be mixed with a redrawn prompt, and Ctrl-C must reach the command. */
    rl_callback_handler_remove();
}

static char *lcp_of(char **v)
{
    size_t n = strlen(v[0]);
    for (char **p = v + 1; *p; p++) {
        size_t i = 0;
        while (i < n && (*p)[i] == v[0][i])
            i++;
        n = i;
    }
    return strndup(v[0], n);
}

static char **on_complete(const char *text, int start, int end)
{
    (void)end;
    rl_attempted_completion_over = 1; /* no filename fallback unless asked for */
    int want_files = 0;
    char **c = command_candidates(active->s, rl_line_buffer, start, text, &want_files);
    if (want_files)
        return rl_completion_matches(text, rl_filename_completion_function);
    if (!c)
        return NULL;
    /* Readline's format: [0] = the text that replaces `text`, then the matches. */
    int n = 0;
    while (c[n])
        n++;
    char **m = malloc((size_t)(n + 2) * sizeof *m);
    if (!m) {
        command_candidates_free(c);
        return NULL;
    }
    if (n == 1) {
        m[0] = c[0];
        m[1] = NULL;
    } else {
        m[0] = lcp_of(c);
        memcpy(m + 1, c, (size_t)(n + 1) * sizeof *m);
    }
    free(c);
    return m;
}

static void history_remember(repl_state *st, const char *line)
{
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p)
        return;
    HIST_ENTRY *last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
    if (last && !strcmp(last->line, line))
        return;
    add_history(line);
    if (!st->history)
        return;
    /* append_history does not create the file. */
    int fd = open(st->history, O_WRONLY | O_CREAT | O_APPEND, 0600);
    int rc = fd < 0 ? errno : 0;
    if (fd >= 0) {
        close(fd);
        rc = append_history(1, st->history);
    }
    if (rc && !st->history_warned) {
        fprintf(stderr, "qsur: cannot write history %s: %s (continuing without it)\n", st->history,
                strerror(rc));
        st->history_warned = 1;
    }
}

/* Waits for input on stdin; returns 1 when there is some, 0 when Ctrl-C was
 * pressed (the flag is consumed), -1 on an error. SIGINT is blocked except
 * inside pselect so a Ctrl-C cannot slip in between the check and the wait. */
static int wait_input(session *s)
{
    sigset_t block, orig;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigprocmask(SIG_BLOCK, &block, &orig);
    int r;
    if (s->interrupted && *s->interrupted) {
        r = 0;
    } else {
        fd_set fds;
        FD_ZERO(&fds);
        FD_SET(fileno(rl_instream ? rl_instream : stdin), &fds);
        r = pselect(fileno(rl_instream ? rl_instream : stdin) + 1, &fds, NULL, NULL, NULL, &orig);
        if (r < 0 && errno == EINTR)
            r = s->interrupted && *s->interrupted ? 0 : 2; /* 2: other signal, wait again */
        else if (r < 0)
            r = -1;
        else
            r = 1;
    }
    if (r == 0 && s->interrupted)
        *s->interrupted = 0;
    sigprocmask(SIG_SETMASK, &orig, NULL);
    return r;
}

static void readline_setup(repl_state *st)
{
    rl_readline_name = "qsur";
    rl_catch_signals = 0;       /* SIGINT belongs to progress_line.c (see top) */
    rl_change_environment = 0;  /* keep $COLUMNS the user's: plots read it */
    rl_attempted_completion_function = on_complete;
    rl_completer_word_break_characters = " \t\n;";
    rl_completer_quote_characters = "\"'";
    using_history();
    stifle_history(REPL_HISTORY_MAX);
    const char *home = getenv("HOME");
    if (home && *home && asprintf(&st->history, "%s/.qsur_history", home) < 0)
        st->history = NULL;
    if (st->history)
        read_history(st->history); /* a missing file is the normal first run */
}

/* Ctrl-C at the prompt: drop the line. "^C" and the newline go out while
 * readline still owns the terminal: leaving line mode ends bracketed paste
 * with a '\r'. */
static void drop_line(void)
{
    rl_point = rl_end;
    rl_redisplay();
    fputs("^C", rl_outstream ? rl_outstream : stdout);
    rl_crlf();
    fflush(rl_outstream ? rl_outstream : stdout);
    rl_free_line_state();
    rl_callback_sigcleanup();
    rl_callback_handler_remove();
    using_history();
}

/* Reads one line with prompt into st->line. Returns 1 for a line (st->line
 * NULL: Ctrl-D on an empty line), 0 when Ctrl-C dropped it, -1 at an error. */
static int read_line(repl_state *st, const char *prompt)
{
    st->got_line = 0;
    st->line = NULL;
    rl_callback_handler_install(prompt, on_line);
    while (!st->got_line) {
        int w = wait_input(st->s);
        if (w == 1) {
            rl_callback_read_char();
        } else if (w == 0) {
            drop_line();
            return 0;
        } else if (w < 0) {
            rl_callback_handler_remove();
            return -1;
        }
    }
    return 1;
}

int repl_run(session *s)
{
    repl_state st = {0};
    st.s = s;
    active = &st;
    readline_setup(&st);
    strbuf pending = {0}; /* a line continued with a trailing backslash */
    while (!s->quit) {
        char *prompt = pending.len ? strdup("   ...> ") : repl_prompt(s);
        int got = read_line(&st, prompt ? prompt : "qsur> ");
        free(prompt); /* readline keeps its own copy */
        if (got < 0)
            break;
        if (got == 0) { /* interrupted: fresh prompt, any continuation dropped */
            strbuf_free(&pending);
            continue;
        }
        if (!st.line) { /* Ctrl-D on an empty line */
            fputs("\n", stdout);
            break;
        }
        size_t len = strlen(st.line);
        int cont = len > 0 && st.line[len - 1] == '\\';
        if (cont)
            st.line[len - 1] = '\0';
        strbuf_addf(&pending, "%s%s", pending.len ? " " : "", st.line);
        free(st.line);
        st.line = NULL;
        if (cont) {
            if (!pending.buf) /* a lone backslash: keep waiting for the rest */
                strbuf_addf(&pending, " ");
            continue;
        }
        if (pending.buf) {
            history_remember(&st, pending.buf);
            session_run_line(s, pending.buf, RUN_PROMPT, NULL);
        }
        strbuf_free(&pending);
        fflush(s->out);
        /* A Ctrl-C that landed in a command that never polled must not clear
         * the next prompt's line. */
        if (s->interrupted)
            *s->interrupted = 0;
    }
    strbuf_free(&pending);
    if (st.history)
        history_truncate_file(st.history, REPL_HISTORY_MAX);
    free(st.history);
    clear_history();
    active = NULL;
    return 0;
}
