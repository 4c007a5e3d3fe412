/* Layers recognised from tensor names and shapes (see layer_pick.h). */
#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include "layer_pick.h"

int layer_is_activation_name(const char *name)
{
    const char *base = strrchr(name, '.');
    base = base ? base + 1 : name;
    if ((base[0] == 'X' || base[0] == 'x') &&
        (base[1] == '\0' || base[1] == '_' || isdigit((unsigned char)base[1])))
        return 1;
    return strstr(base, "input") || strstr(base, "act") || strstr(base, "inp") || strstr(base, "calib");
}

int layer_names_pair(const char *w, const char *x)
{
    size_t n = strlen(w);
    if (n != strlen(x))
        goto words;
    /* identical except one W/w that is X/x in the activation */
    int diff = 0, ok = 1;
    for (size_t i = 0; i < n && ok; i++) {
        if (w[i] == x[i])
            continue;
        diff++;
        ok = (w[i] == 'W' && x[i] == 'X') || (w[i] == 'w' && x[i] == 'x');
    }
    if (ok && diff == 1)
        return 1;
words:;
    static const char *const from[] = {"weight", "weight", "weight", "weight"};
    static const char *const to[] = {"input", "act", "x", "activation"};
    for (int k = 0; k < 4; k++) {
        const char *p = strstr(w, from[k]);
        if (!p)
            continue;
        size_t pre = (size_t)(p - w), fl = strlen(from[k]), tl = strlen(to[k]);
        if (strlen(x) == n - fl + tl && !strncmp(x, w, pre) && !strncmp(x + pre, to[k], tl) &&
            !strcmp(x + pre + tl, p + fl))
            return 1;
    }
    return 0;
}

int layer_pick_obvious(qsur_tensor *const *t, int count, char *w, char *x, size_t n)
{
    w[0] = x[0] = '\0';
    if (count == 1) {
        int act = t[0]->ndim == 2 && layer_is_activation_name(t[0]->name);
        snprintf(act ? x : w, n, "%s", t[0]->name);
        return 1;
    }
    if (count != 2)
        return 0;
    for (int i = 0; i < 2; i++) {
        const qsur_tensor *a = t[i], *b = t[1 - i];
        if (a->ndim == 2 && b->ndim == 2 && !layer_is_activation_name(a->name) &&
            layer_is_activation_name(b->name) && qsur_tensor_cols(a) == qsur_tensor_cols(b)) {
            snprintf(w, n, "%s", a->name);
            snprintf(x, n, "%s", b->name);
            return 1;
        }
    }
    return 0;
}
