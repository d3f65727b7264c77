// csrc/cpu/qgemm.h — linear maps over weights kept in ggml's quantized blocks (Q4_0, Q4_1,
// Q8_0): the forward and input gradient of a frozen quantized Linear, and row lookups.
#pragma once

#include <cstdint>
#include <string>

#include "common.h"
#include "gemm.h"

namespace minitl::cpu {

// ggml type ids of the block formats the kernels take (minitl/io/gguf_quants.py).
enum QType : int { kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8 };

// Bytes of one 32-value block of `qtype`, or 0 for a type the kernels do not take.
index_t quant_block_bytes(int qtype);

// W (rows, cols) stored row by row, each row cols / 32 blocks of quant_block_bytes(qtype).
struct QuantMatrix {
    const std::uint8_t* data;
    index_t rows, cols;
    int qtype;
};

// C = A (m, k) @ op(W) + the low-rank terms and bias of `lr` (gemm.h: LowRank), with op(W) =
// W^T when `transposed` (the forward: k = cols, C is (m, rows)) or W (the input gradient:
// k = rows, C is (m, cols)). W is dequantized into the GEMM's panels, never stored whole.
void quant_gemm(const float* a, const QuantMatrix& w, bool transposed, float* c, index_t m,
                const LowRank& lr);

// y (m, rows) = x (m, cols) @ W^T + bias (bias may be null).
// Reference: minitl/backend/reference.py: quant_linear_fwd.
void quant_linear_fwd(const float* x, const QuantMatrix& w, const float* bias, float* y,
                      index_t m);

// dx (m, cols) = g (m, rows) @ W. Reference: minitl/backend/reference.py: quant_linear_bwd.
void quant_linear_bwd(const float* g, const QuantMatrix& w, float* dx, index_t m);

// out (n_ids, cols) = W[ids]; every id must lie in [0, rows) (the caller checks).
// Reference: minitl/backend/reference.py: dequantize_rows.
void dequantize_rows(const QuantMatrix& w, const std::int64_t* ids, index_t n_ids, float* out);

// "auto" (default), "generic", "avx2" or "avx512": forces the dequantizing code path so tests
// can check each on one machine. Returns false, changing nothing, for an unknown name or a
// path this CPU lacks. quant_path() names the path in use.
bool set_quant_path(const std::string& name);
std::string quant_path();

}  // namespace minitl::cpu
