// csrc/cpu/attention.cpp — attention forward and backward, one (batch, head) per task.
//
// The composed op ran five passes over (heads, L, S) arrays in memory (the scores, their
// scale, the softmax, its output and the product), each a separate call with its own
// allocation. Here one thread takes one head at a time: its scores are computed into the
// weights' own slot (64 KiB for L = S = 128, in L2), scaled, masked and normalised there, and
// multiplied by v while still in cache; backward keeps its (L, S) gradient in a per-thread
// buffer. The products run on register tiles that read their operands in place (see "products
// of small row-major matrices" below): a head's matrices sit in L1/L2, so no cache blocking.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "gemm.h"
#include "vec_math.h"

#if MINITL_X86_64
#include <immintrin.h>
#endif

namespace minitl::cpu {
namespace {

// ---------------------------------------------------------------------------------------------
// products of small row-major matrices, read in place
//
// gemm.cpp packs both operands into k-major micro-panels. For a head's products that is a
// transpose of every operand whose rows run along k (q, the weights, dS: most of them), and
// at these sizes the packing cost a quarter of the forward pass. These register tiles read
// op(A) in place instead, by broadcasting A(i, p) straight from memory (a broadcast takes any
// address: row-major, a[i lda + p], or transposed, a[p lda + i]), and B's rows with unaligned
// loads. Only k^T (forward) and v^T (backward) are transposed, once per head.

// A(i, p) = a[i * lda + p], or a[p * lda + i] when TA; B(p, j) = b[p * ldb + j].
// c (MR x NR, ldc) = A (MR x k) @ B (k x NR).
template <index_t MR, index_t NR, bool TA>
void tile_generic(index_t k, const float* a, index_t lda, const float* b, index_t ldb, float* c,
                  index_t ldc) {
    float acc[MR][NR] = {};
    for (index_t p = 0; p < k; ++p)
        for (index_t i = 0; i < MR; ++i) {
            const float ai = TA ? a[p * lda + i] : a[i * lda + p];
            for (index_t j = 0; j < NR; ++j) acc[i][j] += ai * b[p * ldb + j];
        }
    for (index_t i = 0; i < MR; ++i)
        for (index_t j = 0; j < NR; ++j) c[i * ldc + j] = acc[i][j];
}

#if MINITL_X86_64
// Named accumulators, a pair per row, as in gemm_ukernels.h (GCC reloads arrays of vectors).
#define ATTN_ROWS_6(X, ...) \
    X(0, __VA_ARGS__) X(1, __VA_ARGS__) X(2, __VA_ARGS__) X(3, __VA_ARGS__) X(4, __VA_ARGS__) \
    X(5, __VA_ARGS__)
#define ATTN_ROWS_12(X, ...) \
    ATTN_ROWS_6(X, __VA_ARGS__) X(6, __VA_ARGS__) X(7, __VA_ARGS__) X(8, __VA_ARGS__) \
    X(9, __VA_ARGS__) X(10, __VA_ARGS__) X(11, __VA_ARGS__)
#define ATTN_DECLARE(i, V, P, W) V c##i##_0 = P##_setzero_ps(), c##i##_1 = P##_setzero_ps();
#define ATTN_FMA(i, V, P, W)                              \
    {                                                     \
        const V ai = P##_set1_ps(a[(i) * rs]);            \
        c##i##_0 = P##_fmadd_ps(ai, b0, c##i##_0);        \
        c##i##_1 = P##_fmadd_ps(ai, b1, c##i##_1);        \
    }
#define ATTN_STORE(i, V, P, W)                  \
    P##_storeu_ps(c + (i) * ldc, c##i##_0);     \
    P##_storeu_ps(c + (i) * ldc + (W), c##i##_1);

// 6 x 16 in ymm registers: 12 accumulators, 2 rows of B, 1 broadcast.
template <bool TA>
__attribute__((target("avx2,fma"))) void tile_avx2(index_t k, const float* a, index_t lda,
                                                   const float* b, index_t ldb, float* c,
                                                   index_t ldc) {
    const index_t rs = TA ? 1 : lda, cs = TA ? lda : 1;
    ATTN_ROWS_6(ATTN_DECLARE, __m256, _mm256, 8)
    for (index_t p = 0; p < k; ++p) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        ATTN_ROWS_6(ATTN_FMA, __m256, _mm256, 8)
        a += cs;
        b += ldb;
    }
    ATTN_ROWS_6(ATTN_STORE, __m256, _mm256, 8)
}

// 12 x 32 in zmm registers: 24 accumulators, 2 rows of B, 1 broadcast.
template <bool TA>
__attribute__((target("avx512f"))) void tile_avx512(index_t k, const float* a, index_t lda,
                                                    const float* b, index_t ldb, float* c,
                                                    index_t ldc) {
    const index_t rs = TA ? 1 : lda, cs = TA ? lda : 1;
    ATTN_ROWS_12(ATTN_DECLARE, __m512, _mm512, 16)
    for (index_t p = 0; p < k; ++p) {
        const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
        ATTN_ROWS_12(ATTN_FMA, __m512, _mm512, 16)
        a += cs;
        b += ldb;
    }
    ATTN_ROWS_12(ATTN_STORE, __m512, _mm512, 16)
}
#undef ATTN_ROWS_6
#undef ATTN_ROWS_12
#undef ATTN_DECLARE
#undef ATTN_FMA
#undef ATTN_STORE
#endif

struct TileGeneric {
    static constexpr index_t MR = 4, NR = 16;
    static constexpr bool kSimd = false;
    template <bool TA>
    static void kernel(index_t k, const float* a, index_t lda, const float* b, index_t ldb,
                       float* c, index_t ldc) {
        tile_generic<MR, NR, TA>(k, a, lda, b, ldb, c, ldc);
    }
};

#if MINITL_X86_64
struct TileAvx2 {
    static constexpr index_t MR = 6, NR = 16;
    static constexpr bool kSimd = true;
    template <bool TA>
    static void kernel(index_t k, const float* a, index_t lda, const float* b, index_t ldb,
                       float* c, index_t ldc) {
        tile_avx2<TA>(k, a, lda, b, ldb, c, ldc);
    }
};

struct TileAvx512 {
    static constexpr index_t MR = 12, NR = 32;
    static constexpr bool kSimd = true;
    template <bool TA>
    static void kernel(index_t k, const float* a, index_t lda, const float* b, index_t ldb,
                       float* c, index_t ldc) {
        tile_avx512<TA>(k, a, lda, b, ldb, c, ldc);
    }
};
#endif

// Per-thread scratch: the edges of A and B copied out zero-padded (a tile reads whole MR x k
// and k x NR blocks), one C tile, and a transposed operand.
struct Scratch {
    aligned_array<float> a, b, tile, t;
};

// C (m, n), leading dimension ldc, = A (m, k) @ B (k, n): A(i, p) = a[i lda + p] (a[p lda + i]
// when TA), B(p, j) = b[p ldb + j].
template <class T, bool TA>
void small_gemm(const float* a, index_t lda, const float* b, index_t ldb, float* c, index_t ldc,
                index_t m, index_t n, index_t k, Scratch& buf) {
    constexpr index_t MR = T::MR, NR = T::NR;
    for (index_t j0 = 0; j0 < n; j0 += NR) {
        const index_t nr = std::min(NR, n - j0);
        const float* bj = b + j0;
        index_t ldbj = ldb;
        if (nr < NR) {  // the last columns: a tile would read past B's rows
            float* eb = buf.b.get();
            for (index_t p = 0; p < k; ++p) {
                std::copy(b + p * ldb + j0, b + p * ldb + n, eb + p * NR);
                std::fill(eb + p * NR + nr, eb + (p + 1) * NR, 0.0f);
            }
            bj = eb;
            ldbj = NR;
        }
        for (index_t i0 = 0; i0 < m; i0 += MR) {
            const index_t mr = std::min(MR, m - i0);
            float* out = c + i0 * ldc + j0;
            if (mr == MR && nr == NR) {
                T::template kernel<TA>(k, TA ? a + i0 : a + i0 * lda, lda, bj, ldbj, out, ldc);
                continue;
            }
            const float* ai = TA ? a + i0 : a + i0 * lda;
            index_t ldai = lda;
            if (mr < MR) {  // the last rows, padded with zero rows
                float* ea = buf.a.get();
                if (TA) {
                    for (index_t p = 0; p < k; ++p) {
                        std::copy(ai + p * lda, ai + p * lda + mr, ea + p * MR);
                        std::fill(ea + p * MR + mr, ea + (p + 1) * MR, 0.0f);
                    }
                    ldai = MR;
                } else {
                    for (index_t i = 0; i < mr; ++i) std::copy(ai + i * lda, ai + i * lda + k,
                                                               ea + i * k);
                    std::fill(ea + mr * k, ea + MR * k, 0.0f);
                    ldai = k;
                }
                ai = ea;
            }
            float* tile = buf.tile.get();
            T::template kernel<TA>(k, ai, ldai, bj, ldbj, tile, NR);
            for (index_t i = 0; i < mr; ++i)
                std::copy(tile + i * NR, tile + i * NR + nr, out + i * ldc);
        }
    }
}

#if MINITL_X86_64
// t[c * ldt + r] = x[r * ldx + c] for an 8 x 8 block, in registers: 8 loads, 24 shuffles, 8
// stores, where the scalar loop spends a load and a store on every element.
__attribute__((target("avx2"))) void transpose_8x8(const float* x, index_t ldx, float* t,
                                                   index_t ldt) {
    __m256 r[8], u[8];
    for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(x + i * ldx);
    for (int i = 0; i < 8; i += 2) {  // pairs of rows interleaved
        u[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        u[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {  // quads: each 128-bit lane holds one column's 4 rows
        r[i] = _mm256_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int i = 0; i < 4; ++i) {  // the two quads' lanes joined into whole columns
        _mm256_storeu_ps(t + i * ldt, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(t + (i + 4) * ldt, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}
#endif

// t (cols, rows) = x (rows, cols)^T; with Simd, 8 x 8 blocks in registers and the edges
// element by element.
template <bool Simd>
void transpose(const float* x, index_t rows, index_t cols, float* t) {
    index_t r8 = 0, c8 = 0;
#if MINITL_X86_64
    if (Simd) {
        r8 = rows / 8 * 8;
        c8 = cols / 8 * 8;
        for (index_t r = 0; r < r8; r += 8)
            for (index_t c = 0; c < c8; c += 8) transpose_8x8(x + r * cols + c, cols,
                                                              t + c * rows + r, rows);
    }
#endif
    for (index_t r = 0; r < rows; ++r)
        for (index_t c = r < r8 ? c8 : 0; c < cols; ++c) t[c * rows + r] = x[r * cols + c];
}

// ---------------------------------------------------------------------------------------------
// row-wise softmax and its gradient, vectorised

// The reference's arithmetic for a row whose maximum is not finite (all -inf, a NaN, +inf):
// shift 0, e^x, a zero sum taken as 1.
void softmax_row_exact(float* x, index_t n) {
    float sum = 0.0f;
    for (index_t j = 0; j < n; ++j) sum += (x[j] = std::exp(x[j]));
    if (sum == 0.0f) sum = 1.0f;
    for (index_t j = 0; j < n; ++j) x[j] /= sum;
}

// x (n,) <- softmax(scale x + mask row) in place: one pass for the scores and their maximum,
// one for the exponentials and their sum, one to normalise.
MINITL_SIMD_BODY void softmax_row(float* x, index_t n, float scale, const float* add,
                                  const std::uint8_t* keep) {
    float mx = -INFINITY;
    if (keep != nullptr) {
#pragma omp simd reduction(max : mx)
        for (index_t j = 0; j < n; ++j) {
            x[j] = keep[j] ? x[j] * scale : -INFINITY;
            mx = x[j] > mx ? x[j] : mx;
        }
    } else if (add != nullptr) {
#pragma omp simd reduction(max : mx)
        for (index_t j = 0; j < n; ++j) {
            x[j] = x[j] * scale + add[j];
            mx = x[j] > mx ? x[j] : mx;
        }
    } else {
#pragma omp simd reduction(max : mx)
        for (index_t j = 0; j < n; ++j) {
            x[j] *= scale;
            mx = x[j] > mx ? x[j] : mx;
        }
    }
    if (!(std::fabs(mx) <= 3.4e38f)) return softmax_row_exact(x, n);
    // the comparisons above skip a NaN score and exp_nonpositive would map it to 0: it is kept
    // NaN instead, so the sum is NaN and so is every weight of the row, as in the reference
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (index_t j = 0; j < n; ++j) {
        const float t = x[j] - mx;
        x[j] = t == t ? exp_nonpositive(t) : t;
        sum += x[j];
    }
    const float inv = 1.0f / sum;
#pragma omp simd
    for (index_t j = 0; j < n; ++j) x[j] *= inv;
}
MINITL_SIMD_DISPATCH(softmax_row)

// da (n,) <- scale * p (da drop - sum(da drop p)), and dmask <- the same unscaled.
MINITL_SIMD_BODY void softmax_bwd_row(const float* p, float* da, const float* drop, float* dmask,
                                      index_t n, float scale) {
    if (drop != nullptr) {
#pragma omp simd
        for (index_t j = 0; j < n; ++j) da[j] *= drop[j];
    }
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (index_t j = 0; j < n; ++j) dot += da[j] * p[j];
    if (dmask != nullptr) {
#pragma omp simd
        for (index_t j = 0; j < n; ++j) {
            const float ds = da[j] * p[j] - p[j] * dot;
            dmask[j] = ds;
            da[j] = ds * scale;
        }
    } else {
#pragma omp simd
        for (index_t j = 0; j < n; ++j) da[j] = (da[j] * p[j] - p[j] * dot) * scale;
    }
}
MINITL_SIMD_DISPATCH(softmax_bwd_row)

MINITL_SIMD_BODY void multiply(const float* x, const float* y, float* out, index_t n) {
#pragma omp simd
    for (index_t j = 0; j < n; ++j) out[j] = x[j] * y[j];
}
MINITL_SIMD_DISPATCH(multiply)

// ---------------------------------------------------------------------------------------------
// one head at a time

// Scratch for every product of one thread (k never exceeds the largest of L, S, E, Ev) and
// for k^T (E, S) or v^T (Ev, S).
template <class T>
Scratch make_scratch(const AttentionShape& sh) {
    const index_t most = std::max({sh.l, sh.s, sh.e, sh.ev, index_t{1}});
    return {make_aligned<float>(most * T::MR), make_aligned<float>(most * T::NR),
            make_aligned<float>(T::MR * T::NR), make_aligned<float>(std::max(sh.e, sh.ev) * sh.s)};
}

template <class T>
void fwd(const float* q, const float* k, const float* v, const AttentionMask& mask, float scale,
         const AttentionShape& sh, float* p, float* o) {
    const index_t l = sh.l, s = sh.s, e = sh.e, ev = sh.ev;
#pragma omp parallel if (sh.heads > 1)
    {
        Scratch buf = make_scratch<T>(sh);
        aligned_array<float> dropped = make_aligned<float>(mask.drop ? l * s : 1);
        aligned_array<float> own = make_aligned<float>(p == nullptr ? l * s : 1);
#pragma omp for schedule(static)
        for (index_t h = 0; h < sh.heads; ++h) {
            float* ph = p != nullptr ? p + h * l * s : own.get();
            float* kt = buf.t.get();  // (E, S)
            transpose<T::kSimd>(k + h * s * e, s, e, kt);
            small_gemm<T, false>(q + h * l * e, e, kt, s, ph, s, l, s, e, buf);
            const index_t mo = h / mask.slice_heads * (mask.row_stride ? l * s : s);
            for (index_t i = 0; i < l; ++i) {
                const index_t mi = mo + i * mask.row_stride;
                softmax_row_simd(ph + i * s, s, scale, mask.add ? mask.add + mi : nullptr,
                            mask.keep ? mask.keep + mi : nullptr);
            }
            const float* weights = ph;
            if (mask.drop != nullptr) {
                multiply_simd(ph, mask.drop + h * l * s, dropped.get(), l * s);
                weights = dropped.get();
            }
            small_gemm<T, false>(weights, s, v + h * s * ev, ev, o + h * l * ev, ev, l, ev, s,
                                 buf);
        }
    }
}

template <class T>
void bwd(const float* g, const float* q, const float* k, const float* v, const float* p,
         const float* drop, float scale, const AttentionShape& sh, float* dq, float* dk,
         float* dv, float* dmask) {
    const index_t l = sh.l, s = sh.s, e = sh.e, ev = sh.ev;
    const bool need_ds = dq != nullptr || dk != nullptr || dmask != nullptr;
#pragma omp parallel if (sh.heads > 1)
    {
        Scratch buf = make_scratch<T>(sh);
        aligned_array<float> work = make_aligned<float>(l * s);
#pragma omp for schedule(static)
        for (index_t h = 0; h < sh.heads; ++h) {
            const float* ph = p + h * l * s;
            const float* gh = g + h * l * ev;
            const float* droph = drop ? drop + h * l * s : nullptr;
            if (dv != nullptr) {
                const float* weights = ph;
                if (droph != nullptr) {
                    multiply_simd(ph, droph, work.get(), l * s);
                    weights = work.get();
                }
                small_gemm<T, true>(weights, s, gh, ev, dv + h * s * ev, ev, s, ev, l, buf);
            }
            if (!need_ds) continue;
            float* vt = buf.t.get();  // (Ev, S)
            transpose<T::kSimd>(v + h * s * ev, s, ev, vt);
            float* ds = work.get();  // da, then scale * ds in place
            small_gemm<T, false>(gh, ev, vt, s, ds, s, l, s, ev, buf);
            for (index_t i = 0; i < l; ++i)
                softmax_bwd_row_simd(ph + i * s, ds + i * s, droph ? droph + i * s : nullptr,
                                dmask ? dmask + h * l * s + i * s : nullptr, s, scale);
            if (dq != nullptr)
                small_gemm<T, false>(ds, s, k + h * s * e, e, dq + h * l * e, e, l, e, s, buf);
            if (dk != nullptr)
                small_gemm<T, true>(ds, s, q + h * l * e, e, dk + h * s * e, e, s, e, l, buf);
        }
    }
}

// The tile of the path gemm() takes now (set_gemm_path moves both, so tests reach every
// path on one machine).
enum class Path { Generic, Avx2, Avx512 };

Path current_path() {
    const std::string name = cpu_features().gemm_path;
#if MINITL_X86_64
    if (name.rfind("avx512", 0) == 0) return Path::Avx512;
    if (name.rfind("avx2", 0) == 0) return Path::Avx2;
#endif
    return Path::Generic;
}

}  // namespace

void attention_fwd(const float* q, const float* k, const float* v, const AttentionMask& mask,
                   float scale, const AttentionShape& shape, float* p, float* o) {
    if (shape.heads == 0 || shape.l == 0) return;
    switch (current_path()) {
#if MINITL_X86_64
        case Path::Avx512: return fwd<TileAvx512>(q, k, v, mask, scale, shape, p, o);
        case Path::Avx2: return fwd<TileAvx2>(q, k, v, mask, scale, shape, p, o);
#endif
        default: return fwd<TileGeneric>(q, k, v, mask, scale, shape, p, o);
    }
}

void attention_bwd(const float* g, const float* q, const float* k, const float* v,
                   const float* p, const float* drop, float scale, const AttentionShape& shape,
                   float* dq, float* dk, float* dv, float* dmask) {
    if (shape.heads == 0) return;
    switch (current_path()) {
#if MINITL_X86_64
        case Path::Avx512:
            return bwd<TileAvx512>(g, q, k, v, p, drop, scale, shape, dq, dk, dv, dmask);
        case Path::Avx2:
            return bwd<TileAvx2>(g, q, k, v, p, drop, scale, shape, dq, dk, dv, dmask);
#endif
        default: return bwd<TileGeneric>(g, q, k, v, p, drop, scale, shape, dq, dk, dv, dmask);
    }
}

}  // namespace minitl::cpu
