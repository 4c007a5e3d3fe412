/* model.safetensors.index.json: the input is the index of a directory with
 * the tiny model's config.json and model.safetensors (shard names are files
 * of that directory, so a weight_map naming model.safetensors loads). */
#include <stdio.h>
#include "fuzz.h"

static char dir[4200];

FUZZ_INIT
{
    snprintf(dir, sizeof dir, "%s", fuzz_tiny_hf_dir("hfi", "BF16"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_write("hfi/model.safetensors.index.json", data, size);
    qsur_llama *m = NULL;
    qsur_error err;
    int rc = qsur_llama_load_hf(&m, dir, NULL, &err);
    fuzz_check_error(rc, &err);
    qsur_llama_free(m);
    return 0;
}
