// csrc/cpu/conv.cpp — conv2d forward and backward (stride, padding, dilation, groups) on NCHW.
//
// Why per image: the whole-batch im2col of resnet-mini's first stage (64 x 16 x 28 x 28, 3x3)
// is a (144, 50176) matrix, 29 MB, written once by im2col and read again by the GEMM from
// memory, and its weight-gradient product (16, 50176) @ (50176, 144) is a thin, deep GEMM that
// the blocked kernel parallelises poorly. One image's columns (144, 784) are 450 KB: they are
// built in L2, multiplied at once, and the next image reuses the same scratch. Each thread
// takes whole images (single-threaded GEMMs, no barriers inside a product), writes y (n, co,
// oh, ow) in place (no NCHW <-> CNHW transposes), and sums its own weight gradient, added up
// once at the end. Backward rebuilds the columns instead of keeping 29 MB alive between passes.
//
// Napkin math for that shape: forward 2 * 16 * 144 * 50176 = 231 MFLOP, backward twice that;
// the per-image working set (columns + the image + y) stays in L2, so DRAM sees x, y and dx
// once each (~10 MB per pass).
//
// Depthwise and other one-channel-per-group convolutions (EfficientNet) have K = kh * kw, too
// short for a GEMM: they run a direct kernel that adds w[i, j] * (shifted input row) into each
// output row, contiguous and vectorisable when the stride is 1.
//
// Reference: minitl/backend/cpu_conv.py (conv2d_fwd_reference, conv2d_bwd_reference).
#include "conv.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "conv_direct.h"
#include "gemm.h"

