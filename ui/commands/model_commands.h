/* Whole-model services of cmd_model.c that other handlers call (`quant`,
 * `gptq|quantease|awq|cqe model`, `rotate model`): the command layer's part
 * of the model; the model's lifecycle itself is model_session.h's. */
#ifndef QSUR_UI_MODEL_COMMANDS_H
#define QSUR_UI_MODEL_COMMANDS_H

#include "commands.h"
#include "model_state.h"

/* Applies s->wq / s->aq / s->kvq to the model (called by `quant`). */
int model_apply_quant(session *s, report *r, qsur_error *err);
/* `gptq model ...`, `quantease model ...`, `awq model ...`: o holds the
 * method and its options (calibration fields are filled from `calib`);
 * canon is the canonical command for the log. */
int model_wquant(session *s, qsur_llama_wquant_opts *o, const char *canon, report *r,
                 qsur_error *err);
/* `cqe model window=K ...`: CQE+ cross-layer learning (qsur/cqe_cross.h) on
 * the `calib` sequences (at most `seqs`, default 8 when calib took all). */
int model_cqe_cross(session *s, qsur_cqe_cross_opts *o, const char *canon, report *r,
                    qsur_error *err);
/* `rotate model hadamard [SEED] [steps=...]` (argv after "model"). */
int cmd_rotate_model(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err);
extern const opt_spec rotate_model_opts[], rotate_model_args[];

#endif
