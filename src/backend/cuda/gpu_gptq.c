/* GPTQ of one linear on the GPU (qsur/backend.h), the algorithm of src/gptq.c:
 *  - H = X^T X accumulated in double on the device (or the caller's H), dead
 *    columns and damping as on the CPU;
 *  - U, the upper Cholesky factor of H^-1, by cuSOLVER: potrf, potri, potrf
 *    with uplo = lower on the row-major buffer (column-major lower is
 *    row-major upper, so U lands where LAPACK's row-major 'U' puts it);
 *  - the working weight in double, column-major m x n, so one block of
 *    columns is contiguous and one thread per output row walks the block's
 *    columns in order (quantize, scaled error, rank-1 update of the rest of
 *    the block), then one DGEMM applies the block's errors to the columns after it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cusolverDn.h>
#include "gpu_util.h"
#include "kernels.h"
#include "qsur/backend.h"
#include "qsur/qweight.h"
#include "qsur/tensor.h"

#define GRAM_ROWS 8192

typedef struct {
    qsur_gpu_ctx ctx;
    cusolverDnHandle_t sol;
    double *H, *Wd, *E1, *work, *Xd;
    float *Xf, *Q;
    qsur_cu_qmap *maps;
    int *info;
} gptq_dev;

static void dev_free(gptq_dev *d)
{
    void *p[] = {d->H, d->Wd, d->E1, d->work, d->Xd, d->Xf, d->Q, d->maps, d->info};
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++)
        cudaFree(p[i]);
    if (d->sol)
        cusolverDnDestroy(d->sol);
    qsur_gpu_ctx_free(&d->ctx);
}

static int sol_check(cusolverStatus_t s, const char *what, qsur_error *err)
{
    return s == CUSOLVER_STATUS_SUCCESS ? QSUR_OK
                                        : qsur_fail(err, QSUR_ERR_NUMERIC, "gpu gptq: cuSOLVER %s failed (status %d)",
                                                    what, (int)s);
}

/* Hh (host, n x n) = X^T X over the rows of X, in double on the device. */
static int gram(gptq_dev *d, const float *X, int64_t rows, int64_t n, double *Hh, qsur_error *err)
{
    int64_t chunk = rows < GRAM_ROWS ? rows : GRAM_ROWS;
    int rc = qsur_gpu_malloc((void **)&d->Xf, (size_t)(chunk * n) * 4, "gptq X", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&d->Xd, (size_t)(chunk * n) * 8, "gptq X", err);
    for (int64_t r0 = 0; r0 < rows && !rc; r0 += chunk) {
        int64_t k = rows - r0 < chunk ? rows - r0 : chunk;
        rc = qsur_gpu_check(cudaMemcpy(d->Xf, X + r0 * n, (size_t)(k * n) * 4, cudaMemcpyHostToDevice),
                            "gptq X", err);
        if (rc)
            break;
        qsur_cu_to_double(d->Xd, d->Xf, k * n, d->ctx.stream);
        /* row-major X (k x n) is column-major n x k: H += Xc Xc^T */
        double one = 1.0, beta = r0 ? 1.0 : 0.0;
        rc = qsur_gpu_blas_check(cublasDgemm(d->ctx.blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)n, (int)n,
                                             (int)k, &one, d->Xd, (int)n, d->Xd, (int)n, &beta, d->H,
                                             (int)n),
                                 "gram", err);
    }
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(Hh, d->H, (size_t)(n * n) * 8, cudaMemcpyDeviceToHost), "gram", err);
    return rc;
}

