/* GPTQ on the GPU (qsur/backend.h, gpu_gptq.h), the algorithm of src/gptq.c:
 *  - H = X^T X accumulated in double on the device (or the caller's H); dead
 *    columns (H_jj = 0) zeroed in W and set to 1 in H; damping by percdamp x
 *    the mean diagonal; static maps (tensor, row, static groups) fitted on
 *    the zeroed W;
 *  - U, the upper Cholesky factor of H^-1, by cuSOLVER: potrf, potri, potrf
 *    with uplo = lower on the row-major buffer (column-major lower is
 *    row-major upper, so U lands where LAPACK's row-major 'U' puts it);
 *  - the working weight in double, column-major m x n, so one block of
 *    columns is contiguous and one thread per output row walks the block's
 *    columns in order (group maps fitted at each group's first column,
 *    quantize, scaled error, rank-1 update of the rest of the block), then
 *    one DGEMM applies the block's errors to the columns after it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "gpu_gptq.h"
#include "kernels.h"
#include "qsur/backend.h"
#include "qsur/tensor.h"

#define GRAM_ROWS 8192

static int sol_check(cusolverStatus_t s, const char *what, qsur_error *err)
{
    if (s == CUSOLVER_STATUS_NOT_INITIALIZED && qsur_gpu_libs_error())
        return qsur_fail(err, QSUR_ERR_NUMERIC, "gpu gptq: %s", qsur_gpu_libs_error());
    return s == CUSOLVER_STATUS_SUCCESS ? QSUR_OK
                                        : qsur_fail(err, QSUR_ERR_NUMERIC, "gpu gptq: cuSOLVER %s failed (status %d)",
                                                    what, (int)s);
}

int qsur_gpu_solver_init(qsur_gpu_solver *s, qsur_gpu_ctx *ctx, qsur_error *err)
{
    s->ctx = ctx;
    s->sol = NULL;
    int rc = sol_check(cusolverDnCreate(&s->sol), "create", err);
    if (!rc)
        rc = sol_check(cusolverDnSetStream(s->sol, ctx->stream), "set stream", err);
    return rc;
}

void qsur_gpu_solver_free(qsur_gpu_solver *s)
{
    if (s->sol)
        cusolverDnDestroy(s->sol);
    s->sol = NULL;
}

int qsur_gpu_gram_add(qsur_gpu_ctx *c, const float *X, int64_t rows, int64_t n, double *Xd,
                      double *H, int first, qsur_error *err)
{
    qsur_cu_to_double(Xd, X, rows * n, c->stream);
    /* row-major X (rows x n) is column-major n x rows: H += Xc Xc^T */
    double one = 1.0, beta = first ? 0.0 : 1.0;
    return qsur_gpu_blas_check(cublasDgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)n, (int)n, (int)rows,
                                           &one, Xd, (int)n, Xd, (int)n, &beta, H, (int)n),
                               "gram", err);
}

/* H <- U (upper Cholesky factor of H^-1, row-major) in place. */
static int inverse_factor(qsur_gpu_solver *s, double *H, int64_t n, double percdamp, qsur_error *err)
{
    int lw1 = 0, lw2 = 0, rc;
    rc = sol_check(cusolverDnDpotrf_bufferSize(s->sol, CUBLAS_FILL_MODE_LOWER, (int)n, H, (int)n, &lw1),
                   "potrf workspace", err);
    if (!rc)
        rc = sol_check(cusolverDnDpotri_bufferSize(s->sol, CUBLAS_FILL_MODE_LOWER, (int)n, H, (int)n, &lw2),
                       "potri workspace", err);
    int lw = lw1 > lw2 ? lw1 : lw2;
    double *work = NULL;
    int *info_d = NULL;
    if (!rc)
        rc = qsur_gpu_malloc((void **)&work, (size_t)(lw > 0 ? lw : 1) * 8, "gptq workspace", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&info_d, sizeof(int), "gptq info", err);
    for (int step = 0; step < 3 && !rc; step++) {
        rc = sol_check(step == 1 ? cusolverDnDpotri(s->sol, CUBLAS_FILL_MODE_LOWER, (int)n, H, (int)n, work,
                                                    lw, info_d)
                                 : cusolverDnDpotrf(s->sol, CUBLAS_FILL_MODE_LOWER, (int)n, H, (int)n, work,
                                                    lw, info_d),
                       step == 1 ? "potri" : "potrf", err);
        int info = 0;
        if (!rc)
            rc = qsur_gpu_check(cudaMemcpy(&info, info_d, sizeof info, cudaMemcpyDeviceToHost), "info", err);
        if (!rc && info != 0)
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "gpu gptq: damped H (%lldx%lld) is not positive "
                           "definite (minor %d); raise percdamp (now %g)", (long long)n, (long long)n,
                           info, percdamp);
    }
    cudaFree(work);
    cudaFree(info_d);
    return rc;
}

