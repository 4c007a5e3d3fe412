/* ±1 Hadamard matrices by documented constructions: Sylvester, Paley I and II
 * over any odd prime-power field GF(q), Williamson quadruples from a published
 * table, and Sylvester doubling (H_2 ⊗ H) of any of these. */
#include <stdlib.h>
#include <string.h>
#include "qsur/hadamard.h"

static int is_pow2(int64_t n) { return n >= 1 && (n & (n - 1)) == 0; }

/* q = p^k with p an odd prime: sets *p, *k and returns 1; 0 otherwise. */
static int odd_prime_power(int64_t q, int64_t *p, int *k)
{
    if (q < 3 || q % 2 == 0)
        return 0;
    int64_t d = 3;
    while (d * d <= q && q % d != 0)
        d += 2;
    if (d * d > q)
        d = q; /* q itself is prime */
    int e = 0;
    while (q % d == 0) {
        q /= d;
        e++;
    }
    if (q != 1)
        return 0;
    *p = d;
    *k = e;
    return 1;
}

/* Williamson quadruples: first rows of four symmetric circulant ±1 matrices
 * A, B, C, D of odd order w with A^2 + B^2 + C^2 + D^2 = 4w I, so that
 *     H = [[ A,  B,  C,  D], [-B,  A, -D,  C], [-C,  D,  A, -B], [-D, -C,  B,  A]]
 * is Hadamard of order 4w (J. Williamson, Duke Math. J. 11, 1944). These are
 * the orders 4w with no Paley construction: 92 = 4 x 23 (Williamson's own
 * example), 116 = 4 x 29, 156 = 4 x 39 (LLaMA-1-30B 3 x hidden), 172 = 4 x 43 (LLaMA-2-7B
 * intermediate 11008 = 64 x 172). Rows 23, 29 and 43 are from M. Hall Jr.,
 * Combinatorial Theory, 2nd ed. (1986), Table of Williamson matrices (also in
 * N. J. A. Sloane's Library of Hadamard Matrices, had.172.will); row 39 from
 * S. London, Constructing New Turyn Type Sequences, T-Sequences and Hadamard
 * Matrices, PhD thesis, Univ. of Illinois at Chicago, 2013 (also in Sloane's
 * had.156.will family). The tests check H H^T = 4w I exactly. */
static const struct {
    int w;
    const char *row[4];
} williamson_table[] = {
    {23, {"++---+---+-++-+---+---+", "+-++-++--++++++--++-++-", "+++---++-+-++-+-++---++",
          "+++-+++-+------+-+++-++"}},
    {29, {"+++---++--+-+----+-+--++---++", "+-+---++--+-++++++-+--++---+-",
          "++++-++-+---++++++---+-++-+++", "++--+--+-+++-++++-+++-+--+--+"}},
    {39, {"+++--+-+-----+--++----++--+-----+-+--++", "+++--++-+---+-+--+----+--+-+---+-++--++",
          "++++---+--++----+-+--+-+----++--+---+++", "+---++-+-+-----+++-++-+++-----+-+-++---"}},
    {43, {"++---++++-+--+--++--------++--+--+-++++---+",
          "+++-+-++--+-+-++++-+----+-++++-+-+--++-+-++",
          "++-++++++----+-+--++-++-++--+-+----++++++-+",
          "+---++--++++-+-+++-++--++-+++-+-++++--++---"}},
};

static int williamson_index(int64_t m)
{
    if (m % 4 != 0)
        return -1;
    for (size_t i = 0; i < sizeof williamson_table / sizeof williamson_table[0]; i++)
        if (williamson_table[i].w == m / 4)
            return (int)i;
    return -1;
}

/* Prime fields first (the orders qsur always used keep their matrix), then
 * proper prime powers, then Williamson. */
qsur_hblock_kind qsur_hadamard_kind(int64_t m, int64_t *q)
{
    if (q)
        *q = 0;
    if (m < 1)
        return QSUR_HBLOCK_NONE;
    if (is_pow2(m))
        return QSUR_HBLOCK_SYLVESTER;
    int64_t p, c1 = m - 1, c2 = m % 2 == 0 ? m / 2 - 1 : 0;
    int k1 = 0, k2 = 0;
    int ok1 = c1 % 4 == 3 && odd_prime_power(c1, &p, &k1);
    int ok2 = c2 % 4 == 1 && odd_prime_power(c2, &p, &k2);
    for (int pass = 0; pass < 2; pass++) {
        int want_prime = pass == 0;
        if (ok1 && (k1 == 1) == want_prime) {
            if (q)
                *q = c1;
            return QSUR_HBLOCK_PALEY1;
        }
        if (ok2 && (k2 == 1) == want_prime) {
            if (q)
                *q = c2;
            return QSUR_HBLOCK_PALEY2;
        }
    }
    int w = williamson_index(m);
    if (w >= 0) {
        if (q)
            *q = williamson_table[w].w;
        return QSUR_HBLOCK_WILLIAMSON;
    }
    return QSUR_HBLOCK_NONE;
}

