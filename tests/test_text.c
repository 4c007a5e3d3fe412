/* The text commands end to end on models whose answers are known in closed
 * form: a model with zero classifier weights predicts the uniform
 * distribution (perplexity = vocabulary size exactly); a model whose
 * classifier puts logit L on one token and 0 elsewhere generates that token
 * forever and makes every multiple-choice answer made of it win. Plus the
 * GPTQ-style calibration windows against the reference ids, and eval on
 * stories260K token ids with choices forced by its own greedy prediction. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "check.h"
#include "command.h"
#include "qsur/json.h"
#include "qsur/llama.h"
#include "qsur/mapped_file.h"
#include "qsur/rng.h"
#include "qsur/tokenizer.h"
#include "session.h"
#include "text_state.h"

/* s->stream in the test: the pieces appended, '|' for a new line (NULL). */
static char streamed[256];
static void stream_capture(session *s, const char *text)
{
    (void)s;
    size_t n = strlen(streamed);
    snprintf(streamed + n, sizeof streamed - n, "%s", text ? text : "|");
}

#define V 32000 /* sp32k */

static void write_file(const char *path, const char *text, size_t n)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f) {
        fwrite(text, 1, n, f);
        fclose(f);
    }
}

/* One layer, every linear zero (the residual stream is the embedding), unit
 * norms, embeddings all ones (so the classifier sees a ones vector); the
 * classifier row of `hot` is L/dim, all others 0: logits = L at hot, else 0. */
static void make_model_v(const char *dir, int hot, double L, int vocab, const char *tokenizer)
{
    qsur_llama_config c = qsur_llama_config_default();
    c.dim = 16;
    c.hidden_dim = 32;
    c.n_layers = 1;
    c.n_heads = 2;
    c.n_kv_heads = 2;
    c.vocab_size = vocab;
    c.seq_len = 256;
    c.shared_classifier = 0;
    qsur_error err;
    qsur_llama *m = NULL;
    CHECK_OK(qsur_llama_config_check(&c, "test", &err), err);
    CHECK_OK(qsur_llama_new(&m, &c, &err), err);
    if (!m)
        return;
    for (int i = 0; i < c.dim; i++) {
        m->norm[i] = 1;
        m->layers[0].attention_norm[i] = 1;
        m->layers[0].ffn_norm[i] = 1;
    }
    for (int64_t i = 0; i < (int64_t)vocab * c.dim; i++)
        m->tok_embeddings[i] = 1;
    for (int i = 0; hot >= 0 && i < c.dim; i++)
        m->output.w[(int64_t)hot * c.dim + i] = (float)(L / c.dim);
    mkdir(dir, 0777);
    CHECK_OK(qsur_llama_save_hf(m, dir, "F32", &err), err);
    qsur_llama_free(m);
    char src[4200], dst[4200];
    snprintf(src, sizeof src, "%s", check_shared(tokenizer));
    snprintf(dst, sizeof dst, "%s/tokenizer.json", dir);
    size_t n;
    char *tj = check_read_file(src, &n);
    CHECK(tj != NULL);
    if (tj)
        write_file(dst, tj, n);
    free(tj);
}

static void make_model(const char *dir, int hot, double L)
{
    make_model_v(dir, hot, L, V, "data/tokenizers/sp32k-tokenizer.json");
}

/* The number after "key": in a JSON line, or NAN. */
static double json_num(const char *o, const char *key)
{
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = strstr(o, k);
    return p ? strtod(p + strlen(k), NULL) : NAN;
}

static int run(session *s, const char *fmt, const char *arg, qsur_error *err)
{
    char line[8192];
    snprintf(line, sizeof line, fmt, arg);
    return command_execute(s, line, err);
}

/* A session writing into memory; cli_out gives what was written since the
 * last call (one JSON line per command in this test). */
typedef struct {
    char *buf;
    size_t len, mark;
    FILE *out;
    session s;
} cli;

static void cli_open(cli *c)
{
    memset(c, 0, sizeof *c);
    c->out = open_memstream(&c->buf, &c->len);
    session_init(&c->s, c->out);
}

static const char *cli_out(cli *c)
{
    fflush(c->out);
    const char *p = c->buf + c->mark;
    c->mark = c->len;
    return p;
}

/* Opens a session (JSON reports when json) with the model at path loaded;
 * returns what `model load` printed. */
