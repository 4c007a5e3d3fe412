/* safetensors reader (strictly validated header, mmap'd data) and writer. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/atomic_file.h"
#include "qsur/half.h"
#include "qsur/safetensors.h"

#define ST_CHUNK (1 << 20)  /* elements converted between progress ticks */

const char *qsur_dtype_name(qsur_dtype d)
{
    return d == QSUR_DTYPE_F32 ? "F32" : d == QSUR_DTYPE_F16 ? "F16" : d == QSUR_DTYPE_BF16 ? "BF16"
         : d == QSUR_DTYPE_I8 ? "I8" : d == QSUR_DTYPE_U8 ? "U8" : d == QSUR_DTYPE_I32 ? "I32" : "?";
}

int qsur_dtype_size(qsur_dtype d)
{
    return d == QSUR_DTYPE_F32 || d == QSUR_DTYPE_I32 ? 4 : d == QSUR_DTYPE_I8 || d == QSUR_DTYPE_U8 ? 1 : 2;
}

void qsur_safetensors_close(qsur_safetensors *st)
{
    if (!st)
        return;
    qsur_mapped_file_close(&st->map);
    qsur_json_free(st->header);
    free(st->entries);
    free(st->path);
    free(st);
}

static int cmp_begin(const void *a, const void *b)
{
    const qsur_st_entry *x = *(const qsur_st_entry *const *)a, *y = *(const qsur_st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int parse_entry(const char *path, const char *name, const qsur_json *v,
                       uint64_t data_len, qsur_st_entry *e, qsur_error *err)
{
    if (v->type != QSUR_JSON_OBJECT)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: header entry is a %s (expected "
                         "an object)", path, name, qsur_json_type_name(v->type));
    for (int i = 0; i < v->count; i++)
        if (strcmp(v->keys[i], "dtype") && strcmp(v->keys[i], "shape") &&
            strcmp(v->keys[i], "data_offsets"))
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: unexpected key \"%s\" "
                             "(expected dtype, shape, data_offsets)", path, name, v->keys[i]);
    const char *dt = qsur_json_get_string(v, "dtype");
    const qsur_json *shape = qsur_json_get(v, "shape");
    const qsur_json *offs = qsur_json_get(v, "data_offsets");
    if (!dt || !shape || !offs)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: missing or non-string %s",
                         path, name, !dt ? "dtype" : !shape ? "shape" : "data_offsets");
    e->name = name;
    if (strcmp(dt, "F32") == 0)
        e->dtype = QSUR_DTYPE_F32;
    else if (strcmp(dt, "F16") == 0)
        e->dtype = QSUR_DTYPE_F16;
    else if (strcmp(dt, "BF16") == 0)
        e->dtype = QSUR_DTYPE_BF16;
    else if (strcmp(dt, "I8") == 0)
        e->dtype = QSUR_DTYPE_I8;
    else if (strcmp(dt, "U8") == 0)
        e->dtype = QSUR_DTYPE_U8;
    else if (strcmp(dt, "I32") == 0)
        e->dtype = QSUR_DTYPE_I32;
    else
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: dtype %s not supported "
                         "(expected F32, F16, BF16, I8, U8 or I32)", path, name, dt);
    if (shape->type != QSUR_JSON_ARRAY || shape->count > QSUR_ST_MAX_DIMS)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: shape must be an array of at "
                         "most %d integers", path, name, QSUR_ST_MAX_DIMS);
    e->ndim = shape->count;
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < shape->count; i++) {
        const qsur_json *d = shape->items[i];
        if (d->type != QSUR_JSON_NUMBER || !d->is_int || d->integer < 0)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a "
                             "non-negative 64-bit integer", path, name, i);
        e->shape[i] = d->integer;
        uint64_t u = (uint64_t)d->integer;
        if (u != 0 && numel > UINT64_MAX / u)
            overflow = 1;
        else
            numel *= u;
    }
    if (offs->type != QSUR_JSON_ARRAY || offs->count != 2)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: data_offsets must be [begin, "
                         "end]", path, name);
    for (int i = 0; i < 2; i++)
        if (offs->items[i]->type != QSUR_JSON_NUMBER || !offs->items[i]->is_int ||
            offs->items[i]->integer < 0)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: data_offsets[%d] is not a "
                             "non-negative integer", path, name, i);
    e->begin = (uint64_t)offs->items[0]->integer;
    e->end = (uint64_t)offs->items[1]->integer;
    if (e->begin > e->end)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: data_offsets [%llu, %llu] has "
                         "begin > end", path, name, (unsigned long long)e->begin,
                         (unsigned long long)e->end);
    if (e->end > data_len)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: data_offsets end %llu past the "
                         "end of the data section (%llu bytes)", path, name,
                         (unsigned long long)e->end, (unsigned long long)data_len);
    uint64_t isz = (uint64_t)qsur_dtype_size(e->dtype);
    if (overflow || numel > UINT64_MAX / isz)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: shape element count overflows "
                         "64 bits", path, name);
    if (numel * isz != e->end - e->begin)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: shape x %s size = %llu bytes "
                         "but data_offsets span %llu", path, name, dt,
                         (unsigned long long)(numel * isz),
                         (unsigned long long)(e->end - e->begin));
    return QSUR_OK;
}

