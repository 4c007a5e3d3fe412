/* `sleep SECONDS`: waits while ticking the progress callback every 10 ms.
 * Pauses in scripts and tutorials, and the deterministic long-running command
 * the REPL tests interrupt with Ctrl-C (the same path every engine loop uses). */
#include <math.h>
#include <time.h>
#include "commands.h"

const opt_spec sleep_args[] = {
    {"SECONDS", OPT_REAL, 0, 86400, NULL, NULL, NULL, OPT_LOG_NEVER, "how long (fractions allowed)"}, OPT_END};

int cmd_sleep(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)
{
    (void)argc, (void)argv;
    double secs = a->arg[0].d;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    double done = 0;
    while (done < secs) {
        int rc = qsur_progress_tick(&s->progress, secs > 0 ? done / secs : 1.0, "sleep", NAN, err);
        if (rc != QSUR_OK)
            return rc;
        double left = secs - done;
        struct timespec tick = {0, left < 0.01 ? (long)(left * 1e9) : 10000000L};
        nanosleep(&tick, NULL); /* EINTR is fine: the next tick sees the flag */
        clock_gettime(CLOCK_MONOTONIC, &now);
        done = (double)(now.tv_sec - t0.tv_sec) + 1e-9 * (double)(now.tv_nsec - t0.tv_nsec);
    }
    rep_num(r, "seconds", "slept (s)", secs, "%g");
    return QSUR_OK;
}
