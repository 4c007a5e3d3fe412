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

/* report.md and report.json are built in report.h's strbuf; numbers in JSON
 * with 10 significant digits (null for inf/nan, which JSON lacks). */
static void json_num10(strbuf *b, double v)
{
    if (isfinite(v))
        strbuf_addf(b, "%.10g", v);
    else
        strbuf_addf(b, "null");
}

static int write_text(const char *path, const strbuf *b, qsur_error *err)
{
    qsur_atomic_file f;
    int rc = qsur_atomic_open(&f, path, err);
    if (rc)
        return rc;
    if ((rc = qsur_atomic_write(&f, b->buf ? b->buf : "", b->len, err))) {
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
                         "wNa16 online-w2=auto before rotate model / ostquant model) that fuses "
                         "everything offline",
                         hf ? "both (llama2c)" : "llama2c", rt->w2_desc);
    if (hf && !qsur_rt)
        return qsur_fail(err, QSUR_ERR_ARG,
                         "a plain HF runtime would run this model without the online rotation "
                         "before w2 (%.190s); add runtime=qsur to record it in qsur's metadata "
                         "(docs/export.md), or use a weight-only config (quant wNa16 online-w2=auto "
                         "before rotate model / ostquant model)",
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

static void report_md(const export_report *e, strbuf *md)
{
    strbuf_addf(md, "# qsur export\n\n## Settings\n\n| setting | value |\n|---|---|\n");
    strbuf_addf(md, "| source model | %s |\n| format | %s |\n| weights | %s (%s) |\n", e->s->model_path, e->fmt, e->wkind, e->wdesc);
    if (e->quantized && e->gover[0])
        strbuf_addf(md, "| group size per linear (where not %s) | %s |\n", e->gsize, e->gover);
    strbuf_addf(md, "| weight method | %s |\n| activations | %s |\n| KV cache | %s |\n",
              e->quantized ? e->ms->wmethod : "none", e->qa, e->qk);
    strbuf_addf(md, "| transforms | %s |\n| online w2_in | %s |\n| online qk | %s |\n",
              e->ms->rotation[0] ? e->ms->rotation : "none", e->w2d, e->qkd);
    if (e->have_calib)
        strbuf_addf(md, "| calibration | %s, %d seqs x %d, seed %llu |\n", e->ms->calib_path, e->ms->calib_seqs,
                  e->ms->calib_seqlen, e->ms->calib_seed);
    strbuf_addf(md, "\n## Perplexity%s%s\n\n", e->have_eval ? " on " : " (no eval=FILE given)", e->have_eval ? e->eval : "");
    if (e->have_eval) {
        strbuf_addf(md, "| model | ppl |\n|---|---|\n| float (original) | %.4f |\n", e->ppl_float);
        strbuf_addf(md, "| before (RTN, same quantizers, no transforms) | %.4f |\n", e->ppl_before);
        strbuf_addf(md, "| after (this model) | %.4f |\n| reloaded export | %.4f |\n", e->ppl_after, e->ppl_reload);
    }
    strbuf_addf(md, "\n## Per layer (log10 QSUR of captured calibration inputs and weights; output error)\n\n");
    if (e->have_calib) {
        strbuf_addf(md, "| linear | X qsur before | X qsur after | W qsur before | W qsur after | err before | err after |\n"
                       "|---|---|---|---|---|---|---|\n");
        for (int i = 0; i < e->L; i++)
            strbuf_addf(md, "| %s | %.3f | %.3f | %.3f | %.3f | %.5f | %.5f |\n", e->after[i].name, e->before[i].x_qsur,
                      e->after[i].x_qsur, e->before[i].w_qsur, e->after[i].w_qsur, e->before[i].out_err, e->after[i].out_err);
    } else if (e->ms->has_calib) {
        strbuf_addf(md, "Skipped: the captures would take %.0f MiB (more than %d; calibrate "
                  "on fewer tokens for this report).\n", e->cap_mib, QSUR_EXPORT_REPORT_MIB);
    } else {
        strbuf_addf(md, "No calibration activations (`calib FILE` before export).\n");
    }
    if (e->l2c && (e->rt->has_w2 || e->rt->has_qk || e->rt->act.bits < 16 || e->rt->kv.bits < 16))
        strbuf_addf(md, "\nNote: model.bin (llama2.c) holds the weights only; the online rotations and the "
                       "activation/KV quantizers above are recorded in model.safetensors and here.\n");
}

static void report_json(const export_report *e, strbuf *js)
{
    strbuf_addf(js, "{\n  \"settings\": {\"source\": ");
    strbuf_add_json_string(js, e->s->model_path);
    strbuf_addf(js, ", \"format\": \"%s\", \"weights\": \"%s\", \"wspec\": ", e->fmt, e->wkind);
    strbuf_add_json_string(js, e->quantized ? e->wspec : "float");
    strbuf_addf(js, ", \"wbits\": %d, \"abits\": %d, \"kvbits\": %d, \"group_size\": %s, \"method\": ",
              e->quantized ? e->s->wq.bits : 16, e->rt->act.bits < 16 ? e->rt->act.bits : 16,
              e->rt->kv.bits < 16 ? e->rt->kv.bits : 16, e->gsize);
    strbuf_add_json_string(js, e->quantized ? e->ms->wmethod : "none");
    strbuf_addf(js, ", \"group_sizes\": {");
    for (int i = 0; e->quantized && e->s->wq.gran == QSUR_GRAN_GROUP && i < 7 && i < e->L; i++) {
        const qsur_llama_linear *l = qsur_llama_linear_at(e->m, i);
        const char *kind = strrchr(l->name, '.');
        strbuf_addf(js, "%s\"%s\": %d", i ? ", " : "", kind ? kind + 1 : l->name,
                  qsur_llama_linear_spec(&e->s->wq, l->cols).group);
    }
    strbuf_addf(js, "}, \"transforms\": ");
    strbuf_add_json_string(js, e->ms->rotation);
    strbuf_addf(js, ",\n    \"online_w2_in\": ");
    if (e->rt->has_w2) {
        strbuf_addf(js, "{\"desc\": ");
        strbuf_add_json_string(js, e->rt->w2_desc);
        strbuf_addf(js, ", \"randomized\": %d, \"seed\": %llu}", e->rt->w2.randomized, (unsigned long long)e->rt->w2.seed);
    } else {
        strbuf_addf(js, "null");
    }
    strbuf_addf(js, ", \"online_qk\": ");
    if (e->rt->has_qk) {
        strbuf_addf(js, "{\"desc\": ");
        strbuf_add_json_string(js, e->rt->qk_desc);
        strbuf_addf(js, ", \"randomized\": %d, \"seed\": %llu}", e->rt->qk.randomized, (unsigned long long)e->rt->qk.seed);
    } else {
        strbuf_addf(js, "null");
    }
    strbuf_addf(js, ", \"calib_seed\": %llu},\n  \"ppl\": {\"float\": ", e->have_calib ? e->ms->calib_seed : 0ULL);
    json_num10(js, e->ppl_float);
    strbuf_addf(js, ", \"before\": ");
    json_num10(js, e->ppl_before);
    strbuf_addf(js, ", \"after\": ");
    json_num10(js, e->ppl_after);
    strbuf_addf(js, ", \"reloaded\": ");
    json_num10(js, e->ppl_reload);
    strbuf_addf(js, "},\n  \"layers\": [");
    for (int i = 0; e->have_calib && i < e->L; i++) {
        strbuf_addf(js, "%s\n    {\"name\": \"%s\", \"x_log10_qsur_before\": ", i ? "," : "", e->after[i].name);
        json_num10(js, e->before[i].x_qsur);
        strbuf_addf(js, ", \"x_log10_qsur_after\": ");
        json_num10(js, e->after[i].x_qsur);
        strbuf_addf(js, ", \"w_log10_qsur_before\": ");
        json_num10(js, e->before[i].w_qsur);
        strbuf_addf(js, ", \"w_log10_qsur_after\": ");
        json_num10(js, e->after[i].w_qsur);
        strbuf_addf(js, ", \"error_before\": ");
        json_num10(js, e->before[i].out_err);
        strbuf_addf(js, ", \"error_after\": ");
        json_num10(js, e->after[i].out_err);
        strbuf_addf(js, "}");
    }
    strbuf_addf(js, "\n  ]\n}\n");
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

/* One export in progress: its options, the temporary directory it writes
 * and what the report measures. Owned buffers are freed by export_end. */
typedef struct {
    /* options */
    int hf, l2c, as_int, gptq, qsur_rt;
    const char *eval, *dtype;
    long seqs;
    int64_t shard_bytes;
    /* the model and where it goes */
    qsur_llama *m;
    model_state *ms;
    qsur_llama_runtime rt;
    int quantized;
    char dir[4096], tmp[4200];
    /* what the files record */
    char wdesc[96], wspec[200], gsize[32], gover[128];
    /* the report's measurements */
    int L, have_calib, have_eval;
    lin_row *before, *after;
    double ppl_float, ppl_before, ppl_after, ppl_reload, cap_mib;
    qsur_llama *orig, *back;
    qsur_llama_rotations *back_rot;
    qsur_tokens ct, et;
} export_job;

/* The options into j, and every refusal before anything is written. */
static int export_options(session *s, const opt_args *a, export_job *j, qsur_error *err)
{
    long format = a->v[EX_FORMAT].i, weights = a->v[EX_WEIGHTS].i;
    j->hf = format != 1, j->l2c = format != 0, j->as_int = weights >= 1, j->gptq = weights == 2;
    j->qsur_rt = a->v[EX_RUNTIME].i == 1;
    j->eval = a->v[EX_EVAL].s;
    j->seqs = a->v[EX_SEQS].i;
    j->dtype = a->v[EX_DTYPE].i == 1 ? "F16" : a->v[EX_DTYPE].i == 2 ? "BF16" : "F32";
    j->shard_bytes = 0; /* 0: 5 GB, Hugging Face's default */
    if (a->v[EX_SHARD].given && parse_size(a->v[EX_SHARD].s, &j->shard_bytes))
        return qsur_fail(err, QSUR_ERR_ARG, "bad value in 'shard=%s' (expected a size: 5GB, 500MB, 64KB or bytes)",
                         a->v[EX_SHARD].s);
    j->m = s->model;
    j->ms = s->mstate;
    j->quantized = qsur_llama_linear_is_quantized(&j->m->layers[0].wq);
    const char *wk = j->gptq ? "gptq" : "int";
    if (j->as_int && (!j->quantized || s->wq.bits >= 16))
        return qsur_fail(err, QSUR_ERR_ARG, "export weights=%s: the model's weights are not quantized (`quant wNaN...` first)", wk);
    if (j->as_int && !j->hf)
        return qsur_fail(err, QSUR_ERR_ARG, "export weights=%s needs format=hf or both (llama2c files hold floats)", wk);
    const qsur_hadamard_plan *w2p, *qkp;
    session_plans(s, &w2p, &qkp);
    int rc = qsur_llama_runtime_of(j->m, w2p, qkp, &j->rt, err);
    return rc ? rc : refuse_online(&j->rt, j->hf, j->l2c, j->qsur_rt, err);
}

/* The target (trailing slashes stripped) must not exist, or be an empty
 * directory; the files go to a temporary sibling first. */
static int export_tmp_dir(const char *target, export_job *j, qsur_error *err)
{
    snprintf(j->dir, sizeof j->dir, "%s", target);
    for (size_t n = strlen(j->dir); n > 1 && j->dir[n - 1] == '/'; n--)
        j->dir[n - 1] = '\0';
    struct stat st;
    if (stat(j->dir, &st) == 0 && (!S_ISDIR(st.st_mode) || !dir_is_empty(j->dir)))
        return qsur_fail(err, QSUR_ERR_IO, "export: %s exists and is not an empty directory", j->dir);
    snprintf(j->tmp, sizeof j->tmp, "%s.tmp-XXXXXX", j->dir);
    if (!mkdtemp(j->tmp))
        return qsur_fail(err, QSUR_ERR_IO, "export: cannot create %s: %s", j->tmp, strerror(errno));
    chmod(j->tmp, 0755);
    return QSUR_OK;
}

/* The weight files: HF safetensors (with the runtime and quantizer metadata)
 * and/or the llama2.c file. */
static int export_weights(session *s, export_job *j, qsur_error *err)
{
    snprintf(j->wdesc, sizeof j->wdesc, "float");
    if (j->quantized)
        qsur_quant_describe(&s->wq, j->wdesc, sizeof j->wdesc);
    qsur_llama_runtime_meta rm;
    qsur_llama_runtime_to_meta(&j->rt, &rm);
    qsur_quant_spec_format(&s->wq, j->wspec, sizeof j->wspec);
    snprintf(j->gsize, sizeof j->gsize, "%d", s->wq.gran == QSUR_GRAN_GROUP ? s->wq.group : 0);
    group_overrides(&s->wq, j->m, j->gover, sizeof j->gover);
    const char *meta[2 * QSUR_RUNTIME_META_MAX + 10];
    int nm = 0;
    for (int i = 0; i < rm.count; i++, nm++) {
        meta[2 * nm] = rm.kv[2 * i];
        meta[2 * nm + 1] = rm.kv[2 * i + 1];
    }
    const char *extra[] = {"qsur.weights", j->gptq ? "gptq" : j->as_int ? "int" : j->quantized ? "fake" : "float",
                           "qsur.wspec", j->quantized ? j->wspec : "float",
                           "qsur.group_size", j->gsize,
                           "qsur.method", j->quantized ? j->ms->wmethod : "none",
                           "qsur.group_size.per_linear", j->gover};
    for (int i = 0; i < (j->quantized && j->gover[0] ? 5 : 4); i++, nm++) {
        meta[2 * nm] = extra[2 * i];
        meta[2 * nm + 1] = extra[2 * i + 1];
    }
    int rc = QSUR_OK;
    if (j->hf) {
        qsur_llama_hf_save_opts o = {.dtype = j->dtype, .use_wq = 1,
                                     .int_spec = j->as_int ? &s->wq : NULL, .meta_kv = meta,
                                     .meta_count = nm, .shard_bytes = j->shard_bytes,
                                     .progress = &s->progress, .gptq = j->gptq};
        rc = qsur_llama_save_hf_ex(j->m, j->tmp, &o, err);
    }
    if (!rc && j->l2c)
        rc = write_llama2c(j->m, j->tmp, err);
    return rc;
}

/* Per linear, on the calibration tokens: the session model's rows (after)
 * now, the original's (before) in export_compare. Skipped when the captures
 * would be big (they hold every input of the model, twice; docs/scale.md). */
static int export_layer_rows(session *s, export_job *j, qsur_error *err)
{
    const model_state *ms = j->ms;
    qsur_llama_capture_sel all = {0, j->m->cfg.n_layers, (1u << 6) - 1};
    long long ntok = (long long)ms->calib_seqs * ms->calib_seqlen;
    if (ms->calib_max_tokens > 0 && (ntok == 0 || ms->calib_max_tokens < ntok))
        ntok = ms->calib_max_tokens;
    j->cap_mib = (double)qsur_llama_capture_bytes(j->m, &all, ntok) / (1 << 20);
    if (!ms->has_calib || j->cap_mib > QSUR_EXPORT_REPORT_MIB)
        return QSUR_OK;
    int rc = text_or_tokens_calib(s, ms->calib_path, ms->calib_seqlen,
                                  text_is_text(ms->calib_path) ? ms->calib_seqs : 0, ms->calib_seed, &j->ct, err);
    j->have_calib = !rc;
    return rc ? rc : layer_rows(s, j->m, &j->ct, j->after, err);
}

/* The same measurements on the original model (from its file: float, then
 * RTN with the same quantizers, no transforms) and the perplexity of the
 * export as `model load` sees it. The original may be gone: then the report
 * goes without it. */
static int export_compare(session *s, export_job *j, qsur_error *err)
{
    int rc = QSUR_OK;
    qsur_error soft;
    if (qsur_llama_load(&j->orig, s->model_path, NULL, &soft) == QSUR_OK &&
        j->orig->cfg.n_layers == j->m->cfg.n_layers) {
        j->orig->hooks.act = j->rt.act; /* the model's quantizers, not the session's */
        j->orig->hooks.kv = j->rt.kv;
        j->orig->hooks.act_wo = j->rt.act_wo;
        qsur_llama_hooks h = j->orig->hooks;
        j->orig->hooks = qsur_llama_hooks_none(); /* float first */
        if (j->have_eval)
            rc = ppl_of(s, j->orig, &j->et, (int)j->seqs, &j->ppl_float, err);
        j->orig->hooks = h;
        if (!rc && j->quantized)
            rc = qsur_llama_quantize_rtn(j->orig, &s->wq, NULL, err);
        if (!rc && j->have_eval)
            rc = ppl_of(s, j->orig, &j->et, (int)j->seqs, &j->ppl_before, err);
        if (!rc && j->have_calib)
            rc = layer_rows(s, j->orig, &j->ct, j->before, err);
    }
    if (!rc && j->hf && j->have_eval) {
        char path[4600];
        qsur_llama_runtime rb;
        int found = 0;
        qsur_llama_hf_first_file(j->tmp, path, sizeof path);
        if (!(rc = qsur_llama_load_hf(&j->back, j->tmp, NULL, err)) &&
            !(rc = qsur_llama_runtime_read(path, &rb, &found, err)) &&
            !(rc = qsur_llama_runtime_apply(&rb, j->back, &j->back_rot, err)))
            rc = ppl_of(s, j->back, &j->et, (int)j->seqs, &j->ppl_reload, err);
    }
    return rc;
}

/* Every number of the report: per-linear rows and perplexities. */
static int export_measure(session *s, export_job *j, qsur_error *err)
{
    j->L = qsur_llama_linear_count(j->m);
    j->before = calloc((size_t)j->L, sizeof *j->before);
    j->after = calloc((size_t)j->L, sizeof *j->after);
    j->ppl_float = j->ppl_before = j->ppl_after = j->ppl_reload = NAN;
    if (!j->before || !j->after)
        return qsur_fail(err, QSUR_ERR_NOMEM, "export: out of memory");
    int rc = export_layer_rows(s, j, err);
    if (!rc && j->eval) {
        rc = text_or_tokens_eval(s, j->eval, 256 < j->m->cfg.seq_len ? 256 : j->m->cfg.seq_len, &j->et, err);
        j->have_eval = !rc;
        if (!rc)
            rc = ppl_of(s, j->m, &j->et, (int)j->seqs, &j->ppl_after, err);
    }
    return rc ? rc : export_compare(s, j, err);
}

/* report.md and report.json into the temporary directory, and the command's
 * own report. */
static int export_reports(session *s, export_job *j, report *r, qsur_error *err)
{
    const qsur_llama_runtime *rt = &j->rt;
    char qa[96], qk[96], w2d[260], qkd[260], path[4600];
    /* The model's own quantizers (its hooks), not the session's defaults. */
    qsur_quant_describe(&rt->act, qa, sizeof qa);
    qsur_quant_describe(&rt->kv, qk, sizeof qk);
    if (rt->act.bits >= 16)
        snprintf(qa, sizeof qa, "off");
    if (rt->kv.bits >= 16)
        snprintf(qk, sizeof qk, "off");
    const char *fmt = j->hf && j->l2c ? "both" : j->hf ? "hf" : "llama2c";
    const char *wkind = j->gptq ? "gptq" : j->as_int ? "int" : "fake";
    snprintf(w2d, sizeof w2d, rt->has_w2 ? "%s (randomized %d, seed %llu)" : "none", rt->w2_desc,
             rt->w2.randomized, (unsigned long long)rt->w2.seed);
    snprintf(qkd, sizeof qkd, rt->has_qk ? "%s (randomized %d, seed %llu)" : "none", rt->qk_desc,
             rt->qk.randomized, (unsigned long long)rt->qk.seed);
    strbuf md = {0}, js = {0};
    export_report e = {s, j->m, j->ms, rt, fmt, wkind, j->wdesc, j->gover, j->gsize, qa, qk, w2d, qkd, j->eval,
                       j->wspec, j->quantized, j->have_calib, j->have_eval, j->l2c, j->L, j->ppl_float,
                       j->ppl_before, j->ppl_after, j->ppl_reload, j->before, j->after, j->cap_mib};
    report_md(&e, &md);
    report_json(&e, &js);
    snprintf(path, sizeof path, "%s/report.json", j->tmp);
    int rc = write_text(path, &js, err);
    snprintf(path, sizeof path, "%s/report.md", j->tmp);
    if (!rc)
        rc = write_text(path, &md, err);
    strbuf_free(&md);
    strbuf_free(&js);
    if (rc)
        return rc;
    rep_str(r, "dir", "exported to", j->dir);
    rep_str(r, "format", "format", fmt);
    rep_str(r, "weights", "weights", wkind);
    rep_str(r, "online_w2_in", "online before w2", w2d);
    rep_str(r, "online_qk", "online q,k", qkd);
    rep_num(r, "ppl_float", "ppl float (original)", j->ppl_float, "%.4f");
    rep_num(r, "ppl_before", "ppl before (RTN)", j->ppl_before, "%.4f");
    rep_num(r, "ppl_after", "ppl after (this model)", j->ppl_after, "%.4f");
    rep_num(r, "ppl_reloaded", "ppl of the reloaded export", j->ppl_reload, "%.4f");
    rep_str(r, "report", "report", "report.md, report.json");
    return QSUR_OK;
}

/* The end of the transaction: the temporary directory becomes the target
 * (rc OK) or goes; everything the job holds is freed. */
static int export_end(export_job *j, int rc, qsur_error *err)
{
    if (!rc) {
        rmdir(j->dir); /* an empty target directory may be in the way of the rename */
        if (rename(j->tmp, j->dir) != 0)
            rc = qsur_fail(err, QSUR_ERR_IO, "export: cannot rename %s to %s: %s", j->tmp, j->dir, strerror(errno));
    }
    if (rc)
        remove_tmp(j->tmp);
    qsur_llama_free(j->orig);
    qsur_llama_free(j->back);
    qsur_llama_rotations_free(j->back_rot);
    qsur_tokens_free(&j->ct);
    qsur_tokens_free(&j->et);
    free(j->before);
    free(j->after);
    return rc;
}

/* One transaction from the checks to the rename: once the temporary
 * directory exists, every step's failure goes through export_end. */
int cmd_export(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc;
    if (!s->model || !s->mstate)
        return qsur_fail(err, QSUR_ERR_ARG, "export: no model loaded (use `model load PATH`)");
    session_log_as(s, "%s", ""); /* writes files, changes nothing */
    export_job *j = calloc(1, sizeof *j);
    if (!j)
        return qsur_fail(err, QSUR_ERR_NOMEM, "export: out of memory");
    int rc = export_options(s, a, j, err);
    if (!rc)
        rc = export_tmp_dir(argv[0], j, err);
    if (rc) {
        free(j);
        return rc;
    }
    rc = export_weights(s, j, err);
    if (!rc)
        rc = export_measure(s, j, err);
    if (!rc)
        rc = export_reports(s, j, r, err);
    rc = export_end(j, rc, err);
    free(j);
    return rc;
}
