/* Writes the generated seed inputs of the fuzz targets:
 *     ./build/fuzz_make_corpus tests/fuzz/corpus
 * into DIR/NAME/seed-*. They are committed; rerun it when a format changes.
 * Crash inputs found later live beside them as crash-* (never regenerated). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "fuzz.h"
#include "qsur/llama2c.h"
#include "qsur/npy.h"
#include "qsur/ostquant.h"
#include "qsur/safetensors.h"

static const char *root;

static void die(const char *what, const qsur_error *err)
{
    fprintf(stderr, "make_corpus: %s: %s\n", what, err ? err->msg : "failed");
    exit(1);
}

static const char *seed_path(const char *target, const char *name)
{
    static char p[4200];
    snprintf(p, sizeof p, "%s/%s", root, target);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/%s/seed-%s", root, target, name);
    return p;
}

static void put(const char *target, const char *name, const void *b, size_t n)
{
    FILE *f = fopen(seed_path(target, name), "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f))
        die(name, NULL);
}

static void put_str(const char *target, const char *name, const char *s)
{
    put(target, name, s, strlen(s));
}

/* Copies a whole file into the corpus. */
static void put_file(const char *target, const char *name, const char *src)
{
    FILE *f = fopen(src, "rb");
    if (!f)
        die(src, NULL);
    static unsigned char b[1 << 20];
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    put(target, name, b, n);
}

/* A v1/v2/v3 .npy image with dict and `n` data bytes of `data`. */
static size_t npy_image(unsigned char *o, int major, const char *dict, const void *data, size_t n)
{
    size_t pre = major == 1 ? 10 : 12, dl = strlen(dict);
    size_t hlen = dl + 1 + (64 - (pre + dl + 1) % 64) % 64;
    memcpy(o, "\x93NUMPY", 6);
    o[6] = (unsigned char)major;
    o[7] = 0;
    for (size_t i = 0; i + 8 < pre; i++)
        o[8 + i] = (unsigned char)(hlen >> (8 * i));
    memcpy(o + pre, dict, dl);
    memset(o + pre + dl, ' ', hlen - dl - 1);
    o[pre + hlen - 1] = '\n';
    memcpy(o + pre + hlen, data, n);
    return pre + hlen + n;
}

