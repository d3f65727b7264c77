// SIMT SGEMM template shared by sgemm.cu (plain GEMM) and lora.cu (fused LoRA forward).
//
//   C = alpha * op(A) op(B) + beta * C + bias[n] + up_scale * U V^T
//
// with op(A) (M, K), op(B) (K, N), row-major C (M, N), an optional rank-r "up-projection"
// U (M, r) V (N, r)^T added in the epilogue (LoRA's s (x A^T) B^T, or s (g B) A for dx), and,
// when LR > 0, the rank-r "down-projection" XA = op(A) D^T (D (r, K)) computed from the same
// op(A) tiles that feed the main product, kept in shared memory for the epilogue and written
// to global memory by the first column of CTAs (the backward pass needs it).
//
// Structure (numbered as in the text books on CUDA SGEMM):
//   1. shared-memory tiling: a CTA computes a BM x BN tile, looping over K in BK slices;
//   2. 2-D register blocking: each thread owns (WMITER*TM) x (WNITER*TN) accumulators;
//   3. vectorised loads: 16-byte global loads and 16-byte shared loads of the fragments;
//   4. warp tiling: a warp owns a WM x WN sub-tile so its fragment loads hit few banks;
//   5. double buffering: tile k+1 is fetched into registers while tile k is multiplied, and
//      stored to the other shared buffer afterwards, so there is one __syncthreads per tile.
// Split-K: gridDim.z > 1 gives each z a K range of `k_split` and the epilogue atomically adds
// alpha * acc into C (the caller pre-scales C by beta and passes no bias / up-projection).
//
// Bound: 2*M*N*K flops over (M*K*N/BN + K*N*M/BM)*4 bytes of L2 traffic; with 128x128 tiles
// that is 32 flops per L2 byte, far above the FP32 ridge point, so a good configuration is
// FMA-bound: H100 SXM FP32 peak 67 TFLOP/s, target >= 0.9x cuBLAS at 4096-8192.
// Reference: minitl.backend.reference.gemm (and lora_linear_fwd for the LoRA terms).
#pragma once
#include "common.cuh"

template <int BM, int BN, int BK, int WM, int WN, int WNITER, int TM, int TN>
struct SimtTile {
    static constexpr int NWARPS = (BM / WM) * (BN / WN);
    static constexpr int NT = NWARPS * 32;
    static constexpr int WSUBN = WN / WNITER;   // columns of one warp sub-tile
    static constexpr int LANES_N = WSUBN / TN;  // lanes along n inside a warp
    static constexpr int LANES_M = 32 / LANES_N;
    static constexpr int WMITER = WM / (LANES_M * TM);
    static constexpr int WSUBM = WM / WMITER;
    static constexpr int PA = BM + 4;  // shared row pitch in floats: 16-byte aligned rows
    static constexpr int PB = BN + 4;
    static constexpr int A_STAGE = BK * PA;
    static constexpr int B_STAGE = BK * PB;
    static constexpr int A_VECS = BM * BK / 4 / NT;  // float4 loads per thread per tile
    static constexpr int B_VECS = BN * BK / 4 / NT;
    static_assert(BM % WM == 0 && BN % WN == 0, "warp tiles must cover the CTA tile");
    static_assert(WN % WNITER == 0 && WSUBN % TN == 0 && 32 % LANES_N == 0, "lane layout");
    static_assert(WMITER >= 1 && WM % (LANES_M * TM) == 0, "lane layout along m");
    static_assert(TM % 4 == 0 && TN % 4 == 0 && BK % 4 == 0, "16-byte fragments");
    static_assert(A_VECS >= 1 && (BM * BK / 4) % NT == 0, "A tile load balance");
    static_assert(B_VECS >= 1 && (BN * BK / 4) % NT == 0, "B tile load balance");
};

// Dynamic shared memory of one CTA, in floats (cuda_tune.simt_smem_bytes computes the same):
//   2 * BK * (BM + 4) + 2 * BK * (BN + 4) + (LR > 0 ? 2 * BK * LR + LR * (BM + 4) : 0)

template <int BM, int BN, int BK, int WM, int WN, int WNITER, int TM, int TN, bool TA, bool TB,
          int LR>
