/* Typed option specs (ui/commands/option.c) and the dispatch through sub-command
 * entries (ui/commands/command.c): parsing, ranges, defaults, usage and log lines,
 * worked out by hand; and the ostquant specs' defaults against the engine's. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "check.h"
#include "command.h"
#include "commands.h"
#include "option.h"
#include "qsur/awq.h"
#include "qsur/cqe.h"
#include "qsur/gptq.h"
#include "qsur/ostquant.h"
#include "qsur/quantease.h"
#include "qsur/ostquant_layer.h"
#include "session.h"

enum { T_N, T_X, T_LOSS, T_FILE, T_FLAG, T_NAME };
static const opt_spec spec[] = {
    {"n", OPT_INT, 1, 10, NULL, "3", NULL, OPT_LOG_ALWAYS, "a count"},
    {"x", OPT_REAL, 0, 1, NULL, "0.5", NULL, OPT_LOG_ALWAYS, "a fraction"},
    {"loss", OPT_CHOICE, 0, 0, "kltop|ce|mse", "kltop", NULL, OPT_LOG_GIVEN, "the loss"},
    {"file", OPT_FILE, 0, 0, NULL, NULL, "OUT", OPT_LOG_GIVEN, "a path"},
    {"no-thing", OPT_FLAG, 0, 0, NULL, NULL, NULL, OPT_LOG_GIVEN, "a flag"},
    {"name", OPT_TEXT, 0, 0, NULL, NULL, NULL, OPT_LOG_NEVER, "not logged"},
    {NULL, 0, 0, 0, NULL, NULL, NULL, 0, NULL}};

static int parse(int max_pos, const char *line, opt_args *a, qsur_error *err)
{
    static char buf[512];
    static char *argv[32];
    snprintf(buf, sizeof buf, "%s", line);
    int argc = command_tokenize(buf, argv, 32, err);
    return opt_parse(spec, max_pos, argc, argv, a, "USAGE", err);
}

static void check_parsing(void)
{
    opt_args a;
    qsur_error err;
    CHECK_OK(parse(0, "", &a, &err), err);
    CHECK(a.v[T_N].i == 3 && !a.v[T_N].given && a.v[T_X].d == 0.5 && a.v[T_LOSS].i == 0);
    CHECK(a.v[T_FILE].s == NULL && a.v[T_FLAG].i == 0 && a.npos == 0);
    CHECK_OK(parse(1, "n=10 pos x=0.25 loss=mse no-thing file=a=b name=z", &a, &err), err);
    CHECK(a.v[T_N].i == 10 && a.v[T_N].given && a.v[T_X].d == 0.25 && a.v[T_LOSS].i == 2);
    CHECK(a.v[T_FLAG].i == 1 && !strcmp(a.v[T_FILE].s, "a=b") && !strcmp(a.v[T_NAME].s, "z"));
    CHECK(a.npos == 1 && !strcmp(a.pos[0], "pos"));
    /* ranges are inclusive; out of range or not a number: bad value */
    CHECK(parse(0, "n=11", &a, &err) == QSUR_ERR_ARG && !strcmp(err.msg, "bad value in 'n=11' (USAGE)"));
    CHECK(parse(0, "n=0", &a, &err) == QSUR_ERR_ARG);
    CHECK(parse(0, "n=1.5", &a, &err) == QSUR_ERR_ARG);
    CHECK(parse(0, "x=1.0001", &a, &err) == QSUR_ERR_ARG);
    CHECK(parse(0, "x=nan", &a, &err) == QSUR_ERR_ARG);
    /* a choice that is none of them: the message lists them */
    CHECK(parse(0, "loss=kl", &a, &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "unknown loss 'kl' (expected kltop|ce|mse; USAGE)"), "[%s]", err.msg);
    /* a key of no option, a flag given a value, a word beyond the positionals */
    CHECK(parse(0, "m=1", &a, &err) == QSUR_ERR_ARG && !strcmp(err.msg, "unknown option 'm=1' (USAGE)"));
    CHECK(parse(0, "no-thing=1", &a, &err) == QSUR_ERR_ARG && strstr(err.msg, "unknown option"));
    CHECK(parse(1, "a b", &a, &err) == QSUR_ERR_ARG && strstr(err.msg, "unknown option 'b'"));
    CHECK_OK(parse(-1, "a b c", &a, &err), err);
    CHECK(a.npos == 3);
    /* "nn=3" is not "n=" */
    CHECK(opt_find(spec, "nn=3") == -1 && opt_find(spec, "n=3") == T_N && opt_find(spec, "no-thing") == T_FLAG);
    CHECK(opt_find(spec, "n") == -1);
    /* a range up to LONG_MAX (a double cannot hold it exactly) */
    static const opt_spec big[] = {{"m", OPT_INT, 0, (double)LONG_MAX, NULL, "0", NULL, OPT_LOG_GIVEN, "big"},
                                   {NULL, 0, 0, 0, NULL, NULL, NULL, 0, NULL}};
    char w1[] = "m=9223372036854775807", w2[] = "m=9223372036854775808", *v1[] = {w1}, *v2[] = {w2};
    CHECK_OK(opt_parse(big, 0, 1, v1, &a, "U", &err), err);
    CHECK(a.v[0].i == LONG_MAX);
    CHECK(opt_parse(big, 0, 1, v2, &a, "U", &err) == QSUR_ERR_ARG);
}

