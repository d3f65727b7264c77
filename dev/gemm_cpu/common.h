// dev/gemm_cpu/common.h — the harness every CPU step shares (after llm.c's dev/cuda/common.h):
// random operands, a check against a float64 reference, median timing, one result line.
//
// A step defines  void gemm(int M, int N, int K, const float* A, const float* B, float* C)
// (row-major, C = A @ B overwritten) and calls run_step(). Usage of every binary:
//   ./step [M N K] [repeats]        defaults 1024 1024 1024, 5
// It prints  step | M N K | threads | GFLOP/s | min-max | GFLOP/cpu-s | max rel err | ok | CPU
// and exits 1 when the check fails. GFLOP/s is the median over repeats of wall-clock rate;
// GFLOP/cpu-s divides by the CPU time the process got instead (all its threads together).
// On a machine shared with other jobs the first is what a user sees and the second what the
// code does per core-second it runs: for one thread, roughly its rate on an idle core.
#pragma once

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

using GemmFn = void (*)(int, int, int, const float*, const float*, float*);

// 64-byte aligned float buffer (packed panels and AVX-512 loads want cache-line alignment).
inline float* alloc_floats(size_t n) {
    void* p = std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64);
    if (!p) std::abort();
    return static_cast<float*>(p);
}

inline std::string cpu_model() {
    FILE* f = std::fopen("/proc/cpuinfo", "r");
    char line[512];
    std::string model = "unknown CPU";
    while (f && std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "model name", 10) == 0) {
            model = std::strchr(line, ':') + 2;
            model.erase(model.find_last_not_of("\n ") + 1);
            break;
        }
    if (f) std::fclose(f);
    return model;
}

inline double cpu_seconds() {  // CPU time of the whole process, all threads
    timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

// Every entry of C when it is small, else 4096 sampled entries, against a float64 dot product.
// The error is measured relative to sum_p |A_ip B_pj|: float32 rounding leaves ~sqrt(K) * 6e-8
// of it, a missing or doubled term leaves ~1/K of it, so 1e-5 separates the two up to K ~ 1e5.
inline double check(int M, int N, int K, const float* A, const float* B, const float* C) {
    std::mt19937 rng(7);
    const long total = long(M) * N, samples = std::min(total, 4096L);
    double worst = 0;
    for (long s = 0; s < samples; ++s) {
        const long at = samples == total ? s : long(rng() % total);
        const int i = int(at / N), j = int(at % N);
        double ref = 0, mag = 1e-30;
        for (int p = 0; p < K; ++p) {
            ref += double(A[long(i) * K + p]) * B[long(p) * N + j];
            mag += std::fabs(double(A[long(i) * K + p]) * B[long(p) * N + j]);
        }
        const double e = std::fabs(C[at] - ref) / mag;
        if (std::isnan(e)) return INFINITY;  // std::max would drop a NaN
        worst = std::max(worst, e);
    }
    return worst;
}

// threaded: the step runs an OpenMP team (OMP_NUM_THREADS of them); the others run on one.
inline int run_step(const char* name, GemmFn gemm, int argc, char** argv,
                    bool threaded = false) {
    const int M = argc >= 4 ? std::atoi(argv[1]) : 1024;
    const int N = argc >= 4 ? std::atoi(argv[2]) : 1024;
    const int K = argc >= 4 ? std::atoi(argv[3]) : 1024;
    const int reps = argc == 5 ? std::atoi(argv[4]) : argc == 2 ? std::atoi(argv[1]) : 5;
    float *A = alloc_floats(size_t(M) * K), *B = alloc_floats(size_t(K) * N),
          *C = alloc_floats(size_t(M) * N);
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (long i = 0; i < long(M) * K; ++i) A[i] = u(rng);
    for (long i = 0; i < long(K) * N; ++i) B[i] = u(rng);
    std::fill(C, C + long(M) * N, 1e30f);  // a step that forgets to overwrite C fails the check

    gemm(M, N, K, A, B, C);  // warm-up: page faults, OpenMP team start
    std::vector<double> gflops, per_cpu;  // at least one timed run
    if (reps < 1) return std::fprintf(stderr, "repeats must be >= 1\n"), 2;
    for (int r = 0; r < reps; ++r) {
        const double c0 = cpu_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        gemm(M, N, K, A, B, C);
        const std::chrono::duration<double> dt = std::chrono::steady_clock::now() - t0;
        gflops.push_back(2.0 * M * N * K / dt.count() * 1e-9);
        per_cpu.push_back(2.0 * M * N * K / std::max(cpu_seconds() - c0, 1e-9) * 1e-9);
    }
    // Checked after the timed runs, not between warm-up and them: an idle OpenMP team falls
    // asleep while the check runs, and waking it on a busy machine cost the first run ~10 ms.
    const double err = check(M, N, K, A, B, C);
    std::sort(gflops.begin(), gflops.end());
    std::sort(per_cpu.begin(), per_cpu.end());
    int threads = 1;
#ifdef _OPENMP
    if (threaded) threads = omp_get_max_threads();
#endif
    const bool ok = err < 1e-5;
    std::printf("%s | %d %d %d | %d | %.2f | %.2f-%.2f | %.2f | %.1e | %s | %s\n", name, M, N,
                K, threads, gflops[gflops.size() / 2], gflops.front(), gflops.back(),
                per_cpu[per_cpu.size() / 2], err, ok ? "ok" : "FAILED", cpu_model().c_str());
    std::free(A), std::free(B), std::free(C);
    return ok ? 0 : 1;
}