__global__ void __launch_bounds__(SimtTile<BM, BN, BK, WM, WN, WNITER, TM, TN>::NT)
    sgemm(const float* __restrict__ A, const float* __restrict__ B, float* C, int M, int N,
          int K, int lda, int ldb, int ldc, float alpha, float beta,
          const float* __restrict__ bias, const float* __restrict__ U, int su_m, int su_k,
          const float* __restrict__ V, int sv_n, int sv_k, int rank, float up_scale,
          const float* __restrict__ D, int ldd, float* __restrict__ XA, int k_split) {
    using T = SimtTile<BM, BN, BK, WM, WN, WNITER, TM, TN>;
    constexpr int NT = T::NT, PA = T::PA, PB = T::PB;
    constexpr int RM = T::WMITER * TM, RN = WNITER * TN;  // accumulators per thread
    constexpr int D_VECS_ALL = LR * BK / 4;                // float4 loads of one D tile
    constexpr int D_VECS = LR > 0 ? (D_VECS_ALL + NT - 1) / NT : 1;
    constexpr int XPT = LR > 0 ? (BM * LR + NT - 1) / NT : 1;  // XA outputs per thread
    constexpr int LRD = LR > 0 ? LR : 1;                       // divisor that is never 0

    extern __shared__ __align__(16) float smem[];
    float* As = smem;               // [2][BK][PA], op(A) tile stored k-major
    float* Bs = As + 2 * T::A_STAGE;  // [2][BK][PB]
    float* Ds = Bs + 2 * T::B_STAGE;  // [2][BK][LR]
    float* Xs = Ds + 2 * BK * LR;     // [LR][PA], XA of this CTA's rows, k-major like As

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int kbeg = blockIdx.z * k_split;
    const int kend = min(K, kbeg + k_split);
    const int ntiles = kend > kbeg ? (kend - kbeg + BK - 1) / BK : 0;
    const int warp = tid >> 5, lane = tid & 31;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    const int lm = (lane / T::LANES_N) * TM, ln = (lane % T::LANES_N) * TN;

    const bool vec_a = (lda % 4 == 0) && (reinterpret_cast<unsigned long long>(A) % 16 == 0);
    const bool vec_b = (ldb % 4 == 0) && (reinterpret_cast<unsigned long long>(B) % 16 == 0);
    const bool vec_d = (ldd % 4 == 0) && (reinterpret_cast<unsigned long long>(D) % 16 == 0);

    float acc[RM][RN];
#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
        for (int j = 0; j < RN; ++j) acc[i][j] = 0.f;
    float xacc[XPT];
#pragma unroll
    for (int i = 0; i < XPT; ++i) xacc[i] = 0.f;

    float4 ra[T::A_VECS], rb[T::B_VECS], rd[D_VECS];
    const float4 zero4 = make_float4(0.f, 0.f, 0.f, 0.f);

    // ---- global -> registers (one K tile starting at k0) --------------------------------------
    auto load_tile = [&](int k0) {
#pragma unroll
        for (int i = 0; i < T::A_VECS; ++i) {
            const int v = tid + i * NT;
            if (!TA) {  // A (M, K) row-major: vectors run along k
                const int row = v / (BK / 4), kq = (v % (BK / 4)) * 4;
                const int gm = m0 + row;
                ra[i] = gm < M ? load4_row(A + (long long)gm * lda, k0 + kq, kend, vec_a) : zero4;
            } else {  // A stored (K, M): vectors run along m
                const int kr = v / (BM / 4), mq = (v % (BM / 4)) * 4;
                const int gk = k0 + kr;
                ra[i] = gk < kend ? load4_row(A + (long long)gk * lda, m0 + mq, M, vec_a) : zero4;
            }
        }
#pragma unroll
        for (int i = 0; i < T::B_VECS; ++i) {
            const int v = tid + i * NT;
            if (!TB) {  // B (K, N) row-major: vectors run along n
                const int kr = v / (BN / 4), nq = (v % (BN / 4)) * 4;
                const int gk = k0 + kr;
                rb[i] = gk < kend ? load4_row(B + (long long)gk * ldb, n0 + nq, N, vec_b) : zero4;
            } else {  // B stored (N, K): vectors run along k
                const int row = v / (BK / 4), kq = (v % (BK / 4)) * 4;
                const int gn = n0 + row;
                rb[i] = gn < N ? load4_row(B + (long long)gn * ldb, k0 + kq, kend, vec_b) : zero4;
            }
        }
        if (LR > 0) {
#pragma unroll
            for (int i = 0; i < D_VECS; ++i) {
                const int v = tid + i * NT;
                const int j = v / (BK / 4), kq = (v % (BK / 4)) * 4;
                rd[i] = (v < D_VECS_ALL && j < rank)
                            ? load4_row(D + (long long)j * ldd, k0 + kq, kend, vec_d)
                            : zero4;
            }
        }
    };

    // ---- registers -> shared stage s ---------------------------------------------------------
    auto store_tile = [&](int s) {
        float* as = As + s * T::A_STAGE;
        float* bs = Bs + s * T::B_STAGE;
#pragma unroll
        for (int i = 0; i < T::A_VECS; ++i) {
            const int v = tid + i * NT;
            if (!TA) {
                const int row = v / (BK / 4), kq = (v % (BK / 4)) * 4;
                as[(kq + 0) * PA + row] = ra[i].x;
                as[(kq + 1) * PA + row] = ra[i].y;
                as[(kq + 2) * PA + row] = ra[i].z;
                as[(kq + 3) * PA + row] = ra[i].w;
            } else {
                const int kr = v / (BM / 4), mq = (v % (BM / 4)) * 4;
                *reinterpret_cast<float4*>(as + kr * PA + mq) = ra[i];
            }
        }
#pragma unroll
        for (int i = 0; i < T::B_VECS; ++i) {
            const int v = tid + i * NT;
            if (!TB) {
                const int kr = v / (BN / 4), nq = (v % (BN / 4)) * 4;
                *reinterpret_cast<float4*>(bs + kr * PB + nq) = rb[i];
            } else {
                const int row = v / (BK / 4), kq = (v % (BK / 4)) * 4;
                bs[(kq + 0) * PB + row] = rb[i].x;
                bs[(kq + 1) * PB + row] = rb[i].y;
                bs[(kq + 2) * PB + row] = rb[i].z;
                bs[(kq + 3) * PB + row] = rb[i].w;
            }
        }
        if (LR > 0) {
            float* ds = Ds + s * BK * LR;
#pragma unroll
            for (int i = 0; i < D_VECS; ++i) {
                const int v = tid + i * NT;
                if (v < D_VECS_ALL) {
                    const int j = v / (BK / 4), kq = (v % (BK / 4)) * 4;
                    ds[(kq + 0) * LR + j] = rd[i].x;
                    ds[(kq + 1) * LR + j] = rd[i].y;
                    ds[(kq + 2) * LR + j] = rd[i].z;
                    ds[(kq + 3) * LR + j] = rd[i].w;
                }
            }
        }
    };

    // ---- the register-blocked outer products of one BK slice ----------------------------------
    auto compute = [&](const float* as, const float* bs) {
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            float fa[RM], fb[RN];
#pragma unroll
            for (int i = 0; i < T::WMITER; ++i)
#pragma unroll
                for (int q = 0; q < TM; q += 4) {
                    const float4 v = *reinterpret_cast<const float4*>(
                        as + kk * PA + wm0 + i * T::WSUBM + lm + q);
                    fa[i * TM + q + 0] = v.x;
                    fa[i * TM + q + 1] = v.y;
                    fa[i * TM + q + 2] = v.z;
                    fa[i * TM + q + 3] = v.w;
                }
#pragma unroll
            for (int j = 0; j < WNITER; ++j)
#pragma unroll
                for (int q = 0; q < TN; q += 4) {
                    const float4 v = *reinterpret_cast<const float4*>(
                        bs + kk * PB + wn0 + j * T::WSUBN + ln + q);
                    fb[j * TN + q + 0] = v.x;
                    fb[j * TN + q + 1] = v.y;
                    fb[j * TN + q + 2] = v.z;
                    fb[j * TN + q + 3] = v.w;
                }
#pragma unroll
            for (int i = 0; i < RM; ++i)
#pragma unroll
                for (int j = 0; j < RN; ++j) acc[i][j] = fmaf(fa[i], fb[j], acc[i][j]);
        }
    };

    // XA += op(A) tile * D tile^T for this thread's (m, j) outputs.
    auto compute_down = [&](const float* as, const float* ds) {
#pragma unroll
        for (int kk = 0; kk < BK; ++kk)
#pragma unroll
            for (int i = 0; i < XPT; ++i) {
                const int o = tid + i * NT;
                if (o < BM * LR) xacc[i] = fmaf(as[kk * PA + o / LRD], ds[kk * LR + o % LRD], xacc[i]);
            }
    };

    // ---- main loop: double-buffered over K tiles -----------------------------------------------
    if (ntiles > 0) {
        load_tile(kbeg);
        store_tile(0);
    }
    __syncthreads();
    for (int t = 0; t < ntiles; ++t) {
        const int cur = t & 1;
        if (t + 1 < ntiles) load_tile(kbeg + (t + 1) * BK);
        compute(As + cur * T::A_STAGE, Bs + cur * T::B_STAGE);
        if (LR > 0) compute_down(As + cur * T::A_STAGE, Ds + cur * BK * LR);
        if (t + 1 < ntiles) store_tile(cur ^ 1);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < RM; ++i)
