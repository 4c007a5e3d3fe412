/* Tokenizer load time and encode/decode speed on one core, for the three
 * tokenizer files of the shared data (Llama-3 tokenizer.json, 32k
 * SentencePiece tokenizer.json, llama2.c tokenizer.bin). The corpus is the
 * two test texts (English prose; mixed Unicode, code, numbers) repeated to
 * MB megabytes each; encode is one call on the whole corpus, as `ppl
 * FILE.txt` does. Goals (issue 17): load < 1 s, encode >= 1 MB/s. Best of 3
 * runs; peak RSS at the end.
 * Usage: bench_tokenizer [SHARED_DIR] [MB] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include "qsur/clock.h"
#include "qsur/mapped_file.h"
#include "qsur/tokenizer.h"

static char *corpus(const char *path, size_t want, size_t *len)
{
    qsur_mapped_file f;
    qsur_error err;
    if (qsur_mapped_file_open(&f, path, &err) || !f.size) {
        fprintf(stderr, "%s\n", err.msg);
        return NULL;
    }
    char *s = malloc(want + f.size);
    size_t n = 0;
    while (s && n < want) {
        memcpy(s + n, f.data, f.size);
        n += f.size;
    }
    qsur_mapped_file_close(&f);
    *len = n;
    return s;
}

int main(int argc, char **argv)
{
    const char *shared = argc > 1 ? argv[1] : "../shared";
    double mb = argc > 2 ? atof(argv[2]) : 2.0;
    static const char *const toks[] = {"llama3-tokenizer.json", "sp32k-tokenizer.json", "llama2c-tokenizer.bin"};
    static const char *const texts[] = {"english.txt", "mixed.txt"};
    printf("%-22s %-11s %8s %8s %10s %10s %8s %12s\n", "tokenizer", "text", "load s", "cpu s", "enc MB/s",
           "dec MB/s", "x goal", "bytes/token");
    for (int k = 0; k < 3; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/data/tokenizers/%s", shared, toks[k]);
        qsur_tokenizer *t = NULL;
        qsur_error err;
        double load = 1e9, load_cpu = 1e9;
        for (int r = 0; r < 3; r++) {
            qsur_tokenizer_free(t);
            t = NULL;
            double t0 = qsur_seconds();
            clock_t c0 = clock();
            if (qsur_tokenizer_load(&t, path, 0, &err)) {
                fprintf(stderr, "%s\n", err.msg);
                return 1;
            }
            double dt = qsur_seconds() - t0, dc = (double)(clock() - c0) / CLOCKS_PER_SEC;
            load = dt < load ? dt : load;
            load_cpu = dc < load_cpu ? dc : load_cpu;
        }
        for (int x = 0; x < 2; x++) {
            char tp[4096];
            snprintf(tp, sizeof tp, "%s/data/tokenizers/%s", shared, texts[x]);
            size_t len;
            char *text = corpus(tp, (size_t)(mb * 1e6), &len);
            if (!text)
                return 1;
            double enc = 1e9, dec = 1e9;
            qsur_token_ids ids = {0};
            for (int r = 0; r < 3; r++) {
                ids.n = 0;
                double t0 = qsur_seconds();
                if (qsur_tokenizer_encode(t, text, len, 0, &ids, &err)) {
                    fprintf(stderr, "%s\n", err.msg);
                    return 1;
                }
                double dt = qsur_seconds() - t0;
                enc = dt < enc ? dt : enc;
                char *back = NULL;
                size_t blen;
                t0 = qsur_seconds();
                if (qsur_tokenizer_decode(t, ids.ids, ids.n, &back, &blen, &err))
                    return 1;
                dt = qsur_seconds() - t0;
                dec = dt < dec ? dt : dec;
                free(back);
            }
            double rate = (double)len / enc / 1e6;
            printf("%-22s %-11s %8.3f %8.3f %10.2f %10.2f %8.2f %12.2f\n", toks[k], texts[x], load, load_cpu, rate,
                   (double)len / dec / 1e6, rate / 1.0, (double)len / (double)ids.n);
            qsur_token_ids_free(&ids);
            free(text);
        }
        qsur_tokenizer_free(t);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("corpus %.1f MB per text; x goal = encode rate / 1 MB/s; peak RSS %.0f MB\n", mb,
           (double)ru.ru_maxrss / 1024.0);
    return 0;
}
