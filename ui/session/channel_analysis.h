/* Per-channel statistics plus outlier channels of one matrix, computed once
 * and shared by the stats, outliers and compare commands and the TUI. */
#ifndef QSUR_UI_CHANNEL_ANALYSIS_H
#define QSUR_UI_CHANNEL_ANALYSIS_H

#include "qsur/stats.h"

struct session;

typedef struct {
    int64_t cols;
    qsur_channel_stat *st;  /* cols entries */
    double *absmax;         /* cols entries (st[j].absmax as a plain array, for plots) */
    int64_t *idx;           /* outlier channels first (nout of them); room for cols */
    int64_t nout;
    double median;          /* median channel absmax */
    double threshold;       /* k x median */
} channel_analysis;

/* What channel_analysis_run computes per column: everything (qsur_channel_stats)
 * or only absmax, all that outliers and bars need (one pass, a quarter of the
 * time; the other st fields are then NAN). */
typedef enum { CHANNEL_FULL_STATS, CHANNEL_ABSMAX_ONLY } channel_depth;

/* Stats of every column of a (rows x cols) and the channels whose absmax
 * exceeds k x the median absmax. Free with channel_analysis_free. */
int channel_analysis_run(struct session *s, const float *a, int64_t rows, int64_t cols, double k,
                         channel_depth depth, channel_analysis *ca, qsur_error *err);
void channel_analysis_free(channel_analysis *ca);

#endif
