/* Run-time hooks of a saved model as safetensors metadata (qsur/llama_runtime.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "qsur/llama_runtime.h"
#include "qsur/llama_rotate.h"
#include "qsur/safetensors.h"

void qsur_quant_spec_format(const qsur_quant_spec *q, char *buf, int n)
{
    static const char *const gran[] = {"tensor", "row", "group"};
    int w = snprintf(buf, (size_t)n, "bits=%d sym=%d gran=%s group=%d clip=%.17g clip_search=%d",
                     q->bits, q->symmetric, gran[q->gran >= 0 && q->gran <= 2 ? q->gran : 0], q->group,
                     q->clip, q->clip_search);
    /* the newer fields only when set, so older readers still parse the usual specs */
    if ((q->full || q->clip_norm > 0 || q->clip_grid > 0) && w > 0 && w < n)
        snprintf(buf + w, (size_t)(n - w), " full=%d clip_norm=%.17g clip_grid=%d", q->full, q->clip_norm,
                 q->clip_grid);
}

int qsur_quant_spec_parse(const char *s, qsur_quant_spec *q)
{
    char g[16];
    qsur_quant_spec r;
    memset(&r, 0, sizeof r);
    int gran;
    int used = 0;
    if (sscanf(s, "bits=%d sym=%d gran=%15s group=%d clip=%lf clip_search=%d%n", &r.bits, &r.symmetric,
               g, &r.group, &r.clip, &r.clip_search, &used) != 6)
        return -1;
    if (s[used] && (sscanf(s + used, " full=%d clip_norm=%lf clip_grid=%d", &r.full, &r.clip_norm,
                           &r.clip_grid) != 3 || (r.full != 0 && r.full != 1) ||
                    !(r.clip_norm >= 0 && r.clip_norm <= 16) || r.clip_grid < 0 || r.clip_grid > 100))
        return -1;
    if (!strcmp(g, "tensor"))
        gran = QSUR_GRAN_TENSOR;
    else if (!strcmp(g, "row"))
        gran = QSUR_GRAN_ROW;
    else if (!strcmp(g, "group"))
        gran = QSUR_GRAN_GROUP;
    else
        return -1;
    r.gran = (qsur_granularity)gran;
    if (r.bits < 2 || r.bits > 32 || (r.symmetric != 0 && r.symmetric != 1) || !(r.clip > 0 && r.clip <= 1))
        return -1;
    *q = r;
    return 0;
}

int qsur_llama_runtime_of(const qsur_llama *m, const qsur_hadamard_plan *w2,
                          const qsur_hadamard_plan *qk, qsur_llama_runtime *rt, qsur_error *err)
{
    memset(rt, 0, sizeof *rt);
    rt->act = m->hooks.act;
    rt->kv = m->hooks.kv;
    rt->act_wo = m->hooks.act_wo;
    if (m->hooks.wo_in.apply)
        return qsur_fail(err, QSUR_ERR_ARG, "the model has an online rotation before wo that cannot be recorded");
    if ((m->hooks.w2_in.apply && !w2) || (m->hooks.qk.apply && !qk))
        return qsur_fail(err, QSUR_ERR_ARG, "the model has an online rotation whose plan is unknown");
    if (m->hooks.w2_in.apply) {
        if (w2->n != m->cfg.hidden_dim)
            return qsur_fail(err, QSUR_ERR_ARG, "w2 online rotation has size %lld (expected hidden_dim %d)",
                             (long long)w2->n, m->cfg.hidden_dim);
        rt->has_w2 = 1;
        rt->w2 = (qsur_hadamard_opts){w2->randomized, w2->seed};
        snprintf(rt->w2_desc, sizeof rt->w2_desc, "%s", w2->desc);
    }
    if (m->hooks.qk.apply) {
        if (qk->n != m->cfg.head_size)
            return qsur_fail(err, QSUR_ERR_ARG, "q/k online rotation has size %lld (expected head_size %d)",
                             (long long)qk->n, m->cfg.head_size);
        rt->has_qk = 1;
        rt->qk = (qsur_hadamard_opts){qk->randomized, qk->seed};
        snprintf(rt->qk_desc, sizeof rt->qk_desc, "%s", qk->desc);
    }
    return QSUR_OK;
}

static void meta_add(qsur_llama_runtime_meta *o, const char *k, const char *v)
{
    if (o->count >= QSUR_RUNTIME_META_MAX)
        return;
    snprintf(o->key[o->count], sizeof o->key[0], "%s", k);
    snprintf(o->val[o->count], sizeof o->val[0], "%s", v);
    o->count++;
}

