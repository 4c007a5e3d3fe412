/* Transform stack: undo/redo/reset are bit-exact, a new step drops the redo
 * tail, and the cumulative sum ln s matches the covariance log-determinants. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/rng.h"
#include "qsur/stack.h"

enum { N = 200, M = 40, D = 16 };

static double cov_logdet(const float *X, int64_t n)
{
    /* Naive centred covariance and Cholesky in double: the test's own reference. */
    double mu[D] = {0}, C[D * D];
    for (int64_t i = 0; i < n; i++)
        for (int j = 0; j < D; j++)
            mu[j] += X[i * D + j] / (double)n;
    for (int a = 0; a < D; a++)
        for (int b = 0; b < D; b++) {
            double s = 0;
            for (int64_t i = 0; i < n; i++)
                s += (X[i * D + a] - mu[a]) * (X[i * D + b] - mu[b]);
            C[a * D + b] = s / (double)n;
        }
    double ld = 0;
    for (int j = 0; j < D; j++) {
        for (int k = 0; k < j; k++)
            C[j * D + j] -= C[j * D + k] * C[j * D + k];
        double piv = sqrt(C[j * D + j]);
        ld += 2 * log(piv);
        C[j * D + j] = piv;
        for (int i = j + 1; i < D; i++) {
            for (int k = 0; k < j; k++)
                C[i * D + j] -= C[i * D + k] * C[j * D + k];
            C[i * D + j] /= piv;
        }
    }
    return ld;
}

typedef struct {
    float X[N * D], W[M * D];
} snap;

static void take(const qsur_stack *st, snap *s)
{
    memcpy(s->X, qsur_stack_x(st), sizeof s->X);
    memcpy(s->W, qsur_stack_w(st), sizeof s->W);
}

static int same(const qsur_stack *st, const snap *s)
{
    return memcmp(qsur_stack_x(st), s->X, sizeof s->X) == 0 &&
           memcmp(qsur_stack_w(st), s->W, sizeof s->W) == 0;
}

static int stop_now(void *ctx, double done, const char *what, double value)
{
    (void)ctx; (void)done; (void)what; (void)value;
    return 1;
}

