// csrc/cpu/qgemm.cpp — linear maps over weights kept in ggml's quantized blocks: the forward
// y = x W^T + b and the input gradient dx = g W of a frozen QuantLinear (QLoRA's base), and
// row lookups (a quantized embedding). W (n, k) stays in its blocks; no float copy of it is
// ever made.
//
// Reference: minitl/backend/reference.py: quant_linear_fwd / quant_linear_bwd /
// dequantize_rows, i.e. dequantize (dequantize_blocks) and multiply. Block layouts (32 values):
//   Q8_0  d f16 | 32 x int8 q          x = d q
//   Q4_0  d f16 | 16 bytes of nibbles  x = d (q - 8)    byte i: value i (low), i + 16 (high)
//   Q4_1  d f16 | m f16 | 16 bytes     x = d q + m
// Dequantization computes exactly what the reference computes (a product, then a sum: no fused
// multiply-add), so a lookup returns the reference's floats bit for bit.
//
// Two ways through a product, chosen by the number of input rows m:
//   m <= 24 (decoding, short prompts): a dot-product kernel reads each block, dequantizes it in
//     registers and multiplies it against up to 4 rows of x at a time; threads split W's rows.
//     Reading W is the bound: Q4_1 is 0.625 bytes a weight, 6.4x less than float32
//     (SmolLM2-135M: 84 MB a token instead of 540 MB).
//   m > 24 (a prompt, a training batch): the cache-blocked GEMM of gemm.cpp, whose B packing is
//     replaced by dequantization into the packed panels (gemm.h: PackB). Each block is
//     dequantized once per GEMM, k values at a time, so the cost is (n k) conversions against
//     2 m n k flops: under 2% of the time at m = 128.
//
// Paths, chosen at run time (never -march=native): generic (portable loops), avx2 (AVX2 + FMA
// + F16C) and avx512 (AVX-512F + F16C), in __attribute__((target)) functions.
#include "qgemm.h"
#include "isa.h"

#include <algorithm>
#include <atomic>
#include <cstring>

#include "gemm.h"

#if MINITL_X86_64
// GCC 12's avx512fintrin.h makes its "undefined" vectors by self-assignment (__Y = __Y) and,
// once those helpers are inlined here, warns about its own header.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define MINITL_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MINITL_AVX512 __attribute__((target("avx512f,fma,f16c")))
#endif

namespace minitl::cpu {
namespace {

constexpr index_t QK = 32;             // values per block
constexpr index_t kGemvMaxRows = 4;  // rows of x one pass of the dot-product kernel takes
// Up to this many rows of x the dot-product kernel (four rows a pass) beats packing W into
// panels: on 1536 x 576 Q4_1, one thread, 0.33 vs 0.63 ms at 12 rows, 0.74 vs 0.77 at 24,
// 0.99 vs 0.93 at 32.
constexpr index_t kGemvMaxM = 24;
// Fewer weights than this run on one thread. One layer of SmolLM2 (0.3-0.9 M weights) takes
// ~0.1 ms on one core, while waking a second OpenMP thread costs microseconds on an idle
// machine but whole scheduler ticks (2-7 ms measured) when other processes hold the cores;
// the 28 M-weight LM head (~2 ms) is worth splitting either way.
constexpr double kParallelWeights = 4 << 20;

std::uint16_t load_u16(const std::uint8_t* p) {
    std::uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

// IEEE half -> float, exactly (subnormals, infinities and NaNs included).
float half_to_float(std::uint16_t h) {
    const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
    std::uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    } else if (mant == 0) {
        bits = sign;
    } else {  // subnormal: shift the leading one into the implicit position
        exp = 113;
        while (!(mant & 0x400u)) mant <<= 1, --exp;
        bits = sign | (exp << 23) | ((mant & 0x3FFu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// ---------------------------------------------------------------------------------------------
// one block -> 32 floats, per path

template <int QT>
void dequant_generic(const std::uint8_t* b, float* out) {
    const float d = half_to_float(load_u16(b));
    if constexpr (QT == kQ8_0) {
        for (index_t i = 0; i < QK; ++i) out[i] = float(std::int8_t(b[2 + i])) * d;
    } else if constexpr (QT == kQ4_0) {
        for (index_t i = 0; i < 16; ++i) {
            out[i] = d * float(int(b[2 + i] & 0x0F) - 8);
            out[i + 16] = d * float(int(b[2 + i] >> 4) - 8);
        }
    } else {
        const float m = half_to_float(load_u16(b + 2));
        for (index_t i = 0; i < 16; ++i) {
            const float lo = d * float(b[4 + i] & 0x0F), hi = d * float(b[4 + i] >> 4);
            out[i] = lo + m;
            out[i + 16] = hi + m;
        }
    }
}

#if MINITL_X86_64
// 32 values as 2 x 16 lanes.
template <int QT>
MINITL_AVX512 inline void dequant_avx512(const std::uint8_t* b, __m512& w0, __m512& w1) {
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(load_u16(b)));
    if constexpr (QT == kQ8_0) {
        const __m128i* q = reinterpret_cast<const __m128i*>(b + 2);
        w0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q))), d);
        w1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(q + 1))), d);
    } else {
        const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(
            b + (QT == kQ4_1 ? 4 : 2)));
        const __m128i mask = _mm_set1_epi8(0x0F);
        __m512i lo = _mm512_cvtepu8_epi32(_mm_and_si128(qs, mask));
        __m512i hi = _mm512_cvtepu8_epi32(_mm_and_si128(_mm_srli_epi16(qs, 4), mask));
        if constexpr (QT == kQ4_0) {
            lo = _mm512_sub_epi32(lo, _mm512_set1_epi32(8));
            hi = _mm512_sub_epi32(hi, _mm512_set1_epi32(8));
            w0 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(lo));
            w1 = _mm512_mul_ps(d, _mm512_cvtepi32_ps(hi));
        } else {
            const __m512 m = _mm512_set1_ps(_cvtsh_ss(load_u16(b + 2)));
            w0 = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(lo)), m);
            w1 = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(hi)), m);
        }
    }
}

