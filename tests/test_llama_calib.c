/* Block-by-block calibration (src/llama_calib.c) and the streamed X^T X
 * (qsur_gram_acc in src/wquant.c):
 *  - X^T X fed in uneven chunks equals the plain triple-loop product (to
 *    rounding) and qsur_gram on the stored X bit for bit;
 *  - whole-model GPTQ calibrated block by block gives bit for bit the
 *    weights (and the output errors to 1e-4) of a plain reference written here: every
 *    group's input captured by re-running the calibration sequences from the
 *    embeddings through the model as quantized so far, H from the stored X,
 *    GPTQ on it. On stories260K (5 blocks) here, and on a 2-block model of
 *    TinyLlama-1.1B's shapes stored in bf16 (with a subset of positions) in
 *    tests/slow_llama_calib.c, which builds this file with CALIB_REAL_SHAPE. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/gptq.h"
#include "qsur/llama.h"
#include "qsur/llama_calib.h"
#include "qsur/llama_wquant.h"
#include "qsur/safetensors.h"
#include "qsur/wquant.h"

static void gram_streamed(void)
{
    enum { N = 700, C = 37 };
    float *X = malloc(sizeof(float) * N * C);
    double *Hs = malloc(sizeof(double) * C * C), *Hg = malloc(sizeof(double) * C * C);
    for (int i = 0; i < N * C; i++)
        X[i] = (float)check_gauss();
    qsur_error err;
    qsur_gram_acc g;
    CHECK_OK(qsur_gram_acc_init(&g, C, Hs, &err), err);
    for (int r = 0; r < N;) {
        int k = 1 + (int)(check_uniform() * 90); /* chunks across the 256-row blocks */
        k = r + k > N ? N - r : k;
        qsur_gram_acc_rows(&g, X + (size_t)r * C, k);
        r += k;
    }
    qsur_gram_acc_finish(&g);
    qsur_gram_acc_free(&g);
    CHECK_OK(qsur_gram(X, N, C, Hg, NULL, &err), err);
    CHECK(memcmp(Hs, Hg, sizeof(double) * C * C) == 0);
    double worst = 0, scale = 0;
    for (int i = 0; i < C; i++)
        for (int j = 0; j < C; j++) {
            double s = 0;
            for (int t = 0; t < N; t++)
                s += (double)X[t * C + i] * X[t * C + j];
            worst = fmax(worst, fabs(Hs[i * C + j] - s));
            scale = fmax(scale, fabs(s));
        }
    CHECK_MSG(worst <= 1e-12 * scale, "streamed X^T X vs the plain product: %g of %g", worst, scale);
    /* nothing fed: zero */
    CHECK_OK(qsur_gram_acc_init(&g, C, Hs, &err), err);
    Hs[5] = 1;
    qsur_gram_acc_finish(&g);
    qsur_gram_acc_free(&g);
    CHECK(Hs[5] == 0);
    free(X), free(Hs), free(Hg);
}

/* The loop whole-model GPTQ ran before block-by-block calibration: for every
 * group, the calibration sequences from the embeddings through the model as
 * quantized so far, that group's input stored, H = X^T X of it. err_out
 * receives each linear's output error on that X (qsur_layer_output_error). */
static void reference_gptq(qsur_llama *m, const qsur_tokens *cal, const qsur_quant_spec *spec,
                           const qsur_llama_wquant_opts *o, double *err_out, double *rtn_out)
{
    qsur_error err;
    for (int layer = 0; layer < m->cfg.n_layers; layer++)
        for (int g = 0; g < 4; g++) {
            qsur_workspace ws;
            qsur_workspace_init(&ws);
            qsur_llama_capture_sel sel = {layer, 1, 1u << g};
            int64_t n = 0;
            CHECK_OK(qsur_llama_capture_some(m, NULL, cal, o->seq_len, o->max_seqs, o->batch,
                                             o->max_tokens, o->seed, &sel, &ws, &n, NULL, &err), err);
            const qsur_tensor *X = ws.items[0];
            int64_t cols = qsur_tensor_cols(X);
            double *H = malloc(sizeof(double) * (size_t)(cols * cols));
            CHECK_OK(qsur_gram(X->data, n, cols, H, NULL, &err), err);
            int idx[3] = {layer * 7 + 5}, k = 1;
            if (g == 0)
                idx[0] = layer * 7, idx[1] = layer * 7 + 1, idx[2] = layer * 7 + 2, k = 3;
            else if (g == 1)
                idx[0] = layer * 7 + 3;
            else if (g == 2)
                idx[0] = layer * 7 + 4, idx[1] = layer * 7 + 6, k = 2;
            for (int j = 0; j < k; j++) {
                qsur_llama_linear *l = qsur_llama_linear_at(m, idx[j]);
                qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
                size_t sz = (size_t)(l->rows * l->cols);
                float *W = malloc(sz * sizeof(float)), *Q = malloc(sz * sizeof(float));
                float *R = malloc(sz * sizeof(float));
                qsur_llama_linear_read_rows(l, 0, l->rows, W);
                qsur_qweight *qw = NULL;
                CHECK_OK(qsur_qweight_new(&qw, &q, l->rows, l->cols, &err), err);
                qsur_wquant_layer L = {W, l->rows, l->cols, X->data, n, H};
                CHECK_OK(qsur_gptq(&L, &q, &o->gptq, Q, qw, NULL, &err), err);
                CHECK_OK(qsur_fake_quant(&q, W, l->rows, l->cols, R, NULL, &err), err);
                CHECK_OK(qsur_layer_output_error(X->data, NULL, W, Q, n, cols, l->rows,
                                                 &err_out[idx[j]], &err), err);
                CHECK_OK(qsur_layer_output_error(X->data, NULL, W, R, n, cols, l->rows,
                                                 &rtn_out[idx[j]], &err), err);
                CHECK_OK(qsur_llama_linear_set_quant_qw(l, Q, qw, &err), err);
                qsur_qweight_free(qw);
                free(W), free(Q), free(R);
            }
            free(H);
            qsur_workspace_clear(&ws);
        }
}

