/* Fast Hadamard plan vs dense sgemm by the materialised matrix, same process,
 * same data. Usage: bench_rotate [tokens] (default 4096; the 172-column case
 * uses 4x as many tokens, like a calibration set of 64 x 256). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "qsur/hadamard.h"
#include "qsur/rng.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int run(int64_t rows, int64_t n, int randomized)
{
    qsur_error err;
    qsur_hadamard_plan *p = NULL;
    qsur_hadamard_opts o = {randomized, 7};
    if (qsur_hadamard_plan_new(&p, n, &o, &err)) {
        fprintf(stderr, "bench_rotate: %s\n", err.msg);
        return 1;
    }
    float *X = malloc(sizeof(float) * rows * n), *A = malloc(sizeof(float) * rows * n),
          *B = malloc(sizeof(float) * rows * n), *R = malloc(sizeof(float) * n * n);
    if (!X || !A || !B || !R) {
        fprintf(stderr, "bench_rotate: no memory\n");
        return 1;
    }
    qsur_rng r;
    qsur_rng_seed(&r, 1);
    for (int64_t i = 0; i < rows * n; i++)
        X[i] = (float)qsur_rng_normal(&r);
    qsur_hadamard_plan_dense(p, R);
    double tf = INFINITY, td = INFINITY;
    for (int rep = 0; rep < 3; rep++) {
        memcpy(A, X, sizeof(float) * rows * n);
        double t0 = now();
        qsur_hadamard_plan_apply(p, A, rows, NULL, &err);
        double t1 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)n, (int)n, 1.0f, X,
                    (int)n, R, (int)n, 0.0f, B, (int)n);
        double t2 = now();
        tf = fmin(tf, t1 - t0);
        td = fmin(td, t2 - t1);
    }
    double e = 0;
    for (int64_t i = 0; i < rows * n; i++)
        e = fmax(e, fabs(A[i] - B[i]));
    printf("%6lld x %-5lld %-60s plan %8.2f ms   dense sgemm %8.2f ms   dense/plan %6.2fx   max|diff| %.2g\n",
           (long long)rows, (long long)n, p->desc, 1e3 * tf, 1e3 * td, td / tf, e);
    free(X); free(A); free(B); free(R);
    qsur_hadamard_plan_free(p);
    return 0;
}

int main(int argc, char **argv)
{
    int64_t tokens = argc > 1 ? atoll(argv[1]) : 4096;
    if (tokens < 1) {
        fprintf(stderr, "usage: bench_rotate [tokens]\n");
        return 2;
    }
    printf("best of 3; openblas threads: %d\n", openblas_get_num_threads());
    int rc = run(tokens, 4096, 0);
    rc |= run(tokens, 4096, 1);
    rc |= run(4 * tokens, 172, 0);
    rc |= run(tokens, 768, 0);
    return rc;
}
