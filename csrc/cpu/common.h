// csrc/cpu/common.h — small helpers shared by minitl's CPU kernels (namespace minitl::cpu).
//
// Kernels see contiguous float32 buffers and sizes; Python owns shapes, strides and dtypes
// (csrc/bindings.cpp checks them before any pointer is touched). This header holds only what
// every kernel needs: the index type, the ISA guard, OpenMP wrappers that degrade to one
// thread without OpenMP, a barrier that yields, and 64-byte aligned scratch buffers for packed
// panels.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <thread>

#ifdef _OPENMP
#include <omp.h>
#endif

// x86-64 intrinsics and __builtin_cpu_supports exist only there; every other architecture
// builds the portable paths alone.
#if defined(__x86_64__) || defined(_M_X64)
#define MINITL_X86_64 1
#else
#define MINITL_X86_64 0
#endif

namespace minitl::cpu {

using index_t = std::int64_t;

// ---------------------------------------------------------------------------------------------
// arithmetic on sizes

constexpr index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }
constexpr index_t round_up(index_t a, index_t b) { return ceil_div(a, b) * b; }

// ---------------------------------------------------------------------------------------------
// OpenMP, or a single thread where the compiler has none

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// Threads in the current team: 1 outside a parallel region or without OpenMP.
inline int team_size() {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

// A barrier for the threads of one parallel region that polls for a while, then yields its
// core. libgomp's barrier spins for hundreds of thousands of pauses (milliseconds) before it
// sleeps: on a machine with more runnable threads than cores, a thread spinning there burns
// the very time slice its preempted partner needs to arrive. Yielding at once is no better:
// the scheduler may hand the core to another process for a whole tick (4 ms) although the
// partner arrives microseconds later. So: poll for kSpin, which covers the usual imbalance
// between threads, and yield only when the partner is clearly not running.
class YieldingBarrier {
public:
    explicit YieldingBarrier(int nthreads) : nthreads_(nthreads) {}

    void wait() {
        if (nthreads_ <= 1) return;
        const unsigned gen = generation_.load(std::memory_order_acquire);
        if (arrived_.fetch_add(1, std::memory_order_acq_rel) == nthreads_ - 1) {
            arrived_.store(0, std::memory_order_relaxed);
            generation_.fetch_add(1, std::memory_order_release);  // publishes all writes
            return;
        }
        const auto start = std::chrono::steady_clock::now();
        for (unsigned polls = 1; generation_.load(std::memory_order_acquire) == gen; ++polls) {
#if MINITL_X86_64
            __builtin_ia32_pause();
#endif
            if (polls % 64 == 0 && std::chrono::steady_clock::now() - start > kSpin)
                std::this_thread::yield();
        }
    }

private:
    static constexpr std::chrono::microseconds kSpin{200};
    const int nthreads_;
    std::atomic<int> arrived_{0};
    std::atomic<unsigned> generation_{0};
};

// ---------------------------------------------------------------------------------------------
// aligned scratch: packed panels are read with aligned vector loads

struct FreeDeleter {
    void operator()(void* p) const noexcept { std::free(p); }
};

template <typename T>
using aligned_array = std::unique_ptr<T[], FreeDeleter>;

// n elements of T, 64-byte aligned (one cache line, one AVX-512 vector); never returns null.
template <typename T>
aligned_array<T> make_aligned(std::size_t n) {
    constexpr std::size_t align = 64;
    std::size_t bytes = (n * sizeof(T) + align - 1) / align * align;
    if (bytes == 0) bytes = align;
    void* p = std::aligned_alloc(align, bytes);
    if (p == nullptr) throw std::bad_alloc();
    return aligned_array<T>(static_cast<T*>(p));
}

}  // namespace minitl::cpu
