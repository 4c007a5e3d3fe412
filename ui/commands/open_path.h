/* `qsur FILE|DIR`: what opening a path on the command line does. */
#ifndef QSUR_UI_OPEN_PATH_H
#define QSUR_UI_OPEN_PATH_H

#include "qsur/error.h"

struct session;

/* A directory or a llama2.c checkpoint is `model load`ed; a layer file
 * (.npy, .safetensors) is `load`ed and, when the workspace then holds one
 * tensor or one weight/activation pair (layer_pick_obvious), that layer is
 * selected with `use`; a .qs file is run as a script. Everything goes
 * through command_execute, so the session log replays it. Returns QSUR_OK
 * or an error code with err filled ("PATH: message" or "CMD: message"). */
int session_open_path(struct session *s, const char *path, qsur_error *err);

#endif
