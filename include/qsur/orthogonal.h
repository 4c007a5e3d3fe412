/* Seeded Haar-random orthogonal matrices.
 *
 * Q comes from the QR factorisation of an n x n matrix of i.i.d. N(0,1)
 * entries (LAPACKE dgeqrf + dorgqr). QR alone is not Haar-distributed: LAPACK's
 * Householder convention biases the signs of diag(R). Multiplying column j of Q
 * by sign(R_jj) makes the factorisation unique (R with positive diagonal) and
 * the result exactly Haar (Mezzadri, "How to generate random matrices from the
 * classical compact groups", 2007, eq. 5.1). Same seed, same matrix. */
#ifndef QSUR_ORTHOGONAL_H
#define QSUR_ORTHOGONAL_H

#include <stdint.h>
#include "qsur/error.h"

/* Q: caller-owned n*n doubles, row-major. n >= 1. Cost O(n^3). */
int qsur_random_orthogonal(int64_t n, uint64_t seed, double *Q, qsur_error *err);
/* Same matrix rounded to float. */
int qsur_random_orthogonal_f(int64_t n, uint64_t seed, float *Q, qsur_error *err);

#endif
