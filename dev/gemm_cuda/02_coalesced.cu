// 02 coalesced: the same kernel with threadIdx.x running along a row of C (column index).
//
// Now a warp's 32 loads of B hit 32 consecutive floats (one 128-byte transaction), its A
// element is a single broadcast, and its 32 stores of C are one transaction. Only the index
// mapping changed; expect several times step 01. Each FMA still needs one global (L1/L2)
// load of B, so the bound is now L1 bandwidth: ~1 flop per 2 bytes loaded.
#include "common.cuh"

__global__ void sgemm_coalesced(int M, int N, int K, const float* A, const float* B, float* C) {
    const int j = blockIdx.x * blockDim.x + threadIdx.x;  // column of C: adjacent threads, columns
    const int i = blockIdx.y * blockDim.y + threadIdx.y;
    if (i >= M || j >= N) return;
    float acc = 0.0f;
    for (int p = 0; p < K; ++p) acc += A[size_t(i) * K + p] * B[size_t(p) * N + j];
    C[size_t(i) * N + j] = acc;
}

int main(int argc, char** argv) {
    return run_step("02_coalesced", [](int M, int N, int K, const float* A, const float* B,
                                       float* C) {
        sgemm_coalesced<<<dim3(ceil_div(N, 32), ceil_div(M, 32)), dim3(32, 32)>>>(M, N, K, A, B,
                                                                                    C);
    }, argc, argv);
}
