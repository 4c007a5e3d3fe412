/* The backend of a build without CUDA (-DQSUR_CUDA=OFF, or no nvcc found):
 * no GPU is ever usable and every GPU entry point says so. */
#include <stdio.h>
#include <string.h>
#include "qsur/backend.h"
#include "../llama/llama_sink.h"

static int no_cuda(qsur_error *err)
{
    return qsur_fail(err, QSUR_ERR_ARG, "gpu: this qsur was built without CUDA "
                     "(rebuild with -DQSUR_CUDA=ON where nvcc is installed); use `set device cpu`");
}

void qsur_gpu_probe(qsur_gpu_info *info)
{
    memset(info, 0, sizeof *info);
    snprintf(info->why, sizeof info->why, "built without CUDA");
}

int qsur_gpu_model_new(qsur_gpu_model **out, const qsur_llama *m, qsur_gpu_precision prec,
                       int max_batch, int max_seq, const qsur_progress *prog, qsur_error *err)
{
    (void)m, (void)prec, (void)max_batch, (void)max_seq, (void)prog;
    *out = NULL;
    return no_cuda(err);
}

int qsur_gpu_model_random(qsur_gpu_model **out, const qsur_llama_config *cfg,
                          qsur_gpu_precision prec, uint64_t seed, int max_batch, int max_seq,
                          qsur_error *err)
{
    (void)cfg, (void)prec, (void)seed, (void)max_batch, (void)max_seq;
    *out = NULL;
    return no_cuda(err);
}

void qsur_gpu_model_free(qsur_gpu_model *g)
{
    (void)g;
}

double qsur_gpu_model_bytes(const qsur_gpu_model *g)
{
    (void)g;
    return 0;
}

int qsur_gpu_model_set_att_chunk(qsur_gpu_model *g, int rows, qsur_error *err)
{
    (void)g, (void)rows;
    return no_cuda(err);
}

int qsur_gpu_perplexity(qsur_gpu_model *g, const qsur_tokens *t, int seq_len, int max_seqs,
                        int batch, const qsur_progress *prog, qsur_llama_ppl *out,
                        qsur_gpu_timing *timing, qsur_error *err)
{
    (void)g, (void)t, (void)seq_len, (void)max_seqs, (void)batch, (void)prog, (void)out, (void)timing;
    return no_cuda(err);
}

int qsur_gpu_forward_sink(qsur_gpu_model *g, const int *tokens, int B, int T, int run_layers,
                          struct qsur_llama_capture_sink *sink, qsur_error *err)
{
    (void)g, (void)tokens, (void)B, (void)T, (void)run_layers, (void)sink;
    return no_cuda(err);
}

int qsur_gpu_last_logits(qsur_gpu_model *g, const int *tokens, int T, float *logits,
                         qsur_error *err)
{
    (void)g, (void)tokens, (void)T, (void)logits;
    return no_cuda(err);
}

int qsur_gpu_forward_logits(qsur_gpu_model *g, const int *tokens, int B, int T, float *logits,
                            qsur_error *err)
{
    (void)g, (void)tokens, (void)B, (void)T, (void)logits;
    return no_cuda(err);
}

int qsur_gpu_gptq(const qsur_wquant_layer *L, const qsur_quant_spec *spec,
                  const qsur_gptq_opts *opt, float *Q, qsur_error *err)
{
    (void)L, (void)spec, (void)opt, (void)Q;
    return no_cuda(err);
}

int qsur_gpu_bf16_peak(int n, int reps, double *tflops, qsur_error *err)
{
    (void)n, (void)reps;
    *tflops = 0;
    return no_cuda(err);
}

int qsur_gpu_gptq_model(qsur_gpu_model *g, qsur_llama *m, const qsur_tokens *calib,
                        int seq_len, int max_seqs, const qsur_quant_spec *spec,
                        const qsur_gptq_opts *opt, qsur_llama_wquant_row *rows,
                        const qsur_progress *prog, qsur_error *err)
{
    (void)g, (void)m, (void)calib, (void)seq_len, (void)max_seqs, (void)spec, (void)opt, (void)rows,
        (void)prog;
    return no_cuda(err);
}

int qsur_gpu_quantize_rtn(qsur_llama *m, const qsur_quant_spec *spec, const qsur_progress *prog,
                          qsur_error *err)
{
    (void)m, (void)spec, (void)prog;
    return no_cuda(err);
}

int qsur_gpu_rotation_new(qsur_gpu_rotation **out, const qsur_hadamard_plan *R, qsur_error *err)
{
    (void)R;
    *out = NULL;
    return no_cuda(err);
}

