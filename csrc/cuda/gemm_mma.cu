// Tensor-core GEMM (sm_80+): C = alpha A B^T + beta C + bias + up_scale U V^T with FP32
// accumulation, for TF32 (fp32 storage, rounded to tf32 on the fly) or BF16 (unsigned short
// storage) inputs.
//
//   A (M, K) and B (N, K), both K-contiguous ("TN" layout, as in x W^T), rows 16-byte aligned.
//   The Python wrapper makes other layouts K-contiguous and pads ragged leading dimensions.
//
// Per CTA: a BM x BN tile; K advances in 128-byte slices (32 tf32 or 64 bf16 values) through a
// STAGES-deep cp.async ring in shared memory (rows padded by 16 bytes, so the eight rows that
// one ldmatrix phase reads fall in distinct bank groups). Each warp owns a WM x WN tile of
// mma.sync m16n8k8 (tf32) or m16n8k16 (bf16) fragments loaded with ldmatrix.x4; in bytes the
// two shapes are identical (32 bytes of K per mma), so one kernel body serves both.
//
// Reference: minitl.backend.reference.gemm on inputs rounded to tf32 / bf16.
// Bound: H100 SXM dense TF32 ~495 TFLOP/s, BF16 ~990 TFLOP/s (wgmma); mma.sync reaches about
// two thirds of that. At 4096^3 a 128x128 tile reads 2*4096*128*4 bytes per 2*128*128*4096
// flops = 32 flops/byte (tf32) from L2, so both are compute-bound; target >= 0.8x cuBLAS.
#include "common.cuh"

template <int BM, int BN, int WM, int WN, int STAGES, bool BF16>
__global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)
    gemm_mma(const void* __restrict__ A, const void* __restrict__ B, float* C, int M, int N,
             int K, int lda, int ldb, int ldc, float alpha, float beta,
             const float* __restrict__ bias, const float* __restrict__ U, int su_m, int su_k,
             const float* __restrict__ V, int sv_n, int sv_k, int rank, float up_scale) {
    constexpr int NT = (BM / WM) * (BN / WN) * 32;
    constexpr int ESZ = BF16 ? 2 : 4;  // bytes per element
    constexpr int SLICE = 128;         // bytes of K per stage
    constexpr int PITCH = SLICE + 16;  // shared row pitch in bytes
    constexpr int MI = WM / 16, NI = WN / 8;
    static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tile is whole m16 x (2 x n8) fragments");
    static_assert((BM * SLICE / 16) % NT == 0 && (BN * SLICE / 16) % NT == 0, "load balance");

    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char* As = smem;                         // [STAGES][BM][PITCH]
    unsigned char* Bs = smem + STAGES * BM * PITCH;   // [STAGES][BN][PITCH]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    const long long kbytes = (long long)K * ESZ;
    const int ntiles = (int)((kbytes + SLICE - 1) / SLICE);
    const unsigned char* Ab = static_cast<const unsigned char*>(A);
    const unsigned char* Bb = static_cast<const unsigned char*>(B);

    // One stage: 16-byte chunks, rows past M / N and bytes past K are zero-filled.
    auto load_stage = [&](int stage, int kt) {
        const long long kb0 = (long long)kt * SLICE;
        unsigned char* as = As + stage * BM * PITCH;
        unsigned char* bs = Bs + stage * BN * PITCH;
#pragma unroll
        for (int c = tid; c < BM * SLICE / 16; c += NT) {
            const int row = c / (SLICE / 16), cb = (c % (SLICE / 16)) * 16;
            const long long kb = kb0 + cb;
            const int valid = (m0 + row < M && kb < kbytes) ? (int)min(16LL, kbytes - kb) : 0;
            const void* src = valid ? Ab + ((long long)(m0 + row) * lda) * ESZ + kb : Ab;
            cp_async16(as + row * PITCH + cb, src, valid);
        }
#pragma unroll
        for (int c = tid; c < BN * SLICE / 16; c += NT) {
            const int row = c / (SLICE / 16), cb = (c % (SLICE / 16)) * 16;
            const long long kb = kb0 + cb;
            const int valid = (n0 + row < N && kb < kbytes) ? (int)min(16LL, kbytes - kb) : 0;
            const void* src = valid ? Bb + ((long long)(n0 + row) * ldb) * ESZ + kb : Bb;
            cp_async16(bs + row * PITCH + cb, src, valid);
        }
    };

    float acc[MI][NI][4];
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

    // ---- prologue: STAGES - 1 slices in flight ----------------------------------------------
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles) load_stage(s, s);
        cp_async_commit();  // empty groups keep the group count uniform
    }

    for (int kt = 0; kt < ntiles; ++kt) {
        cp_async_wait<STAGES - 2>();  // slice kt has landed (for this thread's copies)
        __syncthreads();              // ... and for everyone's; slice kt-1 is free again
        const int pre = kt + STAGES - 1;
        if (pre < ntiles) load_stage(pre % STAGES, pre);
        cp_async_commit();

        const unsigned char* as = As + (kt % STAGES) * BM * PITCH;
        const unsigned char* bs = Bs + (kt % STAGES) * BN * PITCH;
#pragma unroll
        for (int ks = 0; ks < SLICE / 32; ++ks) {
            unsigned fa[MI][4], fb[NI][2];
#pragma unroll
            for (int i = 0; i < MI; ++i) {
                const int row = wm0 + i * 16 + (lane & 15);
                ldmatrix_x4(fa[i], as + row * PITCH + ks * 32 + (lane >> 4) * 16);
                if (!BF16) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) fa[i][e] = to_tf32(fa[i][e]);
                }
            }
