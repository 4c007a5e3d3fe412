/* `ostquant layer` and `ostquant model` (OSTQuant, arXiv 2501.13987).
 * layer: learns R and S for the current layer and pushes them onto its
 * transform stack (a scale step, then a dense rotation step), so QSUR and the
 * error panels update like after `rotate`/`scale`.
 * model: trains the transform pairs of the loaded model on calibration tokens
 * and replaces the session's model by the fused, weight-quantized one (online
 * Hadamards kept in s->model_rot). Ctrl-C keeps the model from before the
 * command (the state file is still written), or, with keep-partial=1, the
 * best transforms so far.
 * resume: continues from a state file (state=FILE of model) on the model the
 * state started from. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "text_state.h"
#include "commands.h"
#include "plot.h"
#include "model_state.h"
#include "layer_transform.h"
#include "ostquant_live.h"
#include "qsur/llama.h"
#include "qsur/llama_rotations.h"
#include "qsur/llama_wquant.h"
#include "qsur/ostquant.h"
#include "qsur/ostquant_layer.h"

/* The loss per step as bars (one column per step, max-pooled to the width):
 * the loss curve in the REPL and in the TUI's output panel. */
static void loss_curve(session *s, report *r, const qsur_ostquant *os)
{
    if (os->nlog < 2)
        return;
    double *v = malloc((size_t)os->nlog * sizeof *v);
    if (!v)
        return;
    for (int i = 0; i < os->nlog; i++)
        v[i] = os->log[i].loss;
    plot_style ps = plot_style_for(s);
    plot_lines pl = {0};
    plot_series(&pl, &ps, v, os->nlog, "step", "training loss per step (max-pooled)");
    plot_lines_to_report(&pl, r);
    plot_lines_free(&pl);
    free(v);
}

static int ostq_layer(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    qsur_ostquant_layer_opts o = qsur_ostquant_layer_default();
    o.seed = session_next_seed(s);
    long v;
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "steps=", 6) && !parse_long(argv[i] + 6, 0, 100000, &v))
            o.steps = (int)v;
        else if (!strncmp(argv[i], "lr=", 3) && !parse_double(argv[i] + 3, 0.0, 10.0, &o.lr))
            ;
        else if (!strncmp(argv[i], "lr-scale=", 9) && !parse_double(argv[i] + 9, 0.0, 10.0, &o.lr_scale))
            ;
        else if (!strncmp(argv[i], "block=", 6) && !parse_long(argv[i] + 6, 1, 65536, &v))
            o.block = (int)v;
        else if (!strncmp(argv[i], "seed=", 5) && !parse_long(argv[i] + 5, 0, 2147483647L, &v))
            o.seed = (uint64_t)v;
        else if (!strcmp(argv[i], "no-scale"))
            o.learn_scales = 0;
        else
            return option_fail(err, argv[i], "steps=N lr=X lr-scale=X block=B seed=N no-scale");
    }
    layer_state *l = session_layer(s, err);
    if (!l)
        return QSUR_ERR_ARG;
    layer_view lv;
    int rc = layer_view_get(s, l, 0, &lv, err);
    if (rc)
        return rc;
    if (!lv.x || !lv.w)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant layer needs a weight and its activations (layer %s; `use W X`)",
                         l->name);
    float *R = qsur_alloc((size_t)(lv.d * lv.d), sizeof(float)), *sc = qsur_alloc((size_t)lv.d, sizeof(float));
    if (!R || !sc) {
        free(R);
        free(sc);
        return qsur_fail(err, QSUR_ERR_NOMEM, "ostquant layer: out of memory for a %lld x %lld rotation",
                         (long long)lv.d, (long long)lv.d);
    }
    qsur_ostquant_layer_result res;
    rc = qsur_ostquant_layer(lv.x, lv.n, lv.w, lv.m, lv.d, &s->wq, &s->aq, &o, R, sc, &res, &s->progress, err);
    int interrupted = rc == QSUR_ERR_INTERRUPTED;
    if (rc && !interrupted) {
        free(R);
        free(sc);
        return rc;
    }
    qsur_transform *ts = NULL, *tr = NULL;
    rc = o.learn_scales ? qsur_transform_scale_new(&ts, sc, lv.d, "ostquant", err) : QSUR_OK;
    if (!rc)
        rc = qsur_transform_dense_new(&tr, R, lv.d, "ostquant", err);
    free(R);
    free(sc);
    if (!rc && ts)
        rc = layer_transform_push(s, l, ts, err);
    else
        qsur_transform_free(ts);
    if (!rc)
        rc = layer_transform_push(s, l, tr, err);
    else
        qsur_transform_free(tr);
    if (rc)
        return rc;
    session_log_as(s, "ostquant layer steps=%d lr=%g lr-scale=%g block=%d seed=%llu%s", o.steps, o.lr,
                   o.lr_scale, o.block, (unsigned long long)o.seed, o.learn_scales ? "" : " no-scale");
    rep_str(r, "hadamard", "start rotation H", res.hadamard);
    rep_int(r, "steps", "steps", o.steps);
    rep_bool(r, "interrupted", "interrupted (best kept)", interrupted);
    rep_num(r, "loss_first", "loss at step 1", res.loss_first, "%.6g");
    rep_num(r, "loss_best", "best loss (EMA)", res.loss_best, "%.6g");
    rep_int(r, "best_step", "best step", res.best_step);
    rep_num(r, "error_plain", "output error, no transform (subset)", res.err_before, "%.6g");
    rep_num(r, "error_ostquant", "output error, OSTQuant (subset)", res.err_after, "%.6g");
    rep_num(r, "seconds", "time (s)", res.seconds, "%.2f");
    layer_metrics mm;
    if ((rc = layer_metrics_compute(s, l, 0, &mm, err)))
        return rc;
    rep_int(r, "depth", "transforms on stack", layer_transform_depth(l));
    rep_num(r, "x_log10_qsur", "X log10 QSUR", mm.qx.log10_qsur, "%.4f");
    rep_num(r, "w_log10_qsur", "W log10 QSUR", mm.qw.log10_qsur, "%.4f");
    rep_num(r, "output_error", "layer output error", mm.out_err, "%.6g");
    return QSUR_OK;
}

