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
#include "qsur/atomic_file.h"
#include "qsur/json.h"
#include "qsur/llama.h"
#include "qsur/safetensors.h"

/* One tensor of the HF checkpoint and where it lives in the model. */
typedef struct {
    char name[QSUR_NAME_MAX];
    float *data;
    int64_t rows, cols;  /* rows == 0: 1-D of cols */
    int rope_heads;      /* > 0: q/k weight with this many heads to (un)permute */
} hf_slot;

static int hf_slots(qsur_llama *m, hf_slot *s)
{
    int n = 0;
    const qsur_llama_config *c = &m->cfg;
#define SLOT(ptr, r, cc, heads, ...) \
    do { snprintf(s[n].name, sizeof s[n].name, __VA_ARGS__); s[n].data = ptr; \
         s[n].rows = r; s[n].cols = cc; s[n].rope_heads = heads; n++; } while (0)
    SLOT(m->tok_embeddings, c->vocab_size, c->dim, 0, "model.embed_tokens.weight");
    for (int i = 0; i < c->n_layers; i++) {
        qsur_llama_layer *L = &m->layers[i];
        SLOT(L->attention_norm, 0, c->dim, 0, "model.layers.%d.input_layernorm.weight", i);
        SLOT(L->wq.w, c->dim, c->dim, c->n_heads, "model.layers.%d.self_attn.q_proj.weight", i);
        SLOT(L->wk.w, c->kv_dim, c->dim, c->n_kv_heads, "model.layers.%d.self_attn.k_proj.weight", i);
        SLOT(L->wv.w, c->kv_dim, c->dim, 0, "model.layers.%d.self_attn.v_proj.weight", i);
        SLOT(L->wo.w, c->dim, c->dim, 0, "model.layers.%d.self_attn.o_proj.weight", i);
        SLOT(L->ffn_norm, 0, c->dim, 0, "model.layers.%d.post_attention_layernorm.weight", i);
        SLOT(L->w1.w, c->hidden_dim, c->dim, 0, "model.layers.%d.mlp.gate_proj.weight", i);
        SLOT(L->w2.w, c->dim, c->hidden_dim, 0, "model.layers.%d.mlp.down_proj.weight", i);
        SLOT(L->w3.w, c->hidden_dim, c->dim, 0, "model.layers.%d.mlp.up_proj.weight", i);
    }
    SLOT(m->norm, 0, c->dim, 0, "model.norm.weight");
    if (!c->shared_classifier)
        SLOT(m->output.w, c->vocab_size, c->dim, 0, "lm_head.weight");
#undef SLOT
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

static int write_config(const qsur_llama_config *c, const char *path, const char *dtype,
                        qsur_error *err)
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
        "  \"torch_dtype\": \"%s\"\n"
        "}\n",
        c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
        c->seq_len, c->rope_theta, c->norm_eps, c->shared_classifier ? "true" : "false", torch);
    qsur_atomic_file f;
    int rc = qsur_atomic_open(&f, path, err);
    if (rc)
        return rc;
    if ((rc = qsur_atomic_write(&f, text, (size_t)n, err))) {
        qsur_atomic_abort(&f);
        return rc;
    }
    return qsur_atomic_commit(&f, err);
}

int qsur_llama_save_hf(const qsur_llama *m_in, const char *dir, const char *dtype,
                       qsur_error *err)
{
    qsur_dtype dt;
    if (!dtype || strcmp(dtype, "F32") == 0)
        dt = QSUR_DTYPE_F32;
    else if (strcmp(dtype, "F16") == 0)
        dt = QSUR_DTYPE_F16;
    else if (strcmp(dtype, "BF16") == 0)
        dt = QSUR_DTYPE_BF16;
    else
        return qsur_fail(err, QSUR_ERR_ARG, "save: dtype %s (expected F32, F16 or BF16)", dtype);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return qsur_fail(err, QSUR_ERR_IO, "%s: not an existing directory", dir);
    qsur_llama *m = (qsur_llama *)m_in; /* slots only read through it */
    hf_slot *slots = calloc((size_t)m->cfg.n_layers * 9 + 3, sizeof *slots);
    int n = slots ? hf_slots(m, slots) : 0, rc = QSUR_OK;
    qsur_tensor **ts = calloc((size_t)n + 1, sizeof *ts);
    qsur_dtype *dts = calloc((size_t)n + 1, sizeof *dts);
    if (!slots || !ts || !dts)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "save %s: out of memory", dir);
    for (int i = 0; i < n && !rc; i++) {
        dts[i] = dt;
        rc = slots[i].rows ? qsur_tensor_new2(&ts[i], slots[i].name, slots[i].rows, slots[i].cols, err)
                           : qsur_tensor_new(&ts[i], slots[i].name, 1, &slots[i].cols, err);
        if (rc)
            break;
        if (slots[i].rope_heads)
            permute_rows(ts[i]->data, slots[i].data, slots[i].rope_heads, slots[i].rows,
                         slots[i].cols, 1);
        else
            memcpy(ts[i]->data, slots[i].data, (size_t)qsur_tensor_numel(ts[i]) * sizeof(float));
    }
    char path[4096];
    if (!rc) {
        const char *meta[2] = {"format", "pt"};
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = qsur_safetensors_write(path, (const qsur_tensor *const *)ts, n, dts, meta, 1, NULL, err);
    }
    if (!rc) {
        snprintf(path, sizeof path, "%s/config.json", dir);
        rc = write_config(&m->cfg, path, qsur_dtype_name(dt), err);
    }
    for (int i = 0; i < n; i++)
        qsur_tensor_free(ts[i]);
    free(ts);
    free(dts);
    free(slots);
    return rc;
}
