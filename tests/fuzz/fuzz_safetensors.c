/* safetensors: header validation on open, then every tensor read. */
#include "fuzz.h"
#include "qsur/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_write("fuzz.safetensors", data, size);
    qsur_safetensors *st = NULL;
    qsur_error err;
    int rc = qsur_safetensors_open(&st, path, &err);
    fuzz_check_error(rc, &err);
    if (rc)
        return 0;
    for (int i = 0; i < st->count; i++) {
        const qsur_st_entry *e = &st->entries[i];
        fuzz_assert(e->begin <= e->end && st->data_start + e->end <= size, "entries inside the file");
        qsur_tensor *t = NULL;
        rc = qsur_safetensors_read_tensor(st, i, NULL, &t, NULL, &err);
        fuzz_check_error(rc, &err);
        qsur_tensor_free(t);
    }
    qsur_safetensors_close(st);
    return 0;
}