/* Trains os (fresh or resumed) on the session model's calibration tokens, then
 * fuses it, quantizes the weights, saves the state (state_out) and replaces
 * the session model. Log line: canon_head steps=N canon_tail. */
static int ostq_run(session *s, qsur_ostquant *os, const char *calib, int calib_seqlen, const char *eval,
                    const char *state_out, int keep_partial, const char *canon_head, const char *canon_tail,
                    report *r, qsur_error *err)
{
    qsur_ostquant_opts o = os->opts;
    qsur_tokens ct, et;
    memset(&et, 0, sizeof et);
    /* text: `calib`'s windows when it is the session's file, else seqs= (128) from seed= */
    const model_state *ms = s->mstate;
    int same = ms && ms->has_calib && !strcmp(calib, ms->calib_path);
    int samples = same && ms->calib_seqs > 0 ? ms->calib_seqs : o.max_seqs > 0 ? o.max_seqs : 128;
    if (!text_is_text(calib))
        samples = 0; /* a token file is read whole: the QSUR measurements use the whole stream */
    int rc = text_or_tokens_calib(s, calib, calib_seqlen, samples, same ? ms->calib_seed : o.seed, &ct, err);
    if (rc)
        return rc;
    if (eval && (rc = text_or_tokens_eval(s, eval, ct.seq_len, &et, err))) {
        qsur_tokens_free(&ct);
        return rc;
    }
    int start = os->step;
    double wall0 = os->time.total, cpu0 = (double)clock() / CLOCKS_PER_SEC;
    os->qsur_opt = ostquant_session_qsur_options(s);
    /* the progress callbacks show os->qlog live (REPL lines, TUI table) */
    s->training = os;
    s->training_shown = os->nqlog;
    rc = qsur_ostquant_train(os, s->model, &ct, eval ? &et : NULL, &s->progress, err);
    double train_wall = os->time.total - wall0, train_cpu = (double)clock() / CLOCKS_PER_SEC - cpu0;
    s->training = NULL;
    int interrupted = rc == QSUR_ERR_INTERRUPTED;
    if (interrupted && !keep_partial) {
        /* A stopped run is not the result the user asked for: the session
         * keeps its model; the state file still lets `ostquant resume` go on. */
        qsur_error serr;
        int saved = state_out && qsur_ostquant_save(os, state_out, &serr) == QSUR_OK;
        qsur_tokens_free(&ct);
        if (eval)
            qsur_tokens_free(&et);
        return qsur_fail(err, QSUR_ERR_INTERRUPTED, "interrupted at step %d of %d: the model is the one from "
                         "before the command (keep-partial=1 keeps the best transforms so far)%s%s%s",
                         os->step, o.steps, saved ? "; state saved to " : "", saved ? state_out : "",
                         state_out && !saved ? "; the state file could not be written" : "");
    }
    if (interrupted && s->interrupted)
        *s->interrupted = 0; /* honoured: the fusion and capture below must run */
    qsur_llama *fm = NULL;
    qsur_llama_rotations *rot = NULL;
    qsur_llama_qsur final;
    memset(&final, 0, sizeof final);
    if (!rc || interrupted) {
        rc = state_out ? qsur_ostquant_save(os, state_out, err) : QSUR_OK;
        if (!rc)
            rc = qsur_ostquant_fuse(os, &fm, &rot, err);
        /* QSUR of the model the session gets (the best transforms) */
        if (!rc && os->opts.qsur_every > 0 && !(rc = qsur_ostquant_qsur(os, &ct, &final, err)))
            final.step = os->best_step;
        if (!rc && os->wspec.bits < 16)
            rc = qsur_llama_quantize_rtn(fm, &os->wspec, NULL, err);
    }
    if (!rc) {
        /* table of the log, thinned to <= 20 rows */
        static const char *const keys[] = {"step", "loss", "kltop", "eval_ppl"};
        static const int widths[] = {6, 12, 12, 12};
        rep_table_begin(r, "log", 4, keys, widths);
        int every = os->nlog > 20 ? os->nlog / 20 : 1;
        for (int i = 0; i < os->nlog; i++)
            if (i % every == every - 1 || i == os->nlog - 1 || !isnan(os->log[i].ppl)) {
                rep_cell_int(r, os->log[i].step);
                rep_cell_num(r, os->log[i].loss, "%.6g");
                rep_cell_num(r, os->log[i].kltop, "%.6g");
                rep_cell_num(r, os->log[i].ppl, "%.4f");
            }
        rep_table_end(r);
        loss_curve(s, r, os);
        if (os->nqlog > 0) {
            rep_line(r, "QSUR of every transformed layer during training (X: activations, W: stacked weights; "
                        "`ostquant status` for the per-layer table):");
            ostquant_qsur_history(r, "qsur_history", os->qlog, os->nqlog);
        }
        if (final.nsites > 0) {
            /* "kept": of the parameters the session model now has (the best
             * step on the selection batch), not of the last step. */
            char worst[32] = "-";
            if (final.x_worst >= 0)
                ostquant_site_label(&final.sites[final.x_worst], worst, sizeof worst);
            rep_num(r, "x_log10_qsur_mean", "X log10 QSUR mean (kept)", final.x_log10_mean, "%.4f");
            rep_num(r, "x_qsur_d_mean", "X QSUR^(1/d) mean (kept)", final.x_pd_mean, "%.6f");
            rep_num(r, "x_qsur_d_min", "X QSUR^(1/d) min (kept)", final.x_pd_min, "%.6f");
            rep_str(r, "x_worst", "X worst layer (kept)", worst);
            rep_num(r, "w_qsur_d_mean", "W QSUR^(1/d) mean (kept)", final.w_pd_mean, "%.6f");
        }
        char rd[512];
        qsur_llama_rotations_describe(rot, rd, sizeof rd);
        rep_str(r, "calib", "calibration", calib);
        rep_str(r, "loss", "loss", qsur_ostquant_loss_name(o.loss));
        rep_num(r, "lr", "lr (orthogonals)", o.lr, "%g");
        rep_bool(r, "womi", "WOMI init", o.womi);
        rep_bool(r, "scales", "learned scales", o.learn_scales);
        rep_int(r, "steps_done", "steps done", os->step);
        rep_num(r, "train_seconds", "training wall time (s)", train_wall, "%.2f");
        rep_num(r, "train_cpu_seconds", "training CPU time of the process (s)", train_cpu, "%.2f");
        /* the part threads= splits: the rest (fuse, chain rule, optimiser, QSUR) stays serial */
        const qsur_ostquant_timing *tm = &os->time;
        double split = tm->forward + tm->teacher + tm->loss + tm->backward;
        rep_num(r, "train_split_share", "share of the training wall in the batch parts (threads= splits it)",
                tm->total > 0 ? split / tm->total : 0.0, "%.3f");
        rep_bool(r, "interrupted", "interrupted (best kept)", interrupted);
        if (interrupted)
            rep_str(r, "kept", "kept (keep-partial=1)", "the best transforms so far replace the model");
        rep_int(r, "best_step", "best step (selection batch)", os->best_step);
        rep_num(r, "best_select_loss", "best selection loss", os->best_ema, "%.6g");
        rep_str(r, "online", "online rotations", rd);
        if (state_out)
            rep_str(r, "state", "optimiser state saved to", state_out);
        qsur_llama_free(s->model);
        qsur_llama_rotations_free(s->model_rot);
        s->model = fm;
        s->model_rot = rot;
        /* the hooks of `rotate model` no longer apply: the fused model uses s->model_rot */
        qsur_llama_online_hadamard_free(s->mstate->w2_online);
        qsur_llama_online_hadamard_free(s->mstate->qk_online);
        s->mstate->w2_online = s->mstate->qk_online = NULL;
        /* keep the workspace copies and calibration activations current */
        qsur_error merr;
        char how[160];
        snprintf(how, sizeof how, "ostquant (%d steps, %s, lr %g, seed %llu%s%s)", os->step,
                 qsur_ostquant_loss_name(o.loss), o.lr, (unsigned long long)o.seed, o.womi ? "" : ", no-womi",
                 o.learn_scales ? "" : ", no-scale");
        if (model_replaced(s, how, &merr) != QSUR_OK)
            rep_str(r, "workspace_warning", "warning", merr.msg);
        /* an interrupted run is logged with the steps it did, so a replay matches */
        session_log_as(s, "%s steps=%d %s", canon_head, interrupted ? os->step - start : o.steps - start,
                       canon_tail);
        s->wq = os->wspec;
        s->aq = os->aspec;
        s->kvq = os->kvspec;
        s->aoq = os->aospec;
        ostquant_record *rec = NULL;
        if (s->mstate && ostquant_record_new(&rec, os, &final, how, interrupted, &merr) == QSUR_OK) {
            ostquant_record_free(s->mstate->ostq);
            s->mstate->ostq = rec;
        }
    } else {
        qsur_llama_free(fm);
        qsur_llama_rotations_free(rot);
    }
    qsur_llama_qsur_free(&final);
    qsur_tokens_free(&ct);
    if (eval)
        qsur_tokens_free(&et);
    return rc;
}

