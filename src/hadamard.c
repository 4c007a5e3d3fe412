/* Fast Walsh–Hadamard transform and Kronecker-factored rotation plans for any
 * size (the ±1 matrices themselves are built in hadamard_matrix.c). */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/hadamard.h"
#include "qsur/orthogonal.h"
#include "qsur/rng.h"
#include "qsur/tensor.h"
#include "vector_clones.h"

#define PLAN_MAX_N (INT64_C(1) << 24)
/* The random fallback block costs O(o^3) to build and O(n o) per row to apply;
 * past this the "fast" plan is no longer fast, so refuse instead of stalling. */
#define PLAN_MAX_RANDOM_BLOCK 8192
/* Scratch floats per apply chunk: a few rows at once, small enough for cache. */
#define APPLY_CHUNK_FLOATS (INT64_C(1) << 18)

static int is_pow2(int64_t n) { return n >= 1 && (n & (n - 1)) == 0; }

/* Butterflies u, v <- u + v, u - v over FW lanes: a fixed trip count, so the
 * compiler turns it into vector adds without a cost model or runtime checks. */
#define FW 8
QSUR_INLINE
static void butterfly_lanes(float *restrict u, float *restrict v)
{
    for (int l = 0; l < FW; l++) {
        float s = u[l], t = v[l];
        u[l] = s + t;
        v[l] = s - t;
    }
}

/* Stages h = 1, 2, 4 of a length-8 block in registers. Same additions in the
 * same order as three separate passes, so the result is bit-identical. */
QSUR_INLINE
static void fwht8(float *x)
{
    float a[8], b[8];
    for (int i = 0; i < 8; i += 2) {
        a[i] = x[i] + x[i + 1];
        a[i + 1] = x[i] - x[i + 1];
    }
    for (int i = 0; i < 8; i += 4)
        for (int j = 0; j < 2; j++) {
            b[i + j] = a[i + j] + a[i + j + 2];
            b[i + j + 2] = a[i + j] - a[i + j + 2];
        }
    for (int j = 0; j < 4; j++) {
        x[j] = b[j] + b[j + 4];
        x[j + 4] = b[j] - b[j + 4];
    }
}

/* Unnormalised FWHT of one contiguous length-p2 vector, then times scale.
 * Stages commute in exact arithmetic but not in floats, so they run in the
 * textbook order h = 1, 2, 4, ...: the first three inside 8-blocks, the rest
 * as lane-wide butterflies (the j loop is contiguous). */
QSUR_VECTOR_CLONES
static void fwht_row(float *x, int64_t p2, float scale)
{
    int64_t h = 1;
    if (p2 >= 2 * FW) {
        for (int64_t i = 0; i < p2; i += 8)
            fwht8(x + i);
        for (h = 8; h < p2; h *= 2)
            for (int64_t i = 0; i < p2; i += 2 * h)
                for (int64_t j = 0; j < h; j += FW)
                    butterfly_lanes(x + i + j, x + i + j + h);
    }
    for (; h < p2; h *= 2)
        for (int64_t i = 0; i < p2; i += 2 * h)
            for (int64_t j = i; j < i + h; j++) {
                float s = x[j], t = x[j + h];
                x[j] = s + t;
                x[j + h] = s - t;
            }
    int64_t i = 0;
    for (; i + FW <= p2; i += FW)
        for (int l = 0; l < FW; l++)
            x[i + l] *= scale;
    for (; i < p2; i++)
        x[i] *= scale;
}

/* Unnormalised butterflies over p2 "elements" that are each a contiguous vector
 * of w floats (w = m lets one pass transform the 2^k-axis of every column of a
 * reshaped 2^k x m row at once), then times scale. */
QSUR_VECTOR_CLONES
static void fwht_wide(float *x, int64_t p2, int64_t w, float scale)
{
    for (int64_t h = 1; h < p2; h *= 2)
        for (int64_t i = 0; i < p2; i += 2 * h)
            for (int64_t j = i; j < i + h; j++) {
                float *restrict u = x + j * w, *restrict v = x + (j + h) * w;
                for (int64_t b = 0; b < w; b++) {
                    float s = u[b], t = v[b];
                    u[b] = s + t;
                    v[b] = s - t;
                }
            }
    for (int64_t i = 0; i < p2 * w; i++)
        x[i] *= scale;
}

int qsur_fwht_rows(float *x, int64_t rows, int64_t n, qsur_error *err)
{
    if (!is_pow2(n) || rows < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "fwht: row length %lld is not a power of two",
                         (long long)n);
    float scale = (float)(1.0 / sqrt((double)n));
    for (int64_t r = 0; r < rows; r++)
        fwht_row(x + r * n, n, scale);
    return QSUR_OK;
}

