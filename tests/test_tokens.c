/* Token files (src/tokens.c): the three formats decode to the same ids,
 * written here byte by byte; each bad file is a one-line error naming the
 * file; max_seqs reads only what is asked for; and reading costs at most the
 * ids it keeps (peak RSS, measured around the call). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "check.h"
#include "qsur/tokens.h"

static char path_buf[4200];

static const char *tmp_file(const char *name, const void *b, size_t n)
{
    snprintf(path_buf, sizeof path_buf, "%s/%s", check_tmpdir(), name);
    FILE *f = fopen(path_buf, "wb");
    if (n)
        fwrite(b, 1, n, f);
    fclose(f);
    return path_buf;
}

/* A v1 .npy image: preamble, dict padded to 64 bytes, then `data`. */
static size_t npy_image(unsigned char *o, const char *dict, const void *data, size_t n)
{
    size_t dl = strlen(dict), hlen = dl + 1 + (64 - (10 + dl + 1) % 64) % 64;
    memcpy(o, "\x93NUMPY\x01\x00", 8);
    o[8] = (unsigned char)hlen;
    o[9] = (unsigned char)(hlen >> 8);
    memcpy(o + 10, dict, dl);
    memset(o + 10 + dl, ' ', hlen - dl - 1);
    o[10 + hlen - 1] = '\n';
    memcpy(o + 10 + hlen, data, n);
    return 10 + hlen + n;
}

static void le(unsigned char *o, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++)
        o[i] = (unsigned char)(v >> (8 * i));
}

