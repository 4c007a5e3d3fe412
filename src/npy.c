/* NumPy .npy reader and writer (see npy.h for the layout). The header is a
 * Python dict literal; it is parsed strictly for exactly the three keys numpy
 * writes, so a file we accept is one we understand completely. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/atomic_file.h"
#include "qsur/half.h"
#include "qsur/mapped_file.h"
#include "qsur/npy.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_CHUNK (1 << 20)  /* elements converted between progress ticks */

typedef struct {
    const char *s, *end;
    const char *path;
    qsur_error *err;
} hdr_cursor;

static void skip_ws(hdr_cursor *c)
{
    while (c->s < c->end && (*c->s == ' ' || *c->s == '\t' || *c->s == '\n' || *c->s == '\r'))
        c->s++;
}

static int expect_char(hdr_cursor *c, char ch)
{
    skip_ws(c);
    if (c->s >= c->end || *c->s != ch)
        return qsur_fail(c->err, QSUR_ERR_FORMAT, "%s: .npy header: expected '%c'", c->path, ch);
    c->s++;
    return QSUR_OK;
}

/* A quoted Python string without escapes (numpy never writes any here). */
static int read_str(hdr_cursor *c, char *out, size_t n)
{
    skip_ws(c);
    if (c->s >= c->end || (*c->s != '\'' && *c->s != '"'))
        return qsur_fail(c->err, QSUR_ERR_FORMAT, "%s: .npy header: expected a quoted string",
                         c->path);
    char q = *c->s++;
    size_t k = 0;
    while (c->s < c->end && *c->s != q) {
        unsigned char ch = (unsigned char)*c->s;
        if (ch == '\\' || ch < 0x20 || ch >= 0x7f || k + 1 >= n)
            return qsur_fail(c->err, QSUR_ERR_FORMAT,
                             "%s: .npy header: unsupported character or overlong string", c->path);
        out[k++] = *c->s++;
    }
    if (c->s >= c->end)
        return qsur_fail(c->err, QSUR_ERR_FORMAT, "%s: .npy header: unterminated string",
                         c->path);
    c->s++;
    out[k] = '\0';
    return QSUR_OK;
}

static int word_is(hdr_cursor *c, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(c->end - c->s) >= n && memcmp(c->s, w, n) == 0) {
        c->s += n;
        return 1;
    }
    return 0;
}

static int read_shape(hdr_cursor *c, int *ndim, int64_t *shape)
{
    int rc = expect_char(c, '(');
    if (rc)
        return rc;
    *ndim = 0;
    for (;;) {
        skip_ws(c);
        if (c->s < c->end && *c->s == ')') {
            c->s++;
            return QSUR_OK;
        }
        if (c->s >= c->end || *c->s < '0' || *c->s > '9')
            return qsur_fail(c->err, QSUR_ERR_FORMAT,
                             "%s: .npy header: shape must be a tuple of non-negative integers",
                             c->path);
        int64_t v = 0;
        while (c->s < c->end && *c->s >= '0' && *c->s <= '9') {
            if (v > (INT64_MAX - 9) / 10)
                return qsur_fail(c->err, QSUR_ERR_FORMAT, "%s: .npy shape dimension overflows",
                                 c->path);
            v = v * 10 + (*c->s++ - '0');
        }
        if (c->s < c->end && (*c->s == 'L'))
            c->s++;  /* Python 2 longs */
        if (*ndim >= QSUR_MAX_DIMS)
            return qsur_fail(c->err, QSUR_ERR_FORMAT,
                             "%s: .npy array has more than %d dimensions (expected 1..%d)",
                             c->path, QSUR_MAX_DIMS, QSUR_MAX_DIMS);
        shape[(*ndim)++] = v;
        skip_ws(c);
        if (c->s < c->end && *c->s == ',')
            c->s++;
        else if (c->s >= c->end || *c->s != ')')
            return qsur_fail(c->err, QSUR_ERR_FORMAT, "%s: .npy header: malformed shape tuple",
                             c->path);
    }
}

static void default_name(const char *path, char *out)
{
    const char *b = qsur_path_basename(path);
    const char *dot = strrchr(b, '.');
    size_t n = dot && dot != b ? (size_t)(dot - b) : strlen(b);
    if (n >= QSUR_NAME_MAX)
        n = QSUR_NAME_MAX - 1;
    memcpy(out, b, n);
    out[n] = '\0';
}

/* Long on purpose: one linear walk through the header's grammar (magic, version, dict keys,
 * shape), each refusal with its own message. */
