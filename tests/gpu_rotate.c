/* `rotate model`'s weight rotations on the GPU (qsur_gpu_rotation_*, dense
 * fp32 GEMMs) against the CPU's fast transform (label gpu; exit 77 =
 * skipped when no GPU is usable). Written without a GPU at hand: not yet run
 * on one (docs/gpu.md).
 *
 * Checks, on stories260K (dim 64, hidden 172: a non-power-of-two plan, head
 * size 8, grouped-query attention) and on the 2-layer Llama-2-7B shape:
 *  - every weight (embeddings, classifier, all 7 linears of every layer)
 *    after norm fusion + residual + w2 + head rotations within 1e-5 relative
 *    L2 of the CPU's (float rounding; a wrong transpose or block layout is
 *    O(1) off); the two backend entries alone on a random matrix against a
 *    double-precision product, within the error bound of any fp32 summation
 *    order (n u sum |w_k R_kj|, u = 2^-24);
 *  - the rotated models' perplexity on the CPU equal to the float model's
 *    within 1e-4 relative (rotations keep the function), and the GPU-rotated
 *    model's within 1e-5 relative of the CPU-rotated model's. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "gpu_common.h"
#include "qsur/backend.h"
#include "qsur/clock.h"
#include "qsur/hadamard.h"
#include "qsur/llama.h"
#include "qsur/llama_edit.h"
#include "qsur/llama_rotate.h"
#include "qsur/llama_store.h"
#include "qsur/tokens.h"

/* The two entries on a random 3n x 2n (rows) / 2n x 3 (left) matrix against
 * the product in double with the dense plan. */
static void entries(int64_t n)
{
    qsur_error err;
    qsur_hadamard_plan *P = NULL;
    qsur_hadamard_opts o = {1, 11};
    CHECK_OK(qsur_hadamard_plan_new(&P, n, &o, &err), err);
    if (!P)
        return;
    double *R = calloc((size_t)(n * n), sizeof *R);
    float *I = calloc((size_t)(n * n), sizeof *I);
    const int64_t rows = 3 * n, cols = 2 * n; /* rows: 6n rows of n; left: 3 blocks */
    float *w = malloc((size_t)(rows * cols) * sizeof *w), *g = malloc((size_t)(rows * cols) * sizeof *g);
    if (!R || !I || !w || !g) {
        CHECK(0);
        goto out;
    }
    for (int64_t i = 0; i < n; i++)
        I[i * n + i] = 1.0f;
    CHECK_OK(qsur_hadamard_plan_apply(P, I, n, NULL, &err), err);
    for (int64_t i = 0; i < n * n; i++)
        R[i] = I[i];
    check_seed(5);
    gpu_fill(w, (size_t)(rows * cols), 1.0);
    qsur_gpu_rotation *gr = NULL;
    CHECK_OK(qsur_gpu_rotation_new(&gr, P, &err), err);
    if (!gr)
        goto out;
    /* rows: each of rows*cols/n rows x -> x R */
    memcpy(g, w, (size_t)(rows * cols) * sizeof *g);
    CHECK_OK(qsur_gpu_rotation_rows(gr, g, rows * cols / n, &err), err);
    /* any fp32 summation order of an n-term product: |error| <= n u sum |w_k R_kj|
     * (u = 2^-24, plus the result's own rounding); worst: the largest error
     * as a fraction of that bound */
    const double u = ldexp(1.0, -24);
    double worst = 0, big = 0;
    for (int64_t r = 0; r < rows * cols / n; r++)
        for (int64_t j = 0; j < n; j++) {
            double y = 0, a = 0;
            for (int64_t k = 0; k < n; k++) {
                y += (double)w[r * n + k] * R[k * n + j];
                a += fabs((double)w[r * n + k] * R[k * n + j]);
            }
            worst = fmax(worst, fabs(y - g[r * n + j]) / ((n + 1) * u * a));
            big = fmax(big, fabs(y - g[r * n + j]));
        }
    printf("rows  n=%lld: max |gpu - double| %.3g, %.3g of the fp32 bound\n", (long long)n, big, worst);
    CHECK(worst <= 1.0);
    /* left: each block of n rows W_b -> R^T W_b */
    memcpy(g, w, (size_t)(rows * cols) * sizeof *g);
    CHECK_OK(qsur_gpu_rotation_left(gr, g, rows, cols, &err), err);
    worst = big = 0;
    for (int64_t b = 0; b < rows / n; b++)
        for (int64_t i = 0; i < n; i++)
            for (int64_t c = 0; c < cols; c++) {
                double y = 0, a = 0;
                for (int64_t k = 0; k < n; k++) {
                    y += R[k * n + i] * w[(b * n + k) * cols + c];
                    a += fabs(R[k * n + i] * w[(b * n + k) * cols + c]);
                }
                worst = fmax(worst, fabs(y - g[(b * n + i) * cols + c]) / ((n + 1) * u * a));
                big = fmax(big, fabs(y - g[(b * n + i) * cols + c]));
            }
    printf("left  n=%lld: max |gpu - double| %.3g, %.3g of the fp32 bound\n", (long long)n, big, worst);
    CHECK(worst <= 1.0);
    CHECK(qsur_gpu_rotation_left(gr, g, n + 1, cols, &err) == QSUR_ERR_ARG); /* not whole blocks */
    qsur_gpu_rotation_free(gr);
out:
    free(R), free(I), free(w), free(g);
    qsur_hadamard_plan_free(P);
}

