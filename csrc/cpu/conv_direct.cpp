// csrc/cpu/conv_direct.cpp — conv2d forward, input gradient and weight gradient as sums of
// shifted windows over padded planes (every non-pointwise convolution with more than one
// input channel or 8 filters per group; written for the few-channel maps of small CNNs).
//
// Why: im2col + GEMM (conv.cpp) writes one image's columns (144 x 784 in resnet-mini's first
// stage), then the GEMM packs them again into its panels, and with 16 output channels its
// 12-row micro-tile is a third empty. Here the image is copied once into a zero-padded plane
// per channel, W + 2 floats wide for a 3x3 kernel; output pixel p = r * PW + q then reads tap
// (c, i, j) at plane_c[p + i * PW + j]: every tap is the same plane shifted by a constant, so
// a strip of consecutive output pixels is one unaligned vector load per tap, straight from
// the plane (no columns, no packing), and the products run on a register tile of 8 output
// channels x 48 pixels (AVX-512). The q >= W columns of each output row are junk (they read
// across the row end) and are dropped when the result is copied out: 2 / 30 of the work at
// 28 x 28.
//
// A stride s splits the padded image into s x s phase planes (rows and columns of one
// residue mod s), after which a strided tap is again a shift. The input gradient is the same
// product on the padded gy planes with the transposed, flipped filters, one pass per output
// phase (each phase of dx sees its own subset of taps); the weight gradient reduces
// gy (M, P) against the shifted windows (P, K) with a tile of 4 channels x 6 taps, partial
// sums kept as vectors until the last image of a chunk.
//
// Small maps (14 x 14, 7 x 7) waste more on junk columns (7 x 7: 64 pixels computed for 49),
// so there the tiles turn around: 2 or 4 channel vectors x a 14- or 7-pixel strip of one
// output row, each tap's pixels broadcast, the result transposed on the way out; dW takes
// channel vectors x 6 taps against gy transposed. Each product takes the layout with fewer
// multiply-adds (Layout, layout_for). Measured on one Zen 4 core, 64 images, fwd / dx / dW
// (ms): 64 -> 64 at 7 x 7 went 3.0 / 3.1 / 3.7 -> 2.4 / 2.4 / 2.5.
//
// Napkin math (one Zen 4 / Ice Lake core, 2 x 256-bit or 1 x 512-bit FMA per cycle, ~32
// flop/cycle): resnet-mini's 16 -> 16 3x3 stage over 64 images is 231 MFLOP per pass, ~2.1 ms
// at the FMA bound at 3.5 GHz (2.8 ms measured, junk columns included; torch 2.5); per k step
// the tile issues 3 loads and 8 broadcasts for 24 FMAs, and the planes of one image
// (16 x 30 x 30 floats, 58 KB) stay in L2.
//
// Exactness: the zero padding is multiplied, so a non-finite filter would turn a padded tap
// into NaN where the reference drops the tap, and junk columns would carry a non-finite input
// into the weight gradient; such operands go to the im2col + GEMM path (conv.cpp).
//
// Reference: minitl/backend/cpu_conv.py (conv2d_fwd_reference, conv2d_bwd_reference).
#include "conv_direct.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "conv_tiles.h"

namespace minitl::cpu {

namespace {

using namespace conv_tiles;  // conv_tiles.h: Isa, pick_isa and the tiles

std::atomic<int> g_conv_path{0};  // 0 auto, 1 gemm, 2 direct

// ---------------------------------------------------------------------------------------------
// padded phase planes
//
// plane (c, phase a, b)[t][u] = src[c][t * st + a - top][u * su + b - left], zero outside src.

struct Planes {
    index_t channels, h, w;          // the source
    index_t top, left, st, su;       // padding and stride of the sampling
    std::vector<index_t> pa, pb;     // the phases in use, (row, column) residues
    index_t ph = 0, pw = 0;          // plane rows, columns
    index_t size = 0;                // floats, with the slack that strip overruns read

