/* Hugging Face Llama checkpoints: config.json + model.safetensors (or shards
 * listed by model.safetensors.index.json), read into and written from the
 * engine's model.
 *
 * Names: model.embed_tokens.weight, model.layers.N.input_layernorm.weight,
 * model.layers.N.self_attn.{q,k,v,o}_proj.weight,
 * model.layers.N.post_attention_layernorm.weight,
 * model.layers.N.mlp.{gate,up,down}_proj.weight (= w1, w3, w2),
 * model.norm.weight, lm_head.weight (absent when tie_word_embeddings).
 *
 * RoPE trap: Meta's weights rotate adjacent pairs (2i, 2i+1); HF's
 * convert_llama_weights_to_hf.py permutes the rows of every q/k head,
 *     w.view(n_heads, hs/2, 2, dim).transpose(1, 2).reshape(...),
 * so that HF's rotate_half pairs (i, i + hs/2) are the same numbers. Row
 * 2i + c of a Meta head is row c*hs/2 + i of the HF head; loading undoes it,
 * saving applies it, and the model never sees the HF layout. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "qsur/gptq_pack.h"
#include "qsur/atomic_file.h"
#include "qsur/json.h"
#include "qsur/llama.h"
#include "qsur/llama_wquant.h"
#include "qsur/qweight.h"
#include "qsur/safetensors.h"

/* One tensor of the HF checkpoint and where it lives in the model. */
typedef struct {
    char name[QSUR_NAME_MAX];
    float *data;
    int64_t rows, cols;  /* rows == 0: 1-D of cols */
    int rope_heads;      /* > 0: q/k weight with this many heads to (un)permute */
    qsur_llama_linear *lin; /* the per-layer linear this slot holds, else NULL */
} hf_slot;

static int hf_slots(qsur_llama *m, hf_slot *s)
{
    int n = 0;
    const qsur_llama_config *c = &m->cfg;
#define SLOT(ptr, r, cc, heads, ...) \
    do { snprintf(s[n].name, sizeof s[n].name, __VA_ARGS__); s[n].data = ptr; \
         s[n].rows = r; s[n].cols = cc; s[n].rope_heads = heads; s[n].lin = NULL; n++; } while (0)
#define LSLOT(l, r, cc, heads, ...) \
    do { SLOT((l)->w, r, cc, heads, __VA_ARGS__); s[n - 1].lin = (l); } while (0)
    SLOT(m->tok_embeddings, c->vocab_size, c->dim, 0, "model.embed_tokens.weight");
    for (int i = 0; i < c->n_layers; i++) {
        qsur_llama_layer *L = &m->layers[i];
        SLOT(L->attention_norm, 0, c->dim, 0, "model.layers.%d.input_layernorm.weight", i);
        LSLOT(&L->wq, c->dim, c->dim, c->n_heads, "model.layers.%d.self_attn.q_proj.weight", i);
        LSLOT(&L->wk, c->kv_dim, c->dim, c->n_kv_heads, "model.layers.%d.self_attn.k_proj.weight", i);
        LSLOT(&L->wv, c->kv_dim, c->dim, 0, "model.layers.%d.self_attn.v_proj.weight", i);
        LSLOT(&L->wo, c->dim, c->dim, 0, "model.layers.%d.self_attn.o_proj.weight", i);
        SLOT(L->ffn_norm, 0, c->dim, 0, "model.layers.%d.post_attention_layernorm.weight", i);
        LSLOT(&L->w1, c->hidden_dim, c->dim, 0, "model.layers.%d.mlp.gate_proj.weight", i);
        LSLOT(&L->w2, c->dim, c->hidden_dim, 0, "model.layers.%d.mlp.down_proj.weight", i);
        LSLOT(&L->w3, c->hidden_dim, c->dim, 0, "model.layers.%d.mlp.up_proj.weight", i);
    }
    SLOT(m->norm, 0, c->dim, 0, "model.norm.weight");
    if (!c->shared_classifier)
        SLOT(m->output.w, c->vocab_size, c->dim, 0, "lm_head.weight");
#undef SLOT
#undef LSLOT
    return n;
}

/* dst = src with rows moved between layouts; to_hf = 1: Meta -> HF. */
static void permute_rows(float *dst, const float *src, int heads, int64_t rows, int64_t cols,
                         int to_hf)
{
    int64_t hs = rows / heads, half = hs / 2;
    for (int h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int c = 0; c < 2; c++) {
                int64_t meta = h * hs + 2 * i + c, hf = h * hs + c * half + i;
                int64_t d = to_hf ? hf : meta, s = to_hf ? meta : hf;
                memcpy(dst + d * cols, src + s * cols, (size_t)cols * sizeof(float));
            }
}

