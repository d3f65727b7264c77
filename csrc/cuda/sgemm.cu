// SIMT SGEMM on CUDA cores: C = alpha op(A) op(B) + beta C + bias (+ LoRA up-projection).
// The kernel itself is the template in sgemm.cuh; this file instantiates the tile shapes the
// autotuner chooses from (minitl/backend/cuda_tune.py lists the same shapes, and a CPU test
// checks that both lists agree).
//
// Reference: minitl.backend.reference.gemm.
// Bound: FMA-bound for M, N, K >= 512 (32 flops per L2 byte with 128x128 tiles); skinny shapes
// (M or N <= 64) are bandwidth-bound at ~2 flops per byte of the long operand and use split-K.
#include "sgemm.cuh"

#define MINITL_SGEMM(BM, BN, BK, WM, WN, WNITER, TM, TN, TA, TB, LR)                             \
    template __global__ void sgemm<BM, BN, BK, WM, WN, WNITER, TM, TN, TA, TB, LR>(              \
        const float*, const float*, float*, int, int, int, int, int, int, float, float,           \
        const float*, const float*, int, int, const float*, int, int, int, float, const float*, \
        int, float*, int);

// ---- tile shapes: (BM, BN, BK, WM, WN, WNITER, TM, TN) ----------------------------------------
#define MINITL_SGEMM_TILES(TA, TB)                              \
    MINITL_SGEMM(128, 128, 16, 64, 64, 4, 8, 4, TA, TB, 0)      \
    MINITL_SGEMM(128, 128, 8, 64, 32, 2, 8, 4, TA, TB, 0)       \
    MINITL_SGEMM(128, 64, 16, 64, 32, 2, 8, 4, TA, TB, 0)       \
    MINITL_SGEMM(64, 64, 16, 32, 32, 2, 4, 4, TA, TB, 0)        \
    MINITL_SGEMM(32, 128, 16, 32, 32, 2, 4, 4, TA, TB, 0)       \
    MINITL_SGEMM(128, 32, 16, 32, 32, 2, 4, 4, TA, TB, 0)

// CuPy compiles only the instantiations it asks for (name_expressions) and defines
// MINITL_NO_INSTANTIATIONS; the nvcc compile check in CI builds all of them.
#ifndef MINITL_NO_INSTANTIATIONS
MINITL_SGEMM_TILES(false, false)
MINITL_SGEMM_TILES(false, true)
MINITL_SGEMM_TILES(true, false)
MINITL_SGEMM_TILES(true, true)
#endif
