// csrc/cpu/rowwise.cpp — softmax, layer_norm and softmax cross-entropy over the rows of a
// contiguous float32 matrix, written so the compiler vectorises every pass.
//
// The numba kernels they replace sum in float64 (half the lanes of a float32 vector) and fold
// each reduction through one accumulator. Here every pass over a row is an `omp simd` loop in
// a MINITL_SIMD_BODY (compiled for AVX-512, AVX2 and the baseline, chosen at run time) with
// 16 partial sums, exp is the polynomial of vec_math.h, and threads take blocks of whole rows.
//
// Napkin math, one core (measured on an AVX-512 EPYC): softmax is bound by the exp polynomial,
// ~17 vector flops per 16 floats, 0.25 ms of its 0.6 ms over the 1M attention scores of
// (16, 4, 128, 128); each 512-byte row stays in L1 across its three passes. layer_norm over
// (2048, 256): 0.10 ms forward, 0.19 ms backward. Cross-entropy streams its (2048, 30522)
// logits, 250 MB, from DRAM forward (a 120 KB row stays in L2 from the max pass to the exp
// pass); backward reads and writes only the rows whose target is not ignored.
//
// Non-finite input follows reference.py: a row holding a NaN gives NaN (the vectorised exp
// would turn a NaN into 0, so each max pass also looks for NaNs), and a row whose max is not
// finite takes a scalar path that computes what the reference computes.

#include "rowwise.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "lane_sums.h"
#include "vec_math.h"

namespace minitl::cpu {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr index_t kTaskElems = index_t{1} << 15;  // elements per parallel task
constexpr index_t kNormChunks = 32;  // layer_norm backward sums dw, db over this many chunks

// e^t for any t: exp_nonpositive holds up to t = 88 (its 2^k scale tops out at 2^127), a NaN
// stays NaN, and beyond 88 it is inf (expf overflows at 88.72; backward's x - lse exceeds 0
// only by rounding unless lse is not the rows' log-sum-exp).
MINITL_SIMD_INLINE float exp_any(float t) {
    const float e = exp_nonpositive(t);
    return t <= 88.0f ? e : (t == t ? kInf : t);
}

// The row's max, or NaN when it holds a NaN (a vector max drops NaNs).
MINITL_SIMD_INLINE float row_max(const float* x, index_t n) {
    float m[kLanes];
    int nan[kLanes] = {};
    for (int l = 0; l < kLanes; ++l) m[l] = -kInf;
    index_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) {
            const float v = x[j + l];
            m[l] = v > m[l] ? v : m[l];
            nan[l] |= v != v;
        }
    }
    const int rest = static_cast<int>(n - j);
#pragma omp simd
    for (int l = 0; l < rest; ++l) {
        const float v = x[j + l];
        m[l] = v > m[l] ? v : m[l];
        nan[l] |= v != v;
    }
    // unrolled: a rolled halving loop costs more than the row it finishes
#pragma GCC unroll 8
    for (int w = kLanes / 2; w > 0; w /= 2) {
#pragma omp simd
        for (int l = 0; l < w; ++l) {
            m[l] = m[l + w] > m[l] ? m[l + w] : m[l];
            nan[l] |= nan[l + w];
        }
    }
    return nan[0] ? kNaN : m[0];
}

MINITL_SIMD_INLINE float row_sum(const float* x, index_t n) {
    return lane_sum(n, [=](index_t j) { return x[j]; });
}

MINITL_SIMD_INLINE float row_dot(const float* x, const float* y, index_t n) {
    return lane_sum(n, [=](index_t j) { return x[j] * y[j]; });
}

// sum_j e^(x_j - mx) for a finite mx (every exponent <= 0).
MINITL_SIMD_INLINE float row_sum_exp(const float* x, index_t n, float mx) {
    return lane_sum(n, [=](index_t j) { return exp_nonpositive(x[j] - mx); });
}

MINITL_SIMD_INLINE void fill(float* y, index_t n, float v) {
#pragma omp simd
    for (index_t j = 0; j < n; ++j) y[j] = v;
}

