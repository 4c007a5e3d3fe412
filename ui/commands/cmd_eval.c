/* eval FILE.jsonl: zero-shot multiple-choice accuracy (docs/eval.md).
 *
 * Scoring follows lm-evaluation-harness: the context's trailing spaces move
 * to the front of the continuation, context+continuation is encoded whole
 * (without BOS, as the harness encodes for causal LMs; an empty context is
 * the end-of-text token) and the continuation's tokens are those after the
 * context's own encoding;
 * a choice's score is the sum of its tokens' log-probabilities; acc takes the
 * argmax of the score, acc_norm of score / characters of the choice. */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "commands.h"
#include "qsur/clock.h"
#include "qsur/json.h"
#include "qsur/llama_text.h"
#include "qsur/mapped_file.h"
#include "text_state.h"

#define EVAL_MAX_TASKS 64
#define EVAL_MAX_CHOICES 64

typedef struct {
    char name[64];
    int n, acc, acc_norm;
} task_score;

/* An array of ids in 0..V-1 -> ids; 0 on success. */
static int json_ids(const qsur_json *j, int V, qsur_token_ids *out)
{
    for (int i = 0; i < j->count; i++) {
        const qsur_json *v = j->items[i];
        if (v->type != QSUR_JSON_NUMBER || !v->is_int || v->integer < 0 || v->integer >= V ||
            qsur_token_ids_push(out, (int)v->integer))
            return -1;
    }
    return 0;
}

static int64_t utf8_chars(const char *s)
{
    int64_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80;
    return n;
}

/* Context and continuation ids of one choice (text form). */
static int encode_pair(const qsur_tokenizer *t, const char *context, const char *choice, qsur_token_ids *ctx,
                       qsur_token_ids *cont, qsur_error *err)
{
    size_t cl = strlen(context), sp = 0;
    while (sp < cl && context[cl - 1 - sp] == ' ')
        sp++;
    size_t chl = strlen(choice);
    char *whole = malloc(cl + chl + 1);
    if (!whole)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    memcpy(whole, context, cl);
    memcpy(whole + cl, choice, chl + 1);
    qsur_token_ids all = {0};
    int rc = qsur_tokenizer_encode(t, context, cl - sp, 0, ctx, err);
    if (!rc)
        rc = qsur_tokenizer_encode(t, whole, cl + chl, 0, &all, err);
    int64_t skip = ctx->n;
    int eot = qsur_tokenizer_eos(t) >= 0 ? qsur_tokenizer_eos(t) : qsur_tokenizer_bos(t);
    if (!rc && ctx->n == 0 && eot >= 0 && qsur_token_ids_push(ctx, eot))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    for (int64_t i = skip; !rc && i < all.n; i++)
        if (qsur_token_ids_push(cont, all.ids[i]))
            rc = qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    free(whole);
    qsur_token_ids_free(&all);
    return rc;
}

typedef struct {
    session *s;
    const qsur_tokenizer *t; /* NULL when the file uses ids only */
    const char *path;
    int line;
} eval_ctx;

static int item_fail(const eval_ctx *e, qsur_error *err, const char *what)
{
    return qsur_fail(err, QSUR_ERR_FORMAT, "%s:%d: %s", e->path, e->line, what);
}

/* One choice: its context and continuation ids, the length acc_norm divides
 * by, and its log-likelihood. */
typedef struct {
    qsur_token_ids ctx, cont;
    double len, ll;
} choice_ids;

/* The log-likelihood of every choice: a shared context runs once
 * (qsur_llama_loglik_choices); per-choice contexts each with their choice. */
static int score_choices(const qsur_llama *m, choice_ids *cs, int n, int per_choice, qsur_error *err)
{
    const int *conts[EVAL_MAX_CHOICES];
    int lens[EVAL_MAX_CHOICES];
    for (int k = 0; k < n; k++) {
        conts[k] = cs[k].cont.ids;
        lens[k] = (int)cs[k].cont.n;
    }
    if (!per_choice) {
        double ll[EVAL_MAX_CHOICES];
        int rc = qsur_llama_loglik_choices(m, cs[0].ctx.ids, (int)cs[0].ctx.n, conts, lens, n, ll, err);
        for (int k = 0; !rc && k < n; k++)
            cs[k].ll = ll[k];
        return rc;
    }
    for (int k = 0; k < n; k++) {
        int rc = qsur_llama_loglik_choices(m, cs[k].ctx.ids, (int)cs[k].ctx.n, &conts[k], &lens[k], 1, &cs[k].ll, err);
        if (rc)
            return rc;
    }
    return QSUR_OK;
}

