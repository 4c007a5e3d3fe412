/* Transform stack: snapshots per state, so undo/redo are exact. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/stack.h"

/* Keeps one pair of buffers of a dropped state for the next push. */
static void keep_spare(float **spare, float **buf)
{
    if (!*spare)
        *spare = *buf;
    else
        free(*buf);
    *buf = NULL;
}

static void state_drop(qsur_stack *st, qsur_stack_state *s)
{
    keep_spare(&st->spare_X, &s->X);
    keep_spare(&st->spare_W, &s->W);
    qsur_transform_free(s->step);
    memset(s, 0, sizeof *s);
}

static void state_clear(qsur_stack_state *s)
{
    free(s->X);
    free(s->W);
    qsur_transform_free(s->step);
    memset(s, 0, sizeof *s);
}

static float *copy_floats(const float *x, int64_t count)
{
    float *y = qsur_alloc((size_t)count, sizeof(float));
    if (y && count > 0)
        memcpy(y, x, sizeof(float) * (size_t)count);
    return y;
}

int qsur_stack_new(qsur_stack **out, const float *X, int64_t n, const float *W, int64_t m,
                   int64_t d, qsur_error *err)
{
    *out = NULL;
    if (!X && !W)
        return qsur_fail(err, QSUR_ERR_ARG, "transform stack: needs X or W (got neither)");
    if (d < 1 || (X && n < 1) || (W && m < 1))
        return qsur_fail(err, QSUR_ERR_ARG,
                         "transform stack: bad shape X %lldx%lld, W %lldx%lld",
                         X ? (long long)n : 0LL, (long long)d, W ? (long long)m : 0LL,
                         (long long)d);
    size_t tmp;
    if ((X && qsur_mul_size((size_t)n, (size_t)d, &tmp)) ||
        (W && qsur_mul_size((size_t)m, (size_t)d, &tmp)))
        return qsur_fail(err, QSUR_ERR_NOMEM, "transform stack: size overflow");
    qsur_stack *st = calloc(1, sizeof *st);
    if (st)
        st->states = calloc(4, sizeof *st->states);
    if (!st || !st->states) {
        free(st);
        return qsur_fail(err, QSUR_ERR_NOMEM, "transform stack: no memory");
    }
    st->cap = 4;
    st->count = 1;
    st->next_id = 1;
    st->n = X ? n : 0;
    st->m = W ? m : 0;
    st->d = d;
    if ((X && !(st->states[0].X = copy_floats(X, n * d))) ||
        (W && !(st->states[0].W = copy_floats(W, m * d)))) {
        qsur_stack_free(st);
        return qsur_fail(err, QSUR_ERR_NOMEM, "transform stack %lldx%lld / %lldx%lld: no memory",
                         (long long)n, (long long)d, (long long)m, (long long)d);
    }
    *out = st;
    return QSUR_OK;
}

void qsur_stack_free(qsur_stack *st)
{
    if (!st)
        return;
    for (int i = 0; i < st->count; i++)
        state_clear(&st->states[i]);
    free(st->states);
    free(st->spare_X);
    free(st->spare_W);
    free(st);
}

const float *qsur_stack_x(const qsur_stack *st) { return st->states[st->cur].X; }
const float *qsur_stack_w(const qsur_stack *st) { return st->states[st->cur].W; }
const float *qsur_stack_original_x(const qsur_stack *st) { return st->states[0].X; }

int qsur_stack_push(qsur_stack *st, qsur_transform *t, const qsur_progress *prog,
                    qsur_error *err)
{
    if (!t)
        return qsur_fail(err, QSUR_ERR_ARG, "stack push: no transform");
    if (t->d != st->d) {
        int64_t td = t->d;
        qsur_transform_free(t);
        return qsur_fail(err, QSUR_ERR_ARG,
                         "stack push: transform is for %lld channels, layer has %lld",
                         (long long)td, (long long)st->d);
    }
    /* A push drops the redo tail anyway: when there is no spare, its last state
     * gives its buffers now (fresh memory costs a page fault per page, ~0.3 s for
     * a 4096-channel layer on a VM). So a failed push may have shortened the
     * tail by that one state; the current state is never touched. */
    if (!st->spare_X && !st->spare_W && st->count > st->cur + 1) {
        state_drop(st, &st->states[st->count - 1]);
        st->count--;
    }
    const qsur_stack_state *cur = &st->states[st->cur];
    qsur_stack_state next = {0};
    /* The step writes straight from the current snapshot into the new one (no
     * copy first), into the spare buffers when a dropped state left some. */
    if (cur->X) {
        next.X = st->spare_X ? st->spare_X : qsur_alloc((size_t)(st->n * st->d), sizeof(float));
        st->spare_X = NULL;
    }
    if (cur->W) {
        next.W = st->spare_W ? st->spare_W : qsur_alloc((size_t)(st->m * st->d), sizeof(float));
        st->spare_W = NULL;
    }
    if ((cur->X && !next.X) || (cur->W && !next.W)) {
        const char *kind = qsur_transform_kind_name(t->kind); /* static string */
        state_drop(st, &next);
        qsur_transform_free(t);
        return qsur_fail(err, QSUR_ERR_NOMEM, "stack push %s: no memory for the snapshot", kind);
    }
    int rc = qsur_transform_apply_into(t, cur->X, next.X, st->n, cur->W, next.W, st->m, prog, err);
    if (rc) {
        state_drop(st, &next);
        qsur_transform_free(t);
        return rc;
    }
    /* cur points into states[], which realloc may move: take what we need first. */
    const double log_det = cur->log_det + t->log_det;
    cur = NULL;
    /* Grow before touching the redo tail so a failure leaves the stack as it was. */
    if (st->cur + 2 > st->cap) {
        int cap = st->cap * 2;
        qsur_stack_state *s = realloc(st->states, sizeof *s * (size_t)cap);
        if (!s) {
            state_drop(st, &next);
            qsur_transform_free(t);
            return qsur_fail(err, QSUR_ERR_NOMEM, "stack push: no memory");
        }
        st->states = s;
        st->cap = cap;
    }
    for (int i = st->cur + 1; i < st->count; i++)
        state_drop(st, &st->states[i]);
    next.step = t;
    next.log_det = log_det;
    next.id = st->next_id++;
    st->states[st->cur + 1] = next;
    st->cur++;
    st->count = st->cur + 1;
    return QSUR_OK;
}

