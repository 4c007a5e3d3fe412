/* The session model's lifecycle (see model_session.h): the only code that
 * loads into, replaces or frees s->model, s->model_rot and s->mstate, and
 * keeps the workspace copies and calibration captures consistent with them. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "layer_state.h"
#include "model_session.h"
#include "model_state.h"
#include "ostquant_live.h"
#include "qsur/backend.h"
#include "qsur/llama.h"
#include "qsur/llama_rotations.h"
#include "qsur/llama_runtime.h"
#include "qsur/safetensors.h"
#include "qsur/llama_store.h"
#include "text_state.h"

const char *const model_capture_kinds[6] = {"attention.in", "attention.wo.in", "feed_forward.in",
                                            "feed_forward.w2.in", "attention.k", "attention.v"};

void model_state_free(model_state *ms)
{
    if (!ms)
        return;
    qsur_llama_online_hadamard_free(ms->w2_online);
    qsur_llama_online_hadamard_free(ms->qk_online);
    ostquant_record_free(ms->ostq);
    free(ms);
}

/* Layer states on model tensors hold stacks of stale copies once the model's
 * weights change: forget them. */
static int is_model_layer(const session *s, const layer_state *l)
{
    (void)s;
    return !strncmp(l->w_name, "layers.", 7) || !strncmp(l->x_name, "layers.", 7) ||
           !strcmp(l->w_name, "tok_embeddings") || !strcmp(l->w_name, "output") ||
           !strcmp(l->w_name, "norm");
}

void model_session_drop_layers(session *s)
{
    session_drop_layers(s, is_model_layer);
}

static void remove_captures(session *s, int n_layers)
{
    char name[QSUR_NAME_MAX];
    for (int i = 0; i < n_layers; i++)
        for (int k = 0; k < 6; k++) {
            snprintf(name, sizeof name, "layers.%d.%s", i, model_capture_kinds[k]);
            qsur_workspace_remove(&s->ws, name);
        }
}

/* Captures the float model's linear inputs into ws: wq copies and
 * activation/KV quantization are switched off for the run, online rotations
 * stay (they are part of the float model's function). */
int model_session_capture(session *s, qsur_workspace *ws, long long *n_tokens, int *on_gpu, qsur_error *err)
{
    model_state *ms = s->mstate;
    qsur_llama *m = s->model;
    qsur_tokens t;
    int rc = text_or_tokens_calib(s, ms->calib_path, ms->calib_seqlen, ms->calib_seqs, ms->calib_seed, &t, err);
    if (rc)
        return rc;
    /* a token file: asking for more sequences than it holds is an error, not a silent "all" */
    if (!text_is_text(ms->calib_path) && ms->calib_seqs > t.n / t.seq_len) {
        rc = qsur_fail(err, QSUR_ERR_ARG, "seqs=%d: %s holds %lld sequence%s of %d tokens", ms->calib_seqs,
                       ms->calib_path, (long long)(t.n / t.seq_len), t.n / t.seq_len == 1 ? "" : "s", t.seq_len);
        qsur_tokens_free(&t);
        return rc;
    }
    qsur_llama_quant_stash stash;
    if ((rc = qsur_llama_quant_stash_take(m, &stash, err))) {
        qsur_tokens_free(&t);
        return rc;
    }
    qsur_llama_hooks saved = m->hooks;
    m->hooks.act.bits = 16;
    m->hooks.kv.bits = 16;
    int64_t got = 0;
    qsur_llama_capture_sel sel = {ms->calib_first, ms->calib_count, ms->calib_kinds};
    if (sel.count <= 0 || sel.first + sel.count > m->cfg.n_layers)
        sel = (qsur_llama_capture_sel){0, m->cfg.n_layers, (1u << 6) - 1};
    if (session_use_gpu(s) && qsur_gpu_hooks_supported(&m->hooks, NULL, 0)) {
        /* fp32 on the GPU: the CPU's values to ~1e-7 (gpu.md) */
        qsur_gpu_model *g = NULL;
        int seqlen = ms->calib_seqlen > 0 ? ms->calib_seqlen : t.seq_len;
        rc = qsur_gpu_model_new(&g, m, QSUR_GPU_F32, 8, seqlen, &s->progress, err);
        if (!rc)
            rc = qsur_gpu_capture(g, m, &t, seqlen, ms->calib_seqs, 8, (int64_t)ms->calib_max_tokens,
                                  ms->calib_seed, &sel, ws, &got, &s->progress, err);
        qsur_gpu_model_free(g);
        if (on_gpu)
            *on_gpu = 1;
    } else {
        rc = qsur_llama_capture_some(m, NULL, &t, ms->calib_seqlen, ms->calib_seqs, 8,
                                     (int64_t)ms->calib_max_tokens, ms->calib_seed, &sel, ws, &got,
                                     &s->progress, err);
    }
    m->hooks = saved;
    qsur_llama_quant_stash_put(m, &stash);
    qsur_tokens_free(&t);
    if (!rc && n_tokens)
        *n_tokens = got;
    return rc;
}