/* Dead columns and damping, as src/gptq.c: the mean of the diagonal after
 * the dead entries became 1. */
static int prepare(qsur_gpu_ctx *c, float *W, int64_t m, int64_t n, double *H, double percdamp,
                   qsur_error *err)
{
    double *diag = malloc((size_t)n * sizeof *diag);
    if (!diag)
        return qsur_fail(err, QSUR_ERR_NOMEM, "gpu gptq: out of memory");
    int rc = qsur_gpu_check(cudaMemcpy2D(diag, sizeof(double), H, (size_t)(n + 1) * sizeof(double),
                                         sizeof(double), (size_t)n, cudaMemcpyDeviceToHost), "diag", err);
    double mean = 0;
    for (int64_t j = 0; j < n; j++)
        mean += diag[j] == 0.0 ? 1.0 : diag[j];
    mean /= (double)n;
    free(diag);
    if (!rc)
        qsur_cu_gptq_prepare(W, m, n, H, percdamp * mean, c->stream);
    return rc;
}

int qsur_gpu_gptq_run(qsur_gpu_solver *s, float *W, int64_t m, int64_t n, double *H,
                      const qsur_quant_spec *spec, const qsur_gptq_opts *o, float *Q,
                      qsur_error *err)
{
    qsur_gpu_ctx *c = s->ctx;
    const int64_t G = spec->gran == QSUR_GRAN_GROUP ? spec->group : 0;
    int64_t B = o->block;
    if (G)
        B = G >= B ? G : (B / G) * G;
    if (B > n)
        B = n;
    qsur_cu_quant q = {spec->bits, spec->symmetric, (int)spec->gran, spec->group, spec->clip, 0};
    double *Wd = NULL, *Wt = NULL, *E1 = NULL;
    qsur_cu_qmap *maps = NULL;
    int rc = prepare(c, W, m, n, H, o->percdamp, err);
    /* static maps from the zeroed W: per tensor, per row, or static groups */
    const int static_groups = G && o->static_groups;
    int64_t span = static_groups ? G : spec->gran == QSUR_GRAN_ROW ? n : m * n;
    int map_stride = static_groups ? (int)(n / G) : spec->gran == QSUR_GRAN_ROW ? 1 : 0;
    if (!rc && (!G || static_groups)) {
        rc = qsur_gpu_malloc((void **)&maps, (size_t)(m * n / span) * sizeof *maps, "gptq maps", err);
        if (!rc)
            qsur_cu_fit_maps(maps, W, m * n, span, &q, c->stream);
    }
    if (!rc)
        rc = inverse_factor(s, H, n, o->percdamp, err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&Wt, (size_t)(m * n) * 8, "gptq W", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&Wd, (size_t)(m * n) * 8, "gptq W", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&E1, (size_t)(m * B) * 8, "gptq errors", err);
    double one = 1.0, zero = 0.0, mone = -1.0;
    if (!rc) { /* Wd (column-major m x n) = the row-major W, in double */
        qsur_cu_to_double(Wt, W, m * n, c->stream);
        rc = qsur_gpu_blas_check(cublasDgeam(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)m, (int)n, &one, Wt,
                                             (int)n, &zero, Wd, (int)m, Wd, (int)m),
                                 "transpose", err);
    }
    for (int64_t i1 = 0; i1 < n && !rc; i1 += B) {
        int64_t nb = n - i1 < B ? n - i1 : B;
        qsur_cu_gptq_block(Wd + i1 * m, E1, H, n, m, i1, nb, maps, map_stride, &q, G, Q, c->stream);
        if (i1 + nb < n) /* Wd[:, i1+nb:] -= E1 (m x nb) U[i1:i1+nb, i1+nb:] (row-major U = column-major U^T) */
            rc = qsur_gpu_blas_check(cublasDgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)m, (int)(n - i1 - nb),
                                                 (int)nb, &mone, E1, (int)m, H + i1 * n + i1 + nb, (int)n,
                                                 &one, Wd + (i1 + nb) * m, (int)m),
                                     "lazy batch", err);
    }
    if (!rc)
        rc = qsur_gpu_check(cudaStreamSynchronize(c->stream), "gptq", err);
    cudaFree(Wd), cudaFree(Wt), cudaFree(E1), cudaFree(maps);
    return rc;
}