int qsur_npy_parse_header(const unsigned char *data, size_t size, const char *path,
                          qsur_npy_header *h, qsur_error *err)
{
    memset(h, 0, sizeof *h);
    if (size == 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: empty file (expected a .npy header)", path);
    if (size < 10)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: %zu bytes, shorter than the 10-byte .npy preamble", path, size);
    if (memcmp(data, NPY_MAGIC, 6) != 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: bad magic (expected \\x93NUMPY for .npy)",
                         path);
    int major = data[6];
    size_t hlen, hstart;
    if (major == 1) {
        hlen = (size_t)data[8] | (size_t)data[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12)
            return qsur_fail(err, QSUR_ERR_FORMAT,
                             "%s: %zu bytes, shorter than the 12-byte .npy v%d preamble", path,
                             size, major);
        hlen = (size_t)data[8] | (size_t)data[9] << 8 | (size_t)data[10] << 16 |
               (size_t)data[11] << 24;
        hstart = 12;
    } else {
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: .npy format version %d.%d (expected 1.0, 2.0 or 3.0)", path,
                         major, data[7]);
    }
    if (hlen > size - hstart)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: .npy header length %zu runs past the end of the file (%zu bytes)",
                         path, hlen, size);
    /* numpy evaluates the header as a Python literal: a NUL byte is a syntax
     * error there, and so is anything but whitespace after the closing '}' */
    if (memchr(data + hstart, '\0', hlen))
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: .npy header contains a NUL byte", path);

    hdr_cursor c = {(const char *)data + hstart, (const char *)data + hstart + hlen, path, err};
    int fortran = -1, have_descr = 0;
    h->ndim = -1;
    int rc = expect_char(&c, '{');
    if (rc)
        return rc;
    for (;;) {
        skip_ws(&c);
        if (c.s < c.end && *c.s == '}') {
            c.s++;
            break;
        }
        char key[32];
        if ((rc = read_str(&c, key, sizeof key)) || (rc = expect_char(&c, ':')))
            return rc;
        skip_ws(&c);
        if (strcmp(key, "descr") == 0 && !have_descr) {
            if ((rc = read_str(&c, h->descr, sizeof h->descr)))
                return rc;
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0 && fortran < 0) {
            if (word_is(&c, "True"))
                fortran = 1;
            else if (word_is(&c, "False"))
                fortran = 0;
            else
                return qsur_fail(err, QSUR_ERR_FORMAT,
                                 "%s: .npy header: fortran_order must be True or False", path);
        } else if (strcmp(key, "shape") == 0 && h->ndim < 0) {
            if ((rc = read_shape(&c, &h->ndim, h->shape)))
                return rc;
        } else {
            return qsur_fail(err, QSUR_ERR_FORMAT,
                             "%s: .npy header: unexpected or repeated key '%s' (expected descr, "
                             "fortran_order, shape once each)", path, key);
        }
        skip_ws(&c);
        if (c.s < c.end && *c.s == ',')
            c.s++;
        else if (c.s >= c.end || *c.s != '}')
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: .npy header: expected ',' or '}'", path);
    }
    skip_ws(&c);
    if (c.s < c.end)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: .npy header: unexpected '%c' after the closing '}' (numpy rejects "
                         "the file)", path, *c.s >= 0x20 && *c.s < 0x7f ? *c.s : '?');
    if (!have_descr || fortran < 0 || h->ndim < 0)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: .npy header lacks %s (expected descr, fortran_order and shape)",
                         path, !have_descr ? "descr" : fortran < 0 ? "fortran_order" : "shape");
    if (fortran)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: fortran_order True not supported (expected C order; save with "
                         "np.ascontiguousarray)", path);
    if (h->ndim == 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: .npy scalar with 0 dimensions (expected 1..%d)",
                         path, QSUR_MAX_DIMS);
    h->numel = 1;
    for (int i = 0; i < h->ndim; i++) {
        size_t u = strlen(h->shape_text);
        snprintf(h->shape_text + u, sizeof h->shape_text - u, i ? "x%lld" : "%lld",
                 (long long)h->shape[i]);
        if (qsur_mul_size(h->numel, (size_t)h->shape[i], &h->numel) != 0)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: .npy shape %s overflows", path,
                             h->shape_text);
    }
    if (h->numel == 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: zero-size array (shape %s)", path,
                         h->shape_text);
    h->data_offset = hstart + hlen;
    return QSUR_OK;
}

int qsur_npy_check_data(const qsur_npy_header *h, size_t item, uint64_t file_size,
                        const char *path, qsur_error *err)
{
    size_t bytes;
    if (qsur_mul_size(h->numel, item, &bytes) != 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: .npy shape %s overflows", path, h->shape_text);
    if (file_size - h->data_offset != bytes)
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: shape %s x %zu-byte '%s' needs %zu data bytes but the file holds "
                         "%llu", path, h->shape_text, item, h->descr, bytes,
                         (unsigned long long)(file_size - h->data_offset));
    return QSUR_OK;
}

/* Long on purpose: header, data check and the chunked per-dtype conversion loop read top to bottom
 * as the format does. */