/* Loads and expects failure with `want` and the file's name in one line. */
static void expect_fail(const char *path, int seq_len, int vocab, const char *want)
{
    qsur_tokens t;
    qsur_error err;
    int rc = qsur_tokens_load(&t, path, seq_len, vocab, &err);
    CHECK_MSG(rc != QSUR_OK && t.ids == NULL, "%s: accepted", path);
    CHECK_MSG(rc == QSUR_OK || strstr(err.msg, want), "%s: message \"%s\" lacks \"%s\"", path, err.msg, want);
    CHECK_MSG(rc == QSUR_OK || (strstr(err.msg, path) && !strchr(err.msg, '\n')),
              "%s: message \"%s\" does not name the file in one line", path, err.msg);
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

/* Peak RSS first, while the process is still small: a 32 MB .u32 file must
 * cost about its size (old loader: raw bytes + ids), seqs=1 of it almost
 * nothing. */
static void memory_bounds(void)
{
    const int64_t n = 8 << 20; /* 8 Mi tokens = 32 MiB as .u32 */
    snprintf(path_buf, sizeof path_buf, "%s/big.u32", check_tmpdir());
    FILE *f = fopen(path_buf, "wb");
    unsigned char buf[4096];
    for (int64_t i = 0; i < n; i += 1024) {
        for (int j = 0; j < 1024; j++)
            le(buf + 4 * j, (uint64_t)((i + j) % 1000), 4);
        fwrite(buf, 1, sizeof buf, f);
    }
    fclose(f);
    qsur_tokens t;
    qsur_error err;
    long base = peak_rss_kb();
    CHECK_OK(qsur_tokens_read(&t, path_buf, 256, 1, 1000, &err), err);
    long one = peak_rss_kb() - base;
    CHECK(t.n == 256 && t.ids[255] == 255);
    qsur_tokens_free(&t);
    CHECK_MSG(one < 2048, "seqs=1 of a 32 MiB file raised peak RSS by %ld KiB (expected < 2 MiB)", one);
    base = peak_rss_kb();
    CHECK_OK(qsur_tokens_load(&t, path_buf, 256, 1000, &err), err);
    long all = peak_rss_kb() - base;
    CHECK(t.n == n && t.ids[n - 1] == (int)((n - 1) % 1000));
    qsur_tokens_free(&t);
    long file_kb = (long)(n * 4 / 1024);
    CHECK_MSG(all <= file_kb + file_kb / 8 + 2048, "reading a %ld KiB .u32 file raised peak RSS by %ld KiB "
              "(expected about the file's size)", file_kb, all);
    printf("peak RSS: seqs=1 +%ld KiB, whole %ld KiB file +%ld KiB\n", one, file_kb, all);
}

int main(void)
{
    memory_bounds();
    qsur_error err;
    qsur_tokens t;
    const int ids[8] = {0, 1, 255, 256, 1000, 65535, 7, 42};
    unsigned char u16[16], u32[32], i64[64], img[512];
    for (int i = 0; i < 8; i++) {
        le(u16 + 2 * i, (uint64_t)ids[i], 2);
        le(u32 + 4 * i, (uint64_t)ids[i], 4);
        le(i64 + 8 * i, (uint64_t)ids[i], 8);
    }

    /* ---- the same ids from every format ---- */
    CHECK(qsur_tokens_format_of("a/b.u32") == QSUR_TOKENS_U32 && qsur_tokens_format_of("x.npy") == QSUR_TOKENS_NPY &&
          qsur_tokens_format_of("x.u16") == QSUR_TOKENS_U16 && qsur_tokens_format_of("d.npy/x") == QSUR_TOKENS_U16);
    const char *files[5];
    char names[5][4200];
    snprintf(names[0], 4200, "%s", tmp_file("t.u16", u16, sizeof u16));
    snprintf(names[1], 4200, "%s", tmp_file("t.u32", u32, sizeof u32));
    size_t k = npy_image(img, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 4), }", u32, sizeof u32);
    snprintf(names[2], 4200, "%s", tmp_file("t.npy", img, k));
    k = npy_image(img, "{'descr': '<i8', 'fortran_order': False, 'shape': (8,), }", i64, sizeof i64);
    snprintf(names[3], 4200, "%s", tmp_file("t64.npy", img, k));
    k = npy_image(img, "{'descr': '<u2', 'fortran_order': False, 'shape': (8,), }", u16, sizeof u16);
    snprintf(names[4], 4200, "%s", tmp_file("t16.npy", img, k));
    for (int f = 0; f < 5; f++) {
        files[f] = names[f];
        CHECK_OK(qsur_tokens_load(&t, files[f], 4, 65536, &err), err);
        CHECK_MSG(t.n == 8 && t.seq_len == 4 && t.ids && memcmp(t.ids, ids, sizeof ids) == 0,
                  "%s: ids differ", files[f]);
        qsur_tokens_free(&t);
        /* max_seqs: only the first sequence is read; more than there are: all */
        CHECK_OK(qsur_tokens_read(&t, files[f], 4, 1, 65536, &err), err);
        CHECK(t.n == 4 && t.ids[3] == 256);
        qsur_tokens_free(&t);
        CHECK_OK(qsur_tokens_read(&t, files[f], 4, 99, 65536, &err), err);
        CHECK(t.n == 8);
        qsur_tokens_free(&t);
        /* an id >= vocab: index and value named */
        expect_fail(files[f], 4, 65535, "token 5 = 65535 is not in [0, 65535)");
    }

    /* ---- big vocabularies: ids above 65535 need .u32 / .npy ---- */
    le(u32 + 4 * 6, 128255, 4);
    const char *p = tmp_file("llama3.u32", u32, sizeof u32);
    CHECK_OK(qsur_tokens_load(&t, p, 8, 128256, &err), err);
    CHECK(t.n == 8 && t.ids[6] == 128255);
    qsur_tokens_free(&t);
    expect_fail(p, 8, 128255, "token 6 = 128255 is not in [0, 128255)");
    p = tmp_file("llama3.u16", u16, sizeof u16);
    expect_fail(p, 8, 128256, "uint16 tokens cannot address the model's vocabulary of 128256");
    expect_fail(p, 8, 65537, "give the tokens as a .u32 or int32 .npy file");
    CHECK_OK(qsur_tokens_load(&t, p, 8, 65536, &err), err); /* 65536 ids: all addressable */
    qsur_tokens_free(&t);

    /* ---- bad files ---- */
    expect_fail(tmp_file("odd.u16", u16, 15), 1, 65536, "15 bytes is not a multiple of 2");
    expect_fail(tmp_file("ragged.u32", u32, 30), 1, 200000, "30 bytes is not a multiple of 4");
    expect_fail(tmp_file("empty.u16", u16, 0), 1, 65536, "0 tokens is not a positive multiple");
    expect_fail(tmp_file("seven.u16", u16, 14), 2, 65536, "7 tokens is not a positive multiple of the sequence length 2");
    expect_fail(check_tmpdir(), 1, 65536, "not a regular file");
    int32_t neg[4] = {1, 2, -3, 4};
    unsigned char negb[16];
    for (int i = 0; i < 4; i++)
        le(negb + 4 * i, (uint64_t)(uint32_t)neg[i], 4);
    k = npy_image(img, "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", negb, 16);
    expect_fail(tmp_file("neg.npy", img, k), 4, 100, "token 2 = -3 is not in [0, 100)");
    k = npy_image(img, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", negb, 16);
    expect_fail(tmp_file("float.npy", img, k), 4, 100, "token dtype '<f4' not supported");
    k = npy_image(img, "{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }", negb, 16);
    expect_fail(tmp_file("short.npy", img, k), 1, 100, "needs 20 data bytes but the file holds 16");
    k = npy_image(img, "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), } junk", negb, 16);
    expect_fail(tmp_file("junk.npy", img, k), 1, 100, "after the closing '}'");
    k = npy_image(img, "{'descr': '<i4', 'fortran_order': False, 'shape': (4,), }", negb, 16);
    img[8] = 0xff; /* header length 65535 + 10 > file */
    expect_fail(tmp_file("hdr_past_eof.npy", img, k), 1, 100, "runs past the end of the file");
    expect_fail(tmp_file("tiny.npy", "\x93NUM", 4), 1, 100, "shorter than the 10-byte");
    /* v2 header declaring 4 GiB in a 100-byte file: refused before any allocation */
    unsigned char v2[100] = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0xf0, 0xff, 0xff, 0xff};
    expect_fail(tmp_file("hdr4g.npy", v2, sizeof v2), 1, 100, "runs past the end of the file");
    return check_done();
}
