// csrc/cpu/conv_tiles.h — the register tiles of csrc/cpu/conv_direct.cpp, one set per ISA
// (AVX-512, AVX2 + FMA, portable), and the table that picks them at run time. The drivers
// (planes, layouts, threads) stay in conv_direct.cpp; these are the loops that run at the FMA
// units' speed.
#pragma once

#include <string>

#include "common.h"
#include "gemm.h"

#if MINITL_X86_64
#include <immintrin.h>
#endif

namespace minitl::cpu::conv_tiles {

// ---------------------------------------------------------------------------------------------
// register tiles
//
// fwd tile: out (MR, NV * VW) = wp (K x MR, k-major) against the K windows src + off[k].
// cvec tile: out (R pixels, NV * VW channels) = the same product transposed: channel vectors
//           of wv (K x ldw) times R consecutive pixels of one output row, broadcast.
// dw tile:  acc (MW, NK, VW) += g (MW rows of np) * the windows src + off[j], vector lanes
//           kept apart (summed once at the end).
// dwc tile: acc (NK taps, NV * VW channels) += the windows' pixels, broadcast, times gy
//           transposed (pixels, channels): the valid pixels only, row by row.

template <int MR, int NV>
void fwd_tile_generic(const float* __restrict wp, index_t kn, const float* src,
                      const index_t* __restrict off, float* __restrict out, index_t ldo) {
    constexpr int N = NV * 8;
    float acc[MR][N] = {};
    for (index_t k = 0; k < kn; ++k) {
        const float* s = src + off[k];
        for (int i = 0; i < MR; ++i) {
            const float a = wp[k * MR + i];
            for (int q = 0; q < N; ++q) acc[i][q] += a * s[q];
        }
    }
    for (int i = 0; i < MR; ++i)
        for (int q = 0; q < N; ++q) out[i * ldo + q] = acc[i][q];
}

template <int MW, int NK>
void dw_tile_generic(const float* __restrict g, index_t ldg, const float* src,
                     const index_t* __restrict off, index_t np, index_t nimg, index_t gstep,
                     index_t sstep, float* __restrict acc, index_t lda) {
    float c[MW][NK][8] = {};
    for (index_t b = 0; b < nimg; ++b, g += gstep, src += sstep)
        for (index_t p = 0; p < np; p += 8)
            for (int j = 0; j < NK; ++j) {
                const float* s = src + off[j] + p;
                for (int i = 0; i < MW; ++i)
                    for (int l = 0; l < 8; ++l) c[i][j][l] += g[i * ldg + p + l] * s[l];
            }
    for (int i = 0; i < MW; ++i)
        for (int j = 0; j < NK; ++j)
            for (int l = 0; l < 8; ++l) acc[i * lda + j * 8 + l] += c[i][j][l];
}

#if MINITL_X86_64
// One body for both ISAs: V / P are the vector type and intrinsic prefix, W its lanes. The
// loops have fixed trip counts and are fully unrolled, so the accumulators live in registers.
#define MINITL_CONV_TILES(NAME, TARGET, V, P, W)                                               \
    template <int MR, int NV>                                                                 \
    __attribute__((target(TARGET))) void fwd_tile_##NAME(                                     \
        const float* __restrict wp, index_t kn, const float* src,                             \
        const index_t* __restrict off, float* __restrict out, index_t ldo) {                  \
        V acc[MR][NV];                                                                        \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i)                                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) acc[i][v] = P##_setzero_ps(); \
        for (index_t k = 0; k < kn; ++k) {                                                    \
            const float* s = src + off[k];                                                    \
            V b[NV];                                                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) b[v] = P##_loadu_ps(s + W * v); \
            _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i) {                           \
                const V a = P##_set1_ps(wp[k * MR + i]);                                      \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)                          \
                    acc[i][v] = P##_fmadd_ps(a, b[v], acc[i][v]);                              \
            }                                                                                 \
        }                                                                                     \
        _Pragma("GCC unroll 16") for (int i = 0; i < MR; ++i)                                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)                              \
                P##_storeu_ps(out + i * ldo + W * v, acc[i][v]);                              \
    }                                                                                         \
    template <int NV, int R>                                                                  \
    __attribute__((target(TARGET))) void cvec_tile_##NAME(                                    \
        const float* __restrict wv, index_t ldw, index_t kn, const float* src,                \
        const index_t* __restrict off, float* __restrict out, index_t ldo) {                  \
        V acc[R][NV];                                                                         \
        _Pragma("GCC unroll 32") for (int t = 0; t < R; ++t)                                  \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) acc[t][v] = P##_setzero_ps(); \
        for (index_t k = 0; k < kn; ++k) {                                                    \
            const float* s = src + off[k];                                                    \
            V w[NV];                                                                          \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)                              \
                w[v] = P##_loadu_ps(wv + k * ldw + W * v);                                    \
            _Pragma("GCC unroll 32") for (int t = 0; t < R; ++t) {                            \
                const V a = P##_set1_ps(s[t]);                                                \
                _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)                          \
                    acc[t][v] = P##_fmadd_ps(a, w[v], acc[t][v]);                              \
            }                                                                                 \
        }                                                                                     \
        _Pragma("GCC unroll 32") for (int t = 0; t < R; ++t)                                  \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)                              \
                P##_storeu_ps(out + t * ldo + W * v, acc[t][v]);                              \
    }                                                                                         \
    template <int NV, int NK>                                                                 \
    __attribute__((target(TARGET))) void dwc_tile_##NAME(                                     \
        const float* __restrict gt, index_t ldg, const float* src,                            \
        const index_t* __restrict off, index_t rows, index_t cols, index_t pw, index_t nimg,  \
        index_t gstep, index_t sstep, float* __restrict acc, index_t lda) {                   \
        V c[NK][NV];                                                                          \
        _Pragma("GCC unroll 8") for (int j = 0; j < NK; ++j)                                  \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) c[j][v] = P##_setzero_ps();  \
        for (index_t b = 0; b < nimg; ++b, gt += gstep, src += sstep) {                       \
            const float* s[NK];                                                               \
            _Pragma("GCC unroll 8") for (int j = 0; j < NK; ++j) s[j] = src + off[j];         \
            const float* gp = gt;                                                             \
            for (index_t r = 0; r < rows; ++r)                                                \
                for (index_t q = r * pw; q < r * pw + cols; ++q, gp += ldg) {                 \
                    V gv[NV];                                                                 \
                    _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)                      \
                        gv[v] = P##_loadu_ps(gp + W * v);                                     \
                    _Pragma("GCC unroll 8") for (int j = 0; j < NK; ++j) {                    \
                        const V a = P##_set1_ps(s[j][q]);                                     \
                        _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v)                  \
                            c[j][v] = P##_fmadd_ps(a, gv[v], c[j][v]);                         \
                    }                                                                         \
                }                                                                             \
        }                                                                                     \
        _Pragma("GCC unroll 8") for (int j = 0; j < NK; ++j)                                  \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; ++v) {                            \
                float* a = acc + j * lda + W * v;                                             \
                P##_storeu_ps(a, P##_add_ps(P##_loadu_ps(a), c[j][v]));                       \
            }                                                                                 \
    }                                                                                         \
    template <int MW, int NK>                                                                 \
    __attribute__((target(TARGET))) void dw_tile_##NAME(                                      \
        const float* __restrict g, index_t ldg, const float* src,                             \
        const index_t* __restrict off, index_t np, index_t nimg, index_t gstep,               \
        index_t sstep, float* __restrict acc, index_t lda) {                                  \
        V c[MW][NK];                                                                          \
        _Pragma("GCC unroll 8") for (int i = 0; i < MW; ++i)                                  \
            _Pragma("GCC unroll 8") for (int j = 0; j < NK; ++j) c[i][j] = P##_setzero_ps();  \
        for (index_t b = 0; b < nimg; ++b, g += gstep, src += sstep) {                        \
        const float* s[NK];                                                                   \
        _Pragma("GCC unroll 8") for (int j = 0; j < NK; ++j) s[j] = src + off[j];             \
        for (index_t p = 0; p < np; p += W) {                                                 \
            V gv[MW];                                                                         \
            _Pragma("GCC unroll 8") for (int i = 0; i < MW; ++i)                              \
                gv[i] = P##_loadu_ps(g + i * ldg + p);                                        \
            _Pragma("GCC unroll 8") for (int j = 0; j < NK; ++j) {                            \
                const V sv = P##_loadu_ps(s[j] + p);                                          \
                _Pragma("GCC unroll 8") for (int i = 0; i < MW; ++i)                          \
                    c[i][j] = P##_fmadd_ps(gv[i], sv, c[i][j]);                                \
            }                                                                                 \
        }                                                                                     \
        }                                                                                     \
        _Pragma("GCC unroll 8") for (int i = 0; i < MW; ++i)                                  \
            _Pragma("GCC unroll 8") for (int j = 0; j < NK; ++j) {                            \
                float* a = acc + i * lda + j * W;                                             \
                P##_storeu_ps(a, P##_add_ps(P##_loadu_ps(a), c[i][j]));                       \
            }                                                                                 \
    }

