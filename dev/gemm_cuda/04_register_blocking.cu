// 04 2-D register blocking: a block of 256 threads computes a 128 x 128 tile of C, and each
// thread an 8 x 8 sub-tile of it held in 64 registers. K advances in slices of BK = 8.
//
// Per k step a thread loads 8 floats of A and 8 of B from shared memory into registers and
// does 64 FMAs with them: 4 FMAs per shared load instead of step 03's 0.5, so shared memory
// stops being the bound and the FMA units start to be. A's tile is stored transposed (k-major)
// so a thread's 8 A values for one k are adjacent. Global traffic per tile: (128 + 128) x BK
// floats for 128 x 128 x BK FMAs, 64 flops per float loaded. Expect ~4x step 03.
// Needs M, N multiples of 128 and K of 8 (no edge code).
#include "common.cuh"

constexpr int BM = 128, BN = 128, BK = 8, TM = 8, TN = 8;
constexpr int NT = (BM / TM) * (BN / TN);  // 256 threads

__global__ void __launch_bounds__(NT)
    sgemm_regblock(int M, int N, int K, const float* A, const float* B, float* C) {
    __shared__ float As[BK][BM], Bs[BK][BN];  // both k-major
    const int t = threadIdx.x, tr = t / (BN / TN), tc = t % (BN / TN);
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    float acc[TM][TN] = {}, ra[TM], rb[TN];
    for (int k0 = 0; k0 < K; k0 += BK) {
        for (int l = t; l < BM * BK; l += NT) {  // 4 floats of each tile per thread
            As[l % BK][l / BK] = A[size_t(m0 + l / BK) * K + k0 + l % BK];
            Bs[l / BN][l % BN] = B[size_t(k0 + l / BN) * N + n0 + l % BN];
        }
        __syncthreads();
#pragma unroll
        for (int p = 0; p < BK; ++p) {
#pragma unroll
            for (int m = 0; m < TM; ++m) ra[m] = As[p][tr * TM + m];
#pragma unroll
            for (int n = 0; n < TN; ++n) rb[n] = Bs[p][tc * TN + n];
#pragma unroll
            for (int m = 0; m < TM; ++m)
#pragma unroll
                for (int n = 0; n < TN; ++n) acc[m][n] += ra[m] * rb[n];
        }
        __syncthreads();
    }
#pragma unroll
    for (int m = 0; m < TM; ++m)
#pragma unroll
        for (int n = 0; n < TN; ++n)
            C[size_t(m0 + tr * TM + m) * N + n0 + tc * TN + n] = acc[m][n];
}

int main(int argc, char** argv) {
    return run_step("04_register_blocking", [](int M, int N, int K, const float* A,
                                               const float* B, float* C) {
        sgemm_regblock<<<dim3(N / BN, M / BM), NT>>>(M, N, K, A, B, C);
    }, argc, argv, 1e-5, 128, BK);
}