/* U in d->H from the damped host H (uploaded). */
static int inverse_factor(gptq_dev *d, const double *Hh, int64_t n, double percdamp, qsur_error *err)
{
    int rc = qsur_gpu_check(cudaMemcpy(d->H, Hh, (size_t)(n * n) * 8, cudaMemcpyHostToDevice), "H", err);
    int lw1 = 0, lw2 = 0;
    if (!rc)
        rc = sol_check(cusolverDnDpotrf_bufferSize(d->sol, CUBLAS_FILL_MODE_LOWER, (int)n, d->H, (int)n, &lw1),
                       "potrf workspace", err);
    if (!rc)
        rc = sol_check(cusolverDnDpotri_bufferSize(d->sol, CUBLAS_FILL_MODE_LOWER, (int)n, d->H, (int)n, &lw2),
                       "potri workspace", err);
    int lw = lw1 > lw2 ? lw1 : lw2;
    if (!rc)
        rc = qsur_gpu_malloc((void **)&d->work, (size_t)(lw > 0 ? lw : 1) * 8, "gptq workspace", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&d->info, sizeof(int), "gptq info", err);
    for (int step = 0; step < 3 && !rc; step++) {
        rc = sol_check(step == 1 ? cusolverDnDpotri(d->sol, CUBLAS_FILL_MODE_LOWER, (int)n, d->H, (int)n,
                                                    d->work, lw, d->info)
                                 : cusolverDnDpotrf(d->sol, CUBLAS_FILL_MODE_LOWER, (int)n, d->H, (int)n,
                                                    d->work, lw, d->info),
                       step == 1 ? "potri" : "potrf", err);
        int info = 0;
        if (!rc)
            rc = qsur_gpu_check(cudaMemcpy(&info, d->info, sizeof info, cudaMemcpyDeviceToHost), "info", err);
        if (!rc && info != 0)
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "gpu gptq: damped H (%lldx%lld) is not positive "
                           "definite (minor %d); raise percdamp (now %g)", (long long)n, (long long)n,
                           info, percdamp);
    }
    return rc;
}

/* Host side: H with dead columns fixed and damping, W with dead columns zeroed,
 * the static maps (tensor / row). */
static int prepare(const qsur_wquant_layer *L, const qsur_quant_spec *spec, double percdamp,
                   double *Hh, float *Wf, qsur_cu_qmap **maps, int *nmaps, qsur_error *err)
{
    const int64_t m = L->rows, n = L->cols;
    memcpy(Wf, L->W, (size_t)(m * n) * sizeof(float));
    for (int64_t j = 0; j < n; j++)
        if (Hh[j * n + j] == 0.0) {
            Hh[j * n + j] = 1.0;
            for (int64_t r = 0; r < m; r++)
                Wf[r * n + j] = 0.0f;
        }
    double mean = 0;
    for (int64_t j = 0; j < n; j++)
        mean += Hh[j * n + j];
    mean /= (double)n;
    for (int64_t j = 0; j < n; j++)
        Hh[j * n + j] += percdamp * mean;
    *maps = NULL;
    *nmaps = 0;
    if (spec->gran == QSUR_GRAN_GROUP)
        return QSUR_OK;
    qsur_qweight *qw = NULL;
    int rc = qsur_qweight_new(&qw, spec, m, n, err);
    if (!rc)
        rc = qsur_qweight_fit_rtn(qw, Wf, err);
    int count = spec->gran == QSUR_GRAN_ROW ? (int)m : 1;
    if (!rc && !(*maps = malloc((size_t)count * sizeof **maps)))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "gpu gptq: out of memory");
    for (int r = 0; r < count && !rc; r++) {
        const qsur_qparams *p = qsur_qweight_map(qw, r, 0);
        (*maps)[r] = (qsur_cu_qmap){p->inv, p->scale, p->zero, p->lo, p->hi};
    }
    *nmaps = count;
    qsur_qweight_free(qw);
    return rc;
}