MINITL_CONV_TILES(avx512, "avx512f", __m512, _mm512, 16)
MINITL_CONV_TILES(avx2, "avx2,fma", __m256, _mm256, 8)
#undef MINITL_CONV_TILES
#endif

// The tile shapes of one ISA. VW: floats per vector; the forward tile is MR channels x up
// to 3 vectors of pixels; the weight-gradient tile MW channels x NK taps.
using FwdTile = void (*)(const float*, index_t, const float*, const index_t*, float*, index_t);
using CvecTile = void (*)(const float*, index_t, index_t, const float*, const index_t*,
                          float*, index_t);
using DwcTile = void (*)(const float*, index_t, const float*, const index_t*, index_t, index_t,
                         index_t, index_t, index_t, index_t, float*, index_t);
using DwTile = void (*)(const float*, index_t, const float*, const index_t*, index_t, index_t,
                        index_t, index_t, float*, index_t);

struct Isa {
    index_t vw, mr, mw, nk;
    FwdTile fwd[3];  // 1, 2, 3 vectors of pixels
    DwTile dw;
    CvecTile cvec[3] = {};  // channel tiles of nv[i] vectors x r[i] pixels (null: none)
    index_t cvec_nv[3] = {}, cvec_r[3] = {};
    DwcTile dwc[2] = {};  // weight gradient by channel vectors: dwc_nv[i] vectors x nk taps
    index_t dwc_nv[2] = {};
};

