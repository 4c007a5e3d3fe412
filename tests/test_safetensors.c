/* safetensors and the JSON parser: F32 round trip bit-exact, F16/BF16 files
 * against hand-computed bit patterns, metadata, and JSON corner cases. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/json.h"
#include "qsur/loader.h"
#include "qsur/safetensors.h"

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static void test_json(void)
{
    qsur_error err;
    qsur_json *j;
    const char *txt = " {\"a\": [1, -2, 3.5e2, 0.00001, 9223372036854775807, 1e400],"
                      " \"s\": \"q\\\"\\\\\\/\\n\\u00e9\\ud83d\\ude00\", \"t\": true,"
                      " \"n\": null, \"o\": {}} ";
    CHECK(qsur_json_parse(txt, strlen(txt), "t.json", &j, &err) == QSUR_ERR_FORMAT);
    /* 1e400 overflows a double: that is an error, not Inf */
    CHECK(j == NULL && strstr(err.msg, "out of range"));
    txt = " {\"a\": [1, -2, 3.5e2, 0.00001, 9223372036854775807, 10000000000000000000,"
          " 1e-5, 1.5],"
          " \"s\": \"q\\\"\\\\\\/\\n\\u00e9\\ud83d\\ude00\", \"t\": true,"
          " \"n\": null, \"o\": {}} ";
    CHECK_OK(qsur_json_parse(txt, strlen(txt), "t.json", &j, &err), err);
    if (!j)
        return;
    const qsur_json *a = qsur_json_get(j, "a");
    CHECK(a && a->type == QSUR_JSON_ARRAY && a->count == 8);
    if (a && a->count == 8) {
        CHECK(a->items[0]->is_int && a->items[0]->integer == 1);
        CHECK(a->items[1]->is_int && a->items[1]->integer == -2);
        CHECK(!a->items[2]->is_int && a->items[2]->number == 350.0);
        CHECK(a->items[3]->number == 1e-5 && a->items[6]->number == 1e-5);
        CHECK(a->items[4]->is_int && a->items[4]->integer == INT64_MAX);
        CHECK(!a->items[5]->is_int && a->items[5]->number == 1e19);
        CHECK(a->items[7]->number == 1.5);
    }
    /* q " \ / newline e-acute (C3 A9) U+1F600 (F0 9F 98 80) */
    CHECK(strcmp(qsur_json_get_string(j, "s"), "q\"\\/\n\xC3\xA9\xF0\x9F\x98\x80") == 0);
    int bv = 0;
    CHECK(qsur_json_get_bool(j, "t", &bv) == 0 && bv == 1);
    CHECK(qsur_json_get(j, "n")->type == QSUR_JSON_NULL);
    CHECK(qsur_json_get(j, "o")->type == QSUR_JSON_OBJECT && qsur_json_get(j, "o")->count == 0);
    CHECK(qsur_json_get(j, "missing") == NULL);
    int64_t iv;
    CHECK(qsur_json_get_int(j, "s", &iv) == -1);
    qsur_json_free(j);

    const char *bad[] = {"{\"a\":1,}", "[1 2]", "{\"a\":01}", "{\"a\":1}x", "\"\\u0000\"",
                         "\"\\ud800\"", "{'a':1}", "[NaN]", "\"tab\there\"", "", "[1.]",
                         "{\"a\":1,\"a\":2}", "[-]", "tru"};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        int rc = qsur_json_parse(bad[k], strlen(bad[k]), "b.json", &j, &err);
        CHECK_MSG(rc == QSUR_ERR_FORMAT && j == NULL && strstr(err.msg, "b.json: malformed JSON"),
                  "accepted or wrong message for <%s>: %s", bad[k], err.msg);
    }
    /* Nesting is bounded: 100 '[' must fail cleanly, not blow the stack. */
    char deep[201];
    memset(deep, '[', 100);
    memset(deep + 100, ']', 100);
    deep[200] = 0;
    CHECK(qsur_json_parse(deep, 200, "d.json", &j, &err) == QSUR_ERR_FORMAT &&
          strstr(err.msg, "deeper"));
}

