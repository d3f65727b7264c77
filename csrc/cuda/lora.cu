// Fused LoRA linear (arXiv:2106.09685): y = x W^T + b + s (x A^T) B^T with x (N, Din),
// W (Dout, Din), A (r, Din), B (Dout, r).
//
// Forward, one kernel: sgemm<..., TA=false, TB=true, LR> (sgemm.cuh) computes the base tile
// x W^T and, from the same x tiles in shared memory, xa = x A^T for its rows; the epilogue adds
// s xa B^T and the bias, and the first column of CTAs writes xa (N, r) for the backward pass.
// Extra work over the base GEMM: r/BN of its flops (each column of CTAs recomputes xa) plus
// 2 N Dout r for the up-projection; for r = 16 and BN = 128 that is 12.5% + 0.4%. Larger ranks
// use the two-pass variant (xa by a skinny GEMM, then the base GEMM with the up-projection in
// its epilogue); the autotuner picks per shape.
//
// Backward, three passes over the big operands (plus dW = g^T x only when W trains):
//   1. lora_bwd_gb_db (below): reads g once and produces gB = g B (N, r), dB = s g^T xa
//      (Dout, r) and db = sum_rows g;
//   2. dx = g W + s gB A: sgemm with the up-projection epilogue (U = gB, V = A^T by strides);
//   3. dA = s gB^T x: skinny sgemm (M = r) with split-K.
// Reference: minitl.backend.reference.lora_linear_fwd / lora_linear_bwd.
// Bound of pass 1: reads N*Dout*4 bytes of g; 4*N*Dout*r flops on CUDA cores (shared-memory
// bound at ~1/4 of FP32 peak with 4x4 register blocks), i.e. < 2% of the dx GEMM for r <= 16.
#include "sgemm.cuh"