void qsur_llama_runtime_to_meta(const qsur_llama_runtime *rt, qsur_llama_runtime_meta *out)
{
    memset(out, 0, sizeof *out);
    char buf[256];
    meta_add(out, "qsur.runtime", "1");
    qsur_quant_spec_format(&rt->act, buf, sizeof buf);
    meta_add(out, "qsur.act", buf);
    qsur_quant_spec_format(&rt->kv, buf, sizeof buf);
    meta_add(out, "qsur.kv", buf);
    if (rt->act_wo.bits > 0) {
        qsur_quant_spec_format(&rt->act_wo, buf, sizeof buf);
        meta_add(out, "qsur.act_wo", buf);
    }
    if (rt->has_w2) {
        snprintf(buf, sizeof buf, "hadamard randomized=%d seed=%llu", rt->w2.randomized,
                 (unsigned long long)rt->w2.seed);
        meta_add(out, "qsur.online.w2_in", buf);
        meta_add(out, "qsur.online.w2_in.desc", rt->w2_desc);
    }
    if (rt->has_qk) {
        snprintf(buf, sizeof buf, "hadamard randomized=%d seed=%llu", rt->qk.randomized,
                 (unsigned long long)rt->qk.seed);
        meta_add(out, "qsur.online.qk", buf);
        meta_add(out, "qsur.online.qk.desc", rt->qk_desc);
    }
    for (int i = 0; i < out->count; i++) {
        out->kv[2 * i] = out->key[i];
        out->kv[2 * i + 1] = out->val[i];
    }
}

static int parse_online(const char *v, qsur_hadamard_opts *o)
{
    unsigned long long seed;
    int rnd;
    if (sscanf(v, "hadamard randomized=%d seed=%llu", &rnd, &seed) != 2 || (rnd != 0 && rnd != 1))
        return -1;
    o->randomized = rnd;
    o->seed = seed;
    return 0;
}

int qsur_llama_runtime_read(const char *path, qsur_llama_runtime *rt, int *found, qsur_error *err)
{
    memset(rt, 0, sizeof *rt);
    rt->act.bits = rt->kv.bits = 16;
    rt->act.clip = rt->kv.clip = 1;
    *found = 0;
    qsur_safetensors *st = NULL;
    int rc = qsur_safetensors_open(&st, path, err);
    if (rc)
        return rc;
    const char *v = qsur_safetensors_meta(st, "qsur.runtime");
    if (v) {
        *found = 1;
        const char *keys[4] = {"qsur.act", "qsur.kv", "qsur.online.w2_in", "qsur.online.qk"};
        for (int k = 0; k < 4 && !rc; k++) {
            v = qsur_safetensors_meta(st, keys[k]);
            int bad = k < 2 ? !v || qsur_quant_spec_parse(v, k ? &rt->kv : &rt->act)
                            : v && parse_online(v, k == 2 ? &rt->w2 : &rt->qk);
            if (bad)
                rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata %s is %s%s%s", path, keys[k],
                               v ? "\"" : "missing", v ? v : "", v ? "\" (malformed)" : "");
            if (k == 2)
                rt->has_w2 = v != NULL;
            if (k == 3)
                rt->has_qk = v != NULL;
        }
        if (!rc && (v = qsur_safetensors_meta(st, "qsur.act_wo")) && qsur_quant_spec_parse(v, &rt->act_wo))
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: metadata qsur.act_wo is \"%s\" (malformed)", path, v);
        if ((v = qsur_safetensors_meta(st, "qsur.online.w2_in.desc")))
            snprintf(rt->w2_desc, sizeof rt->w2_desc, "%s", v);
        if ((v = qsur_safetensors_meta(st, "qsur.online.qk.desc")))
            snprintf(rt->qk_desc, sizeof rt->qk_desc, "%s", v);
    }
    qsur_safetensors_close(st);
    return rc;
}

int qsur_llama_runtime_apply(const qsur_llama_runtime *rt, qsur_llama *m,
                             qsur_llama_rotations **rot, qsur_error *err)
{
    *rot = NULL;
    int rc;
    if (rt->act.bits < 16 && ((rc = qsur_quant_validate(&rt->act, m->cfg.dim, err)) ||
                              (rc = qsur_quant_validate(&rt->act, m->cfg.hidden_dim, err))))
        return rc;
    if (rt->kv.bits < 16 && (rc = qsur_quant_validate(&rt->kv, m->cfg.head_size, err)))
        return rc;
    if (rt->act_wo.bits > 0 && rt->act_wo.bits < 16 && (rc = qsur_quant_validate(&rt->act_wo, m->cfg.dim, err)))
        return rc;
    qsur_llama_rotations *r = NULL;
    if (rt->has_w2 || rt->has_qk) {
        if (!(r = calloc(1, sizeof *r)))
            return qsur_fail(err, QSUR_ERR_NOMEM, "online rotations: out of memory");
        rc = rt->has_w2 ? qsur_hadamard_plan_new(&r->w2, m->cfg.hidden_dim, &rt->w2, err) : QSUR_OK;
        if (!rc && rt->has_qk)
            rc = qsur_hadamard_plan_new(&r->qk, m->cfg.head_size, &rt->qk, err);
        if (rc) {
            qsur_llama_rotations_free(r);
            return rc;
        }
    }
    m->hooks = qsur_llama_hooks_none();
    m->hooks.act = rt->act;
    m->hooks.kv = rt->kv;
    m->hooks.act_wo = rt->act_wo;
    qsur_llama_rotations_attach(r, m);
    *rot = r;
    return QSUR_OK;
}