// Rows [0, rows) in tasks of about kTaskElems elements, one thread when there is one task.
template <class RowBlock>
void for_row_blocks(index_t rows, index_t n, const RowBlock& block) {
    const index_t per = std::max<index_t>(1, kTaskElems / std::max<index_t>(n, 1));
    const index_t tasks = ceil_div(rows, per);
#pragma omp parallel for schedule(static) if (tasks > 1)
    for (index_t t = 0; t < tasks; ++t) block(t * per, std::min(rows, (t + 1) * per));
}

// ---------------------------------------------------------------------------------------------
// softmax

// The reference's safe path for a row whose max is +-inf: the max is taken as 0, so e^x may
// overflow, and a zero sum is taken as 1 (an all -inf row gives zeros).
void softmax_nonfinite_row(const float* x, float* y, index_t n) {
    float s = 0.0f;
    for (index_t j = 0; j < n; ++j) s += (y[j] = std::exp(x[j]));
    if (s == 0.0f) s = 1.0f;
    for (index_t j = 0; j < n; ++j) y[j] /= s;
}

MINITL_SIMD_BODY void softmax_fwd_rows(const float* x, float* y, index_t lo, index_t hi,
                                       index_t n, bool safe) {
    for (index_t i = lo; i < hi; ++i) {
        const float* xi = x + i * n;
        float* yi = y + i * n;
        const float mx = row_max(xi, n);
        if (!std::isfinite(mx)) {
            if (safe && !std::isnan(mx))
                softmax_nonfinite_row(xi, yi, n);
            else
                fill(yi, n, kNaN);  // what x - max gives: NaN - NaN, inf - inf
            continue;
        }
        const float s = lane_sum(n, [=](index_t j) {
            const float e = exp_nonpositive(xi[j] - mx);
            yi[j] = e;
            return e;
        });
        const float inv = 1.0f / s;  // s >= 1: the max contributes e^0
#pragma omp simd
        for (index_t j = 0; j < n; ++j) yi[j] *= inv;
    }
}

MINITL_SIMD_BODY void softmax_bwd_rows(const float* g, const float* y, float* dx, index_t lo,
                                       index_t hi, index_t n) {
    for (index_t i = lo; i < hi; ++i) {
        const float* gi = g + i * n;
        const float* yi = y + i * n;
        float* di = dx + i * n;
        const float s = row_dot(gi, yi, n);
#pragma omp simd
        for (index_t j = 0; j < n; ++j) di[j] = gi[j] * yi[j] - yi[j] * s;
    }
}

// ---------------------------------------------------------------------------------------------
// layer_norm

template <bool HasW, bool HasB>
MINITL_SIMD_INLINE void normalize_row(const float* x, const float* w, const float* b, float mu,
                                       float r, float* y, index_t d) {
#pragma omp simd
    for (index_t j = 0; j < d; ++j) {
        float h = (x[j] - mu) * r;
        if constexpr (HasW) h *= w[j];
        if constexpr (HasB) h += b[j];
        y[j] = h;
    }
}

