/* A table of malformed files, each generated here: every one must be refused
 * by qsur_load_file with an error code, without crashing (ASan build), with
 * a message naming the file and saying what was wrong, and with the
 * workspace left untouched. */
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "check.h"
#include "qsur/error.h"
#include "qsur/llama2c.h"
#include "qsur/loader.h"
#include "qsur/workspace.h"

typedef struct {
    unsigned char *b;
    size_t n, cap;
} bytes;

static void put(bytes *o, const void *p, size_t n)
{
    if (o->n + n > o->cap) {
        o->cap = (o->n + n) * 2 + 64;
        o->b = realloc(o->b, o->cap);
    }
    memcpy(o->b + o->n, p, n);
    o->n += n;
}
static void put_u32(bytes *o, uint32_t v)
{
    unsigned char c[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 24)};
    put(o, c, 4);
}
static void put_f32(bytes *o, float f, size_t n)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    for (size_t i = 0; i < n; i++)
        put_u32(o, u);
}
static void put_u64(bytes *o, uint64_t v)
{
    put_u32(o, (uint32_t)v);
    put_u32(o, (uint32_t)(v >> 32));
}

/* A v1 .npy with the given dict; hlen_fix != 0 overrides the length field. */
static bytes npy(int major, const char *dict, unsigned hlen_fix)
{
    bytes o = {0};
    unsigned char pre[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', (unsigned char)major, 0};
    put(&o, pre, 8);
    size_t hl = strlen(dict) + 1;
    size_t pre_n = major == 1 ? 10 : 12;
    size_t pad = (64 - (pre_n + hl) % 64) % 64;
    unsigned hlen = hlen_fix ? hlen_fix : (unsigned)(hl + pad);
    if (major == 1) {
        unsigned char l[2] = {(unsigned char)hlen, (unsigned char)(hlen >> 8)};
        put(&o, l, 2);
    } else {
        put_u32(&o, hlen);
    }
    put(&o, dict, strlen(dict));
    for (size_t i = 0; i < pad; i++)
        put(&o, " ", 1);
    put(&o, "\n", 1);
    return o;
}

static bytes st(const char *json, size_t data_bytes, float fill)
{
    bytes o = {0};
    put_u64(&o, strlen(json));
    put(&o, json, strlen(json));
    put_f32(&o, fill, data_bytes / 4);
    return o;
}

/* A llama2c checkpoint: dim 8, hidden 16, 1 layer, 2 heads, 1 kv head,
 * vocab 4, seq 4, shared; header values overridable. */
static bytes l2c(const int32_t h[7], long extra_floats, float fill)
{
    qsur_llama2c_config c = {8, 16, 1, 2, 1, 4, 4, 1};
    uint64_t want = 0;
    qsur_error e;
    qsur_llama2c_file_bytes(&c, &want, &e);
    bytes o = {0};
    for (int i = 0; i < 7; i++)
        put_u32(&o, (uint32_t)h[i]);
    put_f32(&o, fill, (size_t)((long)(want - 28) / 4 + extra_floats));
    return o;
}

typedef struct {
    const char *file;
    bytes content;
    int code;            /* expected qsur_status */
    const char *expect;  /* substring of the message */
} bad_case;

int main(void)
{
    const char *dir = check_tmpdir();
    const int32_t good[7] = {8, 16, 1, 2, 1, 4, 4};
    const int32_t heads3[7] = {8, 16, 1, 3, 1, 4, 4};
    const int32_t kv3[7] = {8, 16, 1, 4, 3, 4, 4};
    const int32_t negdim[7] = {-64, 16, 1, 2, 1, 4, 4};
    const int32_t zerolayers[7] = {8, 16, 0, 2, 1, 4, 4};
    const char *F4 = "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }";
    const char *okst = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}";
    bytes b;
    bad_case cases[96];
    int nc = 0;
#define ADD(f, c, code_, s) cases[nc++] = (bad_case){f, c, code_, s}

    /* ---- npy ---- */
    ADD("empty.npy", (bytes){0}, QSUR_ERR_FORMAT, "empty file");
    b = (bytes){0}; put(&b, "\x93NUM", 4);
    ADD("short.npy", b, QSUR_ERR_FORMAT, "shorter than the 10-byte");
    b = npy(1, F4, 0); b.b[1] = 'X'; put_f32(&b, 1, 16);
    ADD("badmagic.npy", b, QSUR_ERR_FORMAT, "bad magic");
    b = npy(1, F4, 0); put_f32(&b, 1, 8);
    ADD("truncated.npy", b, QSUR_ERR_FORMAT, "needs 64 data bytes but the file holds 32");
    b = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (10,), }", 0); put_f32(&b, 1, 12);
    ADD("lying_shape.npy", b, QSUR_ERR_FORMAT, "needs 40 data bytes but the file holds 48");
    b = npy(1, "{'descr': '<f4', 'fortran_order': True, 'shape': (4, 4), }", 0); put_f32(&b, 1, 16);
    ADD("fortran.npy", b, QSUR_ERR_FORMAT, "fortran_order True");
    b = npy(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (4, 4), }", 0); put_f32(&b, 1, 16);
    ADD("int32.npy", b, QSUR_ERR_FORMAT, "dtype '<i4' not supported");
    b = npy(1, "{'descr': '>f4', 'fortran_order': False, 'shape': (4, 4), }", 0); put_f32(&b, 1, 16);
    ADD("bigendian.npy", b, QSUR_ERR_FORMAT, "big-endian");
    b = npy(1, "{'descr': '|O', 'fortran_order': False, 'shape': (4, 4), }", 0); put_f32(&b, 1, 32);
    ADD("object.npy", b, QSUR_ERR_FORMAT, "object array");
    b = npy(1, F4, 5000); put_f32(&b, 1, 16);
    ADD("hdr_past_eof.npy", b, QSUR_ERR_FORMAT, "runs past the end");
    b = npy(2, F4, 0x7FFFFFF0u); put_f32(&b, 1, 16);
    ADD("hdr_past_eof_v2.npy", b, QSUR_ERR_FORMAT, "runs past the end");
    b = npy(1, F4, 0); put_f32(&b, 1, 15); put_f32(&b, NAN, 1);
    ADD("nan.npy", b, QSUR_ERR_NUMERIC, "non-finite value (nan) at element 15");
    b = npy(1, F4, 0); put_f32(&b, INFINITY, 1); put_f32(&b, 1, 15);
    ADD("inf.npy", b, QSUR_ERR_NUMERIC, "non-finite value (inf) at element 0");
    b = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 3), }", 0);
    ADD("zero_size.npy", b, QSUR_ERR_FORMAT, "zero-size");
    b = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (), }", 0); put_f32(&b, 1, 1);
    ADD("scalar.npy", b, QSUR_ERR_FORMAT, "0 dimensions");
    b = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 2), }", 0); put_f32(&b, 1, 2);
    ADD("five_dims.npy", b, QSUR_ERR_FORMAT, "more than 4 dimensions");
    b = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }", 0);
    ADD("shape_overflow.npy", b, QSUR_ERR_FORMAT, "overflows");
    b = npy(7, F4, 0); put_f32(&b, 1, 16);
    ADD("version7.npy", b, QSUR_ERR_FORMAT, "version 7.0");
    b = npy(1, "{'descr': '<f4', 'shape': (4, 4), }", 0); put_f32(&b, 1, 16);
    ADD("no_fortran_key.npy", b, QSUR_ERR_FORMAT, "lacks fortran_order");
    b = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4)", 0); put_f32(&b, 1, 16);
    ADD("unclosed_dict.npy", b, QSUR_ERR_FORMAT, "expected ',' or '}'");
    /* issue 13: numpy's literal_eval refuses anything after the dict and any NUL */
    b = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), } x", 0); put_f32(&b, 1, 16);
    ADD("garbage_after_dict.npy", b, QSUR_ERR_FORMAT, "unexpected 'x' after the closing '}'");
    b = npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }}", 0); put_f32(&b, 1, 16);
    ADD("second_brace.npy", b, QSUR_ERR_FORMAT, "after the closing '}'");
    b = npy(1, "{'descr': '<f4@', 'fortran_order': False, 'shape': (4, 4), }", 0); put_f32(&b, 1, 16);
    *(unsigned char *)memchr(b.b, '@', b.n) = 0;
    ADD("descr_nul.npy", b, QSUR_ERR_FORMAT, "NUL byte");
    b = npy(1, "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (4, 4), }", 0);
    put_f32(&b, 1, 16);
    ADD("repeated_key.npy", b, QSUR_ERR_FORMAT, "repeated key 'descr'");

    /* ---- safetensors ---- */
    ADD("empty.safetensors", (bytes){0}, QSUR_ERR_FORMAT, "empty file");
    b = (bytes){0}; put(&b, "\x10\0\0\0\0", 5);
    ADD("short.safetensors", b, QSUR_ERR_FORMAT, "shorter than the 8-byte");
    b = st(okst, 16, 1); b.b[0] = 0xFF; b.b[1] = 0x7F;
    ADD("hdr_past_eof.safetensors", b, QSUR_ERR_FORMAT, "header length 32767 runs past the end");
    b = st(okst, 16, 1); memset(b.b, 0xFF, 8);
    ADD("hdr_huge.safetensors", b, QSUR_ERR_FORMAT, "runs past the end");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 8, 1);
    ADD("offsets_past_end.safetensors", b, QSUR_ERR_FORMAT, "past the end of the data section");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
           "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 24, 1);
    ADD("overlap.safetensors", b, QSUR_ERR_FORMAT, "overlap");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("shape_vs_bytes.safetensors", b, QSUR_ERR_FORMAT, "24 bytes but data_offsets span 16");
    b = st("{\"int32_w\":{\"dtype\":\"I32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("dtype_i32.safetensors", b, QSUR_ERR_FORMAT, "tensor int32_w: dtype I32 not supported");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("shape_overflow.safetensors", b, QSUR_ERR_FORMAT, "overflows 64 bits");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("shape_literal_too_big.safetensors", b, QSUR_ERR_FORMAT, "non-negative 64-bit integer");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[-4],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("negative_shape.safetensors", b, QSUR_ERR_FORMAT, "non-negative 64-bit integer");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
           "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, 1);
    ADD("duplicate.safetensors", b, QSUR_ERR_FORMAT, "duplicate key \"a\"");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},}", 16, 1);
    ADD("trailing_comma.safetensors", b, QSUR_ERR_FORMAT, "malformed JSON");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}", 16, 1);
    ADD("unclosed.safetensors", b, QSUR_ERR_FORMAT, "malformed JSON");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2]}}", 16, 1);
    ADD("no_offsets.safetensors", b, QSUR_ERR_FORMAT, "missing or non-string data_offsets");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16, 1);
    ADD("begin_gt_end.safetensors", b, QSUR_ERR_FORMAT, "begin > end");
    b = st("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, 1);
    ADD("gap.safetensors", b, QSUR_ERR_FORMAT, "gap of 8 unused bytes");
    b = st(okst, 16, NAN);
    ADD("nan.safetensors", b, QSUR_ERR_NUMERIC, "tensor a has a non-finite value");
    b = st("{\"h\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 0, 0);
    put(&b, "\x80\x3f\x80\x7f", 4);  /* bf16 1.0, +Inf */
    ADD("bf16_inf.safetensors", b, QSUR_ERR_NUMERIC, "non-finite value (inf) at element 1");
    b = st("[1,2,3]", 0, 0);
    ADD("array_header.safetensors", b, QSUR_ERR_FORMAT, "is a JSON array");
    /* issue 13: names must be UTF-8 (the reference reader parses the header as a Rust str) */
    b = st("{\"a\xff\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("name_not_utf8.safetensors", b, QSUR_ERR_FORMAT, "invalid UTF-8");
    b = st("{\"a\xc0\xaf\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("name_overlong_utf8.safetensors", b, QSUR_ERR_FORMAT, "invalid UTF-8");
    b = st("{\"a\xed\xa0\x80\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("name_surrogate_utf8.safetensors", b, QSUR_ERR_FORMAT, "invalid UTF-8");
    b = st("{\"a\xe2\x82\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("name_truncated_utf8.safetensors", b, QSUR_ERR_FORMAT, "invalid UTF-8");
    b = st("{\"__metadata__\":{\"k\":3},\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, 1);
    ADD("bad_metadata.safetensors", b, QSUR_ERR_FORMAT, "__metadata__ \"k\" is a number");

    /* ---- llama2c ---- */
    ADD("empty.bin", (bytes){0}, QSUR_ERR_FORMAT, "empty file");
    b = l2c(good, 0, 0.01f); b.n = 10;
    ADD("short.bin", b, QSUR_ERR_FORMAT, "shorter than the 28-byte llama2c header");
    b = l2c(good, -5, 0.01f);
    ADD("truncated.bin", b, QSUR_ERR_FORMAT, "truncated");
    b = l2c(good, 3, 0.01f);
    ADD("trailing.bin", b, QSUR_ERR_FORMAT, "trailing bytes");
    b = l2c(heads3, 0, 0.01f);
    ADD("heads3.bin", b, QSUR_ERR_FORMAT, "n_heads = 3 does not divide dim = 8");
    b = l2c(kv3, 0, 0.01f);
    ADD("kv3.bin", b, QSUR_ERR_FORMAT, "n_kv_heads = 3 does not divide n_heads = 4");
    b = l2c(negdim, 0, 0.01f);
    ADD("negdim.bin", b, QSUR_ERR_FORMAT, "dim = -64");
    b = l2c(zerolayers, 0, 0.01f);
    ADD("zerolayers.bin", b, QSUR_ERR_FORMAT, "n_layers = 0");
    b = l2c(good, 0, NAN);
    ADD("nan.bin", b, QSUR_ERR_NUMERIC, "tok_embeddings has a non-finite value");

    /* ---- no format at all ---- */
    b = (bytes){0}; put(&b, "hello, world, this is not a tensor file\n", 40);
    ADD("notes.txt", b, QSUR_ERR_FORMAT, "unknown file format");

    CHECK_MSG(nc >= 20, "only %d cases", nc);
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    for (int i = 0; i < nc; i++) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s", dir, cases[i].file);
        FILE *f = fopen(path, "wb");
        if (cases[i].content.n)
            fwrite(cases[i].content.b, 1, cases[i].content.n, f);
        fclose(f);
        free(cases[i].content.b);
        qsur_error err;
        strcpy(err.msg, "(no message)");
        int rc = qsur_load_file(&ws, path, NULL, NULL, &err);
        CHECK_MSG(rc == -cases[i].code, "%s: rc %d, expected %d (%s)", cases[i].file, rc,
                  -cases[i].code, err.msg);
        CHECK_MSG(strstr(err.msg, cases[i].expect) != NULL, "%s: message \"%s\" lacks \"%s\"",
                  cases[i].file, err.msg, cases[i].expect);
        CHECK_MSG(strstr(err.msg, cases[i].file) != NULL, "%s: message \"%s\" lacks the file name",
                  cases[i].file, err.msg);
        CHECK_MSG(strchr(err.msg, '\n') == NULL, "%s: message has a newline", cases[i].file);
        CHECK_MSG(ws.count == 0, "%s: workspace changed (%d tensors)", cases[i].file, ws.count);
    }

    /* Files that cannot be read at all. */
    char path[4200];
    qsur_error err;
    snprintf(path, sizeof path, "%s/does_not_exist.npy", dir);
    CHECK(qsur_load_file(&ws, path, NULL, NULL, &err) == -QSUR_ERR_IO);
    CHECK(strstr(err.msg, "does_not_exist.npy") && strstr(err.msg, "cannot open"));
    CHECK(qsur_load_file(&ws, dir, NULL, NULL, &err) == -QSUR_ERR_IO);
    CHECK(strstr(err.msg, "not a regular file") != NULL);
    if (geteuid() != 0) {  /* root reads anything */
        snprintf(path, sizeof path, "%s/unreadable.npy", dir);
        int fd = open(path, O_CREAT | O_WRONLY, 0000);
        close(fd);
        CHECK(qsur_load_file(&ws, path, NULL, NULL, &err) == -QSUR_ERR_IO);
        CHECK(strstr(err.msg, "unreadable.npy") && strstr(err.msg, "cannot open"));
    }
    CHECK(ws.count == 0);

    /* Sanity of the generators: the unbroken versions load. */
    bytes ok = npy(1, F4, 0);
    put_f32(&ok, 0.5f, 16);
    snprintf(path, sizeof path, "%s/good.npy", dir);
    FILE *f = fopen(path, "wb");
    fwrite(ok.b, 1, ok.n, f);
    fclose(f);
    free(ok.b);
    CHECK(qsur_load_file(&ws, path, NULL, NULL, &err) == 1);
    ok = st(okst, 16, 2);
    snprintf(path, sizeof path, "%s/good.safetensors", dir);
    f = fopen(path, "wb");
    fwrite(ok.b, 1, ok.n, f);
    fclose(f);
    free(ok.b);
    CHECK(qsur_load_file(&ws, path, NULL, NULL, &err) == 1);
    /* well-formed UTF-8 names (2- and 4-byte sequences) still load */
    ok = st("{\"caf\xc3\xa9\xf0\x9f\x98\x80\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, 2);
    snprintf(path, sizeof path, "%s/utf8.safetensors", dir);
    f = fopen(path, "wb");
    fwrite(ok.b, 1, ok.n, f);
    fclose(f);
    free(ok.b);
    CHECK_MSG(qsur_load_file(&ws, path, NULL, NULL, &err) == 1, "%s", err.msg);
    CHECK(qsur_workspace_find(&ws, "caf\xc3\xa9\xf0\x9f\x98\x80") != NULL);
    ok = l2c(good, 0, 0.01f);
    snprintf(path, sizeof path, "%s/good.bin", dir);
    f = fopen(path, "wb");
    fwrite(ok.b, 1, ok.n, f);
    fclose(f);
    free(ok.b);
    CHECK_MSG(qsur_load_file(&ws, path, "g.", NULL, &err) == 11, "%s", err.msg);
    CHECK(ws.count == 14 && qsur_workspace_find(&ws, "good") &&
          qsur_workspace_find(&ws, "a") && qsur_workspace_find(&ws, "g.norm"));
    qsur_workspace_clear(&ws);
    printf("%d malformed files checked\n", nc);
    return check_done();
}
