/* What the session knows about its loaded model beyond the weights: the
 * online rotations its hooks point into, the calibration settings, and how
 * the model is quantized.
 *
 * Source of truth: the model (s->model). Its float weights are copied into
 * the workspace under Meta names at `model load` and again after every
 * command that changes them (rotate model, smoothquant), so `layers`, `use`,
 * `stats` and the layer-level commands see the current weights; layer-level
 * transforms (`rotate`/`scale` on the current layer) are explorations on
 * copies and never change the model. Layer states on model tensors are
 * dropped whenever the model's weights change (their stacks would be stale).
 * Captured calibration activations (`calib`) are the inputs of the FLOAT
 * model (fake-quantized copies and activation/KV quantization off, online
 * rotations on) and are captured again after each weight change. */
#ifndef QSUR_UI_MODEL_STATE_H
#define QSUR_UI_MODEL_STATE_H

#include "qsur/llama_rotate.h"
#include "qsur/cqe_cross.h"
#include "qsur/llama_wquant.h"
#include "session.h"

typedef struct model_state {
    qsur_llama_online_hadamard *w2_online, *qk_online; /* the hooks point here */
    char rotation[640];       /* rotations applied, "" when none */
    char smoothing[96];       /* "alpha 0.5 (20 groups)", "" when none */
    int quantized;            /* `quant` was applied to the model */
    char wmethod[96];         /* what made the wq copies: "rtn", "gptq model ...", ... */
    int has_calib;
    char calib_path[4096];    /* absolute */
    int calib_seqs, calib_seqlen;
    long long calib_max_tokens;
    unsigned long long calib_seed;
    long long calib_tokens;   /* rows captured */
    int calib_first, calib_count; /* layers captured (count 0: all) */
    unsigned calib_kinds;     /* qsur_llama_capture_sel.kinds */
    struct ostquant_record *ostq; /* the last `ostquant model|resume` (ostquant_live.h), or NULL */
} model_state;

void model_state_free(model_state *ms);

#endif
