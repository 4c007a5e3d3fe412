/* Which quantizers the GPU kernels implement (qsur_gpu_quant_supported,
 * qsur_gpu_hooks_supported): what they lack must be refused, or a GPU
 * session would silently compute other numbers than the CPU. Runs in every
 * build: the check lives outside the CUDA code. */
#include <string.h>
#include "check.h"
#include "qsur/backend.h"

int main(void)
{
    char why[160];
    qsur_quant_spec q = qsur_quant_default();
    q.bits = 4, q.symmetric = 1;
    CHECK_MSG(qsur_gpu_quant_supported(&q, why, sizeof why), "plain symmetric int4");
    q.clip_search = 1;
    CHECK_MSG(qsur_gpu_quant_supported(&q, why, sizeof why), "the MSE clip search over 51 ratios");
    q.clip_norm = 2.4;
    CHECK_MSG(!qsur_gpu_quant_supported(&q, why, sizeof why) && strstr(why, "norm"), "clip norm 2.4: %s", why);
    q.clip_norm = 0, q.clip_grid = 80;
    CHECK_MSG(!qsur_gpu_quant_supported(&q, why, sizeof why) && strstr(why, "grid"), "clip grid 80: %s", why);
    q.clip_grid = 0, q.full = 1;
    CHECK_MSG(!qsur_gpu_quant_supported(&q, why, sizeof why) && strstr(why, "sym-full"), "sym-full: %s", why);
    q.bits = 16;
    CHECK_MSG(qsur_gpu_quant_supported(&q, NULL, 0), "a quantizer that is off");

    qsur_llama_hooks h = qsur_llama_hooks_none();
    CHECK_MSG(qsur_gpu_hooks_supported(&h, why, sizeof why), "no hooks");
    h.act.bits = 4;
    h.act_wo = h.act;
    h.act_wo.gran = QSUR_GRAN_GROUP, h.act_wo.group = 8;
    CHECK_MSG(!qsur_gpu_hooks_supported(&h, why, sizeof why) && strstr(why, "ao:"), "wo's own quantizer: %s", why);
    h.act_wo.bits = 0;
    h.kv.bits = 4, h.kv.symmetric = 1, h.kv.full = 1;
    CHECK_MSG(!qsur_gpu_hooks_supported(&h, why, sizeof why), "a sym-full KV quantizer");
    return check_done();
}