static const char *cli_model(cli *c, const char *path, int json)
{
    cli_open(c);
    c->s.set.format = json ? FORMAT_JSON : FORMAT_HUMAN;
    qsur_error err;
    char line[4300];
    snprintf(line, sizeof line, "model load \"%s\"", path);
    CHECK_OK(command_execute(&c->s, line, &err), err);
    return cli_out(c);
}

static void cli_close(cli *c)
{
    session_free(&c->s);
    fclose(c->out);
    free(c->buf);
}

static void test_uniform_model(const char *tmp)
{
    char dir[4200], english[4200];
    snprintf(dir, sizeof dir, "%s/uniform", tmp);
    snprintf(english, sizeof english, "%s", check_shared("data/tokenizers/english.txt"));
    make_model(dir, -1, 0);
    cli c;
    const char *o = cli_model(&c, dir, 1);
    session *s = &c.s;
    qsur_error err;
    CHECK_MSG(strstr(o, "tokenizer.json") != NULL, "model load picks up tokenizer.json: %s", o);
    /* "Hello world" -> ▁Hello ▁world in the 32k vocabulary */
    CHECK_OK(command_execute(s, "tokenize \"Hello world\"", &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"ids\":[22557,1526]") != NULL, "tokenize: %s", o);
    CHECK_OK(command_execute(s, "detokenize 22557,1526", &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"text\":\"Hello world\"") != NULL, "detokenize: %s", o);
    /* ppl: 136 ids + BOS = 137 -> 4 windows of 32, 31 predictions each;
     * uniform logits: NLL = log V exactly */
    CHECK_OK(run(s, "ppl \"%s\" seqlen=32", english, &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"predicted\":124") != NULL, "ppl: %s", o);
    CHECK_REL(json_num(o, "ppl"), 32000.0, 1e-9);
    CHECK_OK(run(s, "ppl \"%s\" seqlen=32 max-tokens=64", english, &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"predicted\":62") != NULL, "ppl max-tokens: %s", o);
    CHECK(run(s, "ppl \"%s\" seqlen=200", english, &err) == QSUR_ERR_ARG && strstr(err.msg, "fewer than one"));
    cli_out(&c);

    /* calibration windows: GPTQ's random offsets into the BOS + reference ids */
    size_t jn;
    char *jl = check_read_file(check_shared("data/tokenizers/reference_ids.jsonl"), &jn);
    qsur_json *j = NULL;
    char *nl = jl ? strchr(jl, '\n') : NULL;
    CHECK_OK(qsur_json_parse(jl, nl ? (size_t)(nl - jl) : jn, "ref", &j, &err), err);
    const qsur_json *ref = j ? qsur_json_get(j, "sp32k") : NULL;
    qsur_tokens t;
    CHECK_OK(text_calib_tokens(s, english, 16, 5, 7, &t, &err), err);
    qsur_rng rng;
    qsur_rng_seed(&rng, 7);
    int same = ref && t.n == 80;
    for (int k = 0; same && k < 5; k++) {
        int64_t off = (int64_t)qsur_rng_below(&rng, (uint64_t)(ref->count + 1 - 16));
        for (int i = 0; i < 16; i++) {
            int64_t want = off + i == 0 ? 1 : ref->items[off + i - 1]->integer;
            same &= t.ids[k * 16 + i] == want;
        }
    }
    CHECK_MSG(same, "calibration windows are the reference stream at the seeded offsets");
    qsur_tokens_free(&t);
    qsur_json_free(j);
    free(jl);
    CHECK_OK(run(s, "calib \"%s\" samples=5 seqlen=16 seed=7", english, &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"tokens\":80") != NULL, "calib text: %s", o);
    /* the methods re-read the calibration text through the same windows */
    CHECK_OK(command_execute(s, "quant w4a16", &err), err);
    CHECK_OK(command_execute(s, "gptq model", &err), err);
    cli_out(&c);
    /* export reads the calibration windows and an eval text too (windows of
     * 256: mixed.txt's 436 tokens hold one) */
    char line[9000];
    snprintf(line, sizeof line, "export \"%s/exported\" eval=\"%s\" seqs=2", tmp,
             check_shared("data/tokenizers/mixed.txt"));
    CHECK_OK(command_execute(s, line, &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"ok\":true") != NULL, "export with text: %s", o);
    /* ostquant's own calib= takes text (windows of 256 drawn from its seed) */
    CHECK_OK(run(s, "ostquant model calib=\"%s\" steps=2 seqs=2 seq-len=16 qsur-every=0",
                 check_shared("data/tokenizers/mixed.txt"), &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"ok\":true") != NULL, "ostquant calib=text: %s", o);
    cli_close(&c);
}