/* ---- config.json ---------------------------------------------------------- */

static int cfg_int(const qsur_json *j, const char *path, const char *key, int required,
                   int def, int *out, qsur_error *err)
{
    const qsur_json *v = qsur_json_get(j, key);
    if (!v || v->type == QSUR_JSON_NULL) {
        if (required)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: missing key \"%s\"", path, key);
        *out = def;
        return QSUR_OK;
    }
    if (v->type != QSUR_JSON_NUMBER || !v->is_int)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: \"%s\" must be an integer (got %s)", path,
                         key, v->type == QSUR_JSON_NUMBER ? "a fraction" : qsur_json_type_name(v->type));
    if (v->integer <= 0 || v->integer > (1 << 24))
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: \"%s\" = %lld out of range 1..%d", path, key,
                         (long long)v->integer, 1 << 24);
    *out = (int)v->integer;
    return QSUR_OK;
}

static int cfg_number(const qsur_json *j, const char *path, const char *key, double def,
                      double *out, qsur_error *err)
{
    const qsur_json *v = qsur_json_get(j, key);
    if (!v || v->type == QSUR_JSON_NULL) {
        *out = def;
        return QSUR_OK;
    }
    if (v->type != QSUR_JSON_NUMBER || !(v->number > 0))
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: \"%s\" must be a positive number", path, key);
    *out = v->number;
    return QSUR_OK;
}

static int read_config(const char *path, qsur_llama_config *c, qsur_error *err)
{
    qsur_json *j = NULL;
    int rc = qsur_json_parse_file(path, &j, err);
    if (rc)
        return rc;
    *c = qsur_llama_config_default();
    if (j->type != QSUR_JSON_OBJECT) {
        qsur_json_free(j);
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: expected a JSON object", path);
    }
    const char *type = qsur_json_get_string(j, "model_type");
    const qsur_json *scaling = qsur_json_get(j, "rope_scaling");
    const qsur_json *tie = qsur_json_get(j, "tie_word_embeddings");
    const char *act = qsur_json_get_string(j, "hidden_act");
    int head_dim = 0;
    if (qsur_json_get(j, "model_type") && (!type || strcmp(type, "llama") != 0))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: model_type %s%s%s is not supported (expected "
                       "\"llama\")", path, type ? "\"" : "", type ? type : "(not a string)",
                       type ? "\"" : "");
    else if (scaling && scaling->type != QSUR_JSON_NULL)
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: rope_scaling is not supported (expected null)",
                       path);
    else if (qsur_json_get(j, "hidden_act") && (!act || strcmp(act, "silu") != 0))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: hidden_act must be \"silu\"", path);
    else if (tie && tie->type != QSUR_JSON_BOOL)
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: \"tie_word_embeddings\" must be true or false "
                       "(got %s)", path, qsur_json_type_name(tie->type));
    if (!rc) rc = cfg_int(j, path, "hidden_size", 1, 0, &c->dim, err);
    if (!rc) rc = cfg_int(j, path, "intermediate_size", 1, 0, &c->hidden_dim, err);
    if (!rc) rc = cfg_int(j, path, "num_hidden_layers", 1, 0, &c->n_layers, err);
    if (!rc) rc = cfg_int(j, path, "num_attention_heads", 1, 0, &c->n_heads, err);
    if (!rc) rc = cfg_int(j, path, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads, err);
    if (!rc) rc = cfg_int(j, path, "vocab_size", 1, 0, &c->vocab_size, err);
    if (!rc) rc = cfg_int(j, path, "max_position_embeddings", 0, 2048, &c->seq_len, err);
    if (!rc) rc = cfg_int(j, path, "head_dim", 0, 0, &head_dim, err);
    /* HF's LlamaConfig defaults: rope_theta 10000, rms_norm_eps 1e-6, untied */
    if (!rc) rc = cfg_number(j, path, "rope_theta", 10000.0, &c->rope_theta, err);
    if (!rc) rc = cfg_number(j, path, "rms_norm_eps", 1e-6, &c->norm_eps, err);
    c->shared_classifier = tie ? tie->boolean : 0;
    qsur_json_free(j);
    if (rc)
        return rc;
    if (c->dim % c->n_heads)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: num_attention_heads = %d does not divide "
                         "hidden_size = %d", path, c->n_heads, c->dim);
    if (c->n_heads % c->n_kv_heads)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: num_key_value_heads = %d does not divide "
                         "num_attention_heads = %d", path, c->n_kv_heads, c->n_heads);
    if (head_dim && head_dim != c->dim / c->n_heads)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: head_dim = %d differs from hidden_size / "
                         "num_attention_heads = %d (not supported)", path, head_dim,
                         c->dim / c->n_heads);
    return qsur_llama_config_check(c, path, err);
}

