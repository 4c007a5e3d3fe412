/* A tiny test harness: CHECK-style assertions that count and keep going, so one
 * run reports every failure; check_done() prints "N passed, N failed" and
 * returns the exit code. */
#ifndef QSUR_CHECK_H
#define QSUR_CHECK_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>

extern int check_passed, check_failed;

void check_report(int ok, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int check_done(void);
/* Path of a file in ../shared (or $QSUR_SHARED); static buffer, one at a time.
 * Exits with a failure line when the file is not readable. */
const char *check_shared(const char *rel);
/* Path under the project source tree ($QSUR_SOURCE or "."); static buffer. */
const char *check_source(const char *rel);
/* The whole file, NUL-terminated (malloc'ed), or NULL; *len (may be NULL)
 * gets its size. */
char *check_read_file(const char *path, size_t *len);
/* A fresh temporary directory for this test (created once, removed by nobody:
 * it lives under $TMPDIR so CI machines throw it away). */
const char *check_tmpdir(void);
/* check_tmpdir()/name, created; static buffer, one at a time. */
const char *check_subdir(const char *name);
/* Writes text to dir/file (a test fails later when it is missing). */
void check_write_text(const char *dir, const char *file, const char *text);

/* Test data: splitmix64 + Box-Muller, deliberately separate from the engine's
 * qsur_rng so that a bug there cannot shape the data that tests it. One stream
 * per test process; check_seed() restarts it. */
void check_seed(uint64_t seed);
double check_uniform(void); /* in (0, 1) */
double check_gauss(void);   /* N(0, 1) */

#define CHECK(cond) check_report(!!(cond), __FILE__, __LINE__, "%s", #cond)
#define CHECK_MSG(cond, ...) check_report(!!(cond), __FILE__, __LINE__, __VA_ARGS__)
/* |a-b| <= tol */
#define CHECK_NEAR(a, b, tol)                                                         \
    do {                                                                              \
        double a_ = (a), b_ = (b), t_ = (tol);                                        \
        check_report(fabs(a_ - b_) <= t_, __FILE__, __LINE__, "%s = %.12g, %s = %.12g, tol %g", \
                     #a, a_, #b, b_, t_);                                             \
    } while (0)
/* |a-b| <= tol * max(|b|, tiny) */
#define CHECK_REL(a, b, tol)                                                          \
    do {                                                                              \
        double a_ = (a), b_ = (b), t_ = (tol);                                        \
        double s_ = fabs(b_) > 1e-300 ? fabs(b_) : 1e-300;                            \
        check_report(fabs(a_ - b_) <= t_ * s_, __FILE__, __LINE__,                    \
                     "%s = %.12g, %s = %.12g, rel tol %g", #a, a_, #b, b_, t_);       \
    } while (0)
#define CHECK_OK(rc, err)                                                             \
    check_report((rc) == 0, __FILE__, __LINE__, "%s failed: %s", #rc, (err).msg)

#endif
