/* One linear layer's weight-quantization problem, shared by GPTQ, QuantEase
 * and AWQ.
 *
 * The layer computes Y = X W^T with W (rows x cols = out x in) and calibration
 * activations X (n x cols). Methods minimise the output error
 *     ||X W^T - X Q^T||_F^2 = tr((W - Q) H (W - Q)^T),   H = X^T X  (cols x cols),
 * so they need either X or its Gram matrix H. By convention H here is the
 * plain Gram matrix X^T X (GPTQ's 2 X^T X / n is a positive multiple of it:
 * GPTQ's result does not change under H -> cH, QuantEase's objective values
 * scale by c). When both are given, H is used where the method needs H. */
#ifndef QSUR_WQUANT_H
#define QSUR_WQUANT_H

#include <stdint.h>
#include "qsur/error.h"
#include "qsur/progress.h"

typedef struct {
    const float *W;     /* rows x cols, row-major, borrowed, never modified */
    int64_t rows, cols;
    const float *X;     /* n x cols calibration activations, or NULL */
    int64_t n;
    const double *H;    /* cols x cols Gram matrix X^T X (symmetric), or NULL */
} qsur_wquant_layer;

/* Checks shapes, that X or H is present, and that W (and X) are finite. */
int qsur_wquant_check(const qsur_wquant_layer *L, const char *who, qsur_error *err);

/* H (cols x cols, full symmetric, row-major) = X^T X, accumulated in double
 * over blocks of tokens (dsyrk). */
int qsur_gram(const float *X, int64_t n, int64_t cols, double *H,
              const qsur_progress *prog, qsur_error *err);

/* X^T X accumulated as tokens pass (the whole-model methods never hold a
 * calibration set's X): rows are gathered into blocks of QSUR_GRAM_BLOCK,
 * widened to double and added with one dsyrk per full block, so feeding the
 * rows of X in any chunks gives H bit for bit equal to qsur_gram(X) (which
 * is this accumulator fed at once). Memory: H plus one block of rows. */
#define QSUR_GRAM_BLOCK 256
typedef struct {
    int64_t cols;
    int64_t n;        /* rows added so far */
    int fill;         /* rows waiting in buf */
    double *H;        /* cols x cols, borrowed: the upper triangle accumulates */
    double *buf;      /* QSUR_GRAM_BLOCK x cols, owned */
} qsur_gram_acc;
/* H (cols x cols) receives the result; nothing is read from it. */
int qsur_gram_acc_init(qsur_gram_acc *g, int64_t cols, double *H, qsur_error *err);
/* Adds n rows of cols floats (row-major). */
void qsur_gram_acc_rows(qsur_gram_acc *g, const float *X, int64_t n);
/* Adds the waiting rows and fills the lower triangle: H = X^T X of every row
 * added (zero when none). The accumulator can be freed or fed again after
 * another init. */
void qsur_gram_acc_finish(qsur_gram_acc *g);
void qsur_gram_acc_free(qsur_gram_acc *g);

/* H (cols x cols) = the layer's H when given, else X^T X (qsur_gram). */
int qsur_wquant_hessian(const qsur_wquant_layer *L, double *H, const qsur_progress *prog,
                        qsur_error *err);

/* tr((W - Q) H (W - Q)^T) in double: the squared output error on the
 * calibration set. */
int qsur_wquant_objective(const float *W, const float *Q, int64_t rows, int64_t cols,
                          const double *H, double *out, qsur_error *err);

#endif
