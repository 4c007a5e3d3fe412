/* Which tensors form a layer, by their names and shapes: the TUI's layer list
 * pairs weights with the activations that feed them, and `qsur FILE` (or a
 * command on a session with one tensor) selects the obvious layer. */
#ifndef QSUR_UI_LAYER_PICK_H
#define QSUR_UI_LAYER_PICK_H

#include "qsur/workspace.h"

struct session;

/* An activation by name: X, x, X0, layer.x, *.input, *act*, *inp*, *calib*. */
int layer_is_activation_name(const char *name);
/* Whether activation x is named for weight w: W->X (one W/w that is X/x),
 * weight -> input/act/x/activation. */
int layer_names_pair(const char *w, const char *x);

/* The obvious layer of count tensors (a workspace's, or those one file
 * brought): the only tensor (as the weight, or as the activation when named
 * like one), or the only two when they are a 2-D weight and a 2-D activation
 * (by name) with the same input width. Fills w/x ("" for none) and returns 1,
 * or returns 0 when there is no such layer. */
int layer_pick_obvious(qsur_tensor *const *t, int count, char *w, char *x, size_t n);

#endif
