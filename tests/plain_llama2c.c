/* A second, plain forward pass for exported models: it knows nothing of qsur
 * (no hooks, no online rotations, no qsur headers or library), only the
 * reference equations, and prints the perplexity of a uint16 token file split
 * into sequences of SEQLEN, first SEQS of them.
 *   plain_llama2c MODEL.bin TOKENS.u16 SEQLEN SEQS   llama2.c's run.c: RMSNorm eps
 *       1e-5, RoPE on interleaved pairs (2j, 2j+1), theta 10000
 *   plain_llama2c DIR TOKENS.u16 SEQLEN SEQS         HF LlamaForCausalLM: F32
 *       model.safetensors + config.json, RoPE rotate_half pairs (j, j + hs/2),
 *       rope_theta and rms_norm_eps from config.json
 * Both: grouped-query attention, SwiGLU, untied or tied classifier.
 * Output: "ppl %.6f" on stdout. tests/test_export_plain.sh compares it with
 * qsur's `ppl` of the same model. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
} Config;

typedef struct {
    float *tok, *rms_att, *wq, *wk, *wv, *wo, *rms_ffn, *w1, *w2, *w3, *rms_final, *wcls;
} Weights;

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n, sz);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static double g_eps = 1e-5, g_theta = 10000.0;
static int g_rope_half; /* HF: rotate_half pairs */

static void rmsnorm(float *o, const float *x, const float *w, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float s = (float)(1.0 / sqrt(ss / n + g_eps));
    for (int i = 0; i < n; i++)
        o[i] = w[i] * (s * x[i]);
}

/* o (d) = W (d x n) x (n) */
static void matmul(float *o, const float *x, const float *w, int n, int d)
{
    for (int i = 0; i < d; i++) {
        double v = 0;
        for (int j = 0; j < n; j++)
            v += (double)w[(size_t)i * n + j] * x[j];
        o[i] = (float)v;
    }
}

static char *slurp(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = xcalloc((size_t)*size + 1, 1);
    if (fread(b, 1, (size_t)*size, f) != (size_t)*size)
        exit(2);
    fclose(f);
    return b;
}

static double json_num(const char *j, const char *key, double dflt)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\"", key);
    const char *p = strstr(j, k);
    if (!p)
        return dflt;
    p = strchr(p + strlen(k), ':');
    if (!p)
        return dflt;
    while (*++p == ' ')
        ;
    if (!strncmp(p, "true", 4))
        return 1;
    if (!strncmp(p, "false", 5))
        return 0;
    return strtod(p, NULL);
}

/* A named F32 tensor of model.safetensors (8-byte header length, JSON
 * header, data); exits when absent or not F32 of n floats. */
static float *st_tensor(const char *st, const char *name, size_t n, int optional)
{
    uint64_t hlen;
    memcpy(&hlen, st, 8);
    char k[160];
    snprintf(k, sizeof k, "\"%s\"", name);
    const char *p = strstr(st + 8, k);
    if (!p || p > st + 8 + hlen) {
        if (optional)
            return NULL;
        fprintf(stderr, "tensor %s missing\n", name);
        exit(2);
    }
    const char *dt = strstr(p, "\"dtype\""), *off = strstr(p, "\"data_offsets\"");
    if (!dt || !off || strncmp(strchr(dt + 7, '"'), "\"F32\"", 5)) {
        fprintf(stderr, "tensor %s: not F32\n", name);
        exit(2);
    }
    unsigned long long a, b;
    if (sscanf(strchr(off, '[') + 1, "%llu , %llu", &a, &b) != 2 || (b - a) != n * 4) {
        fprintf(stderr, "tensor %s: %llu bytes, expected %zu\n", name, b - a, n * 4);
        exit(2);
    }
    float *out = xcalloc(n, 4); /* a copy: the data need not be 4-byte aligned */
    memcpy(out, st + 8 + hlen + a, n * 4);
    return out;
}

