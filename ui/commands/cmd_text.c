/* Text commands: tokenizer load|info, tokenize, detokenize, generate. */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "commands.h"
#include "qsur/clock.h"
#include "qsur/backend.h"
#include "qsur/llama_text.h"
#include "qsur/mapped_file.h"
#include "text_state.h"

/* The bytes of a token as printable text: \n, \t, \r, \\ and \xNN for other
 * control bytes; valid UTF-8 kept. */
static void escape_bytes(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 5 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n' || c == '\t' || c == '\r' || c == '\\') {
            out[k++] = '\\';
            out[k++] = c == '\n' ? 'n' : c == '\t' ? 't' : c == '\r' ? 'r' : '\\';
        } else if (c < 0x20 || c == 0x7F) {
            k += (size_t)snprintf(out + k, cap - k, "\\x%02X", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k] = '\0';
}

/* Human tables pad by bytes: pad a UTF-8 cell to `width` characters here so
 * "▁the" (6 bytes, 4 characters) lines up with ASCII cells. */
static void pad_chars(char *s, size_t cap, int width, const report *r)
{
    if (r->format != FORMAT_HUMAN)
        return;
    int chars = 0;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i++)
        chars += ((unsigned char)s[i] & 0xC0) != 0x80;
    while (chars < width && n + 1 < cap) {
        s[n++] = ' ';
        s[n] = '\0';
        chars++;
    }
}

/* A table of the ids with their vocabulary spelling and the text each one
 * decodes to on its own; at most `show` rows (JSON gets every id). */
static int piece_table(const qsur_tokenizer *t, const int *ids, int64_t n, int64_t show, report *r,
                       qsur_error *err)
{
    static const char *const keys[] = {"pos", "id", "piece", "text"};
    static const int widths[] = {6, 7, -24, -24};
    rep_table_begin(r, "tokens", 4, keys, widths);
    for (int64_t i = 0; i < n && i < show; i++) {
        char *txt = NULL;
        size_t len = 0;
        int rc = qsur_tokenizer_decode(t, &ids[i], 1, &txt, &len, err);
        if (rc) {
            rep_table_end(r);
            return rc;
        }
        char piece[160], text[160];
        const char *sp = qsur_tokenizer_piece(t, ids[i]);
        escape_bytes(sp, strlen(sp), piece, sizeof piece);
        escape_bytes(txt, len, text, sizeof text);
        free(txt);
        pad_chars(piece, sizeof piece, 24, r);
        pad_chars(text, sizeof text, 24, r);
        rep_cell_int(r, i);
        rep_cell_int(r, ids[i]);
        rep_cell_str(r, piece);
        rep_cell_str(r, text);
    }
    rep_table_end(r);
    if (n > show)
        rep_line(r, "... %lld more (show=N for more; `set format json` lists every id)", (long long)(n - show));
    return QSUR_OK;
}

/* ---- tokenizer load FILE | tokenizer info ------------------------------------ */

static void describe(session *s, report *r)
{
    const qsur_tokenizer *t = s->text->tok;
    rep_str(r, "path", "tokenizer", s->text->tok_path);
    rep_str(r, "kind", "kind", qsur_tokenizer_kind_name(qsur_tokenizer_kind_of(t)));
    rep_int(r, "ids", "ids", qsur_tokenizer_vocab_size(t));
    int bos = qsur_tokenizer_bos(t), eos = qsur_tokenizer_eos(t);
    char b[96];
    if (bos >= 0)
        snprintf(b, sizeof b, "%d %s (put first by ppl, calib, generate)", bos, qsur_tokenizer_piece(t, bos));
    else
        snprintf(b, sizeof b, "none (the post-processor adds no BOS)");
    rep_str(r, "bos", "BOS", b);
    if (eos >= 0)
        snprintf(b, sizeof b, "%d %s (generate stops there)", eos, qsur_tokenizer_piece(t, eos));
    rep_str(r, "eos", "EOS", eos >= 0 ? b : "none");
    if (s->model && qsur_tokenizer_vocab_size(t) != s->model->cfg.vocab_size) {
        snprintf(b, sizeof b, "the model's vocabulary has %d ids", s->model->cfg.vocab_size);
        rep_str(r, "warning", "warning", b);
    }
}

