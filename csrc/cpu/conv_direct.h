// csrc/cpu/conv_direct.h — conv2d as shifted windows of padded planes: no im2col, no packing
// of the input, an output-channels x pixel-strip register tile (see conv_direct.cpp).
#pragma once

#include <string>

#include "conv.h"

namespace minitl::cpu {

// Whether the shifted-window kernels take this geometry: more than one input channel or at
// least 8 filters per group (plain depthwise has its own direct kernel in conv.cpp), and
// enough (image, group) tasks to give every thread whole ones.
bool conv2d_direct_takes(const ConvGeom& g);

// Same contracts as conv2d_fwd / conv2d_bwd (conv.h); dx and dweight are zeroed here.
void conv2d_direct_fwd(const float* x, const float* weight, const float* bias, float* y,
                       const ConvGeom& g);
void conv2d_direct_bwd(const float* x, const float* weight, const float* gy, float* dx,
                       float* dweight, const ConvGeom& g);

// "auto" (the shifted windows where they apply), "gemm" (im2col + GEMM always) or "direct"
// (the shifted windows wherever the geometry allows, whatever the thread count), so tests can
// check both on one machine. Returns false, changing nothing, for an unknown name.
bool set_conv_path(const std::string& name);
std::string conv_path();

}  // namespace minitl::cpu