static void test_roundtrip(void)
{
    const char *dir = check_tmpdir();
    char path[4200];
    qsur_error err;
    qsur_tensor *a, *b, *c;
    int64_t s3[3] = {2, 3, 4};
    qsur_tensor_new(&a, "model.layers.0.w", 3, s3, &err);
    qsur_tensor_new2(&b, "weird \"name\"\\ok", 1, 3, &err);
    int64_t one = 5;
    qsur_tensor_new(&c, "v", 1, &one, &err);
    for (int i = 0; i < 24; i++)
        a->data[i] = (float)(cos(i * 1.7) * exp(i % 5 - 2.0));
    a->data[3] = 1e-40f;
    b->data[0] = 1.0f;    /* F16 0x3C00, BF16 0x3F80 */
    b->data[1] = -2.0f;   /* F16 0xC000, BF16 0xC000 */
    b->data[2] = 0.1f;    /* F16 0x2E66, BF16 0x3DCD */
    for (int i = 0; i < 5; i++)
        c->data[i] = (float)i - 2.0f;
    const qsur_tensor *ts[3] = {a, b, c};
    const char *meta[4] = {"format", "pt", "note", "tab\there"};
    snprintf(path, sizeof path, "%s/f32.safetensors", dir);
    CHECK_OK(qsur_safetensors_write(path, ts, 3, NULL, meta, 2, NULL, &err), err);

    qsur_safetensors *st;
    CHECK_OK(qsur_safetensors_open(&st, path, &err), err);
    if (st) {
        CHECK(st->count == 3 && st->data_start % 8 == 0);
        CHECK(strcmp(qsur_safetensors_meta(st, "format"), "pt") == 0);
        CHECK(strcmp(qsur_safetensors_meta(st, "note"), "tab\there") == 0);
        CHECK(qsur_safetensors_meta(st, "nope") == NULL);
        int i = qsur_safetensors_find(st, "weird \"name\"\\ok");
        CHECK(i == 1 && st->entries[1].begin == 96 && st->entries[1].end == 108);
        CHECK(qsur_safetensors_find(st, "zzz") == -1);
        qsur_safetensors_close(st);
    }
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    CHECK(qsur_load_file(&ws, path, "p/", NULL, &err) == 3);
    qsur_tensor *ra = qsur_workspace_find(&ws, "p/model.layers.0.w");
    CHECK(ra && ra->ndim == 3 && ra->shape[2] == 4 && memcmp(ra->data, a->data, 96) == 0);
    qsur_tensor *rc = qsur_workspace_find(&ws, "p/v");
    CHECK(rc && rc->ndim == 1 && memcmp(rc->data, c->data, 20) == 0);
    qsur_workspace_clear(&ws);

    /* F16 and BF16: the bytes on disk are the hand-computed patterns. */
    qsur_dtype dts[3] = {QSUR_DTYPE_F32, QSUR_DTYPE_F16, QSUR_DTYPE_BF16};
    const qsur_tensor *ts2[3] = {c, b, b};
    qsur_tensor *b2;
    qsur_tensor_clone(&b2, b, "b2", &err);
    ts2[2] = b2;
    snprintf(path, sizeof path, "%s/half.safetensors", dir);
    CHECK_OK(qsur_safetensors_write(path, ts2, 3, dts, NULL, 0, NULL, &err), err);
    size_t n;
    unsigned char *raw = slurp(path, &n);
    CHECK(raw && n >= 8 + 20 + 6 + 6);
    if (raw) {
        const unsigned char *half = raw + n - 12, *bf = raw + n - 6;
        const unsigned char want_h[6] = {0x00, 0x3C, 0x00, 0xC0, 0x66, 0x2E};
        const unsigned char want_b[6] = {0x80, 0x3F, 0x00, 0xC0, 0xCD, 0x3D};
        CHECK(memcmp(half, want_h, 6) == 0);
        CHECK(memcmp(bf, want_b, 6) == 0);
        CHECK(strstr((char *)raw + 8, "\"dtype\":\"BF16\"") != NULL);
    }
    free(raw);
    CHECK(qsur_load_file(&ws, path, NULL, NULL, &err) == 3);
    qsur_tensor *rh = qsur_workspace_find(&ws, b->name), *rb = qsur_workspace_find(&ws, "b2");
    CHECK(rh && rh->data[0] == 1.0f && rh->data[1] == -2.0f);
    CHECK(rh && rh->data[2] == 0.0999755859375f);  /* 0x2E66 = 1638/16384 */
    CHECK(rb && rb->data[0] == 1.0f && rb->data[1] == -2.0f);
    CHECK(rb && rb->data[2] == 0.10009765625f);    /* 0x3DCD = 205/2048 */
    qsur_workspace_clear(&ws);

    /* Writer refusals: duplicate names, F16 overflow, NaN. No file appears. */
    snprintf(path, sizeof path, "%s/refused.safetensors", dir);
    const qsur_tensor *dup[2] = {c, c};
    CHECK(qsur_safetensors_write(path, dup, 2, NULL, NULL, 0, NULL, &err) == QSUR_ERR_ARG &&
          strstr(err.msg, "duplicate tensor name v"));
    c->data[0] = 70000.0f;
    qsur_dtype f16 = QSUR_DTYPE_F16;
    const qsur_tensor *one_t[1] = {c};
    CHECK(qsur_safetensors_write(path, one_t, 1, &f16, NULL, 0, NULL, &err) == QSUR_ERR_NUMERIC &&
          strstr(err.msg, "overflows F16"));
    c->data[0] = NAN;
    CHECK(qsur_safetensors_write(path, one_t, 1, NULL, NULL, 0, NULL, &err) == QSUR_ERR_NUMERIC);
    FILE *f = fopen(path, "rb");
    CHECK(f == NULL);
    if (f)
        fclose(f);
    qsur_tensor_free(a);
    qsur_tensor_free(b);
    qsur_tensor_free(b2);
    qsur_tensor_free(c);
}

