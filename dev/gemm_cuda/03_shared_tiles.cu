// 03 shared-memory tiles: a 32 x 32 block of threads computes a 32 x 32 tile of C, walking K
// in 32-wide slices. Each slice of A and B is loaded once from global memory (coalesced, one
// float per thread) into shared memory and then read 32 times from there.
//
// Global traffic drops 32x against step 02, but each FMA still reads two floats from shared
// memory (As[ty][p] is a broadcast, Bs[p][tx] a conflict-free row), so shared-memory bandwidth
// (~128 bytes/clock/SM) now bounds it: 1 FMA per 8 bytes. Expect ~1.5-2x step 02.
#include "common.cuh"

constexpr int T = 32;

__global__ void sgemm_smem(int M, int N, int K, const float* A, const float* B, float* C) {
    __shared__ float As[T][T], Bs[T][T];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int i = blockIdx.y * T + ty, j = blockIdx.x * T + tx;
    float acc = 0.0f;
    for (int p0 = 0; p0 < K; p0 += T) {
        As[ty][tx] = i < M && p0 + tx < K ? A[size_t(i) * K + p0 + tx] : 0.0f;
        Bs[ty][tx] = p0 + ty < K && j < N ? B[size_t(p0 + ty) * N + j] : 0.0f;
        __syncthreads();
#pragma unroll
        for (int p = 0; p < T; ++p) acc += As[ty][p] * Bs[p][tx];
        __syncthreads();  // the next slice overwrites the tiles
    }
    if (i < M && j < N) C[size_t(i) * N + j] = acc;
}

int main(int argc, char** argv) {
    return run_step("03_shared_tiles", [](int M, int N, int K, const float* A, const float* B,
                                          float* C) {
        sgemm_smem<<<dim3(ceil_div(N, T), ceil_div(M, T)), dim3(T, T)>>>(M, N, K, A, B, C);
    }, argc, argv);
}
