/* Every n in 1..4096 that has a true Hadamard plan (Sylvester/Paley block):
 * R^T R = I checked by random probes (see hadamard_probe.h). Slow only because
 * building all Paley blocks up to order 4092 touches ~2e9 entries. */
#include "check.h"
#include "hadamard_probe.h"

int main(void)
{
    CHECK(hadamard_probe_all(4096) > 600);
    return check_done();
}
