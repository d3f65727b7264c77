// csrc/cpu/embedding.cpp — embedding backward, dW[ids[i]] += g[i].
//
// Threads split the columns of the table, not its rows: two occurrences of one id then land
// in the same thread's slice, so repeated ids accumulate without atomics and in id order (the
// order of the reference's np.add.at, hence bit-equal sums). A slice is a multiple of 16
// floats, so every thread adds whole cache lines.
#include "embedding.h"

#include <algorithm>
#include <vector>

#include "vec_math.h"

namespace minitl::cpu {
namespace {

constexpr index_t kMinColumns = 64;  // a thread's smallest slice: 4 cache lines per row

MINITL_SIMD_BODY void scatter_columns(const float* g, const std::int64_t* ids, index_t m, index_t d,
                                      std::int64_t padding_idx, index_t j0, index_t j1, float* dw) {
    for (index_t i = 0; i < m; ++i) {
        if (ids[i] == padding_idx) continue;
        float* __restrict dst = dw + ids[i] * d;
        const float* __restrict src = g + i * d;
#pragma omp simd
        for (index_t j = j0; j < j1; ++j) dst[j] += src[j];
    }
}
MINITL_SIMD_DISPATCH(scatter_columns)

// Each row touched, once, divided by its id's count (as the reference's dw / max(count, 1)).
void divide_by_counts(const std::int64_t* ids, index_t m, index_t d, index_t n,
                      std::int64_t padding_idx, float* dw) {
    std::vector<std::int32_t> count(static_cast<std::size_t>(n), 0);
    for (index_t i = 0; i < m; ++i) ++count[ids[i]];
    for (index_t i = 0; i < m; ++i) {
        const std::int64_t r = ids[i];
        if (count[r] == 0 || r == padding_idx) continue;
        const float c = static_cast<float>(count[r]);
        for (index_t j = 0; j < d; ++j) dw[r * d + j] /= c;
        count[r] = 0;  // done: a repeated id divides its row once
    }
}

}  // namespace

index_t embedding_bwd(const float* g, const std::int64_t* ids, index_t m, index_t d, index_t n,
                      std::int64_t padding_idx, bool scale_grad_by_freq, float* dw) {
    for (index_t i = 0; i < m; ++i)
        if (ids[i] < 0 || ids[i] >= n) return i;
    if (m == 0 || d == 0) return -1;
    const index_t slices = std::max<index_t>(1, std::min<index_t>(max_threads(), d / kMinColumns));
    const index_t width = round_up(ceil_div(d, slices), 16);
#pragma omp parallel for schedule(static) if (slices > 1)
    for (index_t s = 0; s < slices; ++s) {
        const index_t j0 = std::min(d, s * width), j1 = std::min(d, j0 + width);
        if (j0 < j1) scatter_columns_simd(g, ids, m, d, padding_idx, j0, j1, dw);
    }
    if (scale_grad_by_freq) divide_by_counts(ids, m, d, n, padding_idx, dw);
    return -1;
}

}  // namespace minitl::cpu