static void check_text(void)
{
    char buf[512];
    opt_usage(spec, buf, sizeof buf);
    CHECK_MSG(!strcmp(buf, "n=N, x=X, loss=kltop|ce|mse, file=OUT, no-thing, name=TEXT"), "[%s]", buf);
    opt_args a;
    qsur_error err;
    CHECK_OK(parse(0, "x=0.1 file=\"a b\" name=q", &a, &err), err);
    char *line = opt_log_line("cmd sub", &a);
    /* n always (default), x in the shortest exact form, file quoted, loss
     * and the flag not given, name never */
    CHECK_MSG(line && !strcmp(line, "cmd sub n=3 x=0.1 file=\"a b\""), "[%s]", line);
    free(line);
    CHECK_OK(parse(0, "x=0.30000000000000004 loss=ce no-thing", &a, &err), err);
    line = opt_log_line("c", &a);
    CHECK_MSG(line && !strcmp(line, "c n=3 x=0.30000000000000004 loss=ce no-thing"), "[%s]", line);
    free(line);
    opt_describe(&spec[T_N], buf, sizeof buf);
    CHECK_MSG(strstr(buf, "n=N") && strstr(buf, "a count; default 3; 1..10"), "[%s]", buf);
}

static void add_word(void *ctx, const char *w)
{
    char *buf = ctx;
    strcat(buf, w);
    strcat(buf, " ");
}

/* Quantizer-spec rows (quant's w:/ao:): "key:OPTS" sets the row (OPTS may
 * hold '='), other words with a colon ("x:0", a tensor) stay positional. */