static int validate(qsur_safetensors *st, qsur_error *err)
{
    const char *path = st->path;
    const unsigned char *d = st->map.data;
    size_t size = st->map.size;
    if (size == 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: empty file (expected a safetensors "
                         "8-byte header length)", path);
    if (size < 8)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %zu bytes, shorter than the 8-byte "
                         "safetensors header length", path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | d[i];
    if (n > size - 8)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: safetensors header length %llu runs past "
                         "the end of the file (%zu bytes)", path, (unsigned long long)n, size);
    if (n > QSUR_ST_MAX_HEADER)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: safetensors header length %llu exceeds "
                         "the 100 MB limit", path, (unsigned long long)n);
    if (n < 2)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: safetensors header length %llu (expected "
                         "a JSON object)", path, (unsigned long long)n);
    st->data_start = 8 + n;
    uint64_t data_len = size - 8 - n;
    int rc = qsur_json_parse((const char *)d + 8, (size_t)n, path, &st->header, err);
    if (rc)
        return rc;
    const qsur_json *h = st->header;
    if (h->type != QSUR_JSON_OBJECT)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: safetensors header is a JSON %s (expected "
                         "an object)", path, qsur_json_type_name(h->type));
    st->entries = calloc((size_t)h->count + 1, sizeof *st->entries);
    if (!st->entries)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < h->count; i++) {
        if (strcmp(h->keys[i], "__metadata__") == 0) {
            const qsur_json *m = h->items[i];
            if (m->type != QSUR_JSON_OBJECT)
                return qsur_fail(err, QSUR_ERR_FORMAT, "%s: __metadata__ is a %s (expected an "
                                 "object of strings)", path, qsur_json_type_name(m->type));
            for (int k = 0; k < m->count; k++)
                if (m->items[k]->type != QSUR_JSON_STRING)
                    return qsur_fail(err, QSUR_ERR_FORMAT, "%s: __metadata__ \"%s\" is a %s "
                                     "(expected a string)", path, m->keys[k],
                                     qsur_json_type_name(m->items[k]->type));
            st->metadata = m;
            continue;
        }
        if ((rc = parse_entry(path, h->keys[i], h->items[i], data_len,
                              &st->entries[st->count], err)))
            return rc;
        st->count++;
    }
    /* Overlap and gaps: sorted by begin, each range must start where the
     * previous one ended and the last must end at the end of the file. */
    qsur_st_entry **by = malloc(((size_t)st->count + 1) * sizeof *by);
    if (!by)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < st->count; i++)
        by[i] = &st->entries[i];
    qsort(by, (size_t)st->count, sizeof *by, cmp_begin);
    uint64_t at = 0;
    for (int i = 0; i < st->count && rc == QSUR_OK; i++) {
        if (by[i]->begin < at)
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensors %s and %s overlap in the data "
                           "section (byte %llu)", path, by[i - 1]->name, by[i]->name,
                           (unsigned long long)by[i]->begin);
        else if (by[i]->begin > at)
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: gap of %llu unused bytes before tensor "
                           "%s in the data section", path,
                           (unsigned long long)(by[i]->begin - at), by[i]->name);
        at = by[i]->end;
    }
    free(by);
    if (rc == QSUR_OK && at != data_len)
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: data section has %llu bytes but the tensors "
                       "cover %llu", path, (unsigned long long)data_len, (unsigned long long)at);
    return rc;
}

