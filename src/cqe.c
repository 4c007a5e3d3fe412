/* CQE+ in the SVD basis (see cqe.h): W' = W + U_r D V_r^T with a banded D,
 * trained by Adam through the fake quantizer's STE on tr((W-Q) H (W-Q)^T). */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/cqe.h"
#include "qsur/quant_ste.h"
#include "qsur/stiefel.h"
#include "qsur/tensor.h"

struct qsur_cqe_problem {
    int64_t m, d, r;  /* rows, cols, rank */
    int b, bw;        /* band half-width, 2b+1 */
    qsur_quant_spec spec;
    const float *W;   /* borrowed */
    float *U;         /* m x r, row-major: top-r left singular vectors */
    float *Vt;        /* r x d: top-r right singular vectors as rows */
    float *H;         /* d x d, X^T X; NULL without calibration data */
    double *S;        /* r singular values */
    float *T1;        /* m x r: U_r D */
    float *Wp, *Q, *E, *EH; /* m x d each */
    float *A;         /* r x d: U_r^T dW' */
};

qsur_cqe_opts qsur_cqe_default(void)
{
    qsur_cqe_opts o = {100, 1e-3, 1, 0};
    return o;
}

void qsur_cqe_problem_free(qsur_cqe_problem *p)
{
    if (!p)
        return;
    free(p->U), free(p->Vt), free(p->H), free(p->S), free(p->T1);
    free(p->Wp), free(p->Q), free(p->E), free(p->EH), free(p->A);
    free(p);
}

int64_t qsur_cqe_rank(const qsur_cqe_problem *p) { return p->r; }
int qsur_cqe_band(const qsur_cqe_problem *p) { return p->b; }
int64_t qsur_cqe_band_size(const qsur_cqe_problem *p) { return p->r * p->bw; }
const double *qsur_cqe_singular_values(const qsur_cqe_problem *p) { return p->S; }

/* Thin SVD of W in double; keeps the top r triplets as floats. */
static int svd_top(qsur_cqe_problem *p, qsur_error *err)
{
    const int64_t m = p->m, d = p->d, k = m < d ? m : d;
    double *A = qsur_alloc((size_t)(m * d), sizeof(double));
    double *U = qsur_alloc((size_t)(m * k), sizeof(double));
    double *Vt = qsur_alloc((size_t)(k * d), sizeof(double));
    double *s = qsur_alloc((size_t)k, sizeof(double));
    int rc = QSUR_OK;
    if (!A || !U || !Vt || !s) {
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "cqe: out of memory for the SVD of a %lldx%lld weight",
                       (long long)m, (long long)d);
        goto out;
    }
    for (int64_t i = 0; i < m * d; i++)
        A[i] = p->W[i];
    /* row-major m x d; jobz 'S': U m x k, Vt k x d */
    lapack_int info = LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'S', (lapack_int)m, (lapack_int)d, A,
                                     (lapack_int)d, s, U, (lapack_int)k, Vt, (lapack_int)d);
    if (info != 0) {
        rc = qsur_fail(err, QSUR_ERR_NUMERIC, info > 0 ? "cqe: dgesdd did not converge (info %d) on a %lldx%lld weight"
                                                       : "cqe: dgesdd argument %d was invalid (%lldx%lld weight)",
                       (int)(info > 0 ? info : -info), (long long)m, (long long)d);
        goto out;
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < p->r; j++)
            p->U[i * p->r + j] = (float)U[i * k + j];
    for (int64_t i = 0; i < p->r; i++) {
        p->S[i] = s[i];
        for (int64_t j = 0; j < d; j++)
            p->Vt[i * d + j] = (float)Vt[i * d + j];
    }
out:
    free(A), free(U), free(Vt), free(s);
    return rc;
}

