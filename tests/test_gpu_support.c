/* Which quantizers the GPU kernels implement (qsur_gpu_quant_supported,
 * qsur_gpu_hooks_supported): what they lack must be refused, or a GPU
 * session would silently compute other numbers than the CPU. Runs in every
 * build: the check lives outside the CUDA code. */
#include <string.h>
#include "check.h"
#include "qsur/backend.h"
#include "qsur/ostquant.h"

/* qsur_ostquant_gpu_supported: the training-time weight quantizer counts only
 * while the weights train quantized (its code form's clip norm 2 included),
 * and sov-train=code keeps a run on the CPU. */
static void ostquant_support(void)
{
    char why[200];
    qsur_error err;
    qsur_llama *m = NULL;
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    qsur_quant_spec w = qsur_quant_default(), a = qsur_quant_default(), off = qsur_quant_default();
    w.bits = 4, w.symmetric = 1, w.full = 1; /* sym-full: not on the GPU */
    a.bits = 4, a.symmetric = 0;
    off.bits = 16;
    qsur_ostquant_opts op = qsur_ostquant_default();
    struct {
        int no_wquant, wquant_code, clip_norm24, full, sov_train, want;
        const char *why;
    } cases[] = {
        {0, 0, 0, 0, 0, 1, NULL},           /* plain int4 weights, A4 */
        {0, 0, 0, 1, 0, 0, "sym-full"},     /* sym-full weights trained quantized */
        {1, 0, 0, 1, 0, 1, NULL},           /* ... not trained quantized */
        {0, 0, 1, 0, 0, 0, "norm"},         /* clip search with norm 2.4 */
        {0, 1, 1, 0, 0, 1, NULL},           /* ... the code's weight quantizer makes it norm 2 */
        {0, 0, 0, 0, 1, 0, "sov-train"},    /* the code's training-time S_ov */
    };
    for (size_t i = 0; m && i < sizeof cases / sizeof cases[0]; i++) {
        op.no_wquant = cases[i].no_wquant, op.wquant_code = cases[i].wquant_code, op.sov_train = cases[i].sov_train;
        w.full = cases[i].full;
        w.clip_search = cases[i].clip_norm24, w.clip_norm = cases[i].clip_norm24 ? 2.4 : 0;
        qsur_ostquant *o = NULL;
        CHECK_OK(qsur_ostquant_new(&o, m, &op, &w, &a, &off, &err), err);
        if (!o)
            continue;
        why[0] = 0;
        int got = qsur_ostquant_gpu_supported(o, why, sizeof why);
        CHECK_MSG(got == cases[i].want && (!cases[i].why || strstr(why, cases[i].why)),
                  "ostquant case %zu: supported %d (want %d), why \"%s\"", i, got, cases[i].want, why);
        qsur_ostquant_free(o);
    }
    qsur_llama_free(m);
}

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
    ostquant_support();
    return check_done();
}
