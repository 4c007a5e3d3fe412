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
#include <unistd.h>
#include "qsur/gptq_pack.h"
#include "qsur/half.h"
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
    LSLOT(&m->embed, c->vocab_size, c->dim, 0, "model.embed_tokens.weight");
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
        LSLOT(&m->output, c->vocab_size, c->dim, 0, "lm_head.weight");
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

int qsur_llama_hf_first_file(const char *dir, char *path, size_t n)
{
    struct stat st;
    snprintf(path, n, "%s/model.safetensors", dir);
    if (stat(path, &st) == 0)
        return QSUR_OK;
    snprintf(path, n, "%s/model.safetensors.index.json", dir);
    qsur_json *j = NULL;
    qsur_error ig;
    if (qsur_json_parse_file(path, &j, &ig))
        return QSUR_ERR_IO;
    const qsur_json *wm = qsur_json_get(j, "weight_map");
    const char *first = NULL;
    for (int i = 0; wm && wm->type == QSUR_JSON_OBJECT && i < wm->count; i++)
        if (wm->items[i]->type == QSUR_JSON_STRING && !strchr(wm->items[i]->string, '/') &&
            (!first || strcmp(wm->items[i]->string, first) < 0))
            first = wm->items[i]->string;
    int rc = first ? QSUR_OK : QSUR_ERR_FORMAT;
    if (first)
        snprintf(path, n, "%s/%s", dir, first);
    qsur_json_free(j);
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

/* Shape of entry en as "AxB" (or "scalar"). */
static void entry_shape(const qsur_st_entry *en, char *got, size_t n)
{
    size_t used = 0;
    got[0] = '\0';
    for (int d = 0; d < en->ndim && used < n; d++)
        used += (size_t)snprintf(got + used, n - used, d ? "x%lld" : "%lld", (long long)en->shape[d]);
    if (!en->ndim)
        snprintf(got, n, "scalar");
}

/* Before anything is allocated: the sizes config.json declares must agree
 * with the tensors present, so a config of a bigger model beside a small
 * checkpoint costs nothing (every later allocation is then bounded by the
 * bytes on disk). */
static int check_config_fits(const hf_shards *sh, const qsur_llama_config *c, const char *cfg_path,
                             const char *what, qsur_error *err)
{
    qsur_safetensors *f = NULL;
    int e = -1;
    qsur_error inner;
    if (shards_find(sh, "model.embed_tokens.weight", what, &f, &e, &inner))
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s", inner.msg);
    const qsur_st_entry *en = &f->entries[e];
    if (en->ndim != 2 || en->shape[0] != c->vocab_size || en->shape[1] != c->dim) {
        char got[128];
        entry_shape(en, got, sizeof got);
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: vocab_size x hidden_size = %dx%d disagrees "
                         "with model.embed_tokens.weight %s in %s", cfg_path, c->vocab_size,
                         c->dim, got, f->path);
    }
    /* layer by layer, so a huge num_hidden_layers stops at the first one
     * missing; the slots allocated next are then bounded by the index */
    for (int i = 0; i < c->n_layers; i++) {
        char name[QSUR_NAME_MAX];
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
        if (!shards_has(sh, name))
            return qsur_fail(err, QSUR_ERR_FORMAT, "%s: num_hidden_layers = %d but %s has no %s",
                             cfg_path, c->n_layers, what, name);
    }
    return QSUR_OK;
}

/* The stored form of a float tensor (F32/F16/BF16), or -1. */
static int float_dtype(qsur_dtype d)
{
    return d == QSUR_DTYPE_F32 || d == QSUR_DTYPE_F16 || d == QSUR_DTYPE_BF16 ? (int)d : -1;
}

/* Converts a 1-D/2-D float entry into dst (rows x cols floats, Meta row
 * order when rope_heads) and refuses NaN/Inf: for the small tensors kept as
 * float (norms, embeddings). */