int qsur_safetensors_open(qsur_safetensors **out, const char *path, qsur_error *err)
{
    *out = NULL;
    qsur_safetensors *st = calloc(1, sizeof *st);
    size_t n = strlen(path) + 1;
    if (st)
        st->path = malloc(n);
    if (!st || !st->path) {
        free(st);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(st->path, path, n);
    int rc = qsur_mapped_file_open(&st->map, path, err);
    if (rc == QSUR_OK)
        rc = validate(st, err);
    if (rc) {
        qsur_safetensors_close(st);
        return rc;
    }
    *out = st;
    return QSUR_OK;
}

int qsur_safetensors_find(const qsur_safetensors *st, const char *name)
{
    for (int i = 0; i < st->count; i++)
        if (strcmp(st->entries[i].name, name) == 0)
            return i;
    return -1;
}

const char *qsur_safetensors_meta(const qsur_safetensors *st, const char *key)
{
    return qsur_json_get_string(st->metadata, key);
}

int qsur_safetensors_read_i32(const qsur_safetensors *st, int i, int32_t **out, int64_t *n,
                              qsur_error *err)
{
    *out = NULL;
    *n = 0;
    const qsur_st_entry *e = &st->entries[i];
    if (e->dtype != QSUR_DTYPE_I32)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s is %s (expected I32)", st->path,
                         e->name, qsur_dtype_name(e->dtype));
    size_t count = (size_t)((e->end - e->begin) / 4);
    int32_t *v = malloc(count ? count * sizeof *v : 1);
    if (!v)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: tensor %s: out of memory", st->path, e->name);
    const unsigned char *p = st->map.data + st->data_start + e->begin;
    for (size_t k = 0; k < count; k++) {
        uint32_t u = (uint32_t)p[4 * k] | (uint32_t)p[4 * k + 1] << 8 |
                     (uint32_t)p[4 * k + 2] << 16 | (uint32_t)p[4 * k + 3] << 24;
        memcpy(&v[k], &u, 4);
    }
    *out = v;
    *n = (int64_t)count;
    return QSUR_OK;
}

int qsur_safetensors_read_tensor(const qsur_safetensors *st, int i, const char *name,
                                 qsur_tensor **out, const qsur_progress *progress,
                                 qsur_error *err)
{
    *out = NULL;
    const qsur_st_entry *e = &st->entries[i];
    if (!name)
        name = e->name;
    if (strlen(name) >= QSUR_NAME_MAX)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor name %.40s... longer than %d "
                         "characters", st->path, name, QSUR_NAME_MAX - 1);
    if (e->ndim < 1 || e->ndim > QSUR_MAX_DIMS)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s has %d dimensions (expected "
                         "1..%d)", st->path, e->name, e->ndim, QSUR_MAX_DIMS);
    if (e->begin == e->end)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s is zero-size", st->path, e->name);
    if (e->dtype == QSUR_DTYPE_I32) /* packed words, not values: qsur_safetensors_read_i32 */
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s: dtype I32 not supported here "
                         "(expected F32, F16, BF16, I8 or U8)", st->path, e->name);
    qsur_tensor *t;
    int rc = qsur_tensor_new(&t, name, e->ndim, e->shape, err);
    if (rc)
        return rc;
    size_t numel = (size_t)qsur_tensor_numel(t);
    const unsigned char *p = st->map.data + st->data_start + e->begin;
    for (size_t i0 = 0; i0 < numel; i0 += ST_CHUNK) {
        size_t i1 = numel - i0 < ST_CHUNK ? numel : i0 + ST_CHUNK;
        for (size_t k = i0; k < i1; k++) {
            if (e->dtype == QSUR_DTYPE_F32) {
                const unsigned char *q = p + 4 * k;
                uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                             (uint32_t)q[3] << 24;
                memcpy(&t->data[k], &u, 4);
            } else if (e->dtype == QSUR_DTYPE_I8) {
                t->data[k] = (float)(int8_t)p[k];
            } else if (e->dtype == QSUR_DTYPE_U8) {
                t->data[k] = (float)p[k];
            } else {
                uint16_t h = (uint16_t)(p[2 * k] | p[2 * k + 1] << 8);
                t->data[k] = e->dtype == QSUR_DTYPE_F16 ? qsur_f16_to_f32(h) : qsur_bf16_to_f32(h);
            }
        }
        int64_t bad = qsur_find_nonfinite(t->data + i0, (int64_t)(i1 - i0));
        if (bad >= 0) {
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "%s: tensor %s has a non-finite value (%g) "
                           "at element %lld (expected finite floats)", st->path, e->name,
                           (double)t->data[i0 + (size_t)bad], (long long)(i0 + (size_t)bad));
        } else {
            rc = qsur_progress_tick(progress, (double)i1 / (double)numel, "load safetensors",
                                    NAN, err);
        }
        if (rc) {
            qsur_tensor_free(t);
            return rc;
        }
    }
    *out = t;
    return QSUR_OK;
}