template <int QT>
MINITL_AVX512 void dequant_block_avx512(const std::uint8_t* b, float* out) {
    __m512 w0, w1;
    dequant_avx512<QT>(b, w0, w1);
    _mm512_storeu_ps(out, w0);
    _mm512_storeu_ps(out + 16, w1);
}

// 32 values as 4 x 8 lanes.
template <int QT>
MINITL_AVX2 inline void dequant_avx2(const std::uint8_t* b, __m256* w) {
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(load_u16(b)));
    if constexpr (QT == kQ8_0) {
        for (int t = 0; t < 4; ++t) {
            const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + 2 + 8 * t));
            w[t] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
        }
    } else {
        const __m128i qs = _mm_loadu_si128(reinterpret_cast<const __m128i*>(
            b + (QT == kQ4_1 ? 4 : 2)));
        const __m128i mask = _mm_set1_epi8(0x0F);
        const __m128i lo = _mm_and_si128(qs, mask), hi = _mm_and_si128(_mm_srli_epi16(qs, 4),
                                                                        mask);
        const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
        const __m256 m = QT == kQ4_1 ? _mm256_set1_ps(_cvtsh_ss(load_u16(b + 2)))
                                     : _mm256_setzero_ps();
        for (int t = 0; t < 4; ++t) {
            __m256i q = _mm256_cvtepu8_epi32(parts[t]);
            if constexpr (QT == kQ4_0) q = _mm256_sub_epi32(q, _mm256_set1_epi32(8));
            const __m256 v = _mm256_mul_ps(d, _mm256_cvtepi32_ps(q));
            w[t] = QT == kQ4_1 ? _mm256_add_ps(v, m) : v;
        }
    }
}

template <int QT>
MINITL_AVX2 void dequant_block_avx2(const std::uint8_t* b, float* out) {
    __m256 w[4];
    dequant_avx2<QT>(b, w);
    for (int t = 0; t < 4; ++t) _mm256_storeu_ps(out + 8 * t, w[t]);
}
#endif

// ---------------------------------------------------------------------------------------------
// paths

enum class Path : int { Auto, Generic, Avx2, Avx512 };
std::atomic<Path> g_forced{Path::Auto};