    index_t plane() const { return ph * pw; }
    index_t count() const { return index_t(pa.size()); }
};

// Whether one of the n floats at v is a NaN or an infinity (all exponent bits set). Integer
// tests OR-ed together, so the loop vectorises; a float test summed in a loop is one serial
// chain of adds that cost as much as the copy into the planes.
bool any_non_finite(const float* v, index_t n) {
    std::uint32_t hit = 0;
    for (index_t i = 0; i < n; ++i) {
        std::uint32_t bits;
        std::memcpy(&bits, v + i, sizeof bits);
        hit |= std::uint32_t((bits & 0x7f800000u) == 0x7f800000u);
    }
    return hit != 0;
}

// Copies src into the planes.
void build_planes(const Planes& P, const float* src, float* out) {
    const index_t nph = P.count(), plane = P.plane();
    for (index_t c = 0; c < P.channels; ++c) {
        const float* sc = src + c * P.h * P.w;
        for (index_t s = 0; s < nph; ++s) {
            float* pl = out + (c * nph + s) * plane;
            const index_t b = P.pb[size_t(s)];
            // columns u whose source column u * su + b - left lies in [0, w)
            index_t ulo = P.left > b ? ceil_div(P.left - b, P.su) : 0;
            index_t uhi = ceil_div(P.w + P.left - b, P.su);
            ulo = std::min(ulo, P.pw);
            uhi = std::max(ulo, std::min(uhi, P.pw));
            for (index_t t = 0; t < P.ph; ++t) {
                float* __restrict row = pl + t * P.pw;
                const index_t sr = t * P.st + P.pa[size_t(s)] - P.top;
                if (sr < 0 || sr >= P.h) {
                    std::fill(row, row + P.pw, 0.0f);
                    continue;
                }
                // restrict: the plane never overlaps the source, so the copy vectorises
                // without a run-time overlap check per row
                const float* __restrict in = sc + sr * P.w + b - P.left;
                for (index_t u = 0; u < ulo; ++u) row[u] = 0.0f;
                if (P.su == 1) {
                    for (index_t u = ulo; u < uhi; ++u) row[u] = in[u];
                } else {
                    for (index_t u = ulo; u < uhi; ++u) row[u] = in[u * P.su];
                }
                for (index_t u = uhi; u < P.pw; ++u) row[u] = 0.0f;
            }
        }
    }
    std::fill(out + P.channels * nph * plane, out + P.size, 0.0f);
}

// The slot of phase (a, b) in P, added when new.
index_t phase_slot(Planes& P, index_t a, index_t b) {
    for (index_t s = 0; s < P.count(); ++s)
        if (P.pa[size_t(s)] == a && P.pb[size_t(s)] == b) return s;
    P.pa.push_back(a);
    P.pb.push_back(b);
    return P.count() - 1;
}

// ---------------------------------------------------------------------------------------------
// one shifted-window product: out (ceil(M / MR) * MR, ldo) = wpk panels against the windows,
// for pixels [0, np), np a multiple of VW, strips of 3, 2 or 1 vectors

// The next task's input, fetched into cache a slice per tile while this task computes: its
// rows are read once, into the planes, and from memory that read stalled the copy (a tenth
// of the forward pass at 16 x 28 x 28).
struct Prefetch {
    const char* p = nullptr;
    index_t lines = 0, per_tile = 0;

    Prefetch(const float* next, index_t floats, index_t tiles)
        : p(reinterpret_cast<const char*>(next)),
          lines(next ? ceil_div(floats * index_t(sizeof(float)), 64) : 0),
          per_tile(ceil_div(lines, std::max<index_t>(tiles, 1))) {}

