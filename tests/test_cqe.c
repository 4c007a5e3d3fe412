/* CQE+ (cqe.h): D = 0 is RTN bit for bit; the band gradient matches central
 * differences of a double-precision loss written here; band 0 only moves the
 * singular values (LSI); the trained result beats RTN on the sample layer and on
 * a real captured input of stories260K. */
#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/cqe.h"
#include "qsur/cqe_cross.h"
#include "qsur/llama_train.h"
#include "qsur/llama.h"
#include "qsur/npy.h"
#include "qsur/tensor.h"
#include "qsur/workspace.h"

/* naive double ||X (W - Q)^T||_F^2 */
static double ref_loss(const float *X, int64_t n, const float *W, const float *Q, int64_t m, int64_t d)
{
    double f = 0;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < m; i++) {
            double y = 0;
            for (int64_t j = 0; j < d; j++)
                y += (double)X[t * d + j] * ((double)W[i * d + j] - Q[i * d + j]);
            f += y * y;
        }
    return f;
}

static void random_layer(float *W, float *X, int64_t m, int64_t d, int64_t n)
{
    for (int64_t i = 0; i < m * d; i++)
        W[i] = (float)(0.1 * check_gauss());
    for (int64_t i = 0; i < n * d; i++)
        X[i] = (float)check_gauss();
}

static void test_rtn_at_zero(void)
{
    qsur_error err;
    enum { M = 24, N = 64, T = 50 };
    float W[M * N], X[T * N], Q[M * N], R[M * N];
    random_layer(W, X, M, N, T);
    qsur_wquant_layer L = {W, M, N, X, T, NULL};
    qsur_quant_spec specs[3] = {qsur_quant_default(), qsur_quant_default(), qsur_quant_default()};
    specs[1].symmetric = 0, specs[1].gran = QSUR_GRAN_GROUP, specs[1].group = 16, specs[1].bits = 3;
    specs[2].bits = 2, specs[2].clip_search = 1;
    for (int s = 0; s < 3; s++) {
        qsur_cqe_problem *p = NULL;
        CHECK_OK(qsur_cqe_problem_new(&p, &L, &specs[s], 0, 2, &err), err);
        if (!p)
            continue;
        CHECK(qsur_cqe_rank(p) == M && qsur_cqe_band(p) == 2 && qsur_cqe_band_size(p) == M * 5);
        double *D = calloc((size_t)qsur_cqe_band_size(p), sizeof *D), f;
        CHECK_OK(qsur_cqe_eval(p, D, Q, &f, NULL, &err), err);
        CHECK_OK(qsur_fake_quant(&specs[s], W, M, N, R, NULL, &err), err);
        CHECK_MSG(!memcmp(Q, R, sizeof Q), "spec %d: D = 0 is not RTN bit for bit", s);
        CHECK_REL(f, ref_loss(X, T, W, R, M, N), 1e-4);
        /* steps = 0 returns RTN too */
        qsur_cqe_opts o = qsur_cqe_default();
        o.steps = 0;
        qsur_cqe_result res;
        CHECK_OK(qsur_cqe(&L, &specs[s], &o, Q, NULL, NULL, &res, NULL, &err), err);
        CHECK(!memcmp(Q, R, sizeof Q) && res.loss == res.rtn_loss && res.best_step == 0);
        free(D);
        qsur_cqe_problem_free(p);
    }
}

/* Without quantization (bits 16) f(D) = ||X (U_r D V_r^T)^T||^2 is smooth and
 * quadratic: central differences of the double loss are exact up to rounding. */
