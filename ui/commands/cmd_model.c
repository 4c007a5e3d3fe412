/* The whole model: model load|info|save-hf, calib, ppl, smoothquant, and the
 * model modes of quant, rotate, gptq, quantease and awq (see model_state.h
 * for how the model and the workspace stay consistent). */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include "qsur/clock.h"
#include "layer_state.h"
#include "model_session.h"
#include "model_commands.h"
#include "model_state.h"
#include "qsur/llama.h"
#include "qsur/llama_store.h"
#include "qsur/llama_rotations.h"
#include "qsur/llama_runtime.h"
#include "qsur/llama_smooth.h"
#include "qsur/safetensors.h"
#include "ostquant_live.h"
#include "text_state.h"

static int need_model(session *s, const char *who, qsur_error *err)
{
    if (!s->model || !s->mstate)
        return qsur_fail(err, QSUR_ERR_ARG, "%sno model loaded (use `model load PATH`)", who);
    return QSUR_OK;
}

/* A token file holds n / seqlen sequences: asking for more is an error, not a
 * silent "all" (the log would record a count that never ran). */
static int check_seqs(const qsur_tokens *t, const char *path, long seqs, qsur_error *err)
{
    int64_t avail = t->n / t->seq_len;
    if (seqs > avail)
        return qsur_fail(err, QSUR_ERR_ARG, "seqs=%ld: %s holds %lld sequence%s of %d tokens", seqs, path,
                         (long long)avail, avail == 1 ? "" : "s", t->seq_len);
    return QSUR_OK;
}

/* seqlen=N beyond the model's context would run positions it never saw
 * (RoPE angles, attention spans): refuse it; the default fits the model. */
static int pick_seqlen(const session *s, long given, long *seqlen, qsur_error *err)
{
    int ctx = s->model->cfg.seq_len;
    if (given > ctx)
        return qsur_fail(err, QSUR_ERR_ARG, "seqlen=%ld is beyond the model's context of %d tokens", given, ctx);
    *seqlen = given > 0 ? given : ctx < 256 ? ctx : 256;
    return QSUR_OK;
}

/* ---- model load | info | save-hf ----------------------------------------- */

/* A tokenizer beside the weights becomes the session's: DIR/tokenizer.json
 * for a Hugging Face directory, tokenizer.bin next to a llama2.c file. A
 * broken one is reported, the model stays loaded. */
static void pick_up_tokenizer(session *s, const char *path, report *r)
{
    char tp[4200];
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(tp, sizeof tp, "%s/tokenizer.json", path);
    } else {
        const char *slash = strrchr(path, '/');
        snprintf(tp, sizeof tp, "%.*stokenizer.bin", slash ? (int)(slash - path + 1) : 0, path);
    }
    if (stat(tp, &st) != 0)
        return;
    qsur_error terr;
    if (text_tokenizer_load(s, tp, &terr) == QSUR_OK)
        rep_str(r, "tokenizer", "tokenizer", tp);
    else
        rep_str(r, "tokenizer_error", "tokenizer not loaded", terr.msg);
}

static int model_load(session *s, const char *path, report *r, qsur_error *err)
{
    int from_export = 0;
    int rc = model_session_load(s, path, &from_export, err);
    if (rc)
        return rc;
    const qsur_llama *m = s->model;
    const model_state *ms = s->mstate;
    session_log_as(s, "model load \"%s\"", s->model_path);
    const qsur_llama_config *c = &m->cfg;
    rep_str(r, "path", "model", s->model_path);
    rep_int(r, "dim", "dim", c->dim);
    rep_int(r, "hidden_dim", "hidden_dim", c->hidden_dim);
    rep_int(r, "n_layers", "layers", c->n_layers);
    rep_int(r, "n_heads", "heads", c->n_heads);
    rep_int(r, "n_kv_heads", "kv heads", c->n_kv_heads);
    rep_int(r, "vocab_size", "vocab", c->vocab_size);
    rep_int(r, "linears", "linears (quantizable)", qsur_llama_linear_count(m));
    if (from_export) {
        char q[96];
        rep_str(r, "state", "state", "an export: weights as exported; online rotations and quantizers restored");
        rep_str(r, "online", "online rotations", ms->rotation);
        qsur_quant_describe(&s->aq, q, sizeof q);
        rep_str(r, "activations", "activations", s->aq.bits < 16 ? q : "off");
        qsur_quant_describe(&s->kvq, q, sizeof q);
        rep_str(r, "kv", "KV cache", s->kvq.bits < 16 ? q : "off");
    } else {
        rep_str(r, "state", "state", "float (`quant` quantizes it; weights are in the workspace)");
    }
    pick_up_tokenizer(s, path, r);
    return QSUR_OK;
}

static void describe_hook(char *buf, size_t n, const qsur_quant_spec *q)
{
    if (q->bits >= 16)
        snprintf(buf, n, "off");
    else
        qsur_quant_describe(q, buf, (int)n);
}

static int model_info(session *s, report *r, qsur_error *err)
{
    int rc = need_model(s, "", err);
    if (rc)
        return rc;
    const qsur_llama *m = s->model;
    const model_state *ms = s->mstate;
    const qsur_llama_config *c = &m->cfg;
    char buf[4400];
    rep_str(r, "path", "model", s->model_path);
    snprintf(buf, sizeof buf, "dim %d, hidden %d, %d layers, %d heads (%d kv, head size %d), vocab %d",
             c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_size, c->vocab_size);
    rep_str(r, "config", "config", buf);
    rep_bool(r, "tied", "classifier tied to embeddings", c->shared_classifier);
    int nq = 0;
    for (int i = 0; i < qsur_llama_linear_count(s->model); i++)
        nq += qsur_llama_linear_is_quantized(qsur_llama_linear_at(s->model, i));
    if (nq) {
        char wq[96];
        qsur_quant_describe(&s->wq, wq, sizeof wq);
        snprintf(buf, sizeof buf, "%s, %s (%d linears)", wq, ms->wmethod, nq);
    } else {
        snprintf(buf, sizeof buf, "float");
    }
    rep_str(r, "weights", "weights", buf);
    describe_hook(buf, sizeof buf, &m->hooks.act);
    rep_str(r, "activations", "activations (per token)", buf);
    describe_hook(buf, sizeof buf, &m->hooks.kv);
    rep_str(r, "kv", "KV cache (per head per token)", buf);
    rep_str(r, "rotation", "rotations", ms->rotation[0] ? ms->rotation : "none");
    rep_str(r, "smoothing", "smoothquant", ms->smoothing[0] ? ms->smoothing : "none");
    rep_str(r, "tokenizer", "tokenizer", s->text && s->text->tok ? s->text->tok_path : "none (`tokenizer load FILE`)");
    if (ms->has_calib) {
        snprintf(buf, sizeof buf, "%s, %d seqs x %d, %lld tokens kept", ms->calib_path, ms->calib_seqs,
                 ms->calib_seqlen, ms->calib_tokens);
        rep_str(r, "calibration", "calibration", buf);
    } else {
        rep_str(r, "calibration", "calibration", "none (`calib FILE`)");
    }
    if (session_use_gpu(s))
        snprintf(buf, sizeof buf, "host memory; ppl, calib, generate, gptq model, quant and rotate model upload it to the GPU (%s, %.0f GiB) per command",
                 s->gpu_info.name, s->gpu_info.mem_gib);
    else if (s->set.device == 0)
        snprintf(buf, sizeof buf, "host memory; everything runs on the CPU (`set device cpu`)");
    else
        snprintf(buf, sizeof buf, "host memory; everything runs on the CPU (no GPU: %s)", s->gpu_info.why);
    rep_str(r, "device", "where", buf);
    return QSUR_OK;
}

