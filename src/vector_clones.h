/* Internal (not installed): how hot kernels get wider vectors without
 * -march flags. The build targets baseline x86-64 (SSE2); on x86-64 Linux GCC
 * also emits an AVX2 copy of a kernel marked QSUR_VECTOR_CLONES and picks one
 * at load time (ifunc), doubling the vector width where the CPU has it. Other
 * compilers/targets get the plain one. Helpers called from such a kernel are
 * marked QSUR_INLINE (forced inline) so each clone compiles them for its own
 * instruction set. */
#ifndef QSUR_VECTOR_CLONES_H
#define QSUR_VECTOR_CLONES_H

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define QSUR_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define QSUR_VECTOR_CLONES
#endif

#if defined(__GNUC__)
#define QSUR_INLINE inline __attribute__((always_inline))
#else
#define QSUR_INLINE inline
#endif

#endif