int qsur_safetensors_load(qsur_workspace *ws, const char *path, const char *prefix,
                          int *n_loaded, const qsur_progress *progress, qsur_error *err)
{
    if (n_loaded)
        *n_loaded = 0;
    qsur_safetensors *st;
    int rc = qsur_safetensors_open(&st, path, err);
    if (rc)
        return rc;
    if (st->count == 0) {
        qsur_safetensors_close(st);
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: safetensors file holds no tensors", path);
    }
    qsur_tensor **got = calloc((size_t)st->count, sizeof *got);
    if (!got) {
        qsur_safetensors_close(st);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    }
    int n = 0;
    for (; n < st->count && rc == QSUR_OK; n++) {
        char name[QSUR_NAME_MAX];
        int w = snprintf(name, sizeof name, "%s%s", prefix ? prefix : "", st->entries[n].name);
        if (w < 0 || w >= QSUR_NAME_MAX) {
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor name %s%.40s... longer than %d "
                           "characters", path, prefix ? prefix : "", st->entries[n].name,
                           QSUR_NAME_MAX - 1);
            break;
        }
        rc = qsur_safetensors_read_tensor(st, n, name, &got[n], progress, err);
    }
    qsur_safetensors_close(st);
    for (int i = 0; i < n && rc == QSUR_OK; i++) {
        qsur_tensor *t = got[i];
        got[i] = NULL;
        rc = qsur_workspace_put(ws, t, err);
    }
    for (int i = 0; i < n; i++)
        qsur_tensor_free(got[i]);
    free(got);
    if (rc == QSUR_OK && n_loaded)
        *n_loaded = n;
    return rc;
}

/* ---- writer ------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
    int oom;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void sb_printf(strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void sb_json_string(strbuf *b, const char *s)
{
    sb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            sb_add(b, e, 2);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_add(b, (const char *)&c, 1);
        }
    }
    sb_add(b, "\"", 1);
}

/* Checks and writes n values of tensor `name` in dtype dt. */
static int write_values(qsur_atomic_file *f, qsur_dtype dt, const float *x, int64_t n,
                        const char *path, const char *name, qsur_error *err)
{
    int64_t bad = dt == QSUR_DTYPE_I32 ? -1 : qsur_find_nonfinite(x, n);
    if (bad >= 0)
        return qsur_fail(err, QSUR_ERR_NUMERIC, "%s: tensor %s has a non-finite value at "
                         "element %lld", path, name, (long long)bad);
    if (dt == QSUR_DTYPE_F16)
        for (int64_t k = 0; k < n; k++)
            if (fabsf(x[k]) >= 65520.0f)  /* rounds to Inf in binary16 */
                return qsur_fail(err, QSUR_ERR_NUMERIC, "%s: tensor %s: value %g at "
                                 "element %lld overflows F16 (max 65504)", path, name,
                                 (double)x[k], (long long)k);
    if (dt == QSUR_DTYPE_I8 || dt == QSUR_DTYPE_U8) {
        float lo = dt == QSUR_DTYPE_I8 ? -128.0f : 0.0f, hi = dt == QSUR_DTYPE_I8 ? 127.0f : 255.0f;
        for (int64_t k = 0; k < n; k++)
            if (x[k] != floorf(x[k]) || x[k] < lo || x[k] > hi)
                return qsur_fail(err, QSUR_ERR_ARG, "%s: tensor %s: value %g at element %lld "
                                 "is not an integer in [%g, %g] (dtype %s)", path, name,
                                 (double)x[k], (long long)k, (double)lo, (double)hi,
                                 qsur_dtype_name(dt));
    }
    int rc = QSUR_OK;
    if (dt == QSUR_DTYPE_F32 || dt == QSUR_DTYPE_I32) /* I32: the bits, as stored */
        return qsur_atomic_write_f32le(f, x, (size_t)n, err);
    unsigned char tmp[4096];
    int es = qsur_dtype_size(dt);
    size_t per = sizeof tmp / (size_t)es;
    for (size_t k0 = 0; k0 < (size_t)n && rc == QSUR_OK; k0 += per) {
        size_t k1 = (size_t)n - k0 < per ? (size_t)n : k0 + per;
        for (size_t k = k0; k < k1; k++) {
            if (es == 1) { /* integer-valued, range checked above */
                tmp[k - k0] = dt == QSUR_DTYPE_I8 ? (unsigned char)(int8_t)x[k] : (unsigned char)x[k];
                continue;
            }
            uint16_t h = dt == QSUR_DTYPE_F16 ? qsur_f32_to_f16(x[k]) : qsur_f32_to_bf16(x[k]);
            tmp[2 * (k - k0)] = (unsigned char)h;
            tmp[2 * (k - k0) + 1] = (unsigned char)(h >> 8);
        }
        rc = qsur_atomic_write(f, tmp, (k1 - k0) * (size_t)es, err);
    }
    return rc;
}

