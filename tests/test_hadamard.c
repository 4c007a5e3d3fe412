/* Hadamard matrices, the FWHT and Kronecker rotation plans, checked against
 * exact integer arithmetic, a naive double reference and the dense matrix. */
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "hadamard_probe.h"
#include "qsur/hadamard.h"
#include "qsur/rng.h"

/* Exact H H^T == m I in integers, every entry ±1. */
static int hadamard_exact(const int8_t *H, int64_t m)
{
    for (int64_t i = 0; i < m * m; i++)
        if (H[i] != 1 && H[i] != -1)
            return 0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < m; j++) {
            int64_t s = 0;
            for (int64_t k = 0; k < m; k++)
                s += H[i * m + k] * H[j * m + k];
            if (s != (i == j ? m : 0))
                return 0;
        }
    return 1;
}

/* Same, through dgemm (integers below 2^53 are exact in double). */
static int hadamard_exact_dgemm(const int8_t *H, int64_t m)
{
    double *A = malloc(sizeof(double) * m * m), *G = malloc(sizeof(double) * m * m);
    int ok = 1;
    for (int64_t i = 0; i < m * m; i++) {
        A[i] = H[i];
        if (H[i] != 1 && H[i] != -1)
            ok = 0;
    }
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)m, (int)m, 1.0, A, (int)m,
                A, (int)m, 0.0, G, (int)m);
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < m; j++)
            if (G[i * m + j] != (i == j ? (double)m : 0.0))
                ok = 0;
    free(A);
    free(G);
    return ok;
}

static void fill_normal(float *x, int64_t n, uint64_t seed)
{
    qsur_rng r;
    qsur_rng_seed(&r, seed);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)qsur_rng_normal(&r);
}

static double max_abs_diff(const float *a, const float *b, int64_t n)
{
    double e = 0;
    for (int64_t i = 0; i < n; i++)
        e = fmax(e, fabs((double)a[i] - (double)b[i]));
    return e;
}

/* max |R^T R - I| through sgemm on the dense matrix. */
static double dense_orth_err(const float *R, int64_t n)
{
    float *G = malloc(sizeof(float) * n * n);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, R, (int)n,
                R, (int)n, 0.0f, G, (int)n);
    double e = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            e = fmax(e, fabs(G[i * n + j] - (i == j ? 1.0 : 0.0)));
    free(G);
    return e;
}

static void test_kinds(void)
{
    int64_t q;
    CHECK(qsur_hadamard_kind(1, &q) == QSUR_HBLOCK_SYLVESTER);
    CHECK(qsur_hadamard_kind(2, &q) == QSUR_HBLOCK_SYLVESTER);
    CHECK(qsur_hadamard_kind(4096, &q) == QSUR_HBLOCK_SYLVESTER);
    CHECK(qsur_hadamard_kind(12, &q) == QSUR_HBLOCK_PALEY1 && q == 11);
    CHECK(qsur_hadamard_kind(20, &q) == QSUR_HBLOCK_PALEY1 && q == 19);
    CHECK(qsur_hadamard_kind(28, &q) == QSUR_HBLOCK_PALEY2 && q == 13);
    CHECK(qsur_hadamard_kind(36, &q) == QSUR_HBLOCK_PALEY2 && q == 17);
    CHECK(qsur_hadamard_kind(44, &q) == QSUR_HBLOCK_PALEY1 && q == 43);
    CHECK(qsur_hadamard_kind(43, &q) == QSUR_HBLOCK_NONE && q == 0);
    CHECK(qsur_hadamard_kind(6, &q) == QSUR_HBLOCK_NONE);
    /* New with GF(p^k) and Williamson: orders with no prime-field Paley matrix. */
    CHECK(qsur_hadamard_kind(52, &q) == QSUR_HBLOCK_PALEY2 && q == 25);
    CHECK(qsur_hadamard_kind(344, &q) == QSUR_HBLOCK_PALEY1 && q == 343);
    CHECK(qsur_hadamard_kind(244, &q) == QSUR_HBLOCK_PALEY1 && q == 243);
    CHECK(qsur_hadamard_kind(340, &q) == QSUR_HBLOCK_PALEY2 && q == 169);
    CHECK(qsur_hadamard_kind(116, &q) == QSUR_HBLOCK_WILLIAMSON && q == 29);
    CHECK(qsur_hadamard_kind(156, &q) == QSUR_HBLOCK_WILLIAMSON && q == 39);
    CHECK(qsur_hadamard_kind(172, &q) == QSUR_HBLOCK_WILLIAMSON && q == 43);
    CHECK(qsur_hadamard_kind(40, &q) == QSUR_HBLOCK_NONE); /* 2 x 20: by doubling */
    int64_t b = 0;
    CHECK(qsur_hadamard_order_base(40, &b) == 1 && b == 20);
    CHECK(qsur_hadamard_order_base(11008, &b) == 1 && b == 5504); /* Paley I q=5503 */
    CHECK(qsur_hadamard_order_base(43, &b) == 0 && qsur_hadamard_order_base(86, NULL) == 0);
    qsur_error err;
    int8_t H[43 * 43];
    CHECK(qsur_hadamard_matrix(43, H, &err) == QSUR_ERR_ARG && strstr(err.msg, "43"));
}