static void test_gradient(void)
{
    qsur_error err;
    enum { M = 12, N = 10, T = 30 };
    float W[M * N], X[T * N], Q[M * N];
    random_layer(W, X, M, N, T);
    qsur_wquant_layer L = {W, M, N, X, T, NULL};
    qsur_quant_spec q = qsur_quant_default();
    q.bits = 16;
    qsur_cqe_problem *p = NULL;
    CHECK_OK(qsur_cqe_problem_new(&p, &L, &q, 7, 1, &err), err);
    if (!p)
        return;
    int64_t nb = qsur_cqe_band_size(p);
    CHECK(nb == 7 * 3);
    double *D = calloc((size_t)nb, sizeof *D), *G = calloc((size_t)nb, sizeof *G), f;
    for (int64_t i = 0; i < nb; i++)
        D[i] = 0.05 * check_gauss();
    D[0] = D[nb - 1] = 0; /* slots outside the matrix (j = -1, j = r) */
    CHECK_OK(qsur_cqe_eval(p, D, Q, &f, G, &err), err);
    CHECK(G[0] == 0 && G[nb - 1] == 0);
    double worst = 0, gmax = 0;
    for (int64_t k = 1; k < nb - 1; k++) {
        const double h = 1e-2, d0 = D[k];
        double fp, fm;
        D[k] = d0 + h;
        CHECK_OK(qsur_cqe_eval(p, D, Q, &fp, NULL, &err), err);
        fp = ref_loss(X, T, W, Q, M, N);
        D[k] = d0 - h;
        CHECK_OK(qsur_cqe_eval(p, D, Q, &fm, NULL, &err), err);
        fm = ref_loss(X, T, W, Q, M, N);
        D[k] = d0;
        double fd = (fp - fm) / (2 * h);
        worst = fmax(worst, fabs(fd - G[k]));
        gmax = fmax(gmax, fabs(G[k]));
    }
    CHECK_MSG(gmax > 1e-3 && worst < 1e-3 * gmax, "gradient vs central differences: max diff %g (max |G| %g)",
              worst, gmax);
    free(D), free(G);
    qsur_cqe_problem_free(p);
}

/* descending singular values of a m x d float matrix */
static void singular_values(const float *A, int64_t m, int64_t d, double *s)
{
    double *a = malloc(sizeof(double) * (size_t)(m * d)), *sup = malloc(sizeof(double) * (size_t)m);
    for (int64_t i = 0; i < m * d; i++)
        a[i] = A[i];
    lapack_int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)m, (lapack_int)d, a,
                                     (lapack_int)d, s, NULL, 1, NULL, 1, sup);
    CHECK(info == 0);
    free(a), free(sup);
}

static int cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

/* band = 0 is LSI: W' = U (S + diag D) V^T keeps the singular vectors, so the
 * singular values of W' are |S_i + D_i| (sorted); band 1 breaks that. */
static void test_band0_is_lsi(void)
{
    qsur_error err;
    enum { M = 16, N = 32, T = 80 };
    float W[M * N], X[T * N], Q[M * N], Wp[M * N];
    random_layer(W, X, M, N, T);
    qsur_wquant_layer L = {W, M, N, X, T, NULL};
    qsur_quant_spec q = qsur_quant_default();
    q.bits = 3;
    qsur_quant_spec id = q;
    id.bits = 16;
    for (int band = 0; band <= 1; band++) {
        qsur_cqe_opts o = qsur_cqe_default();
        o.band = band;
        o.steps = 40;
        o.lr = 1e-2;
        double D[M * 3];
        qsur_cqe_result res;
        CHECK_OK(qsur_cqe(&L, &q, &o, Q, D, NULL, &res, NULL, &err), err);
        CHECK(res.band == band && res.rank == M && res.best_step > 0 && res.loss < res.rtn_loss);
        qsur_cqe_problem *p = NULL;
        CHECK_OK(qsur_cqe_problem_new(&p, &L, &id, 0, band, &err), err);
        if (!p)
            continue;
        double f, s[M], want[M];
        CHECK_OK(qsur_cqe_eval(p, D, Wp, &f, NULL, &err), err); /* bits 16: Q(W') = W' */
        const double *S = qsur_cqe_singular_values(p);
        for (int i = 0; i < M; i++)
            want[i] = fabs(S[i] + D[i * (2 * band + 1) + band]);
        qsort(want, M, sizeof *want, cmp_desc);
        singular_values(Wp, M, N, s);
        double worst = 0, moved = 0;
        for (int i = 0; i < M; i++) {
            worst = fmax(worst, fabs(s[i] - want[i]));
            moved = fmax(moved, fabs(s[i] - S[i]));
        }
        if (band == 0)
            CHECK_MSG(worst < 1e-5 && moved > 1e-4, "band 0: sv(W') vs |S+D|: %g (moved %g)", worst, moved);
        else
            CHECK_MSG(worst > 1e-4, "band 1 should move more than the singular values (%g)", worst);
        qsur_cqe_problem_free(p);
    }
}

