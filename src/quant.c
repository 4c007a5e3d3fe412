/* Placeholder until the quantizer implementation lands (branch numerics). */
#include "qsur/quant.h"

qsur_quant_spec qsur_quant_default(void)
{
    qsur_quant_spec q = {4, 1, QSUR_GRAN_ROW, 0, 1.0, 0};
    return q;
}
