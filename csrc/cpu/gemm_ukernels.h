// csrc/cpu/gemm_ukernels.h — the register-blocked micro-kernels of csrc/cpu/gemm.cpp: one
// MR x NR tile of C from one packed A micro-panel and one packed B micro-panel. The driver
// (packing, blocking, threads) stays in gemm.cpp; these are the only loops that run at the
// FMA units' speed.
#pragma once

#include "common.h"

#if MINITL_X86_64
#include <immintrin.h>
#endif

namespace minitl::cpu::ukernels {

// ---------------------------------------------------------------------------------------------
// micro-kernels
//
// c (MR x NR, leading dimension ldc) = (accumulate ? c : 0) + a_panel @ b_panel, where
// a_panel is kc x MR (k-major) and b_panel is kc x NR (k-major), both packed and aligned.

// Portable: fixed trip counts let the compiler keep acc in vector registers on any ISA.
template <index_t MR, index_t NR>
inline void ukernel_generic(index_t kc, const float* __restrict a, const float* __restrict b,
                     float* __restrict c, index_t ldc, bool accumulate) {
    float acc[MR][NR] = {};
    for (index_t p = 0; p < kc; ++p) {
        for (index_t i = 0; i < MR; ++i) {
            const float ai = a[i];
            for (index_t j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
        }
        a += MR;
        b += NR;
    }
    for (index_t i = 0; i < MR; ++i)
        for (index_t j = 0; j < NR; ++j)
            c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0.0f) + acc[i][j];
}

#if MINITL_X86_64
// One row i of the tile, for vector type V with intrinsics P##_... (_mm256 or _mm512) and W
// lanes. Accumulators are named variables, a pair per row, rather than an array: GCC keeps
// arrays of vectors on the stack and reloads them every k step.
#define MINITL_ROWS_6(X, ...) \
    X(0, __VA_ARGS__); X(1, __VA_ARGS__); X(2, __VA_ARGS__); X(3, __VA_ARGS__); \
    X(4, __VA_ARGS__); X(5, __VA_ARGS__)
#define MINITL_ROWS_12(X, ...) \
    MINITL_ROWS_6(X, __VA_ARGS__); X(6, __VA_ARGS__); X(7, __VA_ARGS__); X(8, __VA_ARGS__); \
    X(9, __VA_ARGS__); X(10, __VA_ARGS__); X(11, __VA_ARGS__)
#define MINITL_DECLARE(i, V, P, W) V c##i##_0 = P##_setzero_ps(), c##i##_1 = P##_setzero_ps()
// The C tile is loaded only after the k loop, too late for out-of-order execution to hide an
// L3 miss; touching its rows first lets the loads land while the FMAs run.
#define MINITL_PREFETCH(i, V, P, W)                                                   \
    _mm_prefetch(reinterpret_cast<const char*>(c + (i) * ldc), _MM_HINT_T0);          \
    _mm_prefetch(reinterpret_cast<const char*>(c + (i) * ldc + 2 * (W) - 1), _MM_HINT_T0)
#define MINITL_FMA(i, V, P, W)                  \
    do {                                        \
        const V ai = P##_set1_ps(a[i]);         \
        c##i##_0 = P##_fmadd_ps(ai, b0, c##i##_0); \
        c##i##_1 = P##_fmadd_ps(ai, b1, c##i##_1); \
    } while (0)
#define MINITL_STORE(i, V, P, W)                                     \
    do {                                                             \
        float* row = c + (i) * ldc;                                  \
        if (accumulate) {                                            \
            c##i##_0 = P##_add_ps(c##i##_0, P##_loadu_ps(row));      \
            c##i##_1 = P##_add_ps(c##i##_1, P##_loadu_ps(row + (W))); \
        }                                                            \
        P##_storeu_ps(row, c##i##_0);                                \
        P##_storeu_ps(row + (W), c##i##_1);                          \
    } while (0)

// 6 x 16: 12 ymm accumulators + 2 for B + 1 broadcast = 15 of 16 registers. Per k step:
// 2 aligned loads of B, 6 broadcasts of A, 12 FMAs (6 cycles on two FMA pipes). The k loop is
// unrolled by 4 by hand: with one step per iteration the loop's own pointer updates and
// branch sit between every 12 FMAs, and a 6x16 tile held in L1 ran at 76 GFLOP/s on one Zen 3
// core; unrolled, 89 (GCC does not unroll it at -O3 on its own).
__attribute__((target("avx2,fma"))) inline void ukernel_avx2(
    index_t kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
    index_t ldc, bool accumulate) {
    MINITL_ROWS_6(MINITL_PREFETCH, __m256, _mm256, 8);
    MINITL_ROWS_6(MINITL_DECLARE, __m256, _mm256, 8);
    index_t p = 0;
    for (; p + 4 <= kc; p += 4) {
        for (index_t u = 0; u < 4; ++u) {  // fixed trip count: fully unrolled at -O2 and up
            const __m256 b0 = _mm256_load_ps(b + 16 * u), b1 = _mm256_load_ps(b + 16 * u + 8);
            const float* const au = a + 6 * u;
#define MINITL_FMA_U(i, V, P, W)                       \
    do {                                               \
        const V ai = P##_set1_ps(au[i]);               \
        c##i##_0 = P##_fmadd_ps(ai, b0, c##i##_0);     \
        c##i##_1 = P##_fmadd_ps(ai, b1, c##i##_1);     \
    } while (0)
            MINITL_ROWS_6(MINITL_FMA_U, __m256, _mm256, 8);
#undef MINITL_FMA_U
        }
        a += 24;
        b += 64;
    }
    for (; p < kc; ++p) {
        const __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        MINITL_ROWS_6(MINITL_FMA, __m256, _mm256, 8);
        a += 6;
        b += 16;
    }
    MINITL_ROWS_6(MINITL_STORE, __m256, _mm256, 8);
}

// 12 x 32: 24 zmm accumulators + 2 for B + 1 broadcast = 27 of 32 registers. Per k step:
// 2 aligned loads of B, 12 broadcasts of A, 24 FMAs. Not unrolled over k like the AVX2
// kernel: unrolled by 4 (with or without prefetching B ahead) it measured 80-83 GFLOP/s
// against 95-96 rolled at 2048^3 on one Ice Lake core, likely because the 4 steps' B loads
// hoisted together leave too few of the 32 registers for the 24 accumulators.
__attribute__((target("avx512f"))) inline void ukernel_avx512(
    index_t kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
    index_t ldc, bool accumulate) {
    MINITL_ROWS_12(MINITL_PREFETCH, __m512, _mm512, 16);
    MINITL_ROWS_12(MINITL_DECLARE, __m512, _mm512, 16);
    for (index_t p = 0; p < kc; ++p) {
        const __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
        MINITL_ROWS_12(MINITL_FMA, __m512, _mm512, 16);
        a += 12;
        b += 32;
    }
    MINITL_ROWS_12(MINITL_STORE, __m512, _mm512, 16);
}
#undef MINITL_ROWS_6
#undef MINITL_ROWS_12
#undef MINITL_DECLARE
#undef MINITL_PREFETCH
#undef MINITL_FMA
#undef MINITL_STORE
#endif  // MINITL_X86_64

}  // namespace minitl::cpu::ukernels