MINITL_SIMD_BODY void layernorm_fwd_rows(const float* x, const float* w, const float* b, float eps,
                                         float* y, float* mean, float* rstd, index_t lo,
                                         index_t hi, index_t d) {
    const float inv_d = 1.0f / static_cast<float>(d);
    const auto finish = [=](index_t i, float mu, float v) {
        const float r = 1.0f / std::sqrt(v * inv_d + eps);
        mean[i] = mu;
        rstd[i] = r;
        const float* xi = x + i * d;
        float* yi = y + i * d;
        if (w != nullptr && b != nullptr)
            normalize_row<true, true>(xi, w, b, mu, r, yi, d);
        else if (w != nullptr)
            normalize_row<true, false>(xi, w, b, mu, r, yi, d);
        else if (b != nullptr)
            normalize_row<false, true>(xi, w, b, mu, r, yi, d);
        else
            normalize_row<false, false>(xi, w, b, mu, r, yi, d);
    };
    // two rows at a time: each pass is a chain of dependent adds, two chains overlap
    index_t i = lo;
    for (; i + 2 <= hi; i += 2) {
        const float *xa = x + i * d, *xb = xa + d;
        float sa, sb, va, vb;
        lane_sum2(d, [=](index_t j) { return xa[j]; }, [=](index_t j) { return xb[j]; }, sa, sb);
        const float mua = sa * inv_d, mub = sb * inv_d;
        lane_sum2(d, [=](index_t j) { return (xa[j] - mua) * (xa[j] - mua); },
                  [=](index_t j) { return (xb[j] - mub) * (xb[j] - mub); }, va, vb);
        finish(i, mua, va);
        finish(i + 1, mub, vb);
    }
    if (i < hi) {
        const float* xi = x + i * d;
        const float mu = row_sum(xi, d) * inv_d;
        finish(i, mu, lane_sum(d, [=](index_t j) { return (xi[j] - mu) * (xi[j] - mu); }));
    }
}

// Row a, and row b = a + 1 when Pair, of layer_norm backward: one pass adds their g xhat and
// g to dw_part and db_part and sums dh and dh xhat (dh = g w) per row, then dx where asked.
// Two rows a pass halve the read-modify-writes of dw_part and db_part and keep four
// independent sums in flight. Inlined into the clones below: only there is it compiled for
// AVX2 / AVX-512.
template <bool HasW, bool Pair>
MINITL_SIMD_INLINE void layernorm_bwd_rows_of(const float* g, const float* x, const float* mean,
                                                const float* rstd, const float* w, float* dx,
                                                float* dw_part, float* db_part, index_t a,
                                                index_t d) {
    const index_t b = Pair ? a + 1 : a;
    const float *ga = g + a * d, *xa = x + a * d, *gb = g + b * d, *xb = x + b * d;
    const float mua = mean[a], ra = rstd[a], mub = mean[b], rb = rstd[b];
    float sa1[kLanes] = {}, sa2[kLanes] = {}, sb1[kLanes] = {}, sb2[kLanes] = {};
    const auto step = [&](index_t j, int l) {
        const float xha = (xa[j] - mua) * ra;
        const float ha = HasW ? ga[j] * w[j] : ga[j];
        sa1[l] += ha;
        sa2[l] += ha * xha;
        if constexpr (Pair) {
            const float xhb = (xb[j] - mub) * rb;
            const float hb = HasW ? gb[j] * w[j] : gb[j];
            sb1[l] += hb;
            sb2[l] += hb * xhb;
            dw_part[j] += ga[j] * xha + gb[j] * xhb;
            db_part[j] += ga[j] + gb[j];
        } else {
            dw_part[j] += ga[j] * xha;
            db_part[j] += ga[j];
        }
    };
    index_t j = 0;
    for (; j + kLanes <= d; j += kLanes) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) step(j + l, l);
    }
    const int rest = static_cast<int>(d - j);
#pragma omp simd
    for (int l = 0; l < rest; ++l) step(j + l, l);
    if (dx == nullptr) return;
    const float inv_d = 1.0f / static_cast<float>(d);
    for (int row = 0; row < (Pair ? 2 : 1); ++row) {
        const float* gi = row == 0 ? ga : gb;
        const float* xi = row == 0 ? xa : xb;
        const float mu = row == 0 ? mua : mub, r = row == 0 ? ra : rb;
        const float a1 = sum_lanes(row == 0 ? sa1 : sb1) * inv_d;
        const float a2 = sum_lanes(row == 0 ? sa2 : sb2) * inv_d;
        float* di = dx + (a + row) * d;
#pragma omp simd
        for (index_t k = 0; k < d; ++k) {
            const float xh = (xi[k] - mu) * r;
            const float dh = HasW ? gi[k] * w[k] : gi[k];
            di[k] = r * (dh - a1 - xh * a2);
        }
    }
}

