/* Hugging Face tokenizer.json -> qsur_tokenizer (see qsur/tokenizer.h for
 * the two kinds it accepts). Anything else a tokenizer.json can declare (a
 * WordPiece or Unigram model, other pre-tokenizers, normalizers or decoders,
 * another Split regex) is refused by name rather than tokenized differently. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/json.h"
#include "tokenizer_impl.h"
#include "unicode.h"

/* The Split regex of Llama-3 that tokenizer_pretok.c implements. */
static const char llama3_regex[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

typedef struct {
    const char *what;
    qsur_error *err;
    int byte_level;
    const qsur_json *metaspace; /* a Metaspace pre-tokenizer, or NULL */
} loader;

static const char *type_of(const qsur_json *j)
{
    const char *t = qsur_json_get_string(j, "type");
    return t ? t : "?";
}

/* spelling -> raw bytes: byte-level spellings are GPT-2 code points, one per
 * byte (a character outside the map stays as its UTF-8); others are as is.
 * out holds at least len bytes. Returns the raw length. */
static int to_raw(const loader *L, const char *s, int len, char *out)
{
    if (!L->byte_level) {
        memcpy(out, s, (size_t)len);
        return len;
    }
    int k = 0;
    for (int i = 0; i < len;) {
        int l;
        uint32_t cp = qsur_utf8_decode((const unsigned char *)s + i, (size_t)(len - i), &l);
        int b = cp == QSUR_UNICODE_INVALID ? -1 : qsur_unicode_to_byte(cp);
        if (b >= 0) {
            out[k++] = (char)b;
        } else {
            memcpy(out + k, s + i, (size_t)l);
            k += l;
        }
        i += l;
    }
    return k;
}

static int find_spelled(const qsur_tokenizer *t, const loader *L, const char *s, int len, char *buf)
{
    return tok_map_find(t, buf, to_raw(L, s, len, buf));
}

static int load_vocab(qsur_tokenizer *t, const loader *L, const qsur_json *vocab)
{
    char *buf = NULL;
    size_t cap = 0;
    int rc = QSUR_OK;
    for (int i = 0; i < vocab->count && !rc; i++) {
        const qsur_json *v = vocab->items[i];
        const char *key = vocab->keys[i];
        int len = (int)strlen(key);
        if (v->type != QSUR_JSON_NUMBER || !v->is_int || v->integer < 0 || v->integer >= t->n_ids) {
            rc = qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: model.vocab[\"%.40s\"]: expected an id in 0..%d",
                           L->what, key, t->n_ids - 1);
            break;
        }
        if ((size_t)len + 1 > cap) {
            cap = (size_t)len * 2 + 16;
            char *nb = realloc(buf, cap);
            if (!nb) {
                rc = qsur_fail(L->err, QSUR_ERR_NOMEM, "%s: out of memory", L->what);
                break;
            }
            buf = nb;
        }
        int rl = to_raw(L, key, len, buf);
        rc = tok_set_piece(t, (int)v->integer, buf, rl, key, len, L->err);
    }
    free(buf);
    return rc;
}

/* A merge is "A B" (older files) or ["A", "B"]; the result is the
 * vocabulary entry A+B. rank = position in the list. */
static int load_merges(qsur_tokenizer *t, const loader *L, const qsur_json *merges)
{
    if (!merges || merges->type != QSUR_JSON_ARRAY)
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: model.merges: expected an array", L->what);
    char a_raw[1024], b_raw[1024], ab[2048];
    if (tok_pair_reserve(&t->merges, (size_t)merges->count))
        return qsur_fail(L->err, QSUR_ERR_NOMEM, "%s: out of memory for %d merges", L->what, merges->count);
    for (int i = 0; i < merges->count; i++) {
        const qsur_json *m = merges->items[i];
        const char *a, *b;
        int al, bl;
        if (m->type == QSUR_JSON_STRING) {
            const char *sp = strchr(m->string, ' ');
            if (!sp || strchr(sp + 1, ' '))
                goto bad;
            a = m->string;
            al = (int)(sp - m->string);
            b = sp + 1;
            bl = (int)strlen(b);
        } else if (m->type == QSUR_JSON_ARRAY && m->count == 2 && m->items[0]->type == QSUR_JSON_STRING &&
                   m->items[1]->type == QSUR_JSON_STRING) {
            a = m->items[0]->string;
            b = m->items[1]->string;
            al = (int)strlen(a);
            bl = (int)strlen(b);
        } else {
            goto bad;
        }
        if (al >= (int)sizeof a_raw || bl >= (int)sizeof b_raw)
            return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: model.merges[%d]: a part longer than %zu bytes",
                             L->what, i, sizeof a_raw - 1);
        int ia = find_spelled(t, L, a, al, a_raw), ib = find_spelled(t, L, b, bl, b_raw);
        int la = ia >= 0 ? t->raw_len[ia] : 0, lb = ib >= 0 ? t->raw_len[ib] : 0;
        if (ia >= 0 && ib >= 0) {
            memcpy(ab, t->raw + t->raw_off[ia], (size_t)la);
            memcpy(ab + la, t->raw + t->raw_off[ib], (size_t)lb);
        }
        int inew = ia >= 0 && ib >= 0 ? tok_map_find(t, ab, la + lb) : -1;
        if (inew < 0)
            return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: model.merges[%d] (\"%.*s\" + \"%.*s\"): %s is not in "
                             "the vocabulary", L->what, i, al > 40 ? 40 : al, a, bl > 40 ? 40 : bl, b,
                             ia < 0 ? "the left part" : ib < 0 ? "the right part" : "their concatenation");
        if (tok_pair_put(&t->merges, ia, ib, inew, (double)i))
            return qsur_fail(L->err, QSUR_ERR_NOMEM, "%s: out of memory for the merges", L->what);
        continue;
    bad:
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: model.merges[%d]: expected \"A B\" or [\"A\", \"B\"]",
                         L->what, i);
    }
    return QSUR_OK;
}