static int model_save_hf(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    int rc = need_model(s, "", err);
    if (rc)
        return rc;
    const char *dtype = argc > 1 ? argv[1] : "F32";
    if (strcmp(dtype, "F32") && strcmp(dtype, "F16") && strcmp(dtype, "BF16"))
        return qsur_fail(err, QSUR_ERR_ARG, "dtype must be F32, F16 or BF16, got '%s'", dtype);
    if (mkdir(argv[0], 0777) != 0 && errno != EEXIST)
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot create directory: %s", argv[0], strerror(errno));
    rc = qsur_llama_save_hf(s->model, argv[0], dtype, err);
    if (rc)
        return rc;
    rep_str(r, "dir", "saved", argv[0]);
    rep_str(r, "dtype", "dtype", dtype);
    rep_str(r, "weights", "weights", "float (the fake-quantized copies are not saved)");
    if (s->model->hooks.w2_in.apply || s->model->hooks.qk.apply)
        rep_str(r, "warning", "warning",
                "the model has online rotations (before w2 / on q,k) that a plain HF Llama does not run");
    return QSUR_OK;
}

static int cmd_model_load(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    return model_load(s, argv[0], r, err);
}

static int cmd_model_info(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc, (void)argv;
    session_log_as(s, "%s", ""); /* info and save-hf change nothing */
    return model_info(s, r, err);
}

static int cmd_model_save_hf(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    session_log_as(s, "%s", "");
    return model_save_hf(s, argc, argv, r, err);
}

/* The sub-commands of `model` (the parent entry is in command_table.c). */
const command model_subs[] = {
    {"load", 1, 1, 0, COMPLETE_FILE, NULL, "model load PATH", "load a llama2.c file or a HF directory", NULL,
     cmd_model_load, NULL, NULL, NULL, NULL},
    {"info", 0, 0, 0, COMPLETE_NONE, NULL, "model info", "show the model", NULL, cmd_model_info, NULL, NULL, NULL, NULL},
    {"save-hf", 1, 2, 0, COMPLETE_FILE, NULL, "model save-hf DIR [F32|F16|BF16]", "save the float weights", NULL,
     cmd_model_save_hf, NULL, NULL, NULL, NULL},
    COMMAND_END};

/* ---- calib, ppl ------------------------------------------------------------ */

/* The log line holds every value as used (seqs, seqlen and seed computed when
 * not given; the capture scope in its canonical form), so a replay captures
 * the same tokens. */
enum { CAL_SAMPLES, CAL_SEQS, CAL_SEQLEN, CAL_MAX_TOKENS, CAL_SEED, CAL_LAYERS, CAL_ONLY };
const opt_spec calib_opts[] = {
    {"samples", OPT_INT, 1, 1L << 30, NULL, NULL, NULL, OPT_LOG_NEVER,
     "sequences (default: 128 of text, 16 of a token file); logged as seqs="},
    {"seqs", OPT_INT, 1, 1L << 30, NULL, NULL, NULL, OPT_LOG_ALWAYS, "the same as samples="},
    {"seqlen", OPT_INT, 2, 1L << 20, NULL, NULL, NULL, OPT_LOG_ALWAYS,
     "tokens per sequence (default: text 2048, token files 256, at most the model's context)"},
    {"max_tokens", OPT_INT, 0, OPT_NO_MAX, NULL, "0", NULL, OPT_LOG_ALWAYS,
     "keep a seeded random subset of this many token positions (0: all)"},
    {"seed", OPT_INT, 0, OPT_NO_MAX, NULL, NULL, NULL, OPT_LOG_ALWAYS,
     "seed of the text windows and of that subset (default: the session's next)"},
    {"layers", OPT_TEXT, 0, 0, NULL, NULL, "A-B", OPT_LOG_GIVEN, "only these layers (or N); the forward stops after the last"},
    {"only", OPT_TEXT, 0, 0, NULL, NULL, "NAME", OPT_LOG_GIVEN,
     "one capture kind: a linear, its input, a kind (feed_forward.w2.in) or current"},
    OPT_END};

/* `layers=` of calib: N or A-B within the model. */
static int parse_layers(session *s, const char *v, qsur_llama_capture_sel *sel, qsur_error *err)
{
    int lo = -1, hi = -1, used = 0;
    int nf = sscanf(v, "%d%n-%d%n", &lo, &used, &hi, &used);
    if (nf == 1)
        hi = lo;
    if (nf < 1 || v[used] || lo < 0 || hi < lo || hi >= s->model->cfg.n_layers)
        return qsur_fail(err, QSUR_ERR_ARG, "calib layers=%s: expected layers=N or layers=A-B within 0..%d", v,
                         s->model->cfg.n_layers - 1);
    sel->first = lo, sel->count = hi - lo + 1;
    return QSUR_OK;
}

/* The canonical calib line: the values as used, the scope as layers=A-B and
 * only=KIND (the layer of only=layers.N.KIND is in layers=). */
static void log_calib(session *s, const char *head, const qsur_llama_capture_sel *sel, opt_args *a)
{
    const model_state *ms = s->mstate;
    char range[32];
    a->v[CAL_SEQS].i = ms->calib_seqs;
    a->v[CAL_SEQLEN].i = ms->calib_seqlen;
    a->v[CAL_SEED].i = (long)ms->calib_seed;
    int all_kinds = sel->kinds == (1u << 6) - 1;
    a->v[CAL_LAYERS].given = sel->count != s->model->cfg.n_layers || !all_kinds;
    snprintf(range, sizeof range, "%d-%d", sel->first, sel->first + sel->count - 1);
    a->v[CAL_LAYERS].s = range;
    a->v[CAL_ONLY].given = !all_kinds;
    for (int k = 0; k < 6 && !all_kinds; k++)
        if (sel->kinds & (1u << k)) {
            a->v[CAL_ONLY].s = model_capture_kinds[k];
            break;
        }
    session_log_opts(s, head, a);
}

