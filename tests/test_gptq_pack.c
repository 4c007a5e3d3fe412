/* GPTQ-packed export (qsur/gptq_pack.h, docs/export.md): the files are read
 * back by a minimal reader written here from the documented layout alone (raw
 * safetensors bytes, int32 words, fp16 decoded by hand, zeros + 1), which must
 * find qsur's integer codes and fp16-rounded scales; `model load` of the
 * directory gives exactly the weights this reader decodes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "check.h"
#include "qsur/gptq_pack.h"
#include "qsur/llama.h"
#include "qsur/llama_store.h"
#include "qsur/llama_wquant.h"
#include "qsur/qweight.h"

#define DIM 64
#define HID 128
#define NL 2
#define NH 4
#define NKV 2
#define VOC 40

static uint64_t rng = 12345;
static float urand(void)
{
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 11) * 0x1.0p-52 - 1.0);
}

/* ---- the independent reader ---------------------------------------------- */

/* IEEE binary16 -> double, from the bit layout (sign, 5-bit exponent, 10-bit fraction). */
static double half_value(uint16_t h)
{
    int s = h >> 15, e = (h >> 10) & 31, f = h & 1023;
    double v = e == 0 ? ldexp(f, -24) : ldexp(1024 + f, e - 25);
    return s ? -v : v;
}

typedef struct {
    unsigned char *file;
    long size;
    uint64_t hlen;
} raw_st;

static int raw_open(raw_st *r, const char *path)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    fseek(f, 0, SEEK_END);
    r->size = ftell(f);
    fseek(f, 0, SEEK_SET);
    r->file = malloc((size_t)r->size + 1);
    int ok = fread(r->file, 1, (size_t)r->size, f) == (size_t)r->size;
    fclose(f);
    r->file[r->size] = 0;
    r->hlen = 0;
    for (int i = 7; i >= 0; i--)
        r->hlen = r->hlen << 8 | r->file[i];
    return ok;
}

/* Pointer to tensor NAME's bytes, its dtype and its 2-d shape (1-d: s1 = 1). */
static const unsigned char *raw_find(const raw_st *r, const char *name, char dtype[8],
                                     long *s0, long *s1)
{
    char key[240];
    snprintf(key, sizeof key, "\"%.200s\":", name);
    char save = (char)r->file[8 + r->hlen];
    ((unsigned char *)r->file)[8 + r->hlen] = 0;
    const char *p = strstr((const char *)r->file + 8, key);
    ((unsigned char *)r->file)[8 + r->hlen] = (unsigned char)save;
    if (!p)
        return NULL;
    unsigned long long a = 0, b = 0;
    *s1 = 1;
    if (sscanf(strstr(p, "\"dtype\""), "\"dtype\":\"%7[^\"]\"", dtype) != 1)
        return NULL;
    const char *sh = strstr(p, "\"shape\":[") + 9;
    *s0 = strtol(sh, (char **)&sh, 10);
    if (*sh == ',')
        *s1 = strtol(sh + 1, NULL, 10);
    if (sscanf(strstr(p, "\"data_offsets\":[") + 16, "%llu,%llu", &a, &b) != 2)
        return NULL;
    return r->file + 8 + r->hlen + a;
}

