// 06 threads: step 05 on an OpenMP team. The rows of C are cut into one band per thread
// (whole MR tiles, as equal as they divide); each thread packs its own A blocks, while all of
// them pack one shared B slice together and meet at a barrier before and after using it.
//
// Splitting the ic loop (not jr) keeps each thread's A block in its own core's L2 while the
// shared B slice (KC x NC) sits in the common L3: the split that Smith et al. ("Anatomy of
// high-performance many-threaded matrix multiplication", IPDPS 2014) advise for private L2s.
// Two cores can double step 05 only when nothing else runs: on a shared machine the barrier
// waits for the slower core every KC slice. Run with OMP_NUM_THREADS=1 and =2.
#include "common.h"

#include <immintrin.h>

#if defined(USE_AVX512) && defined(__AVX512F__)
constexpr int MR = 12, NR = 32, MC = 144, KC = 192, NC = 4096;
using V = __m512;
#define VW 16
#define VSET1 _mm512_set1_ps
#define VFMA _mm512_fmadd_ps
#define VLOAD _mm512_load_ps
#define VLOADU _mm512_loadu_ps
#define VSTOREU _mm512_storeu_ps
#define VZERO _mm512_setzero_ps
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
const char* kName = "06_threads_avx512_12x32";
#else
constexpr int MR = 6, NR = 16, MC = 144, KC = 256, NC = 4096;
using V = __m256;
#define VW 8
#define VSET1 _mm256_set1_ps
#define VFMA _mm256_fmadd_ps
#define VLOAD _mm256_load_ps
#define VLOADU _mm256_loadu_ps
#define VSTOREU _mm256_storeu_ps
#define VZERO _mm256_setzero_ps
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
const char* kName = "06_threads_avx2_6x16";
#endif

// ---- packing and micro-kernel (as in step 05) ---------------------------------------------------

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

// c (MR x NR, row stride ldc) = (accumulate ? c : 0) + a_panel @ b_panel; panels 64-byte aligned.
void ukernel(int kc, const float* __restrict a, const float* __restrict b, float* __restrict c,
             long ldc, bool accumulate) {
#define DECLARE(i) V c##i##0 = VZERO(), c##i##1 = VZERO();
#define STEP(i) { const V ai = VSET1(a[i]); c##i##0 = VFMA(ai, b0, c##i##0); \
                  c##i##1 = VFMA(ai, b1, c##i##1); }
#define STORE(i) { float* r = c + (i) * ldc;                                    \
    if (accumulate) c##i##0 += VLOADU(r), c##i##1 += VLOADU(r + VW);           \
    VSTOREU(r, c##i##0); VSTOREU(r + VW, c##i##1); }
    ROWS(DECLARE)
    for (int p = 0; p < kc; ++p, a += MR, b += NR) {
        const V b0 = VLOAD(b), b1 = VLOAD(b + VW);
        ROWS(STEP)
    }
    ROWS(STORE)
}

// One MC x NC block of C from a packed A block and a packed B slice.
void macro_kernel(const float* Ap, const float* Bp, float* C, int N, int mc, int nc, int kc,
                  bool accumulate) {
    alignas(64) float edge[MR * NR];
    for (int jr = 0; jr < nc; jr += NR)
        for (int ir = 0; ir < mc; ir += MR) {
            const int mr = std::min(MR, mc - ir), nr = std::min(NR, nc - jr);
            float* c = C + long(ir) * N + jr;
            if (mr == MR && nr == NR) {
                ukernel(kc, Ap + ir * kc, Bp + jr * kc, c, N, accumulate);
                continue;
            }
            ukernel(kc, Ap + ir * kc, Bp + jr * kc, edge, NR, false);  // ragged tile
            for (int i = 0; i < mr; ++i)
                for (int j = 0; j < nr; ++j)
                    c[long(i) * N + j] = (accumulate ? c[long(i) * N + j] : 0) + edge[i * NR + j];
        }
}

void gemm(int M, int N, int K, const float* A, const float* B, float* C) {
    float* Bp = alloc_floats(size_t(NC + NR) * KC);  // shared by the team
#pragma omp parallel
    {
        float* Ap = alloc_floats(size_t(MC + MR) * KC);
        const int team = omp_get_num_threads(), t = omp_get_thread_num();
        const int tiles = (M + MR - 1) / MR, band = (tiles + team - 1) / team * MR;
        const int i0 = std::min(M, t * band), i1 = std::min(M, i0 + band);
        for (int jc = 0; jc < N; jc += NC) {
            const int nc = std::min(NC, N - jc);
            for (int pc = 0; pc < K; pc += KC) {
                const int kc = std::min(KC, K - pc);
#pragma omp for schedule(static)  // ends with a barrier: the slice is whole before use
                for (int jr = 0; jr < nc; jr += NR)
                    pack_b(B, N, pc, jc + jr, kc, std::min(NR, nc - jr), Bp + long(jr) * kc);
                for (int ic = i0; ic < i1; ic += MC) {
                    const int mc = std::min(MC, i1 - ic);
                    pack_a(A, K, ic, pc, mc, kc, Ap);
                    macro_kernel(Ap, Bp, C + long(ic) * N + jc, N, mc, nc, kc, pc > 0);
                }
#pragma omp barrier  // nobody repacks Bp while a partner still reads it
            }
        }
        std::free(Ap);
    }
    std::free(Bp);
}

int main(int argc, char** argv) { return run_step(kName, gemm, argc, argv, true); }
