/* qsur_bf16_matvec (src/bf16_matvec.c) against a plain double-precision
 * product of the widened weights, for the dispatched (AVX-512) kernel, the
 * plain C one and the threaded split; odd sizes reach the tails, rope_heads
 * the HF row order. Then a decoding step of a bf16 model: the logits of
 * one-token forward calls equal those of the widened-sgemm path up to float
 * rounding, and greedy generation picks the same tokens. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/bf16_matvec.h"
#include "qsur/half.h"
#include "qsur/llama.h"

/* HF row of Meta row r (independent of the kernel's own mapping). */
static int64_t hf_row(int64_t rows, int heads, int64_t r)
{
    if (!heads)
        return r;
    int64_t hs = rows / heads, h = r / hs, i = (r % hs) / 2, c = (r % hs) % 2;
    return h * hs + c * (hs / 2) + i;
}

static void check_case(int N, int64_t rows, int64_t cols, int heads, int threads)
{
    uint16_t *W = malloc((size_t)(rows * cols) * 2);
    float *x = malloc((size_t)(N * cols) * sizeof *x);
    float *y = malloc((size_t)(N * rows) * sizeof *y), *yp = malloc((size_t)(N * rows) * sizeof *yp);
    float *yt = malloc((size_t)(N * rows) * sizeof *yt);
    CHECK(W && x && y && yp && yt);
    if (!W || !x || !y || !yp || !yt)
        return;
    for (int64_t i = 0; i < rows * cols; i++)
        W[i] = qsur_f32_to_bf16((float)check_gauss());
    for (int64_t i = 0; i < N * cols; i++)
        x[i] = (float)check_gauss();
    qsur_bf16_matvec_rows(x, N, cols, W, rows, heads, 0, rows, y, rows);
    qsur_bf16_matvec_plain(x, N, cols, W, rows, heads, 0, rows, yp, rows);
    qsur_bf16_matvec(x, N, cols, W, rows, heads, yt, rows, threads);
    double worst = 0;
    for (int n = 0; n < N; n++)
        for (int64_t r = 0; r < rows; r++) {
            const uint16_t *w = W + hf_row(rows, heads, r) * cols;
            double ref = 0, mag = 0;
            for (int64_t c = 0; c < cols; c++) {
                double p = (double)x[n * cols + c] * qsur_bf16_to_f32(w[c]);
                ref += p;
                mag += fabs(p);
            }
            float got[3] = {y[n * rows + r], yp[n * rows + r], yt[n * rows + r]};
            for (int k = 0; k < 3; k++) {
                double e = fabs(got[k] - ref) / (mag + 1e-30);
                worst = e > worst ? e : worst;
            }
        }
    /* float32 accumulation of cols terms: a few ulps times sqrt(cols) */
    CHECK_MSG(worst < 1e-5, "N %d, %lldx%lld, heads %d: relative error %.3g", N,
              (long long)rows, (long long)cols, heads, worst);
    free(W), free(x), free(y), free(yp), free(yt);
}

static void check_decoding(void)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 64, c.hidden_dim = 160, c.n_layers = 2, c.n_heads = 4, c.n_kv_heads = 2;
    c.vocab_size = 70, c.seq_len = 64, c.shared_classifier = 0;
    qsur_llama *m = NULL, *mb = NULL;
    qsur_error err;
    CHECK_OK(qsur_llama_new(&m, &c, &err), err);
    if (!m)
        return;
    for (int64_t i = 0; i < (int64_t)c.vocab_size * c.dim; i++)
        m->tok_embeddings[i] = (float)check_gauss();
    for (int i = 0; i <= qsur_llama_linear_count(m); i++) {
        qsur_llama_linear *l = i < qsur_llama_linear_count(m) ? qsur_llama_linear_at(m, i) : &m->output;
        for (int64_t j = 0; j < l->rows * l->cols; j++)
            l->w[j] = (float)(2 * check_gauss() / sqrt((double)l->cols));
    }
    for (int l = 0; l < c.n_layers; l++)
        for (int j = 0; j < c.dim; j++)
            m->layers[l].attention_norm[j] = m->layers[l].ffn_norm[j] = 1.0f;
    for (int j = 0; j < c.dim; j++)
        m->norm[j] = 1.0f;
    const char *dir = check_subdir("bf16");
    CHECK_OK(qsur_llama_save_hf(m, dir, "BF16", &err), err);
    CHECK_OK(qsur_llama_load_hf(&mb, dir, NULL, &err), err);
    if (mb) {
        CHECK(mb->layers[0].wq.st.dtype == QSUR_DTYPE_BF16 && mb->layers[0].wq.st.rope_heads);
        enum { P = 5, NEW = 20 };
        int prompt[P] = {3, 14, 15, 9, 26}, a[NEW], b[NEW];
        qsur_llama_state *s1 = NULL, *s2 = NULL;
        CHECK_OK(qsur_llama_state_new(&s1, mb, 1, P + NEW, &err), err);
        CHECK_OK(qsur_llama_state_new(&s2, mb, 1, P + NEW, &err), err);
        if (s1 && s2) {
            s2->no_matvec = 1;
            /* a prompt of 5 rows also takes the matvec path (<= 8 rows) */
            CHECK_OK(qsur_llama_generate(mb, s1, prompt, P, NEW, a, &err), err);
            CHECK_OK(qsur_llama_generate(mb, s2, prompt, P, NEW, b, &err), err);
            CHECK_MSG(memcmp(a, b, sizeof a) == 0, "greedy tokens differ with the matvec");
            double worst = 0, mag = 0;
            for (int j = 0; j < c.vocab_size; j++) {
                worst = fmax(worst, fabs(s1->logits[j] - s2->logits[j]));
                mag = fmax(mag, fabs(s2->logits[j]));
            }
            printf("decoding: last logits differ by %.3g (max |logit| %.3g)\n", worst, mag);
            CHECK(worst <= 1e-4 * mag);
        }
        qsur_llama_state_free(s1);
        qsur_llama_state_free(s2);
    }
    qsur_llama_free(mb);
    qsur_llama_free(m);
}

int main(void)
{
    check_seed(4);
    printf("AVX-512 kernel: %s\n", qsur_bf16_matvec_avx512() ? "yes" : "no (plain C)");
    check_case(1, 37, 131, 0, 1);
    check_case(3, 64, 96, 4, 1);
    check_case(5, 40, 32, 0, 1);
    check_case(8, 17, 200, 2, 1);
    check_case(2, 1024, 1100, 8, 2); /* > 2^20 weights: split over threads */
    check_case(1, 1031, 1025, 0, 3);
    check_decoding();
    return check_done();
}