static void load_hf(const char *dir, Config *c, Weights *w, char **keep)
{
    char path[4200];
    long n;
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *j = slurp(path, &n);
    c->dim = (int)json_num(j, "hidden_size", 0);
    c->hidden_dim = (int)json_num(j, "intermediate_size", 0);
    c->n_layers = (int)json_num(j, "num_hidden_layers", 0);
    c->n_heads = (int)json_num(j, "num_attention_heads", 0);
    c->n_kv_heads = (int)json_num(j, "num_key_value_heads", c->n_heads);
    c->vocab_size = (int)json_num(j, "vocab_size", 0);
    g_eps = json_num(j, "rms_norm_eps", 1e-6);
    g_theta = json_num(j, "rope_theta", 10000.0);
    int tied = (int)json_num(j, "tie_word_embeddings", 0);
    free(j);
    g_rope_half = 1;
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    char *st = slurp(path, &n);
    const int d = c->dim, hd = c->hidden_dim, L = c->n_layers, hs = d / c->n_heads,
              kvd = c->n_kv_heads * hs;
    w->tok = st_tensor(st, "model.embed_tokens.weight", (size_t)c->vocab_size * d, 0);
    w->rms_final = st_tensor(st, "model.norm.weight", (size_t)d, 0);
    w->wcls = tied ? w->tok : st_tensor(st, "lm_head.weight", (size_t)c->vocab_size * d, 0);
    /* per-layer tensors are gathered into contiguous arrays like llama2.c's */
    struct { float **dst; const char *name; size_t n; } per[] = {
        {&w->rms_att, "input_layernorm.weight", (size_t)d},
        {&w->wq, "self_attn.q_proj.weight", (size_t)d * d},
        {&w->wk, "self_attn.k_proj.weight", (size_t)kvd * d},
        {&w->wv, "self_attn.v_proj.weight", (size_t)kvd * d},
        {&w->wo, "self_attn.o_proj.weight", (size_t)d * d},
        {&w->rms_ffn, "post_attention_layernorm.weight", (size_t)d},
        {&w->w1, "mlp.gate_proj.weight", (size_t)hd * d},
        {&w->w2, "mlp.down_proj.weight", (size_t)d * hd},
        {&w->w3, "mlp.up_proj.weight", (size_t)hd * d},
    };
    for (size_t t = 0; t < sizeof per / sizeof per[0]; t++) {
        *per[t].dst = xcalloc(per[t].n * L, 4);
        for (int l = 0; l < L; l++) {
            char name[160];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, per[t].name);
            float *one = st_tensor(st, name, per[t].n, 0);
            memcpy(*per[t].dst + per[t].n * l, one, per[t].n * 4);
            free(one);
        }
    }
    free(st);
    *keep = tied ? NULL : (char *)w->wcls;
}

