/* Hugging Face config.json: the input is the config of a directory whose
 * model.safetensors holds the tiny model, so a config that matches it loads. */
#include <stdio.h>
#include "fuzz.h"

static char dir[4200];

FUZZ_INIT
{
    snprintf(dir, sizeof dir, "%s", fuzz_tiny_hf_dir("hf", "F32"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write("hf/config.json", data, size);
    qsur_llama *m = NULL;
    qsur_error err;
    int rc = qsur_llama_load_hf(&m, dir, NULL, &err);
    fuzz_check_error(rc, &err);
    qsur_llama_free(m);
    return 0;
}