static int largest_id(const qsur_json *vocab, const qsur_json *added)
{
    int64_t mx = -1;
    for (int i = 0; i < vocab->count; i++)
        if (vocab->items[i]->is_int && vocab->items[i]->integer > mx)
            mx = vocab->items[i]->integer;
    for (int i = 0; added && i < added->count; i++) {
        int64_t id;
        if (!qsur_json_get_int(added->items[i], "id", &id) && id > mx)
            mx = id;
    }
    /* ids are dense in every real file: a lone huge id must not size the tables */
    int64_t limit = (int64_t)vocab->count + (added ? added->count : 0) + 65536;
    return mx >= limit ? -1 : (int)mx;
}

static int load_added(qsur_tokenizer *t, const loader *L, const qsur_json *added)
{
    if (!added || added->type == QSUR_JSON_NULL)
        return QSUR_OK;
    if (added->type != QSUR_JSON_ARRAY)
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: added_tokens: expected an array", L->what);
    t->added = calloc((size_t)added->count + 1, sizeof *t->added);
    if (!t->added)
        return qsur_fail(L->err, QSUR_ERR_NOMEM, "%s: out of memory", L->what);
    for (int i = 0; i < added->count; i++) {
        int64_t id;
        const char *c = qsur_json_get_string(added->items[i], "content");
        if (qsur_json_get_int(added->items[i], "id", &id) || !c || !*c || id < 0 || id >= t->n_ids)
            return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: added_tokens[%d]: expected an id in 0..%d and a "
                             "non-empty content", L->what, i, t->n_ids - 1);
        int len = (int)strlen(c);
        if (t->raw_len[id] < 0) {
            int rc = tok_set_piece(t, (int)id, c, len, c, len, L->err);
            if (rc)
                return rc;
        }
        t->special[id] = 1;
        tok_added *a = &t->added[t->n_added++];
        a->text = strdup(c);
        a->len = len;
        a->id = (int)id;
        if (!a->text)
            return qsur_fail(L->err, QSUR_ERR_NOMEM, "%s: out of memory", L->what);
    }
    return QSUR_OK;
}

static int copy_field(const loader *L, char *dst, size_t n, const char *src, const char *where)
{
    if (!src || strlen(src) >= n)
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: %s: expected a string of at most %zu bytes", L->what,
                         where, n - 1);
    strcpy(dst, src);
    return QSUR_OK;
}

/* Replace's pattern must be {"String": ...} (a Regex pattern is refused). */
static int replace_step(const loader *L, const qsur_json *j, tok_step *st, const char *where)
{
    const qsur_json *pat = qsur_json_get(j, "pattern");
    st->kind = STEP_REPLACE;
    int rc = copy_field(L, st->from, sizeof st->from, pat ? qsur_json_get_string(pat, "String") : NULL, where);
    return rc ? rc : copy_field(L, st->to, sizeof st->to, qsur_json_get_string(j, "content"), where);
}

/* The steps of a normalizer/decoder: a Sequence's `key` list, or j alone.
 * Returns the count, or -1 after filling the error. */
