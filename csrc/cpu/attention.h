// csrc/cpu/attention.h — scaled dot-product attention, one fused pass per (batch, head).
#pragma once

#include <cstdint>

#include "common.h"

namespace minitl::cpu {

// heads independent problems laid one after another: q (L, E), k (S, E), v (S, Ev) each.
struct AttentionShape {
    index_t heads = 0, l = 0, s = 0, e = 0, ev = 0;
};

// What the scores see besides scale: at most one of `add` (float, added) and `keep` (bool as
// bytes, 0 = masked out), laid out as (heads / slice_heads, rows, S) slices: heads h and h' share
// a slice when h / slice_heads == h' / slice_heads (a padding mask per batch serves all of
// its heads), and row_stride is S, or 0 when one row of S serves every query. `drop`
// (heads, L, S) is dropout's 0 or 1/(1-p) scale on the weights, or null.
struct AttentionMask {
    const float* add = nullptr;
    const std::uint8_t* keep = nullptr;
    index_t slice_heads = 1;
    index_t row_stride = 0;
    const float* drop = nullptr;
};

// p = softmax(scale q k^T + mask) (heads, L, S), kept for backward, and o = (p * drop) v
// (heads, L, Ev); p may be null when backward will not run (the weights then stay in a
// per-thread buffer). A row whose scores are all -inf gets zero weights; one holding NaN or +inf
// follows the reference's arithmetic. Reference: minitl/backend/cpu_attention.py:
// attention_fwd_reference. Bound: 2 L S (E + Ev) flops a head, each product one GEMM tile
// pass from L1/L2 (q, k, v and the L x S weights of a head of 128 fit in L2).
void attention_fwd(const float* q, const float* k, const float* v, const AttentionMask& mask,
                   float scale, const AttentionShape& shape, float* p, float* o);

// Gradients of attention_fwd, each written only where its pointer is not null:
//   dv = (p drop)^T g,  da = drop (g v^T),  ds = p (da - rowsum(da p)),
//   dq = scale ds k,  dk = scale ds^T q,  dmask = ds (heads, L, S).
// Reference: minitl/backend/cpu_attention.py: attention_bwd_reference.
void attention_bwd(const float* g, const float* q, const float* k, const float* v,
                   const float* p, const float* drop, float scale, const AttentionShape& shape,
                   float* dq, float* dk, float* dv, float* dmask);

}  // namespace minitl::cpu