bool cpu_has(Path p) {
#if MINITL_X86_64
    __builtin_cpu_init();
    if (p == Path::Avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    if (p == Path::Avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
#endif
    return p == Path::Generic || p == Path::Auto;
}

Path active() {
    const Path forced = g_forced.load(std::memory_order_relaxed);
    if (forced != Path::Auto) return forced;
    // the CPU's widest, capped by MINITL_CPU_ISA; these kernels also need F16C
    static const Path best = isa() == Isa::Avx512 && cpu_has(Path::Avx512) ? Path::Avx512
                             : isa() != Isa::Generic && cpu_has(Path::Avx2) ? Path::Avx2
                                                                             : Path::Generic;
    return best;
}

using DequantFn = void (*)(const std::uint8_t*, float*);

template <int QT>
DequantFn dequant_for(Path p) {
#if MINITL_X86_64
    if (p == Path::Avx512) return dequant_block_avx512<QT>;
    if (p == Path::Avx2) return dequant_block_avx2<QT>;
#endif
    (void)p;
    return dequant_generic<QT>;
}

DequantFn dequant_fn(int qtype, Path p) {
    switch (qtype) {
        case kQ4_0: return dequant_for<kQ4_0>(p);
        case kQ4_1: return dequant_for<kQ4_1>(p);
        default: return dequant_for<kQ8_0>(p);
    }
}

// ---------------------------------------------------------------------------------------------
// m <= 4: dot products straight from the blocks
//
// y[i * n + j] = x_i . W_j + bias_j for the rows j in [j0, j1). Each row of x keeps two
// accumulators (one per half block), so the FMAs of a block do not wait on each other.

template <int QT, int M>
void gemv_generic(const QuantMatrix& w, const float* x, const float* bias, float* y, index_t j0,
                  index_t j1) {
    const index_t k = w.cols, nb = k / QK, bytes = quant_block_bytes(QT);
    alignas(64) float blk[QK];
    for (index_t j = j0; j < j1; ++j) {
        const std::uint8_t* row = w.data + j * nb * bytes;
        float acc[M][QK] = {};
        for (index_t b = 0; b < nb; ++b) {
            dequant_generic<QT>(row + b * bytes, blk);
            for (int i = 0; i < M; ++i)
                for (index_t t = 0; t < QK; ++t) acc[i][t] += x[i * k + b * QK + t] * blk[t];
        }
        for (int i = 0; i < M; ++i) {
            float s = 0.0f;
            for (index_t t = 0; t < QK; ++t) s += acc[i][t];
            y[i * w.rows + j] = s + (bias ? bias[j] : 0.0f);
        }
    }
}

#if MINITL_X86_64
template <int QT, int M>
MINITL_AVX512 void gemv_avx512(const QuantMatrix& w, const float* x, const float* bias, float* y,
                               index_t j0, index_t j1) {
    const index_t k = w.cols, nb = k / QK, bytes = quant_block_bytes(QT);
    for (index_t j = j0; j < j1; ++j) {
        const std::uint8_t* row = w.data + j * nb * bytes;
        __m512 a0[M], a1[M];
        for (int i = 0; i < M; ++i) a0[i] = a1[i] = _mm512_setzero_ps();
        for (index_t b = 0; b < nb; ++b) {
            __m512 w0, w1;
            dequant_avx512<QT>(row + b * bytes, w0, w1);
            for (int i = 0; i < M; ++i) {
                const float* xp = x + i * k + b * QK;
                a0[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xp), w0, a0[i]);
                a1[i] = _mm512_fmadd_ps(_mm512_loadu_ps(xp + 16), w1, a1[i]);
            }
        }
        for (int i = 0; i < M; ++i)
            y[i * w.rows + j] = _mm512_reduce_add_ps(_mm512_add_ps(a0[i], a1[i])) +
                                (bias ? bias[j] : 0.0f);
    }
}

template <int QT, int M>
MINITL_AVX2 void gemv_avx2(const QuantMatrix& w, const float* x, const float* bias, float* y,
                           index_t j0, index_t j1) {
    const index_t k = w.cols, nb = k / QK, bytes = quant_block_bytes(QT);
    for (index_t j = j0; j < j1; ++j) {
        const std::uint8_t* row = w.data + j * nb * bytes;
        __m256 a0[M], a1[M];
        for (int i = 0; i < M; ++i) a0[i] = a1[i] = _mm256_setzero_ps();
        for (index_t b = 0; b < nb; ++b) {
            __m256 v[4];
            dequant_avx2<QT>(row + b * bytes, v);
            for (int i = 0; i < M; ++i) {
                const float* xp = x + i * k + b * QK;
                a0[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp), v[0], a0[i]);
                a1[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + 8), v[1], a1[i]);
                a0[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + 16), v[2], a0[i]);
                a1[i] = _mm256_fmadd_ps(_mm256_loadu_ps(xp + 24), v[3], a1[i]);
            }
        }
        for (int i = 0; i < M; ++i) {
            const __m256 s8 = _mm256_add_ps(a0[i], a1[i]);
            __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
            s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            y[i * w.rows + j] = _mm_cvtss_f32(s) + (bias ? bias[j] : 0.0f);
        }
    }
}
#endif

