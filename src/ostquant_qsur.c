/* OSTQuant's live QSUR: the fixed probe batch and the measurement of every
 * transformed layer for the current parameters (qsur/ostquant.h,
 * qsur/llama_qsur.h). The training loop calls it every qsur_every steps. */
#include <stdlib.h>
#include <string.h>
#include "qsur/clock.h"
#include "qsur/ostquant.h"

void qsur_ostquant_shape(const qsur_ostquant *o, const qsur_tokens *calib, int *T, int *nseq)
{
    int t = o->opts.seq_len > 0 ? o->opts.seq_len : calib->seq_len;
    if (t > calib->seq_len)
        t = calib->seq_len;
    if (t > o->cfg.seq_len)
        t = o->cfg.seq_len;
    int n = calib->seq_len > 0 ? (int)(calib->n / calib->seq_len) : 0;
    if (o->opts.max_seqs > 0 && o->opts.max_seqs < n)
        n = o->opts.max_seqs;
    *T = t;
    *nseq = n;
}

int qsur_ostquant_qsur(const qsur_ostquant *o, const qsur_tokens *calib, qsur_llama_qsur *out,
                       qsur_error *err)
{
    double t0 = qsur_seconds();
    memset(out, 0, sizeof *out);
    int T, nseq;
    qsur_ostquant_shape(o, calib, &T, &nseq);
    if (T < 2 || nseq < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant QSUR: calibration stream has no sequence of >= 2 tokens");
    /* the probe may reach past max_seqs (the sequences trained on): it only
     * measures, and 128 tokens of seqs=2 x 64 would leave w2's 172-dim input
     * singular */
    (void)nseq;
    int avail = (int)(calib->n / calib->seq_len);
    int k = (o->opts.qsur_tokens + T - 1) / T;
    if (k > avail)
        k = avail;
    if (k < 1)
        k = 1;
    /* the first T tokens of each probe sequence, as training cuts them (every
     * sequence starts at the file's sequence start, i.e. at BOS) */
    qsur_tokens probe = {NULL, (int64_t)k * T, T};
    probe.ids = malloc((size_t)probe.n * sizeof(int));
    if (!probe.ids)
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant QSUR: out of memory for %d x %d probe tokens", k, T);
    for (int b = 0; b < k; b++)
        memcpy(probe.ids + (size_t)b * T, calib->ids + (int64_t)b * calib->seq_len, (size_t)T * sizeof(int));
    qsur_llama *m = NULL;
    qsur_llama_rotations *rot = NULL;
    int rc = qsur_ostquant_fuse(o, &m, &rot, err);
    if (!rc)
        rc = qsur_llama_qsur_measure(m, &probe, T, k, &o->qsur_opt, out, err);
    if (!rc) {
        out->step = o->step;
        out->seconds = qsur_seconds() - t0; /* fusion included */
    }
    qsur_llama_free(m);
    qsur_llama_rotations_free(rot);
    free(probe.ids);
    return rc;
}
