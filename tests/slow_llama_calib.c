/* Block-by-block calibration against the re-run reference on a 2-block model
 * of TinyLlama-1.1B's shapes in bf16: tests/test_llama_calib.c's real_shape()
 * (label slow: about a minute of CPU). */
#define CALIB_REAL_SHAPE 1
#include "test_llama_calib.c"