/* Scores one item: *pred and *pred_norm get the chosen indices. */
static int score_item(eval_ctx *e, const qsur_json *j, int *label, int *pred, int *pred_norm, qsur_error *err)
{
    const qsur_json *c = qsur_json_get(j, "context"), *ch = qsur_json_get(j, "choices");
    int64_t lab;
    int V = e->s->model->cfg.vocab_size;
    if (!c || (c->type != QSUR_JSON_STRING && c->type != QSUR_JSON_ARRAY))
        return item_fail(e, err, "\"context\" must be a string, an array of token ids or one string per choice");
    if (!ch || ch->type != QSUR_JSON_ARRAY || ch->count < 2 || ch->count > EVAL_MAX_CHOICES)
        return item_fail(e, err, "\"choices\" must be an array of 2..64 choices");
    /* one context per choice (WinoGrande's partial scoring) */
    int per_choice = c->type == QSUR_JSON_ARRAY && c->count > 0 && c->items[0]->type == QSUR_JSON_STRING;
    if (per_choice && c->count != ch->count)
        return item_fail(e, err, "a \"context\" array of strings needs one context per choice");
    if (qsur_json_get_int(j, "label", &lab) || lab < 0 || lab >= ch->count)
        return item_fail(e, err, "\"label\" must be an integer index into \"choices\"");
    *label = (int)lab;
    int n = ch->count, rc = QSUR_OK;
    choice_ids *cs = calloc((size_t)n, sizeof *cs);
    if (!cs)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    for (int k = 0; k < n && !rc; k++) {
        const qsur_json *x = ch->items[k], *ck = per_choice ? c->items[k] : c;
        if (ck->type == QSUR_JSON_STRING && x->type == QSUR_JSON_STRING) {
            if (!e->t)
                rc = text_need_tokenizer(e->s, "", &e->t, err);
            if (!rc)
                rc = encode_pair(e->t, ck->string, x->string, &cs[k].ctx, &cs[k].cont, err);
            cs[k].len = (double)utf8_chars(x->string);
        } else if (!per_choice && c->type == QSUR_JSON_ARRAY && x->type == QSUR_JSON_ARRAY) {
            if (json_ids(c, V, &cs[k].ctx) || json_ids(x, V, &cs[k].cont))
                rc = item_fail(e, err, "token ids must be integers below the model's vocabulary");
            cs[k].len = (double)cs[k].cont.n;
        } else {
            rc = item_fail(e, err, "context and choices must both be text or both be id arrays");
        }
        if (!rc && (cs[k].ctx.n < 1 || cs[k].cont.n < 1))
            rc = item_fail(e, err, "a context or a choice encodes to no tokens");
        if (!rc && cs[k].ctx.n + cs[k].cont.n - 1 > e->s->model->cfg.seq_len)
            rc = item_fail(e, err, "context + choice are longer than the model's positions");
    }
    if (!rc)
        rc = score_choices(e->s->model, cs, n, per_choice, err);
    double best = -INFINITY, best_norm = -INFINITY;
    for (int k = 0; k < n && !rc; k++) {
        double norm = cs[k].ll / (cs[k].len > 0 ? cs[k].len : 1);
        if (cs[k].ll > best) {
            best = cs[k].ll;
            *pred = k;
        }
        if (norm > best_norm) {
            best_norm = norm;
            *pred_norm = k;
        }
    }
    for (int k = 0; k < n; k++) {
        qsur_token_ids_free(&cs[k].ctx);
        qsur_token_ids_free(&cs[k].cont);
    }
    free(cs);
    return rc;
}

