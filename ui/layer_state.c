#include <string.h>
#include "layer_state.h"

void layer_state_free(layer_state *l)
{
    memset(l, 0, sizeof *l);
}
