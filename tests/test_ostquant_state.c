/* OSTQuant state file: N steps + save + load + M steps gives bit-identical
 * parameters and optimiser moments to N + M steps in one go (same seed);
 * save -> load round-trips every array exactly (the hi/lo/lo2 float split);
 * a different base model, a missing file and a foreign file are refused. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/llama.h"
#include "qsur/ostquant.h"
#include "qsur/safetensors.h"

static int same(const double *a, const double *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(double)) == 0;
}

static int64_t rov_n(const qsur_ostquant *o)
{
    return (int64_t)o->cfg.n_layers * o->cfg.n_kv_heads * o->cfg.head_size * o->cfg.head_size;
}

/* The optimiser's trajectory: current point and moments. */
static int same_trajectory(const qsur_ostquant *a, const qsur_ostquant *b)
{
    int64_t d2 = (int64_t)a->cfg.dim * a->cfg.dim, hs2 = (int64_t)a->cfg.head_size * a->cfg.head_size;
    int ok = a->has_cur && b->has_cur && a->step == b->step;
    ok = ok && same(a->cur_r_res, b->cur_r_res, d2) && same(a->cur_r_ov, b->cur_r_ov, rov_n(a)) &&
         same(a->cur_ls, b->cur_ls, a->n_ls);
    ok = ok && same(a->opt_res->m, b->opt_res->m, d2) && a->opt_res->v == b->opt_res->v &&
         a->opt_res->t == b->opt_res->t && same(a->opt_ls->m, b->opt_ls->m, a->n_ls) &&
         same(a->opt_ls->v, b->opt_ls->v, a->n_ls);
    for (int i = 0; ok && i < a->cfg.n_layers * a->cfg.n_kv_heads; i++)
        ok = same(a->opt_ov[i]->m, b->opt_ov[i]->m, hs2) && a->opt_ov[i]->v == b->opt_ov[i]->v;
    return ok;
}

/* Copies the state file src to dst with metadata key's value replaced by val
 * (the header is rewritten; data offsets are relative to the data section, so
 * only the header length changes). */
static int mutate(const char *src, const char *dst, const char *key, const char *val)
{
    FILE *f = fopen(src, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)size);
    size_t got = fread(b, 1, (size_t)size, f);
    fclose(f);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | b[i];
    char pat[128];
    snprintf(pat, sizeof pat, "\"%s\":\"", key);
    char *hdr = malloc(n + 1);
    memcpy(hdr, b + 8, n);
    hdr[n] = 0;
    char *at = strstr(hdr, pat);
    if (got != (size_t)size || !at) {
        free(b);
        free(hdr);
        return -1;
    }
    char *vs = at + strlen(pat), *ve = strchr(vs, '"');
    size_t nn = (size_t)(vs - hdr) + strlen(val) + strlen(ve);
    f = fopen(dst, "wb");
    for (int i = 0; i < 8; i++)
        fputc((int)((nn >> (8 * i)) & 0xff), f);
    fwrite(hdr, 1, (size_t)(vs - hdr), f);
    fputs(val, f);
    fputs(ve, f);
    fwrite(b + 8 + n, 1, (size_t)size - 8 - n, f);
    fclose(f);
    free(b);
    free(hdr);
    return 0;
}