int qsur_hadamard_order_base(int64_t m, int64_t *base)
{
    int64_t b = m;
    while (b >= 1 && qsur_hadamard_kind(b, NULL) == QSUR_HBLOCK_NONE && b % 2 == 0)
        b /= 2;
    if (b < 1 || qsur_hadamard_kind(b, NULL) == QSUR_HBLOCK_NONE)
        return 0;
    if (base)
        *base = b;
    return 1;
}

/* GF(q), q = p^k: element x in [0, q) is the polynomial sum d_i t^i with d_i
 * the base-p digits of x. chi[x] is the quadratic character: 0 for 0, +1 for a
 * nonzero square, -1 otherwise. */
typedef struct {
    int64_t q, p;
    int k;
    int8_t *chi;
} gf_field;

/* a - b in GF(q): digit-wise mod p (for k = 1 just mod q). */
static int64_t gf_sub(const gf_field *f, int64_t a, int64_t b)
{
    if (f->k == 1)
        return a >= b ? a - b : a - b + f->q;
    int64_t r = 0, w = 1;
    for (int i = 0; i < f->k; i++) {
        int64_t d = (a % f->p - b % f->p + f->p) % f->p;
        r += d * w;
        w *= f->p;
        a /= f->p;
        b /= f->p;
    }
    return r;
}

/* For k > 1: searches a monic f(t) of degree k for which t has multiplicative
 * order q - 1 modulo f (f primitive, so Z_p[t]/f is the field and t generates
 * its units); then x = t^e is a square iff e is even. */
static int gf_chi_prime_power(gf_field *f)
{
    const int64_t p = f->p, q = f->q;
    const int k = f->k;
    int64_t c[32], t[32];
    for (int64_t cand = 1; cand < q; cand++) {
        /* f(t) = t^k + sum c_i t^i, c from the digits of cand (c_0 != 0). */
        int64_t v = cand;
        for (int i = 0; i < k; i++) {
            c[i] = v % p;
            v /= p;
        }
        if (c[0] == 0)
            continue;
        memset(f->chi, 0, (size_t)q);
        memset(t, 0, sizeof t);
        t[0] = 1;
        int64_t e = 0;
        for (;;) {
            int64_t idx = 0;
            for (int i = k - 1; i >= 0; i--)
                idx = idx * p + t[i];
            if (e > 0 && idx == 1)
                break;
            if (f->chi[idx] != 0 || e >= q - 1)
                break; /* repeated element before order q - 1: not primitive */
            f->chi[idx] = (e % 2 == 0) ? 1 : -1;
            /* t <- t * x mod f: shift up, t^k = -sum c_i t^i. */
            int64_t top = t[k - 1];
            for (int i = k - 1; i > 0; i--)
                t[i] = (t[i - 1] + (p - c[i]) * top) % p;
            t[0] = ((p - c[0]) * top) % p;
            e++;
        }
        if (e == q - 1)
            return 1;
    }
    return 0;
}

static int gf_init(gf_field *f, int64_t q)
{
    memset(f, 0, sizeof *f);
    if (!odd_prime_power(q, &f->p, &f->k) || f->k > 31)
        return 0;
    f->q = q;
    f->chi = malloc((size_t)q);
    if (!f->chi)
        return 0;
    if (f->k == 1) {
        for (int64_t x = 0; x < q; x++)
            f->chi[x] = -1;
        for (int64_t x = 1; x < q; x++)
            f->chi[(x * x) % q] = 1;
        f->chi[0] = 0;
        return 1;
    }
    if (!gf_chi_prime_power(f)) {
        free(f->chi);
        f->chi = NULL;
        return 0;
    }
    f->chi[0] = 0;
    return 1;
}

/* Jacobsthal entry Q_ij = chi(a_j - a_i) for field elements i, j in [0, q). */
static int jacobsthal(const gf_field *f, int64_t i, int64_t j) { return f->chi[gf_sub(f, j, i)]; }

