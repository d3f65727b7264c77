// 01 naive: one thread per element of C, threadIdx.x running down a column of C (row index).
//
// The 32 threads of a warp read 32 different rows of A (K floats apart: 32 transactions
// per load instead of 1) and write C 32 rows apart. The B element is the same for the warp
// (one broadcast). Expect a few hundred GFLOP/s at 4096^3 on an H100 (FP32 peak ~67 TFLOP/s
// on SXM): the kernel is bound by uncoalesced global loads, although L1/L2 absorb much of it.
#include "common.cuh"

__global__ void sgemm_naive(int M, int N, int K, const float* A, const float* B, float* C) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;  // row of C: adjacent threads, rows
    const int j = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= M || j >= N) return;
    float acc = 0.0f;
    for (int p = 0; p < K; ++p) acc += A[size_t(i) * K + p] * B[size_t(p) * N + j];
    C[size_t(i) * N + j] = acc;
}

int main(int argc, char** argv) {
    return run_step("01_naive", [](int M, int N, int K, const float* A, const float* B, float* C) {
        sgemm_naive<<<dim3(ceil_div(M, 32), ceil_div(N, 32)), dim3(32, 32)>>>(M, N, K, A, B, C);
    }, argc, argv);
}
