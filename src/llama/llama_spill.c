/* Spill files (qsur/llama_store.h): the stored weights of a model a
 * whole-model method makes (OSTQuant's fusion) written to an unlinked
 * temporary file and mapped read-only once complete, so the new model's
 * weights sit in the page cache like a checkpoint's (reclaimable, faulted in
 * as read) instead of in owned memory while the old model is still held. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#include "qsur/llama_store.h"
#include "qsur/mapped_file.h"

struct qsur_llama_spill {
    int fd;
    int64_t size;
    int n, cap;
    qsur_llama_linear **lin; /* where each written linear's bytes go once mapped */
    int64_t *off;
    int *dtype;
    qsur_mapped_file map;
};

void qsur_llama_spill_free(qsur_llama_spill *s)
{
    if (!s)
        return;
    if (s->map.data)
        munmap((void *)s->map.data, s->map.size);
    if (s->fd >= 0)
        close(s->fd);
    free(s->lin);
    free(s->off);
    free(s->dtype);
    free(s);
}

int qsur_llama_spill_new(qsur_llama_spill **out, qsur_error *err)
{
    *out = NULL;
    const char *dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/qsur-weights-XXXXXX", dir);
    qsur_llama_spill *s = calloc(1, sizeof *s);
    if (!s)
        return qsur_fail(err, QSUR_ERR_NOMEM, "spill file: out of memory");
    s->fd = mkstemp(path);
    if (s->fd < 0) {
        int e = errno;
        free(s);
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot create the temporary weights file (TMPDIR): %s", path,
                         strerror(e));
    }
    unlink(path); /* gone with the last reference: the mapping */
    *out = s;
    return QSUR_OK;
}

int qsur_llama_spill_linear(qsur_llama_spill *s, qsur_llama_linear *l, const void *bytes, int dtype,
                            qsur_error *err)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        qsur_llama_linear **lin = realloc(s->lin, (size_t)cap * sizeof *lin);
        if (lin)
            s->lin = lin;
        int64_t *off = realloc(s->off, (size_t)cap * sizeof *off);
        if (off)
            s->off = off;
        int *dt = realloc(s->dtype, (size_t)cap * sizeof *dt);
        if (dt)
            s->dtype = dt;
        if (!lin || !off || !dt)
            return qsur_fail(err, QSUR_ERR_NOMEM, "spill file: out of memory");
        s->cap = cap;
    }
    size_t n = (size_t)(l->rows * l->cols * qsur_dtype_size((qsur_dtype)dtype)), done = 0;
    while (done < n) {
        ssize_t w = pwrite(s->fd, (const unsigned char *)bytes + done, n - done, (off_t)(s->size + (int64_t)done));
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return qsur_fail(err, QSUR_ERR_IO, "%s: cannot write %zu bytes to the temporary weights file (TMPDIR): %s",
                             l->name, n, w < 0 ? strerror(errno) : "disk full");
        done += (size_t)w;
    }
    s->lin[s->n] = l;
    s->off[s->n] = s->size;
    s->dtype[s->n++] = dtype;
    s->size += ((int64_t)n + 63) / 64 * 64; /* every tensor 64-byte aligned in the mapping */
    return QSUR_OK;
}

static void spill_close(void *f)
{
    qsur_llama_spill_free(f);
}

static const qsur_mapped_file *spill_map(const void *f)
{
    return &((const qsur_llama_spill *)f)->map;
}

int qsur_llama_spill_finish(qsur_llama_spill *s, qsur_llama *m, qsur_error *err)
{
    if (m->mapping)
        return qsur_fail(err, QSUR_ERR_ARG, "spill file: the model already maps files");
    void *data = s->size > 0 ? mmap(NULL, (size_t)s->size, PROT_READ, MAP_SHARED, s->fd, 0) : NULL;
    if (data == MAP_FAILED)
        return qsur_fail(err, QSUR_ERR_IO, "spill file: cannot map %lld bytes of weights", (long long)s->size);
    s->map.data = data;
    s->map.size = (size_t)s->size;
    for (int i = 0; i < s->n; i++) {
        qsur_llama_linear *l = s->lin[i];
        memset(&l->st, 0, sizeof l->st);
        l->st.dtype = s->dtype[i];
        l->st.data = s->map.data + s->off[i];
        l->st.in_file = 1;
    }
    return qsur_llama_mapping_adopt_file(m, s, spill_close, spill_map, err);
}
