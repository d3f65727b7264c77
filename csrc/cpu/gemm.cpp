// csrc/cpu/gemm.cpp — cache-blocked float32 GEMM, C = op(A) @ op(B), op = identity | transpose.
//
// Reference: minitl/backend/reference.py: gemm, i.e. (a.T if trans_a else a) @ (b.T if trans_b
// else b).
//
// Structure (Goto / BLIS): the N dimension is cut into NC-wide blocks, K into KC-deep slices,
// M into MC-tall blocks. Each KC x NC slice of op(B) is packed once into NR-wide micro-panels
// (stays in L3), each MC x KC block of op(A) into MR-tall micro-panels (stays in L2), and an
// MR x NR register-blocked micro-kernel streams one A micro-panel against one B micro-panel
// (in L1), so the inner loop reads only contiguous, aligned memory whatever the transposes.
// OpenMP splits the MC blocks (and, when there are fewer blocks than threads, the NR panels)
// across threads; B packing is shared, A packing is per thread.
//
// Napkin math: 2*M*N*K flops. One core with AVX2+FMA retires 2 FMA x 8 lanes = 32 flop/cycle,
// ~100 GFLOP/s at 3 GHz; the 6x16 kernel needs 2 vector loads + 6 broadcasts per 12 FMAs, so it
// can approach that bound. The baseline SSE2 path has a 4-lane ceiling (~1/4 of it). Memory
// traffic after packing is ~4*(M*K*ceil(N/NC) + K*N + 2*M*N*ceil(K/KC)) bytes: compute-bound
// once M, N, K are past ~64.
//
// Paths, chosen at run time (the binary targets baseline x86-64, never -march=native):
//   generic      portable loops the compiler vectorises for the baseline ISA (SSE2, NEON, ...)
//   avx2_fma     AVX2 + FMA intrinsics in __attribute__((target)) functions, x86-64 only
#include "gemm.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#if MINITL_X86_64
#include <immintrin.h>
#endif