static void paley1(const gf_field *f, int64_t m, int8_t *H)
{
    /* H = I + S, S = [[0, 1^T], [-1, Q]]: q ≡ 3 (mod 4) makes chi(-1) = -1, so
     * S is skew with S S^T = q I, and H H^T = I + S S^T = (q + 1) I. */
    for (int64_t j = 0; j < m; j++)
        H[j] = 1;
    for (int64_t i = 1; i < m; i++) {
        H[i * m] = -1;
        for (int64_t j = 1; j < m; j++)
            H[i * m + j] = (int8_t)(jacobsthal(f, i - 1, j - 1) + (i == j));
    }
}

static void paley2(const gf_field *f, int64_t m, int8_t *H)
{
    /* C = [[0, 1^T], [1, Q]] is a symmetric conference matrix (q ≡ 1 mod 4);
     * replace 0 by [[1,-1],[-1,-1]] and ±1 by ±[[1,1],[1,-1]]. */
    const int64_t c = f->q + 1;
    for (int64_t i = 0; i < c; i++)
        for (int64_t j = 0; j < c; j++) {
            int v = (i == 0 && j == 0) ? 0
                    : (i == 0 || j == 0) ? 1
                                         : jacobsthal(f, i - 1, j - 1);
            int64_t t = (2 * i) * m + 2 * j, b = t + m;
            if (v == 0) {
                H[t] = 1; H[t + 1] = -1; H[b] = -1; H[b + 1] = -1;
            } else {
                H[t] = (int8_t)v; H[t + 1] = (int8_t)v; H[b] = (int8_t)v; H[b + 1] = (int8_t)-v;
            }
        }
}

static void williamson(int idx, int8_t *H)
{
    /* Block (u, v) of H is sign * X where X is A, B, C or D. */
    static const int pick[4][4] = {{0, 1, 2, 3}, {1, 0, 3, 2}, {2, 3, 0, 1}, {3, 2, 1, 0}};
    static const int sign[4][4] = {{1, 1, 1, 1}, {-1, 1, -1, 1}, {-1, 1, 1, -1}, {-1, -1, 1, 1}};
    const int w = williamson_table[idx].w;
    const int64_t m = 4 * (int64_t)w;
    for (int u = 0; u < 4; u++)
        for (int v = 0; v < 4; v++) {
            const char *r = williamson_table[idx].row[pick[u][v]];
            for (int i = 0; i < w; i++)
                for (int j = 0; j < w; j++) {
                    int e = r[(j - i + w) % w] == '+' ? 1 : -1;
                    H[(u * w + i) * m + v * w + j] = (int8_t)(sign[u][v] * e);
                }
        }
}

/* H of the exact order b = kind's order (no doubling). */
static int build_base(int64_t b, int8_t *H, qsur_error *err)
{
    int64_t q;
    qsur_hblock_kind kind = qsur_hadamard_kind(b, &q);
    if (kind == QSUR_HBLOCK_SYLVESTER) {
        for (int64_t a = 0; a < b; a++)
            for (int64_t c = 0; c < b; c++)
                H[a * b + c] = (__builtin_popcountll((unsigned long long)(a & c)) & 1) ? -1 : 1;
        return QSUR_OK;
    }
    if (kind == QSUR_HBLOCK_WILLIAMSON) {
        williamson(williamson_index(b), H);
        return QSUR_OK;
    }
    gf_field f;
    if (!gf_init(&f, q))
        return qsur_fail(err, QSUR_ERR_NOMEM, "hadamard matrix %lld: no memory for GF(%lld)",
                         (long long)b, (long long)q);
    if (kind == QSUR_HBLOCK_PALEY1)
        paley1(&f, b, H);
    else
        paley2(&f, b, H);
    free(f.chi);
    return QSUR_OK;
}

int qsur_hadamard_matrix(int64_t m, int8_t *H, qsur_error *err)
{
    int64_t b;
    if (m < 1 || !qsur_hadamard_order_base(m, &b))
        return qsur_fail(err, QSUR_ERR_ARG,
                         "hadamard matrix: no Sylvester/Paley/Williamson construction of order %lld",
                         (long long)m);
    int rc = build_base(b, H, err);
    if (rc != QSUR_OK)
        return rc;
    /* Sylvester doubling in place, H_2b = [[H, H], [H, -H]], from the largest
     * order down so that no entry is overwritten before it is read. */
    for (int64_t n = b; n < m; n *= 2) {
        const int64_t n2 = 2 * n;
        for (int64_t i = n - 1; i >= 0; i--)
            for (int64_t j = n - 1; j >= 0; j--) {
                int8_t v = H[i * n + j];
                H[i * n2 + j] = v;
                H[i * n2 + n + j] = v;
                H[(i + n) * n2 + j] = v;
                H[(i + n) * n2 + n + j] = (int8_t)-v;
            }
    }
    return QSUR_OK;
}