#pragma unroll
        for (int j = 0; j < RN; ++j) acc[i][j] *= alpha;

    // ---- LoRA up-projection: rank-r extra K steps through the same micro-kernel ----------------
    if (LR > 0) {
#pragma unroll
        for (int i = 0; i < XPT; ++i) {
            const int o = tid + i * NT;
            if (o < BM * LR) {
                const int m = o / LRD, j = o % LRD;
                Xs[j * PA + m] = xacc[i];
                if (XA != nullptr && blockIdx.x == 0 && j < rank && m0 + m < M)
                    XA[(long long)(m0 + m) * rank + j] = xacc[i];
            }
        }
    }
    if (rank > 0 && (LR > 0 || U != nullptr)) {
        for (int j0 = 0; j0 < rank; j0 += BK) {
            if (LR == 0) {
                for (int e = tid; e < BK * BM; e += NT) {
                    const int kk = e / BM, m = e % BM, j = j0 + kk;
                    As[kk * PA + m] = (m0 + m < M && j < rank)
                                          ? up_scale * U[(long long)(m0 + m) * su_m + (long long)j * su_k]
                                          : 0.f;
                }
            }
            for (int e = tid; e < BK * BN; e += NT) {
                const int kk = e / BN, n = e % BN, j = j0 + kk;
                const float s = LR > 0 ? up_scale : 1.f;
                Bs[kk * PB + n] = (n0 + n < N && j < rank)
                                      ? s * V[(long long)(n0 + n) * sv_n + (long long)j * sv_k]
                                      : 0.f;
            }
            __syncthreads();
            compute(LR > 0 ? Xs + j0 * PA : As, Bs);
            __syncthreads();
        }
    }

    // ---- epilogue ---------------------------------------------------------------------------
    const bool split = gridDim.z > 1;
    const bool vec_c = (ldc % 4 == 0) && (reinterpret_cast<unsigned long long>(C) % 16 == 0);