int main(void)
{
    qsur_error err;
    static snap s0, s1, s2, s3;
    qsur_rng r;
    qsur_rng_seed(&r, 77);
    for (int i = 0; i < N * D; i++)
        s0.X[i] = (float)(qsur_rng_normal(&r) * ((i % D) == 2 ? 30.0 : 1.0));
    for (int i = 0; i < M * D; i++)
        s0.W[i] = (float)(qsur_rng_normal(&r) * 0.1);

    qsur_stack *st = NULL;
    CHECK_OK(qsur_stack_new(&st, s0.X, N, s0.W, M, D, &err), err);
    if (!st)
        return check_done();
    CHECK(qsur_stack_original_x(st) != s0.X && same(st, &s0)); /* copies, not borrows */
    CHECK(qsur_stack_undo(st, &err) == QSUR_ERR_ARG && strstr(err.msg, "nothing to undo"));
    CHECK(qsur_stack_redo(st, &err) == QSUR_ERR_ARG && strstr(err.msg, "nothing to redo"));

    /* Step 1: explicit scaling with a known sum ln s. */
    float sv[D];
    double ld1 = 0;
    for (int j = 0; j < D; j++) {
        sv[j] = (float)(0.5 + 0.25 * j);
        ld1 += log(sv[j]);
    }
    qsur_transform *t = NULL;
    CHECK_OK(qsur_transform_scale_new(&t, sv, D, "s.npy", &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    take(st, &s1);
    CHECK(!same(st, &s0));
    CHECK_NEAR(qsur_stack_log_det(st), ld1, 1e-12);
    /* The meaning of log_det: cov(X) log-determinant moved by -2 sum ln s. */
    CHECK_NEAR(cov_logdet(s1.X, N) - cov_logdet(s0.X, N), -2 * ld1, 1e-4);
    CHECK_NEAR(cov_logdet(s1.W, M) - cov_logdet(s0.W, M), 2 * ld1, 1e-4);

    /* Step 2: Hadamard rotation (no scaling). Step 3: SmoothQuant on the current state. */
    CHECK_OK(qsur_transform_hadamard_new(&t, D, 1, 3, &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    take(st, &s2);
    CHECK_NEAR(qsur_stack_log_det(st), ld1, 1e-12);
    CHECK_OK(qsur_transform_smoothquant_new(&t, qsur_stack_x(st), N, qsur_stack_w(st), M, D, 0.5, &err), err);
    double ld3 = t->log_det;
    CHECK(fabs(ld3) > 1e-3);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    take(st, &s3);
    CHECK(qsur_stack_depth(st) == 3 && qsur_stack_redo_depth(st) == 0);
    CHECK_NEAR(qsur_stack_log_det(st), ld1 + ld3, 1e-12);
    CHECK_NEAR(cov_logdet(s3.X, N) - cov_logdet(s0.X, N), -2 * (ld1 + ld3), 1e-3);

    /* Undo / redo walk the snapshots exactly. */
    CHECK_OK(qsur_stack_undo(st, &err), err);
    CHECK(same(st, &s2) && qsur_stack_depth(st) == 2 && qsur_stack_redo_depth(st) == 1);
    CHECK_NEAR(qsur_stack_log_det(st), ld1, 1e-12);
    CHECK_OK(qsur_stack_undo(st, &err), err);
    CHECK(same(st, &s1));
    CHECK_OK(qsur_stack_redo(st, &err), err);
    CHECK(same(st, &s2));
    CHECK_OK(qsur_stack_redo(st, &err), err);
    CHECK(same(st, &s3));
    CHECK(qsur_stack_redo(st, &err) == QSUR_ERR_ARG);

    char buf[2048];
    qsur_stack_undo(st, &err);
    qsur_stack_describe(st, buf, sizeof buf);
    CHECK(strstr(buf, "-> 2. rotate hadamard: random signs (seed 3) then hadamard 16 (walsh)") != NULL);
    CHECK(strstr(buf, " 3. scale smoothquant alpha=0.50") && strstr(buf, "(undone)"));
    CHECK(strstr(buf, "1 to redo") != NULL);
    char tiny[8];
    qsur_stack_describe(st, tiny, sizeof tiny);
    CHECK(strlen(tiny) == 7);

    /* Reset: the original, bit-exact; redo still replays. */
    CHECK(qsur_stack_reset(st) == 2);
    CHECK(same(st, &s0) && qsur_stack_log_det(st) == 0.0);
    CHECK(qsur_stack_redo_depth(st) == 3);
    CHECK_OK(qsur_stack_redo(st, &err), err);
    CHECK(same(st, &s1));

    /* State ids name contents: the original is 0, redo returns a state's id,
     * a push after undo gets a fresh one (caches keyed on ids stay right). */
    CHECK(qsur_stack_undo(st, &err) == QSUR_OK && qsur_stack_state_id(st) == 0);
    CHECK_OK(qsur_stack_redo(st, &err), err);
    uint64_t id1 = qsur_stack_state_id(st);
    CHECK_OK(qsur_stack_redo(st, &err), err);
    uint64_t id2 = qsur_stack_state_id(st);
    CHECK(id1 != 0 && id2 != 0 && id1 != id2);
    CHECK_OK(qsur_stack_undo(st, &err), err);
    CHECK(qsur_stack_state_id(st) == id1);

    /* A new step after undo drops the redo tail; the tail's buffers are kept as
     * spares for the next push. */
    const float *tail_x = st->states[2].X;
    CHECK_OK(qsur_transform_random_orthogonal_new(&t, D, 9, &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    CHECK(qsur_stack_state_id(st) != id1 && qsur_stack_state_id(st) != id2);
    CHECK(st->spare_X == tail_x && st->spare_W != NULL);
    CHECK(qsur_stack_depth(st) == 2 && qsur_stack_redo_depth(st) == 0);
    CHECK(qsur_stack_redo(st, &err) == QSUR_ERR_ARG);
    CHECK(qsur_stack_step(st, 2)->kind == QSUR_XF_RANDOM_ORTHOGONAL && qsur_stack_step(st, 3) == NULL);
    CHECK(!same(st, &s2));
    CHECK_NEAR(qsur_stack_log_det(st), ld1, 1e-12);
    CHECK(qsur_stack_bytes(st) >= 4 * (size_t)(N + M) * D * sizeof(float) + D * D * sizeof(float));

    /* Failed pushes leave everything as it was (tail included). */
    snap now;
    take(st, &now);
    CHECK_OK(qsur_stack_undo(st, &err), err);
    CHECK_OK(qsur_transform_hadamard_new(&t, 12, 0, 0, &err), err);
    CHECK(qsur_stack_push(st, t, NULL, &err) == QSUR_ERR_ARG && strstr(err.msg, "12"));
    qsur_progress stop = {stop_now, NULL};
    CHECK_OK(qsur_transform_random_orthogonal_new(&t, D, 10, &err), err);
    CHECK(qsur_stack_push(st, t, &stop, &err) == QSUR_ERR_INTERRUPTED);
    CHECK(same(st, &s1) && qsur_stack_redo_depth(st) == 1);
    CHECK(st->spare_X == tail_x); /* the interrupted push gave its buffer back */
    CHECK_OK(qsur_stack_redo(st, &err), err);
    CHECK(same(st, &now));
    /* The next push writes into the spare: the result is still exact. */
    CHECK_OK(qsur_stack_undo(st, &err), err);
    CHECK_OK(qsur_transform_random_orthogonal_new(&t, D, 9, &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    CHECK(qsur_stack_x(st) == tail_x && same(st, &now));
    qsur_stack_free(st);

    /* Many steps: the state array grows (and moves) under pushes; every state
     * still undoes to its exact snapshot and the log-det keeps adding up. */
    CHECK_OK(qsur_stack_new(&st, s0.X, N, s0.W, M, D, &err), err);
    enum { STEPS = 11 };
    static snap hist[STEPS + 1];
    take(st, &hist[0]);
    double ld = 0;
    for (int k = 1; k <= STEPS; k++) {
        if (k % 2) {
            CHECK_OK(qsur_transform_scale_new(&t, sv, D, NULL, &err), err);
            ld += ld1;
        } else {
            CHECK_OK(qsur_transform_hadamard_new(&t, D, 1, (uint64_t)k, &err), err);
        }
        CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
        take(st, &hist[k]);
        CHECK_NEAR(qsur_stack_log_det(st), ld, 1e-9);
    }
    int exact = 1;
    for (int k = STEPS - 1; k >= 0; k--) {
        CHECK_OK(qsur_stack_undo(st, &err), err);
        exact &= same(st, &hist[k]);
    }
    CHECK(exact && qsur_stack_log_det(st) == 0.0);
    for (int k = 1; k <= STEPS; k++) {
        CHECK_OK(qsur_stack_redo(st, &err), err);
        exact &= same(st, &hist[k]);
    }
    CHECK(exact);
    CHECK_NEAR(qsur_stack_log_det(st), 6 * ld1, 1e-9);
    qsur_stack_free(st);

    /* Weight-only and activation-only layers. */
    CHECK(qsur_stack_new(&st, NULL, 0, NULL, 0, D, &err) == QSUR_ERR_ARG);
    CHECK_OK(qsur_stack_new(&st, NULL, 0, s0.W, M, D, &err), err);
    CHECK(qsur_stack_x(st) == NULL);
    CHECK_OK(qsur_transform_scale_new(&t, sv, D, NULL, &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    CHECK_NEAR(qsur_stack_w(st)[M * D - 1], s0.W[M * D - 1] * sv[D - 1], 1e-7);
    CHECK(qsur_transform_pca_new(&t, qsur_stack_x(st), 0, D, NULL, &err) == QSUR_ERR_ARG);
    qsur_stack_free(st);
    CHECK_OK(qsur_stack_new(&st, s0.X, N, NULL, 0, D, &err), err);
    CHECK_OK(qsur_transform_pca_new(&t, qsur_stack_x(st), N, D, NULL, &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    CHECK(qsur_stack_w(st) == NULL && qsur_stack_depth(st) == 1);
    CHECK_NEAR(cov_logdet(qsur_stack_x(st), N), cov_logdet(s0.X, N), 1e-3);
    qsur_stack_free(st);

    /* With no spares, a push after undo writes into the last undone state's
     * memory: an interrupted push then costs that one redo step, nothing else. */
    CHECK_OK(qsur_stack_new(&st, s0.X, N, s0.W, M, D, &err), err);
    CHECK_OK(qsur_transform_hadamard_new(&t, D, 1, 4, &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    take(st, &s1);
    CHECK_OK(qsur_transform_scale_new(&t, sv, D, NULL, &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    const float *last_x = qsur_stack_x(st);
    CHECK_OK(qsur_stack_undo(st, &err), err);
    CHECK_OK(qsur_stack_undo(st, &err), err);
    CHECK(st->spare_X == NULL && qsur_stack_redo_depth(st) == 2);
    CHECK_OK(qsur_transform_random_orthogonal_new(&t, D, 5, &err), err);
    CHECK(qsur_stack_push(st, t, &stop, &err) == QSUR_ERR_INTERRUPTED);
    CHECK(same(st, &s0) && qsur_stack_depth(st) == 0 && qsur_stack_redo_depth(st) == 1);
    CHECK_OK(qsur_stack_redo(st, &err), err);
    CHECK(same(st, &s1));
    CHECK_OK(qsur_stack_undo(st, &err), err);
    CHECK_OK(qsur_transform_random_orthogonal_new(&t, D, 5, &err), err);
    CHECK_OK(qsur_stack_push(st, t, NULL, &err), err);
    CHECK(qsur_stack_x(st) == last_x && qsur_stack_redo_depth(st) == 0 && qsur_stack_depth(st) == 1);
    qsur_stack_free(st);
    return check_done();
}