int qsur_hadamard_factor(int64_t n, int64_t *p2, int64_t *m, qsur_hblock_kind *kind,
                         int64_t *q)
{
    int64_t o = n; /* the odd part of n */
    while (o > 0 && o % 2 == 0)
        o /= 2;
    int64_t bm = 1, bq = 0;
    qsur_hblock_kind bk = QSUR_HBLOCK_NONE;
    int exact = 1;
    if (o > 1) {
        /* A Hadamard order > 2 is a multiple of 4, so start at o * 4. */
        bk = QSUR_HBLOCK_RANDOM;
        bm = o;
        exact = 0;
        for (int64_t mm = o * 4; mm <= n; mm *= 2) {
            qsur_hblock_kind k = qsur_hadamard_kind(mm, &bq);
            if (k != QSUR_HBLOCK_NONE) {
                bk = k;
                bm = mm;
                exact = 1;
                break;
            }
        }
        if (!exact)
            bq = 0;
    }
    if (p2)
        *p2 = n / bm;
    if (m)
        *m = bm;
    if (kind)
        *kind = bk;
    if (q)
        *q = bq;
    return exact;
}

/* B_m = H_m / sqrt(m) as floats, through the ±1 matrix. */
static int block_fill(float *B, int64_t m, qsur_error *err)
{
    int8_t *H = malloc((size_t)(m * m));
    if (!H)
        return qsur_fail(err, QSUR_ERR_NOMEM, "hadamard block %lld: no memory", (long long)m);
    int rc = qsur_hadamard_matrix(m, H, err);
    const float scale = (float)(1.0 / sqrt((double)m));
    for (int64_t i = 0; rc == QSUR_OK && i < m * m; i++)
        B[i] = (float)H[i] * scale;
    free(H);
    return rc;
}

void qsur_hadamard_plan_free(qsur_hadamard_plan *p)
{
    if (!p)
        return;
    free(p->block);
    free(p->signs);
    free(p);
}

/* Long on purpose: straight-line construction (factor, block, signs, description), each failure
 * freeing the partial plan. */
int qsur_hadamard_plan_new(qsur_hadamard_plan **out, int64_t n,
                           const qsur_hadamard_opts *opts, qsur_error *err)
{
    *out = NULL;
    if (n < 1 || n > PLAN_MAX_N)
        return qsur_fail(err, QSUR_ERR_ARG, "hadamard plan: size %lld out of range 1..%lld",
                         (long long)n, (long long)PLAN_MAX_N);
    qsur_hadamard_plan *p = calloc(1, sizeof *p);
    if (!p)
        return qsur_fail(err, QSUR_ERR_NOMEM, "hadamard plan %lld: no memory", (long long)n);
    p->n = n;
    p->randomized = opts ? opts->randomized : 0;
    p->seed = opts ? opts->seed : 0;
    qsur_hadamard_factor(n, &p->p2, &p->m, &p->block_kind, &p->q);
    if (p->block_kind == QSUR_HBLOCK_RANDOM && p->m > PLAN_MAX_RANDOM_BLOCK) {
        qsur_hadamard_plan_free(p);
        return qsur_fail(err, QSUR_ERR_ARG,
                         "hadamard plan %lld: odd part %lld has no Hadamard block and is too "
                         "large (> %d) for a random orthogonal block; use a dense rotation",
                         (long long)n, (long long)(n / (n & -n)), PLAN_MAX_RANDOM_BLOCK);
    }
    int64_t m = p->m;
    if (m > 1) {
        p->block = qsur_alloc((size_t)(m * m), sizeof(float));
        if (!p->block) {
            qsur_hadamard_plan_free(p);
            return qsur_fail(err, QSUR_ERR_NOMEM, "hadamard plan %lld: no memory", (long long)n);
        }
        if (p->block_kind == QSUR_HBLOCK_RANDOM) {
            int rc = qsur_random_orthogonal_f(m, p->seed, p->block, err);
            if (rc != QSUR_OK) {
                qsur_hadamard_plan_free(p);
                return rc;
            }
        } else {
            int rc = block_fill(p->block, m, err);
            if (rc != QSUR_OK) {
                qsur_hadamard_plan_free(p);
                return rc;
            }
        }
    }
    if (p->randomized) {
        p->signs = qsur_alloc((size_t)n, sizeof(float));
        if (!p->signs) {
            qsur_hadamard_plan_free(p);
            return qsur_fail(err, QSUR_ERR_NOMEM, "hadamard plan %lld: no memory", (long long)n);
        }
        qsur_rng rng;
        qsur_rng_seed(&rng, p->seed + 0x9e3779b97f4a7c15ULL);
        for (int64_t i = 0; i < n; i++)
            p->signs[i] = qsur_rng_sign(&rng);
    }

    char blk[96] = "";
    switch (p->block_kind) {
    case QSUR_HBLOCK_PALEY1:
        snprintf(blk, sizeof blk, "hadamard %lld (paley I q=%lld)", (long long)m, (long long)p->q);
        break;
    case QSUR_HBLOCK_PALEY2:
        snprintf(blk, sizeof blk, "hadamard %lld (paley II q=%lld)", (long long)m, (long long)p->q);
        break;
    case QSUR_HBLOCK_WILLIAMSON:
        snprintf(blk, sizeof blk, "hadamard %lld (williamson %lld)", (long long)m, (long long)p->q);
        break;
    case QSUR_HBLOCK_RANDOM:
        snprintf(blk, sizeof blk, "random-orthogonal %lld (seed %llu)", (long long)m,
                 (unsigned long long)p->seed);
        break;
    default:
        break;
    }
    char sg[64] = "";
    if (p->randomized)
        snprintf(sg, sizeof sg, "random signs (seed %llu) then ", (unsigned long long)p->seed);
    if (m == 1)
        snprintf(p->desc, sizeof p->desc, "%shadamard %lld (walsh)", sg, (long long)p->p2);
    else if (p->p2 == 1)
        snprintf(p->desc, sizeof p->desc, "%s%s", sg, blk);
    else
        snprintf(p->desc, sizeof p->desc, "%shadamard %lld (walsh) x %s", sg, (long long)p->p2, blk);
    *out = p;
    return QSUR_OK;
}

