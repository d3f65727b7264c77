// 07 tensor cores: the product moves from the FP32 FMA units to the tensor cores, through the
// portable WMMA API (nvcuda::wmma, sm_80+): TF32 inputs (FP32 with the mantissa cut to 10
// bits), FP32 accumulation, 16 x 16 x 8 fragments.
//
// A block of 8 warps computes 128 x 128 of C in BK = 32 slices staged in shared memory; each
// warp owns 64 x 32 of it as 4 x 2 accumulator fragments. Dense TF32 on an H100 SXM is ~495
// TFLOP/s against 67 for FP32 FMAs, so even this simple kernel (no cp.async pipeline, no
// ldmatrix, one __syncthreads pair per slice) should pass every SIMT step; the gap to cuBLAS is
// what minitl's gemm_mma.cu (step 08) closes with a 3-stage cp.async ring and mma.sync.
// The check is looser (2e-3 of sum |a b|): TF32 rounds every input to 2^-11 relative.
// Needs M, N multiples of 128 and K of 32; sm_80 or newer.
#include <mma.h>

#include "common.cuh"

using namespace nvcuda;

constexpr int BM = 128, BN = 128, BK = 32, WM = 64, WN = 32;
constexpr int NT = (BM / WM) * (BN / WN) * 32;  // 256 threads
constexpr int PA = BK + 4, PB = BN + 4;         // padded pitches, multiples of 4 floats

__global__ void __launch_bounds__(NT)
    sgemm_wmma(int M, int N, int K, const float* A, const float* B, float* C) {
    __shared__ __align__(32) float As[BM][PA];  // row-major, as A
    __shared__ __align__(32) float Bs[BK][PB];  // row-major, as B
    const int t = threadIdx.x, warp = t / 32;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int wm0 = warp / (BN / WN) * WM, wn0 = warp % (BN / WN) * WN;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> acc[WM / 16][WN / 16];
#pragma unroll
    for (int i = 0; i < WM / 16; ++i)
#pragma unroll
        for (int j = 0; j < WN / 16; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
    for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
        for (int l = 0; l < BM * BK / 4 / NT; ++l) {  // 4 float4 of each tile per thread
            const int i = t + l * NT, ar = i / (BK / 4), ac = i % (BK / 4) * 4;
            *reinterpret_cast<float4*>(&As[ar][ac]) =
                *reinterpret_cast<const float4*>(&A[size_t(m0 + ar) * K + k0 + ac]);
            const int br = i / (BN / 4), bc = i % (BN / 4) * 4;
            *reinterpret_cast<float4*>(&Bs[br][bc]) =
                *reinterpret_cast<const float4*>(&B[size_t(k0 + br) * N + n0 + bc]);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < BK; kk += 8) {
            wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
            wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major>
                b[WN / 16];
#pragma unroll
            for (int j = 0; j < WN / 16; ++j) {
                wmma::load_matrix_sync(b[j], &Bs[kk][wn0 + j * 16], PB);
#pragma unroll
                for (int e = 0; e < b[j].num_elements; ++e)
                    b[j].x[e] = wmma::__float_to_tf32(b[j].x[e]);
            }
#pragma unroll
            for (int i = 0; i < WM / 16; ++i) {
                wmma::load_matrix_sync(a, &As[wm0 + i * 16][kk], PA);
#pragma unroll
                for (int e = 0; e < a.num_elements; ++e) a.x[e] = wmma::__float_to_tf32(a.x[e]);
#pragma unroll
                for (int j = 0; j < WN / 16; ++j) wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < WM / 16; ++i)
#pragma unroll
        for (int j = 0; j < WN / 16; ++j)
            wmma::store_matrix_sync(&C[size_t(m0 + wm0 + i * 16) * N + n0 + wn0 + j * 16],
                                    acc[i][j], N, wmma::mem_row_major);
}

int main(int argc, char** argv) {
    return run_step("07_tensor_cores_tf32", [](int M, int N, int K, const float* A,
                                               const float* B, float* C) {
        sgemm_wmma<<<dim3(N / BN, M / BM), NT>>>(M, N, K, A, B, C);
    }, argc, argv, 2e-3, 128, BK);
}
