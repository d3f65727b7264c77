// 06 warp tiling: one more level between the block tile and the thread tile. A block of 4 warps
// computes 128 x 128 of C; each warp owns a 64 x 64 quarter; inside it, a thread owns a
// 2 x 2 grid of 8 x 4 sub-tiles (WMITER x WNITER), lanes laid out 4 (m) x 8 (n).
//
// Why: the 8 lanes that share a row group read the same A float4 (a broadcast) and the 8
// distinct B float4s of a warp are 128 contiguous bytes (no bank conflicts), so each k step
// costs the warp few shared-memory wavefronts; 128 accumulators per thread give 5.3 FMAs per
// float read from shared memory (step 05: 4). BK = 16 halves the __syncthreads per flop.
// As is padded to BM + 4 floats per row: the transposing stores, 4 k-rows at a time, then
// conflict 2-way instead of 4-way (rows 4 apart land 16 banks apart, not 0).
// This is the structure of minitl's SIMT kernel (csrc/cuda/sgemm.cuh), less its double
// buffering, edges, transposes and epilogue. Needs M, N multiples of 128 and K of 16.
#include "common.cuh"

constexpr int BM = 128, BN = 128, BK = 16, WM = 64, WN = 64, TM = 8, TN = 4;
constexpr int WMITER = 2, WNITER = 2, LANES_N = 8;  // (WM / WMITER) = 4 lanes x TM; 8 x TN
constexpr int NT = (BM / WM) * (BN / WN) * 32;       // 128 threads
constexpr int PA = BM + 4;

__global__ void __launch_bounds__(NT)
    sgemm_warptile(int M, int N, int K, const float* A, const float* B, float* C) {
    __shared__ __align__(16) float As[BK][PA];  // k-major
    __shared__ __align__(16) float Bs[BK][BN];
    const int t = threadIdx.x, warp = t / 32, lane = t % 32;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int wm0 = warp / (BN / WN) * WM, wn0 = warp % (BN / WN) * WN;
    const int lm = lane / LANES_N, ln = lane % LANES_N;
    float acc[WMITER][WNITER][TM][TN] = {};
    for (int k0 = 0; k0 < K; k0 += BK) {
#pragma unroll
        for (int l = 0; l < BM * BK / 4 / NT; ++l) {  // 4 float4 of each tile per thread
            const int ia = t + l * NT, ar = ia / (BK / 4), ac = ia % (BK / 4) * 4;
            const float4 a = *reinterpret_cast<const float4*>(&A[size_t(m0 + ar) * K + k0 + ac]);
            As[ac][ar] = a.x, As[ac + 1][ar] = a.y, As[ac + 2][ar] = a.z, As[ac + 3][ar] = a.w;
            const int br = ia / (BN / 4), bc = ia % (BN / 4) * 4;
            *reinterpret_cast<float4*>(&Bs[br][bc]) =
                *reinterpret_cast<const float4*>(&B[size_t(k0 + br) * N + n0 + bc]);
        }
        __syncthreads();
#pragma unroll
        for (int p = 0; p < BK; ++p) {
            float ra[WMITER][TM], rb[WNITER][TN];
#pragma unroll
            for (int wi = 0; wi < WMITER; ++wi) {
                const float* src = &As[p][wm0 + wi * (WM / WMITER) + lm * TM];
                const float4 x = *reinterpret_cast<const float4*>(src);
                const float4 y = *reinterpret_cast<const float4*>(src + 4);
                ra[wi][0] = x.x, ra[wi][1] = x.y, ra[wi][2] = x.z, ra[wi][3] = x.w;
                ra[wi][4] = y.x, ra[wi][5] = y.y, ra[wi][6] = y.z, ra[wi][7] = y.w;
            }
#pragma unroll
            for (int wj = 0; wj < WNITER; ++wj) {
                const float4 x = *reinterpret_cast<const float4*>(
                    &Bs[p][wn0 + wj * (WN / WNITER) + ln * TN]);
                rb[wj][0] = x.x, rb[wj][1] = x.y, rb[wj][2] = x.z, rb[wj][3] = x.w;
            }
#pragma unroll
            for (int wi = 0; wi < WMITER; ++wi)
#pragma unroll
                for (int wj = 0; wj < WNITER; ++wj)
#pragma unroll
                    for (int m = 0; m < TM; ++m)
#pragma unroll
                        for (int n = 0; n < TN; ++n) acc[wi][wj][m][n] += ra[wi][m] * rb[wj][n];
        }
        __syncthreads();
    }
#pragma unroll
    for (int wi = 0; wi < WMITER; ++wi)
#pragma unroll
        for (int wj = 0; wj < WNITER; ++wj)
#pragma unroll
            for (int m = 0; m < TM; ++m) {
                const int row = m0 + wm0 + wi * (WM / WMITER) + lm * TM + m;
                const int col = n0 + wn0 + wj * (WN / WNITER) + ln * TN;
                const float* v = acc[wi][wj][m];
                *reinterpret_cast<float4*>(&C[size_t(row) * N + col]) =
                    make_float4(v[0], v[1], v[2], v[3]);
            }
}

int main(int argc, char** argv) {
    static_assert((WM / WMITER) == (32 / LANES_N) * TM && (WN / WNITER) == LANES_N * TN,
                  "a warp's lanes cover one WM/WMITER x WN/WNITER sub-tile");
    return run_step("06_warp_tiling", [](int M, int N, int K, const float* A, const float* B,
                                         float* C) {
        sgemm_warptile<<<dim3(N / BN, M / BM), NT>>>(M, N, K, A, B, C);
    }, argc, argv, 1e-5, 128, BK);
}