inline Isa isa_generic() {
    return {8, 4, 2, 4,
            {fwd_tile_generic<4, 1>, fwd_tile_generic<4, 2>, fwd_tile_generic<4, 3>},
            dw_tile_generic<2, 4>};
}

// The conv kernels follow the GEMM's path (gemm_path: "avx512f_...", "avx2_...",
// "generic_..."), so forcing a GEMM path in a test exercises these tiles too.
inline Isa pick_isa() {
#if MINITL_X86_64
    const std::string path = cpu_features().gemm_path;
    // 8 x 3 zmm = 24 accumulators + 3 pixel vectors + 1 broadcast of 32 registers;
    // dW: 4 x 6 = 24 + 4 gy vectors + 1 window
    if (path.rfind("avx512", 0) == 0)
        // channel tiles: 28 accumulators (a 14- or 7-pixel row strip, the widths of 14 x 14
        // and 7 x 7 maps) + 2 or 4 filter vectors. One vector x 28 pixels measured slower
        // than the pixel tiles at 16 x 28 x 28 (3.1 against 2.9 ms for 64 images) although
        // it skips the junk columns: 28 broadcasts per filter load.
        return {16, 8, 4, 6,
                {fwd_tile_avx512<8, 1>, fwd_tile_avx512<8, 2>, fwd_tile_avx512<8, 3>},
                dw_tile_avx512<4, 6>,
                {cvec_tile_avx512<2, 14>, cvec_tile_avx512<4, 7>, nullptr},
                {2, 4, 0}, {14, 7, 0}, {dwc_tile_avx512<4, 6>, dwc_tile_avx512<2, 6>}, {4, 2}};
    // 4 x 3 ymm = 12 + 3 + 1 of 16 registers; dW: 3 x 4 = 12 + 3 + 1
    if (path.rfind("avx2", 0) == 0)
        return {8, 4, 3, 4,
                {fwd_tile_avx2<4, 1>, fwd_tile_avx2<4, 2>, fwd_tile_avx2<4, 3>},
                dw_tile_avx2<3, 4>,
                {cvec_tile_avx2<2, 6>, nullptr, nullptr},
                {2, 0, 0}, {6, 0, 0}, {dwc_tile_avx2<2, 4>, nullptr}, {2, 0}};
#endif
    return isa_generic();
}
}  // namespace minitl::cpu::conv_tiles
