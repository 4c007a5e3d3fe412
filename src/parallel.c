/* qsur/parallel.h: a thread per part, joined before returning. */
#include <pthread.h>
#include "qsur/parallel.h"

typedef struct {
    void (*fn)(void *ctx, int part, int parts);
    void *ctx;
    int part, parts;
} job;

static void *run_job(void *arg)
{
    const job *j = arg;
    j->fn(j->ctx, j->part, j->parts);
    return NULL;
}

void qsur_parallel(int parts, void (*fn)(void *ctx, int part, int parts), void *ctx)
{
    parts = parts < 1 ? 1 : parts > QSUR_PARALLEL_MAX ? QSUR_PARALLEL_MAX : parts;
    job jobs[QSUR_PARALLEL_MAX];
    pthread_t tid[QSUR_PARALLEL_MAX];
    int started[QSUR_PARALLEL_MAX] = {0};
    for (int i = 0; i < parts; i++) {
        jobs[i] = (job){fn, ctx, i, parts};
        started[i] = i > 0 && pthread_create(&tid[i], NULL, run_job, &jobs[i]) == 0;
    }
    for (int i = 0; i < parts; i++)
        if (!started[i])
            run_job(&jobs[i]);
    for (int i = 1; i < parts; i++)
        if (started[i])
            pthread_join(tid[i], NULL);
}
