/* The session: the one piece of mutable state the program has (owned by the UI).
 * Commands read and change it; nothing else does. */
#ifndef QSUR_UI_SESSION_H
#define QSUR_UI_SESSION_H

#include <signal.h>
#include <stdio.h>
#include "qsur/backend.h"
#include "qsur/progress.h"
#include "qsur/quant.h"
#include "qsur/workspace.h"
#include "demo.h"
#include "report.h"

typedef struct {
    report_format format;      /* set format human|json */
    int errexit;               /* set errexit on|off (scripts stop at the first error) */
    int echo;                  /* set echo on|off: scripts print each command before it runs */
    int color;                 /* ANSI colour allowed (tty and no NO_COLOR) */
    int utf8;                  /* the locale is UTF-8: block characters allowed */
    int progress;              /* draw progress lines (stderr is a tty) */
    double outlier_k;          /* outlier: absmax > k * median absmax */
    double qsur_alpha;         /* confidence level of the QSUR ellipsoid */
    int qsur_asym;             /* QSUR cube: 0 symmetric (default), 1 asymmetric */
    int qsur_method;           /* qsur_method: how the original covariance's log-det is found */
    int hist_bins;             /* 0 = automatic */
    long error_tokens;         /* tokens for the layer output error: -1 auto, 0 all, N at most N */
    unsigned long long seed;   /* next seed for commands given none */
    int device;                /* set device: -1 auto (gpu when one is usable), 0 cpu, 1 gpu */
} session_settings;

/* The command log: state-changing commands in the order they succeeded, in the
 * canonical form that replays them (explicit seeds, absolute paths). */
typedef struct {
    char **lines;
    int count, cap;
} session_log;

typedef struct session {
    qsur_workspace ws;
    session_settings set;
    session_log log;
    qsur_quant_spec wq, aq;    /* weight and activation quantizers */
    qsur_quant_spec kvq;       /* KV-cache quantizer of the model (bits 16 = off) */
    qsur_quant_spec aoq;       /* wo's input (`quant ao:...`, e.g. per head); bits 0:
                                  the same as aq (its bits always follow aq's) */
    int online_w2;             /* 1: rotate model / ostquant model keep the online Hadamard
                                  before w2 with float activations too (`quant online-w2=on`,
                                  the paper presets); 0: only with quantized activations */
    struct qsur_llama *model;  /* the loaded model (`model load`), or NULL; owned */
    struct qsur_llama_rotations *model_rot; /* online Hadamards the model's hooks point at
                                              (set by `ostquant model`), owned, or NULL */
    char model_path[4096];     /* where it came from, for reports and export */
    struct model_state *mstate; /* rotations, calibration, quantization of the model (model_state.h) */
    struct layer_state *layers; /* one per layer the user has selected (see layer_state.h) */
    int nlayers, layers_cap;
    int current;               /* index into layers, -1 when none */
    FILE *out;                 /* where command results go */
    const char *origin;        /* script name for messages, NULL at the prompt */
    int line;                  /* line in origin */
    int quit;                  /* set by `quit` */
    int depth;                 /* nesting of `run` (guards recursion) */
    char *log_override;        /* canonical form of the running command, if the handler set one */
    volatile sig_atomic_t *interrupted; /* set by the SIGINT handler, cleared before each command */
    qsur_progress progress;    /* progress callback handed to the engine */
    /* an OSTQuant training in progress, for the live views the progress
     * callbacks draw (REPL lines, the TUI's table): set by `ostquant
     * model|resume` around qsur_ostquant_train, NULL otherwise */
    const struct qsur_ostquant *training;
    int training_shown;        /* QSUR tables of `training` the REPL has printed */
    demo_state demo;           /* the `demo` teaching model (zeroed: not started) */
    /* The full-screen front end `tui` opens: set by main.c, which knows the
     * front ends (the command layer below them must not); NULL: none. */
    int (*open_tui)(struct session *s, qsur_error *err);
    /* Where text that comes in pieces goes (`generate` streams tokens): set
     * by a front end that shows it elsewhere (the TUI's output panel while
     * the TUI runs; NULL text starts a new line); NULL: straight to out. */
    void (*stream)(struct session *s, const char *text);
    struct text_state *text;   /* tokenizer and tokenized-text cache (text_state.h), or NULL */
    int gpu_probed;            /* gpu_info is filled (probed once, when first needed) */
    qsur_gpu_info gpu_info;
} session;

void session_init(session *s, FILE *out);
/* 1 when whole-model work (ppl) runs on the GPU: `set device gpu`, or auto
 * with a usable GPU. Probes the GPU once. */
int session_use_gpu(session *s);
/* Weight passes (RTN, GPTQ) go to the GPU when one is in use and its kernels
 * implement the weight quantizer (sym-full and other clip searches run on the
 * CPU rather than give other numbers there). */
int session_gpu_for_weights(session *s);
void session_free(session *s);

/* Record the canonical form of the running command (printf style); an empty
 * string keeps a state-changing command out of the log (display settings). */
void session_log_as(session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void session_log_append(session *s, const char *line);

/* Next seed for a command given none (logged explicitly so replays match). */
unsigned long long session_next_seed(session *s);

/* Style for a command's report: terminal width, the session's utf8, colour only
 * when s->set.color and human output (JSON text never carries escapes). */
plot_style plot_style_for(const session *s);

#endif
