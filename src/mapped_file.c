/* Read-only whole-file mappings for the loaders. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "qsur/mapped_file.h"

int qsur_mapped_file_open(qsur_mapped_file *m, const char *path, qsur_error *err)
{
    m->data = NULL;
    m->size = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return qsur_fail(err, QSUR_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return QSUR_OK;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);  /* the mapping keeps the file alive */
    if (p == MAP_FAILED)
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot map %lld bytes: %s", path,
                         (long long)st.st_size, strerror(e));
    m->data = p;
    m->size = (size_t)st.st_size;
    return QSUR_OK;
}

void qsur_mapped_file_close(qsur_mapped_file *m)
{
    if (m->data)
        munmap((void *)m->data, m->size);
    m->data = NULL;
    m->size = 0;
}

const char *qsur_path_basename(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}
