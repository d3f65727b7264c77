// csrc/cpu/gemm.cpp — cache-blocked float32 GEMM, C = op(A) @ op(B), op = identity | transpose,
// with an optional fused low-rank update (the LoRA layer's kernel, see gemm.h: LowRank).
//
// Reference: minitl/backend/reference.py: gemm, i.e. (a.T if trans_a else a) @ (b.T if trans_b
// else b); the fused form is checked against reference.lora_linear_fwd / _bwd.
//
// Structure (Goto / BLIS): the N dimension is cut into NC-wide blocks, K into KC-deep slices,
// M into MC-tall blocks. Each KC x NC slice of op(B) is packed once into NR-wide micro-panels
// (stays in L3), each MC x KC block of op(A) into MR-tall micro-panels (stays in L2), and an
// MR x NR register-blocked micro-kernel streams one A micro-panel against one B micro-panel
// (in L1), so the inner loop reads only contiguous, aligned memory whatever the transposes.
//
// Threads: C is cut into a static tm x tn grid of rectangles of whole micro-tiles, one per
// thread, as equal as the tile counts allow (a dynamic schedule over MC blocks left one thread
// a whole extra block at 1024^3, ~10% idle). All threads pack a share of each B slice into one
// shared buffer and meet at one barrier per slice; two B buffers alternate, so a thread that
// finishes a slice early packs the next one instead of waiting for the slow thread to be done
// reading. A is packed per thread. The barrier yields its core after a short spin (common.h:
// YieldingBarrier), so on a machine with more runnable threads than cores a waiting thread
// does not burn the time slice its partner needs.
//
// Packing walks each operand in its storage order (see pack_a): the skinny products of the
// LoRA backward pass (16 x 1024 x 4096) are bound by it.
//
// Napkin math: 2*M*N*K flops. One Zen 3 / Haswell-class core retires 2 FMA x 8 lanes = 32
// flop/cycle, ~93 GFLOP/s at 2.9 GHz; the 6x16 kernel issues 2 loads + 6 broadcasts per 12
// FMAs, so it runs at that bound once the panels sit in cache. Memory traffic after packing is
// ~4*(M*K*ceil(N/NC) + K*N + 2*M*N*ceil(K/KC)) bytes: compute-bound once M, N, K pass ~100.
//
// Paths, chosen at run time (the binary targets baseline x86-64, never -march=native):
//   generic      6x16, portable loops the compiler vectorises for the baseline ISA
//   avx2_fma     6x16, AVX2 + FMA intrinsics in __attribute__((target)) functions, x86-64 only
//   avx512f      12x32, AVX-512F intrinsics, x86-64 only
//   generic_12x32  the portable kernel in the AVX-512 path's shape and blocking, only when
//                forced: it runs that path's driver (MR, NR, KC) on CPUs without AVX-512
#include "gemm.h"
#include "gemm_ukernels.h"
#include "isa.h"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace minitl::cpu {
namespace {

// Below this many flops one thread is faster than waking the team.
constexpr double kParallelFlops = 2.0 * 96 * 96 * 96;

using namespace ukernels;  // gemm_ukernels.h: ukernel_generic, ukernel_avx2, ukernel_avx512


// ---------------------------------------------------------------------------------------------
// kernel shapes and their cache blocking
//
// MC x KC of A should fill about a quarter of L2 and KC x NR of B about half of L1, so the
// streamed A micro-panels and C tiles do not evict it; NC x KC of B lives in L3.

struct Generic {
    static constexpr index_t MR = 6, NR = 16, MC = 144, KC = 256, NC = 4096;
    static constexpr auto kernel = ukernel_generic<MR, NR>;
};

struct GenericWide {  // Avx512's tile and blocking, portable code
    static constexpr index_t MR = 12, NR = 32, MC = 144, KC = 192, NC = 4096;
    static constexpr auto kernel = ukernel_generic<MR, NR>;
};

#if MINITL_X86_64
struct Avx2 {  // B micro-panel 256 x 16 x 4 B = 16 KiB of L1; A block 144 KiB of L2
    static constexpr index_t MR = 6, NR = 16, MC = 144, KC = 256, NC = 4096;
    static constexpr auto kernel = ukernel_avx2;
};

struct Avx512 {  // B micro-panel 192 x 32 x 4 B = 24 KiB of L1
    static constexpr index_t MR = 12, NR = 32, MC = 144, KC = 192, NC = 4096;
    static constexpr auto kernel = ukernel_avx512;
};
#endif

// ---------------------------------------------------------------------------------------------
// packing

// Both operands are packed in the order their storage runs: where storage holds step p of
// several micro-panels side by side (a transposed A, an untransposed B), the packing walks it
// row by row. Walking one micro-panel at a time would read kc rows that lie ld apart a few
// floats at a time, and rows 4 KiB apart share a handful of cache sets, so each line came back
// from L3 once for every micro-panel it feeds (the skinny LoRA products ran 20% slower).

// op(A)[i0 : i0+mc, p0 : p0+kc] -> ceil(mc/MR) micro-panels, each kc x MR (k-major) and
// `panel` floats apart; rows past mc are zero so the micro-kernel never branches.
// A is stored (m, k), or (k, m) when trans.
template <index_t MR>
void pack_a(const float* a, index_t lda, bool trans, index_t i0, index_t p0, index_t mc,
            index_t kc, index_t panel, float* __restrict out) {
    const index_t full = mc / MR * MR;  // rows in whole micro-panels
    if (trans) {  // op(A)(i, p) = a[p * lda + i]: stored row p is step p of every micro-panel
        for (index_t p = 0; p < kc; ++p) {
            const float* src = a + (p0 + p) * lda + i0;
            for (index_t ir = 0; ir < full; ir += MR)
                for (index_t i = 0; i < MR; ++i) out[(ir / MR) * panel + p * MR + i] = src[ir + i];
        }
    } else {  // op(A)(i, p) = a[i * lda + p]: MR stored rows streamed side by side
        for (index_t ir = 0; ir < full; ir += MR) {
            const float* src = a + (i0 + ir) * lda + p0;
            float* dst = out + (ir / MR) * panel;
            for (index_t p = 0; p < kc; ++p)
                for (index_t i = 0; i < MR; ++i) dst[p * MR + i] = src[i * lda + p];
        }
    }
    if (full == mc) return;
    const index_t mr = mc - full;  // the last, partial micro-panel, zero-padded
    float* dst = out + (full / MR) * panel;
    for (index_t p = 0; p < kc; ++p)
        for (index_t i = 0; i < MR; ++i) {
            const index_t at = trans ? (p0 + p) * lda + i0 + full + i
                                     : (i0 + full + i) * lda + p0 + p;
            dst[p * MR + i] = i < mr ? a[at] : 0.0f;
        }
}

// op(B)[p0 : p0+kc, j0 : j0 + count*NR] -> `count` whole micro-panels, each kc x NR (k-major)
// and `panel` floats apart. B is stored (k, n), or (n, k) when trans.
template <index_t NR>
void pack_b_panels(const float* b, index_t ldb, bool trans, index_t p0, index_t j0, index_t kc,
                   index_t count, index_t panel, float* __restrict out) {
    if (trans) {  // op(B)(p, j) = b[j * ldb + p]: each stored row is one column of a panel
        for (index_t jp = 0; jp < count; ++jp)
            for (index_t j = 0; j < NR; ++j) {
                const float* src = b + (j0 + jp * NR + j) * ldb + p0;
                for (index_t p = 0; p < kc; ++p) out[jp * panel + p * NR + j] = src[p];
            }
    } else {  // op(B)(p, j) = b[p * ldb + j]: stored row p is step p of every panel
        for (index_t p = 0; p < kc; ++p) {
            const float* src = b + (p0 + p) * ldb + j0;
            for (index_t jp = 0; jp < count; ++jp)
                for (index_t j = 0; j < NR; ++j) out[jp * panel + p * NR + j] = src[jp * NR + j];
        }
    }
}

// op(B)[p0 : p0+kc, j0 : j0+nr] -> one micro-panel kc x NR, columns past nr zero (nr <= NR).
template <index_t NR>
void pack_b_panel(const float* b, index_t ldb, bool trans, index_t p0, index_t j0, index_t kc,
                  index_t nr, float* __restrict dst) {
    for (index_t p = 0; p < kc; ++p)
        for (index_t j = 0; j < NR; ++j)
            dst[p * NR + j] = j >= nr ? 0.0f : trans ? b[(j0 + j) * ldb + p0 + p]
                                                     : b[(p0 + p) * ldb + j0 + j];
}

// One mr x nr tile of C from packed panels: the kernel straight into C, or, where the matrix
// edge cuts the tile, into a scratch tile whose valid part is copied out.
template <class K>
void c_tile(index_t kc, const float* a, const float* b, float* c, index_t ldc, index_t mr,
            index_t nr, bool accumulate) {
    if (mr == K::MR && nr == K::NR) {
        K::kernel(kc, a, b, c, ldc, accumulate);
        return;
    }
    alignas(64) float tile[K::MR * K::NR] = {};
    const std::size_t row_bytes = std::size_t(nr) * sizeof(float);
    if (accumulate)
        for (index_t i = 0; i < mr; ++i) std::memcpy(tile + i * K::NR, c + i * ldc, row_bytes);
    K::kernel(kc, a, b, tile, K::NR, true);
    for (index_t i = 0; i < mr; ++i) std::memcpy(c + i * ldc, tile + i * K::NR, row_bytes);
}

// ---------------------------------------------------------------------------------------------
// the thread grid

// tm x tn = nthreads rectangles of whole micro-tiles. A thread's time per k step is about
// rows * cols / 16 (FMAs, 16 per cycle) plus rows (packing its rows of A, ~1 cycle a float):
// column blocks pack the same rows of A again on every thread, so they win only when M is too
// short to cut (a few micro-tiles), while row blocks share one packed B.
struct Grid {
    int tm = 1, tn = 1;  // row blocks x column blocks
};

Grid choose_grid(int nthreads, index_t mr, index_t nr, index_t tiles_m, index_t tiles_n) {
    Grid best;
    double best_cost = -1.0;
    for (int tm = nthreads; tm >= 1; --tm) {
        if (nthreads % tm != 0) continue;
        const double rows = double(ceil_div(tiles_m, tm) * mr);
        const double cost = rows * double(ceil_div(tiles_n, nthreads / tm) * nr) / 16.0 + rows;
        if (best_cost < 0.0 || cost < best_cost) best = {tm, nthreads / tm}, best_cost = cost;
    }
    return best;
}

// The half-open range [begin, end) of part `i` when `total` items are cut into `parts`.
struct Range {
    index_t begin, end;
};

Range part(index_t total, index_t parts, index_t i) {
    return {i * total / parts, (i + 1) * total / parts};
}

// ---------------------------------------------------------------------------------------------
// the blocked driver

struct Problem {  // see gemm_fused
    const float *a, *b;
    float* c;
    index_t m, n, k;
    bool trans_a, trans_b;
    LowRank lr;
    const PackB* packb = nullptr;  // packs op(B) itself when set (b is then unused)
};

template <class K>
class Driver {
    static constexpr index_t MR = K::MR, NR = K::NR, MC = K::MC, KC = K::KC, NC = K::NC;

public:
    Driver(const Problem& pr, int nthreads)
        : pr_(pr),
          lr_(pr.lr),
          // No more threads than micro-tiles of C.
          nthreads_(int(std::min<index_t>(nthreads, ceil_div(pr.m, MR) * ceil_div(pr.n, NR)))),
          barrier_(nthreads_) {
        lda_ = pr.trans_a ? pr.m : pr.k;
        ldb_ = pr.trans_b ? pr.k : pr.n;
        ldx_ = lr_.trans_x ? pr.k : lr_.r;
        ldu_ = lr_.trans_u ? lr_.r : pr.n;
        r_pad_ = round_up(lr_.r, NR);
        n_down_ = r_pad_ / NR;
        k_ext_ = lr_.r + (lr_.bias != nullptr ? 1 : 0);

        const index_t tiles_m = ceil_div(pr.m, MR), tiles_n = ceil_div(pr.n, NR);
        grid_ = choose_grid(nthreads_, MR, NR, tiles_m, tiles_n);

        // Scratch: two B slices (with the down panels and the extension rows), and per
        // thread one A block and the thread's rows of down.
        const index_t kc_max = std::min(KC, pr.k) + k_ext_;
        const index_t nc_max = std::min(NC, round_up(pr.n, NR)) + r_pad_;
        b_buf_size_ = std::size_t(kc_max * nc_max);
        b_pack_ = make_aligned<float>(2 * b_buf_size_);
        const index_t mc_max = std::min(MC, round_up(ceil_div(tiles_m, grid_.tm) * MR, MR));
        a_buf_size_ = std::size_t(mc_max * kc_max);
        a_pack_ = make_aligned<float>(a_buf_size_ * std::size_t(nthreads_));
        if (lr_.r > 0) {
            const index_t down_rows = ceil_div(tiles_m, grid_.tm) * MR;
            down_buf_size_ = std::size_t(down_rows * r_pad_);
            down_ = make_aligned<float>(down_buf_size_ * std::size_t(nthreads_));
        }
    }

