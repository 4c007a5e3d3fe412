/* Channel statistics, outliers, histograms, quantiles and top-k against
 * hand-computed values. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/stats.h"


static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void test_channel_stats(void)
{
    /* 5 rows x 4 columns.
     * col 0 = -2,-1,0,1,2: mean 0, m2 = (4+1+0+1+4)/5 = 2, m4 = (16+1+0+1+16)/5 = 6.8,
     *         excess kurtosis 6.8/2^2 - 3 = -1.3.
     * col 1 = 0,0,0,0,10: mean 2, deviations -2 x4 and 8: m2 = (16+64)/5 = 16,
     *         m4 = (4*16 + 4096)/5 = 832, kurtosis 832/256 - 3 = 0.25.
     * col 2 = 3 (constant): std 0, kurtosis undefined (NAN).
     * col 3 = 1e6 + col 0 (exact in float): same std and kurtosis as col 0 — a
     *         one-pass sum of squares would lose them to cancellation. */
    float x[20];
    float c0[5] = {-2, -1, 0, 1, 2}, c1[5] = {0, 0, 0, 0, 10};
    for (int r = 0; r < 5; r++) {
        x[r * 4 + 0] = c0[r];
        x[r * 4 + 1] = c1[r];
        x[r * 4 + 2] = 3;
        x[r * 4 + 3] = 1e6f + c0[r];
    }
    qsur_channel_stat st[4];
    qsur_error err;
    CHECK_OK(qsur_channel_stats(x, 5, 4, st, NULL, &err), err);
    CHECK(st[0].min == -2 && st[0].max == 2 && st[0].absmax == 2 && st[0].mean == 0);
    CHECK_REL(st[0].std, sqrt(2.0), 1e-15);
    CHECK_REL(st[0].kurtosis, -1.3, 1e-14);
    CHECK(st[1].min == 0 && st[1].max == 10 && st[1].absmax == 10);
    CHECK_REL(st[1].mean, 2.0, 1e-15);
    CHECK_REL(st[1].std, 4.0, 1e-15);
    CHECK_REL(st[1].kurtosis, 0.25, 1e-14);
    CHECK(st[2].std == 0 && isnan(st[2].kurtosis) && st[2].absmax == 3);
    CHECK_REL(st[3].mean, 1e6, 1e-15);
    CHECK_REL(st[3].std, sqrt(2.0), 1e-12);
    CHECK_REL(st[3].kurtosis, -1.3, 1e-9);

    x[6] = NAN;
    CHECK(qsur_channel_stats(x, 5, 4, st, NULL, &err) == QSUR_ERR_NUMERIC);
    CHECK(strstr(err.msg, "row 1, column 2") != NULL);
    x[6] = 3;
    x[13] = INFINITY; /* +Inf and -Inf in one column would sum to NaN: both caught */
    x[17] = -INFINITY;
    CHECK(qsur_channel_stats(x, 5, 4, st, NULL, &err) == QSUR_ERR_NUMERIC);
    CHECK(strstr(err.msg, "row 3, column 1") != NULL);
    x[13] = 0;
    CHECK(qsur_channel_stats(x, 5, 4, st, NULL, &err) == QSUR_ERR_NUMERIC);
    CHECK(strstr(err.msg, "row 4, column 1") != NULL);
}

static void test_outliers_topk(void)
{
    enum { R = 1000, C = 64 };
    float *x = malloc(sizeof(float) * R * C);
    for (int i = 0; i < R * C; i++)
        x[i] = (float)check_gauss();
    /* Planted "massive activation" channels: 30x the others. */
    for (int r = 0; r < R; r++) {
        x[r * C + 5] *= 30;
        x[r * C + 40] *= 30;
    }
    qsur_channel_stat st[C];
    qsur_error err;
    CHECK_OK(qsur_channel_stats(x, R, C, st, NULL, &err), err);
    int64_t idx[C], count = -1;
    double med = 0;
    CHECK_OK(qsur_outlier_channels(st, C, QSUR_OUTLIER_K_DEFAULT, idx, &count, &med, &err), err);
    CHECK_MSG(count == 2 && idx[0] == 5 && idx[1] == 40, "found %lld outliers", (long long)count);
    /* The max |N(0,1)| of 1000 draws is ~3.3; the median over channels is near it. */
    CHECK(med > 2.5 && med < 4.5);
    /* Kurtosis of the Gaussian channels is near 0 (std error sqrt(24/1000) ~ 0.15). */
    CHECK(fabs(st[0].kurtosis) < 0.6 && fabs(st[63].kurtosis) < 0.6);
    CHECK(qsur_outlier_channels(st, C, 0.0, idx, &count, NULL, &err) == QSUR_ERR_ARG);

    /* The one-pass absmax is the same numbers; it names a NaN or an Inf. */
    double am[C];
    CHECK_OK(qsur_column_absmax(x, R, C, am, &err), err);
    int same_absmax = 1;
    for (int j = 0; j < C; j++)
        same_absmax &= am[j] == st[j].absmax;
    CHECK(same_absmax);
    float keep = x[7 * C + 9];
    x[7 * C + 9] = -INFINITY;
    CHECK(qsur_column_absmax(x, R, C, am, &err) == QSUR_ERR_NUMERIC && strstr(err.msg, "row 7, column 9"));
    x[7 * C + 9] = NAN;
    CHECK(qsur_column_absmax(x, R, C, am, &err) == QSUR_ERR_NUMERIC && strstr(err.msg, "row 7, column 9"));
    x[7 * C + 9] = keep;
    CHECK(qsur_column_absmax(x, R, 0, am, &err) == QSUR_ERR_ARG);

    int64_t top[3];
    CHECK(qsur_topk_absmax(st, C, 3, top) == 3);
    CHECK(top[0] == 5 || top[0] == 40);
    CHECK((top[1] == 5 || top[1] == 40) && top[1] != top[0]);
    CHECK(st[top[2]].absmax <= st[top[1]].absmax);

    /* Hand case with a tie: absmax 3, 9, 1, 9, 5 -> 1, 3 (tie, lower index first), 4, 0, 2. */
    qsur_channel_stat h[5];
    double a[5] = {3, 9, 1, 9, 5};
    for (int j = 0; j < 5; j++)
        h[j].absmax = a[j];
    int64_t t5[5];
    CHECK(qsur_topk_absmax(h, 5, 10, t5) == 5);
    CHECK(t5[0] == 1 && t5[1] == 3 && t5[2] == 4 && t5[3] == 0 && t5[4] == 2);
    /* Median of 3,9,1,9,5 is 5; k = 1.5 flags absmax > 7.5: channels 1 and 3. */
    CHECK_OK(qsur_outlier_channels(h, 5, 1.5, idx, &count, &med, &err), err);
    CHECK(med == 5 && count == 2 && idx[0] == 1 && idx[1] == 3);
    free(x);
}

