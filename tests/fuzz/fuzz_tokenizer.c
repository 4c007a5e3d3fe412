/* Tokenizer files, from memory. Byte 0 picks the kind: even, a Hugging Face
 * tokenizer.json (byte-level BPE or SentencePiece BPE) in the rest; odd, a
 * llama2.c tokenizer.bin in bytes 3.. with the vocabulary size hint in bytes
 * 1-2 (0: entries to the end). An accepted tokenizer then encodes a fixed
 * text and the first bytes of the input (any bytes, UTF-8 or not) and decodes
 * the ids again. */
#include <stdlib.h>
#include <string.h>
#include "fuzz.h"
#include "qsur/tokenizer.h"

static void exercise(const qsur_tokenizer *t, const char *text, size_t len)
{
    qsur_token_ids ids = {0};
    qsur_error err;
    int rc = qsur_tokenizer_encode(t, text, len, 1, &ids, &err);
    fuzz_check_error(rc, &err);
    int v = qsur_tokenizer_vocab_size(t);
    for (int64_t i = 0; !rc && i < ids.n; i++)
        fuzz_assert(ids.ids[i] >= 0 && ids.ids[i] < v, "ids inside the vocabulary");
    char *out = NULL;
    size_t n = 0;
    if (!rc) {
        rc = qsur_tokenizer_decode(t, ids.ids, ids.n, &out, &n, &err);
        fuzz_check_error(rc, &err);
        fuzz_assert(rc || strlen(out) <= n, "decode ends at its length");
    }
    free(out);
    free(ids.ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    qsur_tokenizer *t = NULL;
    qsur_error err;
    int rc = data[0] & 1
        ? qsur_tokenizer_load_llama2c(&t, data + 3, size - 3, data[1] | data[2] << 8, "fuzz.bin", &err)
        : qsur_tokenizer_load_hf_json(&t, (const char *)data + 1, size - 1, "fuzz.json", &err);
    fuzz_check_error(rc, &err);
    fuzz_assert((rc == QSUR_OK) == (t != NULL), "a tokenizer exactly on success");
    if (rc)
        return 0;
    static const char sample[] = "Hello, world! It's 2024 -- na\xc3\xafve caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\n\t  end";
    exercise(t, sample, sizeof sample - 1);
    exercise(t, (const char *)data, size < 256 ? size : 256);
    qsur_tokenizer_free(t);
    return 0;
}
