/* What a saved model needs at run time besides its weights: the online
 * rotations its hooks apply (QuaRot / OSTQuant: a Hadamard before w2, one on
 * q and k) and the activation / KV-cache quantizers it was evaluated with.
 * Stored as strings in the safetensors __metadata__ of an export so that
 * loading re-creates the same hooks and the perplexity reproduces:
 *   "qsur.runtime"        "1"
 *   "qsur.act", "qsur.kv" "bits=4 sym=1 gran=row group=0 clip=1 clip_search=0"
 *                         (bits=16: off)
 *   "qsur.act_wo"         the quantizer of wo's input when it has its own
 *                         (hooks.act_wo; absent: wo's input uses qsur.act)
 *   "qsur.online.w2_in"   "hadamard n=172 randomized=0 seed=7" (absent: none)
 *   "qsur.online.qk"      "hadamard n=8 randomized=0 seed=7"
 *   "qsur.online.*.desc"  the plan's description (for people)
 * A Hadamard plan is fully determined by (n, randomized, seed): see
 * qsur/hadamard.h (signs and the random fallback block are seeded). */
#ifndef QSUR_LLAMA_RUNTIME_H
#define QSUR_LLAMA_RUNTIME_H

#include "qsur/hadamard.h"
#include "qsur/llama.h"
#include "qsur/llama_rotations.h"

typedef struct {
    qsur_quant_spec act, kv;     /* bits >= 16: off */
    qsur_quant_spec act_wo;      /* bits 0: wo's input uses act */
    int has_w2, has_qk;
    qsur_hadamard_opts w2, qk;   /* sizes: hidden_dim and head_size */
    char w2_desc[192], qk_desc[192];
} qsur_llama_runtime;

#define QSUR_RUNTIME_META_MAX 8

typedef struct {
    char key[QSUR_RUNTIME_META_MAX][32];
    char val[QSUR_RUNTIME_META_MAX][256];
    const char *kv[2 * QSUR_RUNTIME_META_MAX]; /* pairs pointing into key/val */
    int count;
} qsur_llama_runtime_meta;

/* The runtime of m: its act/kv hooks and the plans its w2_in / qk hooks use
 * (w2 / qk may be NULL when the hook is off). Fails when a hook is set but
 * its plan is not given, or when the wo_in hook is set (not describable). */
int qsur_llama_runtime_of(const qsur_llama *m, const qsur_hadamard_plan *w2,
                          const qsur_hadamard_plan *qk, qsur_llama_runtime *rt, qsur_error *err);
void qsur_llama_runtime_to_meta(const qsur_llama_runtime *rt, qsur_llama_runtime_meta *out);
/* Reads the keys above from path's __metadata__. *found = 0 (rt = all off)
 * when "qsur.runtime" is absent; malformed values are an error naming the key. */
int qsur_llama_runtime_read(const char *path, qsur_llama_runtime *rt, int *found,
                            qsur_error *err);
/* Builds the plans (*rot, owned by the caller, must outlive m's use of the
 * hooks; NULL when no online rotation) and sets m's hooks. */
int qsur_llama_runtime_apply(const qsur_llama_runtime *rt, qsur_llama *m,
                             qsur_llama_rotations **rot, qsur_error *err);
/* "bits=4 sym=1 gran=row group=0 clip=1 clip_search=0" and back. */
void qsur_quant_spec_format(const qsur_quant_spec *q, char *buf, int n);
int qsur_quant_spec_parse(const char *s, qsur_quant_spec *q);

#endif