/* ---- loading ---------------------------------------------------------------- */

/* The shards of a checkpoint: one file, or the files of an index. */
typedef struct {
    qsur_json *index;            /* parsed index or NULL */
    const qsur_json *weight_map; /* object: tensor name -> shard file */
    char **files;                /* distinct shard file names */
    qsur_safetensors **open;     /* parallel to files */
    int count;
} hf_shards;

static void shards_close(hf_shards *sh)
{
    for (int i = 0; i < sh->count; i++) {
        free(sh->files[i]);
        qsur_safetensors_close(sh->open[i]);
    }
    free(sh->files);
    free(sh->open);
    qsur_json_free(sh->index);
    memset(sh, 0, sizeof *sh);
}

static int shards_add(hf_shards *sh, const char *dir, const char *file, const char *what,
                      qsur_error *err)
{
    for (int i = 0; i < sh->count; i++)
        if (strcmp(sh->files[i], file) == 0)
            return QSUR_OK;
    if (!*file || strchr(file, '/') || strcmp(file, "..") == 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: shard name \"%s\" must be a plain file name",
                         what, file);
    char **files = realloc(sh->files, (size_t)(sh->count + 1) * sizeof *files);
    if (files)
        sh->files = files;
    qsur_safetensors **open = realloc(sh->open, (size_t)(sh->count + 1) * sizeof *open);
    if (open)
        sh->open = open;
    if (!files || !open || !(sh->files[sh->count] = strdup(file)))
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", what);
    sh->open[sh->count] = NULL;
    sh->count++;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    qsur_error inner;
    if (qsur_safetensors_open(&sh->open[sh->count - 1], path, &inner))
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: shard %s: %s", what, file, inner.msg);
    return QSUR_OK;
}

static int shards_open(hf_shards *sh, const char *dir, char *what, size_t what_n,
                       qsur_error *err)
{
    memset(sh, 0, sizeof *sh);
    struct stat st;
    snprintf(what, what_n, "%s/model.safetensors.index.json", dir);
    if (stat(what, &st) != 0) {
        snprintf(what, what_n, "%s/model.safetensors", dir);
        if (stat(what, &st) != 0)
            return qsur_fail(err, QSUR_ERR_IO, "%s: neither model.safetensors nor "
                             "model.safetensors.index.json exists", dir);
        return shards_add(sh, dir, "model.safetensors", what, err);
    }
    int rc = qsur_json_parse_file(what, &sh->index, err);
    if (rc)
        return rc;
    sh->weight_map = qsur_json_get(sh->index, "weight_map");
    if (!sh->weight_map || sh->weight_map->type != QSUR_JSON_OBJECT)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: missing object \"weight_map\"", what);
    for (int i = 0; i < sh->weight_map->count && !rc; i++) {
        const qsur_json *f = sh->weight_map->items[i];
        if (f->type != QSUR_JSON_STRING)
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: weight_map[\"%s\"] must be a file name "
                           "string", what, sh->weight_map->keys[i]);
        else
            rc = shards_add(sh, dir, f->string, what, err);
    }
    return rc;
}

/* Finds tensor `name` in the shards; sets *file and *entry. */
static int shards_find(const hf_shards *sh, const char *name, const char *what,
                       qsur_safetensors **file, int *entry, qsur_error *err)
{
    const char *fname = "model.safetensors";
    if (sh->weight_map) {
        fname = qsur_json_get_string(sh->weight_map, name);
        if (!fname)
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: weight_map has no tensor %s", what, name);
    }
    for (int i = 0; i < sh->count; i++)
        if (strcmp(sh->files[i], fname) == 0) {
            *file = sh->open[i];
            *entry = qsur_safetensors_find(sh->open[i], name);
            if (*entry < 0)
                return qsur_fail(err, QSUR_ERR_FORMAT, "%s: tensor %s missing", sh->open[i]->path,
                                 name);
            return QSUR_OK;
        }
    return qsur_fail(err, QSUR_ERR_FORMAT, "%s: shard %s not opened", what, fname);
}

/* Whether tensor `name` exists in the shards (no error). */
static int shards_has(const hf_shards *sh, const char *name)
{
    const char *fname = "model.safetensors";
    if (sh->weight_map && !(fname = qsur_json_get_string(sh->weight_map, name)))
        return 0;
    for (int i = 0; i < sh->count; i++)
        if (strcmp(sh->files[i], fname) == 0)
            return qsur_safetensors_find(sh->open[i], name) >= 0;
    return 0;
}

static void slot_base(const hf_slot *sl, char *buf, size_t n);