/* The calibration file: calib=FILE, else the one `calib` recorded. */
static int pick_calib(session *s, const char *given, const char **calib, int *seqlen, int *seqs,
                      qsur_error *err)
{
    *seqlen = s->model->cfg.seq_len < 256 ? s->model->cfg.seq_len : 256;
    if (given) {
        *calib = given;
        return QSUR_OK;
    }
    if (!s->mstate || !s->mstate->has_calib)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant: no calibration tokens: run `calib FILE` first or give calib=FILE");
    *calib = s->mstate->calib_path;
    *seqlen = s->mstate->calib_seqlen;
    if (*seqs == 0)
        *seqs = s->mstate->calib_seqs;
    return QSUR_OK;
}

/* OSTQuant folds the float weights and trains against the hook-free float
 * model (the teacher): an online rotation before w2 or wo is part of the
 * model's function and would be lost (an online q/k rotation is not: q.k is
 * unchanged, and the fused model brings its own). */
static int check_no_hooks(const session *s, const char *who, qsur_error *err)
{
    const qsur_llama_hooks *h = &s->model->hooks;
    if (h->w2_in.apply || h->wo_in.apply)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: the model already has an online rotation before w2 (rotate model / "
                         "ostquant / an export): `model load` the original model first", who);
    return QSUR_OK;
}

