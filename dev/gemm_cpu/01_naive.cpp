// 01 naive: the textbook triple loop, C[i][j] = sum_p A[i][p] * B[p][j].
//
// The inner loop walks B down a column: every step is N floats (4 KiB at N = 1024) past the
// last one, so each FMA waits on a cache line of which it uses 4 bytes, and columns 4 KiB apart
// map to the same few L1 sets. Nothing vectorises (the sum is a serial dependency chain too).
// Expect ~1 GFLOP/s or less: memory latency, not arithmetic, sets the pace.
#include "common.h"

void gemm(int M, int N, int K, const float* A, const float* B, float* C) {
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
            float acc = 0.0f;
            for (int p = 0; p < K; ++p) acc += A[long(i) * K + p] * B[long(p) * N + j];
            C[long(i) * N + j] = acc;
        }
}

int main(int argc, char** argv) { return run_step("01_naive", gemm, argc, argv); }
