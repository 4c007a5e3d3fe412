/* Layer list: the workspace's tensors, weights paired with the activations
 * that feed them when the names say so, with shape and the last known log10
 * QSUR. Enter runs `use W X` (or `use W`, `use -x X`) through the command
 * table, so the choice is logged. */
#include <curses.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "layer_pick.h"
#include "tui_panel.h"

/* Last known log10 QSUR of each layer met so far (shown in the list): the
 * panel's own data, updated from the current layer's metrics. */
typedef struct {
    char w[QSUR_NAME_MAX], x[QSUR_NAME_MAX];
    double qx, qw; /* NAN when unknown / absent */
} qsur_memo;

/* The panel's data: the list (weights paired with their activations), its
 * selection and scroll, and the QSUR memo. */
typedef struct {
    tui_layer_item *items;
    int nitems, sel, top;
    qsur_memo *memo;
    int n;
} layers_view;


static int add_item(tui *t, int *cap, const qsur_tensor *w, const qsur_tensor *x)
{
    layers_view *v = t->layers.state;
    if (v->nitems == *cap) {
        int nc = *cap ? *cap * 2 : 16;
        tui_layer_item *p = realloc(v->items, (size_t)nc * sizeof *p);
        if (!p)
            return -1;
        v->items = p;
        *cap = nc;
    }
    tui_layer_item *it = &v->items[v->nitems++];
    memset(it, 0, sizeof *it);
    if (w)
        snprintf(it->w, sizeof it->w, "%s", w->name);
    if (x)
        snprintf(it->x, sizeof it->x, "%s", x->name);
    qsur_tensor_shape_str(w ? w : x, it->shape, sizeof it->shape);
    it->matrix = (w ? w : x)->ndim == 2;
    return 0;
}

/* The list from the workspace (weights paired with activations). */
static void rebuild(tui *t)
{
    layers_view *v = t->layers.state;
    const qsur_workspace *ws = &t->s->ws;
    int cap = 0;
    free(v->items);
    v->items = NULL;
    v->nitems = 0;
    unsigned char *used = calloc((size_t)ws->count + 1, 1);
    if (!used)
        return;
    /* Weights first, each with its activation when the names pair up, or the
     * only activation with the same input width when there is exactly one. */
    for (int i = 0; i < ws->count; i++) {
        const qsur_tensor *w = ws->items[i];
        if (layer_is_activation_name(w->name) || w->ndim != 2)
            continue;
        int match = -1, same_cols = 0, last_same = -1;
        for (int j = 0; j < ws->count; j++) {
            const qsur_tensor *x = ws->items[j];
            if (j == i || x->ndim != 2 || !layer_is_activation_name(x->name) ||
                qsur_tensor_cols(x) != qsur_tensor_cols(w))
                continue;
            same_cols++;
            last_same = j;
            if (match < 0 && layer_names_pair(w->name, x->name))
                match = j;
        }
        if (match < 0 && same_cols == 1)
            match = last_same;
        if (match >= 0)
            used[match] = 1;
        used[i] = 1;
        add_item(t, &cap, w, match >= 0 ? ws->items[match] : NULL);
    }
    for (int i = 0; i < ws->count; i++)
        if (!used[i]) {
            const qsur_tensor *x = ws->items[i];
            int act = layer_is_activation_name(x->name) && x->ndim == 2;
            add_item(t, &cap, act ? NULL : x, act ? x : NULL);
        }
    free(used);
    if (v->sel >= v->nitems)
        v->sel = v->nitems > 0 ? v->nitems - 1 : 0;
}

static int item_is_current(tui *t, const tui_layer_item *it)
{
    const session *s = t->s;
    if (s->current < 0 || s->current >= s->nlayers)
        return 0;
    const layer_state *l = &s->layers[s->current];
    return !strcmp(l->w_name, it->w) && !strcmp(l->x_name, it->x);
}

static void update(tui *t, tui_panel *p)
{
    rebuild(t);
    layers_view *v = p->state;
    session *s = t->s;
    layer_metrics m;
    qsur_error err;
    if (!v || s->current < 0 || s->current >= s->nlayers)
        return;
    layer_state *l = &s->layers[s->current];
    if (layer_metrics_compute(s, l, 0, &m, &err) != QSUR_OK) /* cached: the metrics panel asked too */
        return;
    qsur_memo *e = NULL;
    for (int i = 0; i < v->n && !e; i++)
        if (!strcmp(v->memo[i].w, l->w_name) && !strcmp(v->memo[i].x, l->x_name))
            e = &v->memo[i];
    if (!e) {
        qsur_memo *grown = realloc(v->memo, (size_t)(v->n + 1) * sizeof *grown);
        if (!grown)
            return;
        v->memo = grown;
        e = &v->memo[v->n++];
        snprintf(e->w, sizeof e->w, "%s", l->w_name);
        snprintf(e->x, sizeof e->x, "%s", l->x_name);
    }
    e->qx = m.has_x ? m.qx.log10_qsur : NAN;
    e->qw = m.has_w ? m.qw.log10_qsur : NAN;
}

