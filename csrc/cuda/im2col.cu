// im2col / col2im for convolution as GEMM (float32), matching reference.im2col / col2im:
//   im2col: x (N, C, H, W) -> cols (N, C, kh, kw, OH, OW), zero outside the padded image;
//   col2im: the adjoint, summing every column entry back onto the pixel it was read from.
// col2im gathers (one thread per pixel loops over the kernel taps that read it) instead of
// scattering with atomics, so its sums are deterministic.
// Bound: im2col reads 4 N C H W and writes 4 N C kh kw OH OW bytes; col2im the reverse.
#include "common.cuh"

extern "C" __global__ void im2col_f32(const float* __restrict__ x, float* __restrict__ cols,
                                      int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                      int ph, int pw, int dh, int dw, int OH, int OW) {
    const long long total = (long long)N * C * kh * kw * OH * OW;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        long long r = e;
        const int ow = (int)(r % OW); r /= OW;
        const int oh = (int)(r % OH); r /= OH;
        const int j = (int)(r % kw); r /= kw;
        const int i = (int)(r % kh); r /= kh;
        const long long nc = r;  // n * C + c
        const int h = oh * sh - ph + i * dh, w = ow * sw - pw + j * dw;
        cols[e] = (h >= 0 && h < H && w >= 0 && w < W) ? x[(nc * H + h) * W + w] : 0.f;
    }
}

extern "C" __global__ void col2im_f32(const float* __restrict__ cols, float* __restrict__ x,
                                      int N, int C, int H, int W, int kh, int kw, int sh, int sw,
                                      int ph, int pw, int dh, int dw, int OH, int OW) {
    const long long total = (long long)N * C * H * W;
    for (long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x; e < total;
         e += (long long)gridDim.x * blockDim.x) {
        const int w = (int)(e % W);
        const int h = (int)((e / W) % H);
        const long long nc = e / ((long long)H * W);
        float s = 0.f;
        for (int i = 0; i < kh; ++i) {
            const int hh = h + ph - i * dh;  // = oh * sh for the output row that read (h, w)
            if (hh < 0 || hh % sh != 0 || hh / sh >= OH) continue;
            const int oh = hh / sh;
            for (int j = 0; j < kw; ++j) {
                const int ww = w + pw - j * dw;
                if (ww < 0 || ww % sw != 0 || ww / sw >= OW) continue;
                s += cols[(((nc * kh + i) * kw + j) * OH + oh) * OW + ww / sw];
            }
        }
        x[e] = s;
    }
}
