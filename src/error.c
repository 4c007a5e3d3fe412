/* Error messages and progress ticks: the two ways the engine talks back. */
#include <stdarg.h>
#include <stdio.h>
#include "qsur/error.h"
#include "qsur/progress.h"

int qsur_fail(qsur_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

const char *qsur_status_name(int code)
{
    switch (code) {
    case QSUR_OK: return "ok";
    case QSUR_ERR_IO: return "i/o error";
    case QSUR_ERR_FORMAT: return "format error";
    case QSUR_ERR_ARG: return "bad argument";
    case QSUR_ERR_NOMEM: return "out of memory";
    case QSUR_ERR_NUMERIC: return "numerical error";
    case QSUR_ERR_INTERRUPTED: return "interrupted";
    default: return "unknown error";
    }
}

int qsur_progress_tick(const qsur_progress *p, double done, const char *what,
                       double value, qsur_error *err)
{
    if (p && p->fn && p->fn(p->ctx, done, what, value))
        return qsur_fail(err, QSUR_ERR_INTERRUPTED, "interrupted during %s", what);
    return QSUR_OK;
}
