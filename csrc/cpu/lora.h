// csrc/cpu/lora.h — the fused LoRA linear layer (arXiv:2106.09685), forward and backward.
#pragma once

#include "common.h"
#include "qgemm.h"

namespace minitl::cpu {

// y (n, dout) = x W^T + bias + scale * xa B^T, with xa (n, r) = x A^T also returned.
// x (n, din), w (dout, din), bias (dout,) or null, a (r, din), bm (dout, r); all contiguous.
// Reference: minitl/backend/reference.py: lora_linear_fwd.
void lora_linear_fwd(const float* x, const float* w, const float* bias, const float* a,
                     const float* bm, float scale, index_t n, index_t din, index_t dout,
                     index_t r, float* y, float* xa);

// Where the backward pass writes each gradient; null means "not needed" and costs nothing.
struct LoraGrads {
    float* dx = nullptr;   // (n, din)    = g W + scale (g B) A
    float* dw = nullptr;   // (dout, din) = g^T x
    float* db = nullptr;   // (dout,)     = sum over rows of g
    float* da = nullptr;   // (r, din)    = scale (g B)^T x
    float* dbm = nullptr;  // (dout, r)   = scale g^T xa
};

// g (n, dout) is dL/dy; xa (n, r) is the forward's x A^T.
// Reference: minitl/backend/reference.py: lora_linear_bwd.
void lora_linear_bwd(const float* g, const float* x, const float* w, const float* a,
                     const float* bm, const float* xa, float scale, index_t n, index_t din,
                     index_t dout, index_t r, const LoraGrads& out);

// QLoRA (arXiv:2305.14314): the same layer over a frozen W kept in ggml blocks (qgemm.h).
// y (n, w.rows) = x W^T + bias + scale * xa B^T, xa = x A^T. Reference:
// minitl/backend/reference.py: quant_lora_linear_fwd.
void quant_lora_linear_fwd(const float* x, const QuantMatrix& w, const float* bias,
                           const float* a, const float* bm, float scale, index_t n, index_t r,
                           float* y, float* xa);

// dx, db, dA, dB of quant_lora_linear_fwd (out.dw must be null: W is frozen). Reference:
// minitl/backend/reference.py: quant_lora_linear_bwd.
void quant_lora_linear_bwd(const float* g, const float* x, const QuantMatrix& w, const float* a,
                           const float* bm, const float* xa, float scale, index_t n, index_t r,
                           const LoraGrads& out);

}  // namespace minitl::cpu
