/* Token files (formats and memory: qsur/tokens.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "qsur/npy.h"
#include "qsur/tensor.h"
#include "qsur/tokens.h"

#define TOKENS_CHUNK (1 << 16)             /* bytes decoded per read */
#define TOKENS_NPY_MAX_HEADER (1u << 20)   /* numpy itself stops at 10,000 */

/* An open token file: where its ids start, how wide each one is. */
typedef struct {
    FILE *f;
    const char *path;
    uint64_t size;       /* bytes in the file */
    uint64_t offset;     /* first id */
    uint64_t count;      /* ids in the file */
    int item;            /* bytes per id: 2, 4 or 8 */
    int is_signed;
} token_source;

qsur_tokens_format qsur_tokens_format_of(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && strchr(dot, '/') == NULL) {
        if (strcmp(dot, ".u32") == 0)
            return QSUR_TOKENS_U32;
        if (strcmp(dot, ".npy") == 0)
            return QSUR_TOKENS_NPY;
    }
    return QSUR_TOKENS_U16;
}

static int read_exact(token_source *s, void *buf, size_t n, qsur_error *err)
{
    size_t got = fread(buf, 1, n, s->f);
    if (got != n)
        return qsur_fail(err, QSUR_ERR_IO, "%s: short read (%zu of %zu bytes)%s%s", s->path, got, n,
                         ferror(s->f) ? ": " : "", ferror(s->f) ? strerror(errno) : "");
    return QSUR_OK;
}

/* The .npy header: its length is checked against the file before the buffer
 * that holds it is allocated. */
static int npy_source(token_source *s, qsur_error *err)
{
    unsigned char pre[12] = {0};
    size_t npre = s->size < sizeof pre ? (size_t)s->size : sizeof pre;
    int rc = read_exact(s, pre, npre, err);
    if (rc)
        return rc;
    size_t hstart = pre[6] == 1 ? 10 : 12;
    uint64_t hlen = pre[6] == 1 ? (uint64_t)pre[8] | (uint64_t)pre[9] << 8
                  : (uint64_t)pre[8] | (uint64_t)pre[9] << 8 | (uint64_t)pre[10] << 16 |
                    (uint64_t)pre[11] << 24;
    if (hlen > TOKENS_NPY_MAX_HEADER && hstart + hlen <= s->size)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: .npy header of %llu bytes (expected at most "
                         "%u)", s->path, (unsigned long long)hlen, TOKENS_NPY_MAX_HEADER);
    size_t n = hstart + hlen < s->size ? (size_t)(hstart + hlen) : (size_t)s->size;
    unsigned char *hdr = malloc(n > npre ? n : npre);
    if (!hdr)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", s->path);
    memcpy(hdr, pre, npre);
    qsur_npy_header h;
    rc = n > npre ? read_exact(s, hdr + npre, n - npre, err) : QSUR_OK;
    if (!rc)
        rc = qsur_npy_parse_header(hdr, n, s->path, &h, err);
    free(hdr);
    if (rc)
        return rc;
    static const struct { const char *descr; int item, is_signed; } types[] = {
        {"<i4", 4, 1}, {"<u4", 4, 0}, {"<i8", 8, 1}, {"<u2", 2, 0}};
    int k = 0;
    while (k < 4 && strcmp(h.descr, types[k].descr))
        k++;
    if (k == 4)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: token dtype '%s' not supported (expected "
                         "integer ids: '<i4', '<u4', '<i8' or '<u2')", s->path, h.descr);
    s->item = types[k].item;
    s->is_signed = types[k].is_signed;
    s->offset = h.data_offset;
    s->count = h.numel;
    return qsur_npy_check_data(&h, (size_t)s->item, s->size, s->path, err);
}