/* `only=` of calib: a weight (layers.N.feed_forward.w2), its input
 * (layers.N.feed_forward.w2.in), a capture kind (feed_forward.w2.in, the
 * layers= range), or `current` (the selected layer's weight). */
static int parse_only(session *s, const char *v, qsur_llama_capture_sel *sel, qsur_error *err)
{
    if (!strcmp(v, "current")) {
        if (s->current < 0)
            return qsur_fail(err, QSUR_ERR_ARG, "calib only=current: no layer selected");
        v = s->layers[s->current].w_name;
    }
    char buf[QSUR_NAME_MAX];
    const char *in = qsur_llama_input_of(v, buf, sizeof buf);
    if (!in)
        in = v;
    int layer = -1, used = 0;
    const char *kind = in;
    if (sscanf(in, "layers.%d.%n", &layer, &used) == 1 && used > 0)
        kind = in + used;
    for (int k = 0; k < 6; k++)
        if (!strcmp(kind, model_capture_kinds[k])) {
            sel->kinds = 1u << k;
            if (layer >= 0) {
                if (layer >= s->model->cfg.n_layers)
                    return qsur_fail(err, QSUR_ERR_ARG, "calib only=%s: the model has %d layers", v,
                                     s->model->cfg.n_layers);
                sel->first = layer, sel->count = 1;
            }
            return QSUR_OK;
        }
    return qsur_fail(err, QSUR_ERR_ARG, "calib only=%s: expected a linear (layers.N.feed_forward.w2), "
                     "its input (layers.N.feed_forward.w2.in), a kind (attention.in, attention.wo.in, "
                     "feed_forward.in, feed_forward.w2.in, attention.k, attention.v) or current", v);
}

int cmd_calib(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc;
    int rc = need_model(s, "", err);
    if (rc)
        return rc;
    /* text: GPTQ's defaults (128 random windows of 2048, or the model's
     * length when shorter); token files: their first 16 sequences of 256 */
    int text = text_is_text(argv[0]);
    long seqs = a->v[CAL_SAMPLES].given ? a->v[CAL_SAMPLES].i : a->v[CAL_SEQS].given ? a->v[CAL_SEQS].i
                : text ? 128 : 16;
    long seqlen = a->v[CAL_SEQLEN].given ? a->v[CAL_SEQLEN].i : -1, max_tokens = a->v[CAL_MAX_TOKENS].i;
    long seed = a->v[CAL_SEED].given ? a->v[CAL_SEED].i : -1;
    qsur_llama_capture_sel sel = {0, s->model->cfg.n_layers, (1u << 6) - 1};
    if (a->v[CAL_LAYERS].given && (rc = parse_layers(s, a->v[CAL_LAYERS].s, &sel, err)))
        return rc;
    if (a->v[CAL_ONLY].given && (rc = parse_only(s, a->v[CAL_ONLY].s, &sel, err)))
        return rc; /* after layers=: only=layers.N.KIND narrows it to layer N */
    long given = seqlen;
    if ((rc = pick_seqlen(s, seqlen, &seqlen, err)))
        return rc;
    if (text && given < 0)
        seqlen = s->model->cfg.seq_len < 2048 ? s->model->cfg.seq_len : 2048;
    char abs[PATH_MAX];
    const char *path = realpath(argv[0], abs) ? abs : argv[0];
    model_state *ms = s->mstate, saved = *ms;
    snprintf(ms->calib_path, sizeof ms->calib_path, "%s", path);
    ms->calib_seqs = (int)seqs;
    ms->calib_seqlen = (int)seqlen;
    ms->calib_max_tokens = max_tokens;
    ms->calib_seed = seed >= 0 ? (unsigned long long)seed : max_tokens > 0 || text ? session_next_seed(s) : 1;
    ms->calib_first = sel.first, ms->calib_count = sel.count, ms->calib_kinds = sel.kinds;
    /* what it will take, said before it is taken */
    long long ntok = seqs > 0 ? (long long)seqs * seqlen : 0;
    if (max_tokens > 0 && (ntok == 0 || max_tokens < ntok))
        ntok = max_tokens;
    double mib = (double)qsur_llama_capture_bytes(s->model, &sel, ntok) / (1 << 20);
    char what[96];
    snprintf(what, sizeof what, "calib: capturing %.0f MiB", mib);
    if ((rc = qsur_progress_tick(&s->progress, 0.0, what, NAN, err))) {
        *ms = saved;
        return rc;
    }
    /* Capture into a scratch workspace first: a failure leaves the old one. */
    qsur_workspace tmp;
    qsur_workspace_init(&tmp);
    double t0 = qsur_seconds();
    int on_gpu = 0;
    rc = model_session_capture(s, &tmp, &ms->calib_tokens, &on_gpu, err);
    if (rc) {
        qsur_workspace_clear(&tmp);
        *ms = saved;
        return rc;
    }
    int ntensors = tmp.count;
    if ((rc = model_session_put_captures(s, &tmp, err)))
        return rc;
    ms->has_calib = 1;
    char head[PATH_MAX + 16];
    snprintf(head, sizeof head, "calib \"%s\"", path);
    log_calib(s, head, &sel, a);
    rep_str(r, "file", "calibration", path);
    rep_int(r, "tokens", "tokens captured", ms->calib_tokens);
    rep_int(r, "tensors", "tensors (layers.N.*.in, .k, .v)", ntensors);
    rep_num(r, "mib", "memory (MiB)", mib, "%.1f");
    rep_num(r, "seconds", "time (s)", qsur_seconds() - t0, "%.3f");
    char dev[160];
    snprintf(dev, sizeof dev, "gpu (%s, fp32)", s->gpu_info.name);
    rep_str(r, "device", "forward passes on", on_gpu ? dev : "cpu");
    rep_str(r, "hint", "pair", "`use layers.0.feed_forward.w2` selects it with its captured input");
    return QSUR_OK;
}

/* Perplexity on the GPU: upload the model as it is now, run, free. */
static int ppl_gpu(session *s, const qsur_tokens *t, int seqlen, int seqs, int batch, int fp32,
                   qsur_llama_ppl *p, double *upload, qsur_error *err)
{
    qsur_gpu_model *g = NULL;
    double t0 = qsur_seconds();
    int rc = qsur_gpu_model_new(&g, s->model, fp32 ? QSUR_GPU_F32 : QSUR_GPU_BF16, batch, seqlen,
                                &s->progress, err);
    *upload = qsur_seconds() - t0;
    if (!rc)
        rc = qsur_gpu_perplexity(g, t, seqlen, seqs, batch, &s->progress, p, NULL, err);
    qsur_gpu_model_free(g);
    return rc;
}

