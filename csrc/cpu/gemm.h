// csrc/cpu/gemm.h — float32 GEMM C = op(A) @ op(B) and the CPU feature report.
#pragma once

#include <string>

#include "common.h"

namespace minitl::cpu {

// C (m, n) = op(A) (m, k) @ op(B) (k, n), all row-major and contiguous.
// A is stored (m, k), or (k, m) when trans_a; B is stored (k, n), or (n, k) when trans_b.
// k == 0 writes zeros. Reference: minitl/backend/reference.py: gemm.
void gemm(const float* a, const float* b, float* c, index_t m, index_t n, index_t k,
          bool trans_a, bool trans_b);

struct CpuFeatures {
    bool avx2 = false;
    bool fma = false;
    bool avx512f = false;
    int openmp_threads = 1;
    std::string gemm_path;  // micro-kernel that gemm() uses now, e.g. "avx2_fma_6x16"
};

CpuFeatures cpu_features();

// Forces a GEMM path ("auto", "generic", "avx2") so tests can check every path on one
// machine. Returns false, changing nothing, for an unknown name or a path this CPU lacks.
bool set_gemm_path(const std::string& name);

}  // namespace minitl::cpu
