/* Hadamard rotations for any size n.
 *
 * A plan is an n x n orthogonal matrix R applied to the rows of a matrix,
 * x <- x R (the design's X' = X R, W' = W R). It factors n = 2^k * m and uses
 *     R = D (H_{2^k} ⊗ B_m) / sqrt(2^k),
 * where H_{2^k} is the Sylvester (Walsh) matrix done by the fast Walsh–Hadamard
 * transform, B_m is an orthonormal m x m block and D is diag(random ±1) for the
 * randomized (QuaRot-style) variant, else I. Index i of a row is i = a*m + b
 * (a < 2^k, b < m), so one row reshaped to 2^k x m becomes H Xr B: one small
 * GEMM with B over the m-axis and one FWHT over the 2^k-axis, costing
 * O(n (k + m)) per row instead of O(n^2) for a dense product.
 *
 * Choice of m: the odd part o of n must be absorbed by the block. The plan takes
 * the SMALLEST m = o * 2^j that has a Hadamard matrix we can build (Sylvester,
 * Paley I/II over GF(q) for odd prime powers q, Williamson), i.e. the largest
 * Walsh factor, because the GEMM part is the expensive one (768 = 64 x 12, not
 * 2 x 384). Every LLaMA/Mistral/Qwen width gets a true Hadamard plan, e.g.
 * 11008 = 64 x 172 (Williamson 43), 13824 = 128 x 108 (Paley I q=107),
 * 14336 = 512 x 28. When no such m divides n (86 = 2 x 43, any odd n > 1), B is
 * a seeded Haar-random orthogonal o x o block instead, and the description says so:
 *   "hadamard 2 (walsh) x random-orthogonal 43 (seed 7)", "hadamard 12 (paley I q=11)",
 *   "hadamard 64 (walsh) x hadamard 12 (paley I q=11)", "hadamard 8 (walsh)",
 *   "hadamard 4 (walsh) x hadamard 172 (williamson 43)",
 *   "random signs (seed 7) then hadamard 64 (walsh)".
 * Seeds: the random block is qsur_random_orthogonal_f(o, seed); the signs come
 * from an rng seeded with seed + 0x9e3779b97f4a7c15 (a separate stream). */
#ifndef QSUR_HADAMARD_H
#define QSUR_HADAMARD_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"

typedef enum {
    QSUR_HBLOCK_NONE = 0,    /* no block (m == 1) / no construction known */
    QSUR_HBLOCK_SYLVESTER,   /* m = 2^j */
    QSUR_HBLOCK_PALEY1,      /* m = q + 1, q odd prime power, q ≡ 3 (mod 4) */
    QSUR_HBLOCK_PALEY2,      /* m = 2(q + 1), q odd prime power, q ≡ 1 (mod 4) */
    QSUR_HBLOCK_RANDOM,      /* fallback: Haar-random orthogonal block */
    QSUR_HBLOCK_WILLIAMSON   /* m = 4w from a published Williamson quadruple (w = 23, 29, 39, 43) */
} qsur_hblock_kind;

/* Which construction builds a ±1 Hadamard matrix of exactly order m (SYLVESTER
 * for m = 1, 2, 4, ...; PALEY1/2 with *q the field order, prime fields preferred
 * over prime powers; WILLIAMSON with *q = m/4; NONE if none known). q may be NULL.
 * Constructions and sources: hadamard_matrix.c and docs/transforms.md. */
qsur_hblock_kind qsur_hadamard_kind(int64_t m, int64_t *q);

/* 1 when qsur_hadamard_matrix can build order m: m = 2^j * b with b the
 * smallest such factor that qsur_hadamard_kind knows (*base = b, may be NULL). */
int qsur_hadamard_order_base(int64_t m, int64_t *base);

/* H: caller-owned m*m row-major entries ±1 with H H^T = m I (unnormalised):
 * the base matrix of qsur_hadamard_order_base, Sylvester-doubled
 * (H_2b = [[H_b, H_b], [H_b, -H_b]]) up to m. QSUR_ERR_ARG when none is known. */
int qsur_hadamard_matrix(int64_t m, int8_t *H, qsur_error *err);

/* In place x <- x H_n / sqrt(n) for each of rows rows of length n (Sylvester
 * order, so H_n[a][c] = (-1)^popcount(a & c); symmetric and its own inverse).
 * QSUR_ERR_ARG unless n is a power of two >= 1. */
int qsur_fwht_rows(float *x, int64_t rows, int64_t n, qsur_error *err);

/* How n would be factored: returns 1 when R is a true (scaled) Hadamard matrix,
 * 0 when the block would be the random fallback. Any out pointer may be NULL.
 * Cheap (no allocation); n >= 1. */
int qsur_hadamard_factor(int64_t n, int64_t *p2, int64_t *m, qsur_hblock_kind *kind,
                         int64_t *q);

typedef struct {
    int randomized;  /* 1: R = D H with D = diag(random ±1) (QuaRot) */
    uint64_t seed;   /* for the signs and for a random fallback block */
} qsur_hadamard_opts;

typedef struct {
    int64_t n;                   /* R is n x n */
    int64_t p2;                  /* 2^k, the FWHT factor */
    int64_t m;                   /* block order; 1 means no block */
    qsur_hblock_kind block_kind; /* NONE iff m == 1 */
    int64_t q;                   /* Paley field order or Williamson w, else 0 */
    int randomized;
    uint64_t seed;
    float *block;                /* m*m orthonormal row-major (B_m); NULL when m == 1 */
    float *signs;                /* n entries ±1 when randomized; NULL otherwise */
    char desc[192];              /* what was used, see the header comment */
} qsur_hadamard_plan;

/* opts may be NULL (deterministic H, seed 0). n in 1..2^24. The random
 * fallback costs O(o^3) once, at plan creation. */
int qsur_hadamard_plan_new(qsur_hadamard_plan **out, int64_t n,
                           const qsur_hadamard_opts *opts, qsur_error *err);
void qsur_hadamard_plan_free(qsur_hadamard_plan *p);

/* In place x <- x R for a rows x n row-major matrix (scratch: <= ~1 MB). */
int qsur_hadamard_plan_apply(const qsur_hadamard_plan *p, float *x, int64_t rows,
                             const qsur_progress *prog, qsur_error *err);
/* In place x <- x R^T (the inverse rotation). */
int qsur_hadamard_plan_apply_transpose(const qsur_hadamard_plan *p, float *x, int64_t rows,
                                       const qsur_progress *prog, qsur_error *err);

/* R written densely as n*n row-major floats (caller-owned), built entry by
 * entry from the Kronecker formula, not through the fast path, so tests can
 * compare the two. For fusing into weights: W R == apply(W). */
void qsur_hadamard_plan_dense(const qsur_hadamard_plan *p, float *R);

#endif