static int tokenizer_load(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc;
    char abs[PATH_MAX];
    const char *p = realpath(argv[0], abs) ? abs : argv[0];
    double t0 = qsur_seconds();
    int rc = text_tokenizer_load(s, p, err);
    if (rc)
        return rc;
    session_log_as(s, "tokenizer load \"%s\"", p);
    describe(s, r);
    rep_num(r, "seconds", "load time (s)", qsur_seconds() - t0, "%.3f");
    return QSUR_OK;
}

static int tokenizer_info(session *s, int argc, char **argv, report *r, qsur_error *err)
{
    (void)argc, (void)argv;
    session_log_as(s, "%s", "");
    if (!s->text || !s->text->tok)
        return qsur_fail(err, QSUR_ERR_ARG, "no tokenizer loaded (`tokenizer load FILE`)");
    describe(s, r);
    return QSUR_OK;
}

/* The sub-commands of `tokenizer` (the parent entry is in command_table.c). */
const command tokenizer_subs[] = {
    {"load", 1, 1, 0, COMPLETE_FILE, NULL, "tokenizer load FILE", "load tokenizer.json or tokenizer.bin", NULL,
     tokenizer_load, NULL, NULL, NULL, NULL},
    {"info", 0, 0, 0, COMPLETE_NONE, NULL, "tokenizer info", "describe the session's tokenizer", NULL,
     tokenizer_info, NULL, NULL, NULL, NULL},
    COMMAND_END};

/* ---- tokenize TEXT|FILE, detokenize IDS ------------------------------------- */

/* The option of tokenize and detokenize. */
const opt_spec text_show_opts[] = {
    {"show", OPT_INT, 0, OPT_NO_MAX, NULL, "64", NULL, OPT_LOG_NEVER, "rows of the table (JSON lists every id)"},
    OPT_END};

int cmd_tokenize(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc;
    const qsur_tokenizer *t;
    long show = a->v[0].i;
    int rc = text_need_tokenizer(s, "", &t, err);
    if (rc)
        return rc;
    struct stat st;
    qsur_mapped_file f = {NULL, 0};
    int is_file = stat(argv[0], &st) == 0 && S_ISREG(st.st_mode);
    if (is_file && (rc = qsur_mapped_file_open(&f, argv[0], err)))
        return rc;
    const char *text = is_file ? (const char *)f.data : argv[0];
    size_t len = is_file ? f.size : strlen(argv[0]);
    qsur_token_ids ids = {0};
    double t0 = qsur_seconds();
    rc = qsur_tokenizer_encode(t, text ? text : "", len, 0, &ids, err);
    double dt = qsur_seconds() - t0;
    qsur_mapped_file_close(&f);
    if (!rc) {
        rep_str(r, "source", "source", is_file ? argv[0] : "text");
        rep_int(r, "bytes", "bytes", (long long)len);
        rep_int(r, "count", "tokens", ids.n);
        if (len)
            rep_num(r, "bytes_per_token", "bytes per token", (double)len / (ids.n ? (double)ids.n : 1), "%.2f");
        if (is_file)
            rep_num(r, "seconds", "time (s)", dt, "%.3f");
        int64_t *v = malloc((size_t)(ids.n ? ids.n : 1) * sizeof *v);
        for (int64_t i = 0; v && i < ids.n; i++)
            v[i] = ids.ids[i];
        if (v)
            rep_json_ints(r, "ids", v, ids.n);
        free(v);
        rc = piece_table(t, ids.ids, ids.n, show, r, err);
    }
    qsur_token_ids_free(&ids);
    return rc;
}

/* Ids from words like "1,2,3", "[1, 2]", "1 2 3". */
static int parse_ids(int argc, char **argv, qsur_token_ids *ids, qsur_error *err)
{
    for (int a = 0; a < argc; a++) {
        for (const char *p = argv[a]; *p;) {
            if (*p == ',' || *p == '[' || *p == ']' || *p == ' ') {
                p++;
                continue;
            }
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p || v < 0 || v > INT_MAX)
                return qsur_fail(err, QSUR_ERR_ARG, "'%s' is not a list of ids (e.g. 1,2,3)", argv[a]);
            if (qsur_token_ids_push(ids, (int)v))
                return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
            p = end;
        }
    }
    return QSUR_OK;
}