static uint32_t le32(const unsigned char *p, long i)
{
    p += 4 * i;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Decodes linear BASE (out x in) as docs/export.md says: the b-bit code of
 * W[o][c] is bits [b*(c%k), ...) of qweight[c/k][o], its zero point bits
 * [b*(o%k), ...) of qzeros[g][o/k] plus 1, its scale scales[g][o],
 * g = g_idx[c]. Returns the bit width, fills codes (q - z) and W. */
static int raw_decode(const raw_st *r, const char *base, long out, long in, int *qz, double *W)
{
    char n[200], dt[4][8];
    long s0[4], s1[4];
    const char *sfx[4] = {"qweight", "qzeros", "scales", "g_idx"};
    const unsigned char *p[4];
    for (int t = 0; t < 4; t++) {
        snprintf(n, sizeof n, "%s.%s", base, sfx[t]);
        if (!(p[t] = raw_find(r, n, dt[t], &s0[t], &s1[t])))
            return 0;
    }
    if (strcmp(dt[0], "I32") || strcmp(dt[1], "I32") || strcmp(dt[2], "F16") || strcmp(dt[3], "I32"))
        return 0;
    long k = in / s0[0];
    int b = (int)(32 / k);
    if (s1[0] != out || s1[1] * k != out || s0[1] != s0[2] || s1[2] != out || s0[3] != in)
        return 0;
    for (long o = 0; o < out; o++)
        for (long c = 0; c < in; c++) {
            long g = (long)le32(p[3], c);
            int q = (int)(le32(p[0], (c / k) * out + o) >> (b * (c % k)) & ((1u << b) - 1));
            int z = (int)(le32(p[1], g * (out / k) + o / k) >> (b * (o % k)) & ((1u << b) - 1)) + 1;
            uint16_t h = (uint16_t)(p[2][2 * (g * out + o)] | p[2][2 * (g * out + o) + 1] << 8);
            qz[o * in + c] = q - z;
            W[o * in + c] = (double)(q - z) * half_value(h);
        }
    return b;
}

/* ---- tests ----------------------------------------------------------------- */

static qsur_llama *random_model(void)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = DIM; c.hidden_dim = HID; c.n_layers = NL; c.n_heads = NH; c.n_kv_heads = NKV;
    c.vocab_size = VOC; c.seq_len = 64; c.shared_classifier = 0;
    qsur_llama *m = NULL;
    qsur_error err;
    if (qsur_llama_new(&m, &c, &err))
        return NULL;
    for (int i = 0; i < qsur_llama_linear_count(m); i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i);
        for (int64_t j = 0; j < l->rows * l->cols; j++)
            l->w[j] = 0.3f * urand() * (j % 97 == 0 ? 8.0f : 1.0f);
    }
    for (int64_t j = 0; j < (int64_t)VOC * DIM; j++) {
        m->tok_embeddings[j] = 0.5f * urand();
        m->output.w[j] = 0.5f * urand();
    }
    return m;
}

/* Row meta of an HF q/k row (the documented rotate-half permutation). */
static long meta_row(long hf, long heads, long rows)
{
    long hs = rows / heads, half = hs / 2, h = hf / hs, r = hf % hs;
    return h * hs + 2 * (r % half) + r / half;
}

