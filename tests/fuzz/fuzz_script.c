/* The script reader: continuation lines, ';' separation, quotes and '#'
 * comments (script_read_line, script_split_line), each piece then tokenized
 * and looked up as command_execute does; nothing is run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "command.h"
#include "fuzz.h"
#include "script.h"

static int piece(void *ctx, const char *cmd)
{
    (*(int *)ctx)++;
    fuzz_assert(cmd[0] != ' ' && cmd[0] != '\t' && cmd[0] != '\0', "pieces start with a word");
    char *buf = strdup(cmd);
    char *argv[64];
    qsur_error err;
    int argc = command_tokenize(buf, argv, 64, &err);
    fuzz_check_error(argc < 0 ? QSUR_ERR_ARG : QSUR_OK, &err);
    if (argc > 0)
        (void)command_find(argv[0]);
    free(buf);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *fp = fmemopen((void *)data, size, "r");
    if (!fp)
        return 0; /* fmemopen refuses size 0 on some libcs */
    char *line = NULL;
    size_t cap = 0;
    int n, lines = 0, pieces = 0;
    while ((n = script_read_line(fp, &line, &cap)) > 0) {
        lines += n;
        fuzz_assert(strchr(line, '\n') == NULL, "a logical line has no newline");
        script_split_line(line, piece, &pieces);
    }
    fuzz_assert((size_t)lines <= size, "no more lines than bytes");
    free(line);
    fclose(fp);
    return 0;
}
