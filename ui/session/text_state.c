/* The session's tokenizer and text token streams (see text_state.h). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "qsur/llama_store.h"
#include "qsur/mapped_file.h"
#include "qsur/rng.h"
#include "text_state.h"

void text_state_free(text_state *t)
{
    if (!t)
        return;
    qsur_tokenizer_free(t->tok);
    qsur_token_ids_free(&t->cache_ids);
    free(t);
}

void text_weights_desc(const session *s, char *buf, int n)
{
    if (s->model && qsur_llama_linear_is_quantized(&s->model->layers[0].wq))
        qsur_quant_describe(&s->wq, buf, n);
    else
        snprintf(buf, (size_t)n, "float");
}

int text_is_text(const char *path)
{
    size_t n = strlen(path);
    return n >= 4 && !strcmp(path + n - 4, ".txt");
}

static int ensure_state(session *s, qsur_error *err)
{
    if (!s->text && !(s->text = calloc(1, sizeof *s->text)))
        return qsur_fail(err, QSUR_ERR_NOMEM, "out of memory");
    return QSUR_OK;
}

int text_tokenizer_load(session *s, const char *path, qsur_error *err)
{
    int rc = ensure_state(s, err);
    if (rc)
        return rc;
    qsur_tokenizer *t = NULL;
    /* a tokenizer.bin is read to its end, never cut at the model's vocabulary
     * size: a mismatch is reported by text_need_tokenizer, not hidden */
    rc = qsur_tokenizer_load(&t, path, 0, err);
    if (rc)
        return rc;
    qsur_tokenizer_free(s->text->tok);
    s->text->tok = t;
    snprintf(s->text->tok_path, sizeof s->text->tok_path, "%s", path);
    return QSUR_OK;
}

int text_need_tokenizer(session *s, const char *who, const qsur_tokenizer **tok, qsur_error *err)
{
    const char *sep = who[0] ? ": " : "";
    if (!s->text || !s->text->tok)
        return qsur_fail(err, QSUR_ERR_ARG, "%s%sno tokenizer (use `tokenizer load FILE`, or `model load DIR` "
                         "with a tokenizer.json beside the weights)", who, sep);
    int nv = qsur_tokenizer_vocab_size(s->text->tok);
    if (s->model && nv > s->model->cfg.vocab_size)
        return qsur_fail(err, QSUR_ERR_ARG, "%s%sthe tokenizer has %d ids, the model's vocabulary only %d", who, sep,
                         nv, s->model->cfg.vocab_size);
    *tok = s->text->tok;
    return QSUR_OK;
}

int text_file_ids(session *s, const char *path, const qsur_token_ids **ids, qsur_error *err)
{
    const qsur_tokenizer *tok = NULL;
    int rc = text_need_tokenizer(s, path, &tok, err);
    if (rc)
        return rc;
    struct stat st;
    if (stat(path, &st) != 0)
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot open", path);
    text_state *ts = s->text;
    if (ts->cache_tok == tok && !strcmp(ts->cache_path, path) && ts->cache_size == (long long)st.st_size &&
        ts->cache_mtime == (long long)st.st_mtime) {
        *ids = &ts->cache_ids;
        return QSUR_OK;
    }
    qsur_mapped_file f;
    if ((rc = qsur_mapped_file_open(&f, path, err)))
        return rc;
    qsur_token_ids v = {0};
    rc = qsur_tokenizer_encode(tok, (const char *)f.data, f.size, 1, &v, err);
    qsur_mapped_file_close(&f);
    if (rc) {
        qsur_token_ids_free(&v);
        return rc;
    }
    qsur_token_ids_free(&ts->cache_ids);
    ts->cache_ids = v;
    ts->cache_tok = tok;
    snprintf(ts->cache_path, sizeof ts->cache_path, "%s", path);
    ts->cache_size = (long long)st.st_size;
    ts->cache_mtime = (long long)st.st_mtime;
    *ids = &ts->cache_ids;
    return QSUR_OK;
}

static int tokens_new(qsur_tokens *t, int64_t n, int seq_len, const char *path, qsur_error *err)
{
    memset(t, 0, sizeof *t);
    t->ids = malloc((size_t)n * sizeof *t->ids);
    if (!t->ids)
        return qsur_fail(err, QSUR_ERR_NOMEM, "%s: out of memory for %lld tokens", path, (long long)n);
    t->n = n;
    t->seq_len = seq_len;
    return QSUR_OK;
}

int text_eval_tokens(session *s, const char *path, int seq_len, int64_t max_tokens, qsur_tokens *t,
                     qsur_error *err)
{
    const qsur_token_ids *ids;
    int rc = text_file_ids(s, path, &ids, err);
    if (rc)
        return rc;
    int64_t n = max_tokens > 0 && max_tokens < ids->n ? max_tokens : ids->n;
    n -= n % seq_len;
    if (n == 0)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: %lld tokens, fewer than one window of %d", path,
                         (long long)ids->n, seq_len);
    if ((rc = tokens_new(t, n, seq_len, path, err)))
        return rc;
    memcpy(t->ids, ids->ids, (size_t)n * sizeof *t->ids);
    return QSUR_OK;
}

int text_calib_tokens(session *s, const char *path, int seq_len, int samples, uint64_t seed, qsur_tokens *t,
                      qsur_error *err)
{
    const qsur_token_ids *ids;
    int rc = text_file_ids(s, path, &ids, err);
    if (rc)
        return rc;
    if (samples < 1)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: samples=%d (expected >= 1)", path, samples);
    if (ids->n <= seq_len)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: %lld tokens, need more than seqlen=%d for a window", path,
                         (long long)ids->n, seq_len);
    if ((rc = tokens_new(t, (int64_t)samples * seq_len, seq_len, path, err)))
        return rc;
    qsur_rng rng;
    qsur_rng_seed(&rng, seed);
    for (int k = 0; k < samples; k++) {
        /* GPTQ: i = random.randint(0, n - seqlen - 1); inp = ids[i : i + seqlen] */
        int64_t i = (int64_t)qsur_rng_below(&rng, (uint64_t)(ids->n - seq_len));
        memcpy(t->ids + (int64_t)k * seq_len, ids->ids + i, (size_t)seq_len * sizeof *t->ids);
    }
    return QSUR_OK;
}

int text_or_tokens_calib(session *s, const char *path, int seq_len, int samples, uint64_t seed,
                         qsur_tokens *t, qsur_error *err)
{
    if (text_is_text(path))
        return text_calib_tokens(s, path, seq_len, samples, seed, t, err);
    return qsur_tokens_read(t, path, seq_len, samples, s->model->cfg.vocab_size, err);
}

int text_or_tokens_eval(session *s, const char *path, int seq_len, qsur_tokens *t, qsur_error *err)
{
    if (text_is_text(path))
        return text_eval_tokens(s, path, seq_len, 0, t, err);
    return qsur_tokens_load(t, path, seq_len, s->model->cfg.vocab_size, err);
}