static float *load_llama2c(const char *file, Config *c, Weights *w)
{
    FILE *f = fopen(file, "rb");
    if (!f) {
        perror(file);
        exit(2);
    }
    if (fread(c, sizeof *c, 1, f) != 1)
        exit(2);
    int shared = c->vocab_size > 0;
    c->vocab_size = abs(c->vocab_size);
    fseek(f, 0, SEEK_END);
    long fsize = ftell(f);
    fseek(f, (long)sizeof *c, SEEK_SET);
    float *data = xcalloc((size_t)(fsize - (long)sizeof *c) / 4 + 1, 4);
    size_t nf = fread(data, 4, (size_t)(fsize - (long)sizeof *c) / 4, f);
    fclose(f);
    const int d = c->dim, hd = c->hidden_dim, L = c->n_layers, hs = d / c->n_heads;
    const int kvd = c->n_kv_heads * hs;
    float *p = data;
    w->tok = p, p += (size_t)c->vocab_size * d;
    w->rms_att = p, p += (size_t)L * d;
    w->wq = p, p += (size_t)L * d * d;
    w->wk = p, p += (size_t)L * d * kvd;
    w->wv = p, p += (size_t)L * d * kvd;
    w->wo = p, p += (size_t)L * d * d;
    w->rms_ffn = p, p += (size_t)L * d;
    w->w1 = p, p += (size_t)L * d * hd;
    w->w2 = p, p += (size_t)L * hd * d;
    w->w3 = p, p += (size_t)L * d * hd;
    w->rms_final = p, p += d;
    p += (size_t)c->seq_len * hs; /* freq_cis_real and freq_cis_imag (unused) */
    w->wcls = shared ? w->tok : p;
    if (!shared)
        p += (size_t)c->vocab_size * d;
    if ((size_t)(p - data) > nf) {
        fprintf(stderr, "%s: file too short\n", file);
        exit(2);
    }
    return data;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: plain_llama2c MODEL.bin|HF_DIR TOKENS.u16 SEQLEN SEQS\n");
        return 2;
    }
    Config c;
    Weights w;
    struct stat sb;
    char *keep = NULL;
    float *data = NULL;
    if (stat(argv[1], &sb) == 0 && S_ISDIR(sb.st_mode))
        load_hf(argv[1], &c, &w, &keep);
    else
        data = load_llama2c(argv[1], &c, &w);
    const int d = c.dim, hd = c.hidden_dim, L = c.n_layers, hs = d / c.n_heads;
    const int kvd = c.n_kv_heads * hs;

    FILE *tf = fopen(argv[2], "rb");
    if (!tf) {
        perror(argv[2]);
        return 2;
    }
    int seqlen = atoi(argv[3]), seqs = atoi(argv[4]);
    uint16_t *tok = xcalloc((size_t)seqlen * seqs, 2);
    if (fread(tok, 2, (size_t)seqlen * seqs, tf) != (size_t)seqlen * seqs) {
        fprintf(stderr, "%s: fewer than %d x %d tokens\n", argv[2], seqs, seqlen);
        return 2;
    }
    fclose(tf);

    float *x = xcalloc(d, 4), *xb = xcalloc(d, 4), *xb2 = xcalloc(d, 4), *q = xcalloc(d, 4);
    float *hb = xcalloc(hd, 4), *hb2 = xcalloc(hd, 4), *att = xcalloc(seqlen, 4);
    float *logits = xcalloc(c.vocab_size, 4);
    float *kc = xcalloc((size_t)L * seqlen * kvd, 4), *vc = xcalloc((size_t)L * seqlen * kvd, 4);
    double nll = 0;
    long count = 0;
    for (int s = 0; s < seqs; s++) {
        const uint16_t *t = tok + (size_t)s * seqlen;
        for (int pos = 0; pos + 1 < seqlen; pos++) {
            memcpy(x, w.tok + (size_t)t[pos] * d, (size_t)d * 4);
            for (int l = 0; l < L; l++) {
                float *k = kc + ((size_t)l * seqlen + pos) * kvd, *v = vc + ((size_t)l * seqlen + pos) * kvd;
                rmsnorm(xb, x, w.rms_att + (size_t)l * d, d);
                matmul(q, xb, w.wq + (size_t)l * d * d, d, d);
                matmul(k, xb, w.wk + (size_t)l * d * kvd, d, kvd);
                matmul(v, xb, w.wv + (size_t)l * d * kvd, d, kvd);
                /* RoPE: pair j of a head (frequency theta^(-2j/hs)) is (2j, 2j+1)
                 * in llama2.c and (j, j + hs/2) in HF (rotate_half). */
                for (int h0 = 0; h0 < d; h0 += hs)
                    for (int j = 0; j < hs / 2; j++) {
                        double fr = 1.0 / pow(g_theta, 2.0 * j / (double)hs), a = pos * fr;
                        float fcr = (float)cos(a), fci = (float)sin(a);
                        int i0 = g_rope_half ? h0 + j : h0 + 2 * j;
                        int i1 = g_rope_half ? h0 + j + hs / 2 : h0 + 2 * j + 1;
                        for (int which = 0; which < (h0 < kvd ? 2 : 1); which++) {
                            float *vec = which == 0 ? q : k;
                            float v0 = vec[i0], v1 = vec[i1];
                            vec[i0] = v0 * fcr - v1 * fci;
                            vec[i1] = v0 * fci + v1 * fcr;
                        }
                    }
                for (int h = 0; h < c.n_heads; h++) {
                    const float *qh = q + h * hs;
                    int kvh = h / (c.n_heads / c.n_kv_heads);
                    float mx = -INFINITY;
                    for (int u = 0; u <= pos; u++) {
                        const float *ku = kc + ((size_t)l * seqlen + u) * kvd + kvh * hs;
                        double sc = 0;
                        for (int i = 0; i < hs; i++)
                            sc += (double)qh[i] * ku[i];
                        att[u] = (float)(sc / sqrt((double)hs));
                        if (att[u] > mx)
                            mx = att[u];
                    }
                    double z = 0;
                    for (int u = 0; u <= pos; u++)
                        z += att[u] = expf(att[u] - mx);
                    for (int i = 0; i < hs; i++) {
                        double o = 0;
                        for (int u = 0; u <= pos; u++)
                            o += att[u] * vc[((size_t)l * seqlen + u) * kvd + kvh * hs + i];
                        xb[h * hs + i] = (float)(o / z);
                    }
                }
                matmul(xb2, xb, w.wo + (size_t)l * d * d, d, d);
                for (int i = 0; i < d; i++)
                    x[i] += xb2[i];
                rmsnorm(xb, x, w.rms_ffn + (size_t)l * d, d);
                matmul(hb, xb, w.w1 + (size_t)l * d * hd, d, hd);
                matmul(hb2, xb, w.w3 + (size_t)l * d * hd, d, hd);
                for (int i = 0; i < hd; i++)
                    hb[i] = hb[i] / (1.0f + expf(-hb[i])) * hb2[i];
                matmul(xb, hb, w.w2 + (size_t)l * hd * d, hd, d);
                for (int i = 0; i < d; i++)
                    x[i] += xb[i];
            }
            rmsnorm(xb, x, w.rms_final, d);
            matmul(logits, xb, w.wcls, d, c.vocab_size);
            double mx = -INFINITY, z = 0;
            for (int i = 0; i < c.vocab_size; i++)
                mx = fmax(mx, logits[i]);
            for (int i = 0; i < c.vocab_size; i++)
                z += exp(logits[i] - mx);
            nll += log(z) + mx - logits[t[pos + 1]];
            count++;
        }
    }
    printf("ppl %.6f\n", exp(nll / count));
    if (!data) { /* HF: every array is a copy */
        free(w.rms_att), free(w.wq), free(w.wk), free(w.wv), free(w.wo), free(w.rms_ffn);
        free(w.w1), free(w.w2), free(w.w3), free(w.tok), free(w.rms_final), free(keep);
    }
    free(data), free(tok), free(x), free(xb), free(xb2), free(q), free(hb), free(hb2), free(att);
    free(logits), free(kc), free(vc);
    return 0;
}