/* The largest |w| so far: its size and the tensor that holds it. */
typedef struct {
    double abs;
    char name[QSUR_NAME_MAX];
} largest_weight;

/* Looks at n floats of tensor `name`; 1 when one is not finite (then the
 * search can stop: that is the cause). */
static int largest(const float *w, int64_t n, const char *name, largest_weight *lw)
{
    for (int64_t j = 0; w && j < n; j++) {
        double a = fabs((double)w[j]);
        if (!isfinite(a) || a > lw->abs) {
            lw->abs = a;
            snprintf(lw->name, sizeof lw->name, "%s", name);
            if (!isfinite(a))
                return 1;
        }
    }
    return 0;
}

/* A perplexity of inf/nan is no result: say why. Weights that are finite but
 * huge (or not finite at all) make the logits huge, and exp(mean NLL)
 * overflows; name the tensor that holds the largest weight. */
static int not_finite(qsur_llama *m, const qsur_llama_ppl *p, qsur_error *err)
{
    const qsur_llama_config *c = &m->cfg;
    largest_weight lw = {0, ""};
    int bad = largest(m->norm, c->dim, "norm", &lw);
    for (int i = 0; i < c->n_layers && !bad; i++) {
        char name[QSUR_NAME_MAX];
        snprintf(name, sizeof name, "layers.%d.attention_norm", i);
        bad = largest(m->layers[i].attention_norm, c->dim, name, &lw);
        snprintf(name, sizeof name, "layers.%d.ffn_norm", i);
        bad = bad || largest(m->layers[i].ffn_norm, c->dim, name, &lw);
    }
    int n = qsur_llama_linear_count(m);
    /* the weights the forward pass used (packed codes decoded, mapped ones
     * converted), a row at a time */
    float *row = malloc((size_t)(c->hidden_dim > c->dim ? c->hidden_dim : c->dim) * sizeof *row);
    if (!row)
        return qsur_fail(err, QSUR_ERR_NOMEM, "the perplexity is not finite (mean NLL %.3g nats/token)",
                         p->nll);
    for (int i = -1; i <= n && !bad; i++) { /* -1: the embeddings, held like a linear */
        const qsur_llama_linear *l = i < 0 ? &m->embed : i < n ? qsur_llama_linear_at(m, i) : &m->output;
        for (int64_t r = 0; r < l->rows && !bad; r++) {
            qsur_llama_linear_forward_rows(l, r, r + 1, row);
            bad = largest(row, l->cols, l->name, &lw);
        }
    }
    free(row);
    if (bad)
        return qsur_fail(err, QSUR_ERR_NUMERIC, "the perplexity is not finite (mean NLL %.3g nats/token): %s "
                         "holds a weight that is not finite", p->nll, lw.name);
    return qsur_fail(err, QSUR_ERR_NUMERIC, "the perplexity is not finite (mean NLL %.3g nats/token): the "
                     "logits are far too large; the largest weight is |w| = %.3g in %s", p->nll, lw.abs, lw.name);
}

enum { PPL_SEQS, PPL_SEQLEN, PPL_BATCH, PPL_MAX_TOKENS, PPL_DTYPE };
const opt_spec ppl_opts[] = {
    {"seqs", OPT_INT, 1, 1L << 30, NULL, NULL, NULL, OPT_LOG_GIVEN, "the first N windows only (default: all)"},
    {"seqlen", OPT_INT, 2, 1L << 20, NULL, NULL, NULL, OPT_LOG_GIVEN,
     "tokens per window (default: text 2048, token files 256, at most the model's context)"},
    {"batch", OPT_INT, 1, 4096, NULL, NULL, NULL, OPT_LOG_GIVEN,
     "windows per forward pass (default: token files 8; text: logits within 1 GiB, at most 8)"},
    {"max-tokens", OPT_INT, 0, OPT_NO_MAX, NULL, "0", NULL, OPT_LOG_GIVEN, "text files: the first N tokens only (0: all)"},
    {"dtype", OPT_CHOICE, 0, 0, "bf16|fp32", "bf16", NULL, OPT_LOG_GIVEN,
     "on the GPU: bf16 GEMMs with fp32 accumulation, or fp32 (the CPU's numbers to ~1e-7)"},
    {NULL, 0, 0, 0, NULL, NULL, NULL, 0, NULL}};

/* One ppl run: what it reads and how. */
typedef struct {
    const char *file;
    int text, fp32, gpu;
    long seqs, seqlen, batch, max_tokens;
} ppl_job;

/* The windows: text gets the papers' protocol (text_state.h), windows of
 * 2048 (or the model's length) and a batch whose logits stay within 1 GiB;
 * a token file its sequences of 256. */
static int ppl_tokens(session *s, const opt_args *a, ppl_job *j, qsur_tokens *t, qsur_error *err)
{
    const qsur_llama_config *cfg = &s->model->cfg;
    j->text = text_is_text(j->file);
    j->seqs = a->v[PPL_SEQS].i;
    j->batch = a->v[PPL_BATCH].given ? a->v[PPL_BATCH].i : -1;
    j->max_tokens = a->v[PPL_MAX_TOKENS].i;
    j->fp32 = a->v[PPL_DTYPE].i == 1;
    long given = a->v[PPL_SEQLEN].given ? a->v[PPL_SEQLEN].i : -1;
    int rc = pick_seqlen(s, given, &j->seqlen, err);
    if (rc)
        return rc;
    if (j->text && given < 0)
        j->seqlen = cfg->seq_len < 2048 ? cfg->seq_len : 2048;
    if (j->batch < 0)
        j->batch = j->text ? (long)((1LL << 28) / ((long long)j->seqlen * cfg->vocab_size)) : 8;
    j->batch = j->batch < 1 ? 1 : j->batch > 8 && j->text ? 8 : j->batch;
    if (j->max_tokens && !j->text)
        return qsur_fail(err, QSUR_ERR_ARG, "max-tokens= is for text files (token files: seqs=N)");
    rc = j->text ? text_eval_tokens(s, j->file, (int)j->seqlen, j->max_tokens, t, err)
                 : qsur_tokens_read(t, j->file, (int)j->seqlen, (int)j->seqs, cfg->vocab_size, err);
    if (!rc && !j->text && (rc = check_seqs(t, j->file, j->seqs, err)))
        qsur_tokens_free(t);
    return rc;
}