// Pass 1 of the backward. Grid: ceil(N / 64) CTAs of 256 threads; each owns 64 rows of g and
// walks Dout in 64-column chunks. RT >= r is the rank tile (16, 32 or 64).
// Dynamic shared memory: (64 * 68 + 64 * RT + 2 * 64 * RT) floats.
template <int RT>
__global__ void __launch_bounds__(256)
    lora_bwd_gb_db(const float* __restrict__ g, const float* __restrict__ Bm,
                   const float* __restrict__ xa, float* __restrict__ gB, float* __restrict__ dB,
                   float* __restrict__ db, int N, int Dout, int r, float scale) {
    constexpr int ROWS = 64, CH = 64, NT = 256, P = CH + 4;
    constexpr int BLK = (ROWS / 4) * (RT / 4);  // 4x4 register blocks per (64 x RT) tile
    constexpr int G = NT / BLK;                 // threads splitting one block's reduction
    static_assert(NT % BLK == 0 && G >= 1, "rank tile");
    extern __shared__ __align__(16) float smem[];
    float* gs = smem;              // [ROWS][P]   g chunk
    float* bs = gs + ROWS * P;     // [CH][RT]    B chunk
    float* xs = bs + CH * RT;      // [ROWS][RT]  xa rows
    float* gbs = xs + ROWS * RT;   // [ROWS][RT]  gB accumulator

    const int tid = threadIdx.x, row0 = blockIdx.x * ROWS;
    for (int e = tid; e < ROWS * RT; e += NT) {
        const int m = e / RT, j = e % RT;
        xs[e] = (row0 + m < N && j < r) ? xa[(long long)(row0 + m) * r + j] : 0.f;
        gbs[e] = 0.f;
    }
    const int blk = tid % BLK, grp = tid / BLK;
    const int ib = (blk / (RT / 4)) * 4, jb = (blk % (RT / 4)) * 4;  // rows (m or n), ranks

    for (int c0 = 0; c0 < Dout; c0 += CH) {
        __syncthreads();
        for (int e = tid; e < ROWS * CH; e += NT) {
            const int m = e / CH, n = e % CH;
            gs[m * P + n] = (row0 + m < N && c0 + n < Dout)
                                ? g[(long long)(row0 + m) * Dout + c0 + n] : 0.f;
        }
        for (int e = tid; e < CH * RT; e += NT) {
            const int n = e / RT, j = e % RT;
            bs[e] = (c0 + n < Dout && j < r) ? Bm[(long long)(c0 + n) * r + j] : 0.f;
        }
        __syncthreads();

        // gB[ib..ib+3][jb..jb+3] += sum over this group's share of the chunk's columns
        float a[4][4] = {};
        for (int n = grp * (CH / G); n < (grp + 1) * (CH / G); ++n) {
            const float4 bv = *reinterpret_cast<const float4*>(bs + n * RT + jb);
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float gv = gs[(ib + i) * P + n];
                a[i][0] = fmaf(gv, bv.x, a[i][0]);
                a[i][1] = fmaf(gv, bv.y, a[i][1]);
                a[i][2] = fmaf(gv, bv.z, a[i][2]);
                a[i][3] = fmaf(gv, bv.w, a[i][3]);
            }
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                if (G == 1)
                    gbs[(ib + i) * RT + jb + q] += a[i][q];
                else
                    atomicAdd(gbs + (ib + i) * RT + jb + q, a[i][q]);
            }

        // dB[c0+ib..][jb..] += s * sum over this group's share of the rows of g^T xa
        float d[4][4] = {};
        for (int m = grp * (ROWS / G); m < (grp + 1) * (ROWS / G); ++m) {
            const float4 gv = *reinterpret_cast<const float4*>(gs + m * P + ib);
            const float4 xv = *reinterpret_cast<const float4*>(xs + m * RT + jb);
            const float gg[4] = {gv.x, gv.y, gv.z, gv.w}, xx[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int q = 0; q < 4; ++q) d[i][q] = fmaf(gg[i], xx[q], d[i][q]);
        }
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int q = 0; q < 4; ++q)
                if (c0 + ib + i < Dout && jb + q < r)
                    atomicAdd(dB + (long long)(c0 + ib + i) * r + jb + q, scale * d[i][q]);

        if (db != nullptr && tid < CH && c0 + tid < Dout) {
            float s = 0.f;
            for (int m = 0; m < ROWS; ++m) s += gs[m * P + tid];
            atomicAdd(db + c0 + tid, s);
        }
    }
    __syncthreads();
    for (int e = tid; e < ROWS * RT; e += NT) {
        const int m = e / RT, j = e % RT;
        if (row0 + m < N && j < r) gB[(long long)(row0 + m) * r + j] = gbs[e];
    }
}

#define MINITL_LORA_FWD(BM, BN, BK, WM, WN, WNITER, TM, TN, LR)                                 \
    template __global__ void sgemm<BM, BN, BK, WM, WN, WNITER, TM, TN, false, true, LR>(         \
        const float*, const float*, float*, int, int, int, int, int, int, float, float,           \
        const float*, const float*, int, int, const float*, int, int, int, float, const float*, \
        int, float*, int);

#define MINITL_LORA_BWD(RT)                                                                      \
    template __global__ void lora_bwd_gb_db<RT>(const float*, const float*, const float*, float*, \
                                                float*, float*, int, int, int, float);

#ifndef MINITL_NO_INSTANTIATIONS
// fused forward: (BM, BN, BK, WM, WN, WNITER, TM, TN) x rank tile LR
MINITL_LORA_FWD(128, 128, 8, 64, 32, 2, 8, 4, 16)
MINITL_LORA_FWD(128, 128, 8, 64, 32, 2, 8, 4, 32)
MINITL_LORA_FWD(128, 128, 8, 64, 32, 2, 8, 4, 64)
MINITL_LORA_FWD(64, 64, 16, 32, 32, 2, 4, 4, 16)
MINITL_LORA_FWD(64, 64, 16, 32, 32, 2, 4, 4, 32)
MINITL_LORA_FWD(64, 64, 16, 32, 32, 2, 4, 4, 64)
MINITL_LORA_BWD(16)
MINITL_LORA_BWD(32)
MINITL_LORA_BWD(64)
#endif