int qsur_stack_undo(qsur_stack *st, qsur_error *err)
{
    if (st->cur == 0)
        return qsur_fail(err, QSUR_ERR_ARG, "undo: nothing to undo (at the original)");
    st->cur--;
    return QSUR_OK;
}

int qsur_stack_redo(qsur_stack *st, qsur_error *err)
{
    if (st->cur + 1 >= st->count)
        return qsur_fail(err, QSUR_ERR_ARG, "redo: nothing to redo");
    st->cur++;
    return QSUR_OK;
}

int qsur_stack_reset(qsur_stack *st)
{
    int undone = st->cur;
    st->cur = 0;
    return undone;
}

int qsur_stack_depth(const qsur_stack *st) { return st->cur; }
int qsur_stack_redo_depth(const qsur_stack *st) { return st->count - 1 - st->cur; }

const qsur_transform *qsur_stack_step(const qsur_stack *st, int i)
{
    return i >= 1 && i < st->count ? st->states[i].step : NULL;
}

double qsur_stack_log_det(const qsur_stack *st) { return st->states[st->cur].log_det; }
uint64_t qsur_stack_state_id(const qsur_stack *st) { return st->states[st->cur].id; }

size_t qsur_stack_bytes(const qsur_stack *st)
{
    size_t per = (size_t)(st->n + st->m) * (size_t)st->d * sizeof(float);
    size_t total = (size_t)st->count * per;
    if (st->spare_X)
        total += (size_t)st->n * (size_t)st->d * sizeof(float);
    if (st->spare_W)
        total += (size_t)st->m * (size_t)st->d * sizeof(float);
    for (int i = 1; i < st->count; i++) {
        const qsur_transform *t = st->states[i].step;
        size_t dd = (size_t)t->d * (size_t)t->d;
        if (t->rot)
            total += dd * sizeof(float);
        if (t->scale)
            total += (size_t)t->d * sizeof(float);
        if (t->eigenvalues)
            total += (size_t)t->d * sizeof(double);
        if (t->plan) {
            if (t->plan->block)
                total += (size_t)(t->plan->m * t->plan->m) * sizeof(float);
            if (t->plan->signs)
                total += (size_t)t->d * sizeof(float);
        }
    }
    return total;
}

/* snprintf that appends and never overruns; *len tracks the would-be length. */
static void appendf(char *buf, size_t n, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void appendf(char *buf, size_t n, size_t *len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (*len < n) {
        int w = vsnprintf(buf + *len, n - *len, fmt, ap);
        if (w > 0)
            *len += (size_t)w;
    }
    va_end(ap);
}

void qsur_stack_describe(const qsur_stack *st, char *buf, size_t n)
{
    if (!n)
        return;
    buf[0] = '\0';
    size_t len = 0;
    appendf(buf, n, &len, "%s 0. original (X %lldx%lld, W %lldx%lld)\n", st->cur == 0 ? "->" : "  ",
            (long long)st->n, (long long)st->d, (long long)st->m, (long long)st->d);
    for (int i = 1; i < st->count; i++)
        appendf(buf, n, &len, "%s%2d. %s%s\n", i == st->cur ? "->" : "  ", i,
                st->states[i].step->desc, i > st->cur ? " (undone)" : "");
    appendf(buf, n, &len, "   cumulative sum ln s = %.6g; %d step%s applied, %d to redo\n",
            qsur_stack_log_det(st), st->cur, st->cur == 1 ? "" : "s",
            qsur_stack_redo_depth(st));
}
