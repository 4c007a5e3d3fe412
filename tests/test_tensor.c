/* Tensor allocation, shape views and the workspace's ownership rules. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "check.h"
#include "qsur/tensor.h"
#include "qsur/workspace.h"

int main(void)
{
    qsur_error err;
    qsur_tensor *t = NULL;
    int64_t shape[3] = {2, 3, 4};
    CHECK_OK(qsur_tensor_new(&t, "a", 3, shape, &err), err);
    CHECK(qsur_tensor_numel(t) == 24);
    CHECK(qsur_tensor_rows(t) == 6 && qsur_tensor_cols(t) == 4);
    char s[64];
    qsur_tensor_shape_str(t, s, sizeof s);
    CHECK(strcmp(s, "2x3x4") == 0);
    CHECK(((uintptr_t)t->data & 63) == 0);

    /* A shape whose element count overflows must fail cleanly, not wrap. */
    qsur_tensor *big = NULL;
    int64_t huge[2] = {INT64_C(1) << 40, INT64_C(1) << 40};
    CHECK(qsur_tensor_new(&big, "huge", 2, huge, &err) == QSUR_ERR_NOMEM && big == NULL);
    CHECK(strstr(err.msg, "huge") != NULL);

    float v[4] = {1, 2, NAN, 4};
    CHECK(qsur_find_nonfinite(v, 4) == 2);
    CHECK(qsur_find_nonfinite(v, 2) == -1);

    qsur_workspace ws;
    qsur_workspace_init(&ws);
    CHECK_OK(qsur_workspace_put(&ws, t, &err), err);
    qsur_tensor *t2 = NULL;
    CHECK_OK(qsur_tensor_new2(&t2, "a", 5, 5, &err), err);
    CHECK_OK(qsur_workspace_put(&ws, t2, &err), err); /* replaces "a" */
    CHECK(ws.count == 1 && qsur_workspace_find(&ws, "a") == t2);
    CHECK(qsur_workspace_find(&ws, "b") == NULL);
    CHECK(qsur_workspace_remove(&ws, "a") == 0 && ws.count == 0);
    CHECK(qsur_workspace_remove(&ws, "a") == -1);
    qsur_workspace_clear(&ws);
    return check_done();
}