    void step() {
        for (index_t i = 0; i < per_tile && lines > 0; ++i, --lines, p += 64)
            __builtin_prefetch(p, 0, 2);
    }
};

void shifted_product(const Isa& isa, const float* wpk, index_t m, index_t kn,
                     const float* planes, const index_t* off, index_t np, float* out,
                     index_t ldo, Prefetch& pf) {
    const index_t panels = ceil_div(m, isa.mr), strip = 3 * isa.vw;
    for (index_t p0 = 0; p0 < np;) {
        const index_t nv = std::min<index_t>(3, (np - p0) / isa.vw);
        for (index_t pb = 0; pb < panels; ++pb)
            isa.fwd[nv - 1](wpk + pb * kn * isa.mr, kn, planes + p0, off,
                            out + pb * isa.mr * ldo + p0, ldo);
        pf.step();
        p0 += nv == 3 ? strip : nv * isa.vw;
    }
}

// wpk[panel][k][i] = w(panel * mr + i, k) for the rows m < rows, zero beyond
template <class W>
void pack_rows(index_t rows, index_t kn, index_t mr, W w, float* wpk) {
    const index_t panels = ceil_div(rows, mr);
    for (index_t pb = 0; pb < panels; ++pb)
        for (index_t k = 0; k < kn; ++k)
            for (index_t i = 0; i < mr; ++i) {
                const index_t r = pb * mr + i;
                wpk[(pb * kn + k) * mr + i] = r < rows ? w(r, k) : 0.0f;
            }
}

// How one product (m filters x kn taps against the windows of rows x cols output pixels on
// planes pw wide) is tiled: filters x pixel vectors over the flat pixel range, junk columns
// included, or channel vectors x a strip of one output row, which computes no junk column
// but writes out transposed. Whichever does fewer multiply-adds (7 x 7 maps: 64 x 49 against
// 64 x 64 per image), the pixel tiles when it is close.
struct Layout {
    bool by_channel = false;
    index_t m = 0, kn = 0, rows = 0, cols = 0, pw = 0;
    index_t mp = 0;          // m padded to the tile
    index_t np = 0;          // pixel tiles: flat pixels computed, a multiple of VW
    index_t cv = 0, r = 0;   // channel tiles: which one, its pixels
    index_t rc = 0;          // channel tiles: cols rounded up to r
    // out (i, row, col) = out[i s_m + row s_row + col s_col]
    index_t s_m = 0, s_row = 0, s_col = 0;

