#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "channel_analysis.h"
#include "session.h"

void channel_analysis_free(channel_analysis *ca)
{
    free(ca->st);
    free(ca->absmax);
    free(ca->idx);
    memset(ca, 0, sizeof *ca);
}

int channel_analysis_run(session *s, const float *a, int64_t rows, int64_t cols, double k,
                         channel_depth depth, channel_analysis *ca, qsur_error *err)
{
    memset(ca, 0, sizeof *ca);
    ca->cols = cols;
    ca->st = malloc((size_t)cols * sizeof *ca->st);
    ca->absmax = malloc((size_t)cols * sizeof *ca->absmax);
    ca->idx = malloc((size_t)cols * sizeof *ca->idx);
    int rc = ca->st && ca->absmax && ca->idx ? QSUR_OK : qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    if (rc == QSUR_OK && depth == CHANNEL_FULL_STATS) {
        rc = qsur_channel_stats(a, rows, cols, ca->st, &s->progress, err);
        for (int64_t j = 0; rc == QSUR_OK && j < cols; j++)
            ca->absmax[j] = ca->st[j].absmax;
    } else if (rc == QSUR_OK) {
        rc = qsur_column_absmax(a, rows, cols, ca->absmax, err);
        for (int64_t j = 0; rc == QSUR_OK && j < cols; j++)
            ca->st[j] = (qsur_channel_stat){NAN, NAN, ca->absmax[j], NAN, NAN, NAN};
    }
    if (rc == QSUR_OK)
        rc = qsur_outlier_channels(ca->st, cols, k, ca->idx, &ca->nout, &ca->median, err);
    if (rc != QSUR_OK) {
        channel_analysis_free(ca);
        return rc;
    }
    ca->threshold = k * ca->median;
    return QSUR_OK;
}