static void npy_seeds(void)
{
    unsigned char img[512];
    float f4[6] = {1, -2, 0.5f, 3e-3f, 100, -0.25f};
    double f8[3] = {1, -2.5, 1e-300};
    unsigned short f2[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};
    put("npy", "f4-2d", img, npy_image(img, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", f4, 24));
    put("npy", "f4-1d", img, npy_image(img, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }", f4, 24));
    put("npy", "f8", img, npy_image(img, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", f8, 24));
    put("npy", "f2-v2", img, npy_image(img, 2, "{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }", f2, 8));
    put("npy", "f4-v3-4d", img,
        npy_image(img, 3, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 2, 3), }", f4, 24));
}

static void safetensors_seeds(void)
{
    qsur_error err;
    qsur_tensor *t[3];
    int64_t s2[2] = {2, 3}, s1[1] = {4};
    if (qsur_tensor_new(&t[0], "model.layers.0.mlp.down_proj.weight", 2, s2, &err) ||
        qsur_tensor_new(&t[1], "norm", 1, s1, &err) || qsur_tensor_new(&t[2], "codes", 1, s1, &err))
        die("tensor", &err);
    for (int i = 0; i < 6; i++)
        t[0]->data[i] = (float)(i - 2) * 0.5f;
    for (int i = 0; i < 4; i++)
        t[1]->data[i] = 1.0f + (float)i, t[2]->data[i] = (float)(i - 1);
    const char *meta[4] = {"format", "pt", "qsur.kind", "layer"};
    const qsur_tensor *const ts[3] = {t[0], t[1], t[2]};
    qsur_dtype dt[3] = {QSUR_DTYPE_BF16, QSUR_DTYPE_F16, QSUR_DTYPE_I8};
    if (qsur_safetensors_write(seed_path("safetensors", "f32"), ts, 2, NULL, meta, 2, NULL, &err) ||
        qsur_safetensors_write(seed_path("safetensors", "bf16-f16-i8"), ts, 3, dt, NULL, 0, NULL, &err))
        die("safetensors", &err);
    for (int i = 0; i < 3; i++)
        qsur_tensor_free(t[i]);
}

static void llama2c_seeds(qsur_llama *m)
{
    qsur_error err;
    qsur_workspace ws;
    qsur_workspace_init(&ws);
    qsur_llama2c_config c = {m->cfg.dim, m->cfg.hidden_dim, m->cfg.n_layers, m->cfg.n_heads,
                             m->cfg.n_kv_heads, m->cfg.vocab_size, m->cfg.seq_len, 0};
    if (qsur_llama_to_workspace(m, &ws, NULL, &err) ||
        qsur_llama2c_write(&ws, NULL, &c, seed_path("llama2c", "tiny"), NULL, &err))
        die("llama2c", &err);
    c.shared_classifier = 1;
    if (qsur_llama2c_write(&ws, NULL, &c, seed_path("llama2c", "tiny-shared"), NULL, &err))
        die("llama2c shared", &err);
    qsur_workspace_clear(&ws);
}

static void hf_seeds(void)
{
    qsur_error err;
    char p[4300];
    const char *dir = fuzz_tiny_hf_dir("hf", "F32");
    snprintf(p, sizeof p, "%s/config.json", dir);
    put_file("hf_config", "tiny", p);
    put_str("hf_config", "gqa-theta",
            "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 16, \"intermediate_size\": 32,\n"
            " \"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"num_key_value_heads\": 1,\n"
            " \"vocab_size\": 32, \"max_position_embeddings\": 16, \"rope_theta\": 500000.0,\n"
            " \"rms_norm_eps\": 1e-06, \"tie_word_embeddings\": true, \"torch_dtype\": \"bfloat16\"}\n");
    /* the index: every tensor of model.safetensors mapped to it */
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    qsur_safetensors *st;
    if (qsur_safetensors_open(&st, p, &err))
        die("open", &err);
    static char idx[1 << 16];
    size_t n = (size_t)snprintf(idx, sizeof idx, "{\"metadata\": {\"total_size\": %llu},\n \"weight_map\": {",
                                (unsigned long long)(st->map.size - st->data_start));
    for (int i = 0; i < st->count; i++)
        n += (size_t)snprintf(idx + n, sizeof idx - n, "%s\n  \"%s\": \"model.safetensors\"", i ? "," : "",
                              st->entries[i].name);
    snprintf(idx + n, sizeof idx - n, "\n }\n}\n");
    put_str("hf_index", "tiny", idx);
    qsur_safetensors_close(st);
}

static void ostquant_seeds(qsur_llama *m)
{
    qsur_error err;
    qsur_quant_spec w4 = qsur_quant_default(), a4 = qsur_quant_default(), kv = qsur_quant_default();
    w4.bits = 4;
    a4.bits = 8;
    kv.bits = 16;
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.steps = 2;
    op.batch = 1;
    op.seq_len = 8;
    op.max_seqs = 2;
    op.topk = 4;
    op.qsur_every = 1;
    op.qsur_tokens = 16;
    qsur_ostquant *o = NULL;
    if (qsur_ostquant_new(&o, m, &op, &w4, &a4, &kv, &err))
        die("ostquant_new", &err);
    if (qsur_ostquant_save(o, seed_path("ostquant_state", "step0"), &err))
        die("ostquant_save", &err);
    int ids[32];
    for (int i = 0; i < 32; i++)
        ids[i] = (i * 7 + 3) % m->cfg.vocab_size;
    qsur_tokens t = {ids, 32, 16};
    if (qsur_ostquant_train(o, m, &t, NULL, NULL, &err) ||
        qsur_ostquant_save(o, seed_path("ostquant_state", "step2-qsur"), &err))
        die("ostquant_train", &err);
    qsur_ostquant_free(o);
}

static void token_seeds(void)
{
    unsigned char b[512];
    /* prefix: format|big-vocab, seq_len-1, max_seqs, vocab (u16 LE) - 1 */
    const unsigned char pre16[5] = {0, 3, 0, 0xff, 0x01}, pre32[5] = {1, 7, 1, 0xff, 0xff},
                        prenpy[5] = {2, 1, 0, 0xff, 0x7f}, prebig[5] = {5, 3, 2, 0, 0};
    memcpy(b, pre16, 5);
    for (int i = 0; i < 16; i++)
        b[5 + 2 * i] = (unsigned char)(i * 31), b[6 + 2 * i] = (unsigned char)(i & 1);
    put("tokens", "u16", b, 5 + 32);
    memcpy(b, pre32, 5);
    for (int i = 0; i < 16; i++) {
        unsigned v = (unsigned)(i * 4099) % 65535;
        for (int k = 0; k < 4; k++)
            b[5 + 4 * i + k] = (unsigned char)(v >> (8 * k));
    }
    put("tokens", "u32", b, 5 + 64);
    memcpy(b, prebig, 5);
    put("tokens", "u32-llama3", b, 5 + 64);
    memcpy(b, prenpy, 5);
    int32_t ids[8] = {1, 2, 3, 4, 500, 600, 7000, 8000};
    size_t n = npy_image(b + 5, 1, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 4), }", ids, 32);
    put("tokens", "npy-i4", b, 5 + n);
    int64_t ids8[4] = {1, 2, 3, 4};
    n = npy_image(b + 5, 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }", ids8, 32);
    put("tokens", "npy-i8", b, 5 + n);
}

static void text_seeds(void)
{
    put_str("command", "load", "load sample_data/layer.safetensors");
    put_str("command", "quant", "quant w4a8kv8 g128 w:clip=0.9");
    put_str("command", "quoted", "ostquant model calib=\"my tokens.u16\" steps=3 'single q' \"esc \\\" \\\\ \"");
    put_str("command", "set", "set format json");
    put_str("command", "tabs", "  rotate\thadamard   3  ");
    put_str("script", "basic",
            "# a comment\nmodel load model.bin\ncalib calib.u16 seqs=2 ; ppl eval.u16 seqs=1 # trailing\n"
            "quant w4a16 \\\n  g64\nset errexit off\necho \"a;b#c\" 'x;y'\n\n");
    put_str("script", "crlf", "load a.npy\r\nuse a\r\nstats\r\n");
    put_str("script", "continued", "demo 0.6 \\\n4 \\\n");
}

/* ---- tokenizer files (target tokenizer: byte 0 even = tokenizer.json, odd =
 * tokenizer.bin with a 2-byte vocabulary hint) ---- */

/* Appends s as a JSON string (ASCII only: everything else as \u escapes of
 * its code points, which are < 0x800 here). */
static size_t json_str(char *o, const unsigned *cps, int n)
{
    size_t k = 0;
    o[k++] = '"';
    for (int i = 0; i < n; i++) {
        unsigned c = cps[i];
        if (c == '"' || c == '\\')
            k += (size_t)sprintf(o + k, "\\%c", (char)c);
        else if (c < 0x20 || c >= 0x7f)
            k += (size_t)sprintf(o + k, "\\u%04x", c);
        else
            o[k++] = (char)c;
    }
    o[k++] = '"';
    return k;
}

/* GPT-2's byte -> printable code point map (bytes_to_unicode). */
static unsigned byte_cp(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))
        return (unsigned)b;
    int n = 0;
    for (int x = 0; x < b; x++)
        n += !((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255));
    return 256u + (unsigned)n;
}

static void tokenizer_seeds(void)
{
    static char js[1 << 16];
    size_t k = 0;
    js[k++] = 0; /* kind: tokenizer.json */
    static const char regex[] =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
        "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    unsigned cps[256];
    int n = 0;
    for (const char *p = regex; *p; p++)
        cps[n++] = (unsigned char)*p;
    k += (size_t)sprintf(js + k, "{\"added_tokens\": [{\"id\": 259, \"content\": \"<|begin_of_text|>\", "
                                 "\"special\": true}],\n \"normalizer\": null,\n \"pre_tokenizer\": {\"type\": "
                                 "\"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": ");
    k += json_str(js + k, cps, n);
    k += (size_t)sprintf(js + k, "}, \"behavior\": \"Isolated\", \"invert\": false}, {\"type\": \"ByteLevel\", "
                                 "\"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]},\n"
                                 " \"decoder\": {\"type\": \"ByteLevel\"},\n \"model\": {\"type\": \"BPE\", "
                                 "\"ignore_merges\": true, \"vocab\": {");
    for (int b = 0; b < 256; b++) {
        unsigned c = byte_cp(b);
        k += json_str(js + k, &c, 1);
        k += (size_t)sprintf(js + k, ": %d, ", b);
    }
    unsigned gt[2] = {byte_cp(' '), 't'}, he[2] = {'h', 'e'}, the[3] = {byte_cp(' '), 't', 'h'};
    k += json_str(js + k, gt, 2);
    k += (size_t)sprintf(js + k, ": 256, ");
    k += json_str(js + k, he, 2);
    k += (size_t)sprintf(js + k, ": 257, ");
    k += json_str(js + k, the, 3);
    k += (size_t)sprintf(js + k, ": 258},\n \"merges\": [");
    k += json_str(js + k, (unsigned[]){byte_cp(' '), ' ', 't'}, 3);
    k += (size_t)sprintf(js + k, ", \"h e\", ");
    k += json_str(js + k, (unsigned[]){byte_cp(' '), 't', ' ', 'h'}, 4);
    k += (size_t)sprintf(js + k, "]}}\n");
    put("tokenizer", "json-byte-level", js, k);

    /* SentencePiece kind: Prepend/Replace normalizer, byte fallback, Fuse and Strip decoder */
    static const char sp[] =
        "\x02{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true}, {\"id\": 1, \"content\": "
        "\"<s>\", \"special\": true}],\n \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": "
        "\"Prepend\", \"prepend\": \"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, "
        "\"content\": \"\\u2581\"}]},\n \"pre_tokenizer\": null,\n \"decoder\": {\"type\": \"Sequence\", "
        "\"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\\u2581\"}, \"content\": \" \"}, "
        "{\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, "
        "\"stop\": 0}]},\n \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"vocab\": {\"<unk>\": 0, "
        "\"<s>\": 1, \"<0x41>\": 2, \"<0xC3>\": 3, \"<0xA9>\": 4, \"\\u2581\": 5, \"t\": 6, \"h\": 7, \"e\": 8, "
        "\"\\u2581t\": 9, \"he\": 10, \"\\u2581the\": 11},\n \"merges\": [\"\\u2581 t\", \"h e\", \"\\u2581t he\"]}}\n";
    put("tokenizer", "json-sentencepiece", sp, sizeof sp - 1);

    /* llama2.c tokenizer.bin: max_token_length, then (score, length, bytes) per
     * id: <unk> <s> </s>, the 256 byte tokens <0xXX>, then a few merges */
    static unsigned char bin[1 << 14];
    const char *extra[] = {" t", "he", " the", "e", " "};
    int nb = 0, vocab = 3 + 256 + 5;
    bin[0] = 3; /* hint: vocab (set below), kind odd */
    bin[1] = (unsigned char)vocab;
    bin[2] = (unsigned char)(vocab >> 8);
    nb = 3;
    int32_t maxlen = 6;
    memcpy(bin + nb, &maxlen, 4);
    nb += 4;
    for (int i = 0; i < vocab; i++) {
        char s[16];
        if (i < 3)
            snprintf(s, sizeof s, "%s", i == 0 ? "<unk>" : i == 1 ? "\n<s>\n" : "\n</s>\n");
        else if (i < 259)
            snprintf(s, sizeof s, "<0x%02X>", i - 3);
        else
            snprintf(s, sizeof s, "%s", extra[i - 259]);
        float score = i < 259 ? 0.0f : -(float)(i - 259);
        int32_t len = (int32_t)strlen(s);
        memcpy(bin + nb, &score, 4);
        memcpy(bin + nb + 4, &len, 4);
        memcpy(bin + nb + 8, s, (size_t)len);
        nb += 8 + len;
    }
    put("tokenizer", "bin-llama2c", bin, (size_t)nb);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_make_corpus DIR (tests/fuzz/corpus)\n");
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);
    qsur_llama *m = fuzz_tiny_model();
    npy_seeds();
    safetensors_seeds();
    llama2c_seeds(m);
    hf_seeds();
    ostquant_seeds(m);
    token_seeds();
    text_seeds();
    tokenizer_seeds();
    qsur_llama_free(m);
    return 0;
}
