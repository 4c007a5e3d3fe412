/* Strict recursive-descent JSON parser (see json.h for what "strict" means). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/json.h"
#include "qsur/mapped_file.h"

#define JSON_MAX_DEPTH 64

typedef struct {
    const char *s;
    size_t pos, len;
    const char *what;
    qsur_error *err;
} parser;

static int fail_at(parser *p, const char *msg)
{
    return qsur_fail(p->err, QSUR_ERR_FORMAT, "%s: malformed JSON at byte %zu: %s", p->what,
                     p->pos, msg);
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static qsur_json *new_node(qsur_json_type t)
{
    qsur_json *j = calloc(1, sizeof *j);
    if (j)
        j->type = t;
    return j;
}

void qsur_json_free(qsur_json *j)
{
    if (!j)
        return;
    free(j->string);
    for (int i = 0; i < j->count; i++) {
        qsur_json_free(j->items[i]);
        if (j->keys)
            free(j->keys[i]);
    }
    free(j->items);
    free(j->keys);
    free(j);
}

static int hex4(parser *p, unsigned *out)
{
    if (p->len - p->pos < 4)
        return fail_at(p, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p->s[p->pos + (size_t)i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return fail_at(p, "bad hex digit in \\u escape");
    }
    p->pos += 4;
    *out = v;
    return QSUR_OK;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Length of the well-formed UTF-8 sequence at s[0..n) (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] > 0x9F) || (c == 0xF0 && s[1] < 0x90) ||
        (c == 0xF4 && s[1] > 0x8F))
        return 0;
    return len;
}

/* p->pos is at the opening quote. An escape never produces more bytes than
 * it occupies (\uXXXX -> at most 3, a surrogate pair 12 -> 4), so the
 * decoded string fits in the raw length. */
/* Long on purpose: one loop over the string grammar's escapes (\uXXXX with surrogate pairs to
 * UTF-8). */