static int steps_of(const loader *L, const qsur_json *j, const char *key, const char *what,
                    const qsur_json *const **items)
{
    *items = NULL; /* one step: j itself */
    if (strcmp(type_of(j), "Sequence"))
        return 1;
    const qsur_json *list = qsur_json_get(j, key);
    if (!list || list->type != QSUR_JSON_ARRAY || list->count > TOK_MAX_STEPS) {
        qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: %s: expected a list of at most %d steps", L->what, what,
                  TOK_MAX_STEPS);
        return -1;
    }
    *items = (const qsur_json *const *)list->items;
    return list->count;
}

static int load_normalizer(qsur_tokenizer *t, const loader *L, const qsur_json *n)
{
    if (!n || n->type == QSUR_JSON_NULL)
        return QSUR_OK;
    const qsur_json *const *items;
    int count = steps_of(L, n, "normalizers", "normalizer", &items);
    if (count < 0)
        return QSUR_ERR_FORMAT;
    for (int i = 0; i < count; i++) {
        const qsur_json *s = items ? items[i] : n;
        tok_step *st = &t->norm[t->n_norm++];
        int rc;
        if (!strcmp(type_of(s), "Prepend")) {
            st->kind = STEP_PREPEND;
            rc = copy_field(L, st->to, sizeof st->to, qsur_json_get_string(s, "prepend"), "normalizer Prepend");
        } else if (!strcmp(type_of(s), "Replace")) {
            rc = replace_step(L, s, st, "normalizer Replace");
        } else {
            rc = qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: normalizer %s is not supported (Prepend, Replace)",
                           L->what, type_of(s));
        }
        if (rc)
            return rc;
    }
    return QSUR_OK;
}

/* Metaspace's replacement (one character) and prepend scheme: *first = 1
 * for "first" and "always" (the legacy add_prefix_space: true), 0 for
 * "never"; *only_first (may be NULL) = 1 for "first"; splits not 0/1. */
static int metaspace(const loader *L, const qsur_json *m, char *rep, size_t n, int *first, int *only_first)
{
    const char *r = qsur_json_get_string(m, "replacement");
    const char *scheme = qsur_json_get_string(m, "prepend_scheme");
    int aps = 1;
    qsur_json_get_bool(m, "add_prefix_space", &aps);
    if (!scheme)
        scheme = aps ? "always" : "never";
    if (!r || !*r || strlen(r) >= n || (strcmp(scheme, "first") && strcmp(scheme, "always") && strcmp(scheme, "never")))
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: Metaspace: expected a replacement character and "
                         "prepend_scheme first, always or never", L->what);
    strcpy(rep, r);
    *first = strcmp(scheme, "never") != 0;
    if (only_first)
        *only_first = !strcmp(scheme, "first");
    return QSUR_OK;
}

static int load_decoder(qsur_tokenizer *t, const loader *L, const qsur_json *d)
{
    if (!d || d->type == QSUR_JSON_NULL)
        return QSUR_OK;
    const qsur_json *const *items;
    int count = steps_of(L, d, "decoders", "decoder", &items);
    if (count < 0)
        return QSUR_ERR_FORMAT;
    for (int i = 0; i < count; i++) {
        const qsur_json *s = items ? items[i] : d;
        tok_step *st = &t->dec[t->n_dec++];
        const char *ty = type_of(s);
        int rc = QSUR_OK;
        int64_t v;
        if (!strcmp(ty, "Replace")) {
            rc = replace_step(L, s, st, "decoder Replace");
        } else if (!strcmp(ty, "ByteFallback")) {
            st->kind = STEP_BYTE_FALLBACK;
        } else if (!strcmp(ty, "Fuse")) {
            st->kind = STEP_FUSE;
        } else if (!strcmp(ty, "ByteLevel")) {
            st->kind = STEP_BYTE_LEVEL;
        } else if (!strcmp(ty, "Metaspace")) {
            st->kind = STEP_META_DEC;
            rc = metaspace(L, s, st->from, sizeof st->from, &st->start, NULL);
        } else if (!strcmp(ty, "Strip")) {
            st->kind = STEP_STRIP;
            rc = copy_field(L, st->from, sizeof st->from, qsur_json_get_string(s, "content"), "decoder Strip");
            st->start = qsur_json_get_int(s, "start", &v) ? 0 : (int)v;
            st->stop = qsur_json_get_int(s, "stop", &v) ? 0 : (int)v;
        } else {
            rc = qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: decoder %s is not supported (ByteLevel, Replace, "
                           "ByteFallback, Fuse, Strip)", L->what, ty);
        }
        if (rc)
            return rc;
    }
    return QSUR_OK;
}

/* Metaspace as normalizer steps: spaces -> the replacement, then the
 * replacement prepended (when the text does not start with it); split: every
 * replacement starts a word (MergedWithNext). */
