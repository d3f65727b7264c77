// Hopper GEMM (sm_90a only): C = alpha A B^T + beta C + bias + up_scale U V^T with FP32
// accumulation, BF16 or TF32 inputs, A (M, K) and B (N, K) K-contiguous.
//
// A CTA of two warpgroups (256 threads) computes a 128 x 128 tile: warpgroup w issues
// wgmma.mma_async m64n128k16 (bf16) / m64n128k8 (tf32) on rows 64w..64w+63, both operands read
// straight from shared memory through matrix descriptors. Thread 0 feeds a STAGES-deep ring of
// 128-byte K slices with TMA (cp.async.bulk.tensor, 128-byte swizzle, out-of-range rows and
// columns zero-filled by the hardware); an mbarrier per stage counts the bytes in. The tensor
// maps are built on the host (cuTensorMapEncodeTiled through the driver API) and copied to
// global memory before the launch.
//
// wgmma exists only for the "arch-specific" target sm_90a: this file compiles to empty kernels
// for every other target (the nvcc check in CI builds it for sm_80), and the Python side selects
// it only on compute capability 9.0 after compiling it with -arch=sm_90a.
// TF32 here truncates the low mantissa bits (wgmma reads raw fp32); the mma.sync path rounds.
//
// Reference: minitl.backend.reference.gemm on inputs rounded to tf32 / bf16.
// Bound: H100 SXM dense BF16 989 TFLOP/s, TF32 495 TFLOP/s; a 128x128 tile with 128-byte K
// slices moves 32 KB per 2*128*128*64 flops (bf16) = 64 flops/byte of L2 traffic.
#include "common.cuh"

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MINITL_HAVE_WGMMA 1
#endif

#ifdef MINITL_HAVE_WGMMA
// ---- mbarrier / TMA / wgmma wrappers -----------------------------------------------------------

MINITL_DEVICE void mbar_init(unsigned long long* bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_u32(bar)), "r"(count));
}

MINITL_DEVICE void mbar_expect_tx(unsigned long long* bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_u32(bar)),
                 "r"(bytes));
}

MINITL_DEVICE void mbar_wait(unsigned long long* bar, unsigned parity) {
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "WAIT_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra WAIT_%=;\n"
        "}\n" ::"r"(smem_u32(bar)),
        "r"(parity));
}

// 2-D tile (c0 = element along K, c1 = row) of the tensor described by `tmap` into smem.
MINITL_DEVICE void tma_load_2d(void* dst, const void* tmap, unsigned long long* bar, int c0,
                               int c1) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
        " [%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_u32(dst)),
        "l"(tmap), "r"(c0), "r"(c1), "r"(smem_u32(bar))
        : "memory");
}

// Shared-memory matrix descriptor: K-major operand, 128-byte swizzle, 8-row groups 1024 bytes
// apart (stride byte offset), leading byte offset unused for swizzled K-major layouts.
MINITL_DEVICE unsigned long long smem_desc(const void* p) {
    const unsigned long long addr = smem_u32(p);
    return ((addr & 0x3FFFFull) >> 4) | (1ull << 16) | ((1024ull >> 4) << 32) | (1ull << 62);
}

#define MINITL_D8(i) "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
                     "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define MINITL_WGMMA_REGS                                                                     \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, "   \
    "%19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, " \
    "%37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, " \
    "%55, %56, %57, %58, %59, %60, %61, %62, %63}"

template <bool BF16>
MINITL_DEVICE void wgmma_m64n128(float (&d)[64], unsigned long long da, unsigned long long db) {
    if (BF16) {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " MINITL_WGMMA_REGS
                     ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                     : MINITL_D8(0), MINITL_D8(8), MINITL_D8(16), MINITL_D8(24), MINITL_D8(32),
                       MINITL_D8(40), MINITL_D8(48), MINITL_D8(56)
                     : "l"(da), "l"(db), "r"(1));
    } else {
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                     "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 " MINITL_WGMMA_REGS
                     ", %64, %65, p, 1, 1;\n}\n"
                     : MINITL_D8(0), MINITL_D8(8), MINITL_D8(16), MINITL_D8(24), MINITL_D8(32),
                       MINITL_D8(40), MINITL_D8(48), MINITL_D8(56)
                     : "l"(da), "l"(db), "r"(1));
    }
}
#endif  // MINITL_HAVE_WGMMA

