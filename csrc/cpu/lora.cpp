// csrc/cpu/lora.cpp — the fused LoRA linear layer (arXiv:2106.09685):
//   y = x W^T + b + s (x A^T) B^T,   x (N, Din), W (Dout, Din), A (r, Din), B (Dout, r).
//
// Reference: minitl/backend/reference.py: lora_linear_fwd / lora_linear_bwd.
//
// The unfused layer makes three extra passes over an N x Dout array (x A^T B^T, its scaling,
// the sum) in the forward and as many in the backward. Here both big products run through
// gemm_fused (gemm.h), which takes the rank-r factors inside the base GEMM:
//
//   forward   y  = x W^T + s xa B^T + b      xa = x A^T (N, r) computed from x's packed panels;
//                                            s xa B^T and b added as r + 1 extra k steps
//   backward  dx = g W + s gb A              gb = g B (N, r) computed from g's packed panels
//             dA = s gb^T x                  (r, Din): one pass over x
//             dB = s g^T xa                  (Dout, r): one pass over g
//             dW = g^T x, db = sum_rows g    only when W / b are trainable
//
// Napkin math at N=4096, D=1024, r=16, W frozen: the two base GEMMs are 4*N*D^2 = 17.2 GFLOP
// (~95 ms at 180 GFLOP/s on two cores); the rank-r work adds 6*N*D*r = 0.4 GFLOP (2.3%) and
// two reads of a 16 MiB operand (dA, dB), ~2-4 ms at this machine's ~8-16 GB/s.
#include "lora.h"

#include <algorithm>

#include "gemm.h"

