// 08 minitl SIMT: the production FP32 kernel, csrc/cuda/sgemm.cuh as it is, timed by the same
// harness. (minitl compiles it at run time with CuPy/NVRTC and picks a tile by autotuning:
// minitl/backend/cuda.py and cuda_tune.py; here the 128x128x16 tile is fixed.)
//
// sgemm<128x128x16, warp 64x64, WNITER 4, 8x4> is step 06 plus double buffering (tile k+1
// loads into registers while tile k is multiplied, one __syncthreads per slice), ragged
// edges, transposed operands, split-K and a fused epilogue (bias, LoRA up-projection).
// Target (sgemm.cuh): >= 0.9x cuBLAS SGEMM at 4096-8192; H100 SXM FP32 peak ~67 TFLOP/s.
#include "../../csrc/cuda/sgemm.cuh"
#include "common.cuh"

void launch_sgemm(int M, int N, int K, const float* A, const float* B, float* C) {
    constexpr int BM = 128, BN = 128, BK = 16, NT = (128 / 64) * (128 / 64) * 32;
    constexpr int smem = 4 * (2 * BK * (BM + 4) + 2 * BK * (BN + 4));  // cuda_tune.py
    auto kernel = sgemm<128, 128, 16, 64, 64, 4, 8, 4, false, false, 0>;
    kernel<<<dim3(ceil_div(N, BN), ceil_div(M, BM), 1), NT, smem>>>(
        A, B, C, M, N, K, K, N, N, 1.0f, 0.0f, nullptr, nullptr, 0, 0, nullptr, 0, 0, 0, 0.0f,
        nullptr, 0, nullptr, K);
}

int main(int argc, char** argv) {
    return run_step("08_minitl_simt", launch_sgemm, argc, argv, 1e-5, 4, 4);
}