namespace minitl::cpu {
namespace {

// ---------------------------------------------------------------------------------------------
// blocking

constexpr index_t MR = 6;     // micro-tile rows: 6 x 2 ymm accumulators + 2 B + 1 A = 15 of 16
constexpr index_t NR = 16;    // micro-tile columns: two 8-float vectors
constexpr index_t MC = 144;   // A block 144 x 256 x 4 B = 144 KiB, fits L2
constexpr index_t KC = 256;   // B micro-panel 256 x 16 x 4 B = 16 KiB, fits L1
constexpr index_t NC = 4080;  // B slice 256 x 4080 x 4 B = 4 MiB, fits L3
static_assert(MC % MR == 0 && NC % NR == 0, "blocks hold whole micro-tiles");

// Below this many flops one thread is faster than waking the team.
constexpr double kParallelFlops = 2.0 * 96 * 96 * 96;

// c (MR x NR, leading dimension ldc) = (accumulate ? c : 0) + a_panel @ b_panel, where
// a_panel is kc x MR (k-major) and b_panel is kc x NR (k-major), both packed and aligned.
using MicroKernel = void (*)(index_t kc, const float* a, const float* b, float* c, index_t ldc,
                             bool accumulate);

// ---------------------------------------------------------------------------------------------
// micro-kernels

// Portable: fixed trip counts let the compiler keep acc in vector registers on any ISA.
void ukernel_generic(index_t kc, const float* __restrict a, const float* __restrict b,
                     float* __restrict c, index_t ldc, bool accumulate) {
    float acc[MR][NR] = {};
    for (index_t p = 0; p < kc; ++p) {
        for (index_t i = 0; i < MR; ++i) {
            const float ai = a[i];
            for (index_t j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
        }
        a += MR;
        b += NR;
    }
    for (index_t i = 0; i < MR; ++i) {
        float* row = c + i * ldc;
        if (accumulate) {
            for (index_t j = 0; j < NR; ++j) row[j] += acc[i][j];
        } else {
            for (index_t j = 0; j < NR; ++j) row[j] = acc[i][j];
        }
    }
}

#if MINITL_X86_64
// One row of the tile: broadcast a[i], two FMAs against the 16 columns of b.
#define MINITL_FMA_ROW(i)                              \
    do {                                               \
        const __m256 ai = _mm256_broadcast_ss(a + (i)); \
        c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);    \
        c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);    \
    } while (0)

#define MINITL_STORE_ROW(i)                                                          \
    do {                                                                             \
        float* row = c + (i) * ldc;                                                  \
        if (accumulate) {                                                            \
            c##i##0 = _mm256_add_ps(c##i##0, _mm256_loadu_ps(row));                  \
            c##i##1 = _mm256_add_ps(c##i##1, _mm256_loadu_ps(row + 8));              \
        }                                                                            \
        _mm256_storeu_ps(row, c##i##0);                                              \
        _mm256_storeu_ps(row + 8, c##i##1);                                          \
    } while (0)

__attribute__((target("avx2,fma"))) void ukernel_avx2(index_t kc, const float* __restrict a,
                                                      const float* __restrict b,
                                                      float* __restrict c, index_t ldc,
                                                      bool accumulate) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (index_t p = 0; p < kc; ++p) {
        const __m256 b0 = _mm256_load_ps(b);
        const __m256 b1 = _mm256_load_ps(b + 8);
        MINITL_FMA_ROW(0);
        MINITL_FMA_ROW(1);
        MINITL_FMA_ROW(2);
        MINITL_FMA_ROW(3);
        MINITL_FMA_ROW(4);
        MINITL_FMA_ROW(5);
        a += MR;
        b += NR;
    }
    MINITL_STORE_ROW(0);
    MINITL_STORE_ROW(1);
    MINITL_STORE_ROW(2);
    MINITL_STORE_ROW(3);
    MINITL_STORE_ROW(4);
    MINITL_STORE_ROW(5);
}
#undef MINITL_FMA_ROW
#undef MINITL_STORE_ROW
#endif  // MINITL_X86_64

// ---------------------------------------------------------------------------------------------
// run-time dispatch

enum class Path : int { Auto = 0, Generic = 1, Avx2 = 2 };

std::atomic<int> g_forced_path{static_cast<int>(Path::Auto)};

bool cpu_has_avx2_fma() {
#if MINITL_X86_64
    // libgcc's probe also checks that the OS saves the ymm state (XGETBV).
    static const bool has = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }();
    return has;
#else
    return false;
#endif
}

Path active_path() {
    const auto forced = static_cast<Path>(g_forced_path.load(std::memory_order_relaxed));
    if (forced != Path::Auto) return forced;
    return cpu_has_avx2_fma() ? Path::Avx2 : Path::Generic;
}

MicroKernel kernel_for(Path path) {
#if MINITL_X86_64
    if (path == Path::Avx2) return ukernel_avx2;
#endif
    (void)path;
    return ukernel_generic;
}

const char* path_name(Path path) {
    return path == Path::Avx2 ? "avx2_fma_6x16" : "generic_6x16";
}

// ---------------------------------------------------------------------------------------------
// packing

// op(A)[i0 : i0+mc, p0 : p0+kc] -> ceil(mc/MR) micro-panels, each kc x MR (k-major); rows past
// mc are zero so the micro-kernel never branches. A is stored (m, k), or (k, m) when trans.
void pack_a(const float* a, index_t lda, bool trans, index_t i0, index_t p0, index_t mc,
            index_t kc, float* __restrict out) {
    for (index_t ir = 0; ir < mc; ir += MR) {
        const index_t mr = std::min(MR, mc - ir);
        float* dst = out + ir * kc;
        if (trans) {  // op(A)(i, p) = a[p * lda + i]: MR contiguous floats per p
            for (index_t p = 0; p < kc; ++p) {
                const float* src = a + (p0 + p) * lda + i0 + ir;
                for (index_t i = 0; i < mr; ++i) dst[p * MR + i] = src[i];
                for (index_t i = mr; i < MR; ++i) dst[p * MR + i] = 0.0f;
            }
        } else if (mr == MR) {  // op(A)(i, p) = a[i * lda + p]: MR rows streamed side by side
            const float* src = a + (i0 + ir) * lda + p0;
            for (index_t p = 0; p < kc; ++p)
                for (index_t i = 0; i < MR; ++i) dst[p * MR + i] = src[i * lda + p];
        } else {
            for (index_t p = 0; p < kc; ++p) {
                for (index_t i = 0; i < mr; ++i) dst[p * MR + i] = a[(i0 + ir + i) * lda + p0 + p];
                for (index_t i = mr; i < MR; ++i) dst[p * MR + i] = 0.0f;
            }
        }
    }
}

// op(B)[p0 : p0+kc, j0 : j0+nr] -> one micro-panel kc x NR (k-major), columns past nr zero.
// B is stored (k, n), or (n, k) when trans.
void pack_b_panel(const float* b, index_t ldb, bool trans, index_t p0, index_t j0, index_t kc,
                  index_t nr, float* __restrict dst) {
    if (trans) {  // op(B)(p, j) = b[j * ldb + p]: walk each stored row contiguously
        for (index_t j = 0; j < nr; ++j) {
            const float* src = b + (j0 + j) * ldb + p0;
            for (index_t p = 0; p < kc; ++p) dst[p * NR + j] = src[p];
        }
        for (index_t j = nr; j < NR; ++j)
            for (index_t p = 0; p < kc; ++p) dst[p * NR + j] = 0.0f;
    } else {  // op(B)(p, j) = b[p * ldb + j]: NR contiguous floats per p
        for (index_t p = 0; p < kc; ++p) {
            const float* src = b + (p0 + p) * ldb + j0;
            for (index_t j = 0; j < nr; ++j) dst[p * NR + j] = src[j];
            for (index_t j = nr; j < NR; ++j) dst[p * NR + j] = 0.0f;
        }
    }
}

// A tile cut by the matrix edge: run the full kernel on a scratch tile, copy the valid part.
void edge_tile(MicroKernel kernel, index_t kc, const float* a, const float* b, float* c,
               index_t ldc, index_t mr, index_t nr, bool accumulate) {
    alignas(64) float tile[MR * NR] = {};
    const std::size_t row_bytes = std::size_t(nr) * sizeof(float);
    if (accumulate)
        for (index_t i = 0; i < mr; ++i) std::memcpy(tile + i * NR, c + i * ldc, row_bytes);
    kernel(kc, a, b, tile, NR, true);
    for (index_t i = 0; i < mr; ++i) std::memcpy(c + i * ldc, tile + i * NR, row_bytes);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// gemm

void gemm(const float* a, const float* b, float* c, index_t m, index_t n, index_t k, bool trans_a,
          bool trans_b) {
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {
        std::fill(c, c + m * n, 0.0f);
        return;
    }
    const MicroKernel kernel = kernel_for(active_path());
    const index_t lda = trans_a ? m : k;
    const index_t ldb = trans_b ? k : n;

    const index_t kc_max = std::min(KC, k);
    const index_t mc_max = std::min(MC, round_up(m, MR));
    const index_t nc_max = std::min(NC, round_up(n, NR));
    const double flops = 2.0 * double(m) * double(n) * double(k);
    const int nthreads = flops < kParallelFlops ? 1 : max_threads();

    auto b_pack = make_aligned<float>(std::size_t(kc_max * nc_max));
    auto a_pack = make_aligned<float>(std::size_t(mc_max * kc_max) * std::size_t(nthreads));
    float* const bp = b_pack.get();
    float* const ap_all = a_pack.get();
    const index_t n_ic = ceil_div(m, MC);

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float* const ap = ap_all + std::size_t(thread_id()) * std::size_t(mc_max * kc_max);
        for (index_t jc = 0; jc < n; jc += NC) {
            const index_t nc = std::min(NC, n - jc);
            const index_t n_panels = ceil_div(nc, NR);
            // Fewer M blocks than threads: also split the panels, so every thread has work.
            const index_t n_split =
                std::max<index_t>(1, std::min<index_t>(n_panels, ceil_div(nthreads, n_ic)));
            for (index_t pc = 0; pc < k; pc += KC) {
                const index_t kc = std::min(KC, k - pc);
                const bool accumulate = pc > 0;

#pragma omp for schedule(static)
                for (index_t jp = 0; jp < n_panels; ++jp) {
                    const index_t jr = jp * NR;
                    pack_b_panel(b, ldb, trans_b, pc, jc + jr, kc, std::min(NR, nc - jr),
                                 bp + jr * kc);
                }
                // (implicit barrier: the whole B slice is packed before anyone reads it)

                index_t packed_ic = -1;  // consecutive tasks on one M block reuse its packing
#pragma omp for schedule(dynamic, 1)
                for (index_t t = 0; t < n_ic * n_split; ++t) {
                    const index_t ic = (t / n_split) * MC;
                    const index_t split = t % n_split;
                    const index_t mc = std::min(MC, m - ic);
                    if (ic != packed_ic) {
                        pack_a(a, lda, trans_a, ic, pc, mc, kc, ap);
                        packed_ic = ic;
                    }
                    const index_t jp_begin = split * n_panels / n_split;
                    const index_t jp_end = (split + 1) * n_panels / n_split;
                    for (index_t jp = jp_begin; jp < jp_end; ++jp) {
                        const index_t jr = jp * NR;
                        const index_t nr = std::min(NR, nc - jr);
                        const float* b_panel = bp + jr * kc;
                        for (index_t ir = 0; ir < mc; ir += MR) {
                            const index_t mr = std::min(MR, mc - ir);
                            float* c_tile = c + (ic + ir) * n + jc + jr;
                            const float* a_panel = ap + ir * kc;
                            if (mr == MR && nr == NR)
                                kernel(kc, a_panel, b_panel, c_tile, n, accumulate);
                            else
                                edge_tile(kernel, kc, a_panel, b_panel, c_tile, n, mr, nr,
                                          accumulate);
                        }
                    }
                }
                // (implicit barrier: nobody repacks B while another thread still reads it)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// features and path selection

CpuFeatures cpu_features() {
    CpuFeatures f;
#if MINITL_X86_64
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
#endif
    f.openmp_threads = max_threads();
    f.gemm_path = path_name(active_path());
    return f;
}

bool set_gemm_path(const std::string& name) {
    Path path;
    if (name == "auto") {
        path = Path::Auto;
    } else if (name == "generic") {
        path = Path::Generic;
    } else if (name == "avx2") {
        if (!cpu_has_avx2_fma()) return false;
        path = Path::Avx2;
    } else {
        return false;
    }
    g_forced_path.store(static_cast<int>(path), std::memory_order_relaxed);
    return true;
}

}  // namespace minitl::cpu