/* Trains and checks: losses fall, output error <= RTN's. */
static void train_and_compare(const char *what, const float *W, int64_t m, int64_t d, const float *X,
                              int64_t n, const qsur_quant_spec *q, int steps, double lr)
{
    qsur_error err;
    qsur_wquant_layer L = {W, m, d, X, n, NULL};
    qsur_cqe_opts o = qsur_cqe_default();
    o.steps = steps;
    o.lr = lr;
    float *Q = malloc(sizeof(float) * (size_t)(m * d)), *R = malloc(sizeof(float) * (size_t)(m * d));
    double *losses = malloc(sizeof(double) * (size_t)(steps + 1)), e_rtn = 0, e = 0;
    qsur_cqe_result res;
    CHECK_OK(qsur_cqe(&L, q, &o, Q, NULL, losses, &res, NULL, &err), err);
    CHECK_OK(qsur_fake_quant(q, W, m, d, R, NULL, &err), err);
    CHECK_OK(qsur_layer_output_error(X, NULL, W, R, n, d, m, &e_rtn, &err), err);
    CHECK_OK(qsur_layer_output_error(X, NULL, W, Q, n, d, m, &e, &err), err);
    double last = losses[steps];
    printf("%s: output error rtn %.5f cqe+ %.5f (loss %.6g -> best %.6g at step %d, last %.6g)\n", what, e_rtn, e,
           res.rtn_loss, res.loss, res.best_step, last);
    CHECK_MSG(losses[0] == res.rtn_loss && res.loss < 0.98 * res.rtn_loss && last < res.rtn_loss,
              "%s: loss did not decrease (%g -> %g, last %g)", what, res.rtn_loss, res.loss, last);
    CHECK_MSG(e < e_rtn, "%s: cqe+ %g vs rtn %g", what, e, e_rtn);
    free(Q), free(R), free(losses);
}

static void test_sample_layer(void)
{
    qsur_error err;
    qsur_tensor *sw = NULL, *sx = NULL;
    CHECK_OK(qsur_npy_read(check_source("sample_data/W.npy"), "W", &sw, NULL, &err), err);
    CHECK_OK(qsur_npy_read(check_source("sample_data/X.npy"), "X", &sx, NULL, &err), err);
    if (sw && sx) {
        qsur_quant_spec q = qsur_quant_default();
        train_and_compare("sample layer w4 row", sw->data, qsur_tensor_rows(sw), qsur_tensor_cols(sw), sx->data,
                          qsur_tensor_rows(sx), &q, 30, 1e-3);
    }
    qsur_tensor_free(sw);
    qsur_tensor_free(sx);
}

static void test_stories_w2(void)
{
    qsur_error err;
    qsur_llama *m = NULL;
    qsur_tokens cal;
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    if (m) /* float weights: the test reads and edits w */
        CHECK_OK(qsur_llama_own_all(m, &err), err);
    CHECK_OK(qsur_tokens_load(&cal, check_shared("data/stories260K.calib.u16"), 256, 512, &err), err);
    if (check_failed) {
        qsur_llama_free(m);
        return;
    }
    qsur_workspace cap;
    qsur_workspace_init(&cap);
    CHECK_OK(qsur_llama_capture(m, NULL, &cal, 0, 4, 4, 0, 1, &cap, NULL, NULL, &err), err);
    const qsur_tensor *X = qsur_workspace_find(&cap, "layers.0.feed_forward.w2.in");
    qsur_llama_linear *w2 = qsur_llama_linear_find(m, "layers.0.feed_forward.w2");
    CHECK(X && w2);
    if (X && w2) {
        qsur_quant_spec q = qsur_quant_default();
        q.bits = 3;
        q.symmetric = 0;
        q.gran = QSUR_GRAN_GROUP;
        q.group = 43; /* 172 = 4 x 43 */
        train_and_compare("stories260K layers.0.feed_forward.w2 w3 asym g43", w2->w, w2->rows, w2->cols, X->data,
                          qsur_tensor_rows(X), &q, 40, 1e-4);
    }
    qsur_workspace_clear(&cap);
    qsur_tokens_free(&cal);
    qsur_llama_free(m);
}

static void fill(float *x, int64_t n, double s)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(s * check_gauss());
}