static int read_floats(const qsur_safetensors *f, const qsur_st_entry *en, float *dst,
                       int64_t rows, int64_t cols, int rope_heads, const char *name,
                       qsur_error *err)
{
    qsur_llama_linear tmp;
    memset(&tmp, 0, sizeof tmp);
    tmp.rows = rows, tmp.cols = cols;
    tmp.st.dtype = en->dtype;
    tmp.st.data = f->map.data + f->data_start + en->begin;
    tmp.st.rope_heads = rope_heads;
    qsur_llama_linear_read_rows(&tmp, 0, rows, dst);
    int64_t bad = qsur_find_nonfinite(dst, rows * cols);
    if (bad >= 0)
        return qsur_fail(err, QSUR_ERR_NUMERIC, "%s: %s has a non-finite value at element %lld",
                         f->path, name, (long long)bad);
    return QSUR_OK;
}

static void close_safetensors(void *f)
{
    qsur_safetensors_close(f);
}

static const qsur_mapped_file *safetensors_map(const void *f)
{
    return &((const qsur_safetensors *)f)->map;
}

/* Hands the open shards to the model: its mapped linears point into them. */
static int adopt_shards(qsur_llama *m, hf_shards *sh, qsur_error *err)
{
    struct qsur_llama_mapping *mp = calloc(1, sizeof *mp);
    if (!mp)
        return qsur_fail(err, QSUR_ERR_NOMEM, "model: out of memory");
    mp->count = sh->count;
    mp->files = (void **)sh->open;
    mp->close = close_safetensors;
    mp->map = safetensors_map;
    for (int i = 0; i < sh->count; i++)
        free(sh->files[i]);
    free(sh->files);
    sh->files = NULL;
    sh->open = NULL;
    sh->count = 0;
    qsur_llama_mapping_adopt(m, mp);
    return QSUR_OK;
}

/* Where each slot's tensor is: found and shape-checked before any weight
 * memory is allocated. int_base[0] != 0: an int linear (BASE.qweight ...). */
typedef struct {
    qsur_safetensors *f;
    int e;
    char int_base[QSUR_NAME_MAX];
} hf_found;

static int locate_slot(const hf_shards *sh, const hf_slot *sl, const char *what, hf_found *fd,
                       qsur_error *err)
{
    memset(fd, 0, sizeof *fd);
    if (sl->lin && !shards_has(sh, sl->name)) {
        char qn[QSUR_NAME_MAX + 16];
        slot_base(sl, fd->int_base, sizeof fd->int_base);
        snprintf(qn, sizeof qn, "%s.qweight", fd->int_base);
        if (shards_has(sh, qn))
            return QSUR_OK;
        fd->int_base[0] = '\0';
    }
    int rc = shards_find(sh, sl->name, what, &fd->f, &fd->e, err);
    if (rc)
        return rc;
    const qsur_st_entry *en = &fd->f->entries[fd->e];
    int ok = sl->rows ? en->ndim == 2 && en->shape[0] == sl->rows && en->shape[1] == sl->cols
                      : en->ndim == 1 && en->shape[0] == sl->cols;
    if (!ok) {
        char got[128], want[64];
        entry_shape(en, got, sizeof got);
        if (sl->rows)
            snprintf(want, sizeof want, "%lldx%lld", (long long)sl->rows, (long long)sl->cols);
        else
            snprintf(want, sizeof want, "%lld", (long long)sl->cols);
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %s has shape %s (expected %s); config.json disagrees",
                         fd->f->path, sl->name, got, want);
    }
    if (float_dtype(en->dtype) < 0)
        return qsur_fail(err, QSUR_ERR_FORMAT, "%s: %s is %s (expected F32, F16 or BF16)",
                         fd->f->path, sl->name, qsur_dtype_name(en->dtype));
    return QSUR_OK;
}

/* Fills slot sl of m from fd: a linear maps the stored bytes (nothing is
 * read now), a vector or the embeddings become float. */