static int parse_string(parser *p, char **out)
{
    p->pos++;
    size_t start = p->pos;
    while (p->pos < p->len && p->s[p->pos] != '"')
        p->pos += p->s[p->pos] == '\\' ? 2 : 1;
    if (p->pos >= p->len) {
        p->pos = start - 1;
        return fail_at(p, "unterminated string");
    }
    size_t end = p->pos;
    char *o = malloc(end - start + 1);
    if (!o)
        return qsur_fail(p->err, QSUR_ERR_NOMEM, "%s: out of memory parsing JSON", p->what);
    size_t k = 0;
    p->pos = start;
    while (p->pos < end) {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c < 0x20) {
            free(o);
            return fail_at(p, "raw control character in string");
        }
        if (c >= 0x80) {
            size_t n = utf8_len((const unsigned char *)p->s + p->pos, end - p->pos);
            if (n == 0) {
                free(o);
                return fail_at(p, "invalid UTF-8 in string");
            }
            memcpy(o + k, p->s + p->pos, n);
            k += n;
            p->pos += n;
            continue;
        }
        if (c != '\\') {
            o[k++] = (char)c;
            p->pos++;
            continue;
        }
        char e = p->s[p->pos + 1];
        p->pos += 2;
        switch (e) {
        case '"': o[k++] = '"'; break;
        case '\\': o[k++] = '\\'; break;
        case '/': o[k++] = '/'; break;
        case 'b': o[k++] = '\b'; break;
        case 'f': o[k++] = '\f'; break;
        case 'n': o[k++] = '\n'; break;
        case 'r': o[k++] = '\r'; break;
        case 't': o[k++] = '\t'; break;
        case 'u': {
            unsigned cp, lo;
            int rc = hex4(p, &cp);
            if (rc == QSUR_OK && cp >= 0xD800 && cp <= 0xDBFF) {
                if (p->pos + 6 > end || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    rc = fail_at(p, "unpaired surrogate in \\u escape");
                } else {
                    p->pos += 2;
                    rc = hex4(p, &lo);
                    if (rc == QSUR_OK && (lo < 0xDC00 || lo > 0xDFFF))
                        rc = fail_at(p, "bad low surrogate in \\u escape");
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
            } else if (rc == QSUR_OK && cp >= 0xDC00 && cp <= 0xDFFF) {
                rc = fail_at(p, "unpaired surrogate in \\u escape");
            } else if (rc == QSUR_OK && cp == 0) {
                rc = fail_at(p, "\\u0000 in string");
            }
            if (rc) {
                free(o);
                return rc;
            }
            k += put_utf8(o + k, cp);
            break;
        }
        default:
            p->pos -= 2;
            free(o);
            return fail_at(p, "unknown escape in string");
        }
    }
    o[k] = '\0';
    p->pos = end + 1;
    *out = o;
    return QSUR_OK;
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

/* Grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? . Converted by
 * hand rather than strtod, whose decimal point follows the process locale
 * (a UI calling setlocale would break "1.5"). */
/* Long on purpose: one scanner for the number grammar (sign, integer, fraction, exponent) and its
 * exact conversion. */
static int parse_number(parser *p, qsur_json *j)
{
    size_t i = p->pos;
    int neg = 0;
    if (i < p->len && p->s[i] == '-') {
        neg = 1;
        i++;
    }
    if (i >= p->len || !is_digit(p->s[i]))
        return fail_at(p, "expected a digit");
    uint64_t mant = 0;
    int digits = 0, dropped = 0, exp10 = 0, int_overflow = 0, is_int = 1;
    uint64_t ival = 0;
    if (p->s[i] == '0') {
        i++;
        if (i < p->len && is_digit(p->s[i]))
            return fail_at(p, "leading zero in number");
    } else {
        while (i < p->len && is_digit(p->s[i])) {
            unsigned d = (unsigned)(p->s[i] - '0');
            if (ival > (UINT64_MAX - d) / 10)
                int_overflow = 1;
            else
                ival = ival * 10 + d;
            if (digits < 19) {
                mant = mant * 10 + d;
                digits++;
            } else {
                dropped++;
            }
            i++;
        }
    }
    exp10 = dropped;
    if (i < p->len && p->s[i] == '.') {
        is_int = 0;
        i++;
        if (i >= p->len || !is_digit(p->s[i])) {
            p->pos = i;
            return fail_at(p, "expected a digit after '.'");
        }
        while (i < p->len && is_digit(p->s[i])) {
            /* leading zeros of 0.00001 are not significant digits */
            if (digits < 19) {
                mant = mant * 10 + (unsigned)(p->s[i] - '0');
                digits += mant != 0;
                exp10--;
            }
            i++;
        }
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        is_int = 0;
        i++;
        int eneg = 0, e = 0;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-'))
            eneg = p->s[i++] == '-';
        if (i >= p->len || !is_digit(p->s[i])) {
            p->pos = i;
            return fail_at(p, "expected a digit in exponent");
        }
        while (i < p->len && is_digit(p->s[i])) {
            if (e < 100000)
                e = e * 10 + (p->s[i] - '0');
            i++;
        }
        exp10 += eneg ? -e : e;
    }
    double v = (double)mant;
    /* Powers of ten up to 1e22 are exact doubles: one correctly rounded
     * multiply or divide for the common cases (1e-05, 10000.0, 0.02). */
    if (mant == 0)
        v = 0;
    else if (exp10 >= 0 && exp10 <= 22)
        v *= pow(10, exp10);
    else if (exp10 < 0 && exp10 >= -22)
        v /= pow(10, -exp10);
    else
        v *= pow(10, exp10);
    if (!isfinite(v))
        return fail_at(p, "number out of range");
    j->number = neg ? -v : v;
    if (is_int && !int_overflow &&
        (neg ? ival <= (uint64_t)INT64_MAX + 1 : ival <= (uint64_t)INT64_MAX)) {
        j->is_int = 1;
        j->integer = neg ? (int64_t)(0 - ival) : (int64_t)ival;
    }
    p->pos = i;
    return QSUR_OK;
}

static int parse_value(parser *p, qsur_json **out, int depth);

static int push_item(parser *p, qsur_json *parent, int *cap, qsur_json *item, char *key)
{
    if (parent->count == *cap) {
        int nc = *cap ? *cap * 2 : 4;
        qsur_json **items = realloc(parent->items, (size_t)nc * sizeof *items);
        if (items)
            parent->items = items;
        char **keys = parent->keys;
        if (items && parent->type == QSUR_JSON_OBJECT) {
            keys = realloc(parent->keys, (size_t)nc * sizeof *keys);
            if (keys)
                parent->keys = keys;
        }
        if (!items || (parent->type == QSUR_JSON_OBJECT && !keys)) {
            qsur_json_free(item);
            free(key);
            return qsur_fail(p->err, QSUR_ERR_NOMEM, "%s: out of memory parsing JSON", p->what);
        }
        *cap = nc;
    }
    parent->items[parent->count] = item;
    if (parent->type == QSUR_JSON_OBJECT)
        parent->keys[parent->count] = key;
    parent->count++;
    return QSUR_OK;
}

/* Duplicate keys are found with an open-addressing set of key indices
 * (a tokenizer.json vocabulary object has 128k keys: a linear scan per key
 * would be quadratic). slot[i] = index + 1 of a key in j->keys, 0 = empty. */
typedef struct {
    int *slot;
    size_t cap;
} key_set;

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

/* Inserts keys[0..count) when the set grows; p->pos = kpos for the message. */
static int key_seen(parser *p, key_set *ks, const qsur_json *j, const char *key, size_t kpos)
{
    if ((size_t)j->count * 2 + 2 > ks->cap) {
        size_t nc = ks->cap ? ks->cap * 2 : 64;
        while ((size_t)j->count * 2 + 2 > nc)
            nc *= 2;
        int *slot = calloc(nc, sizeof *slot);
        if (!slot)
            return qsur_fail(p->err, QSUR_ERR_NOMEM, "%s: out of memory parsing JSON", p->what);
        free(ks->slot);
        ks->slot = slot;
        ks->cap = nc;
        for (int i = 0; i < j->count; i++) {
            size_t h = (size_t)hash_key(j->keys[i]) & (nc - 1);
            while (slot[h])
                h = (h + 1) & (nc - 1);
            slot[h] = i + 1;
        }
    }
    size_t h = (size_t)hash_key(key) & (ks->cap - 1);
    for (; ks->slot[h]; h = (h + 1) & (ks->cap - 1))
        if (strcmp(j->keys[ks->slot[h] - 1], key) == 0) {
            p->pos = kpos;
            return qsur_fail(p->err, QSUR_ERR_FORMAT, "%s: malformed JSON at byte %zu: duplicate key \"%s\"",
                             p->what, p->pos, key);
        }
    ks->slot[h] = j->count + 1; /* the index push_item will give this key */
    return QSUR_OK;
}

static int parse_items(parser *p, qsur_json *j, int depth, key_set *seen)
{
    int is_obj = j->type == QSUR_JSON_OBJECT;
    char close = is_obj ? '}' : ']';
    int cap = 0, rc;
    p->pos++;
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return QSUR_OK;
    }
    for (;;) {
        char *key = NULL;
        skip_ws(p);
        if (is_obj) {
            if (p->pos >= p->len || p->s[p->pos] != '"')
                return fail_at(p, "expected a string key");
            size_t kpos = p->pos;
            if ((rc = parse_string(p, &key)))
                return rc;
            if ((rc = key_seen(p, seen, j, key, kpos))) {
                free(key);
                return rc;
            }
            skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                return fail_at(p, "expected ':'");
            }
            p->pos++;
        }
        qsur_json *item = NULL;
        if ((rc = parse_value(p, &item, depth + 1))) {
            free(key);
            return rc;
        }
        if ((rc = push_item(p, j, &cap, item, key)))
            return rc;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return QSUR_OK;
        }
        return fail_at(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int parse_container(parser *p, qsur_json *j, int depth)
{
    key_set seen = {NULL, 0};
    int rc = parse_items(p, j, depth, &seen);
    free(seen.slot);
    return rc;
}

static int literal(parser *p, const char *w)
{
    size_t n = strlen(w);
    if (p->len - p->pos >= n && memcmp(p->s + p->pos, w, n) == 0) {
        p->pos += n;
        return 1;
    }
    return 0;
}

static int parse_value(parser *p, qsur_json **out, int depth)
{
    *out = NULL;
    if (depth > JSON_MAX_DEPTH)
        return fail_at(p, "nesting deeper than 64");
    skip_ws(p);
    if (p->pos >= p->len)
        return fail_at(p, "unexpected end of input");
    char c = p->s[p->pos];
    qsur_json_type t = c == '{' ? QSUR_JSON_OBJECT : c == '[' ? QSUR_JSON_ARRAY
                     : c == '"' ? QSUR_JSON_STRING : (c == 't' || c == 'f') ? QSUR_JSON_BOOL
                     : c == 'n' ? QSUR_JSON_NULL : QSUR_JSON_NUMBER;
    qsur_json *j = new_node(t);
    if (!j)
        return qsur_fail(p->err, QSUR_ERR_NOMEM, "%s: out of memory parsing JSON", p->what);
    int rc = QSUR_OK;
    switch (t) {
    case QSUR_JSON_OBJECT:
    case QSUR_JSON_ARRAY: rc = parse_container(p, j, depth); break;
    case QSUR_JSON_STRING: rc = parse_string(p, &j->string); break;
    case QSUR_JSON_BOOL:
        if (literal(p, "true"))
            j->boolean = 1;
        else if (!literal(p, "false"))
            rc = fail_at(p, "unknown literal");
        break;
    case QSUR_JSON_NULL:
        if (!literal(p, "null"))
            rc = fail_at(p, "unknown literal");
        break;
    case QSUR_JSON_NUMBER:
        if (c != '-' && !is_digit(c))
            rc = fail_at(p, "unexpected character");
        else
            rc = parse_number(p, j);
        break;
    }
    if (rc) {
        qsur_json_free(j);
        return rc;
    }
    *out = j;
    return QSUR_OK;
}

int qsur_json_parse(const char *text, size_t len, const char *what, qsur_json **out,
                    qsur_error *err)
{
    parser p = {text, 0, len, what ? what : "JSON", err};
    *out = NULL;
    qsur_json *j;
    int rc = parse_value(&p, &j, 0);
    if (rc)
        return rc;
    skip_ws(&p);
    if (p.pos != len) {
        qsur_json_free(j);
        return fail_at(&p, "trailing characters after the value");
    }
    *out = j;
    return QSUR_OK;
}

int qsur_json_parse_file(const char *path, qsur_json **out, qsur_error *err)
{
    qsur_mapped_file m;
    *out = NULL;
    int rc = qsur_mapped_file_open(&m, path, err);
    if (rc)
        return rc;
    rc = qsur_json_parse((const char *)m.data, m.size, path, out, err);
    qsur_mapped_file_close(&m);
    return rc;
}

const qsur_json *qsur_json_get(const qsur_json *obj, const char *key)
{
    if (!obj || obj->type != QSUR_JSON_OBJECT)
        return NULL;
    for (int i = 0; i < obj->count; i++)
        if (strcmp(obj->keys[i], key) == 0)
            return obj->items[i];
    return NULL;
}

int qsur_json_get_int(const qsur_json *obj, const char *key, int64_t *out)
{
    const qsur_json *v = qsur_json_get(obj, key);
    if (!v || v->type != QSUR_JSON_NUMBER || !v->is_int)
        return -1;
    *out = v->integer;
    return 0;
}

int qsur_json_get_bool(const qsur_json *obj, const char *key, int *out)
{
    const qsur_json *v = qsur_json_get(obj, key);
    if (!v || v->type != QSUR_JSON_BOOL)
        return -1;
    *out = v->boolean;
    return 0;
}

const char *qsur_json_get_string(const qsur_json *obj, const char *key)
{
    const qsur_json *v = qsur_json_get(obj, key);
    return v && v->type == QSUR_JSON_STRING ? v->string : NULL;
}

const char *qsur_json_type_name(qsur_json_type t)
{
    static const char *names[] = {"null", "boolean", "number", "string", "array", "object"};
    return (unsigned)t < 6 ? names[t] : "?";
}