static void round_trip(const char *spec_text, int bits, int sym, int group)
{
    qsur_error err;
    const int want_bits = bits;
    qsur_quant_spec q = {bits, sym, group ? QSUR_GRAN_GROUP : QSUR_GRAN_ROW, group, 1.0, 0, 0, 0.0, 0, 0};
    qsur_llama *m = random_model();
    CHECK_OK(qsur_llama_quantize_rtn(m, &q, NULL, &err), err);
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/gptq_%d_%d_%d", check_tmpdir(), q.bits, q.symmetric, q.group);
    mkdir(dir, 0755);
    qsur_llama_hf_save_opts o = {.dtype = "F32", .use_wq = 1, .int_spec = &q, .gptq = 1};
    CHECK_OK(qsur_llama_save_hf_ex(m, dir, &o, &err), err);
    qsur_llama *back = NULL;
    CHECK_OK(qsur_llama_load_hf(&back, dir, NULL, &err), err);

    char path[1100];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    raw_st r = {NULL, 0, 0};
    CHECK(raw_open(&r, path));
    int checked = 0, bit_identical = 1, codes_match = 1;
    double worst = 0;
    for (int i = 0; back && i < qsur_llama_linear_count(m); i++) {
        qsur_llama_linear *l = qsur_llama_linear_at(m, i), *lb = qsur_llama_linear_at(back, i);
        static const char *hf[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                    "self_attn.o_proj", "mlp.gate_proj", "mlp.down_proj",
                                    "mlp.up_proj"};
        char base[160];
        snprintf(base, sizeof base, "model.layers.%d.%s", i / 7, hf[i % 7]);
        int *qz = malloc(sizeof(int) * l->rows * l->cols);
        double *W = malloc(sizeof(double) * l->rows * l->cols);
        int b = raw_decode(&r, base, l->rows, l->cols, qz, W);
        CHECK_MSG(b == want_bits, "%s: %d bits decoded, expected %d", base, b, want_bits);
        /* qsur's own codes of this linear, as `quant` made them */
        qsur_quant_spec lq = qsur_llama_linear_spec(&q, l->cols);
        qsur_qweight *qw = NULL;
        CHECK_OK(qsur_qweight_new(&qw, &lq, l->rows, l->cols, &err), err);
        CHECK_OK(qsur_qweight_fit_rtn(qw, l->w, &err), err);
        /* the weights the model runs (packed codes decoded) and those loaded back */
        float *fw = malloc(sizeof(float) * l->rows * l->cols);
        float *bw = malloc(sizeof(float) * l->rows * l->cols);
        qsur_llama_linear_forward_rows(l, 0, l->rows, fw);
        qsur_llama_linear_forward_rows(lb, 0, lb->rows, bw);
        long heads = i % 7 == 0 ? NH : i % 7 == 1 ? NKV : 0;
        for (long hr = 0; b && hr < l->rows; hr++) {
            long mr = heads ? meta_row(hr, heads, l->rows) : hr;
            for (long c = 0; c < l->cols; c++) {
                const qsur_qparams *p = qsur_qweight_map(qw, mr, c);
                int code = qw->codes[mr * l->cols + c];
                codes_match &= qz[hr * l->cols + c] == code - (int)p->zero;
                double v = W[hr * l->cols + c], wq = fw[mr * l->cols + c];
                worst = fmax(worst, fabs(v - wq) / fmax(fabs(wq), 1e-30));
                bit_identical &= (float)v == bw[mr * l->cols + c];
            }
        }
        checked += b != 0;
        qsur_qweight_free(qw);
        free(fw);
        free(bw);
        free(qz);
        free(W);
    }
    CHECK_MSG(checked == 7 * NL, "%s: %d of %d linears decoded", spec_text, checked, 7 * NL);
    CHECK_MSG(codes_match, "%s: packed codes are qsur's integer codes", spec_text);
    CHECK_MSG(bit_identical, "%s: model load gives exactly the documented decode", spec_text);
    /* fp16 scales: relative error below 2^-11 */
    CHECK_MSG(worst < 0x1p-11, "%s: decoded weights within fp16 scale rounding (%g)", spec_text, worst);

    snprintf(path, sizeof path, "%s/quantize_config.json", dir);
    FILE *f = fopen(path, "rb");
    char txt[2048] = "";
    if (f) {
        size_t n = fread(txt, 1, sizeof txt - 1, f);
        txt[n] = 0;
        fclose(f);
    }
    char want[64];
    snprintf(want, sizeof want, "\"bits\": %d", want_bits);
    CHECK_MSG(strstr(txt, want) && strstr(txt, "\"desc_act\": false") &&
                  strstr(txt, q.symmetric ? "\"sym\": true" : "\"sym\": false") &&
                  strstr(txt, "\"quant_method\": \"gptq\""),
              "quantize_config.json: %s", txt);
    snprintf(want, sizeof want, "\"group_size\": %d", q.gran == QSUR_GRAN_GROUP ? q.group : -1);
    CHECK_MSG(strstr(txt, want) != NULL, "quantize_config.json group: %s", txt);
    snprintf(path, sizeof path, "%s/config.json", dir);
    f = fopen(path, "rb");
    if (f) {
        size_t n = fread(txt, 1, sizeof txt - 1, f);
        txt[n] = 0;
        fclose(f);
    }
    CHECK_MSG(strstr(txt, "\"quantization_config\": {") != NULL, "config.json: %s", txt);
    free(r.file);
    qsur_llama_free(m);
    qsur_llama_free(back);
}

/* A one-word worked example of the bit order: codes 0..7 of row 0 along the
 * input dimension land in nibbles 0..7 of qweight[0][0]: 0x76543210. */
