/* Error reporting for the qsur engine.
 *
 * Every engine function that can fail returns a qsur_status and, on failure,
 * fills a caller-owned qsur_error with one line of text that names the file,
 * tensor or argument and what was expected (SQLite style: code + message).
 * The engine never prints; the front end decides how to show the message. */
#ifndef QSUR_ERROR_H
#define QSUR_ERROR_H

#define QSUR_ERROR_MAX 512

typedef enum {
    QSUR_OK = 0,
    QSUR_ERR_IO,          /* open/read/write/rename failed */
    QSUR_ERR_FORMAT,      /* file content does not match its format */
    QSUR_ERR_ARG,         /* bad argument: shape, range, unknown name */
    QSUR_ERR_NOMEM,       /* allocation failed or size overflow */
    QSUR_ERR_NUMERIC,     /* NaN/Inf, LAPACK failure, singular matrix */
    QSUR_ERR_INTERRUPTED  /* the progress callback asked to stop */
} qsur_status;

typedef struct {
    char msg[QSUR_ERROR_MAX];
} qsur_error;

/* Fill err (if not NULL) with a printf-style message and return code.
 * Usage: return qsur_fail(err, QSUR_ERR_FORMAT, "%s: truncated header", path); */
int qsur_fail(qsur_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Short name of a status code ("format error", ...). */
const char *qsur_status_name(int code);

#endif