/* x <- x R (transpose = 0) or x <- x R^T (transpose = 1). With Xr the row
 * reshaped to p2 x m: x R = vec(H Xr B) after the signs; x R^T = vec(H Xr B^T)
 * followed by the signs (H is symmetric, D diagonal). */
static int plan_apply(const qsur_hadamard_plan *p, float *x, int64_t rows, int transpose,
                      const qsur_progress *prog, qsur_error *err)
{
    if (rows < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "hadamard apply: negative row count %lld",
                         (long long)rows);
    const int64_t n = p->n, m = p->m, p2 = p->p2;
    int64_t chunk = APPLY_CHUNK_FLOATS / n;
    if (chunk < 1)
        chunk = 1;
    if (chunk > rows)
        chunk = rows;
    float *tmp = NULL;
    if (m > 1 && rows > 0) {
        tmp = qsur_alloc((size_t)(chunk * n), sizeof(float));
        if (!tmp)
            return qsur_fail(err, QSUR_ERR_NOMEM, "hadamard apply (%lld x %lld): no memory",
                             (long long)rows, (long long)n);
    }
    const float scale = (float)(1.0 / sqrt((double)p2));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
        float *xc = x + r0 * n;
        if (!transpose && p->signs)
            for (int64_t r = 0; r < nr; r++)
                for (int64_t i = 0; i < n; i++)
                    xc[r * n + i] *= p->signs[i];
        if (m > 1) {
            /* All nr*p2 length-m slices at once: row-major (nr*p2 x m) times B or B^T. */
            int64_t mr = nr * p2;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, transpose ? CblasTrans : CblasNoTrans,
                        (int)mr, (int)m, (int)m, 1.0f, xc, (int)m, p->block, (int)m, 0.0f,
                        tmp, (int)m);
            memcpy(xc, tmp, (size_t)(nr * n) * sizeof(float));
        }
        for (int64_t r = 0; r < nr; r++) {
            float *row = xc + r * n;
            if (p2 > 1 && m == 1)
                fwht_row(row, p2, scale);
            else if (p2 > 1)
                fwht_wide(row, p2, m, scale);
            if (transpose && p->signs)
                for (int64_t i = 0; i < n; i++)
                    row[i] *= p->signs[i];
        }
        int rc = qsur_progress_tick(prog, (double)(r0 + nr) / (double)rows, "hadamard", NAN, err);
        if (rc != QSUR_OK) {
            /* Rows already rotated cannot be left half-done: undo them. */
            for (int64_t u = 0; u < r0 + nr; u += chunk) {
                int64_t un = r0 + nr - u < chunk ? r0 + nr - u : chunk;
                plan_apply(p, x + u * n, un, !transpose, NULL, NULL);
            }
            free(tmp);
            return rc;
        }
    }
    free(tmp);
    return QSUR_OK;
}

int qsur_hadamard_plan_apply(const qsur_hadamard_plan *p, float *x, int64_t rows,
                             const qsur_progress *prog, qsur_error *err)
{
    return plan_apply(p, x, rows, 0, prog, err);
}

int qsur_hadamard_plan_apply_transpose(const qsur_hadamard_plan *p, float *x, int64_t rows,
                                       const qsur_progress *prog, qsur_error *err)
{
    return plan_apply(p, x, rows, 1, prog, err);
}

void qsur_hadamard_plan_dense(const qsur_hadamard_plan *p, float *R)
{
    const int64_t n = p->n, m = p->m;
    const double scale = 1.0 / sqrt((double)p->p2);
    /* R[(a m + b), (c m + d)] = s_(a m + b) * (-1)^popcount(a & c) / sqrt(p2) * B[b][d] */
    for (int64_t i = 0; i < n; i++) {
        int64_t a = i / m, b = i % m;
        double si = p->signs ? p->signs[i] : 1.0;
        for (int64_t j = 0; j < n; j++) {
            int64_t c = j / m, d = j % m;
            double h = (__builtin_popcountll((unsigned long long)(a & c)) & 1) ? -scale : scale;
            double blk = m > 1 ? p->block[b * m + d] : 1.0;
            R[i * n + j] = (float)(si * h * blk);
        }
    }
}