/* norm fusion, residual, w2 (online) and head rotations with seed 7, on the
 * GPU or the CPU; *h2 receives the online hook (the model points at it). */
static int rotate_all(qsur_llama *m, int gpu, qsur_llama_online_hadamard **h2, double *secs)
{
    qsur_error err;
    qsur_hadamard_plan *Q = NULL, *H = NULL;
    qsur_hadamard_opts o = {1, 7};
    qsur_llama_edit *e = NULL;
    *h2 = NULL;
    int rc = qsur_hadamard_plan_new(&Q, m->cfg.dim, &o, &err);
    o.seed = 9;
    if (!rc)
        rc = qsur_hadamard_plan_new(&H, m->cfg.head_size, &o, &err);
    if (!rc)
        rc = qsur_llama_online_hadamard_new(h2, m->cfg.hidden_dim, 8, &err);
    if (!rc)
        rc = qsur_llama_edit_new(&e, m, NULL, &err);
    double t0 = qsur_seconds();
    if (!rc) {
        qsur_llama_edit_use_gpu(e, gpu);
        CHECK(qsur_llama_edit_gpu(e) == gpu);
        rc = qsur_llama_fuse_norms(m, e, &err);
        if (!rc)
            rc = qsur_llama_rotate_residual(m, Q, e, &err);
        if (!rc)
            rc = qsur_llama_rotate_w2(m, *h2, e, &err);
        if (!rc)
            rc = qsur_llama_rotate_heads(m, H, e, &err);
        qsur_llama_edit_keep(e);
    }
    *secs = qsur_seconds() - t0;
    CHECK_OK(rc, err);
    qsur_hadamard_plan_free(Q);
    qsur_hadamard_plan_free(H);
    return rc;
}

/* Every weight of a (GPU-rotated) against b (CPU-rotated): relative L2. */
static void same_weights(qsur_llama *a, qsur_llama *b, double tol)
{
    qsur_error err;
    int n = qsur_llama_linear_count(a);
    double worst = 0;
    for (int i = -2; i < n; i++) {
        qsur_llama_linear *la = i == -2 ? &a->embed : i == -1 ? &a->output : qsur_llama_linear_at(a, i);
        qsur_llama_linear *lb = i == -2 ? &b->embed : i == -1 ? &b->output : qsur_llama_linear_at(b, i);
        const float *wa = NULL, *wb = NULL;
        float *ta = NULL, *tb = NULL;
        int rc = qsur_llama_linear_weights_alloc(la, &wa, &ta, &err);
        CHECK_OK(rc, err);
        if (!rc) {
            rc = qsur_llama_linear_weights_alloc(lb, &wb, &tb, &err);
            CHECK_OK(rc, err);
        }
        if (!rc) {
            double d = rel_l2(wa, wb, la->rows * la->cols);
            worst = fmax(worst, d);
            if (!(d <= tol))
                printf("  %s: rel L2 %.3g\n", la->name, d);
            CHECK(d <= tol);
        }
        free(ta), free(tb);
    }
    printf("  weights GPU vs CPU: worst rel L2 %.3g (tol %.0e)\n", worst, tol);
}

