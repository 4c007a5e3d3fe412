/* OSTQuant wall time and quality.
 * usage: bench_ostquant SHARED_DIR [steps] [wbits abits kvbits] [loss] [womi] [scales]
 *        bench_ostquant layer [steps] [d] [n]
 * Model scope (stories260K): float, RTN, init and OSTQuant eval perplexities
 * (calib on calib.u16, eval on eval.u16), the wall time of the whole
 * optimisation (init + train + fuse + weight RTN) and where the training time
 * goes (qsur_ostquant.time). lr is 0.01 unless OSTQ_LR is set.
 * Layer scope: qsur_ostquant_layer on a synthetic d-channel layer (default
 * d = 4096, X n x d with n = 5120 heavy-tailed tokens and outlier channels,
 * W d x d), W4A4 per-row symmetric; prints the output error before/after, the
 * wall time and where it goes (qsur_ostquant_layer_result.time). Environment:
 * OSTQ_BLOCK, OSTQ_ROWS, OSTQ_WROWS, OSTQ_LR, OSTQ_LRS (lr_scale), OSTQ_SEED
 * override those options. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qsur/ostquant.h"
#include "qsur/ostquant_layer.h"
#include "qsur/rng.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int progress(void *ctx, double done, const char *what, double value)
{
    (void)ctx;
    (void)done;
    fprintf(stderr, "\r%-30s loss %.5f   ", what, value);
    return 0;
}

static double ppl_of(qsur_llama *m, const qsur_tokens *ev, const qsur_quant_spec *w)
{
    qsur_error err;
    qsur_llama_ppl r;
    if (w->bits < 16 && qsur_llama_quantize_weights(m, w, NULL, &err))
        return NAN;
    if (qsur_llama_perplexity(m, NULL, ev, 0, 0, 8, NULL, &r, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return NAN;
    }
    qsur_llama_dequantize_weights(m);
    return r.ppl;
}

static void phase(const char *name, double s, double total)
{
    printf("  %-10s %8.2fs %5.1f%%\n", name, s, total > 0 ? 100.0 * s / total : 0.0);
}

/* Synthetic layer like a 7B model's: X rows are tokens with Student-t (3 dof)
 * entries, 32 outlier channels 20-50x larger, per-token magnitudes varying;
 * W Gaussian / sqrt(d). */