static int load_metaspace(qsur_tokenizer *t, const loader *L)
{
    int prepend, only_first, split = 0;
    char rep[16];
    int rc = metaspace(L, L->metaspace, rep, sizeof rep, &prepend, &only_first);
    if (rc)
        return rc;
    if (t->n_norm + 2 > TOK_MAX_STEPS)
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: too many normalizer steps", L->what);
    tok_step *st = &t->norm[t->n_norm++];
    st->kind = STEP_REPLACE;
    strcpy(st->from, " ");
    strcpy(st->to, rep);
    if (prepend) {
        st = &t->norm[t->n_norm++];
        st->kind = STEP_META_PREPEND;
        strcpy(st->to, rep);
        st->start = only_first;
    }
    qsur_json_get_bool(L->metaspace, "split", &split);
    if (split && strlen(rep) < sizeof t->split_marker) {
        strcpy(t->split_marker, rep);
        t->split_every = 1;
    }
    return QSUR_OK;
}

/* null or Metaspace (SentencePiece kind), or ByteLevel(use_regex false) after
 * a Split on the Llama-3 regex (byte-level kind). Sets L->byte_level. */
static int check_pre_tokenizer(loader *L, const qsur_json *p)
{
    L->byte_level = 0;
    if (!p || p->type == QSUR_JSON_NULL)
        return QSUR_OK;
    if (!strcmp(type_of(p), "Metaspace")) {
        L->metaspace = p;
        return QSUR_OK;
    }
    const qsur_json *list = qsur_json_get(p, "pretokenizers");
    int is_seq = !strcmp(type_of(p), "Sequence");
    int count = is_seq ? (list && list->type == QSUR_JSON_ARRAY ? list->count : 0) : 1;
    int split = 0;
    for (int i = 0; i < count; i++) {
        const qsur_json *s = is_seq ? list->items[i] : p;
        const char *ty = type_of(s);
        int use_regex = 1;
        if (!strcmp(ty, "Split")) {
            const qsur_json *pat = qsur_json_get(s, "pattern");
            const char *re = pat ? qsur_json_get_string(pat, "Regex") : NULL;
            const char *beh = qsur_json_get_string(s, "behavior");
            int inv = 0;
            qsur_json_get_bool(s, "invert", &inv);
            if (!re || strcmp(re, llama3_regex) || !beh || strcmp(beh, "Isolated") || inv)
                return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: pre_tokenizer Split: only the Llama-3 regex "
                                 "with behavior Isolated is supported", L->what);
            split = 1;
        } else if (!strcmp(ty, "ByteLevel")) {
            qsur_json_get_bool(s, "use_regex", &use_regex);
            int aps = 0;
            qsur_json_get_bool(s, "add_prefix_space", &aps);
            if (use_regex || aps)
                return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: pre_tokenizer ByteLevel: only use_regex false, "
                                 "add_prefix_space false (after a Split) is supported", L->what);
            L->byte_level = 1;
        } else {
            return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: pre_tokenizer %s is not supported (Metaspace, Split, ByteLevel)",
                             L->what, ty);
        }
    }
    if (!split || !L->byte_level)
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: pre_tokenizer: expected Split (Llama-3 regex) then "
                         "ByteLevel", L->what);
    return QSUR_OK;
}

/* BOS: the first item of TemplateProcessing's "single" when it is a special
 * token (directly or inside a Sequence of processors). */
static int load_post_processor(qsur_tokenizer *t, const loader *L, const qsur_json *p)
{
    if (!p || p->type == QSUR_JSON_NULL)
        return QSUR_OK;
    if (!strcmp(type_of(p), "Sequence")) {
        const qsur_json *list = qsur_json_get(p, "processors");
        for (int i = 0; list && list->type == QSUR_JSON_ARRAY && i < list->count; i++) {
            int rc = load_post_processor(t, L, list->items[i]);
            if (rc)
                return rc;
        }
        return QSUR_OK;
    }
    if (strcmp(type_of(p), "TemplateProcessing"))
        return QSUR_OK; /* ByteLevel, RobertaProcessing...: add nothing at the start here */
    const qsur_json *single = qsur_json_get(p, "single");
    if (!single || single->type != QSUR_JSON_ARRAY || single->count < 1)
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: post_processor.single: expected an array", L->what);
    const qsur_json *sp = qsur_json_get(single->items[0], "SpecialToken");
    if (!sp)
        return QSUR_OK;
    const char *name = qsur_json_get_string(sp, "id");
    const qsur_json *map = qsur_json_get(p, "special_tokens");
    const qsur_json *ent = name && map ? qsur_json_get(map, name) : NULL;
    const qsur_json *ids = ent ? qsur_json_get(ent, "ids") : NULL;
    if (!ids || ids->type != QSUR_JSON_ARRAY || ids->count != 1 || !ids->items[0]->is_int ||
        ids->items[0]->integer < 0 || ids->items[0]->integer >= t->n_ids)
        return qsur_fail(L->err, QSUR_ERR_FORMAT, "%s: post_processor: special token \"%s\" needs one id "
                         "below %d", L->what, name ? name : "?", t->n_ids);
    t->bos = (int)ids->items[0]->integer;
    return QSUR_OK;
}

