/* QuantEase: cyclic coordinate descent on the layer-wise objective, with an
 * optional sparse set of full-precision outliers. The derivation and the
 * monotonicity argument are in include/qsur/quantease.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>
#include "qsur/quantease.h"
#include "qsur/tensor.h"

qsur_quantease_opts qsur_quantease_default(void)
{
    qsur_quantease_opts o;
    o.sweeps = 3;
    o.init = QSUR_QE_INIT_RTN;
    o.gptq = qsur_gptq_default();
    o.outlier_frac = 0.0;
    o.block = 128;
    return o;
}

void qsur_outliers_free(qsur_outliers *o)
{
    if (!o)
        return;
    free(o->index);
    free(o->value);
    o->index = NULL;
    o->value = NULL;
    o->count = 0;
}

typedef struct {
    int64_t m, n, k;    /* rows, cols, outliers kept */
    double *H;          /* n x n */
    double *T;          /* m x n target W - S */
    double *R;          /* m x n residual T - Q */
    double *P;          /* m x n, R H */
    double *S;          /* m x n sparse outlier part (k > 0 only) */
    int64_t *supp;      /* k positions of S's support, ascending */
    double *mag;        /* m x n scratch for top-k (k > 0 only) */
    int64_t *nsupp;     /* k scratch */
    double *Rb, *Tb, *Pb, *Db; /* m x B block copies */
    float *Qb;
    qsur_qweight *own;
} qe_work;

static void work_free(qe_work *w)
{
    free(w->H);
    free(w->T);
    free(w->R);
    free(w->P);
    free(w->S);
    free(w->supp);
    free(w->mag);
    free(w->nsupp);
    free(w->Rb);
    free(w->Tb);
    free(w->Pb);
    free(w->Db);
    free(w->Qb);
    qsur_qweight_free(w->own);
}

static double dot_all(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* One cyclic pass over all columns (see the header for the update). */
static int cd_sweep(qe_work *w, qsur_qweight *qw, float *Q, int64_t B, double done0,
                    double done_span, const qsur_progress *prog, qsur_error *err)
{
    const int64_t m = w->m, n = w->n;
    const double *H = w->H;
    for (int64_t j0 = 0; j0 < n; j0 += B) {
        int rc = qsur_progress_tick(prog, done0 + done_span * (double)j0 / (double)n, "quantease",
                                    NAN, err);
        if (rc != QSUR_OK)
            return rc;
        const int64_t nb = n - j0 < B ? n - j0 : B;
        for (int64_t i = 0; i < m; i++) {
            memcpy(w->Rb + i * nb, w->R + i * n + j0, (size_t)nb * sizeof(double));
            memcpy(w->Tb + i * nb, w->T + i * n + j0, (size_t)nb * sizeof(double));
            memcpy(w->Pb + i * nb, w->P + i * n + j0, (size_t)nb * sizeof(double));
            memcpy(w->Qb + i * nb, Q + i * n + j0, (size_t)nb * sizeof(float));
        }
        memset(w->Db, 0, (size_t)(m * nb) * sizeof(double));
        for (int64_t jj = 0; jj < nb; jj++) {
            const int64_t j = j0 + jj;
            const double h = H[j * n + j];
            if (!(h > 0.0))
                continue; /* dead input: f does not depend on this column */
            for (int64_t i = 0; i < m; i++) {
                const double r_old = w->Rb[i * nb + jj], t = w->Tb[i * nb + jj];
                const double b = w->Pb[i * nb + jj] - r_old * h; /* sum_{k!=j} R_ik H_kj */
                const float q = qsur_qparams_apply(qsur_qweight_map(qw, i, j), (float)(t + b / h));
                const double r_new = t - (double)q;
                if (r_new == r_old)
                    continue;
                /* Exact change of row i's objective; > 0 only through rounding. */
                const double df = h * (r_new * r_new - r_old * r_old) + 2.0 * b * (r_new - r_old);
                if (df > 0.0)
                    continue;
                w->Qb[i * nb + jj] = q;
                w->Rb[i * nb + jj] = r_new;
                w->Db[i * nb + jj] = r_new - r_old;
            }
            /* Row-major: Pb[:, jj+1:nb] += Db[:, jj] * H[j, j+1 : j0+nb]. */
            if (jj + 1 < nb)
                cblas_dger(CblasRowMajor, (int)m, (int)(nb - jj - 1), 1.0, w->Db + jj, (int)nb,
                           H + j * n + j + 1, 1, w->Pb + jj + 1, (int)nb);
        }
        for (int64_t i = 0; i < m; i++) {
            memcpy(w->R + i * n + j0, w->Rb + i * nb, (size_t)nb * sizeof(double));
            memcpy(Q + i * n + j0, w->Qb + i * nb, (size_t)nb * sizeof(float));
        }
        /* Row-major: P (m x n) += Db (m x nb) * H[j0:j0+nb, :] (nb x n). */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)n, (int)nb, 1.0, w->Db,
                    (int)nb, H + j0 * n, (int)n, 1.0, w->P, (int)n);
    }
    return QSUR_OK;
}

