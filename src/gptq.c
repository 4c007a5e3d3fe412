/* GPTQ: column-by-column quantization with inverse-Hessian error feedback.
 * See include/qsur/gptq.h for the algorithm and the grid conventions. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#include <lapacke.h>
#include "qsur/gptq.h"
#include "qsur/tensor.h"

qsur_gptq_opts qsur_gptq_default(void)
{
    qsur_gptq_opts o = {0.01, 128, 0, 0};
    return o;
}


/* Stable order of decreasing diag(H): the paper's "act order" heuristic
 * (columns with the largest activations go first, while the most columns are
 * left to absorb their error). */
static int act_order_perm(const double *H, int64_t n, int64_t *perm)
{
    for (int64_t i = 0; i < n; i++)
        perm[i] = i;
    /* Bottom-up merge sort of the index array (qsort has no context argument
     * to reach H, and is not stable). */
    int64_t *tmp = malloc((size_t)n * sizeof *tmp);
    if (!tmp)
        return -1;
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi) {
                /* ">=" keeps equal keys in index order (stable). */
                if (H[perm[a] * n + perm[a]] >= H[perm[b] * n + perm[b]])
                    tmp[k++] = perm[a++];
                else
                    tmp[k++] = perm[b++];
            }
            while (a < mid)
                tmp[k++] = perm[a++];
            while (b < hi)
                tmp[k++] = perm[b++];
        }
        memcpy(perm, tmp, (size_t)n * sizeof *perm);
    }
    free(tmp);
    return 0;
}

typedef struct {
    double *H;      /* cols x cols: damped H, then (in place) U with H^-1 = U^T U */
    double *Hp;     /* permuted copy of H (act order only) */
    double *Wd;     /* rows x cols working weight, permuted column order */
    float *Wf;      /* rows x cols float W with dead columns zeroed (map fitting) */
    double *W1;     /* rows x B current block */
    double *E1;     /* rows x B scaled errors of the block */
    float *span;    /* G floats: one group of one row, for dynamic map fitting */
    int64_t *perm;  /* position -> original column */
    qsur_qweight *own;
} gptq_work;

static void work_free(gptq_work *w)
{
    free(w->H);
    free(w->Hp);
    free(w->Wd);
    free(w->Wf);
    free(w->W1);
    free(w->E1);
    free(w->span);
    free(w->perm);
    qsur_qweight_free(w->own);
}

/* Long on purpose: argument checks, then the reference algorithm's blocked column loop as one
   piece (lazy batch updates need the block's scratch in scope), then one cleanup path. */