int qsur_cqe_problem_new(qsur_cqe_problem **out, const qsur_wquant_layer *L,
                         const qsur_quant_spec *spec, int64_t rank, int band, qsur_error *err)
{
    *out = NULL;
    int rc;
    if (L->X || L->H) {
        if ((rc = qsur_wquant_check(L, "cqe", err)))
            return rc;
    } else if (!L->W || L->rows < 1 || L->cols < 1) {
        return qsur_fail(err, QSUR_ERR_ARG, "cqe: needs a weight");
    }
    if (spec->bits < 16 && (rc = qsur_quant_validate(spec, L->cols, err)))
        return rc;
    if (rank < 0 || band < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "cqe: rank (%lld) and band (%d) must be >= 0", (long long)rank, band);
    qsur_cqe_problem *p = calloc(1, sizeof *p);
    if (!p)
        return qsur_fail(err, QSUR_ERR_NOMEM, "cqe: out of memory");
    const int64_t m = L->rows, d = L->cols, k = m < d ? m : d;
    p->m = m, p->d = d;
    p->r = rank == 0 || rank > k ? k : rank;
    p->b = band > p->r - 1 ? (int)(p->r - 1) : band;
    p->bw = 2 * p->b + 1;
    p->spec = *spec;
    p->W = L->W;
    const size_t md = (size_t)(m * d);
    p->U = qsur_alloc((size_t)(m * p->r), sizeof(float));
    p->Vt = qsur_alloc((size_t)(p->r * d), sizeof(float));
    const int data = L->X || L->H;
    p->H = data ? qsur_alloc((size_t)(d * d), sizeof(float)) : NULL;
    p->S = qsur_alloc((size_t)p->r, sizeof(double));
    p->T1 = qsur_alloc((size_t)(m * p->r), sizeof(float));
    p->Wp = qsur_alloc(md, sizeof(float));
    p->Q = qsur_alloc(md, sizeof(float));
    p->E = qsur_alloc(md, sizeof(float));
    p->EH = qsur_alloc(md, sizeof(float));
    p->A = qsur_alloc((size_t)(p->r * d), sizeof(float));
    if (!p->U || !p->Vt || (data && !p->H) || !p->S || !p->T1 || !p->Wp || !p->Q || !p->E || !p->EH || !p->A) {
        qsur_cqe_problem_free(p);
        return qsur_fail(err, QSUR_ERR_NOMEM, "cqe: out of memory for a %lldx%lld layer", (long long)m, (long long)d);
    }
    if (!data) {
    } else if (L->H) {
        for (int64_t i = 0; i < d * d; i++)
            p->H[i] = (float)L->H[i];
    } else {
        double *Hd = qsur_alloc((size_t)(d * d), sizeof(double));
        if (!Hd) {
            qsur_cqe_problem_free(p);
            return qsur_fail(err, QSUR_ERR_NOMEM, "cqe: out of memory for H (%lldx%lld)", (long long)d, (long long)d);
        }
        rc = qsur_gram(L->X, L->n, d, Hd, NULL, err);
        for (int64_t i = 0; !rc && i < d * d; i++)
            p->H[i] = (float)Hd[i];
        free(Hd);
        if (rc) {
            qsur_cqe_problem_free(p);
            return rc;
        }
    }
    if ((rc = svd_top(p, err))) {
        qsur_cqe_problem_free(p);
        return rc;
    }
    *out = p;
    return QSUR_OK;
}

int qsur_cqe_apply(qsur_cqe_problem *p, const double *D, float *Q, qsur_error *err)
{
    const int64_t m = p->m, d = p->d, r = p->r;
    const int b = p->b, bw = p->bw;
    int nonzero = 0;
    for (int64_t i = 0; i < r * bw && !nonzero; i++)
        nonzero = D[i] != 0.0;
    memcpy(p->Wp, p->W, (size_t)(m * d) * sizeof(float));
    if (nonzero) {
        /* T1 = U_r D: column j gathers the band rows i = j-b..j+b (O(m r (2b+1))) */
        for (int64_t row = 0; row < m; row++) {
            const float *u = p->U + row * r;
            float *t = p->T1 + row * r;
            for (int64_t j = 0; j < r; j++) {
                double acc = 0;
                for (int64_t i = j - b; i <= j + b; i++)
                    if (i >= 0 && i < r)
                        acc += (double)u[i] * D[i * bw + (j - i + b)];
                t[j] = (float)acc;
            }
        }
        /* W' = W + T1 V_r^T (row-major: T1 m x r, Vt r x d) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)d, (int)r, 1.0f, p->T1,
                    (int)r, p->Vt, (int)d, 1.0f, p->Wp, (int)d);
    }
    int rc = qsur_fake_quant(&p->spec, p->Wp, m, d, p->Q, NULL, err);
    if (!rc && Q)
        memcpy(Q, p->Q, (size_t)(m * d) * sizeof(float));
    return rc;
}

int qsur_cqe_backward(qsur_cqe_problem *p, float *dQ, double *G, qsur_error *err)
{
    const int64_t m = p->m, d = p->d, r = p->r;
    const int b = p->b, bw = p->bw;
    /* CQE+ moves the weights themselves: it keeps the constant-scale STE for
     * asymmetric groups (a scale following the group's extremes lets the
     * extremes run and the loss stalls: tests/test_cqe.c) */
    qsur_quant_spec spec = p->spec;
    spec.ste_const = 1;
    int rc = qsur_fake_quant_backward(&spec, p->Wp, m, d, dQ, dQ, err);
    if (rc)
        return rc;
    /* A = U_r^T dW' (r x d), then dD_ij = A_i . Vt_j on the band only */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)r, (int)d, (int)m, 1.0f, p->U, (int)r,
                dQ, (int)d, 0.0f, p->A, (int)d);
    for (int64_t i = 0; i < r; i++)
        for (int k = 0; k < bw; k++) {
            int64_t j = i + k - b;
            G[i * bw + k] = j >= 0 && j < r ? cblas_dsdot((int)d, p->A + i * d, 1, p->Vt + j * d, 1) : 0.0;
        }
    return QSUR_OK;
}