/* `preset=paper`: the OSTQuant code's training protocol (docs/ostquant.md).
 * With quantized activations or KV cache (W4A4KV4): WOMI start, weights float
 * during training (GPTQ after), batch 32; weight-only (W4A16KV16): Hadamard
 * start, weights fake-quantized, batch 16. Both: 100 steps over every
 * sequence of the calibration file, KL-Top with k = 1000 (>= the vocabulary:
 * the full KL), Riemannian Adam lr 0.0169 on the orthogonals, Adam lr 0.00179
 * on the scales, both decaying linearly to 0, gradients clipped to norm 1,
 * a new batch order every pass, the last step's parameters kept; learned:
 * R_res, R_ov, S_attn/S_ffn (norm->linear), S_ov, S_ud and S_qk, the last two
 * applied as the code applies them (smooth=code: not exact equivalences). */
static void paper_preset(const session *s, qsur_ostquant_opts *o)
{
    int weight_only = s->aq.bits >= 16 && s->kvq.bits >= 16;
    o->steps = 100;
    o->batch = weight_only ? 16 : 32;
    o->max_seqs = 1 << 30; /* every sequence of the file, whatever `calib` took */
    o->lr = 0.01689753172873217;
    o->lr_scale = 0.0017898822675917248;
    o->loss = QSUR_OSTQ_KLTOP;
    o->topk = 1000;
    o->womi = !weight_only;
    o->learn_scales = 1;
    o->no_wquant = !weight_only;
    o->clip_grad = 1.0;
    o->lr_decay = 1;
    o->radam = 1;
    o->keep_last = 1;
    o->reshuffle = 1;
    o->learn_qk = 1;
    o->klt = 0; /* WOMI: the KLT start measured worse on calib (docs/ostquant.md) */
    o->ste_const = 0;
    /* the code's S_ud/S_qk: better on calib at W4A4KV4, 3 seeds; weight-only runs
     * keep the exact ones (no online w2 Hadamard here to match the code's; see
     * docs/ostquant.md) */
    o->code_smooth = !weight_only;
}

