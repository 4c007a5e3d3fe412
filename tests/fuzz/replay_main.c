/* Runs a fuzz target over files without libFuzzer: every file named on the
 * command line, and every file of every directory named (sorted). This is how
 * the normal build replays tests/fuzz/corpus/NAME/ as ctest fuzz_corpus_NAME;
 * it is also the quickest way to rerun one crash under a debugger. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "fuzz.h"

/* Targets without set-up leave this undefined. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "%s: cannot open\n", path);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: cannot read\n", path);
        fclose(f);
        free(b);
        return 1;
    }
    fclose(f);
    if (getenv("QSUR_FUZZ_VERBOSE"))
        fprintf(stderr, "%s:\n", path);
    LLVMFuzzerTestOneInput(b, (size_t)n);
    free(b);
    return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    int inputs = 0, bad = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "%s: no such file or directory\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(st.st_mode)) {
            bad += run_file(argv[i]);
            inputs++;
            continue;
        }
        struct dirent **names;
        int n = scandir(argv[i], &names, NULL, by_name);
        for (int k = 0; k < n; k++) {
            char p[4200];
            snprintf(p, sizeof p, "%s/%s", argv[i], names[k]->d_name);
            if (names[k]->d_name[0] != '.' && stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
                bad += run_file(p);
                inputs++;
            }
            free(names[k]);
        }
        free(names);
    }
    printf("%d inputs replayed\n", inputs);
    return bad || inputs == 0;
}
