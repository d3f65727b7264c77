// csrc/cpu/batchnorm.h — BatchNorm's passes over activations seen as (N, C, L): per-channel
// statistics and the per-channel affine maps that forward and backward reduce to.
#pragma once

#include "common.h"

namespace minitl::cpu {

// mean[c] and the biased var[c] over the N x L values of channel c, in double: each (n, c) row
// is summed in float lanes, the rows in double; the variance from the centred values (a
// second pass), not E[x^2] - E[x]^2.
void batchnorm_stats(const float* x, index_t n, index_t c, index_t l, double* mean,
                     double* var);

// y = x s[c] + t[c] (forward: s = rstd w, t = b - mean s).
void batchnorm_affine(const float* x, const float* s, const float* t, index_t n, index_t c,
                      index_t l, float* y);

// sum_g[c] = sum g and sum_gxc[c] = sum g (x - mean[c]) over channel c, in double.
void batchnorm_bwd_sums(const float* g, const float* x, const float* mean, index_t n,
                        index_t c, index_t l, double* sum_g, double* sum_gxc);

// dx = a[c] g + b[c] (x - mean[c]) + d[c] (backward: a = rstd w,
// b = -a rstd^2 sum_gxc / count, d = -a sum_g / count).
void batchnorm_bwd_dx(const float* g, const float* x, const float* mean, const float* a,
                      const float* b, const float* d, index_t n, index_t c, index_t l,
                      float* dx);

}  // namespace minitl::cpu
