/* The tokenizer's vocabulary: per-id pieces in two arenas, the bytes -> id
 * map and the pair -> merge table (see tokenizer_impl.h). */
#include <stdlib.h>
#include <string.h>
#include "tokenizer_impl.h"

static uint64_t hash_pair(uint64_t k);

/* FNV-1a, then murmur3's finalizer so the low bits (the slot) are mixed too */
static uint64_t hash_bytes(const char *s, int len)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
    return hash_pair(h);
}

static uint64_t hash_pair(uint64_t k)
{
    k ^= k >> 33; /* murmur3's finalizer */
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    return k ^ (k >> 33);
}

int tok_new(qsur_tokenizer **out, qsur_tokenizer_kind kind, int n_ids, qsur_error *err)
{
    *out = NULL;
    if (n_ids < 1 || n_ids > (1 << 24))
        return qsur_fail(err, QSUR_ERR_FORMAT, "tokenizer: %d ids (expected 1..16777216)", n_ids);
    qsur_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return qsur_fail(err, QSUR_ERR_NOMEM, "tokenizer: out of memory");
    t->kind = kind;
    t->n_ids = n_ids;
    t->raw_off = calloc((size_t)n_ids, sizeof *t->raw_off);
    t->spell_off = calloc((size_t)n_ids, sizeof *t->spell_off);
    t->raw_len = malloc((size_t)n_ids * sizeof *t->raw_len);
    t->special = calloc((size_t)n_ids, 1);
    if (!t->raw_off || !t->spell_off || !t->raw_len || !t->special) {
        qsur_tokenizer_free(t);
        return qsur_fail(err, QSUR_ERR_NOMEM, "tokenizer: out of memory for %d ids", n_ids);
    }
    for (int i = 0; i < n_ids; i++)
        t->raw_len[i] = -1;
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    t->bos = t->eos = t->unk = -1;
    *out = t;
    return QSUR_OK;
}

void qsur_tokenizer_free(qsur_tokenizer *t)
{
    if (!t)
        return;
    free(t->raw);
    free(t->spell);
    free(t->raw_off);
    free(t->spell_off);
    free(t->raw_len);
    free(t->special);
    free(t->score);
    free(t->map.slot);
    free(t->merges.key);
    free(t->merges.new_id);
    free(t->merges.prio);
    for (int i = 0; i < t->n_added; i++)
        free(t->added[i].text);
    free(t->added);
    free(t);
}

/* Arenas grow by doubling; offsets (not pointers) survive the realloc. */
static int64_t arena_add(char **buf, size_t *used, size_t *cap, const char *s, int len)
{
    if (*used + (size_t)len + 1 > *cap) {
        size_t nc = *cap ? *cap : 1 << 16;
        while (*used + (size_t)len + 1 > nc)
            nc *= 2;
        char *b = realloc(*buf, nc);
        if (!b)
            return -1;
        *buf = b;
        *cap = nc;
    }
    int64_t off = (int64_t)*used;
    memcpy(*buf + off, s, (size_t)len);
    (*buf)[off + len] = '\0';
    *used += (size_t)len + 1;
    return off;
}

int tok_set_piece(qsur_tokenizer *t, int id, const char *raw, int raw_len, const char *spell,
                  int spell_len, qsur_error *err)
{
    if (id < 0 || id >= t->n_ids)
        return qsur_fail(err, QSUR_ERR_FORMAT, "tokenizer: id %d outside 0..%d", id, t->n_ids - 1);
    if (t->raw_len[id] >= 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "tokenizer: id %d given twice", id);
    int64_t a = arena_add(&t->raw, &t->raw_used, &t->raw_cap, raw, raw_len);
    int64_t b = a < 0 ? -1 : arena_add(&t->spell, &t->spell_used, &t->spell_cap, spell, spell_len);
    if (b < 0)
        return qsur_fail(err, QSUR_ERR_NOMEM, "tokenizer: out of memory for the pieces");
    t->raw_off[id] = a;
    t->spell_off[id] = b;
    t->raw_len[id] = raw_len;
    return QSUR_OK;
}

