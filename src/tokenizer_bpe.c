/* BPE merging of one word, O(n log n): a min-heap of candidate merges
 * ordered by (priority, position), symbols in a linked list over the array,
 * stale candidates skipped when popped. This is the `tokenizers` crate's
 * Word::merge_all (priority = merge rank); with priority = -score it is
 * llama2.c's "merge the best-scoring adjacent pair, leftmost on ties" loop,
 * which rescans the whole text per merge (quadratic), done here in one pass. */
#include <stdlib.h>
#include "tokenizer_impl.h"

typedef struct {
    double prio;
    int64_t pos;  /* index of the left symbol */
    int new_id;
} cand;

typedef struct {
    cand *c;
    int64_t n, cap;
} heap;

static int before(const cand *a, const cand *b)
{
    return a->prio < b->prio || (a->prio == b->prio && a->pos < b->pos);
}

static int heap_push(heap *h, cand x)
{
    if (h->n == h->cap) {
        int64_t nc = h->cap ? h->cap * 2 : 64;
        cand *c = realloc(h->c, (size_t)nc * sizeof *c);
        if (!c)
            return -1;
        h->c = c;
        h->cap = nc;
    }
    int64_t i = h->n++;
    while (i > 0 && before(&x, &h->c[(i - 1) / 2])) {
        h->c[i] = h->c[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->c[i] = x;
    return 0;
}

static cand heap_pop(heap *h)
{
    cand top = h->c[0], last = h->c[--h->n];
    int64_t i = 0;
    for (;;) {
        int64_t k = 2 * i + 1;
        if (k >= h->n)
            break;
        if (k + 1 < h->n && before(&h->c[k + 1], &h->c[k]))
            k++;
        if (!before(&h->c[k], &last))
            break;
        h->c[i] = h->c[k];
        i = k;
    }
    if (h->n)
        h->c[i] = last;
    return top;
}

/* Pushes the merge of the symbol at pos with its successor, if any. */
static int push_pair(const qsur_tokenizer *t, heap *h, const int *ids, const int64_t *next, int64_t pos)
{
    int nid;
    double prio;
    if (next[pos] < 0 || !tok_pair_get(&t->merges, ids[pos], ids[next[pos]], &nid, &prio))
        return 0;
    cand c = {prio, pos, nid};
    return heap_push(h, c);
}

int tok_bpe_merge(const qsur_tokenizer *t, int *ids, int64_t *n_io, qsur_error *err)
{
    int64_t n = *n_io;
    if (n < 2)
        return QSUR_OK;
    int64_t *prev = malloc((size_t)n * sizeof *prev), *next = malloc((size_t)n * sizeof *next);
    unsigned char *dead = calloc((size_t)n, 1);
    heap h = {NULL, 0, 0};
    int bad = !prev || !next || !dead;
    for (int64_t i = 0; i < n && !bad; i++) {
        prev[i] = i - 1;
        next[i] = i + 1 < n ? i + 1 : -1;
    }
    for (int64_t i = 0; i + 1 < n && !bad; i++)
        bad = push_pair(t, &h, ids, next, i) != 0;
    while (h.n && !bad) {
        cand c = heap_pop(&h);
        int64_t p = c.pos, q = next[p];
        int nid;
        double prio;
        /* stale: the left symbol was absorbed, has no successor any more, or
         * the pair now there is not the one this candidate merges */
        if (dead[p] || q < 0 || !tok_pair_get(&t->merges, ids[p], ids[q], &nid, &prio) ||
            nid != c.new_id)
            continue;
        ids[p] = nid;
        dead[q] = 1;
        next[p] = next[q];
        if (next[q] >= 0)
            prev[next[q]] = p;
        if (prev[p] >= 0)
            bad = push_pair(t, &h, ids, next, prev[p]) != 0;
        if (!bad)
            bad = push_pair(t, &h, ids, next, p) != 0;
    }
    int64_t k = 0;
    if (!bad)
        for (int64_t i = 0; i < n; i++)
            if (!dead[i])
                ids[k++] = ids[i];
    free(prev);
    free(next);
    free(dead);
    free(h.c);
    if (bad)
        return qsur_fail(err, QSUR_ERR_NOMEM, "tokenizer: out of memory merging a word of %lld symbols",
                         (long long)n);
    *n_io = k;
    return QSUR_OK;
}