static void test_bit_order(void)
{
    qsur_error err;
    qsur_quant_spec q = {4, 0, QSUR_GRAN_ROW, 0, 1, 0, 0, 0.0, 0, 0};
    qsur_qweight *qw = NULL;
    CHECK_OK(qsur_qweight_new(&qw, &q, 8, 8, &err), err);
    for (int o = 0; o < 8; o++) {
        qw->params[o].scale = 0.5f;
        qw->params[o].zero = (float)(o + 1);
        for (int c = 0; c < 8; c++)
            qw->codes[o * 8 + c] = (int16_t)((c + o) % 16);
    }
    qsur_gptq_packed p;
    CHECK_OK(qsur_gptq_pack(qw, "t", &p, &err), err);
    CHECK((uint32_t)p.qweight[0] == 0x76543210u);
    CHECK((uint32_t)p.qweight[1] == 0x87654321u);      /* row 1: codes 1..8 */
    CHECK((uint32_t)p.qzeros[0] == 0x76543210u);       /* zeros 1..8 stored minus 1 */
    CHECK(p.scales[0] == 0x3800 && p.g_idx[7] == 0);   /* fp16 0.5 */
    float W[64];
    qsur_gptq_dequant(&p, W);
    CHECK(W[1 * 8 + 3] == 0.5f * (float)(4 - 2));
    qsur_gptq_packed_free(&p);
    /* refusals: 3 bits, a width that is not a multiple of 8, a zero point 0 */
    q.bits = 3;
    qsur_qweight *q3 = NULL;
    CHECK_OK(qsur_qweight_new(&q3, &q, 8, 8, &err), err);
    CHECK(qsur_gptq_pack(q3, "w3", &p, &err) == QSUR_ERR_ARG && strstr(err.msg, "2, 4 or 8 bits"));
    qsur_qweight_free(q3);
    q.bits = 4;
    qsur_qweight *q12 = NULL;
    CHECK_OK(qsur_qweight_new(&q12, &q, 8, 12, &err), err);
    CHECK(qsur_gptq_pack(q12, "w12", &p, &err) == QSUR_ERR_ARG && strstr(err.msg, "multiples of 8"));
    qsur_qweight_free(q12);
    qw->params[3].zero = 0;
    CHECK(qsur_gptq_pack(qw, "z0", &p, &err) == QSUR_ERR_ARG && strstr(err.msg, "zero point"));
    qsur_qweight_free(qw);

    /* reading back: inconsistent shapes and an act-order g_idx are format errors */
    qsur_tensor *sc = NULL;
    CHECK_OK(qsur_tensor_new2(&sc, "s", 1, 8, &err), err);
    int64_t qws[2] = {1, 8}, qzs[2] = {1, 1};
    int32_t *a = calloc(8, 4), *z = calloc(1, 4), *g = calloc(8, 4);
    CHECK(qsur_gptq_from_parts(a, qws, z, qzs, sc, g, 8, 8, 8, "ok", &p, &err) == QSUR_OK &&
          p.bits == 4 && p.group_size == 8);
    qsur_gptq_packed_free(&p);
    a = calloc(8, 4), z = calloc(1, 4), g = calloc(8, 4);
    int64_t bad[2] = {1, 4};
    CHECK(qsur_gptq_from_parts(a, bad, z, qzs, sc, g, 8, 8, 8, "bad", &p, &err) == QSUR_ERR_FORMAT &&
          strstr(err.msg, "bad.qweight"));
    a = calloc(8, 4), z = calloc(1, 4), g = calloc(8, 4);
    g[5] = 1; /* not c / group_size for any group size */
    CHECK(qsur_gptq_from_parts(a, qws, z, qzs, sc, g, 8, 8, 8, "act", &p, &err) == QSUR_ERR_FORMAT &&
          strstr(err.msg, "g_idx"));
    qsur_tensor_free(sc);
}

int main(void)
{
    test_bit_order();
    round_trip("w4 g32", 4, 1, 32);
    round_trip("w4 asym g32", 4, 0, 32);
    round_trip("w8 row", 8, 1, 0);
    round_trip("w8 asym row", 8, 0, 0);
    round_trip("w2 g16", 2, 1, 16);
    return check_done();
}
