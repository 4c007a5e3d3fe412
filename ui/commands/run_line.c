/* session_run_line: split, echo, execute, report errors, redirect output. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include "command.h"
#include "progress_line.h"
#include "run_line.h"
#include "script.h"
#include "session.h"

typedef struct {
    session *s;
    run_mode mode;
    int rc; /* the last failed command's code */
} run_ctx;

static int run_piece(void *vctx, const char *cmd)
{
    run_ctx *ctx = vctx;
    session *s = ctx->s;
    if (ctx->mode == RUN_SCRIPT && s->set.echo) {
        fprintf(s->out, "qsur> %s\n", cmd);
        fflush(s->out);
    }
    qsur_error err;
    int rc = command_execute(s, cmd, &err);
    if (rc != QSUR_OK) {
        ctx->rc = rc;
        if (ctx->mode == RUN_CAPTURE) {
            fprintf(s->out, "error: %s\n", err.msg);
            return rc;
        }
        fflush(s->out);
        if (ctx->mode == RUN_SCRIPT && s->origin)
            fprintf(stderr, "%s:%d: %s\n", s->origin, s->line, err.msg);
        else
            fprintf(stderr, "%s\n", err.msg);
        if (ctx->mode == RUN_PROMPT || s->set.errexit)
            return rc;
    }
    return s->quit ? -1 : 0;
}

/* Where output went before a capture, to put back. */
typedef struct {
    FILE *mem, *old_out, *errf;
    int saved_err;
    char *buf;
    size_t len;
} capture;

static void capture_begin(session *s, capture *c)
{
    c->buf = NULL;
    c->len = 0;
    c->old_out = s->out;
    c->mem = open_memstream(&c->buf, &c->len);
    if (c->mem)
        s->out = c->mem;
    /* Anything a command writes to stderr (script errors of `run`) would
     * scribble over a full screen: catch it in a temporary file. */
    fflush(stderr);
    c->errf = tmpfile();
    c->saved_err = c->errf ? dup(STDERR_FILENO) : -1;
    if (c->saved_err >= 0)
        dup2(fileno(c->errf), STDERR_FILENO);
}

static char *capture_end(session *s, capture *c)
{
    fflush(stderr);
    if (c->saved_err >= 0) {
        dup2(c->saved_err, STDERR_FILENO);
        close(c->saved_err);
    }
    if (c->errf) {
        rewind(c->errf);
        char chunk[512];
        size_t n;
        while ((n = fread(chunk, 1, sizeof chunk, c->errf)) > 0)
            if (c->mem)
                fwrite(chunk, 1, n, c->mem);
        fclose(c->errf);
    }
    if (!c->mem)
        return NULL;
    s->out = c->old_out;
    fclose(c->mem);
    return c->buf;
}

int session_run_line(session *s, const char *line, run_mode mode, char **captured)
{
    run_ctx ctx = {s, mode, QSUR_OK};
    capture cap;
    if (captured)
        capture_begin(s, &cap);
    script_split_line(line, run_piece, &ctx);
    if (mode == RUN_PROMPT)
        progress_line_done(s);
    if (captured)
        *captured = capture_end(s, &cap);
    return ctx.rc;
}