int qsur_gpu_output_error(qsur_gpu_ctx *c, const float *W, const float *Q, int64_t m, int64_t n,
                          const double *H, double *out, qsur_error *err)
{
    double *D = NULL, *P = NULL, *dots = NULL, *hd = NULL;
    int rc = qsur_gpu_malloc((void **)&D, (size_t)(m * n) * 8, "output error", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&P, (size_t)(m * n) * 8, "output error", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&dots, (size_t)m * 8, "output error", err);
    if (!rc && !(hd = malloc((size_t)m * sizeof *hd)))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "output error: out of memory");
    double tr[2] = {0, 0};
    for (int k = 0; k < 2 && !rc; k++) { /* k = 0: W H W^T; k = 1: D H D^T */
        qsur_cu_diff_double(D, W, k ? Q : NULL, m * n, c->stream);
        double one = 1.0, zero = 0.0; /* row-major P = D H: column-major P^T = H D^T */
        rc = qsur_gpu_blas_check(cublasDgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)n, (int)m, (int)n, &one,
                                             H, (int)n, D, (int)n, &zero, P, (int)n),
                                 "output error", err);
        if (rc)
            break;
        qsur_cu_row_dots(dots, P, D, m, n, c->stream);
        rc = qsur_gpu_check(cudaMemcpy(hd, dots, (size_t)m * 8, cudaMemcpyDeviceToHost), "output error", err);
        for (int64_t r = 0; r < m && !rc; r++)
            tr[k] += hd[r];
        if (!Q)
            break;
    }
    *out = !Q ? 1.0 : tr[0] > 0 ? sqrt(fmax(tr[1], 0.0) / tr[0]) : (tr[1] > 0 ? INFINITY : 0.0);
    cudaFree(D), cudaFree(P), cudaFree(dots);
    free(hd);
    return rc;
}

int qsur_gpu_gptq(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
                  const qsur_gptq_opts *opt, float *Q, qsur_error *err)
{
    int rc = qsur_wquant_check(L, "gpu gptq", err);
    if (!rc)
        rc = qsur_quant_validate(spec, L->cols, err);
    if (rc)
        return rc;
    char why[160];
    if (!qsur_gpu_quant_supported(spec, why, sizeof why))
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq: %s", why);
    qsur_gptq_opts o = opt ? *opt : qsur_gptq_default();
    if (!(o.percdamp >= 0.0) || o.block < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq: percdamp=%g block=%d (expected >= 0, >= 1)",
                         o.percdamp, o.block);
    if (o.act_order || spec->clip_search)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq: act_order and clip search run on the CPU only");
    if (!Q || Q == L->W)
        return qsur_fail(err, QSUR_ERR_ARG, "gpu gptq: output Q must be a separate rows x cols buffer");
    const int64_t m = L->rows, n = L->cols;
    if (spec->bits >= 16) {
        memcpy(Q, L->W, (size_t)(m * n) * sizeof *Q);
        return QSUR_OK;
    }
    qsur_gpu_ctx c;
    qsur_gpu_solver s = {0};
    double *H = NULL, *Xd = NULL;
    float *W = NULL, *X = NULL, *Qd = NULL;
    if ((rc = qsur_gpu_ctx_init(&c, err)))
        return rc;
    rc = qsur_gpu_solver_init(&s, &c, err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&H, (size_t)(n * n) * 8, "gptq H", err);
    if (!rc && L->H) {
        rc = qsur_gpu_check(cudaMemcpy(H, L->H, (size_t)(n * n) * 8, cudaMemcpyHostToDevice), "H", err);
    } else if (!rc) {
        int64_t chunk = L->n < GRAM_ROWS ? L->n : GRAM_ROWS;
        if (!(rc = qsur_gpu_malloc((void **)&X, (size_t)(chunk * n) * 4, "gptq X", err)))
            rc = qsur_gpu_malloc((void **)&Xd, (size_t)(chunk * n) * 8, "gptq X", err);
        for (int64_t r0 = 0; r0 < L->n && !rc; r0 += chunk) {
            int64_t k = L->n - r0 < chunk ? L->n - r0 : chunk;
            rc = qsur_gpu_check(cudaMemcpy(X, L->X + r0 * n, (size_t)(k * n) * 4, cudaMemcpyHostToDevice),
                                "gptq X", err);
            if (!rc)
                rc = qsur_gpu_gram_add(&c, X, k, n, Xd, H, r0 == 0, err);
        }
    }
    if (!rc)
        rc = qsur_gpu_malloc((void **)&W, (size_t)(m * n) * 4, "gptq W", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&Qd, (size_t)(m * n) * 4, "gptq Q", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(W, L->W, (size_t)(m * n) * 4, cudaMemcpyHostToDevice), "W", err);
    if (!rc)
        rc = qsur_gpu_gptq_run(&s, W, m, n, H, spec, &o, Qd, err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(Q, Qd, (size_t)(m * n) * 4, cudaMemcpyDeviceToHost), "Q", err);
    cudaFree(H), cudaFree(Xd), cudaFree(W), cudaFree(X), cudaFree(Qd);
    qsur_gpu_solver_free(&s);
    qsur_gpu_ctx_free(&c);
    return rc;
}