using GemvFn = void (*)(const QuantMatrix&, const float*, const float*, float*, index_t,
                        index_t);

template <int QT, int M>
GemvFn gemv_for(Path p) {
#if MINITL_X86_64
    if (p == Path::Avx512) return gemv_avx512<QT, M>;
    if (p == Path::Avx2) return gemv_avx2<QT, M>;
#endif
    (void)p;
    return gemv_generic<QT, M>;
}

template <int QT>
GemvFn gemv_rows(int m, Path p) {
    switch (m) {
        case 1: return gemv_for<QT, 1>(p);
        case 2: return gemv_for<QT, 2>(p);
        case 3: return gemv_for<QT, 3>(p);
        default: return gemv_for<QT, 4>(p);
    }
}

void gemv(const float* x, const QuantMatrix& w, const float* bias, float* y, index_t m) {
    const Path p = active();
    GemvFn fn = w.qtype == kQ4_0   ? gemv_rows<kQ4_0>(int(m), p)
                : w.qtype == kQ4_1 ? gemv_rows<kQ4_1>(int(m), p)
                                   : gemv_rows<kQ8_0>(int(m), p);
    // Chunks of rows, several per thread, so a thread slowed by another process leaves its
    // share to the others (dynamic schedule); 64 rows of W are >= 18 KB of Q4_1 at k = 576.
    constexpr index_t kChunk = 64;
    const index_t chunks = ceil_div(w.rows, kChunk);
    [[maybe_unused]] const bool parallel = double(w.rows) * double(w.cols) >= kParallelWeights;
#pragma omp parallel for schedule(dynamic, 1) if (parallel)
    for (index_t c = 0; c < chunks; ++c)
        fn(w, x, bias, y, c * kChunk, std::min(w.rows, (c + 1) * kChunk));
}

// ---------------------------------------------------------------------------------------------
// m > 4: the blocked GEMM, packing op(B) by dequantizing

// op(B) = W^T (forward, k = w.cols) or W (input gradient, k = w.rows).
class QuantPack final : public PackB {
public:
    QuantPack(const QuantMatrix& w, bool transposed)
        : w_(w), trans_(transposed), bytes_(quant_block_bytes(w.qtype)),
          row_bytes_(w.cols / QK * bytes_), dequant_(dequant_fn(w.qtype, active())) {}

