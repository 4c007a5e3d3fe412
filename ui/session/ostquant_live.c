/* Live QSUR of `ostquant model|resume`: REPL line, report tables and the
 * session's record of the last run (ostquant_live.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ostquant_live.h"
#include "session.h"

void ostquant_site_label(const qsur_site_qsur *s, char *buf, size_t n)
{
    snprintf(buf, n, "L%d %s", s->layer, qsur_site_name(s->site));
}

qsur_options ostquant_session_qsur_options(const session *s)
{
    qsur_options opt = qsur_options_default();
    opt.alpha = s->set.qsur_alpha;
    opt.cube = s->set.qsur_asym ? QSUR_CUBE_ASYM : QSUR_CUBE_SYM;
    opt.method = (qsur_method)s->set.qsur_method;
    return opt;
}

/* The training-log row of a step (NULL for step 0 or when not logged). */
static const qsur_ostquant_log *log_at(const qsur_ostquant *o, int step)
{
    for (int i = o->nlog - 1; i >= 0; i--)
        if (o->log[i].step == step)
            return &o->log[i];
    return NULL;
}

void ostquant_live_line(const qsur_ostquant *o, const qsur_llama_qsur *q, char *buf, size_t n)
{
    size_t at = 0;
#define ADD(...)                                                                    \
    do {                                                                            \
        if (at < n) {                                                               \
            int w_ = snprintf(buf + at, n - at, __VA_ARGS__);                        \
            at += w_ > 0 ? (size_t)w_ : 0;                                          \
        }                                                                           \
    } while (0)
    buf[0] = '\0';
    const qsur_ostquant_log *row = log_at(o, q->step);
    if (row) {
        if (o->opts.loss == QSUR_OSTQ_KLTOP) /* the loss is KL-Top */
            ADD("ostq %d/%d kl %.4f", q->step, o->opts.steps, row->kltop);
        else
            ADD("ostq %d/%d loss %.4f kl %.4f", q->step, o->opts.steps, row->loss, row->kltop);
        if (!isnan(row->ppl))
            ADD(" ppl %.3f", row->ppl);
    } else {
        ADD("ostq %d/%d start", q->step, o->opts.steps);
    }
    char worst[32] = "-";
    if (q->x_worst >= 0)
        ostquant_site_label(&q->sites[q->x_worst], worst, sizeof worst);
    ADD(" | X log10 QSUR mean %.2f, ^(1/d) mean %.4f min %.4f (%s)", q->x_log10_mean, q->x_pd_mean, q->x_pd_min,
        worst);
    if (q->x_nsingular)
        ADD(" %d singular", q->x_nsingular);
    ADD(" | W ^(1/d) mean %.4f | %.0f ms", q->w_pd_mean, 1e3 * q->seconds);
#undef ADD
}

void ostquant_qsur_table(report *r, const char *name, const qsur_llama_qsur *q, const qsur_llama_qsur *start)
{
    const char *keys_s[] = {"layer", "input", "d", "x_log10_start", "x_log10", "x_qsur_d", "w_log10", "w_qsur_d"};
    const char *keys[] = {"layer", "input", "d", "x_log10", "x_qsur_d", "w_log10", "w_qsur_d"};
    static const int widths_s[] = {5, -19, 4, 13, 10, 9, 10, 9};
    static const int widths[] = {5, -19, 4, 10, 9, 10, 9};
    int ok_start = start && start->nsites == q->nsites;
    if (ok_start)
        rep_table_begin(r, name, 8, keys_s, widths_s);
    else
        rep_table_begin(r, name, 7, keys, widths);
    for (int i = 0; i < q->nsites; i++) {
        const qsur_site_qsur *s = &q->sites[i];
        rep_cell_int(r, s->layer);
        rep_cell_str(r, qsur_site_input(s->site));
        rep_cell_int(r, s->d);
        if (ok_start)
            rep_cell_num(r, start->sites[i].x_log10, "%.4f");
        /* the formats of `qsur` (X log10 QSUR %.4f, QSUR^(1/d) %.6f) */
        rep_cell_num(r, s->x_log10, "%.4f");
        rep_cell_num(r, s->x_per_dim, "%.6f");
        rep_cell_num(r, s->w_log10, "%.4f");
        rep_cell_num(r, s->w_per_dim, "%.6f");
    }
    rep_table_end(r);
}

