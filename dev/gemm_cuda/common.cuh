// dev/gemm_cuda/common.cuh — the harness every CUDA step shares (after llm.c's
// dev/cuda/common.h): random operands, a check of sampled entries against a float64 CPU dot
// product, cudaEvent timing, one result line.
//
// A step passes run_step() a launcher  void(int M, int N, int K, const float* A, const float* B,
// float* C)  for row-major device buffers, C = A @ B overwritten. Usage of every binary:
//   ./step [M N K] [repeats]        defaults 4096 4096 4096, 10
// It prints  step | M N K | median GFLOP/s | min-max | max rel err | ok | GPU
// Steps 04-07 need M, N multiples of 128 and K of their BK (`multiple_mn`, `multiple_k`): their
// tiles have no edge code, which keeps each step to its one idea. minitl's kernels (steps 08,
// 09) have it, but load 16 bytes at a time, so rows must be 16-byte aligned (multiples of 4).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#define CUDA_CHECK(call)                                                                  \
    do {                                                                                  \
        cudaError_t e_ = (call);                                                          \
        if (e_ != cudaSuccess) {                                                          \
            std::fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call,             \
                         cudaGetErrorString(e_));                                         \
            std::exit(2);                                                                 \
        }                                                                                 \
    } while (0)

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Worst |C - ref| / sum_p |A_ip B_pj| over 4096 sampled entries. FP32 steps pass at 1e-5;
// TF32 inputs keep 10 mantissa bits (rounding error 2^-11 per product), so they pass at 2e-3.
inline double check(int M, int N, int K, const std::vector<float>& A,
                    const std::vector<float>& B, const std::vector<float>& C) {
    std::mt19937 rng(7);
    double worst = 0;
    for (int s = 0; s < 4096; ++s) {
        const int i = int(rng() % M), j = int(rng() % N);
        double ref = 0, mag = 1e-30;
        for (int p = 0; p < K; ++p) {
            const double t = double(A[size_t(i) * K + p]) * B[size_t(p) * N + j];
            ref += t, mag += std::fabs(t);
        }
        const double e = std::fabs(C[size_t(i) * N + j] - ref) / mag;
        if (std::isnan(e)) return INFINITY;  // std::max would drop a NaN
        worst = std::max(worst, e);
    }
    return worst;
}

template <class Launch>
int run_step(const char* name, Launch launch, int argc, char** argv, double tol = 1e-5,
             int multiple_mn = 1, int multiple_k = 1) {
    const int M = argc >= 4 ? std::atoi(argv[1]) : 4096;
    const int N = argc >= 4 ? std::atoi(argv[2]) : 4096;
    const int K = argc >= 4 ? std::atoi(argv[3]) : 4096;
    const int reps = std::max(1, argc == 5 ? std::atoi(argv[4]) : 10);
    if (M % multiple_mn || N % multiple_mn || K % multiple_k) {
        std::fprintf(stderr, "%s: M, N must be multiples of %d and K of %d\n", name,
                     multiple_mn, multiple_k);
        return 2;
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
        std::printf("%s | not run: no CUDA device\n", name);
        return 0;
    }
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));

    std::vector<float> A(size_t(M) * K), B(size_t(K) * N), C(size_t(M) * N);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (float& v : A) v = u(rng);
    for (float& v : B) v = u(rng);
    float *dA, *dB, *dC;
    CUDA_CHECK(cudaMalloc(&dA, A.size() * 4));
    CUDA_CHECK(cudaMalloc(&dB, B.size() * 4));
    CUDA_CHECK(cudaMalloc(&dC, C.size() * 4));
    CUDA_CHECK(cudaMemcpy(dA, A.data(), A.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dB, B.data(), B.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(dC, 0xff, C.size() * 4));  // NaN: a skipped element fails the check

    launch(M, N, K, dA, dB, dC);  // warm-up and the checked result
    CUDA_CHECK(cudaGetLastError());
    CUDA_CHECK(cudaDeviceSynchronize());
    CUDA_CHECK(cudaMemcpy(C.data(), dC, C.size() * 4, cudaMemcpyDeviceToHost));
    const double err = check(M, N, K, A, B, C);

    cudaEvent_t t0, t1;
    CUDA_CHECK(cudaEventCreate(&t0));
    CUDA_CHECK(cudaEventCreate(&t1));
    std::vector<double> gflops;
    for (int r = 0; r < reps; ++r) {
        CUDA_CHECK(cudaEventRecord(t0));
        launch(M, N, K, dA, dB, dC);
        CUDA_CHECK(cudaEventRecord(t1));
        CUDA_CHECK(cudaEventSynchronize(t1));
        float ms = 0;
        CUDA_CHECK(cudaEventElapsedTime(&ms, t0, t1));
        gflops.push_back(2.0 * M * N * K / (ms * 1e-3) * 1e-9);
    }
    std::sort(gflops.begin(), gflops.end());
    const bool ok = err < tol;  // NaN compares false: fails
    std::printf("%s | %d %d %d | %.0f | %.0f-%.0f | %.1e | %s | %s\n", name, M, N, K,
                gflops[gflops.size() / 2], gflops.front(), gflops.back(), err,
                ok ? "ok" : "FAILED", prop.name);
    CUDA_CHECK(cudaFree(dA));
    CUDA_CHECK(cudaFree(dB));
    CUDA_CHECK(cudaFree(dC));
    return ok ? 0 : 1;
}