/* Largest eigenvalue of H by power iteration (a Rayleigh quotient: never above
 * the true value, which is why the IHT step below backtracks). */
static double lambda_max(const double *H, int64_t n)
{
    double *v = malloc((size_t)n * sizeof *v), *u = malloc((size_t)n * sizeof *u);
    double lam = 0.0;
    if (!v || !u) {
        free(v);
        free(u);
        return 0.0;
    }
    for (int64_t i = 0; i < n; i++)
        v[i] = 1.0 + 0.01 * (double)(i % 7); /* deterministic, not orthogonal to much */
    double nv = cblas_dnrm2((int)n, v, 1);
    cblas_dscal((int)n, 1.0 / nv, v, 1);
    for (int it = 0; it < 100; it++) {
        cblas_dsymv(CblasRowMajor, CblasUpper, (int)n, 1.0, H, (int)n, v, 1, 0.0, u, 1);
        lam = cblas_ddot((int)n, v, 1, u, 1);
        double nu = cblas_dnrm2((int)n, u, 1);
        if (!(nu > 0.0))
            break;
        for (int64_t i = 0; i < n; i++)
            v[i] = u[i] / nu;
    }
    free(v);
    free(u);
    return lam;
}

/* The k-th largest of a[0..len) (1-based k), partially reordering a. */
static double kth_largest(double *a, int64_t len, int64_t k)
{
    int64_t lo = 0, hi = len - 1, want = k - 1;
    while (lo < hi) {
        double x = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] > x)
                i++;
            while (a[j] < x)
                j--;
            if (i <= j) {
                double t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            return a[want];
    }
    return a[want];
}

/* Positions of the k largest |S + step P| (ties by position), ascending, into
 * out: the hard-thresholding projection of the gradient step. */
static void top_k(const qe_work *w, double step, int64_t *out)
{
    const int64_t len = w->m * w->n, k = w->k;
    for (int64_t p = 0; p < len; p++)
        w->mag[p] = fabs(w->S[p] + step * w->P[p]);
    double thr = kth_largest(w->mag, len, k);
    int64_t above = 0;
    for (int64_t p = 0; p < len; p++)
        above += fabs(w->S[p] + step * w->P[p]) > thr;
    int64_t ties = k - above, c = 0;
    for (int64_t p = 0; p < len && c < k; p++) {
        double a = fabs(w->S[p] + step * w->P[p]);
        if (a > thr || (a == thr && ties-- > 0))
            out[c++] = p;
    }
}

/* S[p] += d, and the residual, target and P = R H follow (R = T - Q, T = W - S). */
static void move_outlier(qe_work *w, int64_t p, double d)
{
    const int64_t n = w->n, i = p / n, j = p % n;
    w->S[p] += d;
    w->T[p] -= d;
    w->R[p] -= d;
    cblas_daxpy((int)n, -d, w->H + j * n, 1, w->P + i * n, 1);
}