int qsur_cqe_eval(qsur_cqe_problem *p, const double *D, float *Q, double *loss, double *G,
                  qsur_error *err)
{
    const int64_t m = p->m, d = p->d;
    if (!p->H)
        return qsur_fail(err, QSUR_ERR_ARG, "cqe: this problem has no calibration data (made for cross-layer use)");
    int rc = qsur_cqe_apply(p, D, Q, err);
    if (rc)
        return rc;
    for (int64_t i = 0; i < m * d; i++)
        p->E[i] = p->W[i] - p->Q[i];
    /* EH = E H (row-major, H symmetric d x d) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)d, (int)d, 1.0f, p->E, (int)d,
                p->H, (int)d, 0.0f, p->EH, (int)d);
    double f = 0;
    for (int64_t i = 0; i < m * d; i++)
        f += (double)p->E[i] * p->EH[i];
    *loss = f;
    if (!G)
        return QSUR_OK;
    /* dQ = -2 E H, then the STE and the SVD basis */
    for (int64_t i = 0; i < m * d; i++)
        p->EH[i] *= -2.0f;
    return qsur_cqe_backward(p, p->EH, G, err);
}

int qsur_cqe(const qsur_wquant_layer *L, const qsur_quant_spec *spec, const qsur_cqe_opts *o,
             float *Q, double *D, double *losses, qsur_cqe_result *res,
             const qsur_progress *prog, qsur_error *err)
{
    if (o->steps < 0 || !(o->lr >= 0) || !isfinite(o->lr))
        return qsur_fail(err, QSUR_ERR_ARG, "cqe: steps (%d) must be >= 0 and lr (%g) finite and >= 0",
                         o->steps, o->lr);
    qsur_cqe_problem *p;
    int rc = qsur_cqe_problem_new(&p, L, spec, o->rank, o->band, err);
    if (rc)
        return rc;
    const int64_t nb = qsur_cqe_band_size(p);
    double *cur = calloc((size_t)nb, sizeof *cur), *best = calloc((size_t)nb, sizeof *best);
    double *G = calloc((size_t)nb, sizeof *G);
    qsur_adam *adam = NULL;
    if (!cur || !best || !G) {
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "cqe: out of memory");
        goto out;
    }
    if ((rc = qsur_adam_new(&adam, nb, err)))
        goto out;
    double ss = 0;
    for (int64_t i = 0; i < p->r; i++)
        ss += p->S[i] * p->S[i];
    const double lr = o->lr * sqrt(ss / (double)p->r);
    double f = 0, fbest = INFINITY;
    int best_step = 0;
    for (int step = 0; step <= o->steps; step++) {
        /* the last pass only evaluates the final D */
        rc = qsur_cqe_eval(p, cur, NULL, &f, step < o->steps ? G : NULL, err);
        if (rc)
            goto out;
        if (losses)
            losses[step] = f;
        if (step == 0 && res)
            res->rtn_loss = f;
        if (f < fbest) {
            fbest = f;
            best_step = step;
            memcpy(best, cur, (size_t)nb * sizeof *best);
        }
        if (step == o->steps)
            break;
        qsur_adam_step(adam, cur, G, lr);
        if ((rc = qsur_progress_tick(prog, (step + 1.0) / o->steps, "cqe", f, err)))
            goto out;
    }
    rc = qsur_cqe_eval(p, best, Q, &f, NULL, err);
    if (rc)
        goto out;
    if (D)
        memcpy(D, best, (size_t)nb * sizeof *D);
    if (res) {
        res->loss = f;
        res->best_step = best_step;
        res->rank = p->r;
        res->band = p->b;
    }
out:
    qsur_adam_free(adam);
    free(cur), free(best), free(G);
    qsur_cqe_problem_free(p);
    return rc;
}