int main(void)
{
    qsur_error err;
    qsur_llama *m = NULL;
    qsur_tokens t;
    memset(&t, 0, sizeof t);
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    if (m) /* float weights: the test reads and edits w */
        CHECK_OK(qsur_llama_own_all(m, &err), err);
    if (!m)
        return check_done();
    CHECK_OK(qsur_tokens_load(&t, check_shared("data/stories260K.calib.u16"), 256, m->cfg.vocab_size, &err),
             err);
    qsur_quant_spec w4 = qsur_quant_default(), a4 = qsur_quant_default();
    qsur_ostquant_opts op = qsur_ostquant_default();
    op.batch = 2;
    op.max_seqs = 4;
    op.seq_len = 32;
    op.seed = 5;
    const int N = 3, M = 2;
    char path[4096], path2[4096];
    snprintf(path, sizeof path, "%s/ostq_state.safetensors", check_tmpdir());
    snprintf(path2, sizeof path2, "%s/ostq_state2.safetensors", check_tmpdir());

    /* one go: N + M steps */
    qsur_ostquant *a = NULL, *b = NULL, *c = NULL;
    op.steps = N + M;
    CHECK_OK(qsur_ostquant_new(&a, m, &op, &w4, &a4, &a4, &err), err);
    CHECK_OK(qsur_ostquant_train(a, m, &t, NULL, NULL, &err), err);
    /* split: N steps, save, load into a fresh object, M more */
    op.steps = N;
    CHECK_OK(qsur_ostquant_new(&b, m, &op, &w4, &a4, &a4, &err), err);
    CHECK_OK(qsur_ostquant_train(b, m, &t, NULL, NULL, &err), err);
    CHECK_OK(qsur_ostquant_save(b, path, &err), err);
    CHECK_OK(qsur_ostquant_load(&c, m, path, &err), err);
    if (!a || !b || !c)
        return check_done();
    CHECK(c->step == N);
    CHECK(c->nlog == N && c->log[N - 1].step == N && c->log[N - 1].loss == (float)b->log[N - 1].loss);
    CHECK(c->best_step == b->best_step && c->best_ema == b->best_ema);
    int64_t d2 = (int64_t)m->cfg.dim * m->cfg.dim;
    CHECK_MSG(same(c->r_res, b->cur_r_res, d2) && same(c->r_ov, b->cur_r_ov, rov_n(b)) &&
              same(c->ls, b->cur_ls, b->n_ls), "the loaded point is the saved current point, bit for bit");
    CHECK(same(c->best_r_res, b->best_r_res, d2) && same(c->best_ls, b->best_ls, b->n_ls));
    CHECK(c->opt_res->t == N && c->opt_res->v == b->opt_res->v);
    c->opts.steps = N + M;
    CHECK_OK(qsur_ostquant_train(c, m, &t, NULL, NULL, &err), err);
    CHECK_MSG(same_trajectory(a, c), "N + save/load + M steps == N + M steps (parameters and moments)");
    /* and the loss log matches step for step */
    int logs = a->nlog == c->nlog;
    for (int i = 0; logs && i < a->nlog; i++)
        logs = a->log[i].step == c->log[i].step && (float)a->log[i].loss == (float)c->log[i].loss;
    CHECK_MSG(logs, "loss log of the resumed run equals the one-go run");
    {
        /* the protocol options (a new order every pass: N = 3 crosses the
         * 2-step passes; canonical Riemannian Adam; clipping; float weights;
         * last step kept) are saved and resume exactly too */
        qsur_ostquant_opts pp = op;
        pp.reshuffle = pp.radam = pp.no_wquant = pp.keep_last = pp.online_w2 = 1;
        pp.wquant_code = pp.rand_signs = 1; /* no effect here (float weights, WOMI): saved all the same */
        pp.sov_code = 1; /* S_ov before R_ov: the resumed run must fuse in the same order */
        pp.sov_train = 1; /* and train S_ov on wo's rows */
        pp.clip_grad = 1e-3; /* small enough to bind */
        qsur_ostquant *pa = NULL, *pb = NULL, *pc = NULL;
        pp.steps = N + M;
        CHECK_OK(qsur_ostquant_new(&pa, m, &pp, &w4, &a4, &a4, &err), err);
        CHECK_OK(qsur_ostquant_train(pa, m, &t, NULL, NULL, &err), err);
        pp.steps = N;
        CHECK_OK(qsur_ostquant_new(&pb, m, &pp, &w4, &a4, &a4, &err), err);
        CHECK_OK(qsur_ostquant_train(pb, m, &t, NULL, NULL, &err), err);
        CHECK_OK(qsur_ostquant_save(pb, path2, &err), err);
        CHECK_OK(qsur_ostquant_load(&pc, m, path2, &err), err);
        if (pa && pb && pc) {
            CHECK(pc->opts.reshuffle && pc->opts.radam && pc->opts.no_wquant && pc->opts.keep_last && pc->opts.online_w2 &&
                  pc->opts.wquant_code && pc->opts.rand_signs && pc->opts.sov_code && pc->opts.sov_train &&
                  pc->opts.clip_grad == 1e-3 && pc->opt_res->canonical && pc->opt_ov[0]->canonical);
            pc->opts.steps = N + M;
            CHECK_OK(qsur_ostquant_train(pc, m, &t, NULL, NULL, &err), err);
            CHECK_MSG(same_trajectory(pa, pc), "protocol options: N + save/load + M == N + M steps");
            CHECK_MSG(pa->best_step == N + M && same(pa->r_res, pa->cur_r_res, d2),
                      "keep=last: the kept parameters are the last step's (best step %d)", pa->best_step);
            CHECK_MSG(!same(pa->r_res, a->r_res, d2), "the protocol options change the trajectory");
        }
        qsur_ostquant_free(pa);
        qsur_ostquant_free(pb);
        qsur_ostquant_free(pc);
    }
    /* save -> load -> save writes the same file */
    CHECK_OK(qsur_ostquant_save(c, path, &err), err);
    qsur_ostquant *d = NULL;
    CHECK_OK(qsur_ostquant_load(&d, m, path, &err), err);
    if (d) {
        CHECK_OK(qsur_ostquant_save(d, path2, &err), err);
        FILE *f1 = fopen(path, "rb"), *f2 = fopen(path2, "rb");
        int eq = f1 && f2;
        for (int x, y; eq;) {
            x = fgetc(f1);
            y = fgetc(f2);
            eq = x == y;
            if (x == EOF)
                break;
        }
        if (f1)
            fclose(f1);
        if (f2)
            fclose(f2);
        CHECK_MSG(eq, "save(load(save(o))) is byte-identical");
    }
    /* the state names the model it belongs to */
    qsur_ostquant *e = NULL;
    m->layers[2].w1.w[7] += 1e-3f;
    int rc = qsur_ostquant_load(&e, m, path, &err);
    CHECK(rc == QSUR_ERR_ARG && e == NULL && strstr(err.msg, "different weights"));
    m->layers[2].w1.w[7] -= 1e-3f;
    rc = qsur_ostquant_load(&e, m, "/nonexistent/ostq.safetensors", &err);
    CHECK(rc != QSUR_OK && strstr(err.msg, "/nonexistent/ostq.safetensors"));
    /* issue 13: every metadata value is validated as what save writes; each
     * of these files was accepted before (the seed went through a float cast) */
    static const char *const bad[][3] = {
        {"seed", "1e308", "\"seed\" = \"1e308\" is not an integer"},
        {"seed", "-1", "\"seed\" = \"-1\" is not an integer"},
        {"seed", "nan", "is not an integer"},
        {"seed", "18446744073709551616", "is not an integer in [0, 2^64)"},
        {"version", "2", "version \"2\" (this qsur reads version 1)"},
        {"loss", "kl", "\"loss\" = \"kl\" (expected kltop, ce or mse)"},
        {"best_step", "999", "best_step 999 out of range"},
        {"best_step", "-1", "\"best_step\" = \"-1\" is not an integer in [0, 1000000]"},
        {"lr", "nan", "\"lr\" = nan is not in [0, 1e+06]"},
        {"lr", "-0.5", "is not in"},
        {"lr_scale", "inf", "is not in"},
        {"seq_len", "2000000", "\"seq_len\" = \"2000000\" is not an integer in [0, 1048576]"},
        {"seq_len", "1.5", "is not an integer"},
        {"steps", "0x10", "is not an integer"},
        {"batch", "0", "is not an integer in [1, 4096]"},
        {"womi", "2", "is not an integer in [0, 1]"},
        {"online_w2", "2", "\"online_w2\" = \"2\" is not an integer in [0, 1]"},
        {"wquant_code", "3", "\"wquant_code\" = \"3\" is not an integer in [0, 1]"},
        {"rand_signs", "7", "\"rand_signs\" = \"7\" is not an integer in [0, 1]"},
        {"sov_code", "2", "\"sov_code\" = \"2\" is not an integer in [0, 1]"},
        {"sov_train", "2", "\"sov_train\" = \"2\" is not an integer in [0, 1]"},
        {"adam_res.t", "1e300", "is not an integer"},
        {"qsur_alpha", "1.5", "\"qsur_alpha\" = 1.5 is not in (0, 1)"},
        {"qsur_alpha", "nan", "is not in (0, 1)"},
        {"qsur_cube", "box", "\"qsur_cube\" = \"box\""},
        {"best_loss", "nan", "best_loss\" is NaN"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_MSG(mutate(path, path2, bad[i][0], bad[i][1]) == 0, "cannot rewrite %s", bad[i][0]);
        rc = qsur_ostquant_load(&e, m, path2, &err);
        CHECK_MSG(rc == QSUR_ERR_FORMAT && e == NULL && strstr(err.msg, bad[i][2]) && strstr(err.msg, path2),
                  "%s = %s: rc %d, \"%s\" (expected \"%s\")", bad[i][0], bad[i][1], rc, err.msg, bad[i][2]);
        qsur_ostquant_free(e);
        e = NULL;
    }
    /* the largest seed is an integer like any other; the rewriter itself is sound */
    CHECK(mutate(path, path2, "seed", "18446744073709551615") == 0);
    CHECK_OK(qsur_ostquant_load(&e, m, path2, &err), err);
    CHECK(e && e->opts.seed == UINT64_MAX);
    qsur_ostquant_free(e);
    e = NULL;
    /* a safetensors file that is not a state */
    qsur_tensor *one = NULL;
    int64_t n1 = 1;
    CHECK_OK(qsur_tensor_new(&one, "x", 1, &n1, &err), err);
    const qsur_tensor *ts[1] = {one};
    CHECK_OK(qsur_safetensors_write(path2, ts, 1, NULL, NULL, 0, NULL, &err), err);
    rc = qsur_ostquant_load(&e, m, path2, &err);
    CHECK(rc == QSUR_ERR_FORMAT && strstr(err.msg, "qsur.kind"));
    qsur_tensor_free(one);
    qsur_ostquant_free(a);
    qsur_ostquant_free(b);
    qsur_ostquant_free(c);
    qsur_ostquant_free(d);
    qsur_tokens_free(&t);
    qsur_llama_free(m);
    return check_done();
}
