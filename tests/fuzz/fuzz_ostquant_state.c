/* OSTQuant state files, loaded against the tiny model (the seeds are states
 * saved for it, so the fuzzer starts past the config and weight-hash checks). */
#include "fuzz.h"
#include "qsur/ostquant.h"

static qsur_llama *base;

FUZZ_INIT
{
    base = fuzz_tiny_model();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("state.safetensors", data, size);
    qsur_ostquant *o = NULL;
    qsur_error err;
    int rc = qsur_ostquant_load(&o, base, path, &err);
    fuzz_check_error(rc, &err);
    fuzz_assert((rc == QSUR_OK) == (o != NULL), "a state exactly on success");
    if (o)
        fuzz_assert(o->best_step <= o->step && o->nlog <= o->step + 1, "loaded counters in range");
    qsur_ostquant_free(o);
    return 0;
}