/* Change of f when S moves by d on the (ascending) positions pos[0..cnt):
 * f(R - D) - f(R) = -2 <D, P> + sum_i D_i H D_i^T. */
static double delta_f(const qe_work *w, const int64_t *pos, const double *d, int64_t cnt)
{
    const int64_t n = w->n;
    double lin = 0.0, quad = 0.0;
    for (int64_t a = 0; a < cnt; a++) {
        lin += d[a] * w->P[pos[a]];
        for (int64_t b = a; b < cnt && pos[b] / n == pos[a] / n; b++) {
            double h = w->H[(pos[a] % n) * n + pos[b] % n];
            quad += (b == a ? 1.0 : 2.0) * d[a] * d[b] * h;
        }
    }
    return -2.0 * lin + quad;
}

/* Step 2 of an outlier-aware sweep: hard-thresholded gradient step picks the
 * support (backtracking keeps it monotone), then each row's outlier values are
 * re-solved exactly on that support: min over s_T of (r + s_old - s) H (...)^T
 * gives H_TT delta = P_i[T] (Newton on a quadratic is exact). */
static int outlier_step(qe_work *w, double lam, qsur_error *err)
{
    const int64_t m = w->m, n = w->n, k = w->k, len = m * n;
    /* Changed positions: union of old and new support, at most 2k. */
    int64_t *pos = malloc((size_t)(2 * k) * sizeof *pos);
    double *d = malloc((size_t)(2 * k) * sizeof *d);
    double *A = malloc((size_t)(n * n < k * k ? n * n : k * k) * sizeof *A + sizeof *A);
    double *rhs = malloc((size_t)(k < n ? k : n) * sizeof *rhs + sizeof *rhs);
    if (!pos || !d || !A || !rhs) {
        free(pos);
        free(d);
        free(A);
        free(rhs);
        return qsur_fail(err, QSUR_ERR_NOMEM, "quantease: cannot allocate outlier work (k=%lld)",
                         (long long)k);
    }
    double step = lam > 0.0 ? 1.0 / lam : 1.0;
    int accepted = 0;
    for (int tries = 0; tries < 60 && !accepted; tries++, step *= 0.5) {
        /* S - eta grad = S + 2 eta P; step = 2 eta = 1 / lambda_max(H) at first. */
        top_k(w, step, w->nsupp);
        int64_t cnt = 0, a = 0, b = 0;
        while (a < k || b < k) {
            int64_t pa = a < k ? w->supp[a] : len, pb = b < k ? w->nsupp[b] : len;
            int64_t p = pa < pb ? pa : pb;
            double target = (pb == p) ? w->S[p] + step * w->P[p] : 0.0;
            pos[cnt] = p;
            d[cnt] = target - w->S[p];
            cnt++;
            if (pa == p)
                a++;
            if (pb == p)
                b++;
        }
        if (delta_f(w, pos, d, cnt) <= 0.0) {
            for (int64_t c = 0; c < cnt; c++)
                if (d[c] != 0.0)
                    move_outlier(w, pos[c], d[c]);
            memcpy(w->supp, w->nsupp, (size_t)k * sizeof *w->supp);
            accepted = 1;
        }
    }
    /* Exact refit of each row's outliers on the chosen support. */
    for (int64_t s0 = 0; s0 < k;) {
        int64_t i = w->supp[s0] / n, s1 = s0;
        while (s1 < k && w->supp[s1] / n == i)
            s1++;
        int64_t t = s1 - s0;
        for (int64_t a = 0; a < t; a++) {
            int64_t ja = w->supp[s0 + a] % n;
            rhs[a] = w->P[w->supp[s0 + a]];
            for (int64_t b = 0; b < t; b++)
                A[a * t + b] = w->H[ja * n + w->supp[s0 + b] % n];
        }
        lapack_int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (lapack_int)t, 1, A, (lapack_int)t,
                                        rhs, 1);
        if (info == 0 && delta_f(w, w->supp + s0, rhs, t) <= 0.0)
            for (int64_t a = 0; a < t; a++)
                move_outlier(w, w->supp[s0 + a], rhs[a]);
        /* info > 0: H_TT singular (dead or duplicate inputs): keep the IHT values. */
        s0 = s1;
    }
    free(pos);
    free(d);
    free(A);
    free(rhs);
    return QSUR_OK;
}


