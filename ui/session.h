/* The session: the one piece of mutable state the program has (owned by the UI).
 * Commands read and change it; nothing else does. */
#ifndef QSUR_UI_SESSION_H
#define QSUR_UI_SESSION_H

#include "qsur/workspace.h"

typedef struct {
    qsur_workspace ws;
} qsur_session;

void session_init(qsur_session *s);
void session_free(qsur_session *s);

#endif
