#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "check.h"

int check_passed, check_failed;

void check_report(int ok, const char *file, int line, const char *fmt, ...)
{
    if (ok) {
        check_passed++;
        return;
    }
    check_failed++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int check_done(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

const char *check_shared(const char *rel)
{
    static char buf[4096];
    const char *base = getenv("QSUR_SHARED");
    snprintf(buf, sizeof buf, "%s/%s", base && *base ? base : "../shared", rel);
    return buf;
}

const char *check_source(const char *rel)
{
    static char buf[4096];
    const char *base = getenv("QSUR_SOURCE");
    snprintf(buf, sizeof buf, "%s/%s", base && *base ? base : ".", rel);
    return buf;
}

const char *check_tmpdir(void)
{
    static char buf[4096];
    if (!buf[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(buf, sizeof buf, "%s/qsur-test-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(buf)) {
            perror("mkdtemp");
            exit(2);
        }
    }
    return buf;
}