    index_t out_size() const { return by_channel ? rows * rc * mp : mp * np; }
    index_t reach() const { return by_channel ? (rows - 1) * pw + rc : np; }  // past an offset
};

Layout layout_for(const Isa& isa, index_t m, index_t kn, index_t rows, index_t cols,
                  index_t pw) {
    Layout L;
    L.m = m, L.kn = kn, L.rows = rows, L.cols = cols, L.pw = pw;
    L.np = round_up((rows - 1) * pw + cols, isa.vw);
    L.mp = round_up(m, isa.mr);
    double best = 0.95 * double(L.mp * L.np);
    for (index_t i = 0; i < 3; ++i) {
        if (!isa.cvec[i] || kn < 16) continue;  // short k loops: the tile's stores dominate
        const index_t mp = round_up(m, isa.cvec_nv[i] * isa.vw);
        const index_t rc = round_up(cols, isa.cvec_r[i]);
        const double cost = double(mp * rows * rc);
        if (cost < best) best = cost, L.by_channel = true, L.cv = i, L.mp = mp, L.rc = rc;
    }
    if (L.by_channel) {
        L.r = isa.cvec_r[L.cv];
        L.s_m = 1, L.s_row = L.rc * L.mp, L.s_col = L.mp;
    } else {
        L.s_m = L.np, L.s_row = pw, L.s_col = 1;
    }
    return L;
}

// The filters w(i, k) in L's tile order: panels of mr rows, or (kn, mp) rows of channels.
template <class W>
std::vector<float> pack_for(const Isa& isa, const Layout& L, W w) {
    std::vector<float> out(size_t(L.mp * L.kn), 0.0f);
    if (!L.by_channel) {
        pack_rows(L.m, L.kn, isa.mr, w, out.data());
        return out;
    }
    for (index_t k = 0; k < L.kn; ++k)
        for (index_t i = 0; i < L.m; ++i) out[size_t(k * L.mp + i)] = w(i, k);
    return out;
}

// Runs L's product; `next` (`floats` long, may be null) is fetched into cache meanwhile.
void run_layout(const Isa& isa, const Layout& L, const float* wpk, const float* planes,
                const index_t* off, float* out, const float* next, index_t floats) {
    if (!L.by_channel) {
        Prefetch pf(next, floats, ceil_div(L.np, 3 * isa.vw));
        shifted_product(isa, wpk, L.m, L.kn, planes, off, L.np, out, L.np, pf);
        return;
    }
    const CvecTile tile = isa.cvec[L.cv];
    const index_t width = isa.cvec_nv[L.cv] * isa.vw;
    Prefetch pf(next, floats, ceil_div(L.mp, width) * L.rows);
    for (index_t mb = 0; mb < L.mp; mb += width)
        for (index_t row = 0; row < L.rows; ++row) {
            for (index_t q0 = 0; q0 < L.cols; q0 += L.r)
                tile(wpk + mb, L.mp, L.kn, planes + row * L.pw + q0, off,
                     out + (row * L.rc + q0) * L.mp + mb, L.mp);
            pf.step();
        }
}

// The forward planes of x (one group's channels) and each tap's offset into them.
struct FwdPlan {
    Planes planes;
    std::vector<index_t> off;  // (cg, kh, kw) taps
    index_t npos = 0, np = 0;  // pixels (r * pw + q) spanned, rounded up to whole vectors
};

FwdPlan fwd_plan(const ConvGeom& g, index_t vw, index_t extra_k) {
    FwdPlan f;
    Planes& P = f.planes;
    const index_t cg = g.c / g.groups;
    P.channels = cg, P.h = g.h, P.w = g.w;
    P.top = g.ph, P.left = g.pw, P.st = g.sh, P.su = g.sw;
    index_t amax = 0, bmax = 0;
    for (index_t i = 0; i < g.kh; ++i) amax = std::max(amax, i * g.dh / g.sh);
    for (index_t j = 0; j < g.kw; ++j) bmax = std::max(bmax, j * g.dw / g.sw);
    P.ph = g.oh + amax, P.pw = g.ow + bmax;
    std::vector<index_t> slot(size_t(g.kh * g.kw));
    for (index_t i = 0; i < g.kh; ++i)
        for (index_t j = 0; j < g.kw; ++j)
            slot[size_t(i * g.kw + j)] = phase_slot(P, i * g.dh % g.sh, j * g.dw % g.sw);
    for (index_t c = 0; c < cg; ++c)
        for (index_t i = 0; i < g.kh; ++i)
            for (index_t j = 0; j < g.kw; ++j)
                f.off.push_back((c * P.count() + slot[size_t(i * g.kw + j)]) * P.plane() +
                                i * g.dh / g.sh * P.pw + j * g.dw / g.sw);
    f.off.resize(size_t(round_up(index_t(f.off.size()), extra_k)), 0);  // dW's tap tail
    f.npos = (g.oh - 1) * P.pw + g.ow;
    f.np = round_up(f.npos, vw);
    const index_t reach = *std::max_element(f.off.begin(), f.off.end()) + f.np;
    P.size = std::max(P.channels * P.count() * P.plane(), reach);
    return f;
}

}  // namespace

bool set_conv_path(const std::string& name) {
    const int v = name == "auto" ? 0 : name == "gemm" ? 1 : name == "direct" ? 2 : -1;
    if (v < 0) return false;
    g_conv_path.store(v);
    return true;
}

std::string conv_path() {
    const int v = g_conv_path.load();
    return v == 0 ? "auto" : v == 1 ? "gemm" : "direct";
}

bool conv2d_direct_takes(const ConvGeom& g) {
    const int path = g_conv_path.load();
    // one input channel per group: depthwise's direct kernel (conv.cpp) wins below 8 filters
    if (path == 1 || (g.c / g.groups < 2 && g.co / g.groups < 8) || g.co == 0 || g.n == 0)
        return false;
    return path == 2 || g.n * g.groups >= index_t(max_threads());
}

// ---------------------------------------------------------------------------------------------
// forward

void conv2d_direct_fwd(const float* x, const float* weight, const float* bias, float* y,
                       const ConvGeom& g) {
    const Isa isa = pick_isa();
    const index_t cg = g.c / g.groups, cog = g.co / g.groups, kg = cg * g.kh * g.kw;
    const index_t len = g.oh * g.ow, tasks = g.n * g.groups;
    FwdPlan f = fwd_plan(g, isa.vw, 1);
    Planes& P = f.planes;
    const Layout L = layout_for(isa, cog, kg, g.oh, g.ow, P.pw);
    P.size = std::max(P.size, *std::max_element(f.off.begin(), f.off.end()) + L.reach());
    std::vector<std::vector<float>> wpk;
    for (index_t grp = 0; grp < g.groups; ++grp) {
        const float* wg = weight + grp * cog * kg;
        wpk.push_back(pack_for(isa, L, [&](index_t r, index_t k) { return wg[r * kg + k]; }));
    }
#pragma omp parallel
    {
        std::vector<float> planes(size_t(P.size)), out(size_t(L.out_size()));
#pragma omp for schedule(dynamic, 1)
        for (index_t t = 0; t < tasks; ++t) {
            const index_t b = t / g.groups, grp = t % g.groups;
            build_planes(P, x + (b * g.c + grp * cg) * g.h * g.w, planes.data());
            const float* next = t + 1 < tasks ? x + ((t + 1) / g.groups * g.c +
                                                     (t + 1) % g.groups * cg) * g.h * g.w
                                              : nullptr;
            run_layout(isa, L, wpk[size_t(grp)].data(), planes.data(), f.off.data(), out.data(),
                       next, cg * g.h * g.w);
            float* yg = y + (b * g.co + grp * cog) * len;
            for (index_t m = 0; m < cog; ++m) {
                const float bv = bias ? bias[grp * cog + m] : 0.0f;
                for (index_t r = 0; r < g.oh; ++r) {
                    const float* __restrict src = out.data() + m * L.s_m + r * L.s_row;
                    float* __restrict dst = yg + m * len + r * g.ow;
                    if (L.s_col == 1) {  // contiguous: vectorised
                        for (index_t q = 0; q < g.ow; ++q) dst[q] = src[q] + bv;
                    } else {
                        for (index_t q = 0; q < g.ow; ++q) dst[q] = src[q * L.s_col] + bv;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// backward

namespace {

// dx of one phase (residues fh, fw of h + ph, w + pw mod the stride): rows A in [a0, a1) and
// columns B in [b0, b1) of that phase, dx[A sh + fh - ph][B sw + fw - pw]; the taps whose
// i dh has residue fh (and j dw residue fw), each reading gy shifted back by its quotient.
struct DxPhase {
    index_t fh, fw, a0, a1, b0, b1;
    index_t kn = 0;  // cog x taps
    std::vector<index_t> off;
    Layout L;
    std::vector<std::vector<float>> wpk;  // per group
};

}  // namespace

void conv2d_direct_bwd(const float* x, const float* weight, const float* gy, float* dx,
                       float* dweight, const ConvGeom& g) {
    const Isa isa = pick_isa();
    const index_t cg = g.c / g.groups, cog = g.co / g.groups, kg = cg * g.kh * g.kw;
    const index_t len = g.oh * g.ow, tasks = g.n * g.groups, hw = g.h * g.w;
    if (dx) std::fill(dx, dx + g.n * g.c * hw, 0.0f);
    if (dweight) std::fill(dweight, dweight + g.co * kg, 0.0f);
    if (tasks == 0 || len == 0 || (!dx && !dweight)) return;
    // a non-finite filter would meet the multiplied padding: that dx takes the GEMM path
    if (dx && !std::all_of(weight, weight + g.co * kg, [](float v) { return v - v == 0.0f; })) {
        conv2d_gemm_bwd(x, weight, gy, dx, nullptr, g);
        dx = nullptr;
        if (!dweight) return;
    }

    // weight gradient: x planes as in the forward pass, gy laid out on their pixel grid
    const FwdPlan f = fwd_plan(g, isa.vw, isa.nk);
    const index_t kp = index_t(f.off.size()), mwp = round_up(cog, isa.mw);
    // or by channel vectors against gy transposed, when skipping the junk columns saves work
    index_t dwc = 0, wc = 0, mcp = 0;  // the tile with the fewest padded channels
    for (index_t i = 0; i < 2; ++i) {
        const index_t width = isa.dwc_nv[i] * isa.vw;
        if (isa.dwc[i] && (mcp == 0 || round_up(cog, width) < mcp))
            dwc = i, wc = width, mcp = round_up(cog, width);
    }
    const bool dw_by_channel = mcp > 0 && kg >= 16 &&
                               double(mcp * len) < 0.95 * double(mwp * f.np);
    const index_t acc_size = g.groups * kp * (dw_by_channel ? mcp : mwp * isa.vw);

    // input gradient: gy planes padded by the largest tap quotient, one pass per dx phase
    index_t amax = 0, bmax = 0;
    for (index_t i = 0; i < g.kh; ++i) amax = std::max(amax, i * g.dh / g.sh);
    for (index_t j = 0; j < g.kw; ++j) bmax = std::max(bmax, j * g.dw / g.sw);
    std::vector<DxPhase> phases;
    Planes G;
    G.channels = cog, G.h = g.oh, G.w = g.ow, G.st = G.su = 1;
    G.pa = {0}, G.pb = {0};
    index_t a1max = 0, b1max = 0, a0min = g.h, b0min = g.w;
    if (dx) {
        for (index_t fh = 0; fh < g.sh; ++fh)
            for (index_t fw = 0; fw < g.sw; ++fw) {
                DxPhase d{fh, fw, ceil_div(std::max<index_t>(g.ph - fh, 0), g.sh),
                          std::max<index_t>(ceil_div(g.h + g.ph - fh, g.sh), 0),
                          ceil_div(std::max<index_t>(g.pw - fw, 0), g.sw),
                          std::max<index_t>(ceil_div(g.w + g.pw - fw, g.sw), 0)};
                if (d.a1 <= d.a0 || d.b1 <= d.b0) continue;
                a1max = std::max(a1max, d.a1), b1max = std::max(b1max, d.b1);
                a0min = std::min(a0min, d.a0), b0min = std::min(b0min, d.b0);
                phases.push_back(d);
            }
        // gy row r sits at plane row r + top: the smallest offset any (phase, tap) reads is
        // row 0, so no plane row or column is read by nobody (a wider plane is more junk)
        G.top = amax - a0min, G.left = bmax - b0min;
        G.ph = a1max + G.top, G.pw = b1max + G.left;
        index_t reach = 0;
        for (DxPhase& d : phases) {
            std::vector<index_t> ti, tj;
            for (index_t i = 0; i < g.kh; ++i)
                for (index_t j = 0; j < g.kw; ++j)
                    if (i * g.dh % g.sh == d.fh && j * g.dw % g.sw == d.fw)
                        ti.push_back(i), tj.push_back(j);
            const index_t nt = index_t(ti.size());
            d.kn = cog * nt;
            for (index_t m = 0; m < cog; ++m)
                for (index_t t = 0; t < nt; ++t)
                    d.off.push_back(m * G.plane() +
                                    (d.a0 + G.top - ti[size_t(t)] * g.dh / g.sh) * G.pw +
                                    d.b0 + G.left - tj[size_t(t)] * g.dw / g.sw);
            if (nt == 0) continue;
            d.L = layout_for(isa, cg, d.kn, d.a1 - d.a0, d.b1 - d.b0, G.pw);
            reach = std::max(reach, *std::max_element(d.off.begin(), d.off.end()) + d.L.reach());
            for (index_t grp = 0; grp < g.groups; ++grp) {
                const float* wg = weight + grp * cog * kg;
                d.wpk.push_back(pack_for(isa, d.L, [&](index_t c, index_t k) {
                    const index_t m = k / nt, t = k % nt;
                    return wg[((m * cg + c) * g.kh + ti[size_t(t)]) * g.kw + tj[size_t(t)]];
                }));
            }
        }
        G.size = std::max(G.channels * G.plane(), reach);
    }
    index_t out_size = 0;
    for (const DxPhase& d : phases) out_size = std::max(out_size, d.L.out_size());

    // The weight gradient's tile runs over a chunk of images at once, so its partial sums
    // go to memory once per chunk: ~256 KB of x planes, in L2.
    const index_t psize = f.planes.size, gsize = dw_by_channel ? len * mcp : mwp * f.np;
    const index_t chunk = std::clamp<index_t>((index_t(1) << 16) / std::max<index_t>(psize, 1),
                                              1, 8);
    const index_t chunks = ceil_div(g.n, chunk), jobs = chunks * g.groups;
    const int nthreads = max_threads();
    std::vector<float> acc_parts(dweight ? size_t(nthreads) * size_t(acc_size) : 0, 0.0f);
    std::atomic<bool> x_finite{true};
#pragma omp parallel num_threads(nthreads)
    {
        std::vector<float> xplanes(dweight ? size_t(chunk * psize) : 0);
        std::vector<float> gflat(dweight ? size_t(chunk * gsize) : 0, 0.0f);
        std::vector<float> gplanes(dx ? size_t(G.size) : 0);
        std::vector<float> out(dx ? size_t(out_size) : 0);
        float* acc = dweight ? acc_parts.data() + size_t(thread_id()) * size_t(acc_size)
                             : nullptr;
        // static, so each thread's partial dW sums a fixed set of jobs and dW is the same from
        // run to run (see conv.cpp's backward)
#pragma omp for schedule(static)
        for (index_t job = 0; job < jobs; ++job) {
            const index_t b0 = job / g.groups * chunk, grp = job % g.groups;
            const index_t nimg = std::min(chunk, g.n - b0);
            for (index_t b = b0; b < b0 + nimg; ++b) {
                const float* gg = gy + (b * g.co + grp * cog) * len;
                if (dweight) {
                    float* xp = xplanes.data() + (b - b0) * psize;
                    const float* xg = x + (b * g.c + grp * cg) * hw;
                    build_planes(f.planes, xg, xp);
                    if (any_non_finite(xg, cg * hw))
                        x_finite.store(false, std::memory_order_relaxed);
                    float* gf = gflat.data() + (b - b0) * gsize;
                    if (dw_by_channel) {  // (len, mcp): channels of one pixel side by side
                        for (index_t m = 0; m < cog; ++m)
                            for (index_t q = 0; q < len; ++q) gf[q * mcp + m] = gg[m * len + q];
                    } else {
                        for (index_t m = 0; m < cog; ++m)
                            for (index_t r = 0; r < g.oh; ++r)
                                std::copy(gg + m * len + r * g.ow,
                                          gg + m * len + (r + 1) * g.ow,
                                          gf + m * f.np + r * f.planes.pw);
                    }
                }
                if (!dx) continue;
                build_planes(G, gg, gplanes.data());
                float* dxg = dx + (b * g.c + grp * cg) * hw;
                // the next image's gy (and x, for dW), fetched during the first phase
                const float* next_g = b + 1 < g.n ? gg + g.co * len : nullptr;
                const float* next_x = dweight && b + 1 < g.n
                                          ? x + ((b + 1) * g.c + grp * cg) * hw : nullptr;
                bool first = true;
                for (const DxPhase& d : phases) {
                    if (d.kn == 0) continue;  // no tap lands on this phase: dx stays zero
                    run_layout(isa, d.L, d.wpk[size_t(grp)].data(), gplanes.data(),
                               d.off.data(), out.data(), first ? next_g : nullptr,
                               cog * len);
                    if (first && next_x) {
                        Prefetch pf(next_x, cg * hw, 1);
                        pf.step();
                    }
                    first = false;
                    const Layout& L = d.L;
                    for (index_t c = 0; c < cg; ++c)
                        for (index_t a = d.a0; a < d.a1; ++a) {
                            const float* __restrict src =
                                out.data() + c * L.s_m + (a - d.a0) * L.s_row - d.b0 * L.s_col;
                            float* __restrict dst = dxg + c * hw +
                                                    (a * g.sh + d.fh - g.ph) * g.w + d.fw - g.pw;
                            if (g.sw == 1 && L.s_col == 1) {  // contiguous: vectorised
                                for (index_t q = d.b0; q < d.b1; ++q) dst[q] = src[q];
                            } else {
                                for (index_t q = d.b0; q < d.b1; ++q)
                                    dst[q * g.sw] = src[q * L.s_col];
                            }
                        }
                }
            }
            if (!dweight) continue;
            if (dw_by_channel) {
                float* ag = acc + grp * kp * mcp;  // (kp, mcp)
                for (index_t m0 = 0; m0 < cog; m0 += wc)
                    for (index_t k0 = 0; k0 < kp; k0 += isa.nk)
                        isa.dwc[dwc](gflat.data() + m0, mcp, xplanes.data(), f.off.data() + k0,
                                g.oh, g.ow, f.planes.pw, nimg, gsize, psize,
                                ag + k0 * mcp + m0, mcp);
                continue;
            }
            float* ag = acc + grp * mwp * kp * isa.vw;
            for (index_t m0 = 0; m0 < cog; m0 += isa.mw)
                for (index_t k0 = 0; k0 < kp; k0 += isa.nk)
                    isa.dw(gflat.data() + m0 * f.np, f.np, xplanes.data(), f.off.data() + k0,
                           f.np, nimg, gsize, psize, ag + (m0 * kp + k0) * isa.vw,
                           kp * isa.vw);
        }
    }
    if (dweight && !x_finite.load()) {  // junk columns met the non-finite input
        conv2d_gemm_bwd(x, weight, gy, nullptr, dweight, g);
        return;
    }
    if (dweight) {  // thread parts in a fixed order, then each vector's lanes
        for (int p = 1; p < nthreads; ++p) {
            const float* part = acc_parts.data() + size_t(p) * size_t(acc_size);
            for (index_t q = 0; q < acc_size; ++q) acc_parts[size_t(q)] += part[q];
        }
        for (index_t grp = 0; grp < g.groups; ++grp)
            for (index_t m = 0; m < cog; ++m)
                for (index_t k = 0; k < kg; ++k) {
                    if (dw_by_channel) {
                        dweight[(grp * cog + m) * kg + k] =
                            acc_parts[size_t((grp * kp + k) * mcp + m)];
                        continue;
                    }
                    const float* v = acc_parts.data() + ((grp * mwp + m) * kp + k) * isa.vw;
                    float s = 0.0f;
                    for (index_t l = 0; l < isa.vw; ++l) s += v[l];
                    dweight[(grp * cog + m) * kg + k] = s;
                }
    }
}

}  // namespace minitl::cpu