static int fill_slot(const hf_shards *sh, hf_slot *sl, const hf_found *fd, const char *what,
                     qsur_error *err)
{
    if (fd->int_base[0]) {
        int rc = qsur_llama_linear_own(sl->lin, err);
        if (rc)
            return rc;
        sl->data = sl->lin->w;
        char gi[QSUR_NAME_MAX + 16];
        snprintf(gi, sizeof gi, "%s.g_idx", fd->int_base);
        return shards_has(sh, gi) ? load_gptq_slot(sh, sl, fd->int_base, what, err)
                                  : load_int_slot(sh, sl, fd->int_base, what, err);
    }
    const qsur_st_entry *en = &fd->f->entries[fd->e];
    if (sl->lin) {
        qsur_llama_linear *l = sl->lin;
        l->st.dtype = en->dtype;
        l->st.data = fd->f->map.data + fd->f->data_start + en->begin;
        l->st.owned = NULL;
        l->st.in_file = 1;
        l->st.rope_heads = sl->rope_heads;
        return QSUR_OK;
    }
    return read_floats(fd->f, en, sl->data, sl->rows ? sl->rows : 1, sl->cols, sl->rope_heads,
                       sl->name, err);
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
    if ((rc = shards_open(&sh, dir, what, sizeof what, err)) ||
        (rc = check_config_fits(&sh, &cfg, cfg_path, what, err))) {
        shards_close(&sh);
        return rc;
    }
    /* every tensor located and checked on a weightless model first */
    qsur_llama *m = NULL;
    hf_slot *slots = NULL;
    hf_found *found = NULL;
    if ((rc = qsur_llama_new_stored(&m, &cfg, err)))
        goto done;
    slots = calloc((size_t)cfg.n_layers * 9 + 3, sizeof *slots);
    found = calloc((size_t)cfg.n_layers * 9 + 3, sizeof *found);
    if (!slots || !found) {
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    int n = hf_slots(m, slots);
    for (int i = 0; i < n && !rc; i++)
        rc = locate_slot(&sh, &slots[i], what, &found[i], err);
    for (int i = 0; i < n && !rc; i++) {
        rc = fill_slot(&sh, &slots[i], &found[i], what, err);
        if (!rc)
            rc = qsur_progress_tick(prog, (double)(i + 1) / n, "load", NAN, err);
    }
    if (!rc) {
        qsur_llama_embed_sync(m); /* a tied lm_head reads the stored embeddings */
        rc = adopt_shards(m, &sh, err);
    }
done:
    free(slots);
    free(found);
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

int qsur_llama_write_config(const qsur_llama_config *c, const char *path, const char *dtype,
                            qsur_error *err)
{
    return write_config(c, path, dtype, NULL, err);
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
 * fw (packed codes, wq, or the weights): the linear's own packed codes when
 * their grid is the export's, else maps fitted by RTN on the weights (the way
 * `quant` made them) or on fw itself, whichever decodes to fw bit for bit;
 * else an error, since writing integers would change the model. */
static int int_weights(const qsur_llama_linear *l, const qsur_quant_spec *spec, qsur_qweight **out,
                       qsur_error *err)
{
    *out = NULL;
    qsur_quant_spec q = qsur_llama_linear_spec(spec, l->cols);
    const qsur_llama_packed *p = l->qp;
    if (p && p->spec.bits == q.bits && p->spec.symmetric == q.symmetric &&
        p->spec.gran == q.gran && (q.gran != QSUR_GRAN_GROUP || p->spec.group == q.group)) {
        *out = qsur_llama_linear_qweight(l);
        return *out ? QSUR_OK : qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", l->name);
    }
    size_t n = (size_t)(l->rows * l->cols);
    float *dec = qsur_alloc(n, sizeof(float)), *fw = qsur_alloc(n, sizeof(float)), *tmp = NULL;
    const float *w = NULL;
    int rc = QSUR_OK, ok = 0;
    if (!dec || !fw)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory", l->name);
    if (!rc)
        rc = qsur_llama_linear_weights_alloc(l, &w, &tmp, err);
    if (!rc)
        qsur_llama_linear_forward_rows(l, 0, l->rows, fw);
    qsur_qweight *qw = NULL;
    for (int attempt = 0; attempt < 2 && !rc && !ok; attempt++) {
        qsur_qweight_free(qw);
        qw = NULL;
        if ((rc = qsur_qweight_new(&qw, &q, l->rows, l->cols, err)) ||
            (rc = qsur_qweight_fit_rtn(qw, attempt == 0 ? w : fw, err)))
            break;
        qsur_qweight_encode(qw, fw);
        qsur_qweight_decode(qw, dec);
        ok = memcmp(dec, fw, n * sizeof(float)) == 0;
    }
    free(dec), free(fw), free(tmp);
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

/* ---- streaming, sharded writing ---------------------------------------------- */

/* One tensor of the export: its header entry and where its values come from. */
typedef struct {
    qsur_st_desc d;
    char name[QSUR_NAME_MAX + 16];
    const hf_slot *sl;
    int part;        /* 0: the weights; int linears: 1 codes, 2 scales, 3 zeros;
                        GPTQ-packed: 4 qweight, 5 qzeros, 6 scales, 7 g_idx */
} out_tensor;

/* The four GPTQ tensors of slot sl quantized by q, shaped the way
 * qsur_gptq_pack lays them out (qsur/gptq_pack.h); returns 4. */
static int describe_gptq(const hf_slot *sl, const qsur_quant_spec *q, out_tensor *o)
{
    static const char *const sfx[4] = {"qweight", "qzeros", "scales", "g_idx"};
    int64_t k = 32 / q->bits, out = sl->rows, in = sl->cols;
    int64_t groups = q->gran == QSUR_GRAN_GROUP ? in / q->group : 1;
    const int64_t shape[4][2] = {{in / k, out}, {groups, out / k}, {groups, out}, {in, 0}};
    char base[QSUR_NAME_MAX];
    slot_base(sl, base, sizeof base);
    for (int t = 0; t < 4; t++) {
        memset(&o[t], 0, sizeof o[t]);
        snprintf(o[t].name, sizeof o[t].name, "%s.%s", base, sfx[t]);
        o[t].d.dtype = t == 2 ? QSUR_DTYPE_F16 : QSUR_DTYPE_I32;
        o[t].d.ndim = t == 3 ? 1 : 2;
        o[t].d.shape[0] = shape[t][0];
        o[t].d.shape[1] = shape[t][1];
        o[t].sl = sl;
        o[t].part = 4 + t;
    }
    return 4;
}

/* Describes the tensors of slot sl (1, or 2-3 for an int linear); returns
 * how many. */
static int describe_slot(const hf_slot *sl, const qsur_llama_hf_save_opts *opts, qsur_dtype dt,
                         out_tensor *o)
{
    /* integers for the per-layer linears only: embeddings, norms, lm_head stay float */
    if (!(sl->lin && strncmp(sl->name, "model.layers.", 13) == 0 && opts->int_spec)) {
        memset(o, 0, sizeof *o);
        snprintf(o->name, sizeof o->name, "%s", sl->name);
        o->d.dtype = dt;
        o->d.ndim = sl->rows ? 2 : 1;
        o->d.shape[0] = sl->rows ? sl->rows : sl->cols;
        o->d.shape[1] = sl->cols;
        o->sl = sl;
        return 1;
    }
    qsur_quant_spec q = qsur_llama_linear_spec(opts->int_spec, sl->cols);
    if (opts->gptq)
        return describe_gptq(sl, &q, o);
    int64_t prow = q.gran == QSUR_GRAN_TENSOR ? 1 : sl->rows;
    int64_t pcol = q.gran == QSUR_GRAN_GROUP ? sl->cols / q.group : 1;
    char base[QSUR_NAME_MAX];
    slot_base(sl, base, sizeof base);
    static const char *const sfx[3] = {"qweight", "scales", "zeros"};
    int n = q.symmetric ? 2 : 3;
    for (int k = 0; k < n; k++) {
        memset(&o[k], 0, sizeof o[k]);
        snprintf(o[k].name, sizeof o[k].name, "%s.%s", base, sfx[k]);
        o[k].d.dtype = k ? QSUR_DTYPE_F32 : q.symmetric ? QSUR_DTYPE_I8 : QSUR_DTYPE_U8;
        o[k].d.ndim = 2;
        o[k].d.shape[0] = k ? prow : sl->rows;
        o[k].d.shape[1] = k ? pcol : sl->cols;
        o[k].sl = sl;
        o[k].part = k + 1;
    }
    return n;
}

/* Streams the weights part of slot sl: HF row j of a q/k weight is Meta row
 * 2i + c for j = c*hs/2 + i (within a head). */
static int put_weights(qsur_st_stream *w, const hf_slot *sl, int use_wq, float *row,
                       qsur_error *err)
{
    if (!sl->lin)
        return qsur_st_stream_put(w, sl->data, (sl->rows ? sl->rows : 1) * sl->cols, err);
    const qsur_llama_linear *l = sl->lin;
    int64_t hs = sl->rope_heads ? l->rows / sl->rope_heads : 0, half = hs / 2;
    int rc = QSUR_OK;
    for (int64_t j = 0; j < l->rows && !rc; j++) {
        int64_t r = j;
        if (hs) {
            int64_t h = j / hs, k = j % hs;
            r = h * hs + 2 * (k % half) + k / half;
        }
        if (use_wq)
            qsur_llama_linear_forward_rows(l, r, r + 1, row);
        else
            qsur_llama_linear_read_rows(l, r, r + 1, row);
        rc = qsur_st_stream_put(w, row, l->cols, err);
    }
    return rc;
}

/* Streams codes, scales and zeros of an int linear (qw of this linear). */
static int put_int(qsur_st_stream *w, const out_tensor *o, const qsur_qweight *qw, float *row,
                   qsur_error *err)
{
    const hf_slot *sl = o->sl;
    int64_t rows = o->d.shape[0], cols = o->d.shape[1];
    int permute = sl->rope_heads && rows == sl->rows;
    int64_t hs = permute ? rows / sl->rope_heads : 0, half = hs / 2;
    int rc = QSUR_OK;
    for (int64_t j = 0; j < rows && !rc; j++) {
        int64_t r = j;
        if (hs) {
            int64_t h = j / hs, k = j % hs;
            r = h * hs + 2 * (k % half) + k / half;
        }
        for (int64_t c = 0; c < cols; c++) {
            if (o->part == 1)
                row[c] = (float)qw->codes[r * cols + c];
            else {
                const qsur_qparams *p = &qw->params[r * cols + c];
                row[c] = o->part == 2 ? p->scale : p->zero;
            }
        }
        rc = qsur_st_stream_put(w, row, cols, err);
    }
    return rc;
}

/* Writes the index of a sharded checkpoint (atomically), as Hugging Face does. */
static int write_index(const char *path, const qsur_st_desc *d, int n, const int *shard,
                       char names[][64], int64_t total, qsur_error *err)
{
    qsur_atomic_file f;
    int rc = qsur_atomic_open(&f, path, err);
    if (rc)
        return rc;
    char line[512];
    int len = snprintf(line, sizeof line, "{\n  \"metadata\": {\"total_size\": %lld},\n"
                       "  \"weight_map\": {\n", (long long)total);
    rc = qsur_atomic_write(&f, line, (size_t)len, err);
    for (int i = 0; i < n && !rc; i++) {
        len = snprintf(line, sizeof line, "    \"%s\": \"%s\"%s\n", d[i].name, names[shard[i]],
                       i + 1 < n ? "," : "");
        rc = qsur_atomic_write(&f, line, (size_t)len, err);
    }
    if (!rc)
        rc = qsur_atomic_write(&f, "  }\n}\n", 6, err);
    if (rc) {
        qsur_atomic_abort(&f);
        return rc;
    }
    return qsur_atomic_commit(&f, err);
}

/* Packs the codes of slot sl GPTQ-style into pk (qsur/gptq_pack.h); q/k
 * rows (codes and their maps) go to the HF layout first, like float weights.
 * GPTQ has one group size: a linear whose width forces another
 * (stories260K's w2: 172 = 4 x 43 for 32) is refused. */
static int gptq_pack_slot(const hf_slot *sl, qsur_qweight *qw, const qsur_quant_spec *spec,
                          qsur_gptq_packed *pk, qsur_error *err)
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
    return qsur_gptq_pack(qw, base, pk, err);
}

/* Streams part o->part of a packed linear (int32 words as their bits, fp16
 * scales as floats that round back to the same bits), `wide` values at a time. */
static int put_gptq(qsur_st_stream *w, const out_tensor *o, const qsur_gptq_packed *pk,
                    float *row, int64_t wide, qsur_error *err)
{
    int64_t k = 32 / pk->bits;
    int64_t n[4] = {pk->in / k * pk->out, pk->groups * (pk->out / k), pk->groups * pk->out, pk->in};
    int t = o->part - 4;
    int64_t want = o->d.shape[0] * (o->d.ndim == 2 ? o->d.shape[1] : 1);
    if (n[t] != want)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: packed as %lld values, %lld expected", o->name,
                         (long long)n[t], (long long)want);
    const int32_t *src = t == 0 ? pk->qweight : t == 1 ? pk->qzeros : t == 3 ? pk->g_idx : NULL;
    int rc = QSUR_OK;
    for (int64_t i0 = 0; i0 < n[t] && !rc; i0 += wide) {
        int64_t m = n[t] - i0 < wide ? n[t] - i0 : wide;
        if (src)
            memcpy(row, src + i0, (size_t)m * sizeof(float));
        else
            for (int64_t i = 0; i < m; i++)
                row[i] = qsur_f16_to_f32(pk->scales[i0 + i]);
        rc = qsur_st_stream_put(w, row, m, err);
    }
    return rc;
}

int qsur_llama_save_hf(const qsur_llama *m, const char *dir, const char *dtype,
                       qsur_error *err)
{
    qsur_llama_hf_save_opts o = {.dtype = dtype};
    return qsur_llama_save_hf_ex(m, dir, &o, err);
}

int qsur_hf_write_sharded(const char *dir, const qsur_st_desc *d, int nt, int64_t shard_bytes,
                          const char *const *meta_kv, int meta_count,
                          int (*put)(void *ctx, int i, qsur_st_stream *w, qsur_error *err),
                          void *ctx, const qsur_progress *prog, qsur_error *err)
{
    if (shard_bytes < 0)
        return qsur_fail(err, QSUR_ERR_ARG, "save %s: shard size %lld must be positive", dir,
                         (long long)shard_bytes);
    /* shards of at most shard_bytes (a bigger tensor gets a shard of its own) */
    int64_t limit = shard_bytes ? shard_bytes : QSUR_HF_SHARD_BYTES, used = 0, total = 0;
    int *shard = calloc((size_t)nt + 1, sizeof *shard), nshards = nt ? 1 : 0;
    if (!shard)
        return qsur_fail(err, QSUR_ERR_NOMEM, "save %s: out of memory", dir);
    for (int i = 0; i < nt; i++) {
        int64_t b = qsur_st_desc_bytes(&d[i]);
        if (used > 0 && used + b > limit)
            nshards++, used = 0;
        used += b;
        total += b;
        shard[i] = nshards - 1;
    }
    if (nshards > 99999) {
        free(shard);
        return qsur_fail(err, QSUR_ERR_ARG, "save %s: %d shards (raise the shard size)", dir, nshards);
    }
    char (*names)[64] = calloc((size_t)nshards + 1, sizeof *names);
    qsur_st_stream *ws = calloc((size_t)nshards + 1, sizeof *ws);
    const char **meta = malloc((size_t)(2 * meta_count + 2) * sizeof *meta);
    int rc = names && ws && meta ? QSUR_OK : qsur_fail(err, QSUR_ERR_NOMEM, "save %s: out of memory", dir);
    if (!rc) {
        meta[0] = "format";
        meta[1] = "pt";
        for (int k = 0; k < 2 * meta_count; k++)
            meta[2 + k] = meta_kv[k];
    }
    int opened = 0, first = 0;
    char path[4200];
    for (int sh = 0; sh < nshards && !rc; sh++) {
        if (nshards == 1)
            snprintf(names[sh], sizeof names[sh], "model.safetensors");
        else
            snprintf(names[sh], sizeof names[sh], "model-%05d-of-%05d.safetensors", sh + 1, nshards);
        snprintf(path, sizeof path, "%s/%s", dir, names[sh]);
        int count = 0;
        while (first + count < nt && shard[first + count] == sh)
            count++;
        if ((rc = qsur_st_stream_open(&ws[sh], path, d + first, count, meta, 1 + meta_count, err)))
            break;
        opened = sh + 1;
        for (int i = first; i < first + count && !rc; i++) {
            rc = put(ctx, i, &ws[sh], err);
            if (!rc)
                rc = qsur_progress_tick(prog, (double)(i + 1) / nt, "write", NAN, err);
        }
        first += count;
    }
    /* every shard complete before any takes its name */
    for (int sh = 0; sh < opened; sh++) {
        if (rc)
            qsur_st_stream_abort(&ws[sh]);
        else
            rc = qsur_st_stream_commit(&ws[sh], err);
    }
    if (!rc && nshards > 1) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        rc = write_index(path, d, nt, shard, names, total, err);
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        unlink(path); /* a stale single file would only confuse */
    } else if (!rc) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        unlink(path); /* the loader would prefer a stale index */
    }
    free(shard), free(names), free(ws), free(meta);
    return rc;
}