int model_session_put_captures(session *s, qsur_workspace *tmp, qsur_error *err)
{
    int rc = QSUR_OK;
    model_session_drop_layers(s);
    remove_captures(s, s->model->cfg.n_layers); /* a narrower capture leaves none stale */
    for (int i = 0; i < tmp->count && !rc; i++) {
        rc = qsur_workspace_put(&s->ws, tmp->items[i], err);
        tmp->items[i] = NULL;
    }
    tmp->count = 0;
    qsur_workspace_clear(tmp);
    return rc;
}

/* After the model's float weights changed: copy them to the workspace again,
 * forget stale layer states, capture the calibration inputs again and
 * re-apply round-to-nearest when the model was quantized. */
int model_session_changed(session *s, report *r, qsur_error *err)
{
    model_session_drop_layers(s);
    int rc = qsur_llama_view_workspace(s->model, &s->ws, NULL, err);
    if (!rc && s->mstate->has_calib)
        rc = model_session_capture(s, &s->ws, &s->mstate->calib_tokens, NULL, err);
    if (!rc && s->mstate->quantized && s->wq.bits < 16) {
        rc = session_gpu_for_weights(s) ? qsur_gpu_quantize_rtn(s->model, &s->wq, &s->progress, err)
                                : qsur_llama_quantize_rtn(s->model, &s->wq, &s->progress, err);
        snprintf(s->mstate->wmethod, sizeof s->mstate->wmethod, "rtn");
        if (!rc)
            rep_str(r, "requantized", "weights", "re-quantized with RTN (run gptq/awq/quantease model again)");
    }
    return rc;
}

/* The bookkeeping after the session model became another (see
 * model_session_replace). */
static int model_replaced(session *s, const char *how, qsur_error *err)
{
    model_state *ms = s->mstate;
    if (!s->model || !ms)
        return QSUR_OK;
    snprintf(ms->rotation, sizeof ms->rotation, "%s", how);
    ms->smoothing[0] = '\0';
    ms->quantized = qsur_llama_linear_is_quantized(&s->model->layers[0].wq);
    snprintf(ms->wmethod, sizeof ms->wmethod, "%s", how);
    model_session_drop_layers(s);
    int rc = qsur_llama_view_workspace(s->model, &s->ws, NULL, err);
    if (!rc && ms->has_calib)
        rc = model_session_capture(s, &s->ws, &ms->calib_tokens, NULL, err);
    return rc;
}


/* Makes m (with its online rotations rot, may be NULL, and state ms) the
 * session model: its weights go to the workspace, stale layer states and the
 * old model's captures go, the old model is freed. Takes ownership of m, rot
 * and ms, also on failure (then the session keeps its old model). */
