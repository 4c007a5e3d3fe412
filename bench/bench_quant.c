/* Fake-quant throughput on a 4096 x 4096 float matrix (64 MiB), against a
 * memcpy of the same matrix in the same process. GB/s counts input bytes
 * (each pass reads 64 MiB and writes 64 MiB, like memcpy). Best of 5 runs.
 * Usage: bench_quant [rows cols] */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qsur/quant.h"
#include "qsur/tensor.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    int64_t rows = argc > 2 ? atoll(argv[1]) : 4096, cols = argc > 2 ? atoll(argv[2]) : 4096;
    int64_t n = rows * cols;
    float *x = qsur_alloc((size_t)n, sizeof(float)), *out = qsur_alloc((size_t)n, sizeof(float));
    if (!x || !out)
        return 1;
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 - 0.5);
    }
    memset(out, 0, (size_t)n * sizeof(float));
    double gb = (double)n * sizeof(float) / 1e9, best = 1e9;
    for (int r = 0; r < 5; r++) {
        double t0 = now();
        memcpy(out, x, (size_t)n * sizeof(float));
        double t = now() - t0;
        best = t < best ? t : best;
    }
    double memcpy_gbs = gb / best;
    printf("matrix %lldx%lld (%.1f MB)\n", (long long)rows, (long long)cols, gb * 1e3);
    printf("%-32s %8.2f GB/s\n", "memcpy", memcpy_gbs);
    struct { const char *name; qsur_quant_spec q; } cases[] = {
        {"int4 sym per-row", {4, 1, QSUR_GRAN_ROW, 0, 1.0, 0, 0, 0.0, 0, 0}},
        {"int4 sym per-group-128", {4, 1, QSUR_GRAN_GROUP, 128, 1.0, 0, 0, 0.0, 0, 0}},
        {"int4 asym per-group-128", {4, 0, QSUR_GRAN_GROUP, 128, 1.0, 0, 0, 0.0, 0, 0}},
        {"int4 sym per-row clip-search", {4, 1, QSUR_GRAN_ROW, 0, 1.0, 1, 0, 0.0, 0, 0}},
    };
    double rates[4];
    qsur_error err;
    for (int c = 0; c < 4; c++) {
        best = 1e9;
        int reps = cases[c].q.clip_search ? 1 : 5;
        for (int r = 0; r < reps; r++) {
            double t0 = now();
            if (qsur_fake_quant(&cases[c].q, x, rows, cols, out, NULL, &err) != QSUR_OK) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            double t = now() - t0;
            best = t < best ? t : best;
        }
        rates[c] = gb / best;
        printf("%-32s %8.2f GB/s  (%.3f s, %.2fx memcpy)\n", cases[c].name, rates[c], best,
               rates[c] / memcpy_gbs);
    }
    printf("summary: memcpy %.2f GB/s, int4 per-row %.2f GB/s (%.2fx), int4 group128 %.2f GB/s (%.2fx)\n",
           memcpy_gbs, rates[0], rates[0] / memcpy_gbs, rates[1], rates[1] / memcpy_gbs);
    free(x);
    free(out);
    return 0;
}
