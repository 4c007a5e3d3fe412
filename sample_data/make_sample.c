/* make_sample OUTDIR: writes a deterministic, realistic LLM linear layer
 *     OUTDIR/X.npy             activations, 512 tokens x 256 channels
 *     OUTDIR/W.npy             weight, 384 out x 256 in
 *     OUTDIR/layer.safetensors the same two tensors (F32), named X and W
 *
 * What makes it "realistic" (the features quantization methods fight):
 *  - 4 massive outlier channels, 70-120x the typical channel rms (over 10x
 *    the median channel absmax, which the heavy tails already push to ~5.5
 *    rms), with the same sign and nearly the same size on every token, as in
 *    LLM residual streams;
 *  - heavy tails: Student-t with 4 degrees of freedom instead of Gaussian;
 *  - correlated channels: each channel loads on one of 8 shared factors;
 *  - per-channel scales that vary 0.5..2;
 *  - W Gaussian with std 1/sqrt(256) and 6 input columns 4-8x larger.
 *
 * Bit-for-bit reproducible: a fixed-seed splitmix64 generator and only
 * + - * / and sqrt (correctly rounded in IEEE 754; no libm transcendental
 * functions, whose last bit may differ between libm versions). Gaussians are
 * Irwin-Hall sums of 12 uniforms. tests/test_sample_data.c regenerates the
 * files and compares them byte for byte with the committed ones. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include "qsur/npy.h"
#include "qsur/safetensors.h"

#define TOKENS 512
#define CH 256
#define OUT 384 /* more rows than columns, so the weight's covariance (rows as samples) has full rank and a QSUR */
#define FACTORS 8

typedef struct {
    uint64_t s;
} prng;

static uint64_t next_u64(prng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* uniform in [0, 1) with 53 random bits: exact in a double */
static double uniform(prng *r)
{
    return (double)(next_u64(r) >> 11) * (1.0 / 9007199254740992.0);
}

/* Irwin-Hall: mean 0, variance 1, tails cut at +-6 (fine for sample data) */
static double gauss(prng *r)
{
    double s = 0;
    for (int i = 0; i < 12; i++)
        s += uniform(r);
    return s - 6.0;
}

/* Student-t, 4 degrees of freedom, scaled to unit variance (var = nu/(nu-2)) */
static double student_t4(prng *r)
{
    double chi2 = 0;
    for (int i = 0; i < 4; i++) {
        double g = gauss(r);
        chi2 += g * g;
    }
    return gauss(r) / sqrt(chi2 / 4.0) / sqrt(2.0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: make_sample OUTDIR\n");
        return 2;
    }
    prng r = {20240607u};
    qsur_error err;
    qsur_tensor *X, *W;
    if (qsur_tensor_new2(&X, "X", TOKENS, CH, &err) || qsur_tensor_new2(&W, "W", OUT, CH, &err)) {
        fprintf(stderr, "make_sample: %s\n", err.msg);
        return 1;
    }

    /* Channel structure: scale 0.5..2, a factor and a loading on it. */
    double scale[CH], load[CH];
    int factor[CH];
    for (int j = 0; j < CH; j++) {
        double u = uniform(&r);
        scale[j] = 0.5 + 1.5 * u * u;
        factor[j] = (int)(uniform(&r) * FACTORS);
        load[j] = 0.4 + 0.5 * uniform(&r);
        if (uniform(&r) < 0.5)
            load[j] = -load[j];
    }
    /* The massive channels: index, signed size (typical channel rms is ~1). */
    const int out_ch[4] = {17, 90, 151, 230};
    const double out_mag[4] = {70.0, -85.0, 100.0, -120.0};

    for (int t = 0; t < TOKENS; t++) {
        double f[FACTORS];
        for (int k = 0; k < FACTORS; k++)
            f[k] = student_t4(&r);
        for (int j = 0; j < CH; j++) {
            double own = student_t4(&r);
            /* corr(x_i, x_j) = load_i load_j / (1 + ...) for channels on one factor */
            double v = scale[j] * (load[j] * f[factor[j]] + own);
            X->data[(size_t)t * CH + (size_t)j] = (float)v;
        }
        for (int k = 0; k < 4; k++) {
            /* same sign on every token, +-10% jitter around the channel's size */
            double v = out_mag[k] * (1.0 + 0.1 * gauss(&r));
            X->data[(size_t)t * CH + (size_t)out_ch[k]] = (float)v;
        }
    }

    const int big_col[6] = {5, 64, 99, 128, 177, 250};
    const double big_mul[6] = {4.0, 6.0, 8.0, 5.0, 4.5, 7.0};
    double colmul[CH];
    for (int j = 0; j < CH; j++)
        colmul[j] = 1.0;
    for (int k = 0; k < 6; k++)
        colmul[big_col[k]] = big_mul[k];
    for (int o = 0; o < OUT; o++)
        for (int j = 0; j < CH; j++)
            W->data[(size_t)o * CH + (size_t)j] = (float)(gauss(&r) / 16.0 * colmul[j]);

    char path[4096];
    int rc = 0;
    snprintf(path, sizeof path, "%s/X.npy", argv[1]);
    if (!rc)
        rc = qsur_npy_write(path, X, &err);
    snprintf(path, sizeof path, "%s/W.npy", argv[1]);
    if (!rc)
        rc = qsur_npy_write(path, W, &err);
    snprintf(path, sizeof path, "%s/layer.safetensors", argv[1]);
    const qsur_tensor *ts[2] = {X, W};
    const char *meta[2] = {"source", "qsur make_sample (synthetic, seed 20240607)"};
    if (!rc)
        rc = qsur_safetensors_write(path, ts, 2, NULL, meta, 1, NULL, &err);
    qsur_tensor_free(X);
    qsur_tensor_free(W);
    if (rc) {
        fprintf(stderr, "make_sample: %s\n", err.msg);
        return 1;
    }
    return 0;
}
