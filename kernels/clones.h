#ifndef KFRTRL_CLONES_H
#define KFRTRL_CLONES_H

/* KFRTRL_CLONES, put before a C function: compile it for several x86-64 instruction sets
   and pick one at load time (GCC's target_clones; the build itself targets baseline
   x86-64, SSE2, where memory-streaming row loops run at a quarter of AVX-512's width).
   Nothing elsewhere: one portable version. No FMA in any clone, so all of them round
   alike. The row loops that use it live in reduce.h and propagate.h. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define KFRTRL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KFRTRL_CLONES
#endif

#endif