namespace minitl::cpu {
namespace {

void scale_in_place(float* p, index_t count, float s) {
    for (index_t i = 0; i < count; ++i) p[i] *= s;
}

// out (d,) = sum of the n rows of g (n, d). Threads take column strips, so each adds into its
// own slice of `out` and every row is read as contiguous runs.
void column_sums(const float* g, index_t n, index_t d, float* out) {
    constexpr index_t kStrip = 256;
    const index_t n_strips = ceil_div(d, kStrip);
    [[maybe_unused]] const bool parallel = double(n) * double(d) > 1e6;  // read by OpenMP only
#pragma omp parallel for schedule(static) if (parallel)
    for (index_t s = 0; s < n_strips; ++s) {
        const index_t j0 = s * kStrip, j1 = std::min(d, j0 + kStrip);
        float* acc = out + j0;
        std::fill(acc, acc + (j1 - j0), 0.0f);
        for (index_t i = 0; i < n; ++i) {
            const float* row = g + i * d;
            for (index_t j = j0; j < j1; ++j) acc[j - j0] += row[j];
        }
    }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// forward

void lora_linear_fwd(const float* x, const float* w, const float* bias, const float* a,
                     const float* bm, float scale, index_t n, index_t din, index_t dout,
                     index_t r, float* y, float* xa) {
    LowRank lr;
    lr.r = r;
    lr.x = a;  // op(X) = A^T (din, r), A stored (r, din)
    lr.trans_x = true;
    lr.u = bm;  // op(U) = B^T (r, dout), B stored (dout, r)
    lr.trans_u = true;
    lr.scale = scale;
    lr.down = xa;
    lr.bias = bias;
    gemm_fused(x, w, y, n, dout, din, /*trans_a=*/false, /*trans_b=*/true, lr);  // x W^T
}

// ---------------------------------------------------------------------------------------------
// backward

namespace {

// dA = s gb^T x, dB = s g^T xa, db = sum_rows g (the gradients that do not involve W).
void factor_grads(const float* g, const float* x, const float* gb, const float* xa, float scale,
                  index_t n, index_t din, index_t dout, index_t r, const LoraGrads& out);

// The low-rank terms of the backward's dx: op(X) = B (dout, r), op(U) = A (r, din).
LowRank backward_low_rank(const float* a, const float* bm, float scale, index_t r, float* gb) {
    LowRank lr;
    lr.r = r;
    lr.x = bm;
    lr.u = a;
    lr.scale = scale;
    lr.down = gb;
    return lr;
}

}  // namespace

void lora_linear_bwd(const float* g, const float* x, const float* w, const float* a,
                     const float* bm, const float* xa, float scale, index_t n, index_t din,
                     index_t dout, index_t r, const LoraGrads& out) {
    aligned_array<float> gb_buf;  // gb = g B (n, r), shared by dx and dA
    float* gb = nullptr;
    if ((out.dx != nullptr || out.da != nullptr) && r > 0) {
        gb_buf = make_aligned<float>(std::size_t(n * r));
        gb = gb_buf.get();
    }
    if (out.dx != nullptr) {  // g W + s gb A
        gemm_fused(g, w, out.dx, n, din, dout, false, false,
                   backward_low_rank(a, bm, scale, r, gb));
    } else if (gb != nullptr) {
        gemm(g, bm, gb, n, r, dout, false, false);
    }
    factor_grads(g, x, gb, xa, scale, n, din, dout, r, out);
    if (out.dw != nullptr) gemm(g, x, out.dw, dout, din, n, true, false);  // g^T x
}

// ---------------------------------------------------------------------------------------------
// QLoRA: the base product is the dequantize-GEMM of qgemm.cpp, with the same low-rank terms

void quant_lora_linear_fwd(const float* x, const QuantMatrix& w, const float* bias,
                           const float* a, const float* bm, float scale, index_t n, index_t r,
                           float* y, float* xa) {
    LowRank lr;
    lr.r = r;
    lr.x = a;  // op(X) = A^T (din, r), A stored (r, din)
    lr.trans_x = true;
    lr.u = bm;  // op(U) = B^T (r, dout), B stored (dout, r)
    lr.trans_u = true;
    lr.scale = scale;
    lr.down = xa;
    lr.bias = bias;
    quant_gemm(x, w, /*transposed=*/true, y, n, lr);  // x W^T + s xa B^T + bias
}

void quant_lora_linear_bwd(const float* g, const float* x, const QuantMatrix& w, const float* a,
                           const float* bm, const float* xa, float scale, index_t n, index_t r,
                           const LoraGrads& out) {
    const index_t din = w.cols, dout = w.rows;
    aligned_array<float> gb_buf;
    float* gb = nullptr;
    if ((out.dx != nullptr || out.da != nullptr) && r > 0) {
        gb_buf = make_aligned<float>(std::size_t(n * r));
        gb = gb_buf.get();
    }
    if (out.dx != nullptr) {  // g W + s gb A
        quant_gemm(g, w, /*transposed=*/false, out.dx, n, backward_low_rank(a, bm, scale, r, gb));
    } else if (gb != nullptr) {
        gemm(g, bm, gb, n, r, dout, false, false);
    }
    factor_grads(g, x, gb, xa, scale, n, din, dout, r, out);
}

namespace {

void factor_grads(const float* g, const float* x, const float* gb, const float* xa, float scale,
                  index_t n, index_t din, index_t dout, index_t r, const LoraGrads& out) {
    // dA = gb^T x and dB = g^T xa each stream a whole (n, d) operand for few flops: memory-
    // bound, and too thin to cut well between threads. Side by side, one thread each, they
    // overlap instead.
    auto d_a = [&](int threads) {
        gemm_fused(gb, x, out.da, r, din, n, /*trans_a=*/true, false, LowRank{}, threads);
        scale_in_place(out.da, r * din, scale);
    };
    auto d_bm = [&](int threads) {
        gemm_fused(g, xa, out.dbm, dout, r, n, /*trans_a=*/true, false, LowRank{}, threads);
        scale_in_place(out.dbm, dout * r, scale);
    };
    if (out.da != nullptr && out.dbm != nullptr && max_threads() >= 2) {
#pragma omp parallel num_threads(2)
        {
            if (thread_id() == 0) d_a(1);
            if (thread_id() == 1 || team_size() == 1) d_bm(1);
        }
    } else {
        if (out.da != nullptr) d_a(0);
        if (out.dbm != nullptr) d_bm(0);
    }
    if (out.db != nullptr) column_sums(g, n, dout, out.db);
}

}  // namespace

}  // namespace minitl::cpu