static void ppl_report(session *s, const ppl_job *j, const qsur_llama_ppl *p, double seconds, double upload,
                       report *r)
{
    char wq[96], aq[96], kq[96], dev[200];
    int nq = qsur_llama_linear_is_quantized(&s->model->layers[0].wq);
    if (nq)
        qsur_quant_describe(&s->wq, wq, sizeof wq);
    describe_hook(aq, sizeof aq, &s->model->hooks.act);
    describe_hook(kq, sizeof kq, &s->model->hooks.kv);
    rep_str(r, "file", j->text ? "text" : "tokens", j->file);
    if (j->text)
        rep_str(r, "protocol", "protocol", qsur_tokenizer_bos(s->text->tok) >= 0
                ? "whole file tokenized once, BOS first, non-overlapping windows"
                : "whole file tokenized once, no BOS (post-processor), non-overlapping windows");
    rep_int(r, "seqlen", "window", j->seqlen);
    rep_int(r, "seqs", "sequences", p->n_seqs);
    rep_int(r, "predicted", "tokens scored", p->n_predicted);
    rep_str(r, "weights", "weights", nq ? wq : "float");
    if (nq)
        rep_str(r, "method", "  by", s->mstate->wmethod);
    rep_str(r, "activations", "activations", aq);
    rep_str(r, "kv", "KV cache", kq);
    rep_num(r, "nll", "NLL (nats/token)", p->nll, "%.6f");
    rep_num(r, "ppl", "perplexity", p->ppl, "%.4f");
    if (j->gpu)
        snprintf(dev, sizeof dev, "gpu (%s, %s)", s->gpu_info.name, j->fp32 ? "fp32" : "bf16 GEMMs, fp32 accumulation");
    else
        snprintf(dev, sizeof dev, "cpu");
    rep_str(r, "device", "device", dev);
    if (j->gpu)
        rep_num(r, "upload_seconds", "  upload (s)", upload, "%.3f");
    rep_num(r, "seconds", "time (s)", seconds, "%.3f");
    rep_num(r, "tokens_per_second", "tokens/s", (double)p->n_seqs * (double)j->seqlen / (seconds - upload), "%.0f");
}

int cmd_ppl(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc;
    int rc = need_model(s, "", err);
    if (rc)
        return rc;
    ppl_job j = {.file = argv[0]};
    qsur_tokens t;
    if ((rc = ppl_tokens(s, a, &j, &t, err)))
        return rc;
    qsur_llama_ppl p;
    double t0 = qsur_seconds(), upload = 0;
    /* the GPU forward lacks some quantizers (qsur_gpu_hooks_supported): those run here */
    j.gpu = session_use_gpu(s) && qsur_gpu_hooks_supported(&s->model->hooks, NULL, 0);
    if (j.gpu) {
        int n = (int)(t.n / j.seqlen), b = (int)j.batch; /* buffers for the batch actually run */
        if (j.seqs > 0 && j.seqs < n)
            n = (int)j.seqs;
        rc = ppl_gpu(s, &t, (int)j.seqlen, (int)j.seqs, b < n ? b : n > 0 ? n : 1, j.fp32, &p, &upload, err);
    } else {
        rc = qsur_llama_perplexity(s->model, NULL, &t, (int)j.seqlen, (int)j.seqs, (int)j.batch, &s->progress, &p,
                                   err);
    }
    qsur_tokens_free(&t);
    if (rc)
        return rc;
    if (!isfinite(p.nll) || !isfinite(p.ppl))
        return not_finite(s->model, &p, err);
    double seconds = qsur_seconds() - t0;
    model_state *ms = s->mstate;
    if ((ms->w2_online && ms->w2_online->failures) || (ms->qk_online && ms->qk_online->failures))
        return qsur_fail(err, QSUR_ERR_NOMEM, "an online rotation could not allocate scratch memory; result invalid");
    ppl_report(s, &j, &p, seconds, upload, r);
    return QSUR_OK;
}

/* ---- quant on the model ----------------------------------------------------- */

int model_apply_quant(session *s, report *r, qsur_error *err)
{
    if (!s->model)
        return QSUR_OK;
    qsur_llama *m = s->model;
    qsur_quant_spec a = s->aq, kv = s->kvq;
    /* Activations are quantized as tokens x features matrices: check the
     * spec against both widths the linears read (dim and hidden_dim). */
    if (a.bits < 16 && (qsur_quant_validate(&a, m->cfg.dim, err) ||
                        qsur_quant_validate(&a, m->cfg.hidden_dim, err)))
        return QSUR_ERR_ARG;
    if (kv.bits < 16 && qsur_quant_validate(&kv, m->cfg.head_size, err))
        return QSUR_ERR_ARG;
    int rc = session_gpu_for_weights(s) ? qsur_gpu_quantize_rtn(m, &s->wq, &s->progress, err)
                                : qsur_llama_quantize_rtn(m, &s->wq, &s->progress, err);
    if (rc)
        return rc;
    m->hooks.act = a;
    m->hooks.kv = kv;
    m->hooks.act_wo = s->aoq; /* bits 0: follows act */
    s->mstate->quantized = 1;
    snprintf(s->mstate->wmethod, sizeof s->mstate->wmethod, "rtn");
    char kq[96];
    describe_hook(kq, sizeof kq, &kv);
    rep_str(r, "kv", "KV-cache quantizer", kq);
    if (s->wq.gran == QSUR_GRAN_GROUP && m->cfg.hidden_dim % s->wq.group) {
        qsur_quant_spec q = qsur_llama_linear_spec(&s->wq, m->cfg.hidden_dim);
        char note[96];
        snprintf(note, sizeof note, "g%d does not divide %d: w2 uses g%d", s->wq.group, m->cfg.hidden_dim,
                 q.group);
        rep_str(r, "group_note", "model", note);
    }
    rep_str(r, "model", "model", "weights RTN-quantized, activation/KV hooks set");
    return QSUR_OK;
}

/* ---- rotate model ------------------------------------------------------------ */

enum { STEP_NORM = 1, STEP_RESID = 2, STEP_W2 = 4, STEP_HEADS = 8, STEP_QK = 16, STEP_ALL = 31 };

static int parse_steps(const char *list, int *steps, qsur_error *err)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", list);
    *steps = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!strcmp(t, "norm"))
            *steps |= STEP_NORM;
        else if (!strcmp(t, "resid"))
            *steps |= STEP_RESID;
        else if (!strcmp(t, "w2"))
            *steps |= STEP_W2;
        else if (!strcmp(t, "heads"))
            *steps |= STEP_HEADS;
        else if (!strcmp(t, "qk"))
            *steps |= STEP_QK;
        else
            return qsur_fail(err, QSUR_ERR_ARG, "unknown step '%s' (norm, resid, w2, heads, qk)", t);
    }
    if (!*steps)
        return qsur_fail(err, QSUR_ERR_ARG, "steps= needs at least one of norm, resid, w2, heads, qk");
    return QSUR_OK;
}

static void steps_str(int steps, char *buf, size_t n)
{
    static const char *const names[] = {"norm", "resid", "w2", "heads", "qk"};
    buf[0] = '\0';
    for (int i = 0; i < 5; i++)
        if (steps & (1 << i)) {
            size_t len = strlen(buf);
            snprintf(buf + len, n - len, "%s%s", len ? "," : "", names[i]);
        }
}

