/* Token files. Input: byte 0 picks the format (bit 0-1: .u16 / .u32 / .npy)
 * and a Llama-3-sized vocabulary (bit 2), byte 1 the sequence length, byte 2
 * how many sequences to read, bytes 3-4 the vocabulary; the rest is the file. */
#include "fuzz.h"
#include "qsur/tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    static const char *const names[4] = {"t.u16", "t.u32", "t.npy", "t.bin"};
    const char *path = fuzz_write(names[data[0] & 3], data + 5, size - 5);
    int seq_len = 1 + data[1] % 16, max_seqs = data[2] % 4;
    int vocab = data[0] & 4 ? 128256 : 1 + (data[3] | data[4] << 8);
    qsur_tokens t;
    qsur_error err;
    int rc = qsur_tokens_read(&t, path, seq_len, max_seqs, vocab, &err);
    fuzz_check_error(rc, &err);
    if (rc == QSUR_OK) {
        fuzz_assert(t.n > 0 && t.n % seq_len == 0 && (max_seqs == 0 || t.n <= (int64_t)max_seqs * seq_len),
                    "whole sequences, no more than asked");
        fuzz_assert(t.n * 2 <= (int64_t)size, "ids fit in the file");
        for (int64_t i = 0; i < t.n; i++)
            fuzz_assert(t.ids[i] >= 0 && t.ids[i] < vocab, "ids inside the vocabulary");
    } else {
        fuzz_assert(t.ids == NULL, "nothing kept on failure");
    }
    qsur_tokens_free(&t);
    return 0;
}