static int open_source(token_source *s, const char *path, int vocab_size, qsur_error *err)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return qsur_fail(err, QSUR_ERR_IO, "%s: not a regular file (expected a token file)", path);
    }
    if (!(s->f = fdopen(fd, "rb"))) {
        close(fd);
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    s->size = (uint64_t)st.st_size;
    switch (qsur_tokens_format_of(path)) {
    case QSUR_TOKENS_NPY:
        return npy_source(s, err);
    case QSUR_TOKENS_U32:
        s->item = 4;
        break;
    case QSUR_TOKENS_U16:
        if (vocab_size > 65536)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: uint16 tokens cannot address the model's "
                             "vocabulary of %d (ids up to 65535): give the tokens as a .u32 or "
                             "int32 .npy file", path, vocab_size);
        s->item = 2;
        break;
    }
    if (s->size % (uint64_t)s->item)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %llu bytes is not a multiple of %d (expected "
                         "uint%d tokens)", path, (unsigned long long)s->size, s->item, 8 * s->item);
    s->count = s->size / (uint64_t)s->item;
    return QSUR_OK;
}

/* Decodes n ids from the data start into ids, checking each against vocab. */
static int decode(token_source *s, int *ids, int64_t n, int vocab_size, qsur_error *err)
{
    if (fseeko(s->f, (off_t)s->offset, SEEK_SET) != 0)
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot seek: %s", s->path, strerror(errno));
    unsigned char *buf = malloc(TOKENS_CHUNK);
    if (!buf)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", s->path);
    int rc = QSUR_OK;
    int64_t per = TOKENS_CHUNK / s->item;
    for (int64_t i0 = 0; i0 < n && !rc; i0 += per) {
        int64_t m = n - i0 < per ? n - i0 : per;
        if ((rc = read_exact(s, buf, (size_t)m * (size_t)s->item, err)))
            break;
        for (int64_t i = 0; i < m; i++) {
            const unsigned char *q = buf + i * s->item;
            uint64_t u = 0;
            for (int b = s->item - 1; b >= 0; b--)
                u = u << 8 | q[b]; /* little-endian on any host */
            int neg = s->is_signed && (q[s->item - 1] & 0x80);
            if (neg || u >= (uint64_t)vocab_size) {
                long long v = neg ? (s->item == 8 ? (long long)(u - UINT64_MAX) - 1
                                                  : (long long)u - (1LL << (8 * s->item)))
                                  : u > (uint64_t)INT64_MAX ? -1 : (long long)u;
                rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: token %lld = %lld is not in [0, %d) "
                               "(the model's vocabulary)", s->path, (long long)(i0 + i), v,
                               vocab_size);
                break;
            }
            ids[i0 + i] = (int)u;
        }
    }
    free(buf);
    return rc;
}

int qsur_tokens_read(qsur_tokens *t, const char *path, int seq_len, int max_seqs, int vocab_size,
                     qsur_error *err)
{
    memset(t, 0, sizeof *t);
    if (seq_len < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: sequence length %d must be >= 1", path, seq_len);
    if (vocab_size < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: vocabulary size %d must be >= 1", path, vocab_size);
    token_source s;
    int rc = open_source(&s, path, vocab_size, err);
    if (!rc && (s.count == 0 || s.count % (uint64_t)seq_len))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: %llu tokens is not a positive multiple of "
                       "the sequence length %d", path, (unsigned long long)s.count, seq_len);
    int64_t n = (int64_t)s.count;
    if (!rc && max_seqs > 0 && (uint64_t)max_seqs * (uint64_t)seq_len < s.count)
        n = (int64_t)max_seqs * seq_len;
    int *ids = rc ? NULL : qsur_alloc((size_t)n, sizeof(int));
    if (!rc && !ids)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: cannot allocate %lld tokens", path, (long long)n);
    if (!rc)
        rc = decode(&s, ids, n, vocab_size, err);
    if (s.f)
        fclose(s.f);
    if (rc) {
        free(ids);
        return rc;
    }
    t->ids = ids;
    t->n = n;
    t->seq_len = seq_len;
    return QSUR_OK;
}

int qsur_tokens_load(qsur_tokens *t, const char *path, int seq_len, int vocab_size,
                     qsur_error *err)
{
    return qsur_tokens_read(t, path, seq_len, 0, vocab_size, err);
}

void qsur_tokens_free(qsur_tokens *t)
{
    free(t->ids);
    memset(t, 0, sizeof *t);
}
