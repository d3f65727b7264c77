// Shared device helpers for minitl's CUDA kernels: warp/block reductions, vector loads, and the
// inline-PTX wrappers (cp.async, ldmatrix, mma.sync, bf16 conversion) the GEMMs are built from.
//
// These files are compiled at run time by CuPy (NVRTC), which has no C/C++ standard headers:
// nothing here includes one, and integer types are spelled as the builtin C types.
// `minitl/backend/cuda_src.py` pastes this header into each .cu file before compiling it, so a
// change here always invalidates CuPy's kernel cache.
#pragma once

#define MINITL_DEVICE __device__ __forceinline__

// ---- warp and block reductions ---------------------------------------------------------------

MINITL_DEVICE float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

MINITL_DEVICE float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `scratch` holds >= 32 floats. The leading
// __syncthreads makes back-to-back calls on the same scratch safe.
MINITL_DEVICE float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < nwarps) ? scratch[lane] : 0.f;
    return warp_sum(v);
}

MINITL_DEVICE float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (lane < nwarps) ? scratch[lane] : -3.402823466e38f;
    return warp_max(v);
}

// ---- guarded vector loads ----------------------------------------------------------------

// Four consecutive floats p[c..c+3] of a row with `cols` valid entries; out-of-range entries
// are 0. One 16-byte load when `vec` (row start 16-byte aligned) and all four are in range.
MINITL_DEVICE float4 load4_row(const float* __restrict__ p, int c, int cols, bool vec) {
    if (vec && c + 3 < cols) return *reinterpret_cast<const float4*>(p + c);
    float4 r;
    r.x = (c + 0 < cols) ? p[c + 0] : 0.f;
    r.y = (c + 1 < cols) ? p[c + 1] : 0.f;
    r.z = (c + 2 < cols) ? p[c + 2] : 0.f;
    r.w = (c + 3 < cols) ? p[c + 3] : 0.f;
    return r;
}

MINITL_DEVICE unsigned smem_u32(const void* p) {
    return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// ---- cp.async (sm_80+): global -> shared without a register round trip -----------------------

// Copies `src_bytes` (0..16) bytes and zero-fills the rest of the 16-byte chunk; 0 reads nothing.
MINITL_DEVICE void cp_async16(void* smem, const void* gmem, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(smem)),
                 "l"(gmem), "r"(src_bytes));
}

MINITL_DEVICE void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
MINITL_DEVICE void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- ldmatrix / mma.sync (sm_80+) ----------------------------------------------------------

// Four 8x8 b16 matrices; lane l supplies the row address of matrix l / 8, row l % 8.
MINITL_DEVICE void ldmatrix_x4(unsigned (&r)[4], const void* smem) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(smem)));
}

// fp32 -> tf32 with round-to-nearest (mma on raw fp32 bits would truncate the mantissa).
MINITL_DEVICE unsigned to_tf32(unsigned bits) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(bits)));
    return r;
}

// D (16x8, fp32) += A (16x8, tf32, row) * B (8x8, tf32, col).
MINITL_DEVICE void mma_tf32_16x8x8(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                   unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// D (16x8, fp32) += A (16x16, bf16, row) * B (16x8, bf16, col).
MINITL_DEVICE void mma_bf16_16x8x16(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                    unsigned b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ---- bf16 stored as unsigned short (no cuda_bf16.h under NVRTC) ------------------------------

MINITL_DEVICE unsigned short f32_to_bf16(float x) {
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;\n" : "=h"(r) : "f"(x));
    return r;
}

MINITL_DEVICE float bf16_to_f32(unsigned short h) {
    return __uint_as_float(static_cast<unsigned>(h) << 16);
}