/* Reads BASE.qweight (I8/U8 or any integer-valued dtype, rows x cols),
 * BASE.scales (rows x groups, or 1 x 1 per tensor) and BASE.zeros (same
 * shape; absent = 0) and writes w = (code - zero) * scale into the slot,
 * undoing the q/k row permutation. The same float expression as
 * qsur_qparams_value, so the weights are bit-identical to the fake-quantized
 * ones that were exported. */
static int load_int_slot(const hf_shards *sh, const hf_slot *sl, const char *base,
                         const char *what, qsur_error *err)
{
    char name[QSUR_NAME_MAX + 16];
    qsur_tensor *t[3] = {NULL, NULL, NULL};
    static const char *const sfx[3] = {"qweight", "scales", "zeros"};
    int rc = QSUR_OK;
    for (int k = 0; k < 3 && !rc; k++) {
        snprintf(name, sizeof name, "%s.%s", base, sfx[k]);
        if (k == 2 && !shards_has(sh, name))
            break;
        qsur_safetensors *f = NULL;
        int e = -1;
        if (!(rc = shards_find(sh, name, what, &f, &e, err)))
            rc = qsur_safetensors_read_tensor(f, e, NULL, &t[k], NULL, err);
    }
    int64_t rows = sl->rows, cols = sl->cols, pr = 0, pc = 0;
    if (!rc && (t[0]->ndim != 2 || t[0]->shape[0] != rows || t[0]->shape[1] != cols))
        rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: %s.qweight must be %lldx%lld", what, base,
                       (long long)rows, (long long)cols);
    if (!rc) {
        pr = t[1]->ndim == 2 ? t[1]->shape[0] : 0;
        pc = t[1]->ndim == 2 ? t[1]->shape[1] : 0;
        int ok = (pr == 1 && pc == 1) || (pr == rows && pc >= 1 && cols % pc == 0);
        if (t[2])
            ok &= t[2]->ndim == 2 && t[2]->shape[0] == pr && t[2]->shape[1] == pc;
        if (!ok)
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: %s.scales/.zeros must be %lldxG with G "
                           "dividing %lld (or 1x1)", what, base, (long long)rows, (long long)cols);
    }
    float *tmp = rc ? NULL : malloc((size_t)(rows * cols) * sizeof(float));
    if (!rc && !tmp)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", base);
    if (!rc) {
        int64_t G = cols / pc;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                int64_t p = pr == 1 ? 0 : r * pc + c / G;
                float zero = t[2] ? t[2]->data[p] : 0.0f;
                tmp[r * cols + c] = (t[0]->data[r * cols + c] - zero) * t[1]->data[p];
            }
        if (sl->rope_heads)
            permute_rows(sl->data, tmp, sl->rope_heads, rows, cols, 0);
        else
            memcpy(sl->data, tmp, (size_t)(rows * cols) * sizeof(float));
    }
    free(tmp);
    for (int k = 0; k < 3; k++)
        qsur_tensor_free(t[k]);
    return rc;
}

/* Reads the GPTQ tensors of slot sl into its float weights (dequantized the
 * way GPTQ loaders do), undoing the q/k row permutation. */
static int load_gptq_slot(const hf_shards *sh, const hf_slot *sl, const char *base,
                          const char *what, qsur_error *err)
{
    static const char *const sfx[4] = {"qweight", "qzeros", "scales", "g_idx"};
    int32_t *iv[4] = {NULL, NULL, NULL, NULL};
    int64_t shape[4][2] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}}, nv = 0;
    qsur_tensor *scales = NULL;
    int rc = QSUR_OK;
    for (int k = 0; k < 4 && !rc; k++) {
        char name[QSUR_NAME_MAX + 16];
        snprintf(name, sizeof name, "%s.%s", base, sfx[k]);
        qsur_safetensors *f = NULL;
        int e = -1;
        if ((rc = shards_find(sh, name, what, &f, &e, err)))
            break;
        const qsur_st_entry *en = &f->entries[e];
        shape[k][0] = en->ndim >= 1 ? en->shape[0] : 0;
        shape[k][1] = en->ndim == 2 ? en->shape[1] : en->ndim == 1 ? 1 : 0;
        rc = k == 2 ? qsur_safetensors_read_tensor(f, e, NULL, &scales, NULL, err)
                    : qsur_safetensors_read_i32(f, e, &iv[k], &nv, err);
    }
    qsur_gptq_packed pk;
    memset(&pk, 0, sizeof pk);
    if (!rc) /* the parts belong to pk from here on */
        rc = qsur_gptq_from_parts(iv[0], shape[0], iv[1], shape[1], scales, iv[3],
                                  shape[3][0] * shape[3][1], sl->rows, sl->cols, base, &pk, err);
    else
        for (int k = 0; k < 4; k++)
            free(iv[k]);
    float *tmp = rc ? NULL : malloc((size_t)(sl->rows * sl->cols) * sizeof(float));
    if (!rc && !tmp)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", base);
    if (!rc) {
        qsur_gptq_dequant(&pk, tmp);
        if (sl->rope_heads)
            permute_rows(sl->data, tmp, sl->rope_heads, sl->rows, sl->cols, 0);
        else
            memcpy(sl->data, tmp, (size_t)(sl->rows * sl->cols) * sizeof(float));
    }
    free(tmp);
    qsur_gptq_packed_free(&pk);
    qsur_tensor_free(scales);
    return rc;
}

