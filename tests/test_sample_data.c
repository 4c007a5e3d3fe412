/* The committed sample layer is exactly what make_sample generates, and it
 * has the features it claims: massive same-sign outlier channels, heavy
 * tails, correlated channels, a few large weight columns. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "check.h"
#include "qsur/loader.h"
#include "qsur/npy.h"
#include "qsur/workspace.h"

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    const char *gen = getenv("QSUR_MAKE_SAMPLE");
    CHECK_MSG(gen && *gen, "QSUR_MAKE_SAMPLE not set");
    if (!gen || !*gen)
        return check_done();
    char out[4200];
    snprintf(out, sizeof out, "%s", check_tmpdir());
    pid_t pid = fork();
    if (pid == 0) {
        execl(gen, gen, out, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "make_sample failed (%d)", status);

    const char *files[3] = {"X.npy", "W.npy", "layer.safetensors"};
    size_t total = 0;
    for (int i = 0; i < 3; i++) {
        char a[4300], rel[64];
        snprintf(a, sizeof a, "%s/%s", out, files[i]);
        snprintf(rel, sizeof rel, "sample_data/%s", files[i]);
        size_t na, nb;
        unsigned char *ba = slurp(a, &na), *bb = slurp(check_source(rel), &nb);
        CHECK_MSG(ba && bb && na == nb && memcmp(ba, bb, na) == 0,
                  "%s: regenerated file differs from the committed one (%zu vs %zu bytes)",
                  files[i], na, nb);
        total += nb;
        free(ba);
        free(bb);
    }
    CHECK_MSG(total < 2u << 20, "sample data is %zu bytes (limit 2 MB)", total);

    qsur_workspace ws;
    qsur_error err;
    qsur_workspace_init(&ws);
    CHECK(qsur_load_file(&ws, check_source("sample_data/layer.safetensors"), "st.", NULL, &err) == 2);
    CHECK(qsur_load_file(&ws, check_source("sample_data/X.npy"), NULL, NULL, &err) == 1);
    CHECK(qsur_load_file(&ws, check_source("sample_data/W.npy"), NULL, NULL, &err) == 1);
    qsur_tensor *X = qsur_workspace_find(&ws, "X"), *W = qsur_workspace_find(&ws, "W");
    qsur_tensor *sX = qsur_workspace_find(&ws, "st.X"), *sW = qsur_workspace_find(&ws, "st.W");
    CHECK(X && X->ndim == 2 && X->shape[0] == 512 && X->shape[1] == 256);
    CHECK(W && W->ndim == 2 && W->shape[0] == 384 && W->shape[1] == 256);
    CHECK(sX && sW && memcmp(sX->data, X->data, 512 * 256 * 4) == 0 &&
          memcmp(sW->data, W->data, 384 * 256 * 4) == 0);
    if (!X || !W || X->shape[0] != 512 || W->shape[0] != 384) {
        qsur_workspace_clear(&ws);
        return check_done();
    }

    /* Outlier channels: absmax > 10x the median channel absmax, same sign on
     * every token. */
    const int T = 512, C = 256;
    double absmax[256], sorted[256];
    for (int j = 0; j < C; j++) {
        absmax[j] = 0;
        for (int t = 0; t < T; t++)
            absmax[j] = fmax(absmax[j], fabs(X->data[t * C + j]));
        sorted[j] = absmax[j];
    }
    qsort(sorted, (size_t)C, sizeof *sorted, cmp_double);
    double med = 0.5 * (sorted[127] + sorted[128]);
    int n_out = 0, consistent = 1;
    for (int j = 0; j < C; j++) {
        if (absmax[j] <= 10 * med)
            continue;
        n_out++;
        int pos = 0;
        for (int t = 0; t < T; t++)
            pos += X->data[t * C + j] > 0;
        consistent &= pos == 0 || pos == T;
    }
    CHECK_MSG(n_out >= 3 && n_out <= 6, "%d outlier channels (median absmax %g)", n_out, med);
    CHECK_MSG(consistent, "an outlier channel changes sign across tokens");

    /* Heavy tails and correlation among the ordinary channels, in double:
     * sample kurtosis (Gaussian: 3) and the largest |corr| of channel pairs. */
    double kurt_sum = 0, max_corr = 0;
    int n_ord = 0;
    static double mean[256], sd[256];
    for (int j = 0; j < C; j++) {
        double m = 0, m2 = 0, m4 = 0;
        for (int t = 0; t < T; t++)
            m += X->data[t * C + j] / (double)T;
        for (int t = 0; t < T; t++) {
            double d = X->data[t * C + j] - m;
            m2 += d * d / T;
            m4 += d * d * d * d / T;
        }
        mean[j] = m;
        sd[j] = sqrt(m2);
        if (absmax[j] <= 10 * med) {
            kurt_sum += m4 / (m2 * m2);
            n_ord++;
        }
    }
    for (int i = 0; i < C; i++)
        for (int j = i + 1; j < C; j++) {
            if (absmax[i] > 10 * med || absmax[j] > 10 * med)
                continue;
            double c = 0;
            for (int t = 0; t < T; t++)
                c += (X->data[t * C + i] - mean[i]) * (X->data[t * C + j] - mean[j]);
            max_corr = fmax(max_corr, fabs(c / T / (sd[i] * sd[j])));
        }
    CHECK_MSG(kurt_sum / n_ord > 4.0, "mean kurtosis %g (heavy tails expected)", kurt_sum / n_ord);
    CHECK_MSG(max_corr > 0.3, "largest channel correlation %g", max_corr);

    /* W: a few input columns with a norm over 3x the median column norm. */
    double cn[256];
    for (int j = 0; j < C; j++) {
        cn[j] = 0;
        for (int o = 0; o < 384; o++)
            cn[j] += (double)W->data[o * C + j] * W->data[o * C + j];
        sorted[j] = cn[j] = sqrt(cn[j]);
    }
    qsort(sorted, (size_t)C, sizeof *sorted, cmp_double);
    int big = 0;
    for (int j = 0; j < C; j++)
        big += cn[j] > 3 * 0.5 * (sorted[127] + sorted[128]);
    CHECK_MSG(big >= 3 && big <= 10, "%d large weight columns", big);
    qsur_workspace_clear(&ws);
    return check_done();
}