static int ostq_model(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    if (!s->model)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant model: no model loaded (`model load FILE`)");
    if (check_no_hooks(s, "ostquant model", err))
        return QSUR_ERR_ARG;
    qsur_ostquant_opts o = qsur_ostquant_default();
    o.seed = session_next_seed(s);
    const char *calib = NULL, *eval = NULL, *state = NULL;
    long v;
    int keep = 0; /* keep-partial=1: Ctrl-C keeps the best transforms so far */
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "steps=", 6) && !parse_long(a + 6, 0, 1000000, &v))
            o.steps = (int)v;
        else if (!strcmp(a, "preset=paper"))
            paper_preset(s, &o);
        else if (!strncmp(a, "lr=", 3) && !parse_double(a + 3, 0.0, 10.0, &o.lr))
            ;
        else if (!strncmp(a, "lr-scale=", 9) && !parse_double(a + 9, 0.0, 10.0, &o.lr_scale))
            ;
        else if (!strcmp(a, "wquant=off") || !strcmp(a, "wquant=on"))
            o.no_wquant = a[8] == 'f';
        else if (!strncmp(a, "clip-grad=", 10) && !parse_double(a + 10, 0.0, 1e6, &o.clip_grad))
            ;
        else if (!strcmp(a, "lr-decay=linear") || !strcmp(a, "lr-decay=none"))
            o.lr_decay = a[9] == 'l';
        else if (!strcmp(a, "adam-norm=canonical") || !strcmp(a, "adam-norm=mean"))
            o.radam = a[10] == 'c';
        else if (!strcmp(a, "keep=last") || !strcmp(a, "keep=best"))
            o.keep_last = a[5] == 'l';
        else if (!strcmp(a, "shuffle=epoch") || !strcmp(a, "shuffle=once"))
            o.reshuffle = a[8] == 'e';
        else if (!strcmp(a, "womi"))
            o.womi = 1, o.klt = 0;
        else if (!strcmp(a, "ste=minmax") || !strcmp(a, "ste=const"))
            o.ste_const = a[4] == 'c';
        else if (!strncmp(a, "threads=", 8) && !parse_long(a + 8, 1, QSUR_OSTQ_MAX_THREADS, &v))
            o.threads = (int)v;
        else if (!strcmp(a, "smooth=code") || !strcmp(a, "smooth=exact"))
            o.code_smooth = a[7] == 'c';
        else if (!strcmp(a, "qk-scale=on") || !strcmp(a, "qk-scale=off"))
            o.learn_qk = a[10] == 'n';
        else if (!strcmp(a, "klt"))
            o.womi = 1, o.klt = 1;
        else if (!strcmp(a, "loss=kltop") || !strcmp(a, "loss=ce") || !strcmp(a, "loss=mse"))
            o.loss = a[5] == 'k' ? QSUR_OSTQ_KLTOP : a[5] == 'c' ? QSUR_OSTQ_CE : QSUR_OSTQ_MSE;
        else if (!strncmp(a, "topk=", 5) && !parse_long(a + 5, 1, 1 << 20, &v))
            o.topk = (int)v;
        else if (!strncmp(a, "batch=", 6) && !parse_long(a + 6, 1, 4096, &v))
            o.batch = (int)v;
        else if (!strncmp(a, "seqs=", 5) && !parse_long(a + 5, 0, 1 << 20, &v))
            o.max_seqs = (int)v;
        else if (!strncmp(a, "seq-len=", 8) && !parse_long(a + 8, 0, 1 << 20, &v))
            o.seq_len = (int)v;
        else if (!strncmp(a, "eval-every=", 11) && !parse_long(a + 11, 0, 1000000, &v))
            o.eval_every = (int)v;
        else if (!strncmp(a, "qsur-every=", 11) && !parse_long(a + 11, 0, 1000000, &v))
            o.qsur_every = (int)v;
        else if (!strncmp(a, "qsur-tokens=", 12) && !parse_long(a + 12, 1, 1 << 24, &v))
            o.qsur_tokens = (int)v;
        else if (!strncmp(a, "seed=", 5) && !parse_long(a + 5, 0, 2147483647L, &v))
            o.seed = (uint64_t)v;
        else if (!strcmp(a, "no-womi"))
            o.womi = 0;
        else if (!strcmp(a, "no-scale"))
            o.learn_scales = 0;
        else if (!strncmp(a, "calib=", 6))
            calib = a + 6;
        else if (!strncmp(a, "eval=", 5))
            eval = a + 5;
        else if (!strncmp(a, "state=", 6))
            state = a + 6;
        else if (!strcmp(a, "keep-partial=0") || !strcmp(a, "keep-partial=1"))
            keep = a[13] == '1';
        else
            return option_fail(err, a, "preset=paper steps=N lr=X lr-scale=X loss=kltop|ce|mse topk=K batch=B "
                                       "seqs=N seq-len=T eval-every=N qsur-every=N qsur-tokens=N seed=N "
                                       "no-womi womi klt qk-scale=on|off smooth=exact|code threads=N ste=minmax|const no-scale wquant=on|off clip-grad=X lr-decay=linear|none "
                                       "adam-norm=canonical|mean keep=last|best shuffle=epoch|once calib=FILE eval=FILE "
                                       "state=OUT keep-partial=0|1; see `help ostquant`");
    }
    int seqlen = 0, rc = pick_calib(s, calib, &calib, &seqlen, &o.max_seqs, err);
    if (rc)
        return rc;
    qsur_ostquant *os = NULL;
    /* OSTQuant trains on the whole model in float32 (a folded copy) */
    if (!(rc = qsur_llama_own_all(s->model, err)))
        rc = qsur_ostquant_new(&os, s->model, &o, &s->wq, &s->aq, &s->kvq, err);
    if (rc)
        return rc;
    os->aospec = s->aoq;
    char canon[8192], thr[32] = "";
    if (o.threads > 1)
        snprintf(thr, sizeof thr, " threads=%d", o.threads);
    snprintf(canon, sizeof canon,
             "lr=%.17g lr-scale=%.17g loss=%s topk=%d batch=%d seqs=%d seq-len=%d "
             "eval-every=%d qsur-every=%d qsur-tokens=%d seed=%llu%s%s%s qk-scale=%s smooth=%s%s ste=%s wquant=%s clip-grad=%.17g "
             "lr-decay=%s adam-norm=%s keep=%s shuffle=%s calib=\"%s\"%s%s%s%s%s%s",
             o.lr, o.lr_scale, qsur_ostquant_loss_name(o.loss), o.topk, o.batch, o.max_seqs, o.seq_len,
             o.eval_every, o.qsur_every, o.qsur_tokens, (unsigned long long)o.seed, o.womi ? " womi" : " no-womi", o.womi && o.klt ? " klt" : "",
             o.learn_scales ? "" : " no-scale", o.learn_qk ? "on" : "off", o.code_smooth ? "code" : "exact", thr, o.ste_const ? "const" : "minmax", o.no_wquant ? "off" : "on", o.clip_grad,
             o.lr_decay ? "linear" : "none", o.radam ? "canonical" : "mean", o.keep_last ? "last" : "best",
             o.reshuffle ? "epoch" : "once",
             calib, eval ? " eval=\"" : "", eval ? eval : "", eval ? "\"" : "", state ? " state=\"" : "",
             state ? state : "", state ? "\"" : "");
    rc = ostq_run(s, os, calib, seqlen, eval, state, keep, "ostquant model", canon, r, err);
    qsur_ostquant_free(os);
    return rc;
}