static int run_blocks(gptq_dev *d, const float *Wf, int64_t m, int64_t n, int64_t B,
                      const qsur_quant_spec *spec, int nmaps, float *Q, qsur_error *err)
{
    /* Wd (column-major m x n double) = Wf^T-view, through Xd as row-major scratch */
    int rc = qsur_gpu_malloc((void **)&d->Xf, (size_t)(m * n) * 4, "gptq W", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&d->Xd, (size_t)(m * n) * 8, "gptq W", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&d->Wd, (size_t)(m * n) * 8, "gptq W", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&d->E1, (size_t)(m * B) * 8, "gptq errors", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&d->Q, (size_t)(m * n) * 4, "gptq Q", err);
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(d->Xf, Wf, (size_t)(m * n) * 4, cudaMemcpyHostToDevice), "W", err);
    if (rc)
        return rc;
    qsur_cu_to_double(d->Xd, d->Xf, m * n, d->ctx.stream);
    double one = 1.0, zero = 0.0;
    rc = qsur_gpu_blas_check(cublasDgeam(d->ctx.blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)m, (int)n, &one,
                                         d->Xd, (int)n, &zero, d->Wd, (int)m, d->Wd, (int)m),
                             "transpose", err);
    qsur_cu_quant q = {spec->bits, spec->symmetric, (int)spec->gran, spec->group, spec->clip};
    int64_t G = spec->gran == QSUR_GRAN_GROUP ? spec->group : 0;
    for (int64_t i1 = 0; i1 < n && !rc; i1 += B) {
        int64_t nb = n - i1 < B ? n - i1 : B;
        qsur_cu_gptq_block(d->Wd + i1 * m, d->E1, d->H, n, m, i1, nb, d->maps, nmaps > 1 ? 1 : 0, &q,
                           G, d->Q, d->ctx.stream);
        if (i1 + nb < n) {
            /* Wd[:, i1+nb:] -= E1 (m x nb) * U[i1:i1+nb, i1+nb:] (row-major U = column-major U^T) */
            double mone = -1.0;
            rc = qsur_gpu_blas_check(cublasDgemm(d->ctx.blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)m,
                                                 (int)(n - i1 - nb), (int)nb, &mone, d->E1, (int)m,
                                                 d->H + i1 * n + i1 + nb, (int)n, &one,
                                                 d->Wd + (i1 + nb) * m, (int)m),
                                     "lazy batch", err);
        }
    }
    if (!rc)
        rc = qsur_gpu_check(cudaMemcpy(Q, d->Q, (size_t)(m * n) * 4, cudaMemcpyDeviceToHost), "Q", err);
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
    int64_t G = spec->gran == QSUR_GRAN_GROUP ? spec->group : 0, B = o.block;
    if (G)
        B = G >= B ? G : (B / G) * G;
    if (B > n)
        B = n;
    double *Hh = qsur_alloc((size_t)(n * n), sizeof(double));
    float *Wf = qsur_alloc((size_t)(m * n), sizeof(float));
    qsur_cu_qmap *maps = NULL;
    int nmaps = 0;
    gptq_dev d;
    memset(&d, 0, sizeof d);
    if (!Hh || !Wf)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "gpu gptq: cannot allocate host work for %lldx%lld",
                       (long long)m, (long long)n);
    if (!rc)
        rc = qsur_gpu_ctx_init(&d.ctx, err);
    if (!rc)
        rc = sol_check(cusolverDnCreate(&d.sol), "create", err);
    if (!rc)
        rc = sol_check(cusolverDnSetStream(d.sol, d.ctx.stream), "set stream", err);
    if (!rc)
        rc = qsur_gpu_malloc((void **)&d.H, (size_t)(n * n) * 8, "gptq H", err);
    if (!rc) {
        if (L->H)
            memcpy(Hh, L->H, (size_t)(n * n) * sizeof(double));
        else
            rc = gram(&d, L->X, L->n, n, Hh, err);
    }
    cudaFree(d.Xf), cudaFree(d.Xd);
    d.Xf = NULL, d.Xd = NULL;
    if (!rc)
        rc = prepare(L, spec, o.percdamp, Hh, Wf, &maps, &nmaps, err);
    if (!rc)
        rc = inverse_factor(&d, Hh, n, o.percdamp, err);
    if (!rc && nmaps) {
        rc = qsur_gpu_malloc((void **)&d.maps, (size_t)nmaps * sizeof *maps, "gptq maps", err);
        if (!rc)
            rc = qsur_gpu_check(cudaMemcpy(d.maps, maps, (size_t)nmaps * sizeof *maps,
                                           cudaMemcpyHostToDevice), "maps", err);
    }
    if (!rc)
        rc = run_blocks(&d, Wf, m, n, B, spec, nmaps, Q, err);
    if (!rc)
        rc = qsur_gpu_check(cudaDeviceSynchronize(), "gptq", err);
    dev_free(&d);
    free(Hh), free(Wf), free(maps);
    return rc;
}
