/* What every fuzz target shares (tests/fuzz/, docs/fuzzing.md).
 *
 * A target is one file, tests/fuzz/fuzz_NAME.c, defining
 *     int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
 * and, when it needs set-up, fuzz_init() through FUZZ_INIT below. The same file
 * builds two ways: with libFuzzer (clang, -DQSUR_FUZZ=ON: tests/fuzz/run.sh)
 * and with replay_main.c as a plain ctest test, fuzz_corpus_NAME, that runs
 * every input of tests/fuzz/corpus/NAME/ (seeds and past crashes) once. */
#ifndef QSUR_FUZZ_H
#define QSUR_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include "qsur/error.h"
#include "qsur/llama.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A target with set-up defines it with FUZZ_INIT { ... }: run once before the
 * first input, under libFuzzer and under replay alike. */
#define FUZZ_INIT                                                    \
    static void fuzz_init(void);                                     \
    int LLVMFuzzerInitialize(int *argc, char ***argv)                \
    {                                                                \
        (void)argc;                                                  \
        (void)argv;                                                  \
        fuzz_init();                                                 \
        return 0;                                                    \
    }                                                                \
    static void fuzz_init(void)

/* A private directory for this process (created on first use, under $TMPDIR). */
const char *fuzz_dir(void);
/* Writes data to fuzz_dir()/name and returns the path (static buffer). */
const char *fuzz_write(const char *name, const uint8_t *data, size_t size);
/* A NUL-terminated copy of the input (caller frees). */
char *fuzz_string(const uint8_t *data, size_t size);

/* The contract for every parser: on failure a message that is not empty;
 * anything else aborts (so the fuzzer reports it as a crash). Messages may
 * quote names from the input, control characters included: the UI escapes
 * them when it prints (one line on the screen). With QSUR_FUZZ_VERBOSE set,
 * prints "accepted" or the message of each call. */
void fuzz_check_error(int rc, const qsur_error *err);
/* abort() with a message when cond is false. */
void fuzz_assert(int cond, const char *what);

/* The tiny model the model-level targets load into: dim 16, hidden 32, one
 * layer, 2 heads, 2 kv heads, vocab 32, seq_len 16, deterministic weights. */
qsur_llama *fuzz_tiny_model(void);
/* fuzz_dir()/sub holding the tiny model as a Hugging Face directory
 * (config.json, model.safetensors in dtype); static buffer. */
const char *fuzz_tiny_hf_dir(const char *sub, const char *dtype);
/* Writes the input as dir/file (dir from fuzz_tiny_hf_dir) and loads dir. */
void fuzz_load_hf(const char *dir, const char *file, const uint8_t *data, size_t size);

#endif
