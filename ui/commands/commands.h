/* Handlers of the command table (ui/commands/command_table.c), grouped by the file
 * that implements them. Each returns a qsur_status and fills err. */
#ifndef QSUR_UI_COMMANDS_H
#define QSUR_UI_COMMANDS_H

#include "command.h"
#include "session.h"

#define HANDLER(name) int name(session *s, int argc, char **argv, report *r, qsur_error *err)
/* a handler of an entry with typed options (command.h) */
#define OPT_HANDLER(name) int name(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err)

/* cmd_session.c */
HANDLER(cmd_help);
HANDLER(cmd_set);
extern const command set_subs[];
HANDLER(cmd_run);
HANDLER(cmd_save);
HANDLER(cmd_history);
HANDLER(cmd_echo);
HANDLER(cmd_quit);

/* cmd_layer.c */
HANDLER(cmd_load);
HANDLER(cmd_layers);
HANDLER(cmd_use);
HANDLER(cmd_info);
HANDLER(cmd_stats);
HANDLER(cmd_outliers);
HANDLER(cmd_hist);
HANDLER(cmd_heatmap);

/* cmd_quant.c */
OPT_HANDLER(cmd_quant);
extern const opt_spec quant_opts[];
HANDLER(cmd_qsur);
HANDLER(cmd_error);
HANDLER(cmd_compare);
/* cmd_tui.c */
HANDLER(cmd_tui);

/* cmd_transform.c */
OPT_HANDLER(cmd_rotate);
extern const opt_spec rotate_args[];
extern const command rotate_subs[];
extern const command scale_subs[];
HANDLER(cmd_undo);
HANDLER(cmd_redo);
HANDLER(cmd_reset);
HANDLER(cmd_stack);

/* cmd_model.c */
extern const command model_subs[];
int cmd_calib(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err);
int cmd_ppl(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err);
extern const opt_spec calib_opts[], ppl_opts[];
OPT_HANDLER(cmd_smoothquant);
extern const opt_spec smoothquant_args[];

/* cmd_wquant.c: the layer mode (typed options) and the `model` sub-command */
OPT_HANDLER(cmd_gptq);
OPT_HANDLER(cmd_quantease);
OPT_HANDLER(cmd_awq);
OPT_HANDLER(cmd_cqe);
extern const command gptq_subs[], quantease_subs[], awq_subs[], cqe_subs[];
extern const opt_spec gptq_opts[], quantease_opts[], awq_opts[], cqe_opts[];
extern const opt_spec quantease_args[], awq_args[];
/* cmd_demo.c (state: session.demo, see demo.h) */
OPT_HANDLER(cmd_demo);
extern const command demo_subs[];
extern const opt_spec demo_args[];
/* cmd_sleep.c */
OPT_HANDLER(cmd_sleep);
extern const opt_spec sleep_args[];

/* cmd_ostquant.c: sub-commands layer|model|resume|status and their options */
extern const command ostquant_subs[];
extern const opt_spec ostq_layer_opts[], ostq_model_opts[], ostq_resume_opts[];
/* cmd_export.c */
int cmd_export(session *s, int argc, char **argv, opt_args *a, report *r, qsur_error *err);
extern const opt_spec export_opts[];
/* cmd_text.c */
extern const command tokenizer_subs[];
OPT_HANDLER(cmd_tokenize);
OPT_HANDLER(cmd_detokenize);
OPT_HANDLER(cmd_generate);
extern const opt_spec text_show_opts[], generate_opts[];
/* cmd_eval.c */
OPT_HANDLER(cmd_eval);
extern const opt_spec eval_opts[];

/* Argument parsing shared by handlers: 0 on success, -1 when v is not a
 * number in [lo, hi]. */
int parse_double(const char *v, double lo, double hi, double *out);
int parse_long(const char *v, long lo, long hi, long *out);

#endif
