/* The command-line tokenizer: words, quotes, escapes; then the command table
 * lookup and arity check every front end does before a handler runs. */
#include <stdlib.h>
#include <string.h>
#include "command.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = fuzz_string(data, size);
    size_t len = strlen(buf);
    char *argv[64];
    qsur_error err;
    int argc = command_tokenize(buf, argv, 64, &err);
    fuzz_check_error(argc < 0 ? QSUR_ERR_ARG : QSUR_OK, &err);
    fuzz_assert(argc <= 64, "at most max_words words");
    for (int i = 0; i < argc; i++)
        fuzz_assert(argv[i] >= buf && argv[i] + strlen(argv[i]) <= buf + len, "words inside the line");
    if (argc > 0) {
        const command *c = command_find(argv[0]);
        if (c)
            fuzz_assert(c->min_args >= 0 && (c->max_args < 0 || c->max_args >= c->min_args), "sane arity");
    }
    free(buf);
    return 0;
}
