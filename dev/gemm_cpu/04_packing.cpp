// 04 packing: the BLIS loop nest (Van Zee & van de Geijn, "BLIS: a framework for rapidly
// instantiating BLAS functionality", ACM TOMS 2015). Five loops around a micro-kernel:
//
//   jc: NC columns of B      (B slice KC x NC packed once, lives in L3)
//   pc: KC deep slices of K
//   ic: MC rows of A         (A block MC x KC packed, lives in L2)
//   jr: NR columns  ir: MR rows -> one MR x NR tile of C, held in registers over all KC steps
//
// Packing copies each block into micro-panels laid out in the order the micro-kernel reads
// them (k-major, MR or NR wide, zero-padded at the edges), so the innermost loop touches only
// contiguous memory: no strides, no TLB misses, no edge cases. The MR x NR tile turns
// 2 loads + 1 store per FMA (step 03) into MR + NR loads per MR * NR FMAs. Here the micro-kernel
// is still plain C++ that the compiler vectorises as it sees fit; step 05 writes it by hand.
#include "common.h"

constexpr int MR = 6, NR = 16, MC = 144, KC = 256, NC = 4096;

// A[ic : ic+mc, pc : pc+kc] -> ceil(mc/MR) panels of kc x MR (k-major), rows past mc zero.
void pack_a(const float* A, int K, int ic, int pc, int mc, int kc, float* out) {
    for (int ir = 0; ir < mc; ir += MR, out += MR * kc)
        for (int p = 0; p < kc; ++p)
            for (int i = 0; i < MR; ++i)
                out[p * MR + i] = ir + i < mc ? A[long(ic + ir + i) * K + pc + p] : 0.0f;
}

// B[pc : pc+kc, jc : jc+nc] -> ceil(nc/NR) panels of kc x NR (k-major), columns past nc zero.
void pack_b(const float* B, int N, int pc, int jc, int kc, int nc, float* out) {
    for (int jr = 0; jr < nc; jr += NR, out += NR * kc)
        for (int p = 0; p < kc; ++p)
            for (int j = 0; j < NR; ++j)
                out[p * NR + j] = jr + j < nc ? B[long(pc + p) * N + jc + jr + j] : 0.0f;
}

// c (MR x NR, row stride ldc) = (accumulate ? c : 0) + a_panel @ b_panel.
void ukernel(int kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
             long ldc, bool accumulate) {
    float acc[MR][NR] = {};
    for (int p = 0; p < kc; ++p, a += MR, b += NR)
        for (int i = 0; i < MR; ++i)
            for (int j = 0; j < NR; ++j) acc[i][j] += a[i] * b[j];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NR; ++j) c[i * ldc + j] = (accumulate ? c[i * ldc + j] : 0) + acc[i][j];
}

void gemm(int M, int N, int K, const float* A, const float* B, float* C) {
    float* Ap = alloc_floats(size_t(MC + MR) * KC);
    float* Bp = alloc_floats(size_t(NC + NR) * KC);
    float edge[MR * NR];
    for (int jc = 0; jc < N; jc += NC) {
        const int nc = std::min(NC, N - jc);
        for (int pc = 0; pc < K; pc += KC) {
            const int kc = std::min(KC, K - pc);
            pack_b(B, N, pc, jc, kc, nc, Bp);
            for (int ic = 0; ic < M; ic += MC) {
                const int mc = std::min(MC, M - ic);
                pack_a(A, K, ic, pc, mc, kc, Ap);
                for (int jr = 0; jr < nc; jr += NR)
                    for (int ir = 0; ir < mc; ir += MR) {
                        const int mr = std::min(MR, mc - ir), nr = std::min(NR, nc - jr);
                        float* c = C + long(ic + ir) * N + jc + jr;
                        if (mr == MR && nr == NR) {
                            ukernel(kc, Ap + ir * kc, Bp + jr * kc, c, N, pc > 0);
                            continue;
                        }
                        ukernel(kc, Ap + ir * kc, Bp + jr * kc, edge, NR, false);  // ragged tile
                        for (int i = 0; i < mr; ++i)
                            for (int j = 0; j < nr; ++j) {
                                float& cij = c[long(i) * N + j];
                                cij = (pc > 0 ? cij : 0) + edge[i * NR + j];
                            }
                    }
            }
        }
    }
    std::free(Ap), std::free(Bp);
}

int main(int argc, char** argv) { return run_step("04_packing", gemm, argc, argv); }
