// csrc/cpu/common.h — small helpers shared by minitl's CPU kernels (namespace minitl::cpu).
//
// Kernels see contiguous float32 buffers and sizes; Python owns shapes, strides and dtypes
// (csrc/bindings.cpp checks them before any pointer is touched). This header holds only what
// every kernel needs: the index type, the ISA guard, OpenMP wrappers that degrade to one
// thread without OpenMP, and 64-byte aligned scratch buffers for packed panels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

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

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

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