int64_t qsur_st_desc_bytes(const qsur_st_desc *d)
{
    int64_t n = qsur_dtype_size(d->dtype);
    for (int k = 0; k < d->ndim; k++)
        n *= d->shape[k];
    return n;
}

static int64_t desc_numel(const qsur_st_desc *d)
{
    int64_t n = 1;
    for (int k = 0; k < d->ndim; k++)
        n *= d->shape[k];
    return n;
}

int qsur_st_stream_open(qsur_st_stream *w, const char *path, const qsur_st_desc *d, int count,
                        const char *const *meta_kv, int meta_count, qsur_error *err)
{
    memset(w, 0, sizeof *w);
    for (int i = 0; i < count; i++) {
        qsur_dtype dt = d[i].dtype;
        if (dt != QSUR_DTYPE_F32 && dt != QSUR_DTYPE_F16 && dt != QSUR_DTYPE_BF16 &&
            dt != QSUR_DTYPE_I8 && dt != QSUR_DTYPE_U8 && dt != QSUR_DTYPE_I32)
            return qsur_fail(err, QSUR_ERR_ARG, "%s: tensor %s: unknown dtype %d", path,
                             d[i].name, (int)dt);
        if (!d[i].name[0] || strcmp(d[i].name, "__metadata__") == 0)
            return qsur_fail(err, QSUR_ERR_ARG, "%s: tensor name \"%s\" not allowed", path,
                             d[i].name);
        if (d[i].ndim < 0 || d[i].ndim > QSUR_MAX_DIMS)
            return qsur_fail(err, QSUR_ERR_ARG, "%s: tensor %s: %d dimensions", path, d[i].name,
                             d[i].ndim);
        for (int k = 0; k < i; k++)
            if (strcmp(d[k].name, d[i].name) == 0)
                return qsur_fail(err, QSUR_ERR_ARG, "%s: duplicate tensor name %s", path,
                                 d[i].name);
    }
    for (int k = 0; k < meta_count; k++)
        if (!meta_kv[2 * k] || !meta_kv[2 * k + 1])
            return qsur_fail(err, QSUR_ERR_ARG, "%s: metadata entry %d is NULL", path, k);
    strbuf b = {0};
    sb_add(&b, "{", 1);
    if (meta_count > 0) {
        sb_add(&b, "\"__metadata__\":{", 16);
        for (int k = 0; k < meta_count; k++) {
            if (k)
                sb_add(&b, ",", 1);
            sb_json_string(&b, meta_kv[2 * k]);
            sb_add(&b, ":", 1);
            sb_json_string(&b, meta_kv[2 * k + 1]);
        }
        sb_add(&b, "}", 1);
    }
    uint64_t off = 0;
    for (int i = 0; i < count; i++) {
        if (i || meta_count > 0)
            sb_add(&b, ",", 1);
        sb_json_string(&b, d[i].name);
        sb_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", qsur_dtype_name(d[i].dtype));
        for (int k = 0; k < d[i].ndim; k++)
            sb_printf(&b, k ? ",%lld" : "%lld", (long long)d[i].shape[k]);
        uint64_t bytes = (uint64_t)qsur_st_desc_bytes(&d[i]);
        sb_printf(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                  (unsigned long long)(off + bytes));
        off += bytes;
    }
    sb_add(&b, "}", 1);
    while (!b.oom && b.len % 8)  /* the data section starts 8-byte aligned */
        sb_add(&b, " ", 1);
    if (b.oom) {
        free(b.s);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory building the header", path);
    }
    unsigned char len8[8];
    for (int k = 0; k < 8; k++)
        len8[k] = (unsigned char)((uint64_t)b.len >> (8 * k));
    w->desc = d;
    w->count = count;
    int rc = qsur_atomic_open(&w->f, path, err);
    if (rc) {
        free(b.s);
        return rc;
    }
    w->open = 1;
    while (w->cur < count && desc_numel(&d[w->cur]) == 0)
        w->cur++;
    if ((rc = qsur_atomic_write(&w->f, len8, 8, err)) == QSUR_OK)
        rc = qsur_atomic_write(&w->f, b.s, b.len, err);
    free(b.s);
    if (rc)
        qsur_st_stream_abort(w);
    return rc;
}