static double ppl(const qsur_llama *m, const qsur_tokens *t, int seq, int seqs)
{
    qsur_error err;
    qsur_llama_ppl p;
    int rc = qsur_llama_perplexity(m, NULL, t, seq, seqs, 8, NULL, &p, &err);
    CHECK_OK(rc, err);
    return rc ? NAN : p.ppl;
}

/* m0, mc, mg: the same model three times (float, to be CPU-rotated, to be
 * GPU-rotated); t: tokens for the perplexity (NULL: none). */
static void compare(const char *what, qsur_llama *m0, qsur_llama *mc, qsur_llama *mg,
                    const qsur_tokens *t, int seq, int seqs)
{
    printf("%s\n", what);
    qsur_llama_online_hadamard *hc = NULL, *hg = NULL;
    double sc = 0, sg = 0;
    if (rotate_all(mc, 0, &hc, &sc) || rotate_all(mg, 1, &hg, &sg))
        goto out;
    printf("  rotate: cpu %.2f s, gpu %.2f s (dense rotations made and uploaded included)\n", sc, sg);
    same_weights(mg, mc, 1e-5);
    if (t) {
        double p0 = ppl(m0, t, seq, seqs), pc = ppl(mc, t, seq, seqs), pg = ppl(mg, t, seq, seqs);
        printf("  ppl float %.8f, cpu-rotated %.8f, gpu-rotated %.8f\n", p0, pc, pg);
        CHECK_REL(pc, p0, 1e-4);
        CHECK_REL(pg, pc, 1e-5);
    }
out:
    /* the hooks point at hc/hg: free the models first */
    qsur_llama_free(mc), qsur_llama_free(mg), qsur_llama_free(m0);
    qsur_llama_online_hadamard_free(hc), qsur_llama_online_hadamard_free(hg);
}

static void stories(void)
{
    qsur_error err;
    qsur_llama *m[3] = {NULL, NULL, NULL};
    qsur_tokens t;
    for (int k = 0; k < 3; k++)
        CHECK_OK(qsur_llama_load(&m[k], check_shared("data/stories260K.bin"), NULL, &err), err);
    CHECK_OK(qsur_tokens_load(&t, check_shared("data/stories260K.eval.u16"), 256, 512, &err), err);
    if (m[0] && m[1] && m[2])
        compare("stories260K", m[0], m[1], m[2], &t, 256, 16);
    qsur_tokens_free(&t);
}

static void real_shape(void)
{
    qsur_llama *m0 = gpu_real_shape(64), *mc = gpu_real_shape(64), *mg = gpu_real_shape(64);
    if (!m0 || !mc || !mg) {
        qsur_llama_free(m0), qsur_llama_free(mc), qsur_llama_free(mg);
        return;
    }
    /* 4 x 64 random tokens: the function check on the real shape */
    qsur_tokens t;
    memset(&t, 0, sizeof t);
    int ids[256];
    check_seed(13);
    for (int i = 0; i < 256; i++)
        ids[i] = (int)(check_uniform() * 31999);
    t.ids = ids, t.n = 256, t.seq_len = 64;
    compare("2-layer Llama-2-7B shape", m0, mc, mg, &t, 64, 4);
}

int main(void)
{
    if (gpu_skip())
        return 77;
    entries(64);
    entries(172); /* not a power of two */
    stories();
    real_shape();
    return check_done();
}