int tok_build_map(qsur_tokenizer *t, qsur_error *err)
{
    size_t cap = 16;
    while (cap < (size_t)t->n_ids * 4)
        cap *= 2;
    free(t->map.slot);
    t->map.slot = calloc(cap, sizeof *t->map.slot);
    if (!t->map.slot)
        return qsur_fail(err, QSUR_ERR_NOMEM, "tokenizer: out of memory for the vocabulary map");
    t->map.cap = cap;
    for (int id = 0; id < t->n_ids; id++) {
        if (t->raw_len[id] < 0 || t->special[id])
            continue;
        /* the first id of a spelling keeps it (llama2.c's sorted lookup finds either) */
        if (tok_map_find(t, t->raw + t->raw_off[id], t->raw_len[id]) >= 0)
            continue;
        uint64_t hv = hash_bytes(t->raw + t->raw_off[id], t->raw_len[id]);
        size_t h = (size_t)hv & (cap - 1);
        while (t->map.slot[h])
            h = (h + 1) & (cap - 1);
        t->map.slot[h] = (hv >> 32 << 32) | (uint64_t)(id + 1);
    }
    return QSUR_OK;
}

int tok_map_find(const qsur_tokenizer *t, const char *s, int len)
{
    if (!t->map.cap)
        return -1;
    uint64_t hv = hash_bytes(s, len), tag = hv >> 32 << 32;
    size_t h = (size_t)hv & (t->map.cap - 1);
    for (uint64_t e; (e = t->map.slot[h]); h = (h + 1) & (t->map.cap - 1)) {
        int id = (int)(uint32_t)e - 1;
        if ((e & 0xFFFFFFFF00000000ULL) == tag && t->raw_len[id] == len &&
            !memcmp(t->raw + t->raw_off[id], s, (size_t)len))
            return id;
    }
    return -1;
}

static int pairmap_grow(tok_pairmap *m, size_t nc)
{
    uint64_t *key = calloc(nc, sizeof *key);
    int *nid = malloc(nc * sizeof *nid);
    double *prio = malloc(nc * sizeof *prio);
    if (!key || !nid || !prio) {
        free(key);
        free(nid);
        free(prio);
        return -1;
    }
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->key[i])
            continue;
        size_t h = (size_t)hash_pair(m->key[i]) & (nc - 1);
        while (key[h])
            h = (h + 1) & (nc - 1);
        key[h] = m->key[i];
        nid[h] = m->new_id[i];
        prio[h] = m->prio[i];
    }
    free(m->key);
    free(m->new_id);
    free(m->prio);
    m->key = key;
    m->new_id = nid;
    m->prio = prio;
    m->cap = nc;
    return 0;
}

int tok_pair_reserve(tok_pairmap *m, size_t n)
{
    size_t nc = m->cap ? m->cap : 1024;
    while (nc < (m->count + n) * 2 + 2)
        nc *= 2;
    return nc > m->cap ? pairmap_grow(m, nc) : 0;
}

/* A pair given twice keeps the last entry, as the `tokenizers` crate's
 * HashMap collect does. */
int tok_pair_put(tok_pairmap *m, int a, int b, int new_id, double prio)
{
    if ((m->count + 1) * 2 > m->cap && pairmap_grow(m, m->cap ? m->cap * 2 : 1024))
        return -1;
    uint64_t k = (uint64_t)(a + 1) << 32 | (uint64_t)(b + 1);
    size_t h = (size_t)hash_pair(k) & (m->cap - 1);
    while (m->key[h] && m->key[h] != k)
        h = (h + 1) & (m->cap - 1);
    m->count += !m->key[h];
    m->key[h] = k;
    m->new_id[h] = new_id;
    m->prio[h] = prio;
    return 0;
}

int tok_pair_get(const tok_pairmap *m, int a, int b, int *new_id, double *prio)
{
    if (!m->cap)
        return 0;
    uint64_t k = (uint64_t)(a + 1) << 32 | (uint64_t)(b + 1);
    size_t h = (size_t)hash_pair(k) & (m->cap - 1);
    for (; m->key[h]; h = (h + 1) & (m->cap - 1))
        if (m->key[h] == k) {
            *new_id = m->new_id[h];
            *prio = m->prio[h];
            return 1;
        }
    return 0;
}

/* No merge result may hold "x<marker>" with x not the marker's last byte:
 * then no merge ever joins the symbol before a word-starting marker with the
 * marker, and words split there merge exactly as the whole text would (each
 * word's merges keep their relative order: rank, then position). */
void tok_check_split(qsur_tokenizer *t, const char *marker)
{
    size_t ml = strlen(marker);
    for (size_t i = 0; i < t->merges.cap; i++) {
        if (!t->merges.key[i])
            continue;
        int id = t->merges.new_id[i];
        const char *s = t->raw + t->raw_off[id];
        size_t n = (size_t)t->raw_len[id];
        for (size_t k = 1; k + ml <= n; k++)
            if (!memcmp(s + k, marker, ml) && !(k >= ml && !memcmp(s + k - ml, marker, ml)))
                return;
    }
    memcpy(t->split_marker, marker, ml + 1);
}
