#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

static uint64_t check_rng_state;

void check_seed(uint64_t seed)
{
    check_rng_state = seed;
}

double check_uniform(void)
{
    uint64_t z = (check_rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

double check_gauss(void)
{
    /* Arguments are evaluated in order here (two statements), as in the
     * expression each test used to inline. */
    double u1 = check_uniform();
    double u2 = check_uniform();
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
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
    /* every caller reads the file: stop here with one line rather than let a
     * test go on with a model it could not load (and crash on it) */
    if (access(buf, R_OK) != 0) {
        fprintf(stderr, "FAIL %s: test data not readable (the tests read ../shared beside the project root, "
                        "or $QSUR_SHARED)\n", buf);
        exit(1);
    }
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

const char *check_subdir(const char *name)
{
    static char buf[4200];
    snprintf(buf, sizeof buf, "%s/%s", check_tmpdir(), name);
    mkdir(buf, 0755);
    return buf;
}

void check_write_text(const char *dir, const char *file, const char *text)
{
    char p[4400];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    FILE *f = fopen(p, "w");
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
}

char *check_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *s = NULL;
    size_t n = 0, cap = 0, got;
    do {
        if (n + 4096 + 1 > cap) {
            cap = (n + 4096 + 1) * 2;
            char *b = realloc(s, cap);
            if (!b) {
                free(s);
                fclose(f);
                return NULL;
            }
            s = b;
        }
        got = fread(s + n, 1, 4096, f);
        n += got;
    } while (got > 0);
    fclose(f);
    s[n] = '\0';
    if (len)
        *len = n;
    return s;
}
