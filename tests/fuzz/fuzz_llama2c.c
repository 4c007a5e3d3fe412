/* llama2.c checkpoints: the header (from memory), then a full load of what the
 * header accepts (a file of exactly the size the header implies). */
#include "fuzz.h"
#include "qsur/llama2c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qsur_llama2c_config cfg;
    qsur_error err;
    int rc = qsur_llama2c_parse_header(data, size, "fuzz.bin", &cfg, &err);
    fuzz_check_error(rc, &err);
    const char *path = fuzz_write("fuzz.bin", data, size);
    qsur_llama *m = NULL;
    int rc2 = qsur_llama_load_llama2c(&m, path, NULL, &err);
    fuzz_check_error(rc2, &err);
    fuzz_assert(rc2 != QSUR_OK || rc == QSUR_OK, "the loader accepts no file the header check refuses");
    qsur_llama_free(m);
    return 0;
}
