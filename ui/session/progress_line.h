/* Ctrl-C and progress lines for long commands.
 *
 * SIGINT sets a flag (the only global besides the session, because a signal
 * handler cannot reach the session otherwise); the engine polls it through
 * the qsur_progress callback and stops cleanly, and the prompt comes back
 * with the session intact. On a tty the callback also draws a progress line
 * on stderr. */
#ifndef QSUR_UI_PROGRESS_LINE_H
#define QSUR_UI_PROGRESS_LINE_H

#include "session.h"

/* Installs the SIGINT handler and points s->interrupted / s->progress at it. */
void progress_line_install(session *s);
/* Clears the progress line, if one was drawn. */
void progress_line_done(session *s);

#endif