static int install(session *s, qsur_llama *m, qsur_llama_rotations *rot, model_state *ms, qsur_error *err)
{
    if (s->model)
        remove_captures(s, s->model->cfg.n_layers);
    model_session_drop_layers(s);
    int rc = qsur_llama_view_workspace(m, &s->ws, NULL, err);
    if (rc) {
        qsur_llama_free(m);
        qsur_llama_rotations_free(rot);
        free(ms);
        return rc;
    }
    model_session_free(s);
    s->model_rot = rot;
    s->model = m;
    s->mstate = ms;
    return QSUR_OK;
}

/* An `export` directory: re-create its online hooks on m (*rot) and read
 * its quantizers (*rt, *wspec when *wspec_ok); *found 0 for other models. */
static int restore_export(qsur_llama *m, const char *path, qsur_llama_runtime *rt, int *found,
                          qsur_llama_rotations **rot, qsur_quant_spec *wspec, int *wspec_ok, qsur_error *err)
{
    char stp[4200];
    struct stat st;
    *found = *wspec_ok = 0;
    *rot = NULL;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode) || qsur_llama_hf_first_file(path, stp, sizeof stp) != QSUR_OK)
        return QSUR_OK;
    int rc = qsur_llama_runtime_read(stp, rt, found, err);
    if (!rc && *found)
        rc = qsur_llama_runtime_apply(rt, m, rot, err);
    qsur_safetensors *sf = NULL;
    qsur_error ig;
    if (!rc && *found && qsur_safetensors_open(&sf, stp, &ig) == QSUR_OK) {
        const char *v = qsur_safetensors_meta(sf, "qsur.wspec");
        *wspec_ok = v && qsur_quant_spec_parse(v, wspec) == 0;
        qsur_safetensors_close(sf);
    }
    return rc;
}

int model_session_load(session *s, const char *path, int *from_export, qsur_error *err)
{
    qsur_llama *m = NULL;
    model_state *ms = calloc(1, sizeof *ms);
    if (!ms)
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    int rc = qsur_llama_load(&m, path, &s->progress, err);
    if (rc) {
        free(ms);
        return rc;
    }
    qsur_llama_runtime rt;
    qsur_llama_rotations *rot = NULL;
    qsur_quant_spec wspec;
    int found = 0, wspec_ok = 0;
    if ((rc = restore_export(m, path, &rt, &found, &rot, &wspec, &wspec_ok, err))) {
        qsur_llama_free(m);
        free(ms);
        return rc;
    }
    if ((rc = install(s, m, rot, ms, err)))
        return rc;
    if (found) {
        /* an export: its hooks (already on m) and quantizers become the session's */
        s->aq = rt.act;
        s->kvq = rt.kv;
        s->aoq = rt.act_wo;
        if (wspec_ok)
            s->wq = wspec;
        snprintf(ms->rotation, sizeof ms->rotation, "from export: online w2_in %s; online qk %s",
                 rt.has_w2 ? rt.w2_desc : "none", rt.has_qk ? rt.qk_desc : "none");
    }
    char abs[PATH_MAX];
    snprintf(s->model_path, sizeof s->model_path, "%s", realpath(path, abs) ? abs : path);
    *from_export = found;
    return QSUR_OK;
}

int model_session_replace(session *s, qsur_llama *m, qsur_llama_rotations *rot, const char *how,
                          qsur_error *err)
{
    qsur_llama_free(s->model);
    qsur_llama_rotations_free(s->model_rot);
    s->model = m;
    s->model_rot = rot;
    /* the hooks of `rotate model` no longer apply: the new model uses s->model_rot */
    if (s->mstate) {
        qsur_llama_online_hadamard_free(s->mstate->w2_online);
        qsur_llama_online_hadamard_free(s->mstate->qk_online);
        s->mstate->w2_online = s->mstate->qk_online = NULL;
    }
    return model_replaced(s, how, err);
}

void model_session_free(session *s)
{
    qsur_llama_free(s->model);
    model_state_free(s->mstate); /* after the model: its hooks point into it */
    qsur_llama_rotations_free(s->model_rot);
    s->model = NULL;
    s->mstate = NULL;
    s->model_rot = NULL;
}