    void run() {
        bool short_team = false;
#pragma omp parallel num_threads(nthreads_) if (nthreads_ > 1)
        {
            // The work is cut for nthreads_; OpenMP may grant fewer (OMP_DYNAMIC, a thread
            // limit, a nested region). Every thread of a team sees the same size, so either
            // all of them run or none does and the caller redoes it on one thread.
            if (team_size() == nthreads_) {
                thread_body(thread_id());
                barrier_.wait();  // arrive together at OpenMP's join, which only spins
            } else if (thread_id() == 0) {
                short_team = true;
            }
        }
        if (short_team) Driver(pr_, 1).run();
    }

private:
    void thread_body(int t) {
        const index_t tiles_m = ceil_div(pr_.m, MR), tiles_n = ceil_div(pr_.n, NR);
        const int im = t / grid_.tn, jn = t % grid_.tn;
        const Range tr = part(tiles_m, grid_.tm, im), tc = part(tiles_n, grid_.tn, jn);
        const index_t row0 = tr.begin * MR, row1 = std::min(pr_.m, tr.end * MR);
        const index_t col0 = tc.begin * NR, col1 = std::min(pr_.n, tc.end * NR);
        float* const ap = a_pack_.get() + std::size_t(t) * a_buf_size_;
        float* const down = lr_.r > 0 ? down_.get() + std::size_t(t) * down_buf_size_ : nullptr;

        index_t slice = 0;
        for (index_t jc = 0; jc < pr_.n; jc += NC) {
            const index_t nc = std::min(NC, pr_.n - jc);
            const index_t n_panels = ceil_div(nc, NR);
            const bool with_down = jc == 0 && lr_.r > 0;  // down is computed once, in block 0
            const index_t all_panels = n_panels + (with_down ? n_down_ : 0);
            // This thread's panels within the block (possibly none).
            const index_t jp0 = std::max<index_t>(col0 - jc, 0) / NR;
            const index_t jp1 = std::max<index_t>(std::min(col1, jc + nc) - jc, 0);
            const index_t my_panels_end = ceil_div(jp1, NR);

            for (index_t pc = 0; pc < pr_.k; pc += KC) {
                const index_t kc = std::min(KC, pr_.k - pc);
                const bool last = pc + kc == pr_.k;
                const index_t ke = kc + (last ? k_ext_ : 0);  // k steps the C tiles run
                float* const bp = b_pack_.get() + std::size_t(slice++ & 1) * b_buf_size_;

                pack_b_share(part(all_panels, nthreads_, t), n_panels, jc, nc, pc, kc, last, ke,
                             bp);
                barrier_.wait();  // the whole slice is packed before anyone reads it

                if (row0 >= row1 || (jp0 >= my_panels_end && !with_down)) continue;
                for (index_t ic = row0; ic < row1; ic += MC) {
                    const index_t mc = std::min(MC, row1 - ic);
                    pack_a<MR>(pr_.a, lda_, pr_.trans_a, ic, pc, mc, kc, ke * MR, ap);
                    float* const down_block = down ? down + (ic - row0) * r_pad_ : nullptr;
                    if (with_down) {
                        for (index_t q = 0; q < n_down_; ++q)
                            for (index_t ir = 0; ir < mc; ir += MR)
                                c_tile<K>(kc, ap + ir * ke, bp + (n_panels + q) * ke * NR,
                                          down_block + ir * r_pad_ + q * NR, r_pad_, MR, NR,
                                          pc > 0);
                    }
                    if (last && k_ext_ > 0) extend_a(mc, kc, ke, down_block, ap);
                    for (index_t jp = jp0; jp < my_panels_end; ++jp) {
                        const index_t nr = std::min(NR, nc - jp * NR);
                        const float* b_panel = bp + jp * ke * NR;
                        for (index_t ir = 0; ir < mc; ir += MR) {
                            const index_t mr = std::min(MR, mc - ir);
                            c_tile<K>(ke, ap + ir * ke, b_panel,
                                      pr_.c + (ic + ir) * pr_.n + jc + jp * NR, pr_.n, mr, nr,
                                      pc > 0);
                        }
                    }
                }
            }
        }
        // Every column group computed the same rows of down; the first one hands them out.
        if (lr_.r > 0 && jn == 0) {
            for (index_t i = row0; i < row1; ++i)
                std::memcpy(lr_.down + i * lr_.r, down + (i - row0) * r_pad_,
                            std::size_t(lr_.r) * sizeof(float));
        }
    }

