// csrc/cpu/batchnorm.cpp — BatchNorm over (N, C, L) activations in a few vectorised passes.
//
// numpy needs about seven sweeps over the activations for a training forward (sums, x - mean
// kept for backward, squares, scale, shift, each with a fresh array) and as many for backward;
// here forward reads x twice for the statistics and once to write y = x s + t (PyTorch's
// form), and backward reads g and x once for the two sums and once more to write dx: x itself
// is kept for backward, not x - mean. Threads take whole channels for the sums (no shared accumulators) and blocks of
// rows for the element-wise maps.
#include "batchnorm.h"

#include <algorithm>

#include "lane_sums.h"
#include "vec_math.h"

namespace minitl::cpu {
namespace {

MINITL_SIMD_BODY void stats_channel(const float* x, index_t n, index_t c, index_t l, index_t ch,
                                    double* mean, double* var) {
    const double count = double(n) * double(l);
    double s = 0.0;
    for (index_t i = 0; i < n; ++i) {
        const float* row = x + (i * c + ch) * l;
        s += double(lane_sum(l, [=](index_t j) { return row[j]; }));
    }
    const double m = s / count;
    const float mf = float(m);
    double q = 0.0;
    for (index_t i = 0; i < n; ++i) {
        const float* row = x + (i * c + ch) * l;
        q += double(lane_sum(l, [=](index_t j) {
            const float v = row[j] - mf;
            return v * v;
        }));
    }
    mean[ch] = m;
    var[ch] = q / count;
}
MINITL_SIMD_DISPATCH(stats_channel)

MINITL_SIMD_BODY void bwd_sums_channel(const float* g, const float* x, float mean, index_t n,
                                       index_t c, index_t l, double* sum_g, double* sum_gxc) {
    double sg = 0.0, sgx = 0.0;
    for (index_t i = 0; i < n; ++i) {
        const float* gr = g + i * c * l;
        const float* xr = x + i * c * l;
        float row_g, row_gx;  // one read of the two rows for both sums
        lane_sum2(l, [=](index_t j) { return gr[j]; },
                  [=](index_t j) { return gr[j] * (xr[j] - mean); }, row_g, row_gx);
        sg += double(row_g);
        sgx += double(row_gx);
    }
    *sum_g = sg;
    *sum_gxc = sgx;
}
MINITL_SIMD_DISPATCH(bwd_sums_channel)

MINITL_SIMD_BODY void affine_rows(const float* x, const float* s, const float* t, index_t c,
                                  index_t l, index_t lo, index_t hi, float* y) {
    for (index_t r = lo; r < hi; ++r) {
        const float a = s[r % c], b = t[r % c];
        const float* xr = x + r * l;
        float* yr = y + r * l;
#pragma omp simd
        for (index_t j = 0; j < l; ++j) yr[j] = xr[j] * a + b;
    }
}
MINITL_SIMD_DISPATCH(affine_rows)

MINITL_SIMD_BODY void dx_rows(const float* g, const float* x, const float* mean, const float* a,
                              const float* b, const float* d, index_t c, index_t l, index_t lo,
                              index_t hi, float* dx) {
    for (index_t r = lo; r < hi; ++r) {
        const float m = mean[r % c], ka = a[r % c], kb = b[r % c], kd = d[r % c];
        const float* gr = g + r * l;
        const float* xr = x + r * l;
        float* out = dx + r * l;
        // x - mean first: folding kb mean into kd would cancel when |mean| >> std
#pragma omp simd
        for (index_t j = 0; j < l; ++j) out[j] = ka * gr[j] + kb * (xr[j] - m) + kd;
    }
}
MINITL_SIMD_DISPATCH(dx_rows)

// Rows [0, rows) of length l in tasks of about 32K elements.
template <class Block>
void for_row_blocks(index_t rows, index_t l, const Block& block) {
    const index_t per = std::max<index_t>(1, (index_t{1} << 15) / std::max<index_t>(l, 1));
    const index_t tasks = ceil_div(rows, per);
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (index_t t = 0; t < tasks; ++t) block(t * per, std::min(rows, (t + 1) * per));
}

bool parallel_channels(index_t n, index_t c, index_t l) {
    return c > 1 && double(n) * double(c) * double(l) >= double(1 << 16);
}

}  // namespace

void batchnorm_stats(const float* x, index_t n, index_t c, index_t l, double* mean,
                     double* var) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(n, c, l))
    for (index_t ch = 0; ch < c; ++ch) stats_channel_simd(x, n, c, l, ch, mean, var);
}

void batchnorm_affine(const float* x, const float* s, const float* t, index_t n, index_t c,
                      index_t l, float* y) {
    for_row_blocks(n * c, l, [&](index_t lo, index_t hi) {
        affine_rows_simd(x, s, t, c, l, lo, hi, y);
    });
}

void batchnorm_bwd_sums(const float* g, const float* x, const float* mean, index_t n,
                        index_t c, index_t l, double* sum_g, double* sum_gxc) {
#pragma omp parallel for schedule(dynamic, 1) if (parallel_channels(n, c, l))
    for (index_t ch = 0; ch < c; ++ch)
        bwd_sums_channel_simd(g + ch * l, x + ch * l, mean[ch], n, c, l, sum_g + ch,
                              sum_gxc + ch);
}

void batchnorm_bwd_dx(const float* g, const float* x, const float* mean, const float* a,
                      const float* b, const float* d, index_t n, index_t c, index_t l,
                      float* dx) {
    for_row_blocks(n * c, l, [&](index_t lo, index_t hi) {
        dx_rows_simd(g, x, mean, a, b, d, c, l, lo, hi, dx);
    });
}

}  // namespace minitl::cpu
