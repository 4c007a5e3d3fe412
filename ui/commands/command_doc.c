/* docs/commands.md is generated from the command table by `qsur --commands-md`;
 * tests/test_docs.sh fails when the committed file drifts from the table. */
#include <stdio.h>
#include "command.h"
#include "command_doc.h"

static void doc_line(void *ctx, const char *line)
{
    fprintf(ctx, "%s\n", line);
}

void command_doc_markdown(FILE *out)
{
    fputs("# Command reference\n\n"
          "Generated from the command table (`ui/commands/command_table.c`) by `qsur --commands-md`;\n"
          "a test fails when this file and the table disagree. The same commands run at the\n"
          "prompt, in script files (`qsur -f`, `run`), in `qsur -c` strings and on the TUI's\n"
          "command line.\n\n", out);
    fputs("| command | summary |\n|---|---|\n", out);
    for (int i = 0; i < command_count; i++)
        fprintf(out, "| [`%s`](#%s) | %s |\n", command_table[i].name, command_table[i].name,
                command_table[i].summary);
    for (int i = 0; i < command_count; i++) {
        const command *c = &command_table[i];
        fprintf(out, "\n## %s\n\n```\n%s\n```\n\n%s.%s\n\n", c->name, c->usage, c->summary,
                c->flags & CMD_LOGGED ? " Recorded in the session log (replayed by `save`)." : "");
        fprintf(out, "```\n%s\n```\n", c->help);
        if (c->subs || c->opts) {
            fputs("\nSub-commands and options (from their typed specs):\n\n```\n", out);
            command_each_option_line(c, doc_line, out);
            fputs("```\n", out);
        }
    }
}