static int load_model(qsur_tokenizer *t, const loader *L, const qsur_json *model)
{
    int rc = load_vocab(t, L, qsur_json_get(model, "vocab"));
    if (!rc)
        rc = tok_build_map(t, L->err);
    if (!rc)
        rc = load_merges(t, L, qsur_json_get(model, "merges"));
    if (rc)
        return rc;
    qsur_json_get_bool(model, "byte_fallback", &t->byte_fallback);
    qsur_json_get_bool(model, "fuse_unk", &t->fuse_unk);
    qsur_json_get_bool(model, "ignore_merges", &t->ignore_merges);
    const char *unk = qsur_json_get_string(model, "unk_token");
    char buf[256];
    if (unk && strlen(unk) < sizeof buf)
        t->unk = find_spelled(t, L, unk, (int)strlen(unk), buf);
    for (int b = 0; b < 256; b++) {
        char one = (char)b, hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", b);
        t->byte_id[b] = L->byte_level ? tok_map_find(t, &one, 1) : tok_map_find(t, hex, 6);
    }
    return QSUR_OK;
}

static void find_eos(qsur_tokenizer *t)
{
    static const char *const names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|eot_id|>"};
    for (int k = 0; k < 4 && t->eos < 0; k++)
        for (int i = 0; i < t->n_added; i++)
            if (!strcmp(t->added[i].text, names[k]))
                t->eos = t->added[i].id;
}

int qsur_tokenizer_load_hf_json(qsur_tokenizer **out, const char *text, size_t len, const char *what,
                                qsur_error *err)
{
    *out = NULL;
    qsur_json *root = NULL;
    int rc = qsur_json_parse(text, len, what, &root, err);
    if (rc)
        return rc;
    loader L = {what, err, 0, NULL};
    const qsur_json *model = qsur_json_get(root, "model");
    const qsur_json *vocab = model ? qsur_json_get(model, "vocab") : NULL;
    const qsur_json *added = qsur_json_get(root, "added_tokens");
    qsur_tokenizer *t = NULL;
    if (!model || strcmp(type_of(model), "BPE"))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: model.type %s is not supported (BPE)", what,
                       model ? type_of(model) : "(missing)");
    else if (!vocab || vocab->type != QSUR_JSON_OBJECT || vocab->count < 1)
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: model.vocab: expected a non-empty object", what);
    if (!rc)
        rc = check_pre_tokenizer(&L, qsur_json_get(root, "pre_tokenizer"));
    int top = rc ? 0 : largest_id(vocab, added);
    if (!rc && top < 0)
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: token ids are not dense (an id far above the %d entries)", what,
                       vocab->count);
    if (!rc)
        rc = tok_new(&t, L.byte_level ? QSUR_TOK_BYTE_LEVEL : QSUR_TOK_SENTENCEPIECE,
                     top + 1, err);
    if (!rc)
        rc = load_model(t, &L, model);
    if (!rc)
        rc = load_added(t, &L, added);
    if (!rc)
        rc = load_normalizer(t, &L, qsur_json_get(root, "normalizer"));
    if (!rc && L.metaspace)
        rc = load_metaspace(t, &L);
    if (!rc)
        rc = load_decoder(t, &L, qsur_json_get(root, "decoder"));
    if (!rc)
        rc = load_post_processor(t, &L, qsur_json_get(root, "post_processor"));
    if (!rc && L.byte_level && t->n_norm)
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: a normalizer with a byte-level pre-tokenizer is not supported",
                       what);
    for (int b = 0; !rc && L.byte_level && b < 256; b++)
        if (t->byte_id[b] < 0)
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: byte-level vocabulary lacks the token of byte 0x%02X",
                           what, b);
    qsur_json_free(root);
    if (rc) {
        qsur_tokenizer_free(t);
        return rc;
    }
    find_eos(t);
    if (!L.byte_level && !t->split_every)
        tok_check_split(t, "\xE2\x96\x81"); /* ▁ */
    *out = t;
    return QSUR_OK;
}