int cmd_detokenize(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    const qsur_tokenizer *t;
    long show = a->v[0].i;
    int rc = text_need_tokenizer(s, "", &t, err);
    if (rc)
        return rc;
    qsur_token_ids ids = {0};
    char *text = NULL;
    size_t len = 0;
    rc = parse_ids(argc, argv, &ids, err);
    if (!rc)
        rc = qsur_tokenizer_decode(t, ids.ids, ids.n, &text, &len, err);
    if (!rc) {
        rep_int(r, "count", "tokens", ids.n);
        rep_str(r, "text", "text", text);
        rc = piece_table(t, ids.ids, ids.n, show, r, err);
    }
    free(text);
    qsur_token_ids_free(&ids);
    return rc;
}

/* ---- generate ----------------------------------------------------------------- */

/* Streams the decoded text as tokens arrive: everything after the bytes
 * already shown, holding back an incomplete UTF-8 sequence at the end. */
typedef struct {
    session *s;
    const qsur_tokenizer *t;
    qsur_token_ids all;   /* prompt + generated */
    size_t shown;         /* bytes of the decoded text already written */
    int stream;           /* 0 in JSON mode */
    int failed;
} gen_ctx;

static size_t complete_utf8(const char *s, size_t n)
{
    size_t i = n, back = 0;
    while (i > 0 && back < 4 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        back++;
    }
    if (i == 0)
        return n;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need = lead >= 0xF0 ? 3 : lead >= 0xE0 ? 2 : lead >= 0xC0 ? 1 : 0;
    return need > back ? i - 1 : n;
}

static void emit(gen_ctx *g, int final)
{
    char *text = NULL;
    size_t len = 0;
    qsur_error e;
    /* control tokens (BOS, EOS) are not text: left out, as skip_special_tokens does */
    int *ids = malloc((size_t)(g->all.n ? g->all.n : 1) * sizeof *ids);
    int64_t n = 0;
    for (int64_t i = 0; ids && i < g->all.n; i++)
        if (!qsur_tokenizer_is_special(g->t, g->all.ids[i]))
            ids[n++] = g->all.ids[i];
    int rc = ids ? qsur_tokenizer_decode(g->t, ids, n, &text, &len, &e) : QSUR_ERR_NOMEM;
    free(ids);
    if (rc) {
        g->failed = 1;
        return;
    }
    size_t upto = final ? len : complete_utf8(text, len);
    if (upto > g->shown && g->stream) {
        char *chunk = strndup(text + g->shown, upto - g->shown);
        if (chunk && g->s->stream) {
            g->s->stream(g->s, chunk);
        } else if (chunk) {
            fputs(chunk, g->s->out);
            fflush(g->s->out);
        }
        free(chunk);
    }
    if (upto > g->shown)
        g->shown = upto;
    free(text);
}

static int on_token(void *ctx, int tok)
{
    gen_ctx *g = ctx;
    if (qsur_token_ids_push(&g->all, tok))
        return 1;
    emit(g, 0);
    return g->failed;
}

enum { GEN_N, GEN_TEMP, GEN_TOP_P, GEN_SEED };
const opt_spec generate_opts[] = {
    {"n", OPT_INT, 1, 1 << 20, NULL, "64", NULL, OPT_LOG_NEVER, "new tokens at most"},
    {"temp", OPT_REAL, 0, 100, NULL, "0", "T", OPT_LOG_NEVER, "temperature (0: greedy)"},
    {"top-p", OPT_REAL, 0, 1, NULL, "0.9", "P", OPT_LOG_NEVER, "nucleus of the sampling"},
    {"seed", OPT_INT, 0, OPT_NO_MAX, NULL, NULL, "S", OPT_LOG_NEVER, "seed of the sampling (default: the session's next)"},
    OPT_END};

