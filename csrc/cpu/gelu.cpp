// csrc/cpu/gelu.cpp — GELU, written so the compiler vectorises it.
//
// numba cannot vectorise an exp (no SVML in the wheels: each math.exp is a libm call, ~4 ns),
// so its GELU ran at scalar speed (~5 ns an element, 3x torch's time). Here exp is a
// polynomial whose 2^k scaling is integer arithmetic on the float's bits, and erf is
// Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7) built on that exp: straight-line code the
// `omp simd` loops turn into AVX2 or AVX-512, picked at run time (vec_math.h: the binary
// itself stays generic x86-64).
#include "gelu.h"

#include <cmath>

#include "vec_math.h"

namespace minitl::cpu {
namespace {

constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
constexpr float kTanhK = 0.79788456080286536f;  // sqrt(2 / pi)
constexpr float kTanhC = 0.044715f;
constexpr index_t kBlock = 1 << 14;  // elements per parallel task

// Phi(t) = (1 + erf(t / sqrt 2)) / 2 through erfc of |t| / sqrt 2.
MINITL_SIMD_INLINE float phi(float t) {
    const float a = std::fabs(t) * kInvSqrt2;
    const float u = 1.0f / (1.0f + 0.3275911f * a);
    float poly = 1.061405429f;
    poly = poly * u - 1.453152027f;
    poly = poly * u + 1.421413741f;
    poly = poly * u - 0.284496736f;
    poly = poly * u + 0.254829592f;
    const float half_erfc = 0.5f * poly * u * exp_nonpositive(-a * a);
    return t >= 0.0f ? 1.0f - half_erfc : half_erfc;
}


// The tanh form's argument u = sqrt(2/pi) (v + 0.044715 v^3) and a = e^-2|u| <= 1, from which
// tanh u = sign(u) (1 - a) / (1 + a) without overflow.
MINITL_SIMD_INLINE void tanh_form(float v, float& u, float& a) {
    u = kTanhK * (v + kTanhC * v * v * v);
    a = exp_nonpositive(-2.0f * std::fabs(u));
}

MINITL_SIMD_BODY void fwd_block(const float* x, float* y, index_t n, bool exact) {
    if (exact) {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) y[i] = x[i] * phi(x[i]);
    } else {
        // (1 + tanh u) / 2 = 1 / (1 + e^-2u), from e^-2|u| <= 1: no overflow
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
            const float v = x[i];
            float u, a;
            tanh_form(v, u, a);
            y[i] = (u >= 0.0f ? v : v * a) / (1.0f + a);
        }
    }
}

MINITL_SIMD_BODY void bwd_block(const float* g, const float* x, float* dx, index_t n,
                                bool exact) {
    if (exact) {
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
            const float v = x[i];
            dx[i] = g[i] * (phi(v) + v * kInvSqrt2Pi * exp_nonpositive(-0.5f * v * v));
        }
    } else {
        // with s = sigmoid(2u): (1 + t) / 2 = s and (1 - t^2) / 2 = 2 s (1 - s)
#pragma omp simd
        for (index_t i = 0; i < n; ++i) {
            const float v = x[i];
            float u, a;
            tanh_form(v, u, a);
            const float r = 1.0f / (1.0f + a);
            const float s = u >= 0.0f ? r : a * r;
            const float du = kTanhK * (1.0f + 3.0f * kTanhC * v * v);
            dx[i] = g[i] * (s + 2.0f * v * (a * r * r) * du);
        }
    }
}

MINITL_SIMD_DISPATCH(fwd_block)
MINITL_SIMD_DISPATCH(bwd_block)

}  // namespace

void gelu_fwd(const float* x, float* y, index_t n, bool exact) {
    const index_t blocks = ceil_div(n, kBlock);
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (index_t b = 0; b < blocks; ++b) {
        const index_t lo = b * kBlock;
        fwd_block_simd(x + lo, y + lo, (n - lo < kBlock ? n - lo : kBlock), exact);
    }
}

void gelu_bwd(const float* g, const float* x, float* dx, index_t n, bool exact) {
    const index_t blocks = ceil_div(n, kBlock);
#pragma omp parallel for schedule(static) if (blocks > 1)
    for (index_t b = 0; b < blocks; ++b) {
        const index_t lo = b * kBlock;
        bwd_block_simd(g + lo, x + lo, dx + lo, (n - lo < kBlock ? n - lo : kBlock), exact);
    }
}

}  // namespace minitl::cpu