#pragma unroll
            for (int j = 0; j < NI; j += 2) {
                unsigned r[4];
                const int row = wn0 + j * 8 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(r, bs + row * PITCH + ks * 32 + ((lane >> 3) & 1) * 16);
                fb[j][0] = r[0];
                fb[j][1] = r[1];
                fb[j + 1][0] = r[2];
                fb[j + 1][1] = r[3];
            }
            if (!BF16) {
#pragma unroll
                for (int j = 0; j < NI; ++j) {
                    fb[j][0] = to_tf32(fb[j][0]);
                    fb[j][1] = to_tf32(fb[j][1]);
                }
            }
#pragma unroll
            for (int i = 0; i < MI; ++i)
#pragma unroll
                for (int j = 0; j < NI; ++j) {
                    if (BF16)
                        mma_bf16_16x8x16(acc[i][j], fa[i], fb[j][0], fb[j][1]);
                    else
                        mma_tf32_16x8x8(acc[i][j], fa[i], fb[j][0], fb[j][1]);
                }
        }
    }
    cp_async_wait<0>();

    // ---- epilogue: accumulator (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1) of each fragment ------
    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int gm = m0 + wm0 + i * 16 + g + h * 8;
            if (gm >= M) continue;
#pragma unroll
            for (int j = 0; j < NI; ++j)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int gn = n0 + wn0 + j * 8 + 2 * t4 + e;
                    if (gn >= N) continue;
                    float v = alpha * acc[i][j][h * 2 + e];
                    if (bias != nullptr) v += bias[gn];
                    if (beta != 0.f) v += beta * C[(long long)gm * ldc + gn];
                    if (U != nullptr) {
                        float up = 0.f;
                        for (int r = 0; r < rank; ++r)
                            up = fmaf(U[(long long)gm * su_m + (long long)r * su_k],
                                      V[(long long)gn * sv_n + (long long)r * sv_k], up);
                        v = fmaf(up_scale, up, v);
                    }
                    C[(long long)gm * ldc + gn] = v;
                }
        }
}

// fp32 -> bf16 (round to nearest even), n values.
extern "C" __global__ void f32_to_bf16_kernel(const float* __restrict__ x,
                                              unsigned short* __restrict__ y, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        y[i] = f32_to_bf16(x[i]);
}

#define MINITL_MMA(BM, BN, WM, WN, STAGES, BF16)                                                   \
    template __global__ void gemm_mma<BM, BN, WM, WN, STAGES, BF16>(                               \
        const void*, const void*, float*, int, int, int, int, int, int, float, float, const float*, \
        const float*, int, int, const float*, int, int, int, float);

// ---- tile shapes: (BM, BN, WM, WN, STAGES) -----------------------------------------------------
#define MINITL_MMA_TILES(BF16)              \
    MINITL_MMA(128, 128, 64, 32, 3, BF16)   \
    MINITL_MMA(128, 64, 64, 32, 4, BF16)    \
    MINITL_MMA(64, 64, 32, 32, 4, BF16)

#ifndef MINITL_NO_INSTANTIATIONS
MINITL_MMA_TILES(false)
MINITL_MMA_TILES(true)
#endif