static int layer_bench(int steps, int64_t d, int64_t n)
{
    qsur_rng rng;
    qsur_rng_seed(&rng, 7);
    float *X = malloc((size_t)(n * d) * sizeof(float)), *W = malloc((size_t)(d * d) * sizeof(float));
    float *R = malloc((size_t)(d * d) * sizeof(float)), *sc = malloc((size_t)d * sizeof(float));
    double *cs = malloc((size_t)d * sizeof(double));
    if (!X || !W || !R || !sc || !cs)
        return fprintf(stderr, "out of memory for d = %lld\n", (long long)d), 1;
    for (int64_t j = 0; j < d; j++)
        cs[j] = 1.0;
    for (int k = 0; k < 32 && k < d; k++)
        cs[qsur_rng_below(&rng, (uint64_t)d)] = 20.0 + 30.0 * qsur_rng_uniform(&rng);
    for (int64_t i = 0; i < n; i++) {
        double tok = exp(0.5 * qsur_rng_normal(&rng));
        for (int64_t j = 0; j < d; j++) {
            double z = qsur_rng_normal(&rng), a = qsur_rng_normal(&rng), b = qsur_rng_normal(&rng),
                   c = qsur_rng_normal(&rng);
            X[i * d + j] = (float)(tok * cs[j] * z / sqrt((a * a + b * b + c * c) / 3.0));
        }
    }
    for (int64_t i = 0; i < d * d; i++)
        W[i] = (float)(qsur_rng_normal(&rng) / sqrt((double)d));
    qsur_quant_spec w = qsur_quant_default(), a = qsur_quant_default();
    qsur_ostquant_layer_opts o = qsur_ostquant_layer_default();
    if (steps >= 0)
        o.steps = steps;
    if (getenv("OSTQ_BLOCK"))
        o.block = atoi(getenv("OSTQ_BLOCK"));
    if (getenv("OSTQ_ROWS"))
        o.rows = atoi(getenv("OSTQ_ROWS"));
    if (getenv("OSTQ_WROWS"))
        o.wrows = atoi(getenv("OSTQ_WROWS"));
    if (getenv("OSTQ_LR"))
        o.lr = atof(getenv("OSTQ_LR"));
    if (getenv("OSTQ_LRS"))
        o.lr_scale = atof(getenv("OSTQ_LRS"));
    if (getenv("OSTQ_SEED"))
        o.seed = (uint64_t)atoll(getenv("OSTQ_SEED"));
    printf("layer scope: X %lld x %lld (t3 entries, 32 outlier channels x20-50), W %lld x %lld, W4A4 per-row sym\n",
           (long long)n, (long long)d, (long long)d, (long long)d);
    printf("steps %d lr %g lr_scale %g block %d rows %d wrows %d seed %llu\n", o.steps, o.lr, o.lr_scale, o.block,
           o.rows, o.wrows, (unsigned long long)o.seed);
    qsur_ostquant_layer_result res;
    qsur_error err;
    qsur_progress p = {progress, NULL};
    double t0 = now();
    clock_t c0 = clock();
    if (qsur_ostquant_layer(X, n, W, d, d, &w, &a, &o, R, sc, &res, &p, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    double t1 = now(), cpu = (double)(clock() - c0) / CLOCKS_PER_SEC;
    fprintf(stderr, "\n");
    printf("start rotation H: %s\n", res.hadamard);
    printf("output error (<=1024 tokens x <=1024 rows): identity %.4f -> OSTQuant %.4f\n", res.err_before,
           res.err_after);
    printf("loss step 1 %.5f, best (EMA) %.5f at step %d\n", res.loss_first, res.loss_best, res.best_step);
    /* CPU time of all threads: with OPENBLAS_NUM_THREADS=1 about the wall time
     * the run would take on an idle machine; on a busy one wall >> cpu */
    printf("wall %.2fs (%.4fs/step; engine reports %.2fs), process cpu %.2fs\n", t1 - t0,
           (t1 - t0) / (o.steps > 0 ? o.steps : 1), res.seconds, cpu);
    const qsur_ostquant_layer_timing *tm = &res.time;
    printf("where the time goes (qsur_ostquant_layer_result.time):\n");
    phase("transform", tm->transform, tm->total);
    phase("quant", tm->quant, tm->total);
    phase("gemm", tm->gemm, tm->total);
    phase("backward", tm->backward, tm->total);
    phase("step", tm->step, tm->total);
    phase("eval", tm->eval, tm->total);
    phase("other", tm->total - (tm->transform + tm->quant + tm->gemm + tm->backward + tm->step + tm->eval),
          tm->total);
    phase("total", tm->total, tm->total);
    free(X);
    free(W);
    free(R);
    free(sc);
    free(cs);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SHARED_DIR [steps] [wbits abits kvbits] [kltop|ce|mse] [womi 0|1] [scales 0|1]\n"
                        "       %s layer [steps] [d] [n]\n", argv[0], argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "layer"))
        return layer_bench(argc > 2 ? atoi(argv[2]) : -1, argc > 3 ? atoll(argv[3]) : 4096,
                           argc > 4 ? atoll(argv[4]) : 5120);
    char path[4096];
    qsur_error err;
    qsur_llama *m = NULL;
    snprintf(path, sizeof path, "%s/data/stories260K.bin", argv[1]);
    if (qsur_llama_load(&m, path, NULL, &err)) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    qsur_tokens cal, ev;
    snprintf(path, sizeof path, "%s/data/stories260K.calib.u16", argv[1]);
    if (qsur_tokens_load(&cal, path, 256, m->cfg.vocab_size, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    snprintf(path, sizeof path, "%s/data/stories260K.eval.u16", argv[1]);
    if (qsur_tokens_load(&ev, path, 256, m->cfg.vocab_size, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    qsur_ostquant_opts o = qsur_ostquant_default();
    o.lr = 0.01; /* the measured setting (default from branch ostq-export on) */
    if (argc > 2)
        o.steps = atoi(argv[2]);
    qsur_quant_spec w = qsur_quant_default(), a = qsur_quant_default(), kv = qsur_quant_default();
    if (argc > 5) {
        w.bits = atoi(argv[3]);
        a.bits = atoi(argv[4]);
        kv.bits = atoi(argv[5]);
    }
    if (argc > 6)
        o.loss = !strcmp(argv[6], "ce") ? QSUR_OSTQ_CE : !strcmp(argv[6], "mse") ? QSUR_OSTQ_MSE : QSUR_OSTQ_KLTOP;
    if (argc > 7)
        o.womi = atoi(argv[7]);
    if (argc > 8)
        o.learn_scales = atoi(argv[8]);
    if (getenv("OSTQ_LR"))
        o.lr = atof(getenv("OSTQ_LR"));
    if (getenv("OSTQ_LRS"))
        o.lr_scale = atof(getenv("OSTQ_LRS"));
    printf("W%dA%dKV%d steps %d loss %s womi %d scales %d lr %g lr_scale %g\n", w.bits, a.bits, kv.bits,
           o.steps, qsur_ostquant_loss_name(o.loss), o.womi, o.learn_scales, o.lr, o.lr_scale);
    printf("float ppl %.4f\n", ppl_of(m, &ev, &(qsur_quant_spec){.bits = 16}));
    m->hooks.act = a;
    m->hooks.kv = kv;
    printf("RTN ppl %.4f\n", ppl_of(m, &ev, &w));
    m->hooks = qsur_llama_hooks_none();
    double t0 = now();
    qsur_ostquant *os = NULL;
    if (qsur_ostquant_new(&os, m, &o, &w, &a, &kv, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    double t1 = now(), tinit = t1 - t0;
    qsur_llama *fz;
    qsur_llama_rotations *rot;
    qsur_ostquant_fuse(os, &fz, &rot, &err);
    printf("init (%s) ppl %.4f  (init %.2fs)\n", o.womi ? "WOMI" : "Hadamard", ppl_of(fz, &ev, &w), t1 - t0);
    qsur_llama_free(fz);
    qsur_llama_rotations_free(rot);
    qsur_progress p = {progress, NULL};
    t1 = now();
    if (qsur_ostquant_train(os, m, &cal, NULL, &p, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    double t2 = now();
    fprintf(stderr, "\n");
    qsur_ostquant_fuse(os, &fz, &rot, &err);
    if (w.bits < 16 && qsur_llama_quantize_weights(fz, &w, NULL, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    double t3 = now();
    printf("OSTQuant ppl %.4f  train %.1fs (%.3fs/step), best step %d\n", ppl_of(fz, &ev, &w), t2 - t1,
           (t2 - t1) / (o.steps > 0 ? o.steps : 1), os->best_step);
    if (os->nqlog > 0)
        printf("live QSUR: %d measurements, %.1f ms each (X log10 QSUR mean %.2f at step %d -> %.2f at step %d)\n",
               os->nqlog, 1e3 * os->time.qsur / os->nqlog, os->qlog[0].x_log10_mean, os->qlog[0].step,
               os->qlog[os->nqlog - 1].x_log10_mean, os->qlog[os->nqlog - 1].step);
    printf("full optimisation (init %.1fs + train %.1fs + fuse and weight RTN %.2fs): %.1fs\n", tinit,
           t2 - t1, t3 - t2, tinit + (t2 - t1) + (t3 - t2));
    const qsur_ostquant_timing *tm = &os->time;
    printf("where the training time goes (qsur_ostquant.time):\n");
    phase("fuse", tm->fuse, tm->total);
    phase("wquant", tm->wquant, tm->total);
    phase("forward", tm->forward, tm->total);
    phase("teacher", tm->teacher, tm->total);
    phase("loss", tm->loss, tm->total);
    phase("backward", tm->backward, tm->total);
    phase("ste", tm->ste, tm->total);
    phase("chain", tm->chain, tm->total);
    phase("optim", tm->optim, tm->total);
    phase("select", tm->select, tm->total);
    phase("qsur", tm->qsur, tm->total); /* live QSUR, qsur_every (default 10) */
    phase("other", tm->total - (tm->fuse + tm->wquant + tm->forward + tm->teacher + tm->loss + tm->backward +
                                tm->ste + tm->chain + tm->optim + tm->select + tm->eval + tm->qsur), tm->total);
    phase("total", tm->total, tm->total);
    qsur_llama_free(fz);
    qsur_llama_rotations_free(rot);
    qsur_ostquant_free(os);
    qsur_tokens_free(&cal);
    qsur_tokens_free(&ev);
    qsur_llama_free(m);
    return 0;
}