static void test_hot_model(const char *tmp)
{
    char dir[4200], path[4200];
    snprintf(dir, sizeof dir, "%s/paris", tmp);
    qsur_tokenizer *tok = NULL;
    qsur_error err;
    CHECK_OK(qsur_tokenizer_load(&tok, check_shared("data/tokenizers/sp32k-tokenizer.json"), 0, &err), err);
    qsur_token_ids p = {0};
    CHECK_OK(qsur_tokenizer_encode(tok, " Paris", 6, 0, &p, &err), err);
    /* " Paris" -> "▁▁Paris": the last piece is ▁Paris, one token */
    int paris = p.n ? p.ids[p.n - 1] : 0;
    CHECK(!strcmp(qsur_tokenizer_piece(tok, paris), "\xE2\x96\x81Paris"));
    qsur_token_ids_free(&p);
    qsur_tokenizer_free(tok);
    make_model(dir, paris, 20.0);
    cli c;
    cli_model(&c, dir, 0);
    session *s = &c.s;
    qsur_error e2;
    /* greedy: ▁Paris every time; the text streams to the output */
    CHECK_OK(command_execute(s, "generate \"The capital is\" n=3", &err), err);
    const char *o = cli_out(&c);
    CHECK_MSG(strstr(o, "The capital is Paris Paris Paris\n") != NULL, "generate: %s", o);
    /* sampling: p(Paris) = e^20 / (e^20 + 31999) > 0.99, so the 0.9 nucleus is Paris alone */
    CHECK_OK(command_execute(s, "generate \"x\" n=4 temp=1 top-p=0.9 seed=5", &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "x Paris Paris Paris Paris\n") != NULL, "generate top-p: %s", o);
    CHECK(command_execute(s, "generate \"x\" n=999", &e2) == QSUR_ERR_ARG && strstr(e2.msg, "positions"));
    cli_out(&c);
    /* a front end that shows streamed text elsewhere (the TUI) gets it through
     * s->stream: a new line first (NULL), then the pieces, nothing on s->out */
    s->stream = stream_capture;
    streamed[0] = '\0';
    CHECK_OK(command_execute(s, "generate \"y\" n=2", &err), err);
    s->stream = NULL;
    CHECK_MSG(!strcmp(streamed, "|y Paris Paris"), "streamed: [%s]", streamed);
    o = cli_out(&c);
    CHECK_MSG(!strstr(o, "y Paris"), "streamed text also went to out: %s", o);

    /* eval: the choice made of ▁Paris wins by construction; task "wrong"
     * labels another choice, so its accuracy is 0 */
    snprintf(path, sizeof path, "%s/tasks.jsonl", tmp);
    const char *tasks =
        "{\"context\": \"The capital of France is\", \"choices\": [\" London\", \" Paris\", \" Rome\"], \"label\": 1, "
        "\"task\": \"capitals\"}\n"
        "{\"context\": \"Where? \", \"choices\": [\"Paris\", \"Berlin by night\"], \"label\": 0, \"task\": \"capitals\"}\n"
        "\n"
        "{\"context\": \"Not\", \"choices\": [\" Paris\", \" Madrid\"], \"label\": 1, \"task\": \"wrong\"}\n"
        "{\"context\": [\"Lyon Paris\", \"Lyon Paris Paris\"], \"choices\": [\" x\", \" Paris\"], \"label\": 1, "
        "\"task\": \"capitals\"}\n"
        "{\"context\": \"\", \"choices\": [\"Paris\", \"Oslo\"], \"label\": 0, \"task\": \"capitals\"}\n";
    write_file(path, tasks, strlen(tasks));
    s->set.format = FORMAT_JSON;
    CHECK_OK(run(s, "eval \"%s\"", path, &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "{\"task\":\"capitals\",\"n\":4,\"acc\":1,") != NULL &&
                  strstr(o, "{\"task\":\"wrong\",\"n\":1,\"acc\":0,") != NULL &&
                  strstr(o, "\"task\":\"overall\",\"n\":5,") != NULL,
              "eval: %s", o);
    const char *bad = "{\"context\": \"a\", \"choices\": [\"b\"], \"label\": 0}\n";
    write_file(path, bad, strlen(bad));
    CHECK(run(s, "eval \"%s\"", path, &e2) == QSUR_ERR_FORMAT && strstr(e2.msg, "tasks.jsonl:1") &&
          strstr(e2.msg, "choices"));
    cli_out(&c);
    cli_close(&c);
}