// Rows [lo, hi): dx where asked, and this chunk's sums of g xhat and g into dw_part, db_part.
template <bool HasW>
MINITL_SIMD_INLINE void layernorm_bwd_chunk(const float* g, const float* x, const float* mean,
                                              const float* rstd, const float* w, float* dx,
                                              float* dw_part, float* db_part, index_t lo,
                                              index_t hi, index_t d) {
    index_t i = lo;
    for (; i + 2 <= hi; i += 2)
        layernorm_bwd_rows_of<HasW, true>(g, x, mean, rstd, w, dx, dw_part, db_part, i, d);
    if (i < hi)
        layernorm_bwd_rows_of<HasW, false>(g, x, mean, rstd, w, dx, dw_part, db_part, i, d);
}

MINITL_SIMD_BODY void layernorm_bwd_rows(const float* g, const float* x, const float* mean,
                                         const float* rstd, const float* w, float* dx,
                                         float* dw_part, float* db_part, index_t lo, index_t hi,
                                         index_t d) {
    if (w != nullptr)
        layernorm_bwd_chunk<true>(g, x, mean, rstd, w, dx, dw_part, db_part, lo, hi, d);
    else
        layernorm_bwd_chunk<false>(g, x, mean, rstd, w, dx, dw_part, db_part, lo, hi, d);
}

// ---------------------------------------------------------------------------------------------
// softmax cross-entropy

struct XentRow {
    const XentSpec& spec;
    float wsum;  // sum of the class weights (classes when there are none)
    index_t classes;
};

MINITL_SIMD_BODY void xent_fwd_rows(const float* x, const XentRow& row, float* loss, float* lse,
                                    index_t lo, index_t hi) {
    const XentSpec& s = row.spec;
    const index_t c = row.classes;
    for (index_t i = lo; i < hi; ++i) {
        const float* xi = x + i * c;
        const float mx = row_max(xi, c);
        // a NaN, an all -inf row or a +inf logit: x - max has a NaN, and so does the sum
        const float l = std::isfinite(mx) ? std::log(row_sum_exp(xi, c, mx)) + mx : kNaN;
        lse[i] = l;
        const std::int64_t t = s.target[i];
        if (t == s.ignore_index) {
            loss[i] = 0.0f;
            continue;
        }
        const float wt = s.weight != nullptr ? s.weight[t] : 1.0f;
        float li = (1.0f - s.eps) * wt * (l - xi[t]);
        if (s.eps != 0.0f) {
            const float wx = s.weight != nullptr ? row_dot(xi, s.weight, c) : row_sum(xi, c);
            li += (s.eps / static_cast<float>(c)) * (l * row.wsum - wx);
        }
        loss[i] = li;
    }
}

MINITL_SIMD_BODY void xent_bwd_rows(const float* x, const float* lse, const XentRow& row,
                                    const float* grad, float* dx, index_t lo, index_t hi) {
    const XentSpec& s = row.spec;
    const index_t c = row.classes;
    const float smooth = s.eps / static_cast<float>(c);
    for (index_t i = lo; i < hi; ++i) {
        const float* xi = x + i * c;
        float* di = dx + i * c;
        const std::int64_t t = s.target[i];
        if (t == s.ignore_index) continue;  // dx arrives zeroed: 0 even for a non-finite lse
        const float gi = grad[i];
        const float wt = s.weight != nullptr ? s.weight[t] : 1.0f;
        const float scale = gi * ((1.0f - s.eps) * wt + smooth * row.wsum);
        const float l = lse[i];
#pragma omp simd
        for (index_t j = 0; j < c; ++j) di[j] = exp_any(xi[j] - l) * scale;
        if (s.eps != 0.0f) {
            const float se = gi * smooth;
            if (s.weight != nullptr) {
#pragma omp simd
                for (index_t j = 0; j < c; ++j) di[j] -= se * s.weight[j];
            } else {
#pragma omp simd
                for (index_t j = 0; j < c; ++j) di[j] -= se;
            }
        }
        di[t] -= gi * (1.0f - s.eps) * wt;
    }
}

