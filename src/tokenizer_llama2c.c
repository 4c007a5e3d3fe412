/* llama2.c tokenizer.bin -> qsur_tokenizer.
 *
 * Layout (little-endian, as llama2.c's tokenizer.py writes it):
 *     int32 max_token_length
 *     vocab_size times: float32 score, int32 length, `length` bytes
 * The vocabulary size is not stored (run.c takes it from the checkpoint):
 * with vocab_hint 0 entries are read to the end of the file. Ids 0, 1, 2 are
 * <unk>, <s>, </s>; byte b falls back to id b + 3 ("<0xXX>" pieces).
 * The merge table is precomputed: every way of writing a piece as the
 * concatenation of two pieces is a merge to it with priority -score, which
 * makes run.c's encode loop (merge the adjacent pair whose concatenation
 * scores best) the same heap merge as Hugging Face BPE. */
#include <stdlib.h>
#include <string.h>
#include "tokenizer_impl.h"

static int32_t rd_i32(const unsigned char *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
}

static float rd_f32(const unsigned char *p)
{
    uint32_t u = (uint32_t)rd_i32(p);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Counts the entries (and checks each fits) without allocating. */
static int count_entries(const unsigned char *d, size_t n, int max_len, int want, int *count, const char *what,
                         qsur_error *err)
{
    size_t off = 4;
    int k = 0;
    while (off < n && (want == 0 || k < want)) {
        if (n - off < 8)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: token %d: truncated header at byte %zu", what, k, off);
        int32_t len = rd_i32(d + off + 4);
        if (len < 0 || len > max_len || (size_t)len > n - off - 8)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: token %d: length %d at byte %zu (expected 0..%d within "
                             "the file)", what, k, len, off + 4, max_len);
        off += 8 + (size_t)len;
        k++;
    }
    if (want && k < want)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %d tokens, expected %d", what, k, want);
    if (k < 259)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %d tokens (expected <unk>, <s>, </s>, 256 byte tokens and "
                         "more)", what, k);
    *count = k;
    return QSUR_OK;
}

static int build_pairs(qsur_tokenizer *t, qsur_error *err)
{
    for (int id = 0; id < t->n_ids; id++) {
        const char *s = t->raw + t->raw_off[id];
        int len = t->raw_len[id];
        if (len < 2 || tok_map_find(t, s, len) != id)
            continue;
        for (int k = 1; k < len; k++) {
            int a = tok_map_find(t, s, k), b = a >= 0 ? tok_map_find(t, s + k, len - k) : -1;
            if (b >= 0 && tok_pair_put(&t->merges, a, b, id, -(double)t->score[id]))
                return qsur_fail(err, QSUR_ERR_NOMEM, "tokenizer: out of memory for the merges");
        }
    }
    return QSUR_OK;
}

int qsur_tokenizer_load_llama2c(qsur_tokenizer **out, const unsigned char *d, size_t n, int vocab_hint,
                                const char *what, qsur_error *err)
{
    *out = NULL;
    if (n < 4)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %zu bytes, too short for a llama2.c tokenizer", what, n);
    int max_len = rd_i32(d), count = 0;
    if (max_len < 1 || max_len > 4096)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: neither a tokenizer.json (no '{' first) nor a llama2.c "
                         "tokenizer.bin (max_token_length %d, expected 1..4096)", what, max_len);
    int rc = count_entries(d, n, max_len, vocab_hint > 0 ? vocab_hint : 0, &count, what, err);
    qsur_tokenizer *t = NULL;
    if (!rc)
        rc = tok_new(&t, QSUR_TOK_LLAMA2C, count, err);
    if (!rc && !(t->score = malloc((size_t)count * sizeof *t->score)))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", what);
    size_t off = 4;
    for (int id = 0; id < count && !rc; id++) {
        int len = rd_i32(d + off + 4);
        t->score[id] = rd_f32(d + off);
        rc = tok_set_piece(t, id, (const char *)d + off + 8, len, (const char *)d + off + 8, len, err);
        off += 8 + (size_t)len;
    }
    if (!rc)
        rc = tok_build_map(t, err);
    if (!rc)
        rc = build_pairs(t, err);
    if (rc) {
        qsur_tokenizer_free(t);
        return rc;
    }
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = b + 3;
    for (int id = 0; id < 3; id++)
        t->special[id] = 1;
    t->unk = 0;
    t->bos = 1;
    t->eos = 2;
    /* run.c's decode: <0xXX> pieces are bytes; the dummy prefix's space is dropped */
    t->dec[0].kind = STEP_BYTE_FALLBACK;
    t->dec[1].kind = STEP_FUSE;
    t->dec[2].kind = STEP_STRIP;
    strcpy(t->dec[2].from, " ");
    t->dec[2].start = 1;
    t->n_dec = 3;
    tok_check_split(t, " ");
    *out = t;
    return QSUR_OK;
}
