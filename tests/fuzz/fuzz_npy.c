/* .npy: the header parser and the data reader, from memory (qsur_npy_parse). */
#include <string.h>
#include "fuzz.h"
#include "qsur/npy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    qsur_tensor *t = NULL;
    qsur_error err;
    int rc = qsur_npy_parse(data, size, "fuzz.npy", NULL, &t, NULL, &err);
    fuzz_check_error(rc, &err);
    fuzz_assert((rc == QSUR_OK) == (t != NULL), "a tensor exactly on success");
    if (t) {
        /* what was accepted fits in the input: 2 bytes per value at least */
        fuzz_assert((size_t)qsur_tensor_numel(t) * 2 <= size, "values fit in the file");
        qsur_tensor_free(t);
    }
    return 0;
}