/* Long on purpose: checks, workspace, start point, sweeps and the code pass share one workspace
 * and one cleanup path; helpers would only pass it around. */
int qsur_quantease(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
                   const qsur_quantease_opts *opt, float *Q, qsur_qweight *qw,
                   qsur_outliers *outliers, double *objective,
                   const qsur_progress *prog, qsur_error *err)
{
    if (outliers)
        memset(outliers, 0, sizeof *outliers);
    int rc = qsur_wquant_check(L, "quantease", err);
    if (rc != QSUR_OK)
        return rc;
    rc = qsur_quant_validate(spec, L->cols, err);
    if (rc != QSUR_OK)
        return rc;
    qsur_quantease_opts o = opt ? *opt : qsur_quantease_default();
    if (o.sweeps < 0 || o.block < 1 || !(o.outlier_frac >= 0.0 && o.outlier_frac <= 0.5) ||
        (o.init != QSUR_QE_INIT_RTN && o.init != QSUR_QE_INIT_GPTQ))
        return qsur_fail(err, QSUR_ERR_ARG,
                         "quantease: sweeps=%d block=%d outlier_frac=%g init=%d "
                         "(expected >= 0, >= 1, in [0, 0.5], RTN or GPTQ)",
                         o.sweeps, o.block, o.outlier_frac, (int)o.init);
    if (!Q || Q == L->W)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "quantease: output Q must be a separate rows x cols buffer");
    const int64_t m = L->rows, n = L->cols;
    if (qw && (qw->rows != m || qw->cols != n || !qsur_quant_spec_equal(&qw->spec, spec)))
        return qsur_fail(err, QSUR_ERR_ARG,
                         "quantease: quantized-weight output is %lldx%lld with another spec "
                         "(expected %lldx%lld, the same spec)",
                         (long long)qw->rows, (long long)qw->cols, (long long)m, (long long)n);
    if (spec->bits >= 16) {
        if (qw)
            return qsur_fail(err, QSUR_ERR_ARG, "quantease: bits=%d has no codes to return",
                             spec->bits);
        memcpy(Q, L->W, (size_t)(m * n) * sizeof *Q);
        for (int s = 0; objective && s <= o.sweeps; s++)
            objective[s] = 0.0;
        return QSUR_OK;
    }
    const int64_t k = (int64_t)llround(o.outlier_frac * (double)m * (double)n);
    const int64_t B = o.block < n ? o.block : n;

    qe_work w;
    memset(&w, 0, sizeof w);
    w.m = m;
    w.n = n;
    w.k = k;
    w.H = qsur_alloc((size_t)(n * n), sizeof(double));
    w.T = qsur_alloc((size_t)(m * n), sizeof(double));
    w.R = qsur_alloc((size_t)(m * n), sizeof(double));
    w.P = qsur_alloc((size_t)(m * n), sizeof(double));
    w.Rb = qsur_alloc((size_t)(m * B), sizeof(double));
    w.Tb = qsur_alloc((size_t)(m * B), sizeof(double));
    w.Pb = qsur_alloc((size_t)(m * B), sizeof(double));
    w.Db = qsur_alloc((size_t)(m * B), sizeof(double));
    w.Qb = qsur_alloc((size_t)(m * B), sizeof(float));
    int nomem = !w.H || !w.T || !w.R || !w.P || !w.Rb || !w.Tb || !w.Pb || !w.Db || !w.Qb;
    if (!nomem && k > 0) {
        w.S = qsur_alloc((size_t)(m * n), sizeof(double));
        w.mag = qsur_alloc((size_t)(m * n), sizeof(double));
        w.supp = malloc((size_t)k * sizeof *w.supp);
        w.nsupp = malloc((size_t)k * sizeof *w.nsupp);
        nomem = !w.S || !w.mag || !w.supp || !w.nsupp;
    }
    if (nomem) {
        work_free(&w);
        return qsur_fail(err, QSUR_ERR_NOMEM,
                         "quantease: cannot allocate work for a %lldx%lld layer", (long long)m,
                         (long long)n);
    }
    if (!qw) {
        rc = qsur_qweight_new(&w.own, spec, m, n, err);
        if (rc != QSUR_OK) {
            work_free(&w);
            return rc;
        }
        qw = w.own;
    }
    if ((rc = qsur_wquant_hessian(L, w.H, prog, err)) != QSUR_OK) {
        work_free(&w);
        return rc;
    }

    /* The start point and the grid, fixed from here on. */
    if (o.init == QSUR_QE_INIT_GPTQ) {
        qsur_wquant_layer LH = *L;
        LH.H = w.H; /* reuse the Gram matrix instead of rebuilding it */
        rc = qsur_gptq(&LH, spec, &o.gptq, Q, qw, prog, err);
    } else {
        rc = qsur_qweight_fit_rtn(qw, L->W, err);
        if (rc == QSUR_OK)
            qsur_qweight_decode(qw, Q);
    }
    if (rc != QSUR_OK) {
        work_free(&w);
        return rc;
    }

    for (int64_t p = 0; p < m * n; p++) {
        w.T[p] = (double)L->W[p];
        w.R[p] = w.T[p] - (double)Q[p];
    }
    if (k > 0) {
        memset(w.S, 0, (size_t)(m * n) * sizeof(double));
        for (int64_t c = 0; c < k; c++)
            w.supp[c] = c; /* any k positions with S = 0: the first step replaces them */
    }
    /* Row-major: P (m x n) = R (m x n) * H (n x n, symmetric). */
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)m, (int)n, 1.0, w.H, (int)n, w.R,
                (int)n, 0.0, w.P, (int)n);
    if (objective)
        objective[0] = dot_all(w.R, w.P, m * n);
    const double lam = k > 0 ? lambda_max(w.H, n) : 0.0;

    for (int s = 0; s < o.sweeps; s++) {
        double span = 1.0 / (double)o.sweeps;
        rc = cd_sweep(&w, qw, Q, B, s * span, span, prog, err);
        if (rc == QSUR_OK && k > 0)
            rc = outlier_step(&w, lam, err);
        if (rc != QSUR_OK) {
            work_free(&w);
            return rc;
        }
        if (objective)
            objective[s + 1] = dot_all(w.R, w.P, m * n);
    }

    /* Codes of the quantized part (Q holds grid values only at this point). */
    qsur_qweight_encode(qw, Q);
    if (k > 0) {
        int64_t *idx = NULL;
        float *val = NULL;
        if (outliers) {
            idx = malloc((size_t)k * sizeof *idx);
            val = malloc((size_t)k * sizeof *val);
            if (!idx || !val) {
                free(idx);
                free(val);
                work_free(&w);
                return qsur_fail(err, QSUR_ERR_NOMEM,
                                 "quantease: cannot allocate %lld outliers", (long long)k);
            }
        }
        for (int64_t c = 0; c < k; c++) {
            int64_t p = w.supp[c];
            Q[p] = (float)((double)Q[p] + w.S[p]);
            if (outliers) {
                idx[c] = p;
                val[c] = Q[p];
            }
        }
        if (outliers) {
            outliers->count = k;
            outliers->index = idx;
            outliers->value = val;
            outliers->bytes = k * (int64_t)(sizeof(float) + sizeof(int32_t));
            outliers->packed_bytes = qsur_qweight_packed_bytes(qw);
            outliers->overhead = (double)outliers->bytes / (double)outliers->packed_bytes;
        }
    }
    work_free(&w);
    return qsur_progress_tick(prog, 1.0, "quantease", NAN, err);
}
