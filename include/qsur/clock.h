/* Wall-clock seconds for timers (CLOCK_MONOTONIC: never jumps with the date). */
#ifndef QSUR_CLOCK_H
#define QSUR_CLOCK_H

double qsur_seconds(void);

#endif