/* a (block by block) and b (reference) hold the same weights afterwards. */
static void compare(const char *what, qsur_llama *a, qsur_llama *b, const qsur_llama_wquant_row *rows,
                    const double *e, const double *e_rtn)
{
    int nl = qsur_llama_linear_count(a), same = 0, same_err = 0, packed = 0;
    for (int i = 0; i < nl; i++) {
        qsur_llama_linear *la = qsur_llama_linear_at(a, i), *lb = qsur_llama_linear_at(b, i);
        size_t sz = (size_t)(la->rows * la->cols);
        float *wa = malloc(sz * sizeof(float)), *wb = malloc(sz * sizeof(float));
        qsur_llama_linear_forward_rows(la, 0, la->rows, wa);
        qsur_llama_linear_forward_rows(lb, 0, lb->rows, wb);
        same += memcmp(wa, wb, sz * sizeof(float)) == 0;
        packed += la->qp != NULL;
        /* the same sums over the same 256-token blocks, but the outputs
         * X W^T come from sgemm on slices of W's rows, which may round them
         * differently in the last bit; the error divides that by its own size
         * (y - yq is ~error x y), so 1e-4 relative */
        same_err += fabs(rows[i].error - e[i]) <= 1e-4 * e[i] &&
                    fabs(rows[i].rtn_error - e_rtn[i]) <= 1e-4 * e_rtn[i];
        if (!(fabs(rows[i].error - e[i]) <= 1e-4 * e[i]))
            printf("  %s: error %.17g, re-run %.17g\n", la->name, rows[i].error, e[i]);
        free(wa), free(wb);
    }
    printf("%s: %d/%d linears identical to the re-run reference, %d/%d output errors (1e-4), %d packed; "
           "w2 of the last block: error %.5f (rtn %.5f)\n", what, same, nl, same_err, nl, packed,
           rows[nl - 2].error, rows[nl - 2].rtn_error);
    CHECK_MSG(same == nl, "%s: %d of %d linears differ", what, nl - same, nl);
    CHECK_MSG(same_err == nl, "%s: %d of %d error rows differ", what, nl - same_err, nl);
    CHECK(packed == nl);
    CHECK(rows[nl - 2].error < rows[nl - 2].rtn_error);
}

static void against_reference(const char *what, qsur_llama *a, qsur_llama *b, const qsur_tokens *cal,
                              const qsur_quant_spec *q, const qsur_llama_wquant_opts *o)
{
    qsur_error err;
    int nl = qsur_llama_linear_count(a);
    qsur_llama_wquant_row *rows = calloc((size_t)nl, sizeof *rows);
    double *e = calloc((size_t)nl, sizeof *e), *e_rtn = calloc((size_t)nl, sizeof *e_rtn);
    CHECK_OK(qsur_llama_wquant(a, cal, q, o, rows, NULL, &err), err);
    reference_gptq(b, cal, q, o, e, e_rtn);
    compare(what, a, b, rows, e, e_rtn);
    free(rows), free(e), free(e_rtn);
}