int qsur_gptq(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
              const qsur_gptq_opts *opt, float *Q, qsur_qweight *qw,
              const qsur_progress *prog, qsur_error *err)
{
    int rc = qsur_wquant_check(L, "gptq", err);
    if (rc != QSUR_OK)
        return rc;
    rc = qsur_quant_validate(spec, L->cols, err);
    if (rc != QSUR_OK)
        return rc;
    qsur_gptq_opts o = opt ? *opt : qsur_gptq_default();
    if (!(o.percdamp >= 0.0) || o.block < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "gptq: percdamp=%g block=%d (expected >= 0, >= 1)",
                         o.percdamp, o.block);
    if (!Q || Q == L->W)
        return qsur_fail(err, QSUR_ERR_ARG, "gptq: output Q must be a separate rows x cols buffer");
    const int64_t m = L->rows, n = L->cols;
    if (qw && (qw->rows != m || qw->cols != n || !qsur_quant_spec_equal(&qw->spec, spec)))
        return qsur_fail(err, QSUR_ERR_ARG,
                         "gptq: quantized-weight output is %lldx%lld with another spec "
                         "(expected %lldx%lld, the same spec)",
                         (long long)qw->rows, (long long)qw->cols, (long long)m, (long long)n);
    if (spec->bits >= 16) {
        if (qw)
            return qsur_fail(err, QSUR_ERR_ARG, "gptq: bits=%d has no codes to return", spec->bits);
        memcpy(Q, L->W, (size_t)(m * n) * sizeof *Q);
        return QSUR_OK;
    }

    const int dynamic_groups = spec->gran == QSUR_GRAN_GROUP && !o.act_order && !o.static_groups;
    const int64_t G = spec->gran == QSUR_GRAN_GROUP ? spec->group : 0;
    /* Blocks are whole groups, so a group's columns are all inside the block
     * (fully updated) when its map is fitted at the group's first column
     * (static groups too: the same blocks, so the same sums, as the GPU's). */
    int64_t B = o.block;
    if (G > 0 && !o.act_order)
        B = G >= B ? G : (B / G) * G;
    if (B > n)
        B = n;

    gptq_work w;
    memset(&w, 0, sizeof w);
    w.H = qsur_alloc((size_t)(n * n), sizeof(double));
    w.Wd = qsur_alloc((size_t)(m * n), sizeof(double));
    w.Wf = qsur_alloc((size_t)(m * n), sizeof(float));
    w.W1 = qsur_alloc((size_t)(m * B), sizeof(double));
    w.E1 = qsur_alloc((size_t)(m * B), sizeof(double));
    w.perm = malloc((size_t)n * sizeof *w.perm);
    w.span = malloc((size_t)(G > 0 ? G : 1) * sizeof(float));
    if (!w.H || !w.Wd || !w.Wf || !w.W1 || !w.E1 || !w.perm || !w.span) {
        work_free(&w);
        return qsur_fail(err, QSUR_ERR_NOMEM, "gptq: cannot allocate work for a %lldx%lld layer",
                         (long long)m, (long long)n);
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

    /* Dead inputs (H_jj = 0: the channel is always zero on the calibration set)
     * carry no information: the weight does not matter, so set it to 0 and H_jj
     * to 1 to keep H invertible without touching the other columns. */
    memcpy(w.Wf, L->W, (size_t)(m * n) * sizeof(float));
    for (int64_t j = 0; j < n; j++) {
        if (w.H[j * n + j] == 0.0) {
            w.H[j * n + j] = 1.0;
            for (int64_t r = 0; r < m; r++)
                w.Wf[r * n + j] = 0.0f;
        }
    }
    /* Static maps (tensor, row, or act-order groups) come from the zeroed W. */
    if (!dynamic_groups && (rc = qsur_qweight_fit_rtn(qw, w.Wf, err)) != QSUR_OK) {
        work_free(&w);
        return rc;
    }

    if (o.act_order) {
        if (act_order_perm(w.H, n, w.perm) != 0) {
            work_free(&w);
            return qsur_fail(err, QSUR_ERR_NOMEM, "gptq: cannot allocate the act-order sort (%lld)",
                             (long long)n);
        }
    } else
        for (int64_t j = 0; j < n; j++)
            w.perm[j] = j;
    for (int64_t r = 0; r < m; r++)
        for (int64_t j = 0; j < n; j++)
            w.Wd[r * n + j] = w.Wf[r * n + w.perm[j]];
    if (o.act_order) {
        w.Hp = qsur_alloc((size_t)(n * n), sizeof(double));
        if (!w.Hp) {
            work_free(&w);
            return qsur_fail(err, QSUR_ERR_NOMEM, "gptq: cannot allocate permuted H (%lldx%lld)",
                             (long long)n, (long long)n);
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n; j++)
                w.Hp[i * n + j] = w.H[w.perm[i] * n + w.perm[j]];
        double *t = w.H;
        w.H = w.Hp;
        w.Hp = t;
    }

    double mean_diag = 0.0;
    for (int64_t j = 0; j < n; j++)
        mean_diag += w.H[j * n + j];
    mean_diag /= (double)n;
    for (int64_t j = 0; j < n; j++)
        w.H[j * n + j] += o.percdamp * mean_diag;

    /* U = upper Cholesky factor of H^-1 (H^-1 = U^T U): its row j holds, scaled,
     * the OBS update of the columns after j once columns < j are fixed. */
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)n, w.H, (lapack_int)n);
    if (info == 0)
        info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', (lapack_int)n, w.H, (lapack_int)n);
    if (info == 0)
        info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)n, w.H, (lapack_int)n);
    if (info != 0) {
        work_free(&w);
        if (info > 0)
            return qsur_fail(err, QSUR_ERR_NUMERIC,
                             "gptq: damped H (%lldx%lld) is not positive definite (minor %d); "
                             "raise percdamp (now %g)",
                             (long long)n, (long long)n, (int)info, o.percdamp);
        return qsur_fail(err, QSUR_ERR_NUMERIC, "gptq: LAPACK argument %d was invalid", (int)-info);
    }
    const double *U = w.H;

    for (int64_t i1 = 0; i1 < n; i1 += B) {
        rc = qsur_progress_tick(prog, (double)i1 / (double)n, "gptq", NAN, err);
        if (rc != QSUR_OK) {
            work_free(&w);
            return rc;
        }
        const int64_t nb = n - i1 < B ? n - i1 : B;
        for (int64_t r = 0; r < m; r++)
            memcpy(w.W1 + r * nb, w.Wd + r * n + i1, (size_t)nb * sizeof(double));
        for (int64_t i = 0; i < nb; i++) {
            const int64_t j = i1 + i, oj = w.perm[j];
            if (dynamic_groups && oj % G == 0) {
                for (int64_t r = 0; r < m; r++) {
                    for (int64_t k = 0; k < G; k++)
                        w.span[k] = (float)w.W1[r * nb + i + k];
                    rc = qsur_qparams_fit(spec, w.span, G, qsur_qweight_map(qw, r, oj), err);
                    if (rc != QSUR_OK) {
                        work_free(&w);
                        return rc;
                    }
                }
            }
            const double d = U[j * n + j];
            for (int64_t r = 0; r < m; r++) {
                double x = w.W1[r * nb + i];
                const qsur_qparams *p = qsur_qweight_map(qw, r, oj);
                float c = qsur_qparams_code(p, (float)x);
                float q = qsur_qparams_value(p, c);
                qw->codes[r * n + oj] = (int16_t)c;
                Q[r * n + oj] = q;
                w.E1[r * nb + i] = (x - (double)q) / d;
            }
            /* Row-major: W1[:, i+1:nb] -= E1[:, i] * U[j, j+1 : i1+nb]. */
            if (i + 1 < nb)
                cblas_dger(CblasRowMajor, (int)m, (int)(nb - i - 1), -1.0, w.E1 + i, (int)nb,
                           U + j * n + j + 1, 1, w.W1 + i + 1, (int)nb);
        }
        /* The lazy batch: Wd[:, i1+nb:] -= E1 (m x nb) * U[i1:i1+nb, i1+nb:] (row-major). */
        if (i1 + nb < n)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)(n - i1 - nb),
                        (int)nb, -1.0, w.E1, (int)nb, U + i1 * n + i1 + nb, (int)n, 1.0,
                        w.Wd + i1 + nb, (int)n);
    }
    work_free(&w);
    return qsur_progress_tick(prog, 1.0, "gptq", NAN, err);
}