static void check_quant_rows(void)
{
    static const opt_spec q[] = {
        {"w", OPT_QUANT, 0, 0, NULL, NULL, NULL, OPT_LOG_GIVEN, "weights"},
        {"ao", OPT_QUANT, 0, 0, NULL, NULL, NULL, OPT_LOG_GIVEN, "wo's input"},
        {"n", OPT_INT, 1, 9, NULL, NULL, NULL, OPT_LOG_GIVEN, "a count"},
        OPT_END};
    CHECK(opt_find(q, "w:sym,clip=search") == 0 && opt_find(q, "ao:head") == 1 && opt_find(q, "n=3") == 2);
    CHECK(opt_find(q, "x:0") == -1 && opt_find(q, "wx:1") == -1 && opt_find(q, "w=1") == -1 && opt_find(q, "w") == -1);
    opt_args a;
    qsur_error err;
    char w1[] = "w4", w2[] = "w:sym,clip=search", w3[] = "x:0", w4[] = "ao:head", *v[] = {w1, w2, w3, w4};
    CHECK_OK(opt_parse(q, -1, 4, v, &a, "U", &err), err);
    CHECK(a.v[0].given && !strcmp(a.v[0].s, "sym,clip=search") && a.v[1].given && !strcmp(a.v[1].s, "head"));
    CHECK(a.npos == 2 && !strcmp(a.pos[0], "w4") && !strcmp(a.pos[1], "x:0"));
    char buf[256];
    opt_usage(q, buf, sizeof buf);
    CHECK_MSG(!strcmp(buf, "w:OPTS, ao:OPTS, n=N"), "[%s]", buf);
    char *line = opt_log_line("quant", &a);
    CHECK_MSG(line && !strcmp(line, "quant w:sym,clip=search ao:head"), "[%s]", line);
    free(line);
    buf[0] = '\0';
    opt_complete(q, add_word, buf);
    CHECK_MSG(!strcmp(buf, "w: ao: n= "), "[%s]", buf);
    /* quant: each quantizer's row once; its spec parser's messages */
    session s;
    session_init(&s, fopen("/dev/null", "w"));
    CHECK(command_execute(&s, "quant w:sym w4 w:asym", &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "quant: option 'w:' given twice ('w:sym', then 'w:asym'): give it once"), "[%s]",
              err.msg);
    CHECK(command_execute(&s, "quant kv:bogus", &err) == QSUR_ERR_ARG && strstr(err.msg, "unknown quantizer option 'bogus'"));
    CHECK(command_execute(&s, "quant w4a8 a:sym,asym", &err) == QSUR_ERR_ARG &&
          strstr(err.msg, "sets the symmetry a second time"));
    CHECK_OK(command_execute(&s, "quant w4a8kv4 w:asym,g16 kv:asym,row", &err), err);
    CHECK(s.wq.bits == 4 && !s.wq.symmetric && s.wq.gran == QSUR_GRAN_GROUP && s.wq.group == 16);
    CHECK(s.aq.bits == 8 && s.kvq.bits == 4 && !s.kvq.symmetric && s.kvq.gran == QSUR_GRAN_ROW);
    fclose(s.out);
    session_free(&s);
}

/* Typed positional arguments (command.args): row i types word i; a row not
 * given takes its default; a word beyond the rows, a bad value or a choice
 * outside its list is an error naming the row. */
