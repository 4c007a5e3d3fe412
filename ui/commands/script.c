/* Script files: comments, continuation lines, ';'-separated commands, errexit. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "run_line.h"
#include "script.h"
#include "session.h"

int script_split_line(const char *line, int (*fn)(void *ctx, const char *cmd), void *ctx)
{
    size_t n = strlen(line);
    char *piece = malloc(n + 1);
    if (!piece)
        return QSUR_ERR_NOMEM;
    size_t len = 0;
    char quote = 0;
    int rc = 0;
    for (size_t i = 0;; i++) {
        char ch = line[i];
        int end = ch == '\0' || (!quote && ch == '#');
        if (end || (!quote && ch == ';')) {
            piece[len] = '\0';
            const char *p = piece;
            while (*p == ' ' || *p == '\t')
                p++;
            if (*p) {
                rc = fn(ctx, p);
                if (rc)
                    break;
            }
            len = 0;
            if (end)
                break;
            continue;
        }
        if (quote) {
            if (ch == '\\' && quote == '"' && line[i + 1]) {
                piece[len++] = ch;
                ch = line[++i];
            } else if (ch == quote) {
                quote = 0;
            }
        } else if (ch == '\'' || ch == '"') {
            quote = ch;
        }
        piece[len++] = ch;
    }
    free(piece);
    return rc;
}

int script_read_line(FILE *fp, char **buf, size_t *cap)
{
    size_t len = 0;
    int lines = 0;
    char *phys = NULL;
    size_t pcap = 0;
    ssize_t got;
    while ((got = getline(&phys, &pcap, fp)) > 0) {
        lines++;
        while (got > 0 && (phys[got - 1] == '\n' || phys[got - 1] == '\r'))
            phys[--got] = '\0';
        int cont = got > 0 && phys[got - 1] == '\\';
        if (cont)
            phys[--got] = '\0';
        if (len + (size_t)got + 2 > *cap) {
            size_t ncap = (len + (size_t)got + 2) * 2;
            char *nb = realloc(*buf, ncap);
            if (!nb)
                break;
            *buf = nb;
            *cap = ncap;
        }
        memcpy(*buf + len, phys, (size_t)got);
        len += (size_t)got;
        (*buf)[len] = '\0';
        if (!cont)
            break;
        (*buf)[len++] = ' ';
        (*buf)[len] = '\0';
    }
    free(phys);
    return lines;
}

int script_run_stream(session *s, FILE *fp, const char *origin)
{
    const char *saved_origin = s->origin;
    int saved_line = s->line;
    s->origin = origin;
    s->line = 0;
    int last_rc = QSUR_OK;
    char *buf = NULL;
    size_t cap = 0;
    int n;
    while (!s->quit && (n = script_read_line(fp, &buf, &cap)) > 0) {
        int start = s->line + 1;
        s->line += n;
        int line_after = s->line;
        s->line = start; /* messages name the line where the command starts */
        int rc = session_run_line(s, buf, RUN_SCRIPT, NULL);
        s->line = line_after;
        if (rc != QSUR_OK)
            last_rc = rc;
        if (rc != QSUR_OK && s->set.errexit)
            break;
    }
    if (ferror(fp) && !s->quit) { /* not a silent success: the rest was never read */
        fflush(s->out);
        fprintf(stderr, "%s:%d: cannot read on: %s\n", origin, s->line + 1, strerror(errno));
        last_rc = QSUR_ERR_IO;
    }
    free(buf);
    s->origin = saved_origin;
    s->line = saved_line;
    return last_rc;
}

int script_run_file(session *s, const char *path, qsur_error *err)
{
    if (s->depth >= 16)
        return qsur_fail(err, QSUR_ERR_ARG, "%s: scripts nested more than 16 deep (does it run itself?)", path);
    FILE *fp = fopen(path, "r");
    if (!fp)
        return qsur_fail(err, QSUR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(fp);
        return qsur_fail(err, QSUR_ERR_IO, "%s: is a directory (expected a script of commands)", path);
    }
    s->depth++;
    int rc = script_run_stream(s, fp, path);
    s->depth--;
    fclose(fp);
    if (rc != QSUR_OK)
        return qsur_fail(err, rc, "%s: stopped at an error (see above)", path);
    return QSUR_OK;
}

int script_run_string(session *s, const char *text, const char *origin)
{
    FILE *fp = fmemopen((void *)text, strlen(text), "r");
    if (!fp) {
        fprintf(stderr, "%s: cannot read command string\n", origin);
        return QSUR_ERR_IO;
    }
    int rc = script_run_stream(s, fp, origin);
    fclose(fp);
    return rc;
}