int qsur_llama_load_hf(qsur_llama **out, const char *dir, const qsur_progress *prog,
                       qsur_error *err)
{
    *out = NULL;
    char cfg_path[4096], what[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    qsur_llama_config cfg;
    int rc = read_config(cfg_path, &cfg, err);
    if (rc)
        return rc;
    hf_shards sh;
    if ((rc = shards_open(&sh, dir, what, sizeof what, err))) {
        shards_close(&sh);
        return rc;
    }
    qsur_llama *m = NULL;
    hf_slot *slots = NULL;
    if ((rc = qsur_llama_new(&m, &cfg, err)))
        goto done;
    slots = calloc((size_t)cfg.n_layers * 9 + 3, sizeof *slots);
    if (!slots) {
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    int n = hf_slots(m, slots);
    for (int i = 0; i < n && !rc; i++) {
        qsur_safetensors *f = NULL;
        int e = -1;
        if (slots[i].lin && !shards_has(&sh, slots[i].name)) {
            char base[QSUR_NAME_MAX], qn[QSUR_NAME_MAX + 16];
            slot_base(&slots[i], base, sizeof base);
            snprintf(qn, sizeof qn, "%s.qweight", base);
            if (shards_has(&sh, qn)) {
                snprintf(qn, sizeof qn, "%s.g_idx", base);
                if ((rc = shards_has(&sh, qn) ? load_gptq_slot(&sh, &slots[i], base, what, err)
                                              : load_int_slot(&sh, &slots[i], base, what, err)))
                    break;
                rc = qsur_progress_tick(prog, (double)(i + 1) / n, "load", NAN, err);
                continue;
            }
        }
        if ((rc = shards_find(&sh, slots[i].name, what, &f, &e, err)))
            break;
        const qsur_st_entry *en = &f->entries[e];
        int ok = slots[i].rows ? en->ndim == 2 && en->shape[0] == slots[i].rows &&
                                 en->shape[1] == slots[i].cols
                               : en->ndim == 1 && en->shape[0] == slots[i].cols;
        if (!ok) {
            char got[128] = "", want[64];
            size_t used = 0;
            for (int d = 0; d < en->ndim && used < sizeof got; d++)
                used += (size_t)snprintf(got + used, sizeof got - used, d ? "x%lld" : "%lld",
                                         (long long)en->shape[d]);
            if (slots[i].rows)
                snprintf(want, sizeof want, "%lldx%lld", (long long)slots[i].rows,
                         (long long)slots[i].cols);
            else
                snprintf(want, sizeof want, "%lld", (long long)slots[i].cols);
            rc = qsur_fail(err, QSUR_ERR_FORMAT, "%s: %s has shape %s (expected %s)", f->path,
                           slots[i].name, en->ndim ? got : "scalar", want);
            break;
        }
        qsur_tensor *t = NULL;
        if ((rc = qsur_safetensors_read_tensor(f, e, NULL, &t, NULL, err)))
            break;
        if (slots[i].rope_heads)
            permute_rows(slots[i].data, t->data, slots[i].rope_heads, slots[i].rows,
                         slots[i].cols, 0);
        else
            memcpy(slots[i].data, t->data, (size_t)qsur_tensor_numel(t) * sizeof(float));
        qsur_tensor_free(t);
        rc = qsur_progress_tick(prog, (double)(i + 1) / n, "load", NAN, err);
    }
done:
    free(slots);
    shards_close(&sh);
    if (rc) {
        qsur_llama_free(m);
        return rc;
    }
    *out = m;
    return QSUR_OK;
}

/* ---- saving ----------------------------------------------------------------- */

static int write_text_file(const char *path, const char *text, qsur_error *err)
{
    qsur_atomic_file f;
    int rc = qsur_atomic_open(&f, path, err);
    if (rc)
        return rc;
    if ((rc = qsur_atomic_write(&f, text, strlen(text), err))) {
        qsur_atomic_abort(&f);
        return rc;
    }
    return qsur_atomic_commit(&f, err);
}

static int write_config(const qsur_llama_config *c, const char *path, const char *dtype,
                        const char *quant_cfg, qsur_error *err)
{
    char text[2048];
    const char *torch = strcmp(dtype, "F16") == 0 ? "float16"
                      : strcmp(dtype, "BF16") == 0 ? "bfloat16" : "float32";
    int n = snprintf(text, sizeof text,
        "{\n"
        "  \"architectures\": [\"LlamaForCausalLM\"],\n"
        "  \"model_type\": \"llama\",\n"
        "  \"hidden_act\": \"silu\",\n"
        "  \"hidden_size\": %d,\n"
        "  \"intermediate_size\": %d,\n"
        "  \"num_hidden_layers\": %d,\n"
        "  \"num_attention_heads\": %d,\n"
        "  \"num_key_value_heads\": %d,\n"
        "  \"vocab_size\": %d,\n"
        "  \"max_position_embeddings\": %d,\n"
        "  \"rope_theta\": %.17g,\n"
        "  \"rms_norm_eps\": %.17g,\n"
        "  \"rope_scaling\": null,\n"
        "  \"tie_word_embeddings\": %s,\n"
        "%s%s%s"
        "  \"torch_dtype\": \"%s\"\n"
        "}\n",
        c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
        c->seq_len, c->rope_theta, c->norm_eps, c->shared_classifier ? "true" : "false",
        quant_cfg ? "  \"quantization_config\": " : "", quant_cfg ? quant_cfg : "",
        quant_cfg ? ",\n" : "", torch);
    if (n < 0 || (size_t)n >= sizeof text)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: config text too long", path);
    return write_text_file(path, text, err);
}

/* Base name of a ".weight" slot: "model.layers.0.mlp.down_proj". */
static void slot_base(const hf_slot *sl, char *buf, size_t n)
{
    snprintf(buf, n, "%s", sl->name);
    size_t len = strlen(buf);
    if (len > 7 && strcmp(buf + len - 7, ".weight") == 0)
        buf[len - 7] = '\0';
}

/* Integer codes + scales (+ zeros) of one linear whose forward weights are
 * `fw` (its wq copy, or w): maps fitted by RTN on w (the way `quant` made wq),
 * or on fw itself (a grid from another method), whichever decodes to fw bit
 * for bit; else an error, since writing integers would change the model. */
static int int_weights(const hf_slot *sl, const qsur_quant_spec *spec, qsur_qweight **out,
                       qsur_error *err)
{
    *out = NULL;
    const qsur_llama_linear *l = sl->lin;
    const float *fw = l->wq ? l->wq : l->w;
    qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
    float *dec = malloc((size_t)(l->rows * l->cols) * sizeof(float));
    if (!dec)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", l->name);
    qsur_qweight *qw = NULL;
    int rc = QSUR_OK, ok = 0;
    for (int attempt = 0; attempt < 2 && !rc && !ok; attempt++) {
        qsur_qweight_free(qw);
        qw = NULL;
        if ((rc = qsur_qweight_new(&qw, &q, l->rows, l->cols, err)) ||
            (rc = qsur_qweight_fit_rtn(qw, attempt == 0 ? l->w : fw, err)))
            break;
        qsur_qweight_encode(qw, fw);
        qsur_qweight_decode(qw, dec);
        ok = memcmp(dec, fw, (size_t)(l->rows * l->cols) * sizeof(float)) == 0;
    }
    free(dec);
    if (!rc && !ok)
        rc = qsur_fail(err, QSUR_ERR_ARG, "%s: the quantized weights are not on a %d-bit grid of the "
                       "weight quantizer (export them with weights=fake)", l->name, q.bits);
    if (rc) {
        qsur_qweight_free(qw);
        return rc;
    }
    *out = qw;
    return QSUR_OK;
}

/* Appends NAME.qweight / .scales / .zeros of slot sl to ts/dts at *n. */
static int add_int_tensors(const hf_slot *sl, const qsur_qweight *qw, qsur_tensor **ts,
                           qsur_dtype *dts, int *n, qsur_error *err)
{
    char base[QSUR_NAME_MAX], name[QSUR_NAME_MAX + 16];
    slot_base(sl, base, sizeof base);
    int64_t rows = qw->rows, cols = qw->cols;
    int64_t prow = qw->spec.gran == QSUR_GRAN_TENSOR ? 1 : rows, pcol = qw->spec.gran == QSUR_GRAN_TENSOR ? 1 : qw->groups;
    int rope = sl->rope_heads && prow == rows;
    qsur_tensor *c = NULL, *sc = NULL, *z = NULL;
    snprintf(name, sizeof name, "%s.qweight", base);
    int rc = qsur_tensor_new2(&c, name, rows, cols, err);
    snprintf(name, sizeof name, "%s.scales", base);
    if (!rc)
        rc = qsur_tensor_new2(&sc, name, prow, pcol, err);
    snprintf(name, sizeof name, "%s.zeros", base);
    if (!rc && !qw->spec.symmetric)
        rc = qsur_tensor_new2(&z, name, prow, pcol, err);
    float *tmp = malloc((size_t)(rows * cols) * sizeof(float));
    if (!rc && !tmp)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", base);
    if (rc) {
        qsur_tensor_free(c);
        qsur_tensor_free(sc);
        qsur_tensor_free(z);
        free(tmp);
        return rc;
    }
    for (int64_t i = 0; i < rows * cols; i++)
        tmp[i] = (float)qw->codes[i];
    if (sl->rope_heads)
        permute_rows(c->data, tmp, sl->rope_heads, rows, cols, 1);
    else
        memcpy(c->data, tmp, (size_t)(rows * cols) * sizeof(float));
    for (int pass = 0; pass < 2; pass++) {
        qsur_tensor *t = pass ? z : sc;
        if (!t)
            continue;
        for (int64_t i = 0; i < prow * pcol; i++)
            tmp[i] = pass ? qw->params[i].zero : qw->params[i].scale;
        if (rope)
            permute_rows(t->data, tmp, sl->rope_heads, prow, pcol, 1);
        else
            memcpy(t->data, tmp, (size_t)(prow * pcol) * sizeof(float));
    }
    free(tmp);
    ts[*n] = c;
    dts[(*n)++] = qw->spec.symmetric ? QSUR_DTYPE_I8 : QSUR_DTYPE_U8;
    ts[*n] = sc;
    dts[(*n)++] = QSUR_DTYPE_F32;
    if (z) {
        ts[*n] = z;
        dts[(*n)++] = QSUR_DTYPE_F32;
    }
    return QSUR_OK;
}

/* Appends the GPTQ-packed BASE.qweight/.qzeros/.scales/.g_idx of slot sl
 * (qsur/gptq_pack.h); q/k rows (codes and their maps) go to the HF layout
 * first, like float weights. GPTQ has one group size: a linear whose width
 * forces another (stories260K's w2: 172 = 4 x 43 for 32) is refused. */
static int add_gptq_tensors(const hf_slot *sl, qsur_qweight *qw, const qsur_quant_spec *spec,
                            qsur_tensor **ts, qsur_dtype *dts, int *n, qsur_error *err)
{
    char base[QSUR_NAME_MAX];
    slot_base(sl, base, sizeof base);
    if (spec->gran == QSUR_GRAN_GROUP && qw->spec.group != spec->group)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: %lld input columns need groups of %d, but a GPTQ "
                         "checkpoint has one group_size (%d); use weights=int", base,
                         (long long)qw->cols, qw->spec.group, spec->group);
    if (sl->rope_heads) {
        int64_t rows = qw->rows, cols = qw->cols, pn = qw->nparams / rows;
        int16_t *c = malloc((size_t)(rows * cols) * sizeof *c);
        qsur_qparams *p = malloc((size_t)qw->nparams * sizeof *p);
        if (!c || !p) {
            free(c);
            free(p);
            return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", base);
        }
        memcpy(c, qw->codes, (size_t)(rows * cols) * sizeof *c);
        memcpy(p, qw->params, (size_t)qw->nparams * sizeof *p);
        int64_t hs = rows / sl->rope_heads, half = hs / 2;
        for (int64_t h = 0; h < sl->rope_heads; h++)
            for (int64_t i = 0; i < half; i++)
                for (int k = 0; k < 2; k++) {
                    int64_t meta = h * hs + 2 * i + k, hf = h * hs + k * half + i;
                    memcpy(qw->codes + hf * cols, c + meta * cols, (size_t)cols * sizeof *c);
                    if (pn >= 1 && qw->nparams == rows * pn)
                        memcpy(qw->params + hf * pn, p + meta * pn, (size_t)pn * sizeof *p);
                }
        free(c);
        free(p);
    }
    qsur_gptq_packed pk;
    int rc = qsur_gptq_pack(qw, base, &pk, err);
    if (!rc)
        rc = qsur_gptq_to_tensors(&pk, base, ts + *n, dts + *n, err);
    qsur_gptq_packed_free(&pk);
    if (!rc)
        *n += 4;
    return rc;
}

int qsur_llama_save_hf(const qsur_llama *m, const char *dir, const char *dtype,
                       qsur_error *err)
{
    qsur_llama_hf_save_opts o = {dtype, 0, NULL, NULL, 0, 0};
    return qsur_llama_save_hf_ex(m, dir, &o, err);
}

int qsur_llama_save_hf_ex(const qsur_llama *m_in, const char *dir,
                          const qsur_llama_hf_save_opts *opts, qsur_error *err)
{
    const char *dtype = opts->dtype;
    qsur_dtype dt;
    if (!dtype || strcmp(dtype, "F32") == 0)
        dt = QSUR_DTYPE_F32;
    else if (strcmp(dtype, "F16") == 0)
        dt = QSUR_DTYPE_F16;
    else if (strcmp(dtype, "BF16") == 0)
        dt = QSUR_DTYPE_BF16;
    else
        return qsur_fail(err, QSUR_ERR_ARG, "save: dtype %s (expected F32, F16 or BF16)", dtype);
    if (opts->int_spec && (opts->int_spec->bits < 2 || opts->int_spec->bits > 8))
        return qsur_fail(err, QSUR_ERR_ARG, "save %s: integer weights need a 2..8-bit weight quantizer "
                         "(got %d bits)", dir, opts->int_spec->bits);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return qsur_fail(err, QSUR_ERR_IO, "%s: not an existing directory", dir);
    qsur_llama *m = (qsur_llama *)m_in; /* slots only read through it */
    hf_slot *slots = calloc((size_t)m->cfg.n_layers * 9 + 3, sizeof *slots);
    int n = slots ? hf_slots(m, slots) : 0, rc = QSUR_OK, nt = 0;
    /* up to 4 tensors per slot (codes, scales, zeros; GPTQ: qweight, qzeros, scales, g_idx) */
    qsur_tensor **ts = calloc((size_t)4 * n + 1, sizeof *ts);
    qsur_dtype *dts = calloc((size_t)4 * n + 1, sizeof *dts);
    char gcfg[512] = "";
    if (opts->gptq && opts->int_spec)
        qsur_gptq_config_json(opts->int_spec->bits,
                              opts->int_spec->gran == QSUR_GRAN_GROUP ? opts->int_spec->group : -1,
                              opts->int_spec->symmetric, gcfg, sizeof gcfg);
    if (!slots || !ts || !dts)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "save %s: out of memory", dir);
    for (int i = 0; i < n && !rc; i++) {
        const hf_slot *sl = &slots[i];
        if (sl->lin && opts->int_spec) {
            qsur_qweight *qw = NULL;
            if (!(rc = int_weights(sl, opts->int_spec, &qw, err)))
                rc = opts->gptq ? add_gptq_tensors(sl, qw, opts->int_spec, ts, dts, &nt, err)
                                : add_int_tensors(sl, qw, ts, dts, &nt, err);
            qsur_qweight_free(qw);
            continue;
        }
        const float *src = sl->lin && opts->use_wq && sl->lin->wq ? sl->lin->wq : sl->data;
        dts[nt] = dt;
        rc = sl->rows ? qsur_tensor_new2(&ts[nt], sl->name, sl->rows, sl->cols, err)
                      : qsur_tensor_new(&ts[nt], sl->name, 1, &sl->cols, err);
        if (rc)
            break;
        if (sl->rope_heads)
            permute_rows(ts[nt]->data, src, sl->rope_heads, sl->rows, sl->cols, 1);
        else
            memcpy(ts[nt]->data, src, (size_t)qsur_tensor_numel(ts[nt]) * sizeof(float));
        nt++;
    }
    char path[4096];
    const char **meta = NULL;
    if (!rc && !(meta = malloc((size_t)(2 * opts->meta_count + 2) * sizeof *meta)))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "save %s: out of memory", dir);
    if (!rc) {
        meta[0] = "format";
        meta[1] = "pt";
        for (int k = 0; k < 2 * opts->meta_count; k++)
            meta[2 + k] = opts->meta_kv[k];
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = qsur_safetensors_write(path, (const qsur_tensor *const *)ts, nt, dts, meta,
                                    1 + opts->meta_count, NULL, err);
    }
    free(meta);
    if (!rc) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        rc = write_config(&m->cfg, path, qsur_dtype_name(dt), opts->gptq ? gcfg : NULL, err);
    }
    if (!rc && opts->gptq) { /* AutoGPTQ reads quantize_config.json, transformers config.json */
        snprintf(path, sizeof path, "%s/quantize_config.json", dir);
        size_t len = strlen(gcfg);
        snprintf(gcfg + len, sizeof gcfg - len, "\n");
        rc = write_text_file(path, gcfg, err);
    }
    for (int i = 0; i < nt; i++)
        qsur_tensor_free(ts[i]);
    free(ts);
    free(dts);
    free(slots);
    return rc;
}