static void check_args(void)
{
    static const opt_spec args[] = {
        {"KIND", OPT_CHOICE, 0, 0, "a|b|c", NULL, NULL, OPT_LOG_NEVER, "a kind"},
        {"N", OPT_INT, 1, 9, NULL, "4", NULL, OPT_LOG_NEVER, "a count"},
        OPT_END};
    opt_args a;
    qsur_error err;
    CHECK_OK(parse(-1, "c", &a, &err), err);
    CHECK_OK(opt_parse_args(args, &a, &err), err);
    CHECK(a.arg[0].i == 2 && a.arg[0].given && a.arg[1].i == 4 && !a.arg[1].given);
    CHECK_OK(parse(-1, "b 9", &a, &err), err);
    CHECK_OK(opt_parse_args(args, &a, &err), err);
    CHECK(a.arg[0].i == 1 && a.arg[1].i == 9 && a.arg[1].given);
    CHECK_OK(parse(-1, "d", &a, &err), err);
    CHECK(opt_parse_args(args, &a, &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "KIND: expected a, b or c, got 'd'"), "[%s]", err.msg);
    CHECK_OK(parse(-1, "a 10", &a, &err), err);
    CHECK(opt_parse_args(args, &a, &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "N: expected a whole number in 1..9, got '10'"), "[%s]", err.msg);
    CHECK_OK(parse(-1, "a 1 x", &a, &err), err);
    CHECK(opt_parse_args(args, &a, &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "unexpected argument 'x' (2 at most)"), "[%s]", err.msg);
    /* the defaults of the methods' positional rows are the engine's */
    CHECK_OK(parse(-1, "", &a, &err), err);
    CHECK_OK(opt_parse_args(quantease_args, &a, &err), err);
    CHECK(a.arg[0].i == qsur_quantease_default().sweeps);
    CHECK_OK(opt_parse_args(awq_args, &a, &err), err);
    CHECK(a.arg[0].i == qsur_awq_default().grid);
    /* through the table: set's rows, demo's sub-commands */
    session s;
    session_init(&s, fopen("/dev/null", "w"));
    CHECK_OK(command_execute(&s, "set bins 12", &err), err);
    CHECK(s.set.hist_bins == 12);
    CHECK_OK(command_execute(&s, "set errexit no", &err), err);
    CHECK(s.set.errexit == 0);
    CHECK_OK(command_execute(&s, "set errexit true", &err), err);
    CHECK(s.set.errexit == 1);
    CHECK_OK(command_execute(&s, "set qsur_method cholesky", &err), err);
    CHECK(s.set.qsur_method == QSUR_METHOD_CHOLESKY);
    CHECK_OK(command_execute(&s, "set error_tokens all", &err), err);
    CHECK(s.set.error_tokens == 0);
    CHECK(command_execute(&s, "set cube round", &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "set: cube: expected sym or asym, got 'round'"), "[%s]", err.msg);
    CHECK_OK(command_execute(&s, "demo 0.5 2", &err), err);
    CHECK(s.demo.active && s.demo.cov[0][0] > s.demo.cov[1][1]);
    CHECK(command_execute(&s, "demo rotate 4000", &err) == QSUR_ERR_ARG && strstr(err.msg, "DEGREES: expected"));
    fclose(s.out);
    session_free(&s);
}

/* The ostquant specs state the engine's defaults (help and docs show them). */
static void check_ostquant_defaults(void)
{
    const command *oq = command_find("ostquant");
    CHECK(oq && oq->subs);
    opt_args a;
    qsur_error err;
    CHECK_OK(opt_parse(ostq_model_opts, 0, 0, NULL, &a, "", &err), err);
    qsur_ostquant_opts o = qsur_ostquant_default();
    CHECK(a.v[0].i == o.steps && a.v[1].d == o.lr && a.v[2].d == o.lr_scale && a.v[3].i == (long)o.loss);
    CHECK(a.v[4].i == o.topk && a.v[5].i == o.batch && a.v[6].i == o.max_seqs && a.v[7].i == o.seq_len);
    CHECK(a.v[8].i == o.eval_every && a.v[9].i == o.qsur_every && a.v[10].i == o.qsur_tokens);
    CHECK(!strcmp(qsur_ostquant_loss_name(o.loss), a.v[3].s));
    /* the protocol options: choice index 0 is the "on" word of each */
#define V(key) a.v[opt_find(ostq_model_opts, key)]
    CHECK(V("qk-scale=").i == !o.learn_qk && V("ste=").i == o.ste_const && V("wquant=").i == o.no_wquant);
    CHECK(V("clip-grad=").d == o.clip_grad && V("lr-decay=").i == !o.lr_decay && V("adam-norm=").i == !o.radam);
    CHECK(V("keep=").i == !o.keep_last && V("shuffle=").i == !o.reshuffle && V("stabilize=").i == o.stabilize);
    CHECK(V("smooth=").i == o.code_smooth && V("threads=").i == o.threads);
    CHECK(!V("womi").i && !V("no-womi").i && !V("klt").i && o.womi && !o.klt);
    CHECK(!V("rhadamard").i && !o.rand_signs && !o.wquant_code && V("online-w2=").i == o.online_w2);
    CHECK(V("sov-order=").i == o.sov_code && !o.sov_code && V("sov-train=").i == o.sov_train && !o.sov_train);
#undef V
    CHECK_OK(opt_parse(ostq_layer_opts, 0, 0, NULL, &a, "", &err), err);
    qsur_ostquant_layer_opts l = qsur_ostquant_layer_default();
    CHECK(a.v[0].i == l.steps && a.v[1].d == l.lr && a.v[2].d == l.lr_scale && a.v[3].i == l.block);
    /* the weight quantizers' specs */
    CHECK_OK(opt_parse(gptq_opts, 0, 0, NULL, &a, "", &err), err);
    qsur_gptq_opts g = qsur_gptq_default();
    CHECK(a.v[0].i == g.act_order && a.v[1].i == g.static_groups && a.v[2].d == g.percdamp);
    CHECK_OK(opt_parse(quantease_opts, 0, 0, NULL, &a, "", &err), err);
    qsur_quantease_opts q = qsur_quantease_default();
    CHECK(a.v[0].d == q.outlier_frac && a.v[1].i == (q.init == QSUR_QE_INIT_GPTQ));
    CHECK_OK(opt_parse(cqe_opts, 0, 0, NULL, &a, "", &err), err);
    qsur_cqe_opts c = qsur_cqe_default();
    CHECK(a.v[0].i == c.steps && a.v[1].d == c.lr && a.v[2].i == c.band && a.v[3].i == c.rank);
}

