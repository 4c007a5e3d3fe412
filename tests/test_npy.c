/* .npy: write -> read bit-exact, hand-built <f2/<f8/v2 files against values
 * worked out by hand, header alignment, and the atomic writer's guarantees. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/atomic_file.h"
#include "qsur/half.h"
#include "qsur/npy.h"

static void write_raw(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, n, f);
    fclose(f);
}

/* preamble + dict + padding + '\n' to 64 bytes for v1/v2 */
static size_t npy_header(unsigned char *o, int major, const char *dict)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t hlen = dl + 1 + (64 - (pre + dl + 1) % 64) % 64;
    memcpy(o, "\x93NUMPY", 6);
    o[6] = (unsigned char)major;
    o[7] = 0;
    o[8] = (unsigned char)hlen;
    o[9] = (unsigned char)(hlen >> 8);
    if (major != 1)
        o[10] = o[11] = 0;
    memcpy(o + pre, dict, dl);
    memset(o + pre + dl, ' ', hlen - dl - 1);
    o[pre + hlen - 1] = '\n';
    return pre + hlen;
}

int main(void)
{
    const char *dir = check_tmpdir();
    char path[4200];
    qsur_error err;

    /* Round trip, including awkward floats (subnormal, -0, max). */
    qsur_tensor *t, *back;
    int64_t shape[3] = {3, 5, 7};
    CHECK_OK(qsur_tensor_new(&t, "x", 3, shape, &err), err);
    for (int i = 0; i < 105; i++)
        t->data[i] = (float)sin(i * 0.37) * powf(10.0f, (float)(i % 7) - 3);
    t->data[0] = -0.0f;
    t->data[1] = 1e-42f;
    t->data[2] = 3.4028235e38f;
    snprintf(path, sizeof path, "%s/rt.npy", dir);
    CHECK_OK(qsur_npy_write(path, t, &err), err);
    CHECK_OK(qsur_npy_read(path, NULL, &back, NULL, &err), err);
    if (back) {
        CHECK(strcmp(back->name, "rt") == 0);
        CHECK(back->ndim == 3 && back->shape[0] == 3 && back->shape[1] == 5 && back->shape[2] == 7);
        CHECK(memcmp(back->data, t->data, 105 * 4) == 0);
        qsur_tensor_free(back);
    }
    /* The header numpy expects: data 64-byte aligned, shape as a tuple. */
    FILE *f = fopen(path, "rb");
    unsigned char hdr[128];
    size_t got = fread(hdr, 1, sizeof hdr, f);
    fclose(f);
    CHECK(got == 128 && hdr[6] == 1 && hdr[8] + 10 == 128 && hdr[9] == 0 && hdr[127] == '\n');
    CHECK(memcmp(hdr + 10, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 5, 7), }", 62) == 0);
    qsur_tensor_free(t);

    /* 1-D writes the one-element tuple form "(4,)". */
    int64_t four = 4;
    CHECK_OK(qsur_tensor_new(&t, "v", 1, &four, &err), err);
    snprintf(path, sizeof path, "%s/v.npy", dir);
    CHECK_OK(qsur_npy_write(path, t, &err), err);
    f = fopen(path, "rb");
    got = fread(hdr, 1, 80, f);
    fclose(f);
    CHECK(got == 80 && memcmp(hdr + 10 + 50, "(4,), }", 7) == 0);
    qsur_tensor_free(t);

    /* <f2 by hand: 0x3C00 = 1.0, 0xC000 = -2.0, 0x7BFF = 65504, 0x0001 = 2^-24. */
    unsigned char buf[512];
    size_t n = npy_header(buf, 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }");
    const unsigned char h[8] = {0x00, 0x3C, 0x00, 0xC0, 0xFF, 0x7B, 0x01, 0x00};
    memcpy(buf + n, h, 8);
    snprintf(path, sizeof path, "%s/half.npy", dir);
    write_raw(path, buf, n + 8);
    CHECK_OK(qsur_npy_read(path, "h", &t, NULL, &err), err);
    if (t) {
        CHECK(strcmp(t->name, "h") == 0);
        CHECK(t->data[0] == 1.0f && t->data[1] == -2.0f && t->data[2] == 65504.0f);
        CHECK(t->data[3] == ldexpf(1.0f, -24));
        qsur_tensor_free(t);
    }
    /* <f8, v2.0 header: 0.1 rounds to the nearest float, -3.5 is exact. */
    n = npy_header(buf, 2, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }");
    double dv[2] = {0.1, -3.5};
    for (int k = 0; k < 2; k++) {
        uint64_t u;
        memcpy(&u, &dv[k], 8);
        for (int b = 0; b < 8; b++)
            buf[n + 8 * (size_t)k + (size_t)b] = (unsigned char)(u >> (8 * b));
    }
    snprintf(path, sizeof path, "%s/dbl.v2.npy", dir);
    write_raw(path, buf, n + 16);
    CHECK_OK(qsur_npy_read(path, NULL, &t, NULL, &err), err);
    if (t) {
        CHECK(strcmp(t->name, "dbl.v2") == 0);  /* only the last extension goes */
        CHECK(t->data[0] == 0.1f && t->data[1] == -3.5f);
        qsur_tensor_free(t);
    }
    /* A double beyond float range is refused rather than turned into Inf. */
    dv[0] = 1e300;
    uint64_t u;
    memcpy(&u, &dv[0], 8);
    for (int b = 0; b < 8; b++)
        buf[n + (size_t)b] = (unsigned char)(u >> (8 * b));
    write_raw(path, buf, n + 16);
    CHECK(qsur_npy_read(path, NULL, &t, NULL, &err) == QSUR_ERR_NUMERIC && t == NULL);

    /* Half conversions in the narrowing direction: round to nearest even. */
    CHECK(qsur_f32_to_f16(1.0f) == 0x3C00 && qsur_f32_to_f16(-2.0f) == 0xC000);
    CHECK(qsur_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3C00);              /* tie -> even */
    CHECK(qsur_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3C02);          /* tie -> even */
    CHECK(qsur_f32_to_f16(65520.0f) == 0x7C00 && qsur_f32_to_f16(65519.0f) == 0x7BFF);
    CHECK(qsur_f32_to_f16(ldexpf(1, -25)) == 0x0000);                    /* tie -> even 0 */
    CHECK(qsur_f32_to_f16(ldexpf(3, -26)) == 0x0001);
    CHECK(qsur_f32_to_bf16(1.0f) == 0x3F80 && qsur_bf16_to_f32(0xC040) == -3.0f);
    CHECK(qsur_f32_to_bf16(1.0f + ldexpf(1, -8)) == 0x3F80);             /* tie -> even */
    int exact = 1;
    for (uint32_t k = 0; k < 0x7C00; k++)  /* every finite positive half survives */
        exact &= qsur_f32_to_f16(qsur_f16_to_f32((uint16_t)k)) == k;
    CHECK(exact);

    /* Atomic writer: abort leaves nothing; a failed write keeps the old file. */
    qsur_atomic_file af;
    snprintf(path, sizeof path, "%s/atomic.dat", dir);
    CHECK_OK(qsur_atomic_open(&af, path, &err), err);
    CHECK_OK(qsur_atomic_write(&af, "abc", 3, &err), err);
    qsur_atomic_abort(&af);
    CHECK(fopen(path, "rb") == NULL);
    DIR *d = opendir(dir);
    struct dirent *e;
    int tmps = 0;
    while ((e = readdir(d)))
        tmps += strstr(e->d_name, ".tmp-") != NULL;
    closedir(d);
    CHECK(tmps == 0);
    snprintf(path, sizeof path, "%s/no/such/dir/x.npy", dir);
    CHECK_OK(qsur_tensor_new(&t, "v", 1, &four, &err), err);
    CHECK(qsur_npy_write(path, t, &err) == QSUR_ERR_IO && strstr(err.msg, "x.npy"));
    qsur_tensor_free(t);
    return check_done();
}