/* L = <C, h_1> with h_1 the residual after block 1 of a 3-block random model:
 * qsur_llama_backward_hidden(0..1) vs central differences along random
 * directions of single weights; block 2 gets no gradient. */
static double hidden_loss(const qsur_llama *m, qsur_llama_tape *t, const int *tok, const float *C)
{
    qsur_error err;
    if (qsur_llama_train_forward(m, t, tok, t->B, t->T, &err))
        return NAN;
    const float *h = t->x_in + (size_t)2 * t->N * t->dim;
    double L = 0;
    for (int64_t i = 0; i < t->N * t->dim; i++)
        L += (double)C[i] * h[i];
    return L;
}

static void test_backward_hidden(void)
{
    qsur_error err;
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 16, c.hidden_dim = 24, c.n_layers = 3, c.n_heads = 4, c.n_kv_heads = 2;
    c.vocab_size = 32, c.seq_len = 8, c.shared_classifier = 0;
    qsur_llama *m = NULL;
    CHECK_OK(qsur_llama_new(&m, &c, &err), err);
    if (!m)
        return;
    c = m->cfg;
    fill(m->tok_embeddings, (int64_t)c.vocab_size * c.dim, 1.0);
    fill(m->output.w, (int64_t)c.vocab_size * c.dim, 0.3);
    for (int i = 0; i < c.dim; i++)
        m->norm[i] = 1.0f;
    for (int l = 0; l < c.n_layers; l++) {
        for (int i = 0; i < c.dim; i++)
            m->layers[l].attention_norm[i] = m->layers[l].ffn_norm[i] = (float)(1.0 + 0.2 * check_gauss());
        for (int j = 0; j < 7; j++) {
            qsur_llama_linear *lin = qsur_llama_linear_at(m, l * 7 + j);
            fill(lin->w, lin->rows * lin->cols, 0.8 / sqrt((double)lin->cols));
        }
    }
    int tok[2 * 8];
    for (int i = 0; i < 16; i++)
        tok[i] = (i * 7 + 3) % c.vocab_size;
    qsur_llama_tape *t = NULL;
    qsur_llama_grads *g = NULL;
    CHECK_OK(qsur_llama_tape_new(&t, m, 2, 8, &err), err);
    CHECK_OK(qsur_llama_grads_new(&g, m, &err), err);
    float *C = malloc(sizeof(float) * 16 * (size_t)c.dim);
    fill(C, 16 * c.dim, 1.0);
    CHECK_OK(qsur_llama_train_forward(m, t, tok, 2, 8, &err), err);
    qsur_llama_grads_zero(g, m);
    CHECK_OK(qsur_llama_backward_hidden(m, t, 0, 1, C, NULL, g, &err), err);
    CHECK(qsur_llama_backward_hidden(m, t, 1, 3, C, NULL, g, &err) == QSUR_ERR_ARG);
    struct { qsur_llama_linear *l; float *dw; } probe[4] = {
        {&m->layers[0].wq, g->layers[0].d_wq}, {&m->layers[0].w2, g->layers[0].d_w2},
        {&m->layers[1].wv, g->layers[1].d_wv}, {&m->layers[1].w3, g->layers[1].d_w3}};
    for (int k = 0; k < 4; k++) {
        int64_t n = probe[k].l->rows * probe[k].l->cols;
        float *w = probe[k].l->w, *w0 = malloc(sizeof(float) * (size_t)n), *dir = malloc(sizeof(float) * (size_t)n);
        memcpy(w0, w, sizeof(float) * (size_t)n);
        fill(dir, n, 1.0);
        double an = 0, h = 2e-3;
        for (int64_t i = 0; i < n; i++)
            an += (double)probe[k].dw[i] * dir[i];
        for (int64_t i = 0; i < n; i++)
            w[i] = w0[i] + (float)h * dir[i];
        double P = hidden_loss(m, t, tok, C);
        for (int64_t i = 0; i < n; i++)
            w[i] = w0[i] - (float)h * dir[i];
        double Mn = hidden_loss(m, t, tok, C);
        memcpy(w, w0, sizeof(float) * (size_t)n);
        double fd = (P - Mn) / (2 * h);
        CHECK_MSG(fabs(an - fd) <= 2e-3 * fmax(fabs(fd), 1.0), "backward_hidden %s: analytic %.8g fd %.8g",
                  probe[k].l->name, an, fd);
        free(w0), free(dir);
    }
    double z = 0;
    for (int64_t i = 0; i < (int64_t)c.hidden_dim * c.dim; i++)
        z += fabs(g->layers[2].d_w1[i]);
    CHECK(z == 0);
    free(C);
    qsur_llama_grads_free(g);
    qsur_llama_tape_free(t);
    qsur_llama_free(m);
}