namespace minitl::cpu {

namespace {

// ---------------------------------------------------------------------------------------------
// geometry of one kernel column j: the output columns q whose input column q*sw + off lies in
// [0, w), as the half-open range [lo, hi); outside it the tap reads padding (zero).

struct ColRange {
    index_t off, lo, hi;
};

ColRange col_range(const ConvGeom& g, index_t j) {
    const index_t off = j * g.dw - g.pw;
    index_t lo = off >= 0 ? 0 : (-off + g.sw - 1) / g.sw;
    index_t hi = g.w - off <= 0 ? 0 : (g.w - off + g.sw - 1) / g.sw;
    lo = std::min(lo, g.ow);
    hi = std::max(lo, std::min(hi, g.ow));
    return {off, lo, hi};
}

// ---------------------------------------------------------------------------------------------
// im2col / col2im of one image's channel slice: x (cg, h, w) <-> col (cg kh kw, oh ow)

void im2col_image(const float* x, float* col, const ConvGeom& g, index_t cg) {
    const index_t len = g.oh * g.ow;
    for (index_t c = 0; c < cg; ++c) {
        const float* xc = x + c * g.h * g.w;
        for (index_t i = 0; i < g.kh; ++i) {
            for (index_t j = 0; j < g.kw; ++j) {
                float* row = col + ((c * g.kh + i) * g.kw + j) * len;
                const ColRange cr = col_range(g, j);
                for (index_t r = 0; r < g.oh; ++r) {
                    float* out = row + r * g.ow;
                    const index_t hi = r * g.sh - g.ph + i * g.dh;
                    if (hi < 0 || hi >= g.h) {
                        std::fill(out, out + g.ow, 0.0f);
                        continue;
                    }
                    // plain loops, not memcpy / fill: the rows are short (28 floats in
                    // resnet-mini), and three library calls per row cost more than the copy
                    const float* src = xc + hi * g.w + cr.off;
                    for (index_t q = 0; q < cr.lo; ++q) out[q] = 0.0f;
                    if (g.sw == 1) {
                        for (index_t q = cr.lo; q < cr.hi; ++q) out[q] = src[q];
                    } else {
                        for (index_t q = cr.lo; q < cr.hi; ++q) out[q] = src[q * g.sw];
                    }
                    for (index_t q = cr.hi; q < g.ow; ++q) out[q] = 0.0f;
                }
            }
        }
    }
}

// dx (cg, h, w) += the columns scattered back (taps in the padding are dropped).
void col2im_image(const float* col, float* dx, const ConvGeom& g, index_t cg) {
    const index_t len = g.oh * g.ow;
    for (index_t c = 0; c < cg; ++c) {
        float* dxc = dx + c * g.h * g.w;
        for (index_t i = 0; i < g.kh; ++i) {
            for (index_t j = 0; j < g.kw; ++j) {
                const float* row = col + ((c * g.kh + i) * g.kw + j) * len;
                const ColRange cr = col_range(g, j);
                for (index_t r = 0; r < g.oh; ++r) {
                    const index_t hi = r * g.sh - g.ph + i * g.dh;
                    if (hi < 0 || hi >= g.h) continue;
                    const float* in = row + r * g.ow;
                    float* dst = dxc + hi * g.w + cr.off;
                    if (g.sw == 1) {  // contiguous: vectorised
                        for (index_t q = cr.lo; q < cr.hi; ++q) dst[q] += in[q];
                    } else {
                        for (index_t q = cr.lo; q < cr.hi; ++q) dst[q * g.sw] += in[q];
                    }
                }
            }
        }
    }
}

// A 1x1 convolution with unit stride and no padding: the image itself is its column matrix.
bool is_pointwise(const ConvGeom& g) {
    return g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.ph == 0 && g.pw == 0 &&
           g.oh == g.h && g.ow == g.w;
}

// ---------------------------------------------------------------------------------------------
// direct kernels for one input channel per group (depthwise): x plane (h, w), y plane (oh, ow),
// taps w (kh, kw). `fn(out_row, in_row, tap)` visits every (output row, shifted input row) pair
// that lies inside the input, with the output column range [lo, hi).

template <class Fn>
void for_each_tap_row(const ConvGeom& g, Fn fn) {
    for (index_t i = 0; i < g.kh; ++i) {
        for (index_t j = 0; j < g.kw; ++j) {
            const ColRange cr = col_range(g, j);
            if (cr.lo == cr.hi) continue;
            for (index_t r = 0; r < g.oh; ++r) {
                const index_t hi = r * g.sh - g.ph + i * g.dh;
                if (hi < 0 || hi >= g.h) continue;
                fn(r * g.ow, hi * g.w + cr.off, i * g.kw + j, cr.lo, cr.hi);
            }
        }
    }
}

void direct_fwd_plane(const float* x, const float* taps, float bias, float* y,
                      const ConvGeom& g) {
    std::fill(y, y + g.oh * g.ow, bias);
    const index_t sw = g.sw;
    for_each_tap_row(g, [&](index_t yo, index_t xo, index_t t, index_t lo, index_t hi) {
        const float wt = taps[t];
        float* out = y + yo;
        const float* in = x + xo;
        if (sw == 1) {
            for (index_t q = lo; q < hi; ++q) out[q] += wt * in[q];
        } else {
            for (index_t q = lo; q < hi; ++q) out[q] += wt * in[q * sw];
        }
    });
}

// dx plane += taps * gy (scattered), dtaps += gy . shifted x
void direct_bwd_plane(const float* x, const float* taps, const float* gy, float* dx,
                      float* dtaps, const ConvGeom& g) {
    const index_t sw = g.sw;
    for_each_tap_row(g, [&](index_t yo, index_t xo, index_t t, index_t lo, index_t hi) {
        const float* go = gy + yo;
        if (dtaps) {
            const float* in = x + xo;
            float acc = 0.0f;
            if (sw == 1) {
                for (index_t q = lo; q < hi; ++q) acc += go[q] * in[q];
            } else {
                for (index_t q = lo; q < hi; ++q) acc += go[q] * in[q * sw];
            }
            dtaps[t] += acc;
        }
        if (dx) {
            const float wt = taps[t];
            float* d = dx + xo;
            if (sw == 1) {
                for (index_t q = lo; q < hi; ++q) d[q] += wt * go[q];
            } else {
                for (index_t q = lo; q < hi; ++q) d[q * sw] += wt * go[q];
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// work split: whole (image, group) tasks per thread when there are enough of them; otherwise
// one task at a time with every thread inside the GEMM.

struct Split {
    bool outer;     // parallel over tasks
    int gemm_threads;  // threads per GEMM: 1 inside the task loop, 0 (all) otherwise
};

Split split_for(index_t tasks) {
    const bool outer = tasks >= index_t(max_threads());
    return {outer, outer ? 1 : 0};
}

// The weight gradient's product is small in both output dimensions (cog x kg: 16 x 144 in
// resnet-mini), so the share of the GEMM's MR x NR micro-tiles it leaves empty decides its
// speed: dW (cog, kg) with the AVX-512 12x32 tile uses 60% of it at cog = 16, dW^T (kg, cog)
// 50%; at cog = 32 it is 80% against 100% (measured: 30 ms against 18 ms for the batch of 64
// on one core). Take the orientation whose tiles are fuller; the tile is in the path's name.
bool flip_weight_grad(index_t cog, index_t kg) {
    index_t mr = 6, nr = 16;
    const std::string name = cpu_features().gemm_path;  // e.g. "avx512f_12x32"
    const auto x = name.rfind('x'), u = name.rfind('_');
    if (u != std::string::npos && x != std::string::npos && x > u + 1) {
        const long m = std::strtol(name.c_str() + u + 1, nullptr, 10);
        const long n = std::strtol(name.c_str() + x + 1, nullptr, 10);
        if (m > 0 && n > 0) mr = m, nr = n;
    }
    auto fill = [](index_t m, index_t n, index_t tm, index_t tn) {
        return double(m) / double(round_up(m, tm)) * double(n) / double(round_up(n, tn));
    };
    return fill(kg, cog, mr, nr) > fill(cog, kg, mr, nr) + 0.05;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// forward

void conv2d_gemm_fwd(const float* x, const float* weight, const float* bias, float* y,
                     const ConvGeom& g) {
    const index_t cg = g.c / g.groups, cog = g.co / g.groups;
    const index_t kg = cg * g.kh * g.kw, len = g.oh * g.ow, tasks = g.n * g.groups;
    if (tasks == 0 || len == 0 || g.co == 0) return;
    const bool direct = cg == 1;
    const bool pointwise = is_pointwise(g);
    const Split sp = split_for(tasks);

#pragma omp parallel if (sp.outer)
    {
        std::vector<float> col(direct || pointwise ? 0 : size_t(kg * len));
#pragma omp for schedule(dynamic, 1)
        for (index_t t = 0; t < tasks; ++t) {
            const index_t b = t / g.groups, grp = t % g.groups;
            const float* xg = x + (b * g.c + grp * cg) * g.h * g.w;
            float* yg = y + (b * g.co + grp * cog) * len;
            const float* wg = weight + grp * cog * kg;
            if (direct) {
                for (index_t m = 0; m < cog; ++m)
                    direct_fwd_plane(xg, wg + m * kg, bias ? bias[grp * cog + m] : 0.0f,
                                     yg + m * len, g);
                continue;
            }
            const float* cols = xg;
            if (!pointwise) {
                im2col_image(xg, col.data(), g, cg);
                cols = col.data();
            }
            gemm_fused(wg, cols, yg, cog, len, kg, false, false, LowRank{}, sp.gemm_threads);
            if (bias) {
                for (index_t m = 0; m < cog; ++m) {
                    const float bv = bias[grp * cog + m];
                    float* row = yg + m * len;
                    for (index_t q = 0; q < len; ++q) row[q] += bv;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// backward

void conv2d_gemm_bwd(const float* x, const float* weight, const float* gy, float* dx,
                     float* dweight, const ConvGeom& g) {
    const index_t cg = g.c / g.groups, cog = g.co / g.groups;
    const index_t kg = cg * g.kh * g.kw, len = g.oh * g.ow, tasks = g.n * g.groups;
    const index_t wsize = g.co * kg;
    if (dx) std::fill(dx, dx + g.n * g.c * g.h * g.w, 0.0f);
    if (dweight) std::fill(dweight, dweight + wsize, 0.0f);
    if (tasks == 0 || len == 0 || g.co == 0 || (!dx && !dweight)) return;
    const bool direct = cg == 1;
    const bool pointwise = is_pointwise(g);
    const Split sp = split_for(tasks);
    const bool flip = flip_weight_grad(cog, kg);
    // one weight-gradient accumulator per thread, summed in a fixed order at the end
    const int nthreads = sp.outer ? max_threads() : 1;
    std::vector<float> dw_parts(dweight ? size_t(nthreads) * size_t(wsize) : 0, 0.0f);

#pragma omp parallel num_threads(nthreads) if (sp.outer)
    {
        const bool need_col = !direct && !pointwise;
        std::vector<float> col(need_col && dweight ? size_t(kg * len) : 0);
        std::vector<float> dcol(need_col && dx ? size_t(kg * len) : 0);
        std::vector<float> dw_tmp(!direct && dweight ? size_t(cog * kg) : 0);
        float* dw_mine = dweight ? dw_parts.data() + size_t(thread_id()) * size_t(wsize)
                                 : nullptr;
        // static: each thread's part then sums a fixed set of images, so dW is the same from
        // run to run (a dynamic schedule handed images to whichever thread was free, and the
        // parts' sums, hence dW's last bits, changed with it)
#pragma omp for schedule(static)
        for (index_t t = 0; t < tasks; ++t) {
            const index_t b = t / g.groups, grp = t % g.groups;
            const index_t xoff = (b * g.c + grp * cg) * g.h * g.w;
            const float* xg = x + xoff;
            const float* gg = gy + (b * g.co + grp * cog) * len;
            const float* wg = weight + grp * cog * kg;
            float* dxg = dx ? dx + xoff : nullptr;
            float* dwg = dw_mine ? dw_mine + grp * cog * kg : nullptr;
            if (direct) {
                for (index_t m = 0; m < cog; ++m)
                    direct_bwd_plane(xg, wg + m * kg, gg + m * len, dxg,
                                     dwg ? dwg + m * kg : nullptr, g);
                continue;
            }
            if (dwg) {  // dW_g += gy_g (cog, len) @ cols^T (len, kg)
                const float* cols = xg;
                if (!pointwise) {
                    im2col_image(xg, col.data(), g, cg);
                    cols = col.data();
                }
                if (flip) {  // dW_g^T (kg, cog) = cols @ gy_g^T, added transposed
                    gemm_fused(cols, gg, dw_tmp.data(), kg, cog, len, false, true, LowRank{},
                               sp.gemm_threads);
                    for (index_t m = 0; m < cog; ++m)
                        for (index_t q = 0; q < kg; ++q)
                            dwg[m * kg + q] += dw_tmp[size_t(q * cog + m)];
                } else {
                    gemm_fused(gg, cols, dw_tmp.data(), cog, kg, len, false, true, LowRank{},
                               sp.gemm_threads);
                    for (index_t q = 0; q < cog * kg; ++q) dwg[q] += dw_tmp[size_t(q)];
                }
            }
            if (dxg) {  // dcols = W_g^T (kg, cog) @ gy_g (cog, len), scattered onto dx
                if (pointwise) {
                    gemm_fused(wg, gg, dxg, kg, len, cog, true, false, LowRank{},
                               sp.gemm_threads);
                } else {
                    gemm_fused(wg, gg, dcol.data(), kg, len, cog, true, false, LowRank{},
                               sp.gemm_threads);
                    col2im_image(dcol.data(), dxg, g, cg);
                }
            }
        }
    }
    if (dweight) {
        for (int p = 0; p < nthreads; ++p) {
            const float* part = dw_parts.data() + size_t(p) * size_t(wsize);
            for (index_t q = 0; q < wsize; ++q) dweight[q] += part[q];
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the path: shifted windows (conv_direct.cpp) where they apply, im2col + GEMM otherwise

void conv2d_fwd(const float* x, const float* weight, const float* bias, float* y,
                const ConvGeom& g) {
    if (!is_pointwise(g) && conv2d_direct_takes(g))
        conv2d_direct_fwd(x, weight, bias, y, g);
    else
        conv2d_gemm_fwd(x, weight, bias, y, g);
}

void conv2d_bwd(const float* x, const float* weight, const float* gy, float* dx,
                float* dweight, const ConvGeom& g) {
    if (!is_pointwise(g) && conv2d_direct_takes(g))
        conv2d_direct_bwd(x, weight, gy, dx, dweight, g);
    else
        conv2d_gemm_bwd(x, weight, gy, dx, dweight, g);
}

}  // namespace minitl::cpu