/* I8/U8 (quantized weight codes): integers round-trip exactly; anything that
 * is not an integer in the dtype's range is refused before a file exists. */
static void test_int_dtypes(void)
{
    qsur_error err;
    char path[4096];
    snprintf(path, sizeof path, "%s/codes.safetensors", check_tmpdir());
    qsur_tensor *a = NULL, *b = NULL;
    int64_t n = 5;
    CHECK_OK(qsur_tensor_new(&a, "codes_i8", 1, &n, &err), err);
    CHECK_OK(qsur_tensor_new(&b, "codes_u8", 1, &n, &err), err);
    if (!a || !b)
        return;
    const float ia[5] = {-128, -7, 0, 7, 127}, ub[5] = {0, 1, 15, 128, 255};
    memcpy(a->data, ia, sizeof ia);
    memcpy(b->data, ub, sizeof ub);
    const qsur_tensor *ts[2] = {a, b};
    qsur_dtype dt[2] = {QSUR_DTYPE_I8, QSUR_DTYPE_U8};
    CHECK_OK(qsur_safetensors_write(path, ts, 2, dt, NULL, 0, NULL, &err), err);
    qsur_safetensors *st = NULL;
    CHECK_OK(qsur_safetensors_open(&st, path, &err), err);
    if (st) {
        CHECK(st->entries[0].dtype == QSUR_DTYPE_I8 && st->entries[1].dtype == QSUR_DTYPE_U8);
        CHECK(st->entries[0].end - st->entries[0].begin == 5); /* one byte per code */
        for (int i = 0; i < 2; i++) {
            qsur_tensor *t = NULL;
            CHECK_OK(qsur_safetensors_read_tensor(st, i, NULL, &t, NULL, &err), err);
            if (t)
                CHECK_MSG(memcmp(t->data, i ? ub : ia, sizeof ia) == 0, "%s round-trips", t->name);
            qsur_tensor_free(t);
        }
        qsur_safetensors_close(st);
    }
    char bad_path[4096];
    snprintf(bad_path, sizeof bad_path, "%s/bad_codes.safetensors", check_tmpdir());
    a->data[1] = 1.5f;
    int rc = qsur_safetensors_write(bad_path, ts, 1, dt, NULL, 0, NULL, &err);
    CHECK(rc == QSUR_ERR_ARG && strstr(err.msg, "value 1.5 at element 1 is not an integer in [-128, 127]"));
    a->data[1] = 128.0f;
    CHECK(qsur_safetensors_write(bad_path, ts, 1, dt, NULL, 0, NULL, &err) == QSUR_ERR_ARG);
    b->data[0] = -1.0f;
    CHECK(qsur_safetensors_write(bad_path, ts + 1, 1, dt + 1, NULL, 0, NULL, &err) == QSUR_ERR_ARG);
    FILE *f = fopen(bad_path, "rb");
    CHECK_MSG(!f, "a refused write leaves no file");
    if (f)
        fclose(f);
    qsur_tensor_free(a);
    qsur_tensor_free(b);
}

int main(void)
{
    test_json();
    test_roundtrip();
    test_int_dtypes();
    return check_done();
}