/* Every order QuaRot/OSTQuant's hadamard_utils use, each exact. */
static void test_quarot_orders(void)
{
    static const int64_t orders[] = {12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 148, 156, 172};
    qsur_error err;
    for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++) {
        int64_t m = orders[i];
        int8_t *H = malloc((size_t)(m * m));
        CHECK_OK(qsur_hadamard_matrix(m, H, &err), err);
        CHECK_MSG(hadamard_exact(H, m), "H H^T != %lld I", (long long)m);
        free(H);
    }
}

/* Every width of the common LLaMA/Mistral/Qwen shapes gets a true Hadamard
 * plan (no random block). */
static void test_llm_sizes(void)
{
    static const int64_t sizes[] = {64,    128,   896,   2048,  3584,  4096,  4864, 5120,
                                    5632,  8192,  11008, 13824, 14336, 18944, 27648, 28672};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        int64_t m = 0;
        qsur_hblock_kind k;
        CHECK_MSG(qsur_hadamard_factor(sizes[i], NULL, &m, &k, NULL) == 1 &&
                      k != QSUR_HBLOCK_RANDOM,
                  "size %lld: no true Hadamard plan", (long long)sizes[i]);
    }
    int64_t p2, m, q;
    qsur_hblock_kind k;
    CHECK(qsur_hadamard_factor(11008, &p2, &m, &k, &q) == 1 && p2 == 64 && m == 172 &&
          k == QSUR_HBLOCK_WILLIAMSON && q == 43);
    CHECK(qsur_hadamard_factor(13824, &p2, &m, &k, &q) == 1 && p2 == 128 && m == 108 &&
          k == QSUR_HBLOCK_PALEY1 && q == 107);
    CHECK(qsur_hadamard_factor(5632, &p2, &m, &k, &q) == 1 && p2 == 128 && m == 44);
    CHECK(qsur_hadamard_factor(28672, &p2, &m, &k, &q) == 1 && p2 == 1024 && m == 28);
}

static void test_matrices_exact(void)
{
    qsur_error err;
    int built = 0, good = 0;
    for (int64_t m = 1; m <= 256; m++) {
        if (!qsur_hadamard_order_base(m, NULL))
            continue;
        int8_t *H = malloc((size_t)(m * m));
        CHECK_OK(qsur_hadamard_matrix(m, H, &err), err);
        built++;
        int ok = hadamard_exact(H, m);
        good += ok;
        CHECK_MSG(ok, "H H^T != %lld I", (long long)m);
        free(H);
    }
    /* 1, 2 and every multiple of 4 up to 256 except 188 = 4 x 47 and 236 = 4 x 59
     * (no Paley field, no Williamson quadruple in the table, no Hadamard half). */
    CHECK(built == 2 + 256 / 4 - 2);
    CHECK(good == built);
    /* The largest Paley I and Paley II orders <= 1100, through exact dgemm. */
    for (int kind = QSUR_HBLOCK_PALEY1; kind <= QSUR_HBLOCK_PALEY2; kind++) {
        int64_t m = 1100;
        while (qsur_hadamard_kind(m, NULL) != (qsur_hblock_kind)kind)
            m--;
        int8_t *H = malloc((size_t)(m * m));
        CHECK_OK(qsur_hadamard_matrix(m, H, &err), err);
        CHECK_MSG(hadamard_exact_dgemm(H, m), "H H^T != %lld I (dgemm)", (long long)m);
        free(H);
    }
}

/* Paley over proper prime-power fields, checked through exact dgemm:
 * GF(7^3) (Paley I, 344), GF(3^6) (Paley II, 1460), GF(3^3) (Paley I, 28). */
