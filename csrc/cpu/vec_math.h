// csrc/cpu/vec_math.h — math the compiler can vectorise, for the element-wise and row-wise
// kernels (gelu.cpp, and any kernel that needs an exp inside an `omp simd` loop).
//
// numba and a plain std::exp loop call libm once per element (~4 ns); the polynomial here is
// straight-line code that GCC turns into AVX2 or AVX-512 instructions inside functions marked
// MINITL_CLONES, which the loader resolves to the widest ISA the CPU has (target_clones): the
// binary itself stays generic x86-64.
#pragma once

#include <cstdint>
#include <cstring>

#include "common.h"

#if MINITL_X86_64 && defined(__GNUC__) && !defined(__clang__)
#define MINITL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MINITL_CLONES
#endif

namespace minitl::cpu {

// e^t for t <= 0 (every caller's range): Cephes' expf polynomial on r = t - k ln 2, times 2^k
// put straight into the exponent bits; below -87.3 (e^-87.3 ~ 1e-38, the float floor) it is
// 0, as expf underflows.
inline float exp_nonpositive(float t0) {
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
