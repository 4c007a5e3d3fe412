/* model.safetensors.index.json beside the tiny model's config.json and BF16
 * model.safetensors: shard names are files of that directory, so a
 * weight_map naming model.safetensors for every tensor loads. */
#include <stdio.h>
#include "fuzz.h"

static char dir[4200];

FUZZ_INIT
{
    snprintf(dir, sizeof dir, "%s", fuzz_tiny_hf_dir("hfi", "BF16"));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_load_hf(dir, "model.safetensors.index.json", data, size);
    return 0;
}
