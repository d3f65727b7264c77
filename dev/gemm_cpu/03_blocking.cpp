// 03 cache blocking: step 02's loops, run over KC x NC blocks of B that fit in L2 and
// MC x NC strips of C that fit in L1/L2, so each block is reused MC times from cache instead
// of being streamed from memory once per row of A (Goto & van de Geijn, "Anatomy of
// high-performance matrix multiplication", ACM TOMS 2008).
//
// B block: KC x NC = 256 x 256 floats = 256 KiB (this CPU's L2 is 1.25 MiB per core);
// C strip: one row of NC floats = 1 KiB stays in L1 across the KC loop. The inner loop is
// still load/store bound (C row in and out per FMA), so the gain is in where the loads hit.
#include "common.h"

constexpr int MC = 64, KC = 256, NC = 256;

void gemm(int M, int N, int K, const float* A, const float* B, float* C) {
    std::fill(C, C + long(M) * N, 0.0f);
    for (int jc = 0; jc < N; jc += NC)
        for (int pc = 0; pc < K; pc += KC)
            for (int ic = 0; ic < M; ic += MC) {
                const int nc = std::min(NC, N - jc), kc = std::min(KC, K - pc);
                const int mc = std::min(MC, M - ic);
                for (int i = ic; i < ic + mc; ++i) {
                    float* __restrict c = C + long(i) * N + jc;
                    for (int p = pc; p < pc + kc; ++p) {
                        const float a = A[long(i) * K + p];
                        const float* __restrict b = B + long(p) * N + jc;
                        for (int j = 0; j < nc; ++j) c[j] += a * b[j];
                    }
                }
            }
}

int main(int argc, char** argv) { return run_step("03_blocking", gemm, argc, argv); }
