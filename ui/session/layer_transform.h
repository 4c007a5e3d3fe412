/* The transform stack of a layer: rotations and scalings applied as
 * equivalent pairs (X' = X S^-1 R, W' = W S R), with undo/redo/reset. */
#ifndef QSUR_UI_LAYER_TRANSFORM_H
#define QSUR_UI_LAYER_TRANSFORM_H

#include "layer_state.h"
#include "qsur/transform.h"

struct session;

void layer_transform_free(layer_state *l);
/* Current transformed matrices (only when l->stack is set). */
void layer_transform_current(layer_state *l, const float **x, const float **w);
/* Change of ln det of the covariances since the original: -2 sum ln s for X,
 * +2 sum ln s for W, summed over the steps applied. */
void layer_transform_logdet_shift(const layer_state *l, double *dx, double *dw);
int layer_transform_depth(const layer_state *l);
/* Push t (ownership taken) onto the layer's stack, creating the stack from
 * the workspace tensors on first use. */
int layer_transform_push(struct session *s, layer_state *l, qsur_transform *t, qsur_error *err);
/* ||X W^T - X' W'^T|| / ||X W^T|| of the current state against the original;
 * NAN when the layer lacks X or W. */
int layer_transform_equivalence(struct session *s, layer_state *l, double *out, qsur_error *err);

#endif