    void pack(index_t p0, index_t j0, index_t kc, index_t nr, index_t nr_panel,
              float* dst) const override {
        alignas(64) float blk[QK];
        if (trans_) {  // op(B)[p, j] = W[j0 + j, p0 + p]: block b of row j fills rows p
            for (index_t j = 0; j < nr_panel; ++j) {
                if (j >= nr) {
                    for (index_t p = 0; p < kc; ++p) dst[p * nr_panel + j] = 0.0f;
                    continue;
                }
                const std::uint8_t* row = w_.data + (j0 + j) * row_bytes_;
                for (index_t p = 0; p < kc; p += QK) {
                    dequant_(row + (p0 + p) / QK * bytes_, blk);
                    for (index_t t = 0; t < QK; ++t) dst[(p + t) * nr_panel + j] = blk[t];
                }
            }
            return;
        }
        // op(B)[p, j] = W[p0 + p, j0 + j]: row p0 + p, the blocks covering [j0, j0 + nr)
        for (index_t p = 0; p < kc; ++p) {
            const std::uint8_t* row = w_.data + (p0 + p) * row_bytes_;
            float* out = dst + p * nr_panel;
            for (index_t j = 0; j < nr_panel; j += QK) {
                const index_t c0 = j0 + j;  // first column of this block's part
                const index_t take = std::min(QK, nr_panel - j);
                if (j >= nr) {
                    std::fill(out + j, out + j + take, 0.0f);
                    continue;
                }
                const index_t first = c0 / QK * QK;
                dequant_(row + first / QK * bytes_, blk);
                const index_t skip = c0 - first, valid = std::min(take, nr - j);
                std::memcpy(out + j, blk + skip, std::size_t(valid) * sizeof(float));
                std::fill(out + j + valid, out + j + take, 0.0f);
            }
        }
    }

private:
    const QuantMatrix& w_;
    const bool trans_;
    const index_t bytes_, row_bytes_;
    const DequantFn dequant_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// entry points

index_t quant_block_bytes(int qtype) {
    switch (qtype) {
        case kQ4_0: return 18;
        case kQ4_1: return 20;
        case kQ8_0: return 34;
        default: return 0;
    }
}

void quant_gemm(const float* a, const QuantMatrix& w, bool transposed, float* c, index_t m,
                const LowRank& lr) {
    const index_t n = transposed ? w.rows : w.cols, k = transposed ? w.cols : w.rows;
    if (m <= 0 || n <= 0) return;
    if (k <= 0) {  // an empty weight: the low-rank terms vanish with it
        for (index_t i = 0; i < m; ++i)
            for (index_t j = 0; j < n; ++j) c[i * n + j] = lr.bias ? lr.bias[j] : 0.0f;
        if (lr.r > 0) std::fill(lr.down, lr.down + m * lr.r, 0.0f);
        return;
    }
    if (transposed && m <= kGemvMaxM) {
        for (index_t i0 = 0; i0 < m; i0 += kGemvMaxRows)
            gemv(a + i0 * k, w, lr.bias, c + i0 * n, std::min(kGemvMaxRows, m - i0));
        if (lr.r > 0) {  // down = a op(X), then C += scale down op(U): a few small products
            gemm(a, lr.x, lr.down, m, lr.r, k, false, lr.trans_x);
            aligned_array<float> up = make_aligned<float>(std::size_t(m * n));
            gemm(lr.down, lr.u, up.get(), m, n, lr.r, false, lr.trans_u);
            for (index_t i = 0; i < m * n; ++i) c[i] += lr.scale * up[i];
        }
        return;
    }
    gemm_packed_b(a, QuantPack(w, transposed), c, m, n, k, false, lr);
}

void quant_linear_fwd(const float* x, const QuantMatrix& w, const float* bias, float* y,
                      index_t m) {
    LowRank lr;
    lr.bias = bias;
    quant_gemm(x, w, true, y, m, lr);
}

void quant_linear_bwd(const float* g, const QuantMatrix& w, float* dx, index_t m) {
    quant_gemm(g, w, false, dx, m, LowRank{});
}

void dequantize_rows(const QuantMatrix& w, const std::int64_t* ids, index_t n_ids, float* out) {
    const DequantFn dequant = dequant_fn(w.qtype, active());
    const index_t nb = w.cols / QK, bytes = quant_block_bytes(w.qtype);
    [[maybe_unused]] const bool parallel = double(n_ids) * double(w.cols) >= kParallelWeights;
#pragma omp parallel for schedule(static) if (parallel)
    for (index_t r = 0; r < n_ids; ++r) {
        const std::uint8_t* row = w.data + ids[r] * nb * bytes;
        for (index_t b = 0; b < nb; ++b) dequant(row + b * bytes, out + r * w.cols + b * QK);
    }
}

bool set_quant_path(const std::string& name) {
    const Path p = name == "auto"      ? Path::Auto
                   : name == "generic" ? Path::Generic
                   : name == "avx2"    ? Path::Avx2
                   : name == "avx512"  ? Path::Avx512
                                       : Path(-1);
    if (p == Path(-1) || !cpu_has(p)) return false;
    g_forced.store(p, std::memory_order_relaxed);
    return true;
}

std::string quant_path() {
    switch (active()) {
        case Path::Avx512: return "avx512";
        case Path::Avx2: return "avx2";
        default: return "generic";
    }
}

}  // namespace minitl::cpu
