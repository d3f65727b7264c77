// csrc/cpu/rowwise.h — kernels that reduce along each row of a contiguous float32 matrix:
// softmax, layer_norm and softmax cross-entropy, forward and backward.
//
// References: minitl/backend/reference.py (softmax_fwd/_bwd, layernorm_fwd/_bwd,
// softmax_xent_fwd/_bwd); the wrappers in minitl/backend/cpu_rowwise.py. Every matrix is
// (rows, n) row-major; optional operands (weight, bias, outputs not asked for) are null.
#pragma once

#include <cstdint>

#include "common.h"

namespace minitl::cpu {

// y = e^(x - max) / sum e^(x - max) per row. With `safe` a row whose max is not finite gets
// the reference's treatment (max taken as 0: an all -inf row gives zeros); without it such a
// row is NaN, as is any row holding a NaN.
void softmax_fwd(const float* x, float* y, index_t rows, index_t n, bool safe);
// dx = g y - y sum(g y) per row.
void softmax_bwd(const float* g, const float* y, float* dx, index_t rows, index_t n);

// y = (x - mean) rstd w + b per row of d, with the biased variance of the centred values;
// mean and rstd (rows) are kept for the backward pass. w, b may be null.
void layernorm_fwd(const float* x, const float* w, const float* b, float eps, float* y,
                   float* mean, float* rstd, index_t rows, index_t d);
// dx = rstd (dh - mean(dh) - xhat mean(dh xhat)) with dh = g w;  dw = sum g xhat;
// db = sum g. Any of dx, dw, db may be null (not computed); w may be null (all ones).
// dw and db are summed over a fixed number of row chunks, so their bits do not depend on
// the thread count.
void layernorm_bwd(const float* g, const float* x, const float* mean, const float* rstd,
                   const float* w, float* dx, float* dw, float* db, index_t rows, index_t d);

// What a softmax cross-entropy row needs besides its logits: targets (rows) already checked
// to lie in [0, classes) or equal ignore_index, class weights (classes) or null, and the
// label smoothing eps.
struct XentSpec {
    const std::int64_t* target;
    const float* weight;
    std::int64_t ignore_index;
    float eps;
};

// loss_i = sum_c q_ic (lse_i - x_ic) and lse_i = log sum_c e^x_ic (see reference.py for q);
// loss is 0 on ignored rows.
void softmax_xent_fwd(const float* x, const XentSpec& spec, float* loss, float* lse,
                      index_t rows, index_t classes);
// dx_ic = grad_i (e^(x_ic - lse_i) sum_c q_ic - q_ic). dx must arrive zeroed: ignored rows are
// not written.
void softmax_xent_bwd(const float* x, const float* lse, const XentSpec& spec,
                      const float* grad, float* dx, index_t rows, index_t classes);

}  // namespace minitl::cpu