static void free_view(tui_panel *p)
{
    layers_view *v = p->state;
    if (v) {
        free(v->memo);
        free(v->items);
    }
    free(v);
    p->state = NULL;
}

static double memo_qsur(const layers_view *v, const tui_layer_item *it)
{
    for (int i = 0; v && i < v->n; i++)
        if (!strcmp(v->memo[i].w, it->w) && !strcmp(v->memo[i].x, it->x))
            return !isnan(v->memo[i].qx) ? v->memo[i].qx : v->memo[i].qw;
    return NAN;
}

static void draw(tui *t, tui_panel *p)
{
    layers_view *v = t->layers.state;
    tui_rect *r = &p->r;
    char title[48];
    snprintf(title, sizeof title, "layers (%d)", v->nitems);
    tui_box(t, r, title, t->focus == p);
    int h = r->h - 2, w = r->w - 2;
    if (v->nitems == 0) {
        tui_text(t, r->y + 1, r->x + 1, w, "empty: `:load FILE`");
        return;
    }
    if (v->sel < v->top)
        v->top = v->sel;
    if (v->sel >= v->top + h)
        v->top = v->sel - h + 1;
    for (int i = 0; i < h && v->top + i < v->nitems; i++) {
        const tui_layer_item *it = &v->items[v->top + i];
        char name[2 * QSUR_NAME_MAX + 4], q[16] = "";
        if (it->w[0] && it->x[0])
            snprintf(name, sizeof name, "%s+%s", it->w, it->x);
        else
            snprintf(name, sizeof name, "%s", it->w[0] ? it->w : it->x);
        double lq = memo_qsur(p->state, it);
        if (!isnan(lq))
            snprintf(q, sizeof q, "%.1f", lq);
        int sel = v->top + i == v->sel;
        int attr = (sel ? (int)A_REVERSE : 0) | (item_is_current(t, it) ? (int)A_BOLD : 0) | (it->matrix ? 0 : (int)A_DIM);
        attron(attr);
        /* "* name      shape  log10Q": the name gets what is left. */
        int qw = 7, sw = (int)strlen(it->shape) + 1, nw = w - 2 - sw - qw;
        if (nw < 6) {
            nw = w - 2 - qw;
            sw = 0;
        }
        tui_textf(t, r->y + 1 + i, r->x + 1, w, "%c %-*.*s%*s%*s", item_is_current(t, it) ? '*' : ' ', nw,
                  nw, name, sw, sw ? it->shape : "", qw, q);
        attroff(attr);
    }
}

/* A tensor name as one command word: quoted only when the tokenizer needs it. */
static void quote(const char *name, char *buf, size_t n)
{
    if (!strpbrk(name, " \t'\"#;\\")) {
        snprintf(buf, n, "%s", name);
        return;
    }
    size_t o = 0;
    buf[o++] = '"';
    for (const char *p = name; *p && o + 3 < n; p++) {
        if (*p == '"' || *p == '\\')
            buf[o++] = '\\';
        buf[o++] = *p;
    }
    buf[o++] = '"';
    buf[o] = '\0';
}

static int key(tui *t, tui_panel *p, int ch)
{
    layers_view *v = t->layers.state;
    (void)p;
    switch (ch) {
    case KEY_UP:
    case 'k':
        if (v->sel > 0)
            v->sel--;
        return 1;
    case KEY_DOWN:
    case 'j':
        if (v->sel + 1 < v->nitems)
            v->sel++;
        return 1;
    case KEY_HOME:
        v->sel = 0;
        return 1;
    case KEY_END:
        v->sel = v->nitems > 0 ? v->nitems - 1 : 0;
        return 1;
    case '\r':
    case '\n':
    case KEY_ENTER:
        if (v->sel < v->nitems) {
            const tui_layer_item *it = &v->items[v->sel];
            char w[2 * QSUR_NAME_MAX + 3], x[2 * QSUR_NAME_MAX + 3];
            quote(it->w, w, sizeof w);
            quote(it->x, x, sizeof x);
            tui_dist_forget_channel(t); /* the new layer starts on its largest channel */
            if (it->w[0] && it->x[0])
                tui_exec_fmt(t, "use %s %s", w, x);
            else if (it->w[0])
                tui_exec_fmt(t, "use %s", w);
            else
                tui_exec_fmt(t, "use -x %s", x);
        }
        return 1;
    default:
        return 0;
    }
}

void tui_panel_layers_init(tui_panel *p)
{
    p->title = "layers";
    p->visible = 1;
    p->draw = draw;
    p->key = key;
    p->update = update;
    p->free_state = free_view;
    p->state = calloc(1, sizeof(layers_view));
}