static void append_rotation(model_state *ms, const char *fmt, const char *desc)
{
    size_t len = strlen(ms->rotation);
    snprintf(ms->rotation + len, sizeof ms->rotation - len, "%s", len ? "; " : "");
    len = strlen(ms->rotation);
    snprintf(ms->rotation + len, sizeof ms->rotation - len, fmt, desc);
}

/* rotate model: the steps as typed; the list is checked by parse_steps. */
enum { RM_STEPS, RM_ONLINE_W2 };
const opt_spec rotate_model_opts[] = {
    {"steps", OPT_TEXT, 0, 0, NULL, "norm,resid,w2,heads,qk", "norm,resid,w2,heads,qk", OPT_LOG_ALWAYS,
     "rotation steps, comma-separated (default: all but w2/qk when activations/KV are at 16 bits)"},
    {"online-w2", OPT_CHOICE, 0, 0, "auto|on", NULL, NULL, OPT_LOG_NEVER,
     "on: the default steps keep w2 with float activations too (default: `quant online-w2=`)"},
    OPT_END};
const opt_spec rotate_model_args[] = {
    {"KIND", OPT_CHOICE, 0, 0, "hadamard", NULL, NULL, OPT_LOG_NEVER, NULL},
    {"SEED", OPT_INT, 0, OPT_NO_MAX, NULL, NULL, NULL, OPT_LOG_NEVER, "first plan's seed (default: the session's next)"},
    OPT_END};

/* Everything that can be refused is checked before the model changes. */
static int rotate_model_refuse(const qsur_llama *m, int steps, qsur_error *err)
{
    if ((steps & STEP_W2) && m->hooks.w2_in.apply)
        return qsur_fail(err, QSUR_ERR_ARG, "the model already has an online rotation before w2 (drop w2 from steps=)");
    if ((steps & STEP_QK) && m->hooks.qk.apply)
        return qsur_fail(err, QSUR_ERR_ARG, "the model already has an online q/k rotation (drop qk from steps=)");
    if ((steps & STEP_RESID) && !(steps & STEP_NORM)) {
        int ok = 1;
        for (int i = 0; i < m->cfg.dim; i++)
            ok &= m->norm[i] == 1.0f;
        for (int l = 0; l < m->cfg.n_layers; l++)
            for (int i = 0; i < m->cfg.dim; i++)
                ok &= m->layers[l].attention_norm[i] == 1.0f && m->layers[l].ffn_norm[i] == 1.0f;
        if (!ok)
            return qsur_fail(err, QSUR_ERR_ARG, "steps=resid needs unit RMSNorm gains: add norm to steps=");
    }
    return QSUR_OK;
}

/* The rotations one `rotate model` makes (NULL: its step is not run). */
typedef struct {
    qsur_hadamard_plan *Q, *H;               /* residual stream, value heads */
    qsur_llama_online_hadamard *h2, *hqk;    /* online before w2, on q and k */
} rotate_plans;

/* Plans use SEED, SEED+1 (w2), SEED+2 (heads), SEED+3 (qk). */
static int rotate_plans_new(const qsur_llama *m, int steps, uint64_t sd, rotate_plans *p, qsur_error *err)
{
    memset(p, 0, sizeof *p);
    qsur_hadamard_opts o = {1, sd};
    int rc = QSUR_OK;
    if (steps & STEP_RESID)
        rc = qsur_hadamard_plan_new(&p->Q, m->cfg.dim, &o, err);
    o.seed = sd + 2;
    if (!rc && (steps & STEP_HEADS))
        rc = qsur_hadamard_plan_new(&p->H, m->cfg.head_size, &o, err);
    if (!rc && (steps & STEP_W2))
        rc = qsur_llama_online_hadamard_new(&p->h2, m->cfg.hidden_dim, sd + 1, err);
    if (!rc && (steps & STEP_QK))
        rc = qsur_llama_online_hadamard_new(&p->hqk, m->cfg.head_size, sd + 3, err);
    return rc;
}

static void rotate_plans_free(rotate_plans *p)
{
    qsur_hadamard_plan_free(p->Q);
    qsur_hadamard_plan_free(p->H);
    qsur_llama_online_hadamard_free(p->h2);
    qsur_llama_online_hadamard_free(p->hqk);
}

/* The progress bar's share of the next of nsteps rotation steps. */
static void next_step(qsur_llama_edit *e, int *step, int nsteps)
{
    qsur_llama_edit_range(e, (double)*step / nsteps, (double)(*step + 1) / nsteps);
    (*step)++;
}

/* Runs the steps in order, each ticking once per block. Every change goes
 * through the journal e, so a failure or Ctrl-C part-way can be undone. */
static int rotate_run(qsur_llama *m, int steps, rotate_plans *p, qsur_llama_edit *e, qsur_error *err)
{
    int nsteps = 0, step = 0, rc = QSUR_OK;
    for (int b = STEP_NORM; b <= STEP_HEADS; b <<= 1)
        nsteps += (steps & b) != 0;
    if (steps & STEP_NORM) {
        next_step(e, &step, nsteps);
        rc = qsur_llama_fuse_norms(m, e, err);
    }
    if (!rc && (steps & STEP_RESID)) {
        next_step(e, &step, nsteps);
        rc = qsur_llama_rotate_residual(m, p->Q, e, err);
    }
    if (!rc && (steps & STEP_W2)) {
        next_step(e, &step, nsteps);
        rc = qsur_llama_rotate_w2(m, p->h2, e, err);
    }
    if (!rc && (steps & STEP_HEADS)) {
        next_step(e, &step, nsteps);
        rc = qsur_llama_rotate_heads(m, p->H, e, err);
    }
    if (!rc && (steps & STEP_QK))
        rc = qsur_llama_rotate_qk(m, p->hqk, err);
    return rc;
}

/* After every step ran: the report and the model state say what was done;
 * the online rotations move into the model state (the hooks point at them). */
static void rotate_report(session *s, int steps, rotate_plans *p, report *r)
{
    model_state *ms = s->mstate;
    if (steps & STEP_NORM) {
        append_rotation(ms, "%s", "norms fused");
        rep_str(r, "norm", "RMSNorm gains", "fused into wq/wk/wv, w1/w3, classifier (untied)");
    }
    if (steps & STEP_RESID) {
        append_rotation(ms, "residual: %s", p->Q->desc);
        rep_str(r, "resid", "residual stream Q", p->Q->desc);
    }
    if (steps & STEP_W2) {
        ms->w2_online = p->h2;
        p->h2 = NULL;
        append_rotation(ms, "online before w2: %s", ms->w2_online->plan->desc);
        rep_str(r, "w2", "online before w2", ms->w2_online->plan->desc);
    }
    if (steps & STEP_HEADS) {
        append_rotation(ms, "value heads (wv rows, wo columns): %s", p->H->desc);
        rep_str(r, "heads", "value heads (fused)", p->H->desc);
    }
    if (steps & STEP_QK) {
        ms->qk_online = p->hqk;
        p->hqk = NULL;
        append_rotation(ms, "online q,k: %s", ms->qk_online->plan->desc);
        rep_str(r, "qk", "online q,k (K cache)", ms->qk_online->plan->desc);
    }
}

