// csrc/cpu/gelu.h — GELU forward and backward over contiguous float32 buffers.
#pragma once

#include "common.h"

namespace minitl::cpu {

// y = x Phi(x) (exact: erf; else the tanh form), n elements.
void gelu_fwd(const float* x, float* y, index_t n, bool exact);
// dx = g d/dx[x Phi(x)], recomputed from x.
void gelu_bwd(const float* g, const float* x, float* dx, index_t n, bool exact);

}  // namespace minitl::cpu
