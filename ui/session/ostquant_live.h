/* What `ostquant model|resume` shows of its live QSUR (qsur/llama_qsur.h,
 * qsur_ostquant.qlog): the one-line summary the REPL prints at each
 * measurement, the per-site and history tables of the report, and the record
 * `ostquant status` shows after the run. The TUI's live panel
 * (tui_panel_ostquant.c) uses the same labels and formats. */
#ifndef QSUR_UI_OSTQUANT_LIVE_H
#define QSUR_UI_OSTQUANT_LIVE_H

#include <stddef.h>
#include "qsur/ostquant.h"
#include "report.h"

struct session;

/* "L3 down" (layer, site). */
void ostquant_site_label(const qsur_site_qsur *s, char *buf, size_t n);
/* The QSUR options the session's `set alpha|cube|qsur_method` ask for. */
qsur_options ostquant_session_qsur_options(const struct session *s);

/* One line for the measurement q of the run o: step, the step's loss, KL-Top
 * and eval perplexity when logged, then the activation QSUR summary (mean
 * log10, mean and min QSUR^(1/d), the worst site) and the weights' mean
 * QSUR^(1/d); e.g.
 * "ostq 10/150 loss 0.4123 kl 0.4123 | X log10 QSUR mean -96.31, ^(1/d) mean
 *  0.0671 min 0.0342 (L3 down) | W ^(1/d) mean 0.1102 | 31 ms". */
void ostquant_live_line(const qsur_ostquant *o, const qsur_llama_qsur *q, char *buf, size_t n);

/* Per-site table "name": layer, input, d, x_log10 (and x_log10_start when
 * start != NULL), x_qsur_d, w_log10, w_qsur_d; singular sites print -inf / 0. */
void ostquant_qsur_table(report *r, const char *name, const qsur_llama_qsur *q, const qsur_llama_qsur *start);
/* Summary per measurement (table "name", at most 20 rows plus the last). */
void ostquant_qsur_history(report *r, const char *name, const qsur_llama_qsur *qlog, int n);

/* The last `ostquant model|resume` of the session (model_state.ostq), for
 * `ostquant status`: copies, independent of the engine object. */
typedef struct ostquant_record {
    char how[200];              /* "ostquant (N steps, kltop, lr 0.01, seed S)" */
    int steps_done, best_step;
    int interrupted;
    qsur_llama_qsur *qlog;      /* every measurement of the run (and of its state file) */
    int nqlog;
    qsur_llama_qsur final;      /* the fused model the session got (best transforms); nsites 0: none */
} ostquant_record;

/* Copies o's QSUR log and takes ownership of *final (zeroed on return). */
int ostquant_record_new(ostquant_record **out, const qsur_ostquant *o, qsur_llama_qsur *final,
                        const char *how, int interrupted, qsur_error *err);
void ostquant_record_free(ostquant_record *rec);
/* Everything `ostquant status` shows. */
void ostquant_record_report(const ostquant_record *rec, report *r);

#endif