/* The model as before the command (hooks included), then the message. */
static void edit_undo(qsur_llama_edit *e, int rc, const char *what, qsur_error *err)
{
    qsur_error lost;
    if (qsur_llama_edit_undo(e, &lost))
        *err = lost;
    else if (rc == QSUR_ERR_INTERRUPTED)
        snprintf(err->msg, sizeof err->msg, "%s: interrupted: the model is the one from before the "
                 "command", what);
}

/* The steps to run: steps=LIST, or by default all but the online ones the
 * quantizers do not need (*skipped). */
static int rotate_steps(session *s, const opt_args *a, int *steps, int *skipped, qsur_error *err)
{
    int rc = parse_steps(a->v[RM_STEPS].s, steps, err);
    if (rc)
        return rc;
    /* The online rotations only serve activation (w2) and KV-cache (qk)
     * quantization; without it the default fuses everything offline, so the
     * model runs in any Llama runtime (issue 12). online-w2=on keeps w2's, as
     * the QuaRot/OSTQuant code does in weight-only runs. */
    int keep_w2 = a->v[RM_ONLINE_W2].given ? a->v[RM_ONLINE_W2].i == 1 : s->online_w2;
    *skipped = 0;
    if (!a->v[RM_STEPS].given && s->aq.bits >= 16 && !keep_w2)
        *skipped |= *steps & STEP_W2;
    if (!a->v[RM_STEPS].given && s->kvq.bits >= 16)
        *skipped |= *steps & STEP_QK;
    *steps &= ~*skipped;
    return rotate_model_refuse(s->model, *steps, err);
}

int cmd_rotate_model(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc, (void)argv; /* KIND: hadamard, the only one (its row checked it) */
    int rc = need_model(s, "rotate model: ", err), steps, skipped;
    if (rc || (rc = rotate_steps(s, a, &steps, &skipped, err)))
        return rc;
    uint64_t sd = a->arg[1].given ? (uint64_t)a->arg[1].i : session_next_seed(s);
    rotate_plans p;
    qsur_llama_edit *e = NULL;
    rc = rotate_plans_new(s->model, steps, sd, &p, err);
    /* the rotations (dense fp32 GEMMs) on the GPU when one is usable; the
     * norm fusion is O(n) and stays on the CPU */
    int gpu = session_use_gpu(s) && (steps & (STEP_RESID | STEP_W2 | STEP_HEADS));
    if (!rc && !(rc = qsur_llama_edit_new(&e, s->model, &s->progress, err))) {
        qsur_llama_edit_use_gpu(e, gpu);
        /* Ctrl-C (or memory) part-way puts the model back as it was */
        if ((rc = rotate_run(s->model, steps, &p, e, err))) {
            edit_undo(e, rc, "rotate model", err);
        } else {
            qsur_llama_edit_keep(e);
            rotate_report(s, steps, &p, r);
            rc = model_session_changed(s, r, err);
        }
    }
    rotate_plans_free(&p);
    if (rc)
        return rc;
    char st[64], head[64];
    steps_str(steps, st, sizeof st);
    snprintf(head, sizeof head, "rotate model hadamard %llu", (unsigned long long)sd);
    a->v[RM_STEPS].s = st;
    session_log_opts(s, head, a);
    rep_int(r, "seed", "seed", (long long)sd);
    rep_str(r, "device", "rotations on", gpu ? "gpu (dense fp32 GEMMs; norm fusion on the cpu)" : "cpu");
    if (skipped)
        rep_str(r, "online_skipped", "online steps left out",
                skipped == (STEP_W2 | STEP_QK) ? "w2, qk (weight-only: activations and KV cache at 16 bits)"
                : skipped == STEP_W2           ? "w2 (activations at 16 bits)"
                                               : "qk (KV cache at 16 bits)");
    return QSUR_OK;
}

/* ---- smoothquant ------------------------------------------------------------- */

const opt_spec smoothquant_args[] = {
    {"ALPHA", OPT_REAL, 0, 1, NULL, "0.5", NULL, OPT_LOG_NEVER, "migration strength"}, OPT_END};

int cmd_smoothquant(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc, (void)argv;
    int rc = need_model(s, "", err);
    if (rc)
        return rc;
    double alpha = a->arg[0].d;
    if (!s->mstate->has_calib)
        return qsur_fail(err, QSUR_ERR_ARG, "needs calibration activations: run `calib FILE` first");
    qsur_llama_smooth_result res;
    qsur_llama_edit *e = NULL;
    if ((rc = qsur_llama_edit_new(&e, s->model, &s->progress, err)))
        return rc;
    if ((rc = qsur_llama_smoothquant(s->model, &s->ws, alpha, e, &res, err))) {
        edit_undo(e, rc, "smoothquant", err);
        return rc;
    }
    qsur_llama_edit_keep(e);
    snprintf(s->mstate->smoothing, sizeof s->mstate->smoothing, "alpha %g (%d groups%s)", alpha, res.groups,
             res.w2_skipped ? ", w2 skipped" : "");
    rc = model_session_changed(s, r, err);
    if (rc)
        return rc;
    session_log_as(s, "smoothquant %.17g", alpha);
    rep_num(r, "alpha", "alpha", alpha, "%g");
    if (session_use_gpu(s)) /* one pass of per-channel products: the GPU would only add the copies */
        rep_str(r, "device", "runs on", "cpu (O(n) scaling; no GPU pass)");
    rep_int(r, "groups", "groups smoothed", res.groups);
    rep_str(r, "folded", "scales folded into",
            "attention_norm (wq/wk/wv), ffn_norm (w1/w3), wv rows (wo), w3 rows (w2)");
    if (res.w2_skipped)
        rep_str(r, "w2", "w2", "skipped: an online rotation sits before w2");
    rep_num(r, "min_scale", "smallest s_j", res.min_scale, "%.4g");
    rep_num(r, "max_scale", "largest s_j", res.max_scale, "%.4g");
    return QSUR_OK;
}

/* ---- gptq / quantease / awq model ------------------------------------------- */

/* The tokens `calib` recorded, for the methods that recapture from them. */
static int load_calib_tokens(session *s, qsur_tokens *t, qsur_error *err)
{
    const model_state *ms = s->mstate;
    if (!ms->has_calib)
        return qsur_fail(err, QSUR_ERR_ARG, "needs calibration data: run `calib FILE` first");
    return text_or_tokens_calib(s, ms->calib_path, ms->calib_seqlen, ms->calib_seqs, ms->calib_seed, t, err);
}

