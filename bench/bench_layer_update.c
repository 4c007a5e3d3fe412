/* What one live update of the workbench costs on a 4096-channel layer: the
 * first metrics (eigen-decomposition of the original covariances), then each
 * transform's push and the incremental metrics after it, as the TUI does.
 * Usage: bench_layer_update [D] [TOKENS]   (default 4096 5120: more tokens than
 * channels, or the covariance is singular and QSUR is 0 by definition) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "command.h"
#include "layer_state.h"
#include "layer_transform.h"
#include "qsur/rng.h"
#include "qsur/stats.h"
#include "session.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void run(session *s, const char *line)
{
    qsur_error err;
    if (command_execute(s, line, &err) != QSUR_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

/* Metrics of the current state recomputed from scratch (the cache dropped,
 * then put back as it was), i.e. what the command above paid for them. */
static double metrics(session *s, int base)
{
    layer_metrics m;
    qsur_error err;
    layer_state *l = &s->layers[s->current];
    layer_metrics_cache keep[LAYER_CACHE_SLOTS];
    memcpy(keep, l->cache, sizeof keep);
    layer_metrics_forget(l, 0);
    double t = now();
    if (layer_metrics_compute(s, l, base, &m, &err) != QSUR_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    t = now() - t;
    memcpy(l->cache, keep, sizeof keep); /* as the command left them */
    return t;
}

/* The TUI's redraw after a command: metrics come from the cache, the channel
 * absmax bars of the shown matrix (X) are recomputed. */
static double channel_stats(session *s)
{
    layer_view v;
    qsur_error err;
    if (layer_view_get(s, &s->layers[s->current], 0, &v, &err) != QSUR_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    double *st = malloc((size_t)v.d * sizeof *st);
    double t = now();
    if (!st || qsur_column_absmax(v.x, v.n, v.d, st, &err) != QSUR_OK) {
        fprintf(stderr, "channel stats failed\n");
        exit(1);
    }
    t = now() - t;
    free(st);
    return t;
}

/* The equivalence error recomputed (its cached value put back after). */
static double equivalence(session *s)
{
    layer_state *l = &s->layers[s->current];
    layer_metrics_cache *memo = layer_metrics_cached(s, l);
    int had = memo ? memo->has_eq : 0;
    if (memo)
        memo->has_eq = 0;
    double eq, t = now();
    qsur_error err;
    if (layer_transform_equivalence(s, l, &eq, &err) != QSUR_OK) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    t = now() - t;
    if (memo)
        memo->has_eq = had;
    return t;
}

int main(int argc, char **argv)
{
    int64_t d = argc > 1 ? atoll(argv[1]) : 4096, n = argc > 2 ? atoll(argv[2]) : 5120, m = d;
    FILE *sink = fopen("/dev/null", "w");
    session s;
    session_init(&s, sink);
    qsur_tensor *X, *W;
    qsur_error err;
    if (qsur_tensor_new2(&X, "X", n, d, &err) || qsur_tensor_new2(&W, "W", m, d, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    qsur_rng rng;
    qsur_rng_seed(&rng, 1);
    for (int64_t i = 0; i < n * d; i++)
        X->data[i] = (float)(qsur_rng_normal(&rng) * ((i % d) % 97 == 0 ? 30.0 : 1.0));
    for (int64_t i = 0; i < m * d; i++)
        W->data[i] = (float)(qsur_rng_normal(&rng) / sqrt((double)d));
    qsur_workspace_put(&s.ws, X, &err);
    qsur_workspace_put(&s.ws, W, &err);
    run(&s, "use W X");
    run(&s, "quant w4a4");
    printf("layer: X %lldx%lld, W %lldx%lld\n", (long long)n, (long long)d, (long long)m, (long long)d);
    {
        layer_metrics m;
        double t = now();
        if (layer_metrics_compute(&s, &s.layers[s.current], 1, &m, &err) != QSUR_OK) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
        printf("first metrics (eigen-decomposition of both covariances): %.3f s\n", now() - t);
    }
    /* The second `rotate hadamard` runs after an undo, as a user trying things
     * does: its snapshot reuses the dropped state's memory. */
    const char *steps[] = {"rotate hadamard 1", "scale smooth 0.5", "undo", "undo",
                           "rotate hadamard 1", "undo", "redo", "rotate random 2"};
    printf("%-18s %9s %15s %12s %14s\n", "command", "total", "of which metrics", "equivalence",
           "+ TUI redraw");
    for (int i = 0; i < (int)(sizeof steps / sizeof *steps); i++) {
        qsur_error e2;
        double t = now();
        if (command_execute(&s, steps[i], &e2) != QSUR_OK) {
            fprintf(stderr, "%s\n", e2.msg);
            return 1;
        }
        double total = now() - t;
        double tc = channel_stats(&s), tm = metrics(&s, 0), te = equivalence(&s);
        printf("%-18s %6.0f ms %13.0f ms %9.0f ms %11.0f ms%s\n", steps[i], 1e3 * total, 1e3 * tm,
               1e3 * te, 1e3 * tc,
               strncmp(steps[i], "undo", 4) && strncmp(steps[i], "redo", 4) ? ""
                                                                             : "  (cached)");
    }
    session_free(&s);
    fclose(sink);
    return 0;
}
