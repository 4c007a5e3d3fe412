#include "session.h"

void session_init(qsur_session *s)
{
    qsur_workspace_init(&s->ws);
}

void session_free(qsur_session *s)
{
    qsur_workspace_clear(&s->ws);
}