/* stories260K has no tokenizer here: items in token ids. Every choice is one
 * token, and the labelled one is the model's own greedy next token, which has
 * the highest log-likelihood of all tokens by definition: acc = 1 is forced,
 * with the label at each of the three positions. */
static void test_stories_ids(const char *tmp)
{
    qsur_llama *m = NULL;
    qsur_error err;
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    qsur_tokens ev;
    CHECK_OK(qsur_tokens_load(&ev, check_shared("data/stories260K.eval.u16"), 256, 512, &err), err);
    if (!m || !ev.ids)
        return;
    char path[4200];
    snprintf(path, sizeof path, "%s/stories.jsonl", tmp);
    FILE *f = fopen(path, "w");
    for (int item = 0; item < 6; item++) {
        const int *ctx = ev.ids + item * 40;
        int next;
        CHECK_OK(qsur_llama_generate(m, NULL, ctx, 20, 1, &next, &err), err);
        int a = (next + 7) % 512, b = (next + 100) % 512;
        fprintf(f, "{\"context\": [");
        for (int i = 0; i < 20; i++)
            fprintf(f, "%s%d", i ? ", " : "", ctx[i]);
        int label = item % 3;
        int ch[3];
        ch[label] = next;
        ch[(label + 1) % 3] = a;
        ch[(label + 2) % 3] = b;
        fprintf(f, "], \"choices\": [[%d], [%d], [%d]], \"label\": %d, \"task\": \"greedy\"}\n", ch[0], ch[1], ch[2],
                label);
    }
    fclose(f);
    qsur_tokens_free(&ev);
    qsur_llama_free(m);
    cli c;
    cli_model(&c, check_shared("data/stories260K.bin"), 1);
    session *s = &c.s;
    CHECK_OK(run(s, "eval \"%s\"", path, &err), err);
    const char *o = cli_out(&c);
    CHECK_MSG(strstr(o, "{\"task\":\"greedy\",\"n\":6,\"acc\":1,") != NULL, "eval stories ids: %s", o);
    CHECK_OK(run(s, "eval \"%s\" limit=2", path, &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"n\":2,") != NULL, "eval limit: %s", o);
    /* text items need a tokenizer: a clear error, not a crash */
    write_file(path, "{\"context\": \"a\", \"choices\": [\"b\", \"c\"], \"label\": 0}\n", 52);
    CHECK(run(s, "eval \"%s\"", path, &err) == QSUR_ERR_ARG && strstr(err.msg, "no tokenizer"));
    cli_out(&c);
    cli_close(&c);
}


/* The Llama-3 tokenizer beside a model of its vocabulary (128256): the
 * post-processor adds no BOS, so english.txt is its 121 reference ids:
 * 3 windows of 32, 93 predictions, uniform logits -> ppl 128256. */
static void test_llama3_vocab(const char *tmp)
{
    char dir[4200], english[4200];
    snprintf(dir, sizeof dir, "%s/llama3", tmp);
    snprintf(english, sizeof english, "%s", check_shared("data/tokenizers/english.txt"));
    make_model_v(dir, -1, 0, 128256, "data/tokenizers/llama3-tokenizer.json");
    cli c;
    cli_model(&c, dir, 1);
    session *s = &c.s;
    qsur_error err;
    CHECK_OK(run(s, "ppl \"%s\" seqlen=32", english, &err), err);
    const char *o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"predicted\":93") != NULL && strstr(o, "no BOS") != NULL, "ppl llama3: %s", o);
    CHECK_REL(json_num(o, "ppl"), 128256.0, 1e-9);
    CHECK_OK(command_execute(s, "tokenize \"<|begin_of_text|>Hello world\"", &err), err);
    o = cli_out(&c);
    CHECK_MSG(strstr(o, "\"ids\":[128000,9906,1917]") != NULL, "tokenize llama3: %s", o);
    cli_close(&c);
}

int main(void)
{
    const char *tmp = check_tmpdir();
    test_uniform_model(tmp);
    test_hot_model(tmp);
    test_stories_ids(tmp);
    test_llama3_vocab(tmp);
    return check_done();
}