    // This thread's share of the current B slice, panels [share.begin, share.end): op(B)'s
    // n_panels (plus, on the last slice, the rows op(U) and bias under each), then op(X)'s
    // down-projection panels.
    void pack_b_share(Range share, index_t n_panels, index_t jc, index_t nc, index_t pc,
                      index_t kc, bool last, index_t ke, float* bp) const {
        const index_t panel = ke * NR;
        // whole panels of op(B), packed in storage order (a self-packing B does its own)
        const index_t full_end = pr_.packb ? share.begin : std::min(share.end, nc / NR);
        if (share.begin < full_end)
            pack_b_panels<NR>(pr_.b, ldb_, pr_.trans_b, pc, jc + share.begin * NR, kc,
                              full_end - share.begin, panel, bp + share.begin * panel);
        for (index_t p = share.begin; p < share.end; ++p) {
            float* dst = bp + p * panel;
            if (p >= n_panels) {
                const index_t q0 = (p - n_panels) * NR;
                pack_b_panel<NR>(lr_.x, ldx_, lr_.trans_x, pc, q0, kc, std::min(NR, lr_.r - q0),
                                 dst);
                continue;
            }
            const index_t j0 = jc + p * NR, nr = std::min(NR, nc - p * NR);
            if (pr_.packb)
                pr_.packb->pack(pc, j0, kc, nr, NR, dst);
            else if (p >= full_end)
                pack_b_panel<NR>(pr_.b, ldb_, pr_.trans_b, pc, j0, kc, nr, dst);
            if (!last || k_ext_ == 0) continue;
            dst += kc * NR;
            if (lr_.r > 0) pack_b_panel<NR>(lr_.u, ldu_, lr_.trans_u, 0, j0, lr_.r, nr, dst);
            if (lr_.bias != nullptr) {
                dst += lr_.r * NR;
                for (index_t j = 0; j < NR; ++j) dst[j] = j < nr ? lr_.bias[j0 + j] : 0.0f;
            }
        }
    }

