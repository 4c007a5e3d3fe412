/* Transform stack of a layer (placeholder until the engine's stack lands). */
#include "layer_transform.h"

void layer_transform_free(layer_state *l)
{
    (void)l;
}

void layer_transform_current(layer_state *l, const float **x, const float **w)
{
    (void)l;
    (void)x;
    (void)w;
}

void layer_transform_logdet_shift(const layer_state *l, double *dx, double *dw)
{
    (void)l;
    *dx = 0;
    *dw = 0;
}

int layer_transform_depth(const layer_state *l)
{
    (void)l;
    return 0;
}