/* The export's source of values: tensor i of o[]. */
typedef struct {
    const out_tensor *o;
    const qsur_llama_hf_save_opts *opts;
    float *row;        /* `wide` floats */
    int64_t wide;
    qsur_qweight *qw;  /* codes of the int linear being written */
    qsur_gptq_packed pk; /* its GPTQ packing (weights=gptq) */
} export_ctx;

static int export_put(void *ctx, int i, qsur_st_stream *w, qsur_error *err)
{
    export_ctx *x = ctx;
    const out_tensor *o = &x->o[i];
    if (o->part == 1 || o->part == 4) {
        qsur_qweight_free(x->qw);
        x->qw = NULL;
        qsur_gptq_packed_free(&x->pk);
        int rc = int_weights(o->sl->lin, x->opts->int_spec, &x->qw, err);
        if (!rc && o->part == 4)
            rc = gptq_pack_slot(o->sl, x->qw, x->opts->int_spec, &x->pk, err);
        if (rc)
            return rc;
    }
    if (o->part >= 4)
        return put_gptq(w, o, &x->pk, x->row, x->wide, err);
    return o->part ? put_int(w, o, x->qw, x->row, err)
                   : put_weights(w, o->sl, x->opts->use_wq, x->row, err);
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
    out_tensor *o = calloc((size_t)4 * n + 1, sizeof *o);
    char gcfg[512] = "";
    if (opts->gptq && opts->int_spec)
        qsur_gptq_config_json(opts->int_spec->bits,
                              opts->int_spec->gran == QSUR_GRAN_GROUP ? opts->int_spec->group : -1,
                              opts->int_spec->symmetric, gcfg, sizeof gcfg);
    if (!slots || !o)
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "save %s: out of memory", dir);
    for (int i = 0; i < n && !rc; i++)
        nt += describe_slot(&slots[i], opts, dt, &o[nt]);
    qsur_st_desc *d = rc ? NULL : calloc((size_t)nt + 1, sizeof *d);
    int64_t wide = m->cfg.hidden_dim > m->cfg.dim ? m->cfg.hidden_dim : m->cfg.dim;
    export_ctx x;
    memset(&x, 0, sizeof x);
    x.o = o, x.opts = opts, x.wide = wide;
    x.row = rc ? NULL : malloc((size_t)wide * sizeof(float));
    if (!rc && (!d || !x.row))
        rc = qsur_fail(err, QSUR_ERR_NOMEM, "save %s: out of memory", dir);
    for (int i = 0; i < nt && !rc; i++) {
        d[i] = o[i].d;
        d[i].name = o[i].name;
    }
    if (!rc)
        rc = qsur_hf_write_sharded(dir, d, nt, opts->shard_bytes, opts->meta_kv, opts->meta_count,
                                   export_put, &x, opts->progress, err);
    qsur_qweight_free(x.qw);
    qsur_gptq_packed_free(&x.pk);
    free(x.row);
    free(d);
    char path[4200];
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
    free(o);
    free(slots);
    return rc;
}
