/* A layer the user works on: a weight W (out x in) and/or its input
 * activations X (tokens x in), with the stack of transforms applied to them. */
#ifndef QSUR_UI_LAYER_STATE_H
#define QSUR_UI_LAYER_STATE_H

#include "qsur/tensor.h"

typedef struct layer_state {
    char name[QSUR_NAME_MAX];     /* the weight's name, or the activation's for X-only layers */
    char w_name[QSUR_NAME_MAX];   /* "" when there is no weight */
    char x_name[QSUR_NAME_MAX];   /* "" when there are no activations */
} layer_state;

void layer_state_free(layer_state *l);

#endif