    // Rows kc .. ke of each A micro-panel: scale * down (r rows) and ones (the bias row), so
    // the micro-kernel adds scale * down @ op(U) + bias while it still holds the C tile.
    void extend_a(index_t mc, index_t kc, index_t ke, const float* down_block, float* ap) const {
        for (index_t ir = 0; ir < mc; ir += MR) {
            float* dst = ap + ir * ke + kc * MR;
            for (index_t q = 0; q < lr_.r; ++q)
                for (index_t i = 0; i < MR; ++i)
                    dst[q * MR + i] = lr_.scale * down_block[(ir + i) * r_pad_ + q];
            if (lr_.bias != nullptr)
                for (index_t i = 0; i < MR; ++i) dst[lr_.r * MR + i] = 1.0f;
        }
    }

    const Problem& pr_;
    const LowRank& lr_;
    const int nthreads_;
    YieldingBarrier barrier_;
    index_t lda_ = 0, ldb_ = 0, ldx_ = 0, ldu_ = 0;
    index_t r_pad_ = 0, n_down_ = 0, k_ext_ = 0;
    Grid grid_;
    std::size_t a_buf_size_ = 0, b_buf_size_ = 0, down_buf_size_ = 0;
    aligned_array<float> a_pack_, b_pack_, down_;
};

// ---------------------------------------------------------------------------------------------
// run-time dispatch

enum class Path : int { Auto, Generic, GenericWide, Avx2, Avx512 };

struct PathName {
    const char* option;  // set_gemm_path's argument
    Path path;
    const char* name;  // cpu_features()["gemm_path"]
};

constexpr PathName kPaths[] = {
    {"generic", Path::Generic, "generic_6x16"},
    {"generic_12x32", Path::GenericWide, "generic_12x32"},
    {"avx2", Path::Avx2, "avx2_fma_6x16"},
    {"avx512", Path::Avx512, "avx512f_12x32"},
};

std::atomic<Path> g_forced_path{Path::Auto};

// Whether this CPU can run a path; libgcc's probe also checks that the OS saves the ymm / zmm
// registers (XGETBV).
bool cpu_supports(Path path) {
#if MINITL_X86_64
    __builtin_cpu_init();
    if (path == Path::Avx2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (path == Path::Avx512) return __builtin_cpu_supports("avx512f");
#endif
    return path != Path::Avx2 && path != Path::Avx512;
}

Path active_path() {
    const Path forced = g_forced_path.load(std::memory_order_relaxed);
    if (forced != Path::Auto) return forced;
    switch (isa()) {  // the CPU's widest, capped by MINITL_CPU_ISA
        case Isa::Avx512: return Path::Avx512;
        case Isa::Avx2: return Path::Avx2;
        default: return Path::Generic;
    }
}

template <class K>
void run_with(const Problem& pr, int cap) {
    const double flops = 2.0 * double(pr.m) * double(pr.n) * double(pr.k + pr.lr.r);
    const int threads = flops < kParallelFlops ? 1 : max_threads();
    Driver<K>(pr, cap > 0 ? std::min(cap, threads) : threads).run();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// gemm

void gemm_fused(const float* a, const float* b, float* c, index_t m, index_t n, index_t k,
                bool trans_a, bool trans_b, const LowRank& low_rank, int max_threads) {
    if (m <= 0) return;
    if (low_rank.r > 0 && (k <= 0 || n <= 0))  // down = op(A) @ op(X) is all zeros
        std::fill(low_rank.down, low_rank.down + m * low_rank.r, 0.0f);
    if (n <= 0) return;
    if (k <= 0) {  // C = 0 @ op(U) + bias
        for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < n; ++j) c[i * n + j] = low_rank.bias ? low_rank.bias[j] : 0.0f;
        return;
    }
    const Problem pr{a, b, c, m, n, k, trans_a, trans_b, low_rank};
    switch (active_path()) {
#if MINITL_X86_64
        case Path::Avx512:
            run_with<Avx512>(pr, max_threads);
            return;
        case Path::Avx2:
            run_with<Avx2>(pr, max_threads);
            return;
#endif
        case Path::GenericWide:
            run_with<GenericWide>(pr, max_threads);
            return;
        default:
            run_with<Generic>(pr, max_threads);
    }
}

void gemm_packed_b(const float* a, const PackB& b, float* c, index_t m, index_t n, index_t k,
                   bool trans_a, const LowRank& low_rank, int max_threads) {
    // Shapes the blocked driver does not take never reach it: the callers (qgemm.cpp, lora.cpp)
    // have m, n, k > 0 by construction (a quantized row holds at least one block).
    if (m <= 0 || n <= 0 || k <= 0) return;
    Problem pr{a, nullptr, c, m, n, k, trans_a, false, low_rank};
    pr.packb = &b;
    switch (active_path()) {
#if MINITL_X86_64
        case Path::Avx512:
            run_with<Avx512>(pr, max_threads);
            return;
        case Path::Avx2:
            run_with<Avx2>(pr, max_threads);
            return;
#endif
        case Path::GenericWide:
            run_with<GenericWide>(pr, max_threads);
            return;
        default:
            run_with<Generic>(pr, max_threads);
    }
}

void gemm(const float* a, const float* b, float* c, index_t m, index_t n, index_t k, bool trans_a,
          bool trans_b) {
    gemm_fused(a, b, c, m, n, k, trans_a, trans_b, LowRank{});
}

void gemm_batched(const float* a, const float* b, float* c, index_t batch, index_t m, index_t n,
                  index_t k, bool trans_a, bool trans_b) {
    if (batch == 1) {  // one product: it may use every thread itself
        gemm(a, b, c, m, n, k, trans_a, trans_b);
        return;
    }
    // Whole products per thread: a waiting thread costs a scheduler tick on a machine with
    // more runnable threads than cores, and each product's own team would meet at barriers
    // every k slice; a dynamic schedule lets a thread that got the core take more products.
    [[maybe_unused]] const bool parallel = 2.0 * double(batch) * double(m) * double(n) *
                                               double(k) >= 4 * kParallelFlops;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (index_t i = 0; i < batch; ++i)
        gemm_fused(a + i * m * k, b + i * k * n, c + i * m * n, m, n, k, trans_a, trans_b,
                   LowRank{}, 1);
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
    const Path active = active_path();
    for (const PathName& p : kPaths)
        if (p.path == active) f.gemm_path = p.name;
    return f;
}

bool set_gemm_path(const std::string& name) {
    if (name == "auto") {
        g_forced_path.store(Path::Auto, std::memory_order_relaxed);
        return true;
    }
    for (const PathName& p : kPaths) {
        if (name != p.option) continue;
        if (!cpu_supports(p.path)) return false;
        g_forced_path.store(p.path, std::memory_order_relaxed);
        return true;
    }
    return false;
}

}  // namespace minitl::cpu