int qsur_st_stream_put(qsur_st_stream *w, const float *x, int64_t n, qsur_error *err)
{
    while (n > 0) {
        if (w->cur >= w->count)
            return qsur_fail(err, QSUR_ERR_ARG, "%s: more values than the header declares",
                             w->f.path);
        const qsur_st_desc *d = &w->desc[w->cur];
        int64_t left = desc_numel(d) - w->done, k = n < left ? n : left;
        int rc = write_values(&w->f, d->dtype, x, k, w->f.path, d->name, err);
        if (rc)
            return rc;
        x += k, n -= k, w->done += k;
        if (w->done == desc_numel(d))
            w->cur++, w->done = 0;
        while (w->cur < w->count && desc_numel(&w->desc[w->cur]) == 0)
            w->cur++;
    }
    return QSUR_OK;
}

int qsur_st_stream_commit(qsur_st_stream *w, qsur_error *err)
{
    if (w->cur < w->count) {
        int rc = qsur_fail(err, QSUR_ERR_ARG, "%s: tensor %s not written", w->f.path,
                           w->desc[w->cur].name);
        qsur_st_stream_abort(w);
        return rc;
    }
    w->open = 0;
    return qsur_atomic_commit(&w->f, err);
}

void qsur_st_stream_abort(qsur_st_stream *w)
{
    if (w->open)
        qsur_atomic_abort(&w->f);
    w->open = 0;
}

int qsur_safetensors_write(const char *path, const qsur_tensor *const *tensors, int count,
                           const qsur_dtype *dtypes, const char *const *meta_kv,
                           int meta_count, const qsur_progress *progress, qsur_error *err)
{
    qsur_st_desc *d = calloc((size_t)count + 1, sizeof *d);
    if (!d)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    for (int i = 0; i < count; i++) {
        d[i].name = tensors[i]->name;
        d[i].dtype = dtypes ? dtypes[i] : QSUR_DTYPE_F32;
        d[i].ndim = tensors[i]->ndim;
        for (int k = 0; k < tensors[i]->ndim; k++)
            d[i].shape[k] = tensors[i]->shape[k];
    }
    /* values are checked before the file is created */
    int rc = QSUR_OK;
    for (int i = 0; i < count && !rc; i++) {
        int64_t bad = d[i].dtype == QSUR_DTYPE_I32 ? -1
                    : qsur_find_nonfinite(tensors[i]->data, qsur_tensor_numel(tensors[i]));
        if (bad >= 0)
            rc = qsur_fail(err, QSUR_ERR_NUMERIC, "%s: tensor %s has a non-finite value at "
                           "element %lld", path, tensors[i]->name, (long long)bad);
    }
    qsur_st_stream w;
    if (!rc)
        rc = qsur_st_stream_open(&w, path, d, count, meta_kv, meta_count, err);
    for (int i = 0; i < count && !rc; i++) {
        rc = qsur_st_stream_put(&w, tensors[i]->data, qsur_tensor_numel(tensors[i]), err);
        if (!rc)
            rc = qsur_progress_tick(progress, (double)(i + 1) / count, "write safetensors", NAN,
                                    err);
        if (rc)
            qsur_st_stream_abort(&w);
    }
    if (!rc)
        rc = qsur_st_stream_commit(&w, err);
    free(d);
    return rc;
}