#pragma unroll
    for (int i = 0; i < T::WMITER; ++i)
#pragma unroll
        for (int r = 0; r < TM; ++r) {
            const int gm = m0 + wm0 + i * T::WSUBM + lm + r;
            if (gm >= M) continue;
            float* crow = C + (long long)gm * ldc;
#pragma unroll
            for (int j = 0; j < WNITER; ++j)
#pragma unroll
                for (int q = 0; q < TN; q += 4) {
                    const int gn = n0 + wn0 + j * T::WSUBN + ln + q;
                    float v[4];
#pragma unroll
                    for (int e = 0; e < 4; ++e) v[e] = acc[i * TM + r][j * TN + q + e];
                    if (split) {
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            if (gn + e < N) atomicAdd(crow + gn + e, v[e]);
                        continue;
                    }
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        if (bias != nullptr && gn + e < N) v[e] += bias[gn + e];
                        if (beta != 0.f && gn + e < N) v[e] += beta * crow[gn + e];
                    }
                    if (vec_c && gn + 3 < N) {
                        *reinterpret_cast<float4*>(crow + gn) = make_float4(v[0], v[1], v[2], v[3]);
                    } else {
#pragma unroll
                        for (int e = 0; e < 4; ++e)
                            if (gn + e < N) crow[gn + e] = v[e];
                    }
                }
        }
}
