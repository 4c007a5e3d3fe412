/* The session model: the one module that loads into, replaces and frees the
 * model a session works on (s->model, its online rotations s->model_rot and
 * what the session knows about it, s->mstate), and keeps the workspace's
 * copies of its weights and the captured calibration inputs consistent with
 * it. Command handlers transform the model in place or hand this module a
 * new one; they never free or swap it themselves. */
#ifndef QSUR_UI_MODEL_SESSION_H
#define QSUR_UI_MODEL_SESSION_H

#include "qsur/workspace.h"
#include "report.h"
#include "session.h"

struct qsur_llama;
struct qsur_llama_rotations;
struct model_state;

/* `model load PATH`: loads a llama2.c file or a Hugging Face directory and
 * makes it the session model (an `export` directory also brings back its
 * online rotations and quantizers, which become the session's: *from_export
 * 1); s->model_path gets the absolute path. The workspace views follow,
 * stale layer states and the old model's captures go, the old model is
 * freed. On failure the session keeps its old model. */
int model_session_load(session *s, const char *path, int *from_export, qsur_error *err);

/* Replaces the session model by a transformed one (`ostquant model`: fused
 * weights, rot its online rotations), keeping s->mstate's calibration; how
 * is recorded as the model's rotation and weight method. The workspace
 * copies and captures are refreshed; a failure there leaves the new model in
 * place and returns the error (callers report it as a warning). */
int model_session_replace(session *s, struct qsur_llama *m, struct qsur_llama_rotations *rot, const char *how,
                          qsur_error *err);

/* After the model's float weights changed in place (`rotate model`,
 * `smoothquant`): copy them to the workspace again, forget stale layer
 * states, capture the calibration inputs again and re-apply round-to-nearest
 * when the model was quantized (reported in r). */
int model_session_changed(session *s, report *r, qsur_error *err);

/* Captures the float model's linear inputs on the calibration tokens of
 * s->mstate into ws (wq copies and activation/KV quantization off for the
 * run, online rotations kept); *n_tokens gets the rows captured. The
 * forward passes run on the GPU (fp32) when the session uses one; *on_gpu
 * (may be NULL) is set then. */
int model_session_capture(session *s, qsur_workspace *ws, long long *n_tokens, int *on_gpu, qsur_error *err);

/* After a `calib` capture into the scratch workspace tmp succeeded: the
 * captures replace the old ones (all of them: a narrower capture leaves none
 * stale) and stale layer states go; tmp is emptied. */
int model_session_put_captures(session *s, qsur_workspace *tmp, qsur_error *err);

/* The capture kinds of a model layer, in qsur_llama_capture_sel.kinds bit
 * order: attention.in, attention.wo.in, feed_forward.in, feed_forward.w2.in,
 * attention.k, attention.v. */
extern const char *const model_capture_kinds[6];

/* Forgets the layer states on model tensors (their stacks hold stale copies
 * once the model's weights change). */
void model_session_drop_layers(session *s);

/* Frees the session model, its rotations and state (session_free). */
void model_session_free(session *s);

#endif