static void test_prime_power_fields(void)
{
    qsur_error err;
    static const int64_t orders[] = {344, 1460};
    for (size_t i = 0; i < sizeof orders / sizeof orders[0]; i++) {
        int64_t m = orders[i], q;
        CHECK(qsur_hadamard_kind(m, &q) != QSUR_HBLOCK_NONE && q > 100);
        int8_t *H = malloc((size_t)(m * m));
        CHECK_OK(qsur_hadamard_matrix(m, H, &err), err);
        CHECK_MSG(hadamard_exact_dgemm(H, m), "H H^T != %lld I (GF(%lld))", (long long)m,
                  (long long)q);
        free(H);
    }
}

static void test_fwht_reference(void)
{
    qsur_error err;
    for (int64_t n = 1; n <= 256; n *= 2) {
        float *x = malloc(sizeof(float) * 3 * n);
        double *ref = malloc(sizeof(double) * 3 * n);
        fill_normal(x, 3 * n, 100 + n);
        /* Naive y_c = sum_a x_a (-1)^popcount(a&c) / sqrt(n) in double. */
        for (int r = 0; r < 3; r++)
            for (int64_t c = 0; c < n; c++) {
                double s = 0;
                for (int64_t a = 0; a < n; a++)
                    s += x[r * n + a] * ((__builtin_popcountll((unsigned long long)(a & c)) & 1) ? -1.0 : 1.0);
                ref[r * n + c] = s / sqrt((double)n);
            }
        CHECK_OK(qsur_fwht_rows(x, 3, n, &err), err);
        double e = 0;
        for (int64_t i = 0; i < 3 * n; i++)
            e = fmax(e, fabs(x[i] - ref[i]));
        CHECK_MSG(e < 1e-5, "fwht n=%lld err %g", (long long)n, e);
        free(x);
        free(ref);
    }
    float y[12];
    CHECK(qsur_fwht_rows(y, 1, 12, &err) == QSUR_ERR_ARG && strstr(err.msg, "12"));
}

static void test_factor_and_desc(void)
{
    qsur_error err;
    int64_t p2, m, q;
    qsur_hblock_kind k;
    CHECK(qsur_hadamard_factor(172, &p2, &m, &k, &q) == 1 && p2 == 1 && m == 172 &&
          k == QSUR_HBLOCK_WILLIAMSON);
    CHECK(qsur_hadamard_factor(768, &p2, &m, &k, &q) == 1 && p2 == 64 && m == 12 &&
          k == QSUR_HBLOCK_PALEY1 && q == 11);
    CHECK(qsur_hadamard_factor(5120, &p2, &m, &k, &q) == 1 && p2 == 256 && m == 20);
    CHECK(qsur_hadamard_factor(8, &p2, &m, &k, &q) == 1 && p2 == 8 && m == 1 &&
          k == QSUR_HBLOCK_NONE);
    CHECK(qsur_hadamard_factor(1, &p2, &m, &k, &q) == 1 && p2 == 1 && m == 1);
    CHECK(qsur_hadamard_factor(86, &p2, &m, &k, &q) == 0 && p2 == 2 && m == 43);

    struct { int64_t n; int randomized; const char *desc; } cases[] = {
        {172, 0, "hadamard 172 (williamson 43)"},
        {688, 0, "hadamard 4 (walsh) x hadamard 172 (williamson 43)"},
        {86, 0, "hadamard 2 (walsh) x random-orthogonal 43 (seed 7)"},
        {52, 0, "hadamard 52 (paley II q=25)"},
        {12, 0, "hadamard 12 (paley I q=11)"},
        {28, 0, "hadamard 28 (paley II q=13)"},
        {768, 0, "hadamard 64 (walsh) x hadamard 12 (paley I q=11)"},
        {8, 0, "hadamard 8 (walsh)"},
        {43, 0, "random-orthogonal 43 (seed 7)"},
        {64, 1, "random signs (seed 7) then hadamard 64 (walsh)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        qsur_hadamard_plan *p = NULL;
        qsur_hadamard_opts o = {cases[i].randomized, 7};
        CHECK_OK(qsur_hadamard_plan_new(&p, cases[i].n, &o, &err), err);
        if (p) {
            CHECK_MSG(strcmp(p->desc, cases[i].desc) == 0, "desc '%s' expected '%s'", p->desc,
                      cases[i].desc);
            qsur_hadamard_plan_free(p);
        }
    }
    qsur_hadamard_plan *p = NULL;
    CHECK(qsur_hadamard_plan_new(&p, 0, NULL, &err) == QSUR_ERR_ARG && p == NULL);
}

/* The fast plan equals multiplication by the independently built dense R, and
 * R^T R = I on the dense matrix itself. */
static void test_dense(int64_t n, int randomized)
{
    qsur_error err;
    qsur_hadamard_opts o = {randomized, 11};
    qsur_hadamard_plan *p = NULL;
    int rc = qsur_hadamard_plan_new(&p, n, &o, &err);
    CHECK_OK(rc, err);
    if (rc)
        return;
    float *R = malloc(sizeof(float) * n * n);
    qsur_hadamard_plan_dense(p, R);
    const int rows = 5;
    float *x = malloc(sizeof(float) * rows * n), *y = malloc(sizeof(float) * rows * n);
    fill_normal(x, rows * n, 3);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, (int)n, (int)n, 1.0f, x, (int)n,
                R, (int)n, 0.0f, y, (int)n);
    CHECK_OK(qsur_hadamard_plan_apply(p, x, rows, NULL, &err), err);
    double e = max_abs_diff(x, y, rows * n);
    CHECK_MSG(e < 1e-5, "n=%lld (%s): fast vs dense err %g", (long long)n, p->desc, e);

    double oe;
    if (n <= 1024) {
        oe = dense_orth_err(R, n);
    } else {
        /* R R^T row by row with the fast transpose: O(n^2 log n), not n^3. */
        CHECK_OK(qsur_hadamard_plan_apply_transpose(p, R, n, NULL, &err), err);
        oe = 0;
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                oe = fmax(oe, fabs(R[i * n + j] - (i == j ? 1.0 : 0.0)));
    }
    CHECK_MSG(oe < 1e-5, "n=%lld (%s): |R^T R - I| = %g", (long long)n, p->desc, oe);
    free(R);
    free(x);
    free(y);
    qsur_hadamard_plan_free(p);
}

