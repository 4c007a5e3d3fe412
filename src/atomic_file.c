/* tmp + fsync + rename: the only way the engine writes files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "qsur/atomic_file.h"

#define ATOMIC_BUF (1 << 16)

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

int qsur_atomic_open(qsur_atomic_file *f, const char *path, qsur_error *err)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (!path || !*path)
        return qsur_fail(err, QSUR_ERR_ARG, "empty output file name");
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;  /* keeps the '/' */
    const char *base = slash ? slash + 1 : path;
    if (!*base)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: output path names a directory", path);
    size_t n = dirlen + 1 + strlen(base) + sizeof ".tmp-XXXXXX";
    f->path = dup_str(path);
    f->tmp_path = malloc(n);
    f->buf = malloc(ATOMIC_BUF);
    if (!f->path || !f->tmp_path || !f->buf) {
        qsur_atomic_abort(f);
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", path);
    }
    /* Hidden name in the same directory: rename(2) is atomic only within one
     * file system, and a crash leaves a dot-file rather than a half target. */
    snprintf(f->tmp_path, n, "%.*s.%s.tmp-XXXXXX", (int)dirlen, path, base);
    f->fd = mkstemp(f->tmp_path);
    if (f->fd < 0) {
        int e = errno;
        free(f->tmp_path);
        f->tmp_path = NULL;  /* nothing to unlink */
        qsur_atomic_abort(f);
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot create temporary file: %s", path,
                         strerror(e));
    }
    /* mkstemp makes 0600; an output file should be readable like any other. */
    (void)fchmod(f->fd, 0644);
    return QSUR_OK;
}

static int flush_buf(qsur_atomic_file *f, qsur_error *err)
{
    size_t off = 0;
    while (off < f->used) {
        ssize_t w = write(f->fd, f->buf + off, f->used - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return qsur_fail(err, QSUR_ERR_IO, "%s: write failed: %s", f->path, strerror(errno));
        }
        off += (size_t)w;
    }
    f->used = 0;
    return QSUR_OK;
}

int qsur_atomic_write(qsur_atomic_file *f, const void *data, size_t n, qsur_error *err)
{
    if (f->fd < 0)
        return qsur_fail(err, QSUR_ERR_IO, "%s: write to a closed file",
                         f->path ? f->path : "(unnamed)");
    const unsigned char *p = data;
    while (n > 0) {
        size_t room = ATOMIC_BUF - f->used;
        size_t k = n < room ? n : room;
        memcpy(f->buf + f->used, p, k);
        f->used += k;
        f->written += k;
        p += k;
        n -= k;
        if (f->used == ATOMIC_BUF) {
            int rc = flush_buf(f, err);
            if (rc)
                return rc;
        }
    }
    return QSUR_OK;
}

/* Byte order is written out explicitly so the files are the same on any host. */
static void put_u32le(unsigned char *o, uint32_t v)
{
    o[0] = (unsigned char)v;
    o[1] = (unsigned char)(v >> 8);
    o[2] = (unsigned char)(v >> 16);
    o[3] = (unsigned char)(v >> 24);
}

static int write_u32le(qsur_atomic_file *f, const uint32_t *x, size_t n, qsur_error *err)
{
    unsigned char tmp[4096];
    while (n > 0) {
        size_t k = n < sizeof tmp / 4 ? n : sizeof tmp / 4;
        for (size_t i = 0; i < k; i++)
            put_u32le(tmp + 4 * i, x[i]);
        int rc = qsur_atomic_write(f, tmp, 4 * k, err);
        if (rc)
            return rc;
        x += k;
        n -= k;
    }
    return QSUR_OK;
}

int qsur_atomic_write_f32le(qsur_atomic_file *f, const float *x, size_t n, qsur_error *err)
{
    _Static_assert(sizeof(float) == sizeof(uint32_t), "float must be 32-bit");
    /* float and uint32_t may alias through memcpy only; convert in chunks. */
    uint32_t tmp[1024];
    while (n > 0) {
        size_t k = n < 1024 ? n : 1024;
        memcpy(tmp, x, k * sizeof(float));
        int rc = write_u32le(f, tmp, k, err);
        if (rc)
            return rc;
        x += k;
        n -= k;
    }
    return QSUR_OK;
}

int qsur_atomic_write_i32le(qsur_atomic_file *f, const int32_t *x, size_t n, qsur_error *err)
{
    uint32_t tmp[1024];
    while (n > 0) {
        size_t k = n < 1024 ? n : 1024;
        memcpy(tmp, x, k * sizeof(int32_t));
        int rc = write_u32le(f, tmp, k, err);
        if (rc)
            return rc;
        x += k;
        n -= k;
    }
    return QSUR_OK;
}

static void free_parts(qsur_atomic_file *f)
{
    free(f->path);
    free(f->tmp_path);
    free(f->buf);
    f->path = f->tmp_path = NULL;
    f->buf = NULL;
    f->used = 0;
}

void qsur_atomic_abort(qsur_atomic_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    if (f->tmp_path)
        unlink(f->tmp_path);
    free_parts(f);
}

int qsur_atomic_commit(qsur_atomic_file *f, qsur_error *err)
{
    if (f->fd < 0) {
        int rc = qsur_fail(err, QSUR_ERR_IO, "%s: commit of a closed file",
                           f->path ? f->path : "(unnamed)");
        qsur_atomic_abort(f);
        return rc;
    }
    int rc = flush_buf(f, err);
    if (rc) {
        qsur_atomic_abort(f);
        return rc;
    }
    /* fsync before rename: otherwise a crash can leave the new name pointing
     * at a file whose data never reached the disk. */
    if (fsync(f->fd) != 0) {
        rc = qsur_fail(err, QSUR_ERR_IO, "%s: fsync failed: %s", f->path, strerror(errno));
        qsur_atomic_abort(f);
        return rc;
    }
    if (close(f->fd) != 0) {
        f->fd = -1;
        rc = qsur_fail(err, QSUR_ERR_IO, "%s: close failed: %s", f->path, strerror(errno));
        qsur_atomic_abort(f);
        return rc;
    }
    f->fd = -1;
    if (rename(f->tmp_path, f->path) != 0) {
        rc = qsur_fail(err, QSUR_ERR_IO, "%s: cannot rename temporary file into place: %s",
                       f->path, strerror(errno));
        qsur_atomic_abort(f);
        return rc;
    }
    /* Make the rename itself durable; failure here is not worth an error
     * (the data is complete and in place), so it is best effort. */
    const char *slash = strrchr(f->path, '/');
    char *dir = slash ? dup_str(f->path) : NULL;
    if (dir)
        dir[slash - f->path + (slash == f->path)] = '\0';
    int dfd = open(dir ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    free(dir);
    free(f->tmp_path);
    f->tmp_path = NULL;  /* renamed: nothing to unlink */
    free_parts(f);
    return QSUR_OK;
}
