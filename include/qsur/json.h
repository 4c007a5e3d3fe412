/* A small strict JSON parser (RFC 8259) with a tiny DOM, for the headers of
 * safetensors files and for HF config.json / model.safetensors.index.json.
 *
 * Strict: no comments, no trailing commas, no NaN/Infinity literals, no raw
 * control characters in strings, no \u0000, no duplicate keys in an object,
 * nothing but whitespace after the value, nesting depth at most 64.
 * Numbers keep their exact int64 value when the literal is an integer that
 * fits (is_int), and a double in every case. Strings are UTF-8, NUL-ended. */
#ifndef QSUR_JSON_H
#define QSUR_JSON_H

#include <stddef.h>
#include <stdint.h>
#include "qsur/error.h"

typedef enum {
    QSUR_JSON_NULL = 0,
    QSUR_JSON_BOOL,
    QSUR_JSON_NUMBER,
    QSUR_JSON_STRING,
    QSUR_JSON_ARRAY,
    QSUR_JSON_OBJECT
} qsur_json_type;

typedef struct qsur_json qsur_json;
struct qsur_json {
    qsur_json_type type;
    int boolean;          /* BOOL */
    double number;        /* NUMBER */
    int is_int;           /* NUMBER: literal is an integer that fits int64 */
    int64_t integer;      /* NUMBER with is_int */
    char *string;         /* STRING (owned) */
    int count;            /* ARRAY / OBJECT: number of items */
    qsur_json **items;    /* ARRAY / OBJECT values, in file order */
    char **keys;          /* OBJECT keys, parallel to items */
};

/* Parses text[0..len). `what` (a file name) starts every error message,
 * which also gives the byte offset of the problem. */
int qsur_json_parse(const char *text, size_t len, const char *what, qsur_json **out,
                    qsur_error *err);
/* Reads a whole file and parses it. */
int qsur_json_parse_file(const char *path, qsur_json **out, qsur_error *err);
void qsur_json_free(qsur_json *j);

/* Object member by key, or NULL (also NULL when obj is not an object). */
const qsur_json *qsur_json_get(const qsur_json *obj, const char *key);
/* Typed lookups: return 0 and set *out, or -1 when missing / wrong type. */
int qsur_json_get_int(const qsur_json *obj, const char *key, int64_t *out);
int qsur_json_get_bool(const qsur_json *obj, const char *key, int *out);
const char *qsur_json_get_string(const qsur_json *obj, const char *key);
const char *qsur_json_type_name(qsur_json_type t);

#endif