static task_score *task_of(task_score *ts, int *nt, const char *name, eval_ctx *e, qsur_error *err)
{
    for (int i = 0; i < *nt; i++)
        if (!strcmp(ts[i].name, name))
            return &ts[i];
    if (*nt == EVAL_MAX_TASKS) {
        item_fail(e, err, "more than 64 task names");
        return NULL;
    }
    task_score *t = &ts[(*nt)++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    return t;
}

static void score_row(report *r, const char *name, int n, int acc, int norm)
{
    double a = n ? (double)acc / n : 0, b = n ? (double)norm / n : 0;
    rep_cell_str(r, name);
    rep_cell_int(r, n);
    rep_cell_num(r, a, "%.4f");
    rep_cell_num(r, n > 1 ? sqrt(a * (1 - a) / (n - 1)) : 0, "%.4f");
    rep_cell_num(r, b, "%.4f");
    rep_cell_num(r, n > 1 ? sqrt(b * (1 - b) / (n - 1)) : 0, "%.4f");
}

/* Number of non-empty lines (for the progress fraction). */
static int count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n;) {
        const char *nl = memchr(s + i, '\n', n - i);
        size_t e = nl ? (size_t)(nl - s) : n;
        k += e > i;
        i = e + 1;
    }
    return k;
}

const opt_spec eval_opts[] = {
    {"limit", OPT_INT, 0, INT_MAX, NULL, "0", NULL, OPT_LOG_NEVER, "the first N items only (0: all)"}, OPT_END};

int cmd_eval(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc;
    if (!s->model)
        return qsur_fail(err, QSUR_ERR_ARG, "no model loaded (use `model load PATH`)");
    long limit = a->v[0].i;
    qsur_mapped_file f;
    int rc = qsur_mapped_file_open(&f, argv[0], err);
    if (rc)
        return rc;
    const char *text = (const char *)f.data;
    int total = count_lines(text, f.size);
    if (limit && limit < total)
        total = (int)limit;
    task_score *ts = calloc(EVAL_MAX_TASKS, sizeof *ts);
    eval_ctx e = {s, NULL, argv[0], 0};
    int all = 0, acc = 0, norm = 0, nt = 0;
    double t0 = qsur_seconds();
    if (!ts)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < f.size && all < total;) {
        const char *nl = memchr(text + i, '\n', f.size - i);
        size_t end = nl ? (size_t)(nl - text) : f.size;
        e.line++;
        if (end > i) {
            qsur_json *j = NULL;
            char what[4200];
            snprintf(what, sizeof what, "%s:%d", argv[0], e.line);
            rc = qsur_json_parse(text + i, end - i, what, &j, err);
            int label = 0, pred = 0, pred_norm = 0;
            if (!rc)
                rc = score_item(&e, j, &label, &pred, &pred_norm, err);
            const char *tn = rc ? NULL : qsur_json_get_string(j, "task");
            task_score *t = rc ? NULL : task_of(ts, &nt, tn ? tn : "all", &e, err);
            if (!rc && !t)
                rc = QSUR_ERR_FORMAT;
            if (!rc) {
                t->n++;
                t->acc += pred == label;
                t->acc_norm += pred_norm == label;
                all++;
                acc += pred == label;
                norm += pred_norm == label;
                rc = qsur_progress_tick(&s->progress, (double)all / total, "eval", (double)acc / all, err);
            }
            qsur_json_free(j);
        }
        i = end + 1;
    }
    qsur_mapped_file_close(&f);
    if (!rc && all == 0)
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: no items", argv[0]);
    if (!rc) {
        static const char *const keys[] = {"task", "n", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr"};
        static const int widths[] = {-20, 6, 8, 10, 9, 15};
        rep_str(r, "file", "tasks", argv[0]);
        char q[96];
        text_weights_desc(s, q, sizeof q);
        rep_str(r, "weights", "weights", q);
        rep_table_begin(r, "tasks", 6, keys, widths);
        for (int k = 0; k < nt; k++)
            score_row(r, ts[k].name, ts[k].n, ts[k].acc, ts[k].acc_norm);
        if (nt > 1)
            score_row(r, "overall", all, acc, norm);
        rep_table_end(r);
        rep_num(r, "acc", "acc (all items)", (double)acc / all, "%.4f");
        rep_num(r, "acc_norm", "acc_norm (all items)", (double)norm / all, "%.4f");
        rep_num(r, "seconds", "time (s)", qsur_seconds() - t0, "%.3f");
    }
    free(ts);
    return rc;
}