// Dynamic shared memory: STAGES * 32 KB of tiles + 1 KB for alignment and the mbarriers.
template <int STAGES, bool BF16>
__global__ void __launch_bounds__(256)
    gemm_wgmma(const void* __restrict__ tmap_a, const void* __restrict__ tmap_b, float* C, int M,
               int N, int K, int ldc, float alpha, float beta, const float* __restrict__ bias,
               const float* __restrict__ U, int su_m, int su_k, const float* __restrict__ V,
               int sv_n, int sv_k, int rank, float up_scale) {
#ifdef MINITL_HAVE_WGMMA
    constexpr int BM = 128, BN = 128, SLICE = 128;  // SLICE: bytes of K per stage
    constexpr int ESZ = BF16 ? 2 : 4, BK = SLICE / ESZ;
    constexpr int A_BYTES = BM * SLICE, B_BYTES = BN * SLICE;
    extern __shared__ unsigned char smem_raw[];
    // 128-byte swizzled tiles must start on a 1024-byte boundary.
    unsigned char* smem = reinterpret_cast<unsigned char*>(
        (reinterpret_cast<unsigned long long>(smem_raw) + 1023) & ~1023ull);
    unsigned char* As = smem;                              // [STAGES][BM][128 B]
    unsigned char* Bs = smem + STAGES * A_BYTES;           // [STAGES][BN][128 B]
    unsigned long long* full = reinterpret_cast<unsigned long long*>(Bs + STAGES * B_BYTES);

    const int tid = threadIdx.x, wg = tid / 128, lane = tid & 31, wq = (tid % 128) / 32;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int ntiles = (K + BK - 1) / BK;

    if (tid == 0) {
        for (int s = 0; s < STAGES; ++s) mbar_init(full + s, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    auto issue = [&](int kt) {
        const int s = kt % STAGES;
        mbar_expect_tx(full + s, A_BYTES + B_BYTES);
        tma_load_2d(As + s * A_BYTES, tmap_a, full + s, kt * BK, m0);
        tma_load_2d(Bs + s * B_BYTES, tmap_b, full + s, kt * BK, n0);
    };
    if (tid == 0)
        for (int kt = 0; kt < STAGES && kt < ntiles; ++kt) issue(kt);

    float d[64];
#pragma unroll
    for (int i = 0; i < 64; ++i) d[i] = 0.f;

    for (int kt = 0; kt < ntiles; ++kt) {
        const int s = kt % STAGES;
        mbar_wait(full + s, (kt / STAGES) & 1);
        const unsigned char* a = As + s * A_BYTES + wg * 64 * SLICE;  // this warpgroup's rows
        const unsigned char* b = Bs + s * B_BYTES;
        asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
        for (int ks = 0; ks < SLICE / 32; ++ks)  // 32 bytes of K per wgmma
            wgmma_m64n128<BF16>(d, smem_desc(a + ks * 32), smem_desc(b + ks * 32));
        asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        __syncthreads();  // both warpgroups are done with stage s
        if (tid == 0 && kt + STAGES < ntiles) issue(kt + STAGES);
    }

    // ---- epilogue: fragment i of 8 columns holds (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1) ---
    const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
    for (int i = 0; i < 16; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int gm = m0 + wg * 64 + wq * 16 + g + (e >> 1) * 8;
            const int gn = n0 + i * 8 + 2 * t4 + (e & 1);
            if (gm >= M || gn >= N) continue;
            float v = alpha * d[i * 4 + e];
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
#endif  // MINITL_HAVE_WGMMA
}

#define MINITL_WGMMA(STAGES, BF16)                                                            \
    template __global__ void gemm_wgmma<STAGES, BF16>(const void*, const void*, float*, int, int, \
                                                      int, int, float, float, const float*,     \
                                                      const float*, int, int, const float*, int, \
                                                      int, int, float);

#ifndef MINITL_NO_INSTANTIATIONS
MINITL_WGMMA(4, true)
MINITL_WGMMA(4, false)
#endif
