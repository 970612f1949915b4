#ifndef KFRTRL_CLONES_H
#define KFRTRL_CLONES_H

/* KFRTRL_CLONES, put before a C function: compile it for several x86-64 instruction sets
   and pick one at load time (GCC's target_clones; the build itself targets baseline
   x86-64, SSE2, where memory-streaming row loops run at a quarter of AVX-512's width).
   The AVX-512 clone is x86-64-v4 (F, VL, BW, DQ, CD): VL gives 256-bit operations all 32
   vector registers, which the Gram matrix's 4 x 4 tiles need (KFRTRL_WIDE_TILES says
   whether that clone runs). Nothing elsewhere: one portable version, KFRTRL_WIDE_TILES 0.
   GCC contracts multiply-adds into FMAs where the clone has them (x86-64-v4), so the
   clones agree to round-off, not to the bit. The row loops that use it live in reduce.h
   and propagate.h. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define KFRTRL_CLONES __attribute__((target_clones("arch=x86-64-v4", "avx2", "default")))
#define KFRTRL_WIDE_TILES (__builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") \
                           && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd"))
#else
#define KFRTRL_CLONES
#define KFRTRL_WIDE_TILES 0
#endif

#endif
