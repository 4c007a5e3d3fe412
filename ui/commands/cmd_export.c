/* `export DIR [format=hf|llama2c|both] [runtime=plain|qsur] [weights=fake|int|gptq]
 *  [eval=FILE] [seqs=N] [dtype=f32|f16|bf16] [shard=SIZE]`:
 * the session model as files another run (or another tool) can load, with a
 * report of what was done to it. Layout and tensor names: docs/export.md.
 *
 * Atomicity: everything is written into DIR.tmp-XXXXXX beside DIR, which is
 * renamed to DIR at the end (DIR must not exist or be an empty directory); on
 * any failure the temporary directory is removed, so DIR never holds a
 * partial export. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include "text_state.h"
#include "commands.h"
#include "model_state.h"
#include "qsur/atomic_file.h"
#include "qsur/llama.h"
#include "qsur/llama2c.h"
#include "qsur/llama_rotations.h"
#include "qsur/llama_runtime.h"
#include "qsur/llama_wquant.h"
#include "qsur/qsur.h"

static const char *const export_files[] = {"model.safetensors", "config.json", "model.bin", "report.md",
                                           "report.json", "quantize_config.json"};

/* A growing text buffer (report.md / report.json). */
typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} tbuf;

static void tb_printf(tbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tb_printf(tbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || (b->len + (size_t)n + 1 > b->cap)) {
        size_t cap = b->cap ? b->cap : 4096;
        while (n >= 0 && b->len + (size_t)n + 1 > cap)
            cap *= 2;
        char *p = n < 0 ? NULL : realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* A JSON string value (quotes, backslashes, control characters escaped). */
static void tb_json_str(tbuf *b, const char *s)
{
    tb_printf(b, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            tb_printf(b, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            tb_printf(b, "\\u%04x", (unsigned char)*s);
        else
            tb_printf(b, "%c", *s);
    }
    tb_printf(b, "\"");
}

static void tb_json_num(tbuf *b, double v)
{
    if (isfinite(v))
        tb_printf(b, "%.10g", v);
    else
        tb_printf(b, "null");
}

static int write_text(const char *path, const tbuf *b, qsur_error *err)
{
    if (b->oom)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    qsur_atomic_file f;
    int rc = qsur_atomic_open(&f, path, err);
    if (rc)
        return rc;
    if ((rc = qsur_atomic_write(&f, b->s ? b->s : "", b->len, err))) {
        qsur_atomic_abort(&f);
        return rc;
    }
    return qsur_atomic_commit(&f, err);
}

/* The per-linear part of the report is skipped above this much capture. */
#define QSUR_EXPORT_REPORT_MIB 1024

/* Per linear: QSUR of its captured float input and of its weight, and the
 * layer output error with the model's quantized weights and activations. */
typedef struct {
    char name[QSUR_NAME_MAX];
    double x_qsur, w_qsur, out_err;
} lin_row;

/* Captures m's float inputs (wq copies and act/kv quantization off, online
 * rotations on) on the session's calibration settings, then fills rows. */
static int layer_rows(session *s, qsur_llama *m, const qsur_tokens *t, lin_row *rows, qsur_error *err)
{
    model_state *ms = s->mstate;
    int n = qsur_llama_linear_count(m);
    qsur_llama_quant_stash stash;
    int rc = qsur_llama_quant_stash_take(m, &stash, err);
    if (rc)
        return rc;
    qsur_llama_hooks saved = m->hooks;
    m->hooks.act.bits = 16;
    m->hooks.kv.bits = 16;
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    rc = qsur_llama_capture(m, NULL, t, ms->calib_seqlen, ms->calib_seqs, 8, (int64_t)ms->calib_max_tokens,
                            ms->calib_seed, &ws, NULL, &s->progress, err);
    m->hooks = saved;
    qsur_llama_quant_stash_put(m, &stash);
    qsur_options opt = qsur_options_default();
    for (int i = 0; i < n && !rc; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        char in[QSUR_NAME_MAX];
        const qsur_tensor *x = qsur_llama_input_of(l->name, in, sizeof in) ? qsur_workspace_find(&ws, in) : NULL;
        snprintf(rows[i].name, sizeof rows[i].name, "%s", l->name);
        rows[i].x_qsur = rows[i].w_qsur = rows[i].out_err = NAN;
        if (!x)
            continue;
        int64_t nt = x->shape[0], d = x->shape[1];
        qsur_result res;
        const float *W = NULL;
        float *wtmp = NULL, *wq = NULL;
        if (!(rc = qsur_compute(x->data, nt, d, &opt, &res, NULL, err)))
            rows[i].x_qsur = res.log10_qsur;
        if (!rc)
            rc = qsur_llama_linear_weights_alloc(l, &W, &wtmp, err);
        if (!rc && !(rc = qsur_compute(W, l->rows, l->cols, &opt, &res, NULL, err)))
            rows[i].w_qsur = res.log10_qsur;
        if (!rc && qsur_llama_linear_is_quantized(l)) {
            if (!(wq = qsur_alloc((size_t)(l->rows * l->cols), sizeof(float))))
                rc = qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
            else
                qsur_llama_linear_forward_rows(l, 0, l->rows, wq);
        }
        float *xq = NULL;
        if (!rc && m->hooks.act.bits < 16) {
            if (!(xq = qsur_alloc((size_t)(nt * d), sizeof(float))))
                rc = qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
            else
                rc = qsur_fake_quant(&m->hooks.act, x->data, nt, d, xq, NULL, err);
        }
        if (!rc)
            rc = qsur_layer_output_error(x->data, xq, W, wq, nt, d, l->rows, &rows[i].out_err, err);
        free(xq), free(wtmp), free(wq);
    }
    qsur_workspace_clear(&ws);
    return rc;
}

static int ppl_of(session *s, const qsur_llama *m, const qsur_tokens *t, int seqs, double *out, qsur_error *err)
{
    qsur_llama_ppl p;
    int rc = qsur_llama_perplexity(m, NULL, t, 0, seqs, 8, &s->progress, &p, err);
    *out = rc ? NAN : p.ppl;
    return rc;
}

static void remove_tmp(const char *tmp)
{
    char p[4600];
    for (size_t i = 0; i < sizeof export_files / sizeof *export_files; i++) {
        snprintf(p, sizeof p, "%s/%s", tmp, export_files[i]);
        unlink(p);
    }
    rmdir(tmp);
}

static int dir_is_empty(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            empty = 0;
    closedir(d);
    return empty;
}

/* A plain runtime (llama2.c's run.c, transformers' LlamaForCausalLM, vLLM)
 * runs the weights only. The online rotation before w2 is part of the weights'
 * function (w2 <- w2 H): without it a plain runtime runs a broken model
 * (perplexity ~33,500 instead of 17 for stories260K), so such exports are
 * refused unless qsur's runtime metadata is asked for, and never written to
 * llama2.c files, which cannot carry it. The q,k rotation is not: q H (k H)^T
 * = q k^T, it only serves KV-cache quantization, so a runtime without it runs
 * the model exactly (with a float KV cache); the report says so. */
static int refuse_online(const qsur_llama_runtime *rt, int hf, int l2c, int qsur_rt, qsur_error *err)
{
    if (!rt->has_w2)
        return QSUR_OK;
    if (l2c)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "format=%s cannot carry the online rotation before w2 (%.190s) that this "
                         "model needs; use format=hf runtime=qsur, or a weight-only config (quant "
                         "wNa16 before rotate model / ostquant model) that fuses everything offline",
                         hf ? "both (llama2c)" : "llama2c", rt->w2_desc);
    if (hf && !qsur_rt)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "a plain HF runtime would run this model without the online rotation "
                         "before w2 (%.190s); add runtime=qsur to record it in qsur's metadata "
                         "(docs/export.md), or use a weight-only config (quant wNa16 before rotate "
                         "model / ostquant model)",
                         rt->w2_desc);
    return QSUR_OK;
}

/* Linear kinds whose group differs from the nominal one because their input
 * size is not a multiple of it (w2 of stories260K: 172 columns, groups of 43
 * for a nominal 32), as "w2=43" ("" when none); qsur_llama_linear_spec picks
 * the group, so report and files say what the quantizer really used. */
static void group_overrides(const qsur_quant_spec *wq, const qsur_llama *m, char *buf, size_t n)
{
    buf[0] = '\0';
    if (wq->gran != QSUR_GRAN_GROUP || wq->bits >= 16)
        return;
    for (int i = 0; i < 7 && i < qsur_llama_linear_count(m); i++) { /* layer 0: every kind once */
        const qsur_llama_linear *l = qsur_llama_linear_at((qsur_llama *)m, i);
        int g = qsur_llama_linear_spec(wq, l->cols).group;
        const char *kind = strrchr(l->name, '.');
        size_t len = strlen(buf);
        if (g != wq->group)
            snprintf(buf + len, n - len, "%s%.8s=%d", len ? " " : "", kind ? kind + 1 : l->name, g);
    }
}

/* The plans the session model's hooks point at. */
static void session_plans(session *s, const qsur_hadamard_plan **w2, const qsur_hadamard_plan **qk)
{
    *w2 = *qk = NULL;
    if (s->model_rot) {
        *w2 = s->model_rot->w2;
        *qk = s->model_rot->qk;
    }
    if (s->mstate->w2_online)
        *w2 = s->mstate->w2_online->plan;
    if (s->mstate->qk_online)
        *qk = s->mstate->qk_online->plan;
}

/* "5GB", "500MB", "64KB" or plain bytes (decimal units, as Hugging Face's
 * max_shard_size); 0 on success. */
static int parse_size(const char *a, int64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(a, &end);
    double unit = !strcmp(end, "") || !strcmp(end, "B") ? 1 : !strcmp(end, "KB") ? 1e3
                : !strcmp(end, "MB") ? 1e6 : !strcmp(end, "GB") ? 1e9 : 0;
    if (errno || end == a || unit == 0 || !(v * unit >= 1) || v * unit > 1e15)
        return -1;
    *out = (int64_t)(v * unit);
    return 0;
}

/* DIR/model.bin: the llama2.c file of the model's weights (the quantized
 * copies where there are some). */
static int write_llama2c(qsur_llama *m, const char *tmp, qsur_error *err)
{
    char path[4600];
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    int rc = qsur_llama_to_workspace(m, &ws, NULL, err);
    for (int i = 0; i < qsur_llama_linear_count(m) && !rc; i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        qsur_tensor *t = qsur_workspace_find(&ws, l->name);
        if (qsur_llama_linear_is_quantized(l) && t)
            qsur_llama_linear_forward_rows(l, 0, l->rows, t->data);
    }
    qsur_llama2c_config c = {m->cfg.dim, m->cfg.hidden_dim, m->cfg.n_layers, m->cfg.n_heads,
                             m->cfg.n_kv_heads, m->cfg.vocab_size, m->cfg.seq_len, m->cfg.shared_classifier};
    snprintf(path, sizeof path, "%s/model.bin", tmp);
    if (!rc)
        rc = qsur_llama2c_write(&ws, NULL, &c, path, NULL, err);
    qsur_workspace_clear(&ws);
    return rc;
}

/* What the report of an export says (filled by cmd_export, read by the two
 * writers below). */
typedef struct {
    session *s;
    qsur_llama *m;
    model_state *ms;
    const qsur_llama_runtime *rt;
    const char *fmt, *wkind, *wdesc, *gover, *gsize, *qa, *qk, *w2d, *qkd, *eval, *wspec;
    int quantized, have_calib, have_eval, l2c, L;
    double ppl_float, ppl_before, ppl_after, ppl_reload;
    const lin_row *before, *after;
    double cap_mib; /* what the per-linear captures would take */
} export_report;

static void report_md(const export_report *e, tbuf *md)
{
    tb_printf(md, "# qsur export\n\n## Settings\n\n| setting | value |\n|---|---|\n");
    tb_printf(md, "| source model | %s |\n| format | %s |\n| weights | %s (%s) |\n", e->s->model_path, e->fmt, e->wkind, e->wdesc);
    if (e->quantized && e->gover[0])
        tb_printf(md, "| group size per linear (where not %s) | %s |\n", e->gsize, e->gover);
    tb_printf(md, "| weight method | %s |\n| activations | %s |\n| KV cache | %s |\n",
              e->quantized ? e->ms->wmethod : "none", e->qa, e->qk);
    tb_printf(md, "| transforms | %s |\n| online w2_in | %s |\n| online qk | %s |\n",
              e->ms->rotation[0] ? e->ms->rotation : "none", e->w2d, e->qkd);
    if (e->have_calib)
        tb_printf(md, "| calibration | %s, %d seqs x %d, seed %llu |\n", e->ms->calib_path, e->ms->calib_seqs,
                  e->ms->calib_seqlen, e->ms->calib_seed);
    tb_printf(md, "\n## Perplexity%s%s\n\n", e->have_eval ? " on " : " (no eval=FILE given)", e->have_eval ? e->eval : "");
    if (e->have_eval) {
        tb_printf(md, "| model | ppl |\n|---|---|\n| float (original) | %.4f |\n", e->ppl_float);
        tb_printf(md, "| before (RTN, same quantizers, no transforms) | %.4f |\n", e->ppl_before);
        tb_printf(md, "| after (this model) | %.4f |\n| reloaded export | %.4f |\n", e->ppl_after, e->ppl_reload);
    }
    tb_printf(md, "\n## Per layer (log10 QSUR of captured calibration inputs and weights; output error)\n\n");
    if (e->have_calib) {
        tb_printf(md, "| linear | X qsur before | X qsur after | W qsur before | W qsur after | err before | err after |\n"
                       "|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < e->L; i++)
            tb_printf(md, "| %s | %.3f | %.3f | %.3f | %.3f | %.5f | %.5f |\n", e->after[i].name, e->before[i].x_qsur,
                      e->after[i].x_qsur, e->before[i].w_qsur, e->after[i].w_qsur, e->before[i].out_err, e->after[i].out_err);
    } else if (e->ms->has_calib) {
        tb_printf(md, "Skipped: the captures would take %.0f MiB (more than %d; calibrate "
                  "on fewer tokens for this report).\n", e->cap_mib, QSUR_EXPORT_REPORT_MIB);
    } else {
        tb_printf(md, "No calibration activations (`calib FILE` before export).\n");
    }
    if (e->l2c && (e->rt->has_w2 || e->rt->has_qk || e->rt->act.bits < 16 || e->rt->kv.bits < 16))
        tb_printf(md, "\nNote: model.bin (llama2.c) holds the weights only; the online rotations and the "
                       "activation/KV quantizers above are recorded in model.safetensors and here.\n");
}

static void report_json(const export_report *e, tbuf *js)
{
    tb_printf(js, "{\n  \"settings\": {\"source\": ");
    tb_json_str(js, e->s->model_path);
    tb_printf(js, ", \"format\": \"%s\", \"weights\": \"%s\", \"wspec\": ", e->fmt, e->wkind);
    tb_json_str(js, e->quantized ? e->wspec : "float");
    tb_printf(js, ", \"wbits\": %d, \"abits\": %d, \"kvbits\": %d, \"group_size\": %s, \"method\": ",
              e->quantized ? e->s->wq.bits : 16, e->rt->act.bits < 16 ? e->rt->act.bits : 16,
              e->rt->kv.bits < 16 ? e->rt->kv.bits : 16, e->gsize);
    tb_json_str(js, e->quantized ? e->ms->wmethod : "none");
    tb_printf(js, ", \"group_sizes\": {");
    for (int i = 0; e->quantized && e->s->wq.gran == QSUR_GRAN_GROUP && i < 7 && i < e->L; i++) {
        const qsur_llama_linear *l = qsur_llama_linear_at(e->m, i);
        const char *kind = strrchr(l->name, '.');
        tb_printf(js, "%s\"%s\": %d", i ? ", " : "", kind ? kind + 1 : l->name,
                  qsur_llama_linear_spec(&e->s->wq, l->cols).group);
    }
    tb_printf(js, "}, \"transforms\": ");
    tb_json_str(js, e->ms->rotation);
    tb_printf(js, ",\n    \"online_w2_in\": ");
    if (e->rt->has_w2) {
        tb_printf(js, "{\"desc\": ");
        tb_json_str(js, e->rt->w2_desc);
        tb_printf(js, ", \"randomized\": %d, \"seed\": %llu}", e->rt->w2.randomized, (unsigned long long)e->rt->w2.seed);
    } else {
        tb_printf(js, "null");
    }
    tb_printf(js, ", \"online_qk\": ");
    if (e->rt->has_qk) {
        tb_printf(js, "{\"desc\": ");
        tb_json_str(js, e->rt->qk_desc);
        tb_printf(js, ", \"randomized\": %d, \"seed\": %llu}", e->rt->qk.randomized, (unsigned long long)e->rt->qk.seed);
    } else {
        tb_printf(js, "null");
    }
    tb_printf(js, ", \"calib_seed\": %llu},\n  \"ppl\": {\"float\": ", e->have_calib ? e->ms->calib_seed : 0ULL);
    tb_json_num(js, e->ppl_float);
    tb_printf(js, ", \"before\": ");
    tb_json_num(js, e->ppl_before);
    tb_printf(js, ", \"after\": ");
    tb_json_num(js, e->ppl_after);
    tb_printf(js, ", \"reloaded\": ");
    tb_json_num(js, e->ppl_reload);
    tb_printf(js, "},\n  \"layers\": [");
    for (int i = 0; e->have_calib && i < e->L; i++) {
        tb_printf(js, "%s\n    {\"name\": \"%s\", \"x_log10_qsur_before\": ", i ? "," : "", e->after[i].name);
        tb_json_num(js, e->before[i].x_qsur);
        tb_printf(js, ", \"x_log10_qsur_after\": ");
        tb_json_num(js, e->after[i].x_qsur);
        tb_printf(js, ", \"w_log10_qsur_before\": ");
        tb_json_num(js, e->before[i].w_qsur);
        tb_printf(js, ", \"w_log10_qsur_after\": ");
        tb_json_num(js, e->after[i].w_qsur);
        tb_printf(js, ", \"error_before\": ");
        tb_json_num(js, e->before[i].out_err);
        tb_printf(js, ", \"error_after\": ");
        tb_json_num(js, e->after[i].out_err);
        tb_printf(js, "}");
    }
    tb_printf(js, "\n  ]\n}\n");
}

enum { EX_FORMAT, EX_RUNTIME, EX_WEIGHTS, EX_EVAL, EX_SEQS, EX_DTYPE, EX_SHARD };
const opt_spec export_opts[] = {
    {"format", OPT_CHOICE, 0, 0, "hf|llama2c|both", "hf", NULL, OPT_LOG_NEVER, "files to write"},
    {"runtime", OPT_CHOICE, 0, 0, "plain|qsur", "plain", NULL, OPT_LOG_NEVER,
     "plain: exact in any Llama runtime; qsur: online rotations in the metadata"},
    {"weights", OPT_CHOICE, 0, 0, "fake|int|gptq", "fake", NULL, OPT_LOG_NEVER, "how quantized weights are stored"},
    {"eval", OPT_FILE, 0, 0, NULL, NULL, NULL, OPT_LOG_NEVER, "token file for the report's perplexities"},
    {"seqs", OPT_INT, 0, 1L << 20, NULL, "16", NULL, OPT_LOG_NEVER, "eval sequences"},
    {"dtype", OPT_CHOICE, 0, 0, "f32|f16|bf16", "f32", NULL, OPT_LOG_NEVER, "dtype of the float tensors"},
    {"shard", OPT_TEXT, 0, 0, NULL, NULL, "SIZE", OPT_LOG_NEVER,
     "largest safetensors shard: 5GB, 500MB, 64KB or bytes (default 5GB, as Hugging Face)"},
    OPT_END};

/* One transaction from the checks to the rename: every failure after the
 * temporary directory exists must reach the cleanup at the end, which is why
 * this stays one function (its report writers and file writers are apart). */
int cmd_export(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc;
    if (!s->model || !s->mstate)
        return qsur_fail(err, QSUR_ERR_ARG, "export: no model loaded (use `model load PATH`)");
    session_log_as(s, "%s", ""); /* writes files, changes nothing */
    long format = a->v[EX_FORMAT].i, weights = a->v[EX_WEIGHTS].i;
    int hf = format != 1, l2c = format != 0, as_int = weights >= 1, gptq = weights == 2;
    int qsur_rt = a->v[EX_RUNTIME].i == 1;
    const char *eval = a->v[EX_EVAL].s;
    long seqs = a->v[EX_SEQS].i;
    const char *dtype = a->v[EX_DTYPE].i == 1 ? "F16" : a->v[EX_DTYPE].i == 2 ? "BF16" : "F32";
    int64_t shard_bytes = 0; /* 0: 5 GB, Hugging Face's default */
    if (a->v[EX_SHARD].given && parse_size(a->v[EX_SHARD].s, &shard_bytes))
        return qsur_fail(err, QSUR_ERR_ARG, "bad value in 'shard=%s' (expected a size: 5GB, 500MB, 64KB or bytes)",
                         a->v[EX_SHARD].s);
    qsur_llama *m = s->model;
    model_state *ms = s->mstate;
    int quantized = qsur_llama_linear_is_quantized(&m->layers[0].wq);
    if (as_int && (!quantized || s->wq.bits >= 16))
        return qsur_fail(err, QSUR_ERR_ARG, "export weights=%s: the model's weights are not quantized (`quant wNaN...` first)",
                         gptq ? "gptq" : "int");
    if (as_int && !hf)
        return qsur_fail(err, QSUR_ERR_ARG, "export weights=%s needs format=hf or both (llama2c files hold floats)",
                         gptq ? "gptq" : "int");
    const qsur_hadamard_plan *w2p, *qkp;
    session_plans(s, &w2p, &qkp);
    qsur_llama_runtime rt;
    int rc = qsur_llama_runtime_of(m, w2p, qkp, &rt, err);
    if (rc)
        return rc;
    if ((rc = refuse_online(&rt, hf, l2c, qsur_rt, err)))
        return rc;
    /* the target: strip trailing slashes; must not exist, or be empty */
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", argv[0]);
    for (size_t n = strlen(dir); n > 1 && dir[n - 1] == '/'; n--)
        dir[n - 1] = '\0';
    struct stat st;
    if (stat(dir, &st) == 0 && (!S_ISDIR(st.st_mode) || !dir_is_empty(dir)))
        return qsur_fail(err, QSUR_ERR_IO, "export: %s exists and is not an empty directory", dir);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", dir);
    if (!mkdtemp(tmp))
        return qsur_fail(err, QSUR_ERR_IO, "export: cannot create %s: %s", tmp, strerror(errno));
    chmod(tmp, 0755);

    /* ---- weights ---- */
    char wdesc[96] = "float", path[4600];
    if (quantized)
        qsur_quant_describe(&s->wq, wdesc, sizeof wdesc);
    qsur_llama_runtime_meta rm;
    qsur_llama_runtime_to_meta(&rt, &rm);
    char wspec[200], gsize[32];
    qsur_quant_spec_format(&s->wq, wspec, sizeof wspec);
    snprintf(gsize, sizeof gsize, "%d", s->wq.gran == QSUR_GRAN_GROUP ? s->wq.group : 0);
    char gover[128];
    group_overrides(&s->wq, m, gover, sizeof gover);
    const char *meta[2 * QSUR_RUNTIME_META_MAX + 10];
    int nm = 0;
    for (int i = 0; i < rm.count; i++) {
        meta[2 * nm] = rm.kv[2 * i];
        meta[2 * nm + 1] = rm.kv[2 * i + 1];
        nm++;
    }
    const char *extra[] = {"qsur.weights", gptq ? "gptq" : as_int ? "int" : quantized ? "fake" : "float",
                           "qsur.wspec", quantized ? wspec : "float",
                           "qsur.group_size", gsize,
                           "qsur.method", quantized ? ms->wmethod : "none",
                           "qsur.group_size.per_linear", gover};
    for (int i = 0; i < (quantized && gover[0] ? 5 : 4); i++) {
        meta[2 * nm] = extra[2 * i];
        meta[2 * nm + 1] = extra[2 * i + 1];
        nm++;
    }
    if (hf) {
        qsur_llama_hf_save_opts o = {.dtype = dtype, .use_wq = 1,
                                     .int_spec = as_int ? &s->wq : NULL, .meta_kv = meta,
                                     .meta_count = nm, .shard_bytes = shard_bytes,
                                     .progress = &s->progress, .gptq = gptq};
        rc = qsur_llama_save_hf_ex(m, tmp, &o, err);
    }
    if (!rc && l2c)
        rc = write_llama2c(m, tmp, err);

    /* ---- report: per-layer numbers before (RTN on the original model) and after ---- */
    int L = qsur_llama_linear_count(m);
    lin_row *before = calloc((size_t)L, sizeof *before), *after = calloc((size_t)L, sizeof *after);
    double ppl_float = NAN, ppl_before = NAN, ppl_after = NAN, ppl_reload = NAN;
    qsur_llama *orig = NULL, *back = NULL;
    qsur_llama_rotations *back_rot = NULL;
    qsur_tokens ct, et;
    memset(&ct, 0, sizeof ct);
    memset(&et, 0, sizeof et);
    int have_calib = 0, have_eval = 0, have_orig = 0;
    if (!rc && (!before || !after))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "export: out of memory");
    qsur_error soft; /* the original model may be gone: report without it */
    if (!rc && qsur_llama_load(&orig, s->model_path, NULL, &soft) == QSUR_OK &&
        orig->cfg.n_layers == m->cfg.n_layers) {
        have_orig = 1;
        orig->hooks.act = rt.act; /* the model's quantizers, not the session's */
        orig->hooks.kv = rt.kv;
        orig->hooks.act_wo = rt.act_wo;
    }
    /* the per-linear report captures every input of the model twice: only
     * when that stays small (docs/scale.md) */
    qsur_llama_capture_sel all = {0, m->cfg.n_layers, (1u << 6) - 1};
    long long ntok = (long long)ms->calib_seqs * ms->calib_seqlen;
    if (ms->calib_max_tokens > 0 && (ntok == 0 || ms->calib_max_tokens < ntok))
        ntok = ms->calib_max_tokens;
    double cap_mib = (double)qsur_llama_capture_bytes(m, &all, ntok) / (1 << 20);
    int report_layers = cap_mib <= QSUR_EXPORT_REPORT_MIB;
    if (!rc && ms->has_calib && report_layers) {
        rc = text_or_tokens_calib(s, ms->calib_path, ms->calib_seqlen, text_is_text(ms->calib_path) ? ms->calib_seqs : 0,
                                  ms->calib_seed, &ct, err);
        have_calib = !rc;
        if (!rc)
            rc = layer_rows(s, m, &ct, after, err);
    }
    if (!rc && eval) {
        rc = text_or_tokens_eval(s, eval, 256 < m->cfg.seq_len ? 256 : m->cfg.seq_len, &et, err);
        have_eval = !rc;
        if (!rc)
            rc = ppl_of(s, m, &et, (int)seqs, &ppl_after, err);
    }
    if (!rc && have_orig) {
        qsur_llama_hooks h = orig->hooks;
        orig->hooks = qsur_llama_hooks_none();
        if (have_eval)
            rc = ppl_of(s, orig, &et, (int)seqs, &ppl_float, err);
        orig->hooks = h;
        if (!rc && quantized)
            rc = qsur_llama_quantize_rtn(orig, &s->wq, NULL, err);
        if (!rc && have_eval)
            rc = ppl_of(s, orig, &et, (int)seqs, &ppl_before, err);
        if (!rc && have_calib)
            rc = layer_rows(s, orig, &ct, before, err);
    }
    /* the export as `model load` sees it, on the same tokens */
    if (!rc && hf && have_eval) {
        qsur_llama_runtime rb;
        int found = 0;
        qsur_llama_hf_first_file(tmp, path, sizeof path);
        if (!(rc = qsur_llama_load_hf(&back, tmp, NULL, err)) && !(rc = qsur_llama_runtime_read(path, &rb, &found, err)) &&
            !(rc = qsur_llama_runtime_apply(&rb, back, &back_rot, err)))
            rc = ppl_of(s, back, &et, (int)seqs, &ppl_reload, err);
    }
    if (!rc) {
        char qa[96], qk[96];
        /* The model's own quantizers (its hooks), not the session's defaults. */
        qsur_quant_describe(&rt.act, qa, sizeof qa);
        qsur_quant_describe(&rt.kv, qk, sizeof qk);
        if (rt.act.bits >= 16)
            snprintf(qa, sizeof qa, "off");
        if (rt.kv.bits >= 16)
            snprintf(qk, sizeof qk, "off");
        const char *fmt = hf && l2c ? "both" : hf ? "hf" : "llama2c";
        const char *wkind = gptq ? "gptq" : as_int ? "int" : "fake";
        char w2d[260], qkd[260];
        snprintf(w2d, sizeof w2d, rt.has_w2 ? "%s (randomized %d, seed %llu)" : "none", rt.w2_desc,
                 rt.w2.randomized, (unsigned long long)rt.w2.seed);
        snprintf(qkd, sizeof qkd, rt.has_qk ? "%s (randomized %d, seed %llu)" : "none", rt.qk_desc,
                 rt.qk.randomized, (unsigned long long)rt.qk.seed);
        tbuf md = {0}, js = {0};
        export_report e = {s, m, ms, &rt, fmt, wkind, wdesc, gover, gsize, qa, qk, w2d, qkd, eval, wspec,
                           quantized, have_calib, have_eval, l2c, L, ppl_float, ppl_before, ppl_after, ppl_reload,
                           before, after, cap_mib};
        report_md(&e, &md);
        report_json(&e, &js);
        snprintf(path, sizeof path, "%s/report.json", tmp);
        rc = write_text(path, &js, err);
        snprintf(path, sizeof path, "%s/report.md", tmp);
        if (!rc)
            rc = write_text(path, &md, err);
        free(md.s);
        free(js.s);
        if (!rc) {
            rep_str(r, "dir", "exported to", dir);
            rep_str(r, "format", "format", fmt);
            rep_str(r, "weights", "weights", wkind);
            rep_str(r, "online_w2_in", "online before w2", w2d);
            rep_str(r, "online_qk", "online q,k", qkd);
            rep_num(r, "ppl_float", "ppl float (original)", ppl_float, "%.4f");
            rep_num(r, "ppl_before", "ppl before (RTN)", ppl_before, "%.4f");
            rep_num(r, "ppl_after", "ppl after (this model)", ppl_after, "%.4f");
            rep_num(r, "ppl_reloaded", "ppl of the reloaded export", ppl_reload, "%.4f");
            rep_str(r, "report", "report", "report.md, report.json");
        }
    }
    if (!rc) {
        rmdir(dir); /* an empty target directory may be in the way of the rename */
        if (rename(tmp, dir) != 0)
            rc = qsur_fail(err, QSUR_ERR_IO, "export: cannot rename %s to %s: %s", tmp, dir, strerror(errno));
    }
    if (rc)
        remove_tmp(tmp);
    qsur_llama_free(orig);
    qsur_llama_free(back);
    qsur_llama_rotations_free(back_rot);
    qsur_tokens_free(&ct);
    qsur_tokens_free(&et);
    free(before);
    free(after);
    return rc;
}
