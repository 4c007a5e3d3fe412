#ifndef QSUR_UI_COMMAND_DOC_H
#define QSUR_UI_COMMAND_DOC_H
#include <stdio.h>
/* Writes the Markdown command reference (docs/commands.md) from the table. */
void command_doc_markdown(FILE *out);
#endif