/* Cross-layer learning on stories260K: every window's loss at the kept D's is
 * <= its RTN loss and the first window's strictly lower; every linear gets a
 * copy; errors leave the model untouched. */
static void test_cross_stories(void)
{
    qsur_error err;
    qsur_llama *m = NULL;
    qsur_tokens cal;
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    if (m) /* float weights: the test reads and edits w */
        CHECK_OK(qsur_llama_own_all(m, &err), err);
    CHECK_OK(qsur_tokens_load(&cal, check_shared("data/stories260K.calib.u16"), 256, 512, &err), err);
    if (check_failed) {
        qsur_llama_free(m);
        return;
    }
    qsur_quant_spec q = qsur_quant_default();
    q.bits = 3, q.symmetric = 0, q.gran = QSUR_GRAN_GROUP, q.group = 32;
    qsur_cqe_cross_opts o = qsur_cqe_cross_default();
    o.layer.steps = 8;
    o.layer.lr = 1e-3;
    o.n_seqs = 2;
    o.seq_len = 64;
    int nw = qsur_cqe_cross_windows(m, o.window);
    CHECK(nw == 3); /* 5 blocks, K = 2: [0,1] [2,3] [4] */
    qsur_cqe_window_row rows[3];
    CHECK_OK(qsur_cqe_cross(m, &cal, &q, &o, rows, NULL, &err), err);
    for (int w = 0; w < nw; w++) {
        printf("cross window %d..%d: mse rtn %.6g cqe+ %.6g (best step %d)\n", rows[w].first, rows[w].last,
               rows[w].rtn_loss, rows[w].loss, rows[w].best_step);
        CHECK(rows[w].loss <= rows[w].rtn_loss);
    }
    CHECK(rows[0].first == 0 && rows[0].last == 1 && rows[2].first == 4 && rows[2].last == 4);
    CHECK_MSG(rows[0].loss < 0.99 * rows[0].rtn_loss, "window 0 did not improve: %g vs %g", rows[0].loss,
              rows[0].rtn_loss);
    int have = 0;
    for (int i = 0; i < 35; i++)
        have += qsur_llama_linear_at(m, i)->wq != NULL;
    CHECK(have == 35);
    float *before = qsur_llama_linear_at(m, 3)->wq;
    o.window = 9;
    CHECK(qsur_cqe_cross(m, &cal, &q, &o, NULL, NULL, &err) == QSUR_ERR_ARG);
    CHECK(qsur_llama_linear_at(m, 3)->wq == before);
    qsur_tokens_free(&cal);
    qsur_llama_free(m);
}

static void test_bad_args(void)
{
    qsur_error err;
    float W[4] = {1, 2, 3, NAN}, X[4] = {1, 0, 0, 1};
    qsur_wquant_layer L = {W, 2, 2, X, 2, NULL};
    qsur_quant_spec q = qsur_quant_default();
    qsur_cqe_problem *p = NULL;
    CHECK(qsur_cqe_problem_new(&p, &L, &q, 0, 1, &err) != QSUR_OK && !p);
    W[3] = 4;
    CHECK(qsur_cqe_problem_new(&p, &L, &q, -1, 1, &err) == QSUR_ERR_ARG);
    qsur_cqe_opts o = qsur_cqe_default();
    o.lr = NAN;
    float Q[4];
    CHECK(qsur_cqe(&L, &q, &o, Q, NULL, NULL, NULL, NULL, &err) == QSUR_ERR_ARG);
    CHECK(strstr(err.msg, "lr") != NULL);
}

int main(void)
{
    openblas_set_num_threads(1);
    check_seed(7);
    test_rtn_at_zero();
    test_gradient();
    test_band0_is_lsi();
    test_sample_layer();
    test_stories_w2();
    test_backward_hidden();
    test_cross_stories();
    test_bad_args();
    return check_done();
}