static void stories(void)
{
    qsur_error err;
    qsur_llama *a = NULL, *b = NULL;
    qsur_tokens cal;
    const char *p = check_shared("data/stories260K.bin");
    CHECK_OK(qsur_llama_load(&a, p, NULL, &err), err);
    CHECK_OK(qsur_llama_load(&b, p, NULL, &err), err);
    CHECK_OK(qsur_tokens_load(&cal, check_shared("data/stories260K.calib.u16"), 256, 512, &err), err);
    if (!a || !b || !cal.ids)
        return;
    qsur_quant_spec q = qsur_quant_default();
    q.bits = 3, q.gran = QSUR_GRAN_GROUP, q.group = 32, q.symmetric = 0;
    qsur_llama_wquant_opts o = qsur_llama_wquant_default();
    o.seq_len = 128, o.max_seqs = 6, o.batch = 4; /* a short last batch */
    against_reference("stories260K w3 g32, 6 x 128 tokens", a, b, &cal, &q, &o);

    /* the stream after block 0 is the full forward's residual there: the
     * capture of block 1's attention input matches a run of block 1 */
    qsur_llama_calib *c = NULL;
    CHECK_OK(qsur_llama_calib_new(&c, a, &cal, 128, 2, 2, 0, 1, &err), err);
    CHECK(qsur_llama_calib_tokens(c) == 256 && qsur_llama_calib_block(c) == 0);
    CHECK(qsur_llama_calib_bytes(c) == 2 * 256 * 64 * 4 + 256 * 8);
    CHECK_OK(qsur_llama_calib_run(c, a, NULL, 0, 1, NULL, &err), err);
    CHECK(qsur_llama_calib_block(c) == 1);
    qsur_llama_calib_free(c);
    qsur_tokens_free(&cal);
    qsur_llama_free(a);
    qsur_llama_free(b);
}

#ifdef CALIB_REAL_SHAPE
/* TinyLlama-1.1B's shapes (dim 2048, hidden 5632, 32 heads, 4 kv heads), 2
 * blocks, a small vocabulary (the classifier is not calibrated), linears
 * stored in bf16 as a checkpoint holds them. */
static qsur_llama *tiny_shape(uint64_t seed)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 2048, c.hidden_dim = 5632, c.n_layers = 2, c.n_heads = 32, c.n_kv_heads = 4;
    c.vocab_size = 256, c.seq_len = 2048, c.shared_classifier = 0;
    qsur_llama *m = NULL;
    qsur_error err;
    CHECK_OK(qsur_llama_new(&m, &c, &err), err);
    if (!m)
        return NULL;
    check_seed(seed);
    for (int64_t i = 0; i < (int64_t)c.vocab_size * c.dim; i++)
        m->tok_embeddings[i] = (float)(0.02 * check_gauss());
    for (int i = 0; i <= qsur_llama_linear_count(m); i++) {
        qsur_llama_linear *l = i < qsur_llama_linear_count(m) ? qsur_llama_linear_at(m, i) : &m->output;
        double sd = 1.0 / sqrt(3.0 * (double)l->cols);
        for (int64_t j = 0; j < l->rows * l->cols; j++)
            l->w[j] = (float)((2 * check_uniform() - 1) * sqrt(3.0) * sd);
        CHECK_OK(qsur_llama_linear_store_back(l, QSUR_DTYPE_BF16, &err), err);
    }
    for (int l = 0; l < c.n_layers; l++)
        for (int j = 0; j < c.dim; j++) {
            m->layers[l].attention_norm[j] = 1.0f;
            m->layers[l].ffn_norm[j] = 1.0f;
        }
    for (int j = 0; j < c.dim; j++)
        m->norm[j] = 1.0f;
    return m;
}

static void real_shape(void)
{
    qsur_llama *a = tiny_shape(7), *b = tiny_shape(7);
    if (!a || !b)
        return;
    CHECK(a->layers[1].w2.w == NULL && a->layers[1].w2.st.dtype == QSUR_DTYPE_BF16);
    qsur_tokens cal;
    memset(&cal, 0, sizeof cal);
    cal.seq_len = 48;
    cal.n = 3 * 48;
    cal.ids = malloc(sizeof(int) * (size_t)cal.n);
    for (int64_t i = 0; i < cal.n; i++)
        cal.ids[i] = (int)(check_uniform() * 256) % 256;
    qsur_quant_spec q = qsur_quant_default();
    q.bits = 4, q.gran = QSUR_GRAN_GROUP, q.group = 128, q.symmetric = 0;
    qsur_llama_wquant_opts o = qsur_llama_wquant_default();
    o.batch = 2, o.max_tokens = 100, o.seed = 3;
    against_reference("TinyLlama shape, 2 blocks, bf16, w4 g128, 100 of 3 x 48 tokens", a, b, &cal, &q, &o);
    free(cal.ids);
    qsur_llama_free(a);
    qsur_llama_free(b);
}

#endif

int main(void)
{
    check_seed(11);
    gram_streamed();
    stories();
#ifdef CALIB_REAL_SHAPE
    real_shape(); /* tests/slow_llama_calib.c: about a minute of CPU */
#endif
    return check_done();
}