static void test_seeds(void)
{
    qsur_error err;
    qsur_hadamard_plan *a = NULL, *b = NULL, *c = NULL;
    qsur_hadamard_opts oa = {1, 5}, ob = {1, 5}, oc = {1, 6};
    CHECK_OK(qsur_hadamard_plan_new(&a, 172, &oa, &err), err);
    CHECK_OK(qsur_hadamard_plan_new(&b, 172, &ob, &err), err);
    CHECK_OK(qsur_hadamard_plan_new(&c, 172, &oc, &err), err);
    float *Ra = malloc(sizeof(float) * 172 * 172), *Rb = malloc(sizeof(float) * 172 * 172),
          *Rc = malloc(sizeof(float) * 172 * 172);
    qsur_hadamard_plan_dense(a, Ra);
    qsur_hadamard_plan_dense(b, Rb);
    qsur_hadamard_plan_dense(c, Rc);
    CHECK(memcmp(Ra, Rb, sizeof(float) * 172 * 172) == 0);
    CHECK(max_abs_diff(Ra, Rc, 172 * 172) > 0.01);
    int minus = 0;
    for (int i = 0; i < 172; i++)
        minus += a->signs[i] < 0;
    CHECK(minus > 40 && minus < 132); /* fair coin, far from all-one-sign */
    free(Ra);
    free(Rb);
    free(Rc);
    qsur_hadamard_plan_free(a);
    qsur_hadamard_plan_free(b);
    qsur_hadamard_plan_free(c);
}

int main(void)
{
    test_kinds();
    test_matrices_exact();
    test_fwht_reference();
    test_quarot_orders();
    test_llm_sizes();
    test_prime_power_fields();
    test_factor_and_desc();
    /* Every n <= 1024 here; every n <= 4096 in slow_hadamard_plans.c (the
     * Paley blocks up to order 4092 alone are ~2e9 entries to build). */
    CHECK(hadamard_probe_all(1024) > 150);
    int64_t sizes[] = {1, 2, 8, 12, 20, 28, 44, 43, 86, 172, 64, 256, 768, 1024, 4096};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        test_dense(sizes[i], 0);
        if (sizes[i] <= 1024) /* 4096 x 4096 twice is slow in the -O0 sanitizer build */
            test_dense(sizes[i], 1);
    }
    test_seeds();
    return check_done();
}
