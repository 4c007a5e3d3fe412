/* OSTQuant wall time and quality on stories260K.
 * usage: bench_ostquant SHARED_DIR [steps] [wbits abits kvbits] [loss] [womi] [scales]
 * Prints float, RTN and OSTQuant eval perplexities (calib on calib.u16, eval on
 * eval.u16) and the optimisation wall time with where it goes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qsur/ostquant.h"

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

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s SHARED_DIR [steps] [wbits abits kvbits] [kltop|ce|mse] [womi 0|1] [scales 0|1]\n", argv[0]);
        return 2;
    }
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
    double t1 = now();
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
    printf("OSTQuant ppl %.4f  train %.1fs (%.3fs/step), best step %d\n", ppl_of(fz, &ev, &w), t2 - t1,
           (t2 - t1) / (o.steps > 0 ? o.steps : 1), os->best_step);
    qsur_llama_free(fz);
    qsur_llama_rotations_free(rot);
    qsur_ostquant_free(os);
    qsur_tokens_free(&cal);
    qsur_tokens_free(&ev);
    qsur_llama_free(m);
    return 0;
}
