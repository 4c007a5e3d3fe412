/* SmoothQuant scales folded into a Llama model (see llama_smooth.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama_smooth.h"

enum { G_ATT, G_WO, G_FFN, G_W2, G_COUNT };
static const char *const group_input[G_COUNT] = {"attention.in", "attention.wo.in",
                                                 "feed_forward.in", "feed_forward.w2.in"};

static const qsur_tensor *input_of(const qsur_workspace *cap, int layer, int g, int64_t cols,
                                   qsur_error *err)
{
    char name[QSUR_NAME_MAX];
    snprintf(name, sizeof name, "layers.%d.%s", layer, group_input[g]);
    const qsur_tensor *t = qsur_workspace_find(cap, name);
    if (!t) {
        qsur_fail(err, QSUR_ERR_ARG, "smoothquant: no captured activation %s (run `calib` first)", name);
        return NULL;
    }
    if (qsur_tensor_cols(t) != cols || qsur_tensor_rows(t) < 1) {
        qsur_fail(err, QSUR_ERR_ARG, "smoothquant: %s has %lld channels, expected %lld", name,
                  (long long)qsur_tensor_cols(t), (long long)cols);
        return NULL;
    }
    return t;
}

static void col_absmax(const float *a, int64_t rows, int64_t cols, double *mx)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double v = fabs((double)a[r * cols + c]);
            if (v > mx[c])
                mx[c] = v;
        }
}

static double smooth_scale(double xmax, double wmax, double alpha)
{
    if (!(xmax > 0) || !(wmax > 0))
        return 1.0;
    return pow(xmax, alpha) / pow(wmax, 1.0 - alpha);
}

int qsur_llama_smoothquant(qsur_llama *m, const qsur_workspace *cap, double alpha,
                           qsur_llama_smooth_result *res, qsur_error *err)
{
    if (!(alpha >= 0 && alpha <= 1))
        return qsur_fail(err, QSUR_ERR_ARG, "smoothquant: alpha must be in [0, 1], got %g", alpha);
    const qsur_llama_config *c = &m->cfg;
    const int64_t d = c->dim, hid = c->hidden_dim, hs = c->head_size, kvd = c->kv_dim;
    const int group = c->n_heads / c->n_kv_heads;
    int skip_w2 = m->hooks.w2_in.apply != NULL;
    /* Check every input before changing anything (all-or-nothing). */
    for (int i = 0; i < c->n_layers; i++)
        for (int g = 0; g < G_COUNT; g++) {
            if (g == G_W2 && skip_w2)
                continue;
            if (!input_of(cap, i, g, g == G_W2 ? hid : d, err))
                return QSUR_ERR_ARG;
        }
    double *xm = calloc((size_t)hid + d, sizeof *xm), *wm = calloc((size_t)hid + d, sizeof *wm);
    float *s = malloc(((size_t)hid + d) * sizeof *s);
    if (!xm || !wm || !s) {
        free(xm), free(wm), free(s);
        return qsur_fail(err, QSUR_ERR_NOMEM, "smoothquant: out of memory");
    }
    qsur_llama_smooth_result r = {0, skip_w2, 0, INFINITY};
    for (int i = 0; i < c->n_layers; i++) {
        qsur_llama_layer *L = &m->layers[i];
        for (int g = 0; g < G_COUNT; g++) {
            if (g == G_W2 && skip_w2)
                continue;
            int64_t n = g == G_W2 ? hid : d;
            const qsur_tensor *x = input_of(cap, i, g, n, err);
            memset(xm, 0, (size_t)n * sizeof *xm);
            memset(wm, 0, (size_t)n * sizeof *wm);
            col_absmax(x->data, qsur_tensor_rows(x), n, xm);
            qsur_llama_linear *ws[3] = {NULL, NULL, NULL};
            if (g == G_ATT)
                ws[0] = &L->wq, ws[1] = &L->wk, ws[2] = &L->wv;
            else if (g == G_WO)
                ws[0] = &L->wo;
            else if (g == G_FFN)
                ws[0] = &L->w1, ws[1] = &L->w3;
            else
                ws[0] = &L->w2;
            /* the consumers and the producer are edited in float, one group
             * at a time, and stored back in their dtype (copy-on-write) */
            qsur_llama_linear *ed[4] = {ws[0], ws[1], ws[2], NULL};
            if (g == G_WO || g == G_W2)
                ed[1] = g == G_WO ? &L->wv : &L->w3;
            int dts[4] = {0, 0, 0, 0}, rc = QSUR_OK;
            for (int k = 0; k < 4 && ed[k] && !rc; k++)
                rc = qsur_llama_linear_edit_begin(ed[k], &dts[k], err);
            if (rc) {
                free(xm), free(wm), free(s);
                return rc;
            }
            for (int k = 0; k < 3 && ws[k]; k++)
                col_absmax(ws[k]->w, ws[k]->rows, n, wm);
            if (g == G_WO) {
                /* One scale per kv channel: maxima over the query heads it feeds. */
                for (int64_t kc = 0; kc < kvd; kc++) {
                    double xmax = 0, wmax = 0;
                    int64_t kvh = kc / hs, j = kc % hs;
                    for (int q = 0; q < group; q++) {
                        int64_t col = (kvh * group + q) * hs + j;
                        xmax = fmax(xmax, xm[col]);
                        wmax = fmax(wmax, wm[col]);
                    }
                    double sv = smooth_scale(xmax, wmax, alpha);
                    for (int q = 0; q < group; q++)
                        s[(kvh * group + q) * hs + j] = (float)sv;
                }
            } else {
                for (int64_t j = 0; j < n; j++)
                    s[j] = (float)smooth_scale(xm[j], wm[j], alpha);
            }
            for (int64_t j = 0; j < n; j++) {
                r.max_scale = fmax(r.max_scale, s[j]);
                r.min_scale = fmin(r.min_scale, s[j]);
            }
            /* W -> W diag(s) for every consumer. */
            for (int k = 0; k < 3 && ws[k]; k++) {
                for (int64_t row = 0; row < ws[k]->rows; row++)
                    for (int64_t j = 0; j < n; j++)
                        ws[k]->w[row * n + j] *= s[j];
            }
            /* X -> X diag(1/s) in the producer. */
            if (g == G_ATT || g == G_FFN) {
                float *gain = g == G_ATT ? L->attention_norm : L->ffn_norm;
                for (int64_t j = 0; j < n; j++)
                    gain[j] /= s[j];
            } else if (g == G_WO) {
                for (int64_t kc = 0; kc < kvd; kc++) {
                    float sv = s[(kc / hs) * group * hs + kc % hs];
                    for (int64_t col = 0; col < d; col++)
                        L->wv.w[kc * d + col] /= sv;
                }
            } else {
                for (int64_t j = 0; j < n; j++)
                    for (int64_t col = 0; col < d; col++)
                        L->w3.w[j * d + col] /= s[j];
            }
            for (int k = 0; k < 4 && ed[k] && !rc; k++)
                rc = qsur_llama_linear_edit_end(ed[k], dts[k], err);
            if (rc) {
                free(xm), free(wm), free(s);
                return rc;
            }
            r.groups++;
        }
    }
    free(xm), free(wm), free(s);
    if (res)
        *res = r;
    return QSUR_OK;
}
