// 02 loop order: i, p, j instead of i, j, p. The same arithmetic, but the inner loop now reads
// a row of B and updates a row of C, both contiguous: C[i][:] += A[i][p] * B[p][:].
//
// Unit stride lets the compiler vectorise the inner loop (8 floats per AVX2 FMA) and the
// hardware prefetcher stream it. Still, every inner loop loads and stores a whole row of C
// and a whole row of B (4 KiB each at N = 1024): two loads and a store per FMA, so L1/L2
// bandwidth bounds it, and B (4 MiB) is read from L3 or memory once per row of A.
#include "common.h"

void gemm(int M, int N, int K, const float* A, const float* B, float* C) {
    for (int i = 0; i < M; ++i) {
        float* __restrict c = C + long(i) * N;
        std::fill(c, c + N, 0.0f);
        for (int p = 0; p < K; ++p) {
            const float a = A[long(i) * K + p];
            const float* __restrict b = B + long(p) * N;
            for (int j = 0; j < N; ++j) c[j] += a * b[j];
        }
    }
}

int main(int argc, char** argv) { return run_step("02_loop_order", gemm, argc, argv); }
