/* Hugging Face config.json: the input is the config of a directory whose
 * model.safetensors holds the tiny model (F32), so a config that matches it loads. */
#include <stdio.h>
#include "fuzz.h"

static char dir[4200];

FUZZ_INIT
{
    snprintf(dir, sizeof dir, "%s", fuzz_tiny_hf_dir("hf", "F32"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_load_hf(dir, "config.json", data, size);
    return 0;
}