/* ostquant resume FILE [steps=M] [calib=FILE] [eval=FILE] [state=OUT]: M more
 * steps (default: what the saved run had left) from the state file, on the
 * session model, which must be the model the state started from. */
static int ostq_resume(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    if (!s->model)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant resume: no model loaded (load the model the state started from)");
    if (argc < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "usage: ostquant resume FILE [steps=M] [calib=FILE] [eval=FILE] [state=OUT]");
    if (check_no_hooks(s, "ostquant resume", err))
        return QSUR_ERR_ARG;
    const char *file = argv[0], *calib = NULL, *eval = NULL, *state = NULL;
    long more = -1, qsur_every = -1, v;
    int keep = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "steps=", 6) && !parse_long(a + 6, 1, 1000000, &v))
            more = v;
        else if (!strncmp(a, "qsur-every=", 11) && !parse_long(a + 11, 0, 1000000, &v))
            qsur_every = v;
        else if (!strncmp(a, "calib=", 6))
            calib = a + 6;
        else if (!strncmp(a, "eval=", 5))
            eval = a + 5;
        else if (!strncmp(a, "state=", 6))
            state = a + 6;
        else if (!strcmp(a, "keep-partial=0") || !strcmp(a, "keep-partial=1"))
            keep = a[13] == '1';
        else
            return option_fail(err, a, "steps=M qsur-every=N calib=FILE eval=FILE state=OUT keep-partial=0|1");
    }
    qsur_ostquant *os = NULL;
    int rc = qsur_llama_own_all(s->model, err); /* the base hash reads float weights */
    if (!rc)
        rc = qsur_ostquant_load(&os, s->model, file, err);
    if (rc)
        return rc;
    if (more < 0 && os->opts.steps <= os->step) {
        int done = os->step;
        qsur_ostquant_free(os);
        return qsur_fail(err, QSUR_ERR_ARG, "%s: all %d steps of the saved run are done: give steps=M for more",
                         file, done);
    }
    if (more > 0)
        os->opts.steps = os->step + (int)more;
    if (qsur_every >= 0)
        os->opts.qsur_every = (int)qsur_every;
    int seqlen = 0, seqs = os->opts.max_seqs;
    if ((rc = pick_calib(s, calib, &calib, &seqlen, &seqs, err))) {
        qsur_ostquant_free(os);
        return rc;
    }
    char head[4200], canon[8192];
    snprintf(head, sizeof head, "ostquant resume \"%s\"", file);
    char qe[40] = "";
    if (qsur_every >= 0)
        snprintf(qe, sizeof qe, "qsur-every=%ld ", qsur_every);
    snprintf(canon, sizeof canon, "%scalib=\"%s\"%s%s%s%s%s%s", qe, calib, eval ? " eval=\"" : "", eval ? eval : "",
             eval ? "\"" : "", state ? " state=\"" : "", state ? state : "", state ? "\"" : "");
    rep_int(r, "resumed_from", "resumed at step", os->step);
    rc = ostq_run(s, os, calib, seqlen, eval, state, keep, head, canon, r, err);
    qsur_ostquant_free(os);
    return rc;
}

/* ostquant status: the live QSUR record of the last run (per-layer table of
 * the session model, the measurements during training). Not logged. */
static int ostq_status(session *s, int argc, report *r, qsur_error *err)
{
    if (argc > 0)
        return qsur_fail(err, QSUR_ERR_ARG, "usage: ostquant status");
    session_log_as(s, "%s", "");
    if (!s->mstate || !s->mstate->ostq)
        return qsur_fail(err, QSUR_ERR_ARG, "ostquant status: no `ostquant model|resume` since the model was loaded");
    ostquant_record_report(s->mstate->ostq, r);
    return QSUR_OK;
}

int cmd_ostquant(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    if (!strcmp(argv[0], "layer"))
        return ostq_layer(s, argc - 1, argv + 1, r, err);
    if (!strcmp(argv[0], "model"))
        return ostq_model(s, argc - 1, argv + 1, r, err);
    if (!strcmp(argv[0], "resume"))
        return ostq_resume(s, argc - 1, argv + 1, r, err);
    if (!strcmp(argv[0], "status"))
        return ostq_status(s, argc - 1, r, err);
    return qsur_fail(err, QSUR_ERR_ARG, "expected `ostquant layer|model|resume|status ...`, got '%s'", argv[0]);
}
