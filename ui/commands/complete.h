/* Tab completion of a command line, from the command table: command names;
 * a command's sub-commands; at every later position the `key=` words of the
 * entry's typed options beside what its positional arguments take (its
 * words, workspace tensor names, command names, or file paths handed back to
 * the caller). */
#ifndef QSUR_UI_COMPLETE_H
#define QSUR_UI_COMPLETE_H

struct session;

/* Completion candidates for the command line `line` when the word being
 * completed starts at byte `start` and reads `text` (what Tab would offer, minus
 * file paths: for a COMPLETE_FILE argument *want_files is set to 1 and NULL is
 * returned). Returns a NULL-terminated array of strdup'ed candidates, sorted,
 * or NULL for none; free with command_candidates_free. */
char **command_candidates(const struct session *s, const char *line, int start, const char *text,
                          int *want_files);
void command_candidates_free(char **c);

#endif
