/* Format dispatch for `load FILE` (rules in loader.h). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "qsur/llama2c.h"
#include "qsur/loader.h"
#include "qsur/mapped_file.h"
#include "qsur/npy.h"
#include "qsur/safetensors.h"

static int has_ext(const char *path, const char *ext)
{
    const char *b = qsur_path_basename(path);
    size_t n = strlen(b), e = strlen(ext);
    return n > e && strcmp(b + n - e, ext) == 0;
}

static qsur_file_format detect(const qsur_mapped_file *m, const char *path)
{
    const unsigned char *d = m->data;
    if (m->size >= 6 && memcmp(d, "\x93NUMPY", 6) == 0)
        return QSUR_FORMAT_NPY;
    if (m->size >= 10) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; i--)
            n = n << 8 | d[i];
        if (n >= 2 && n <= m->size - 8 && d[8] == '{')
            return QSUR_FORMAT_SAFETENSORS;
    }
    if (has_ext(path, ".npy"))
        return QSUR_FORMAT_NPY;
    if (has_ext(path, ".safetensors"))
        return QSUR_FORMAT_SAFETENSORS;
    if (has_ext(path, ".bin"))
        return QSUR_FORMAT_LLAMA2C;
    qsur_llama2c_config c;
    if (qsur_llama2c_parse_header(d, m->size, path, &c, NULL) == QSUR_OK)
        return QSUR_FORMAT_LLAMA2C;
    return QSUR_FORMAT_UNKNOWN;
}

static int detect_open(const char *path, qsur_file_format *fmt, qsur_error *err)
{
    qsur_mapped_file m;
    int rc = qsur_mapped_file_open(&m, path, err);
    if (rc)
        return rc;
    *fmt = detect(&m, path);
    size_t size = m.size;
    qsur_mapped_file_close(&m);
    if (*fmt == QSUR_FORMAT_UNKNOWN) {
        if (size == 0)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: empty file (expected .npy, "
                             ".safetensors or a llama2.c .bin)", path);
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: unknown file format (expected .npy, "
                         ".safetensors or a llama2.c .bin checkpoint)", path);
    }
    return QSUR_OK;
}

int qsur_detect_format(const char *path, qsur_file_format *fmt, qsur_error *err)
{
    *fmt = QSUR_FORMAT_UNKNOWN;
    return detect_open(path, fmt, err);
}

int qsur_load_file(qsur_workspace *ws, const char *path, const char *prefix,
                   const qsur_progress *progress, qsur_error *err)
{
    qsur_file_format fmt;
    int rc = detect_open(path, &fmt, err);
    if (rc)
        return -rc;
    int n = 0;
    if (fmt == QSUR_FORMAT_NPY) {
        char name[QSUR_NAME_MAX], base[QSUR_NAME_MAX];
        const char *b = qsur_path_basename(path);
        const char *dot = strrchr(b, '.');
        int len = dot && dot != b ? (int)(dot - b) : (int)strlen(b);
        snprintf(base, sizeof base, "%.*s", len, b);
        int w = snprintf(name, sizeof name, "%s%s", prefix ? prefix : "", base);
        if (w < 0 || w >= QSUR_NAME_MAX || len >= QSUR_NAME_MAX)
            return -qsur_fail(err, QSUR_ERR_ARG, "%s: tensor name %s%s longer than %d "
                              "characters", path, prefix ? prefix : "", base, QSUR_NAME_MAX - 1);
        qsur_tensor *t;
        if ((rc = qsur_npy_read(path, name, &t, progress, err)))
            return -rc;
        if ((rc = qsur_workspace_put(ws, t, err)))
            return -rc;
        n = 1;
    } else if (fmt == QSUR_FORMAT_SAFETENSORS) {
        rc = qsur_safetensors_load(ws, path, prefix, &n, progress, err);
    } else {
        rc = qsur_llama2c_load(ws, path, prefix, NULL, &n, progress, err);
    }
    return rc ? -rc : n;
}