static void test_hist(void)
{
    qsur_error err;
    qsur_hist *h = NULL;
    /* Values 0,1,1,2,3,4 in 4 bins over [0,4], width 1: [0,1) {0}, [1,2) {1,1},
     * [2,3) {2}, [3,4] {3,4} (last bin closed). Stored as a 3x2 matrix; whole tensor. */
    float v[6] = {0, 1, 1, 2, 3, 4};
    CHECK_OK(qsur_hist_new(&h, v, 3, 2, -1, 4, &err), err);
    CHECK(h->nbins == 4 && h->n == 6 && h->rule == QSUR_BINS_FIXED);
    CHECK(h->counts[0] == 1 && h->counts[1] == 2 && h->counts[2] == 1 && h->counts[3] == 2);
    for (int i = 0; i <= 4; i++)
        CHECK(h->edges[i] == i);
    qsur_hist_free(h);
    /* Column 1 of that matrix is 1, 2, 4: 3 bins of width 1 over [1, 4]: 1, 1, 1. */
    CHECK_OK(qsur_hist_new(&h, v, 3, 2, 1, 3, &err), err);
    CHECK(h->n == 3 && h->lo == 1 && h->hi == 4);
    CHECK(h->counts[0] == 1 && h->counts[1] == 1 && h->counts[2] == 1);
    qsur_hist_free(h);

    /* Freedman-Diaconis on N(0,1): width 2 IQR n^(-1/3), IQR from a full sort here. */
    enum { N = 10000 };
    float *x = malloc(sizeof(float) * N), *s = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++)
        x[i] = s[i] = (float)check_gauss();
    qsort(s, N, sizeof(float), cmp_float);
    /* type-7 quantile: position p (n-1) = 2499.75 and 7499.25. */
    double q1 = s[2499] + 0.75 * ((double)s[2500] - s[2499]);
    double q3 = s[7499] + 0.25 * ((double)s[7500] - s[7499]);
    int want = (int)ceil(((double)s[N - 1] - s[0]) / (2 * (q3 - q1) * pow(N, -1.0 / 3)));
    CHECK_OK(qsur_hist_new(&h, x, N, 1, 0, 0, &err), err);
    CHECK(h->rule == QSUR_BINS_FREEDMAN_DIACONIS);
    CHECK_MSG(h->nbins == want, "FD bins %d, expected %d", h->nbins, want);
    int64_t total = 0;
    for (int i = 0; i < h->nbins; i++)
        total += h->counts[i];
    CHECK(total == N);
    CHECK(fabs(q3 - q1 - 1.349) < 0.1); /* the normal IQR */
    qsur_hist_free(h);
    /* Quantile helper vs the sorted copy. */
    CHECK_REL(qsur_quantile_inplace(x, N, 0.25), q1, 1e-7);
    float five[5] = {5, 1, 4, 2, 3};
    CHECK_NEAR(qsur_quantile_inplace(five, 5, 0.3), 2.2, 1e-6); /* h = 1.2: 2 + 0.2 */
    CHECK_NEAR(qsur_quantile_inplace(five, 5, 1.0), 5.0, 0);

    /* IQR 0 (90 zeros, 5 ones, 5 twos): Sturges, ceil(log2 100) + 1 = 8 bins. */
    for (int i = 0; i < 100; i++)
        x[i] = i < 90 ? 0.0f : (i < 95 ? 1.0f : 2.0f);
    CHECK_OK(qsur_hist_new(&h, x, 100, 1, -1, 0, &err), err);
    CHECK(h->rule == QSUR_BINS_STURGES && h->nbins == 8);
    CHECK(h->counts[0] == 90 && h->counts[7] == 5);
    qsur_hist_free(h);
    /* A constant column: one value, range [v-0.5, v+0.5]. */
    CHECK_OK(qsur_hist_new(&h, x, 10, 1, 0, 0, &err), err);
    CHECK(h->lo == -0.5 && h->hi == 0.5 && h->n == 10);
    qsur_hist_free(h);
    CHECK(qsur_hist_new(&h, x, 10, 1, 3, 0, &err) == QSUR_ERR_ARG && h == NULL);
    free(x);
    free(s);
}

int main(void)
{
    check_seed(4242);
    test_channel_stats();
    test_outliers_topk();
    test_hist();
    return check_done();
}
