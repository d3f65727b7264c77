// csrc/cpu/lane_sums.h — row reductions the compiler vectorises, shared by the row-wise and
// BatchNorm kernels: kLanes partial sums in an `omp simd` loop, folded by halving at the end.
#pragma once

#include "common.h"
#include "vec_math.h"

namespace minitl::cpu {

// Reductions keep kLanes partial results, combined by halving at the end. An `omp simd
// reduction` clause ends in kLanes dependent scalar steps through memory (~60 cycles), about
// as long as a whole pass over a 128-float softmax row.
constexpr int kLanes = 64;  // one AVX-512 vector, two AVX2 vectors

MINITL_SIMD_INLINE float sum_lanes(float* acc) {
    // unrolled: a rolled halving loop costs more than the row it finishes
#pragma GCC unroll 8
    for (int w = kLanes / 2; w > 0; w /= 2) {
#pragma omp simd
        for (int l = 0; l < w; ++l) acc[l] += acc[l + w];
    }
    return acc[0];
}

// sum_j term(j) for j < n; term may also store (softmax keeps each e^(x - max)).
template <class Term>
MINITL_SIMD_INLINE float lane_sum(index_t n, const Term& term) {
    float acc[kLanes] = {};
    index_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) acc[l] += term(j + l);
    }
    const int rest = static_cast<int>(n - j);
#pragma omp simd
    for (int l = 0; l < rest; ++l) acc[l] += term(j + l);
    return sum_lanes(acc);
}

// lane_sum of two terms at once, into s0 and s1: two independent chains of adds.
template <class Term0, class Term1>
MINITL_SIMD_INLINE void lane_sum2(index_t n, const Term0& term0, const Term1& term1, float& s0,
                                    float& s1) {
    float acc0[kLanes] = {}, acc1[kLanes] = {};
    index_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) {
            acc0[l] += term0(j + l);
            acc1[l] += term1(j + l);
        }
    }
    const int rest = static_cast<int>(n - j);
#pragma omp simd
    for (int l = 0; l < rest; ++l) {
        acc0[l] += term0(j + l);
        acc1[l] += term1(j + l);
    }
    s0 = sum_lanes(acc0);
    s1 = sum_lanes(acc1);
}

}  // namespace minitl::cpu