void qsur_gpu_rotation_free(qsur_gpu_rotation *r)
{
    (void)r;
}

int qsur_gpu_rotation_rows(qsur_gpu_rotation *r, float *w, int64_t nrows, qsur_error *err)
{
    (void)r, (void)w, (void)nrows;
    return no_cuda(err);
}

int qsur_gpu_rotation_left(qsur_gpu_rotation *r, float *w, int64_t rows, int64_t cols,
                           qsur_error *err)
{
    (void)r, (void)w, (void)rows, (void)cols;
    return no_cuda(err);
}

int qsur_gpu_cayley_new(qsur_gpu_cayley **out, int64_t n, qsur_error *err)
{
    (void)n;
    *out = NULL;
    return no_cuda(err);
}

void qsur_gpu_cayley_free(qsur_gpu_cayley *g)
{
    (void)g;
}

int qsur_gpu_cayley_apply(qsur_gpu_cayley *g, double *R, const double *D, double a,
                          qsur_error *err)
{
    (void)g, (void)R, (void)D, (void)a;
    return no_cuda(err);
}

int qsur_gpu_train_new(qsur_gpu_train **out, const qsur_llama_config *cfg, int B, int T,
                       qsur_error *err)
{
    (void)cfg, (void)B, (void)T;
    *out = NULL;
    return no_cuda(err);
}

void qsur_gpu_train_free(qsur_gpu_train *t)
{
    (void)t;
}

double qsur_gpu_train_bytes(const qsur_gpu_train *t)
{
    (void)t;
    return 0;
}

int qsur_gpu_train_load(qsur_gpu_train *t, const qsur_llama *m, qsur_error *err)
{
    (void)t, (void)m;
    return no_cuda(err);
}

int qsur_gpu_train_forward(qsur_gpu_train *t, const int *tokens, float *logits, qsur_error *err)
{
    (void)t, (void)tokens, (void)logits;
    return no_cuda(err);
}

int qsur_gpu_train_backward(qsur_gpu_train *t, const float *dlogits, qsur_error *err)
{
    (void)t, (void)dlogits;
    return no_cuda(err);
}

int qsur_gpu_train_zero(qsur_gpu_train *t, qsur_error *err)
{
    (void)t;
    return no_cuda(err);
}

int qsur_gpu_train_grads(qsur_gpu_train *t, qsur_llama_grads *g, qsur_error *err)
{
    (void)t, (void)g;
    return no_cuda(err);
}

int qsur_gpu_train_random(qsur_gpu_train *t, const qsur_llama_hooks *hooks, uint64_t seed,
                          qsur_error *err)
{
    (void)t, (void)hooks, (void)seed;
    return no_cuda(err);
}

int qsur_gpu_quant_backward(const qsur_quant_spec *q, const float *x, int64_t rows, int64_t cols,
                            const float *dq, float *dx, qsur_error *err)
{
    (void)q, (void)x, (void)rows, (void)cols, (void)dq, (void)dx;
    return no_cuda(err);
}

int qsur_gpu_train_kltop(qsur_gpu_train *t, const float *zfp, int topk, double weight, double *kl,
                         qsur_error *err)
{
    (void)t, (void)zfp, (void)topk, (void)weight, (void)kl;
    return no_cuda(err);
}

int qsur_gpu_ostq_new(qsur_gpu_ostq **out, qsur_gpu_train *t, const qsur_ostquant *o,
                      const qsur_llama_hooks *hooks, const qsur_quant_spec *wspec,
                      uint64_t random_seed, qsur_error *err)
{
    (void)t, (void)o, (void)hooks, (void)wspec, (void)random_seed;
    *out = NULL;
    return no_cuda(err);
}

void qsur_gpu_ostq_free(qsur_gpu_ostq *g)
{
    (void)g;
}

double qsur_gpu_ostq_bytes(const qsur_gpu_ostq *g)
{
    (void)g;
    return 0;
}

int qsur_gpu_ostq_fuse(qsur_gpu_ostq *g, const qsur_ostquant *o, qsur_error *err)
{
    (void)g, (void)o;
    return no_cuda(err);
}

int qsur_gpu_ostq_grads(qsur_gpu_ostq *g, const qsur_ostquant *o, double *d_r_res, double *d_r_ov,
                        double *d_ls, qsur_error *err)
{
    (void)g, (void)o, (void)d_r_res, (void)d_r_ov, (void)d_ls;
    return no_cuda(err);
}