/* After a whole-model weight quantizer ran: the model state records it, the
 * session log replays it as CANON, and the report starts with what was used. */
static void model_weights_quantized(session *s, const char *canon, report *r)
{
    model_state *ms = s->mstate;
    ms->quantized = 1;
    snprintf(ms->wmethod, sizeof ms->wmethod, "%s", canon);
    session_log_as(s, "%s", canon);
    char wq[96];
    qsur_quant_describe(&s->wq, wq, sizeof wq);
    rep_str(r, "wquant", "weight quantizer", wq);
    rep_str(r, "method", "method", canon);
}

/* Whole-model GPTQ on the GPU: the model uploaded in fp32 (the CPU's numbers),
 * calibrated layer by layer there, the results back as the wq copies. */
static int gptq_model_gpu(session *s, const qsur_tokens *t, const qsur_llama_wquant_opts *o,
                          qsur_llama_wquant_row *rows, qsur_error *err)
{
    int seq = o->seq_len > 0 ? o->seq_len : t->seq_len;
    qsur_gpu_model *g = NULL;
    int rc = qsur_gpu_model_new(&g, s->model, QSUR_GPU_F32, o->batch > 0 ? o->batch : 8, seq,
                                &s->progress, err);
    if (!rc)
        rc = qsur_gpu_gptq_model(g, s->model, t, seq, o->max_seqs, &s->wq, &o->gptq, rows,
                                 &s->progress, err);
    qsur_gpu_model_free(g);
    return rc;
}

int model_wquant(session *s, qsur_llama_wquant_opts *o, const char *canon, report *r,
                 qsur_error *err)
{
    int rc = need_model(s, "", err);
    if (rc)
        return rc;
    model_state *ms = s->mstate;
    qsur_tokens t;
    if ((rc = load_calib_tokens(s, &t, err)) != QSUR_OK)
        return rc;
    o->seq_len = ms->calib_seqlen;
    o->max_seqs = ms->calib_seqs;
    o->max_tokens = ms->calib_max_tokens;
    o->seed = ms->calib_seed;
    int n = qsur_llama_linear_count(s->model);
    qsur_llama_wquant_row *rows = calloc((size_t)n, sizeof *rows);
    if (!rows) {
        qsur_tokens_free(&t);
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    }
    /* GPTQ's solves go to the GPU when one is in use and the options are ones it runs */
    o->gpu = o->method == QSUR_MWQ_GPTQ && !o->gptq.act_order && !s->wq.clip_search && session_gpu_for_weights(s);
    double t0 = qsur_seconds();
    /* the GPU pass uses every calibration token and runs every layer */
    int whole_gpu = o->gpu && o->max_tokens == 0 && o->layers <= 0;
    if (whole_gpu)
        rc = gptq_model_gpu(s, &t, o, rows, err);
    else
        rc = qsur_llama_wquant(s->model, &t, &s->wq, o, rows, &s->progress, err);
    qsur_tokens_free(&t);
    if (rc) {
        free(rows);
        return rc;
    }
    model_weights_quantized(s, canon, r);
    static const char *const keys[] = {"linear", "group", "rtn_error", "error", "ratio"};
    static const int widths[] = {-28, 5, 10, 10, 7};
    rep_table_begin(r, "linears", 5, keys, widths);
    double srtn = 0, se = 0;
    int done = 0;
    for (int i = 0; i < n; i++) {
        if (!rows[i].name[0])
            continue; /* beyond layers=N: left as it was */
        done++;
        rep_cell_str(r, rows[i].name);
        rep_cell_int(r, rows[i].group);
        rep_cell_num(r, rows[i].rtn_error, "%.5f");
        rep_cell_num(r, rows[i].error, "%.5f");
        rep_cell_num(r, rows[i].error / rows[i].rtn_error, "%.3f");
        srtn += rows[i].rtn_error;
        se += rows[i].error;
    }
    rep_table_end(r);
    rep_num(r, "mean_rtn_error", "mean RTN output error", srtn / done, "%.5f");
    rep_num(r, "mean_error", "mean output error", se / done, "%.5f");
    rep_str(r, "device", "runs on", whole_gpu ? "gpu (captures, Hessians, GPTQ)" : o->gpu ? "gpu (GPTQ solves; captures on the cpu)" : "cpu");
    rep_num(r, "seconds", "time (s)", qsur_seconds() - t0, "%.3f");
    free(rows);
    return QSUR_OK;
}

int model_cqe_cross(session *s, qsur_cqe_cross_opts *o, const char *canon, report *r,
                    qsur_error *err)
{
    int rc = need_model(s, "", err);
    if (rc)
        return rc;
    model_state *ms = s->mstate;
    qsur_tokens t;
    if ((rc = load_calib_tokens(s, &t, err)) != QSUR_OK)
        return rc;
    if (ms->calib_seqs > 0)
        o->n_seqs = ms->calib_seqs;
    o->seq_len = ms->calib_seqlen < s->model->cfg.seq_len ? ms->calib_seqlen : s->model->cfg.seq_len;
    int nw = qsur_cqe_cross_windows(s->model, o->window);
    qsur_cqe_window_row *rows = calloc((size_t)(nw > 0 ? nw : 1), sizeof *rows);
    if (!rows) {
        qsur_tokens_free(&t);
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    }
    double t0 = qsur_seconds();
    rc = qsur_cqe_cross(s->model, &t, &s->wq, o, rows, &s->progress, err);
    qsur_tokens_free(&t);
    if (rc) {
        free(rows);
        return rc;
    }
    model_weights_quantized(s, canon, r);
    rep_int(r, "seqs", "calibration sequences", o->n_seqs);
    static const char *const keys[] = {"blocks", "rtn_mse", "mse", "ratio", "best_step"};
    static const int widths[] = {-8, 12, 12, 7, 9};
    rep_table_begin(r, "windows", 5, keys, widths);
    for (int w = 0; w < nw; w++) {
        char blocks[32];
        snprintf(blocks, sizeof blocks, "%d..%d", rows[w].first, rows[w].last);
        rep_cell_str(r, blocks);
        rep_cell_num(r, rows[w].rtn_loss, "%.6g");
        rep_cell_num(r, rows[w].loss, "%.6g");
        rep_cell_num(r, rows[w].rtn_loss > 0 ? rows[w].loss / rows[w].rtn_loss : 1.0, "%.3f");
        rep_cell_int(r, rows[w].best_step);
    }
    rep_table_end(r);
    rep_num(r, "seconds", "time (s)", qsur_seconds() - t0, "%.3f");
    free(rows);
    return QSUR_OK;
}
