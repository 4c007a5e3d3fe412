/* Per-channel statistics, outlier channels, histograms and top-k channels.
 *
 * A channel is a column of a rows x cols row-major matrix (an input feature of a
 * weight W: out x in, or of an activation X: tokens x in). Moments are
 * population moments (divide by n), accumulated in double in two passes
 * (mean first, then centred sums) so a large common offset does not cancel. */
#ifndef QSUR_STATS_H
#define QSUR_STATS_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"

typedef struct {
    double min, max, absmax;
    double mean;
    double std;       /* sqrt((1/n) sum (x - mean)^2) */
    double kurtosis;  /* excess: m4 / m2^2 - 3 (0 for a Gaussian); NAN when std = 0 */
} qsur_channel_stat;

/* st[j] for every column j (st has cols entries). rows >= 1. Fails with
 * QSUR_ERR_NUMERIC naming the first NaN/Inf (row, column). */
int qsur_channel_stats(const float *x, int64_t rows, int64_t cols, qsur_channel_stat *st,
                       const qsur_progress *prog, qsur_error *err);

/* absmax[j] = max |x_ij| over the rows, one vectorised pass (what the outlier
 * bars need, at a quarter of qsur_channel_stats' cost). Fails with
 * QSUR_ERR_NUMERIC naming the first NaN/Inf. */
int qsur_column_absmax(const float *x, int64_t rows, int64_t cols, double *absmax, qsur_error *err);

/* Outlier channels: absmax > k * median(absmax over all channels). The default
 * k = 8 sits well above the spread of absmax between ordinary channels (a
 * Gaussian or Student-t channel of the same scale lands within ~1-3x of the
 * median over a few thousand tokens) and well below the 20-1000x "massive
 * activation" channels that make LLM activations hard to quantize. */
#define QSUR_OUTLIER_K_DEFAULT 8.0

/* Writes the outlier column indices in increasing order into idx (room for
 * cols entries), their number into *count and the median absmax into *median
 * (may be NULL). k must be > 0. */
int qsur_outlier_channels(const qsur_channel_stat *st, int64_t cols, double k, int64_t *idx,
                          int64_t *count, double *median, qsur_error *err);

/* Top-k channels by absmax, largest first (ties: smaller index first). Writes
 * min(k, cols) indices to idx and returns that number. */
int64_t qsur_topk_absmax(const qsur_channel_stat *st, int64_t cols, int64_t k, int64_t *idx);

/* Histogram over [lo, hi] = [min, max] of the data, nbins equal bins; bin i
 * holds lo + i*w <= v < lo + (i+1)*w, the last bin is closed on the right (so
 * the maximum is counted). When min == max the range is [v - 0.5, v + 0.5]. */
typedef enum {
    QSUR_BINS_FIXED = 0,      /* caller's bin count */
    QSUR_BINS_FREEDMAN_DIACONIS, /* width 2 IQR n^(-1/3) */
    QSUR_BINS_STURGES         /* ceil(log2 n) + 1: used when the IQR is 0 */
} qsur_bin_rule;

typedef struct {
    int nbins;
    qsur_bin_rule rule;  /* which rule chose nbins */
    int64_t n;           /* values counted (= sum of counts) */
    double lo, hi;
    int64_t *counts;     /* nbins */
    double *edges;       /* nbins + 1, edges[0] = lo, edges[nbins] = hi */
} qsur_hist;

/* Cap on the bin count of either rule (and of a fixed request). */
#define QSUR_HIST_MAX_BINS 4096

/* Histogram of column col of x (rows x cols), or of every value when col < 0.
 * nbins > 0 fixes the count; nbins == 0 picks it automatically (Freedman-
 * Diaconis, or Sturges when the IQR is 0). Non-finite values are an error. */
int qsur_hist_new(qsur_hist **out, const float *x, int64_t rows, int64_t cols, int64_t col,
                  int nbins, qsur_error *err);
void qsur_hist_free(qsur_hist *h);

/* The p-quantile (0 <= p <= 1) of v[0..n) with linear interpolation between
 * order statistics (numpy's default, "type 7"). Reorders v (selection). */
double qsur_quantile_inplace(float *v, int64_t n, double p);

#endif