MINITL_SIMD_DISPATCH(softmax_fwd_rows)
MINITL_SIMD_DISPATCH(softmax_bwd_rows)
MINITL_SIMD_DISPATCH(layernorm_fwd_rows)
MINITL_SIMD_DISPATCH(layernorm_bwd_rows)
MINITL_SIMD_DISPATCH(xent_fwd_rows)
MINITL_SIMD_DISPATCH(xent_bwd_rows)

float weight_sum(const float* w, index_t n) {
    if (w == nullptr) return static_cast<float>(n);
    double s = 0.0;
    for (index_t j = 0; j < n; ++j) s += w[j];
    return static_cast<float>(s);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// entry points

void softmax_fwd(const float* x, float* y, index_t rows, index_t n, bool safe) {
    for_row_blocks(rows, n, [&](index_t lo, index_t hi) {
        softmax_fwd_rows_simd(x, y, lo, hi, n, safe);
    });
}

void softmax_bwd(const float* g, const float* y, float* dx, index_t rows, index_t n) {
    for_row_blocks(rows, n, [&](index_t lo, index_t hi) {
        softmax_bwd_rows_simd(g, y, dx, lo, hi, n);
    });
}

void layernorm_fwd(const float* x, const float* w, const float* b, float eps, float* y,
                   float* mean, float* rstd, index_t rows, index_t d) {
    for_row_blocks(rows, d, [&](index_t lo, index_t hi) {
        layernorm_fwd_rows_simd(x, w, b, eps, y, mean, rstd, lo, hi, d);
    });
}

void layernorm_bwd(const float* g, const float* x, const float* mean, const float* rstd,
                   const float* w, float* dx, float* dw, float* db, index_t rows, index_t d) {
    const index_t chunks = std::min(rows, kNormChunks);
    if (chunks == 0) {
        if (dw != nullptr) std::fill(dw, dw + d, 0.0f);
        if (db != nullptr) std::fill(db, db + d, 0.0f);
        return;
    }
    const index_t per = ceil_div(rows, chunks);
    std::vector<float> dw_part(static_cast<std::size_t>(chunks * d), 0.0f);
    std::vector<float> db_part(static_cast<std::size_t>(chunks * d), 0.0f);
    const bool parallel = rows * d >= 2 * kTaskElems;
#pragma omp parallel for schedule(static) if (parallel)
    for (index_t ch = 0; ch < chunks; ++ch) {
        const index_t lo = std::min(rows, ch * per), hi = std::min(rows, lo + per);
        layernorm_bwd_rows_simd(g, x, mean, rstd, w, dx, dw_part.data() + ch * d,
                           db_part.data() + ch * d, lo, hi, d);
    }
    // the chunks in order, in double: the same bits for any thread count
    for (index_t j = 0; j < d; ++j) {
        double sw = 0.0, sb = 0.0;
        for (index_t ch = 0; ch < chunks; ++ch) {
            sw += dw_part[static_cast<std::size_t>(ch * d + j)];
            sb += db_part[static_cast<std::size_t>(ch * d + j)];
        }
        if (dw != nullptr) dw[j] = static_cast<float>(sw);
        if (db != nullptr) db[j] = static_cast<float>(sb);
    }
}

void softmax_xent_fwd(const float* x, const XentSpec& spec, float* loss, float* lse,
                      index_t rows, index_t classes) {
    const XentRow row{spec, weight_sum(spec.weight, classes), classes};
    for_row_blocks(rows, classes, [&](index_t lo, index_t hi) {
        xent_fwd_rows_simd(x, row, loss, lse, lo, hi);
    });
}

void softmax_xent_bwd(const float* x, const float* lse, const XentSpec& spec,
                      const float* grad, float* dx, index_t rows, index_t classes) {
    const XentRow row{spec, weight_sum(spec.weight, classes), classes};
    for_row_blocks(rows, classes, [&](index_t lo, index_t hi) {
        xent_bwd_rows_simd(x, lse, row, grad, dx, lo, hi);
    });
}

}  // namespace minitl::cpu