int cmd_generate(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc;
    if (!s->model)
        return qsur_fail(err, QSUR_ERR_ARG, "no model loaded (use `model load PATH`)");
    const qsur_tokenizer *t;
    int rc = text_need_tokenizer(s, "", &t, err);
    if (rc)
        return rc;
    long n = a->v[GEN_N].i, seed = a->v[GEN_SEED].given ? a->v[GEN_SEED].i : -1;
    double temp = a->v[GEN_TEMP].d, top_p = a->v[GEN_TOP_P].d;
    gen_ctx g = {s, t, {0}, 0, s->set.format == FORMAT_HUMAN, 0};
    rc = qsur_tokenizer_encode(t, argv[0], strlen(argv[0]), 1, &g.all, err);
    if (!rc && g.all.n == 0)
        rc = qsur_fail(err, QSUR_ERR_ARG, "an empty prompt and no BOS: give some text");
    int n_prompt = (int)g.all.n;
    if (!rc && n_prompt + n > s->model->cfg.seq_len)
        rc = qsur_fail(err, QSUR_ERR_ARG, "%d prompt + %ld new tokens exceed the model's %d positions",
                       n_prompt, n, s->model->cfg.seq_len);
    if (rc) {
        qsur_token_ids_free(&g.all);
        return rc;
    }
    /* greedy decoding draws nothing: it takes no seed from the session */
    qsur_sample_opts o = {temp, top_p, seed >= 0 ? (uint64_t)seed : temp > 0 ? session_next_seed(s) : 0};
    if (g.stream && s->stream)
        s->stream(s, NULL);
    emit(&g, 0); /* the prompt first */
    int made = 0;
    double t0 = qsur_seconds();
    int on_gpu = session_use_gpu(s) && qsur_gpu_hooks_supported(&s->model->hooks, NULL, 0);
    if (on_gpu) { /* fp32: the CPU's greedy tokens (gpu.md) */
        qsur_gpu_model *gm = NULL;
        rc = qsur_gpu_model_new(&gm, s->model, QSUR_GPU_F32, 1, n_prompt + (int)n, &s->progress, err);
        t0 = qsur_seconds(); /* tokens/s without the upload */
        if (!rc)
            rc = qsur_gpu_sample_stream(gm, s->model, g.all.ids, n_prompt, (int)n, qsur_tokenizer_eos(t), &o,
                                        on_token, &g, &s->progress, &made, err);
        qsur_gpu_model_free(gm);
    } else {
        rc = qsur_llama_sample_stream(s->model, g.all.ids, n_prompt, (int)n, qsur_tokenizer_eos(t), &o, on_token,
                                      &g, &s->progress, &made, err);
    }
    double dt = qsur_seconds() - t0;
    emit(&g, 1);
    if (g.stream && !s->stream) {
        fputs("\n", s->out);
        fflush(s->out);
    }
    if (!rc && g.failed)
        rc = qsur_fail(err, QSUR_ERR_ARG, "token %d has no text in the tokenizer (%d ids; the model has %d)",
                       g.all.ids[g.all.n - 1], qsur_tokenizer_vocab_size(t), s->model->cfg.vocab_size);
    if (!rc) {
        int last = made ? g.all.ids[g.all.n - 1] : -1;
        char *text = NULL;
        if (!g.stream && !qsur_tokenizer_decode(t, g.all.ids + n_prompt, made, &text, NULL, err))
            rep_str(r, "text", "text", text);
        free(text);
        rep_int(r, "prompt_tokens", "prompt tokens", n_prompt);
        rep_int(r, "tokens", "generated tokens", made);
        rep_str(r, "stopped", "stopped", last == qsur_tokenizer_eos(t) ? "end-of-text token"
                                         : made == n ? "n tokens" : "interrupted");
        rep_num(r, "tokens_per_s", "tokens/s", dt > 0 ? made / dt : 0, "%.1f");
        char dev[160];
        snprintf(dev, sizeof dev, "gpu (%s, fp32, no KV cache)", s->gpu_info.name);
        rep_str(r, "device", "runs on", on_gpu ? dev : "cpu");
        char q[96];
        text_weights_desc(s, q, sizeof q);
        rep_str(r, "weights", "weights", q);
        if (temp > 0) {
            rep_num(r, "temp", "temperature", temp, "%g");
            rep_num(r, "top_p", "top-p", top_p, "%g");
            rep_int(r, "seed", "seed", (long long)o.seed);
        } else {
            rep_str(r, "sampling", "sampling", "greedy (temp=0)");
        }
    }
    qsur_token_ids_free(&g.all);
    return rc;
}
