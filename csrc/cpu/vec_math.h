// csrc/cpu/vec_math.h — math the compiler can vectorise, for the element-wise and row-wise
// kernels (gelu.cpp, and any kernel that needs an exp inside an `omp simd` loop).
//
// numba and a plain std::exp loop call libm once per element (~4 ns); the polynomial here is
// straight-line code that GCC turns into AVX2 or AVX-512 instructions. A kernel's loop body is
// written once as a MINITL_SIMD_BODY function and MINITL_SIMD_DISPATCH(body) compiles it three
// times (AVX-512F, AVX2, each with FMA; the baseline) and defines body_simd(...), which runs
// the variant isa() picks (isa.h: the CPU's widest, capped by MINITL_CPU_ISA) — the binary
// itself stays generic x86-64:
//
//     MINITL_SIMD_BODY void scale_block(const float* x, float* y, index_t n, float s) {
//     #pragma omp simd
//         for (index_t i = 0; i < n; ++i) y[i] = s * x[i];
//     }
//     MINITL_SIMD_DISPATCH(scale_block)
//     ...  scale_block_simd(x, y, n, 2.0f);
//
// The body and every helper it calls must be always-inline (MINITL_SIMD_BODY,
// MINITL_SIMD_INLINE): a call left out of line would run the baseline code and stop the loop
// from vectorising.
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>

#include "common.h"
#include "isa.h"

#define MINITL_SIMD_INLINE inline __attribute__((always_inline))
#define MINITL_SIMD_BODY static MINITL_SIMD_INLINE

#if MINITL_X86_64 && defined(__GNUC__)
#define MINITL_SIMD_DISPATCH(body)                                                             \
    template <typename... A>                                                                   \
    __attribute__((target("avx512f,avx2,fma"))) void body##_avx512(A&&... a) {                 \
        body(std::forward<A>(a)...);                                                           \
    }                                                                                          \
    template <typename... A>                                                                   \
    __attribute__((target("avx2,fma"))) void body##_avx2(A&&... a) {                           \
        body(std::forward<A>(a)...);                                                           \
    }                                                                                          \
    template <typename... A>                                                                   \
    void body##_generic(A&&... a) {                                                            \
        body(std::forward<A>(a)...);                                                           \
    }                                                                                          \
    template <typename... A>                                                                   \
    void body##_simd(A&&... a) {                                                               \
        switch (::minitl::cpu::isa()) {                                                        \
            case ::minitl::cpu::Isa::Avx512: body##_avx512(std::forward<A>(a)...); return;     \
            case ::minitl::cpu::Isa::Avx2: body##_avx2(std::forward<A>(a)...); return;         \
            default: body##_generic(std::forward<A>(a)...); return;                            \
        }                                                                                      \
    }
#else
#define MINITL_SIMD_DISPATCH(body)   \
    template <typename... A>         \
    void body##_simd(A&&... a) {     \
        body(std::forward<A>(a)...); \
    }
#endif

namespace minitl::cpu {

// e^t for t <= 0 (every caller's range): Cephes' expf polynomial on r = t - k ln 2, times 2^k
// put straight into the exponent bits; below -87.3 (e^-87.3 ~ 1e-38, the float floor) it is
// 0, as expf underflows.
MINITL_SIMD_INLINE float exp_nonpositive(float t0) {
    const float t = t0 > -87.3f ? t0 : -87.3f;
    // round to nearest by adding and removing 1.5 * 2^23 (no floor call: branch-free, and
    // vectorisable on plain SSE2 too)
    const float k = (t * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    const float r = t - k * 0.693359375f - k * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const std::int32_t bits = (static_cast<std::int32_t>(k) + 127) << 23;
    float scale;
    std::memcpy(&scale, &bits, sizeof scale);
    return t0 > -87.3f ? p * scale : 0.0f;  // a select, not a branch
}

}  // namespace minitl::cpu