/* Through command_execute: sub-command errors, logging from the spec. */
static void check_dispatch(void)
{
    session s;
    session_init(&s, fopen("/dev/null", "w"));
    qsur_error err;
    CHECK(command_execute(&s, "ostquant bogus", &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "ostquant: expected `ostquant layer|model|resume|status ...`, got 'bogus'"), "[%s]",
              err.msg);
    CHECK(command_execute(&s, "ostquant resume", &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "ostquant: usage: ostquant resume FILE [steps=M] [qsur-every=N] [calib=FILE] "
                               "[eval=FILE] [state=OUT] [keep-partial=0|1]"), "[%s]", err.msg);
    CHECK(command_execute(&s, "ostquant status now", &err) == QSUR_ERR_ARG && strstr(err.msg, "usage: ostquant status"));
    CHECK(command_execute(&s, "ostquant model steps=1 zz", &err) == QSUR_ERR_ARG &&
          strstr(err.msg, "unknown option 'zz'"));
    CHECK(command_execute(&s, "ostquant model steps=x", &err) == QSUR_ERR_ARG && strstr(err.msg, "bad value in 'steps=x'"));
    CHECK(command_execute(&s, "ostquant", &err) == QSUR_ERR_ARG);
    /* an entry with its own options and an optional `model` sub-command */
    CHECK(command_execute(&s, "gptq damp=2", &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "gptq: bad value in 'damp=2' (act, static-groups, damp=P)"), "[%s]", err.msg);
    CHECK(command_execute(&s, "gptq model act2", &err) == QSUR_ERR_ARG);
    CHECK_MSG(!strcmp(err.msg, "gptq: unknown option 'act2' (act, static-groups, damp=P, float-acts, layers=N)"), "[%s]", err.msg);
    CHECK(command_execute(&s, "quantease 3 4", &err) == QSUR_ERR_ARG && strstr(err.msg, "unknown option '4'"));
    CHECK(command_execute(&s, "cqe window=2", &err) == QSUR_ERR_ARG && strstr(err.msg, "needs model mode"));
    CHECK(command_execute(&s, "gptq model", &err) == QSUR_ERR_ARG && strstr(err.msg, "no model loaded"));
    CHECK(s.log.count == 0);
    fclose(s.out);
    session_free(&s);
}

int main(void)
{
    check_parsing();
    check_text();
    check_args();
    check_quant_rows();
    check_ostquant_defaults();
    check_dispatch();
    return check_done();
}
