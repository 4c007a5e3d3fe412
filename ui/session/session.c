/* Session lifetime, the command log and seeds. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "layer_state.h"
#include "model_session.h"
#include "model_state.h"
#include "qsur/llama.h"
#include "session.h"
#include "text_state.h"
#include "qsur/llama_rotations.h"

void session_init(session *s, FILE *out)
{
    memset(s, 0, sizeof *s);
    qsur_workspace_init(&s->ws);
    s->out = out;
    s->set.format = FORMAT_HUMAN;
    s->set.errexit = 1;
    s->set.outlier_k = 8.0;
    s->set.qsur_alpha = 0.99;
    s->set.seed = 1;
    s->set.device = -1;
    s->set.error_tokens = -1;
    s->wq = qsur_quant_default();
    s->aq = qsur_quant_default();
    s->kvq = qsur_quant_default();
    s->kvq.bits = 16;
    s->current = -1;
}

void session_free(session *s)
{
    for (int i = 0; i < s->nlayers; i++)
        layer_state_free(&s->layers[i]);
    free(s->layers);
    for (int i = 0; i < s->log.count; i++)
        free(s->log.lines[i]);
    free(s->log.lines);
    free(s->log_override);
    model_session_free(s);
    qsur_workspace_clear(&s->ws);
    text_state_free(s->text);
    memset(s, 0, sizeof *s);
}

void session_log_append(session *s, const char *line)
{
    if (s->log.count == s->log.cap) {
        int cap = s->log.cap ? s->log.cap * 2 : 32;
        char **p = realloc(s->log.lines, (size_t)cap * sizeof *p);
        if (!p)
            return; /* losing a log line is better than losing the session */
        s->log.lines = p;
        s->log.cap = cap;
    }
    char *copy = strdup(line);
    if (copy)
        s->log.lines[s->log.count++] = copy;
}

void session_log_as(session *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *line = NULL;
    if (vasprintf(&line, fmt, ap) < 0)
        line = NULL;
    va_end(ap);
    free(s->log_override);
    s->log_override = line;
}

unsigned long long session_next_seed(session *s)
{
    return s->set.seed++;
}

plot_style plot_style_for(const session *s)
{
    plot_style st;
    st.width = plot_terminal_width();
    st.height = PLOT_DEFAULT_HEIGHT;
    st.utf8 = s->set.utf8;
    st.color = s->set.color && s->set.format == FORMAT_HUMAN;
    return st;
}

int session_use_gpu(session *s)
{
    if (s->set.device == 0)
        return 0;
    if (!s->gpu_probed) {
        qsur_gpu_probe(&s->gpu_info);
        s->gpu_probed = 1;
    }
    return s->gpu_info.count > 0;
}

int session_gpu_for_weights(session *s)
{
    return session_use_gpu(s) && qsur_gpu_quant_supported(&s->wq, NULL, 0);
}
