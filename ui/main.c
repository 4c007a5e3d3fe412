/* qsur entry point (placeholder until the command table lands). */
#include <stdio.h>
int main(void)
{
    puts("qsur");
    return 0;
}