int qsur_npy_parse(const unsigned char *data, size_t size, const char *path,
                   const char *name, qsur_tensor **out, const qsur_progress *progress,
                   qsur_error *err)
{
    *out = NULL;
    qsur_npy_header h;
    int rc = qsur_npy_parse_header(data, size, path, &h, err);
    if (rc)
        return rc;
    const char *descr = h.descr;
    size_t item;
    if (strcmp(descr, "<f4") == 0)
        item = 4;
    else if (strcmp(descr, "<f8") == 0)
        item = 8;
    else if (strcmp(descr, "<f2") == 0)
        item = 2;
    else if (descr[0] == '>')
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: big-endian dtype '%s' not supported (expected '<f4', '<f8' or "
                         "'<f2')", path, descr);
    else if (strchr(descr, 'O'))
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: object array (dtype '%s') not supported (expected '<f4', '<f8' "
                         "or '<f2')", path, descr);
    else
        return qsur_fail(err, QSUR_ERR_FORMAT,
                         "%s: dtype '%s' not supported (expected '<f4', '<f8' or '<f2')", path,
                         descr);
    if ((rc = qsur_npy_check_data(&h, item, size, path, err)))
        return rc;
    size_t numel = h.numel, dstart = h.data_offset;
    int ndim = h.ndim;
    const int64_t *shape = h.shape;

    char nm[QSUR_NAME_MAX];
    if (name)
        snprintf(nm, sizeof nm, "%s", name);
    else
        default_name(path, nm);
    qsur_tensor *t;
    if ((rc = qsur_tensor_new(&t, nm, ndim, shape, err)))
        return rc;
    const unsigned char *p = data + dstart;
    for (size_t i0 = 0; i0 < numel; i0 += NPY_CHUNK) {
        size_t i1 = numel - i0 < NPY_CHUNK ? numel : i0 + NPY_CHUNK;
        for (size_t i = i0; i < i1; i++) {
            const unsigned char *q = p + i * item;
            if (item == 4) {
                uint32_t u = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16 |
                             (uint32_t)q[3] << 24;
                memcpy(&t->data[i], &u, 4);
            } else if (item == 8) {
                uint64_t u = 0;
                for (int b = 7; b >= 0; b--)
                    u = u << 8 | q[b];
                double d;
                memcpy(&d, &u, 8);
                /* a finite double beyond float range would become Inf: refuse it */
                t->data[i] = isfinite(d) && fabs(d) > 3.4028234663852886e38 ? (float)INFINITY
                                                                            : (float)d;
            } else {
                t->data[i] = qsur_f16_to_f32((uint16_t)(q[0] | q[1] << 8));
            }
        }
        int64_t bad = qsur_find_nonfinite(t->data + i0, (int64_t)(i1 - i0));
        if (bad >= 0) {
            rc = qsur_fail(err, QSUR_ERR_NUMERIC,
                           "%s: non-finite value (%g) at element %lld (expected finite floats)",
                           path, (double)t->data[i0 + (size_t)bad], (long long)(i0 + (size_t)bad));
            qsur_tensor_free(t);
            return rc;
        }
        if ((rc = qsur_progress_tick(progress, (double)i1 / (double)numel, "load npy", NAN,
                                     err))) {
            qsur_tensor_free(t);
            return rc;
        }
    }
    *out = t;
    return QSUR_OK;
}

int qsur_npy_read(const char *path, const char *name, qsur_tensor **out,
                  const qsur_progress *progress, qsur_error *err)
{
    *out = NULL;
    qsur_mapped_file m;
    int rc = qsur_mapped_file_open(&m, path, err);
    if (rc)
        return rc;
    rc = qsur_npy_parse(m.data, m.size, path, name, out, progress, err);
    qsur_mapped_file_close(&m);
    return rc;
}

int qsur_npy_write(const char *path, const qsur_tensor *t, qsur_error *err)
{
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < t->ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%lld, ", (long long)t->shape[i]);
    if (t->ndim == 1)
        n -= 1;  /* numpy writes (64,) for one dimension */
    else
        n -= 2;
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    /* pad with spaces so that preamble + header + '\n' is a multiple of 64 */
    size_t total = 10 + (size_t)n + 1;
    size_t pad = (64 - total % 64) % 64;
    size_t hlen = (size_t)n + pad + 1;
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xFF),
                             (unsigned char)(hlen >> 8)};
    char hdr[256 + 64];
    memcpy(hdr, dict, (size_t)n);
    memset(hdr + n, ' ', pad);
    hdr[hlen - 1] = '\n';
    qsur_atomic_file f;
    int rc = qsur_atomic_open(&f, path, err);
    if (rc)
        return rc;
    if ((rc = qsur_atomic_write(&f, pre, sizeof pre, err)) ||
        (rc = qsur_atomic_write(&f, hdr, hlen, err)) ||
        (rc = qsur_atomic_write_f32le(&f, t->data, (size_t)qsur_tensor_numel(t), err))) {
        qsur_atomic_abort(&f);
        return rc;
    }
    return qsur_atomic_commit(&f, err);
}
