/* Reading a token file costs the ids it holds, not copies of the file
 * (src/tokens.c decodes it in 64 KB chunks straight into the id array): a
 * 64 MB .u32 file of 16M tokens raises the peak RSS by about 64 MB (the
 * int ids), where reading it whole and converting would take two or three
 * times that; every id read back equals the one written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "check.h"
#include "qsur/tokens.h"

static long max_rss_kb(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_maxrss;
}

int main(void)
{
    enum { N = 1 << 24, VOCAB = 128256, CHUNK = 1 << 14 };
    char path[1024];
    snprintf(path, sizeof path, "%s/big.u32", check_subdir("tok"));
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (!f)
        return check_done();
    static uint32_t chunk[CHUNK]; /* written in small pieces: RSS stays low here */
    int wrote = 1;
    for (int64_t i = 0; i < N; i += CHUNK) {
        for (int j = 0; j < CHUNK; j++)
            chunk[j] = (uint32_t)(((i + j) * 2654435761u) % VOCAB);
        wrote &= fwrite(chunk, sizeof chunk, 1, f) == 1;
    }
    CHECK(fclose(f) == 0 && wrote);
    long before = max_rss_kb();
    qsur_tokens t;
    qsur_error err;
    CHECK_OK(qsur_tokens_read(&t, path, 4096, 0, VOCAB, &err), err);
    long grew_kb = max_rss_kb() - before;
    int same = t.n == N;
    for (int64_t i = 0; same && i < N; i++)
        same = t.ids[i] == (int)((i * 2654435761u) % VOCAB);
    CHECK_MSG(same, "ids read back differ");
    double ratio = (double)grew_kb * 1024 / ((double)N * 4);
    printf("read %d tokens (64 MiB file): peak RSS +%.1f MiB = %.2fx the file\n", N,
           grew_kb / 1024.0, ratio);
    /* 1.0 plus allocator slack (ASan's shadow adds 1/8) */
    CHECK_MSG(ratio < 1.3, "reading the file cost %.2fx its size", ratio);
    qsur_tokens_free(&t);
    return check_done();
}
