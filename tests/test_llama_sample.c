/* Sampling against worked distributions; streaming generation stops where
 * asked (callback, progress = Ctrl-C, EOS) and greedy equals the engine's
 * plain greedy decoder; the continuation log-likelihood equals a log-softmax
 * of the full sequence's logits computed here. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "qsur/llama_text.h"

static void test_sample_distribution(void)
{
    /* p = (0.5, 0.3, 0.2, 0): temp 1 draws them; top-p 0.6 keeps {0, 1}
     * (0.5 < 0.6 <= 0.8) renormalised: 0.625, 0.375; temp 0 is the argmax */
    float logits[4] = {logf(0.5f), logf(0.3f), logf(0.2f), -1e30f};
    qsur_sampler sp;
    qsur_error err;
    CHECK_OK(qsur_sampler_new(&sp, 4, &err), err);
    qsur_rng rng;
    qsur_rng_seed(&rng, 11);
    int n = 40000, cnt[2][4] = {{0}};
    qsur_sample_opts all = {1.0, 1.0, 0}, nucleus = {1.0, 0.6, 0}, greedy = {0, 0.9, 0};
    for (int i = 0; i < n; i++) {
        cnt[0][qsur_sample(&sp, logits, &all, &rng)]++;
        cnt[1][qsur_sample(&sp, logits, &nucleus, &rng)]++;
    }
    /* 4 standard deviations of a binomial proportion at n = 40000: < 0.01 */
    CHECK_NEAR(cnt[0][0] / (double)n, 0.5, 0.01);
    CHECK_NEAR(cnt[0][1] / (double)n, 0.3, 0.01);
    CHECK_NEAR(cnt[0][2] / (double)n, 0.2, 0.01);
    CHECK(cnt[0][3] == 0);
    CHECK_NEAR(cnt[1][0] / (double)n, 0.625, 0.01);
    CHECK_NEAR(cnt[1][1] / (double)n, 0.375, 0.01);
    CHECK(cnt[1][2] == 0 && cnt[1][3] == 0);
    CHECK(qsur_sample(&sp, logits, &greedy, &rng) == 0);
    qsur_sampler_free(&sp);
}

typedef struct {
    int n, stop_after;
    int ids[64];
} collect;

static int on_tok(void *ctx, int tok)
{
    collect *c = ctx;
    c->ids[c->n++] = tok;
    return c->n == c->stop_after;
}

static int stop_progress(void *ctx, double done, const char *what, double value)
{
    (void)done;
    (void)what;
    (void)value;
    return ++*(int *)ctx >= 3; /* "Ctrl-C" at the third tick */
}

static void test_stream(qsur_llama *m, const int *prompt)
{
    qsur_error err;
    int want[10], made = 0;
    CHECK_OK(qsur_llama_generate(m, NULL, prompt, 8, 10, want, &err), err);
    collect c = {0, 0, {0}};
    qsur_sample_opts g = {0, 0.9, 1};
    CHECK_OK(qsur_llama_sample_stream(m, prompt, 8, 10, -1, &g, on_tok, &c, NULL, &made, &err), err);
    CHECK(made == 10 && c.n == 10 && !memcmp(c.ids, want, sizeof want));
    c.n = 0;
    c.stop_after = 4;
    CHECK_OK(qsur_llama_sample_stream(m, prompt, 8, 10, -1, &g, on_tok, &c, NULL, &made, &err), err);
    CHECK(made == 4 && c.n == 4);
    int ticks = 0;
    qsur_progress prog = {stop_progress, &ticks};
    c.n = 0;
    c.stop_after = 0;
    CHECK_OK(qsur_llama_sample_stream(m, prompt, 8, 10, -1, &g, on_tok, &c, &prog, &made, &err), err);
    CHECK_MSG(made == 3, "stopped by the progress callback after %d tokens", made);
    c.n = 0;
    CHECK_OK(qsur_llama_sample_stream(m, prompt, 8, 10, want[1], &g, on_tok, &c, NULL, &made, &err), err);
    int first = 0; /* the stop id is passed on, then it stops: at its first occurrence */
    while (want[first] != want[1])
        first++;
    CHECK(made == first + 1 && c.ids[first] == want[1]);
}

static void test_loglik(qsur_llama *m, const int *seq)
{
    /* seq[0..6) context, seq[6..10) continuation */
    qsur_error err;
    qsur_llama_state *s = NULL;
    CHECK_OK(qsur_llama_state_new(&s, m, 1, 10, &err), err);
    CHECK_OK(qsur_llama_forward(m, s, seq, 1, 10, 0, &err), err);
    int V = m->cfg.vocab_size;
    double want = 0;
    int greedy_want = 1;
    for (int t = 6; t < 10; t++) {
        const float *z = s->logits + (int64_t)(t - 1) * V;
        double mx = -INFINITY, se = 0;
        for (int j = 0; j < V; j++)
            mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < V; j++)
            se += exp(z[j] - mx);
        want += z[seq[t]] - mx - log(se);
        greedy_want &= z[seq[t]] == mx;
    }
    double ll;
    int greedy;
    CHECK_OK(qsur_llama_loglik(m, NULL, seq, 6, seq + 6, 4, &ll, &greedy, &err), err);
    CHECK_NEAR(ll, want, 1e-4);
    CHECK(greedy == greedy_want);
    /* a greedy continuation is flagged greedy */
    int next[3];
    CHECK_OK(qsur_llama_generate(m, NULL, seq, 6, 3, next, &err), err);
    CHECK_OK(qsur_llama_loglik(m, s, seq, 6, next, 3, &ll, &greedy, &err), err);
    CHECK(greedy == 1 && ll < 0);
    int bad = V;
    CHECK(qsur_llama_loglik(m, NULL, seq, 6, &bad, 1, &ll, NULL, &err) == QSUR_ERR_ARG);
    /* the shared context run once, continuations from its cache: the same
     * numbers as one full pass per choice */
    const int *conts[3] = {seq + 6, seq + 20, next};
    int lens[3] = {4, 1, 3};
    double many[3];
    CHECK_OK(qsur_llama_loglik_choices(m, seq, 6, conts, lens, 3, many, &err), err);
    for (int j = 0; j < 3; j++) {
        CHECK_OK(qsur_llama_loglik(m, NULL, seq, 6, conts[j], lens[j], &ll, NULL, &err), err);
        CHECK_NEAR(many[j], ll, 1e-4 * (1 + fabs(ll)));
    }
    conts[1] = &bad;
    CHECK(qsur_llama_loglik_choices(m, seq, 6, conts, lens, 3, many, &err) == QSUR_ERR_ARG);
    qsur_llama_state_free(s);
}

int main(void)
{
    test_sample_distribution();
    qsur_llama *m = NULL;
    qsur_error err;
    CHECK_OK(qsur_llama_load(&m, check_shared("data/stories260K.bin"), NULL, &err), err);
    qsur_tokens t;
    CHECK_OK(qsur_tokens_load(&t, check_shared("data/stories260K.eval.u16"), 256, 512, &err), err);
    if (m && t.ids) {
        test_stream(m, t.ids);
        test_loglik(m, t.ids + 100);
    }
    qsur_tokens_free(&t);
    qsur_llama_free(m);
    return check_done();
}
