/* Throughput of the Llama runtime on stories260K: perplexity on the 64 x 256
 * eval stream (float and w4a4kv4 fake quant) and calibration capture, with
 * the time split the run state accumulates (GEMM / attention / quantization /
 * other) and the peak resident memory.
 *
 *     ./build/bench_llama [SHARED_DIR] [BATCH] [BLAS_THREADS]
 * defaults: ../shared (or $QSUR_SHARED), 8, 1. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include "qsur/llama.h"
#include "qsur/llama_wquant.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Wall time and CPU time both: on a loaded shared machine wall time mostly
 * measures the neighbours. */
static void report(const char *what, double secs, double cpu_secs, int64_t tokens,
                   const qsur_llama_timers *t)
{
    double tot = t->gemm + t->attention + t->quant + t->other;
    printf("%-14s wall %6.3f s %7.0f tok/s | cpu %6.3f s %7.0f tok/s | gemm %4.1f%% "
           "attention %4.1f%% quant %4.1f%% other %4.1f%%\n", what, secs, (double)tokens / secs,
           cpu_secs, (double)tokens / cpu_secs, 100 * t->gemm / tot, 100 * t->attention / tot,
           100 * t->quant / tot, 100 * t->other / tot);
}

static int fail(const qsur_error *err)
{
    fprintf(stderr, "bench_llama: %s\n", err->msg);
    return 1;
}

int main(int argc, char **argv)
{
    const char *env = getenv("QSUR_SHARED");
    const char *shared = argc > 1 ? argv[1] : env && *env ? env : "../shared";
    int batch = argc > 2 ? atoi(argv[2]) : 8;
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    openblas_set_num_threads(threads);
    char path[4096];
    qsur_error err;
    qsur_llama *m = NULL;
    snprintf(path, sizeof path, "%s/data/stories260K.bin", shared);
    if (qsur_llama_load(&m, path, NULL, &err))
        return fail(&err);
    qsur_tokens ev, cal;
    snprintf(path, sizeof path, "%s/data/stories260K.eval.u16", shared);
    if (qsur_tokens_load(&ev, path, 256, m->cfg.vocab_size, &err))
        return fail(&err);
    snprintf(path, sizeof path, "%s/data/stories260K.calib.u16", shared);
    if (qsur_tokens_load(&cal, path, 256, m->cfg.vocab_size, &err))
        return fail(&err);
    printf("stories260K, %lld eval tokens, batch %d, BLAS threads %d\n", (long long)ev.n, batch,
           threads);

    qsur_llama_state *s = NULL;
    if (qsur_llama_state_new(&s, m, batch, 256, &err))
        return fail(&err);
    qsur_llama_ppl r;
    double t0 = now(), c0 = cpu();
    if (qsur_llama_perplexity(m, s, &ev, 0, 0, batch, NULL, &r, &err))
        return fail(&err);
    double t1 = now(), c1 = cpu();
    printf("float ppl %.4f\n", r.ppl);
    report("ppl float", t1 - t0, c1 - c0, ev.n, &s->timers);

    qsur_quant_spec q4 = qsur_quant_default(); /* int4 sym per-row */
    if (qsur_llama_quantize_weights(m, &q4, NULL, &err))
        return fail(&err);
    m->hooks.act = q4;
    m->hooks.kv = q4;
    memset(&s->timers, 0, sizeof s->timers);
    t0 = now();
    c0 = cpu();
    if (qsur_llama_perplexity(m, s, &ev, 0, 0, batch, NULL, &r, &err))
        return fail(&err);
    t1 = now();
    c1 = cpu();
    printf("w4a4kv4 RTN ppl %.4f\n", r.ppl);
    report("ppl w4a4kv4", t1 - t0, c1 - c0, ev.n, &s->timers);
    m->hooks = qsur_llama_hooks_none();
    qsur_llama_dequantize_weights(m);

    qsur_workspace ws;
    qsur_workspace_init(&ws);
    memset(&s->timers, 0, sizeof s->timers);
    int64_t n = 0;
    t0 = now();
    c0 = cpu();
    if (qsur_llama_capture(m, s, &cal, 0, 0, batch, 0, 1, &ws, &n, NULL, &err))
        return fail(&err);
    t1 = now();
    c1 = cpu();
    size_t floats = 0;
    for (int i = 0; i < ws.count; i++)
        floats += (size_t)qsur_tensor_numel(ws.items[i]);
    printf("capture: %lld tokens, %d tensors, %.1f MB\n", (long long)n, ws.count,
           floats * 4.0 / 1e6);
    report("capture (all)", t1 - t0, c1 - c0, cal.n, &s->timers);

    /* Sequential model-level GPTQ (w4 per row) on 16 x 256 calibration
     * tokens: 4 captures per layer plus the GPTQ solves. */
    qsur_llama_wquant_opts wo = qsur_llama_wquant_default();
    wo.max_seqs = 16;
    wo.batch = batch;
    t0 = now();
    c0 = cpu();
    if (qsur_llama_wquant(m, &cal, &q4, &wo, NULL, NULL, &err))
        return fail(&err);
    t1 = now();
    c1 = cpu();
    printf("gptq model (w4 row, 16x256 calib, %d linears): wall %.3f s, cpu %.3f s\n",
           qsur_llama_linear_count(m), t1 - t0, c1 - c0);
    qsur_llama_dequantize_weights(m);

    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS %.1f MB\n", ru.ru_maxrss / 1024.0);
    qsur_workspace_clear(&ws);
    qsur_llama_state_free(s);
    qsur_tokens_free(&ev);
    qsur_tokens_free(&cal);
    qsur_llama_free(m);
    return 0;
}
