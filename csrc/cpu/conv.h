// csrc/cpu/conv.h — conv2d forward and backward on NCHW float32, one image at a time.
#pragma once

#include "common.h"

namespace minitl::cpu {

// Geometry of a 2-D cross-correlation: x (n, c, h, w), weight (co, c / groups, kh, kw),
// y (n, co, oh, ow). ph, pw are the top / left padding; the bottom / right padding only sets
// oh, ow (reads past the input are zero), so asymmetric 'same' padding needs no padded copy.
struct ConvGeom {
    index_t n, c, h, w;
    index_t co, kh, kw;
    index_t sh, sw, ph, pw, dh, dw;
    index_t oh, ow;
    index_t groups;
};

// y = W * x + bias per group; bias may be null.
// Reference: minitl/backend/cpu_conv.py: conv2d_fwd_reference (im2col_cm + GEMM).
void conv2d_fwd(const float* x, const float* weight, const float* bias, float* y,
                const ConvGeom& g);

// dx = col2im(W^T gy), dweight = sum over images of gy cols^T; either output may be null
// (not computed). Reference: minitl/backend/cpu_conv.py: conv2d_bwd_reference.
void conv2d_bwd(const float* x, const float* weight, const float* gy, float* dx,
                float* dweight, const ConvGeom& g);

// The im2col + GEMM implementations of the two above, whatever the geometry (conv2d_fwd /
// conv2d_bwd pick between them and the shifted windows of conv_direct.h).
void conv2d_gemm_fwd(const float* x, const float* weight, const float* bias, float* y,
                     const ConvGeom& g);
void conv2d_gemm_bwd(const float* x, const float* weight, const float* gy, float* dx,
                     float* dweight, const ConvGeom& g);

}  // namespace minitl::cpu
