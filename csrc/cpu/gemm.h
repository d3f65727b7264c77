// csrc/cpu/gemm.h — float32 GEMM C = op(A) @ op(B), its fused low-rank form, and the CPU
// feature report.
#pragma once

#include <string>

#include "common.h"

namespace minitl::cpu {

// C (m, n) = op(A) (m, k) @ op(B) (k, n), all row-major and contiguous.
// A is stored (m, k), or (k, m) when trans_a; B is stored (k, n), or (n, k) when trans_b.
// k == 0 writes zeros. Reference: minitl/backend/reference.py: gemm.
void gemm(const float* a, const float* b, float* c, index_t m, index_t n, index_t k,
          bool trans_a, bool trans_b);

// The low-rank terms a fused layer adds to one GEMM (LoRA, arXiv:2106.09685):
//
//   down (m, r) = op(A) @ op(X)                          the rank-r down-projection
//   C    (m, n) = op(A) @ op(B) + scale * down @ op(U) + 1 bias^T
//
// `down` is computed from the packed panels of A, as r extra columns of the product, so op(A)
// is read from memory once; the up-projection and the bias are r + 1 extra steps of the last
// k slice (A's panels get rows scale*down and 1, B's panels get rows op(U) and bias), so they
// cost no extra pass over C. r == 0 leaves only the bias; bias may be null.
struct LowRank {
    index_t r = 0;
    const float* x = nullptr;  // op(X) (k, r): X stored (k, r), or (r, k) when trans_x
    bool trans_x = false;
    const float* u = nullptr;  // op(U) (r, n): U stored (r, n), or (n, r) when trans_u
    bool trans_u = false;
    float scale = 1.0f;
    float* down = nullptr;         // out (m, r), written when r > 0
    const float* bias = nullptr;   // (n,) or null
};

// C[i] = op(A[i]) @ op(B[i]) for i < batch, each (m, n) from (m, k) and (k, n) slices laid one
// after another. The products run one per thread (each single-threaded), so a batch of small
// ones (attention's per-head products) costs one parallel region instead of one each.
// Reference: minitl/backend/reference.py: gemm_batched.
void gemm_batched(const float* a, const float* b, float* c, index_t batch, index_t m, index_t n,
                  index_t k, bool trans_a, bool trans_b);

// max_threads caps the OpenMP team (0: all of them; 1: run on the calling thread alone).
void gemm_fused(const float* a, const float* b, float* c, index_t m, index_t n, index_t k,
                bool trans_a, bool trans_b, const LowRank& low_rank, int max_threads = 0);

// An op(B) that packs itself: weights not stored as floats (csrc/cpu/qgemm.cpp dequantizes ggml
// blocks straight into the panels, so the float matrix never exists). pack() writes
// op(B)[p0 : p0+kc, j0 : j0+nr] as one micro-panel dst[p * nr_panel + j] (kc x nr_panel,
// k-major), columns nr .. nr_panel zero. p0 is a multiple of 64 or the start of the last k
// slice, j0 a multiple of nr_panel.
class PackB {
public:
    virtual ~PackB() = default;
    virtual void pack(index_t p0, index_t j0, index_t kc, index_t nr, index_t nr_panel,
                      float* dst) const = 0;
};

// gemm_fused with op(B) (k, n) packed by `b`: C = op(A) @ op(B) + the low-rank terms and bias.
void gemm_packed_b(const float* a, const PackB& b, float* c, index_t m, index_t n, index_t k,
                   bool trans_a, const LowRank& low_rank, int max_threads = 0);

struct CpuFeatures {
    bool avx2 = false;
    bool fma = false;
    bool avx512f = false;
    int openmp_threads = 1;
    std::string gemm_path;  // micro-kernel that gemm() uses now, e.g. "avx2_fma_6x16"
};

CpuFeatures cpu_features();

// Forces a GEMM path ("auto", "generic", "avx2", "avx512", or "generic_12x32": portable code
// in the AVX-512 path's tile shape) so tests can check every path on one machine. Returns
// false, changing nothing, for an unknown name or a path this CPU lacks.
bool set_gemm_path(const std::string& name);

}  // namespace minitl::cpu