void ostquant_qsur_history(report *r, const char *name, const qsur_llama_qsur *qlog, int n)
{
    static const char *const keys[] = {"step", "x_log10_mean", "x_qsur_d_mean", "x_qsur_d_min", "x_worst",
                                       "w_qsur_d_mean", "ms"};
    static const int widths[] = {6, 12, 13, 12, -9, 13, 6};
    rep_table_begin(r, name, 7, keys, widths);
    int every = n > 20 ? n / 20 : 1;
    for (int i = 0; i < n; i++) {
        if (!(i % every == 0 || i == n - 1))
            continue;
        const qsur_llama_qsur *q = &qlog[i];
        char worst[32] = "-";
        if (q->x_worst >= 0)
            ostquant_site_label(&q->sites[q->x_worst], worst, sizeof worst);
        rep_cell_int(r, q->step);
        rep_cell_num(r, q->x_log10_mean, "%.4f");
        rep_cell_num(r, q->x_pd_mean, "%.6f");
        rep_cell_num(r, q->x_pd_min, "%.6f");
        rep_cell_str(r, worst);
        rep_cell_num(r, q->w_pd_mean, "%.6f");
        rep_cell_num(r, 1e3 * q->seconds, "%.1f");
    }
    rep_table_end(r);
}

void ostquant_record_free(ostquant_record *rec)
{
    if (!rec)
        return;
    for (int i = 0; i < rec->nqlog; i++)
        qsur_llama_qsur_free(&rec->qlog[i]);
    free(rec->qlog);
    qsur_llama_qsur_free(&rec->final);
    free(rec);
}

int ostquant_record_new(ostquant_record **out, const qsur_ostquant *o, qsur_llama_qsur *final,
                        const char *how, int interrupted, qsur_error *err)
{
    *out = NULL;
    ostquant_record *rec = calloc(1, sizeof *rec);
    if (!rec || (o->nqlog > 0 && !(rec->qlog = calloc((size_t)o->nqlog, sizeof *rec->qlog)))) {
        free(rec);
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant: out of memory for the QSUR record");
    }
    snprintf(rec->how, sizeof rec->how, "%s", how);
    rec->steps_done = o->step;
    rec->best_step = o->best_step;
    rec->interrupted = interrupted;
    for (int i = 0; i < o->nqlog; i++) {
        int rc = qsur_llama_qsur_copy(&rec->qlog[i], &o->qlog[i], err);
        if (rc) {
            ostquant_record_free(rec);
            return rc;
        }
        rec->nqlog = i + 1;
    }
    if (final) {
        rec->final = *final;
        memset(final, 0, sizeof *final);
    }
    *out = rec;
    return QSUR_OK;
}

/* The first table of the log at step 0 (the run's start point), else the first. */
static const qsur_llama_qsur *start_of(const qsur_llama_qsur *qlog, int n)
{
    for (int i = 0; i < n; i++)
        if (qlog[i].step == 0)
            return &qlog[i];
    return n > 0 ? &qlog[0] : NULL;
}

void ostquant_record_report(const ostquant_record *rec, report *r)
{
    rep_str(r, "run", "last run", rec->how);
    rep_int(r, "steps_done", "steps done", rec->steps_done);
    rep_int(r, "best_step", "best step (the session model)", rec->best_step);
    rep_bool(r, "interrupted", "interrupted (best kept)", rec->interrupted);
    rep_int(r, "measurements", "QSUR measurements", rec->nqlog);
    const qsur_llama_qsur *start = start_of(rec->qlog, rec->nqlog);
    if (rec->nqlog > 0)
        ostquant_qsur_history(r, "qsur_history", rec->qlog, rec->nqlog);
    if (rec->final.nsites > 0) {
        const qsur_llama_qsur *f = &rec->final;
        rep_str(r, "cube", "QSUR cube", qsur_cube_name(f->cube));
        rep_num(r, "alpha", "QSUR alpha", f->alpha, "%g");
        rep_int(r, "probe_tokens", "probe tokens (calibration)", f->n_tokens);
        if (start)
            rep_int(r, "start_step", "x_log10_start at step", start->step);
        rep_line(r, "log10 QSUR and QSUR^(1/d) of every transformed layer of the session model (best step %d):",
                 rec->best_step);
        ostquant_qsur_table(r, "qsur", f, start);
    }
}
