#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "qsur/clock.h"
#include "ostquant_live.h"
#include "progress_line.h"
#include "text_escape.h"

static volatile sig_atomic_t sigint_seen;

static void on_sigint(int sig)
{
    (void)sig;
    sigint_seen = 1;
}

typedef struct {
    double last_draw;
    int drawn;
    double start, last_done; /* of the task being shown: a smaller done starts a new one */
    int sigint_at_step;  /* QSUR_TEST_SIGINT_AT_STEP, -1 when unset */
} progress_state;

static progress_state pstate; /* part of the UI session's terminal state */

/* The live QSUR of a running `ostquant model`: one line per new measurement,
 * kept on the screen above the bar (a training log the user can scroll). */
static void live_lines(session *s)
{
    const qsur_ostquant *o = s->training;
    while (o && s->training_shown < o->nqlog) {
        char line[512];
        ostquant_live_line(o, &o->qlog[s->training_shown++], line, sizeof line);
        if (pstate.drawn)
            fprintf(stderr, "\r%*s\r", 80, "");
        fprintf(stderr, "%s\n", line);
        pstate.drawn = 0;
        pstate.last_draw = 0; /* redraw the bar below it now */
    }
}

static int progress_cb(void *ctx, double done, const char *what, double value)
{
    session *s = ctx;
    /* Tests stop training at an exact step through the real Ctrl-C path
     * (handler, flag, the command's clean-up), not with a kill timed from
     * outside that a loaded machine would deliver early or late. */
    if (s->training && pstate.sigint_at_step >= 0 && s->training->step >= pstate.sigint_at_step) {
        pstate.sigint_at_step = -1;
        raise(SIGINT);
    }
    if (s->set.progress)
        live_lines(s);
    if (s->set.progress) {
        double t = qsur_seconds();
        if (done < pstate.last_done || pstate.start == 0)
            pstate.start = t;
        pstate.last_done = done;
        /* linear ETA once a little is done (the rate so far holds for big models:
         * every layer costs the same) */
        char eta[32] = "";
        if (done > 0.02 && done < 1.0 && t - pstate.start > 1.0)
            snprintf(eta, sizeof eta, " ETA %.0fs", (t - pstate.start) * (1.0 - done) / done);
        if (t - pstate.last_draw > 0.1 || done >= 1.0) {
            pstate.last_draw = t;
            int width = 30, fill = (int)(done * width + 0.5);
            if (fill < 0)
                fill = 0;
            if (fill > width)
                fill = width;
            char bar[64];
            memset(bar, '#', (size_t)fill);
            memset(bar + fill, '.', (size_t)(width - fill));
            bar[width] = '\0';
            char safe[128]; /* `what` may name a tensor from a file */
            text_escape(safe, sizeof safe, what ? what : "");
            if (isnan(value))
                fprintf(stderr, "\r[%s] %5.1f%% %-30.30s%-10s", bar, 100.0 * done, safe, eta);
            else
                fprintf(stderr, "\r[%s] %5.1f%% %-20.20s %.6g%-10s", bar, 100.0 * done, safe, value,
                        eta);
            fflush(stderr);
            pstate.drawn = 1;
        }
    }
    return sigint_seen ? 1 : 0;
}

void progress_line_install(session *s)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    s->interrupted = &sigint_seen;
    s->progress.fn = progress_cb;
    s->progress.ctx = s;
    s->set.progress = isatty(STDERR_FILENO);
    const char *at = getenv("QSUR_TEST_SIGINT_AT_STEP");
    pstate.sigint_at_step = at && *at ? atoi(at) : -1;
}

void progress_line_done(session *s)
{
    (void)s;
    pstate.start = 0;
    pstate.last_done = 0;
    if (pstate.drawn) {
        fprintf(stderr, "\r%*s\r", 80, "");
        fflush(stderr);
        pstate.drawn = 0;
    }
}
