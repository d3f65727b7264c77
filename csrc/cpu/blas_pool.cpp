// csrc/cpu/blas_pool.cpp — see blas_pool.h.
#include "blas_pool.h"

#include <unistd.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace minitl::cpu {

namespace {

// The OpenMP team of a forked child is not there (libgomp keeps the parent's thread records
// and waits on threads that do not exist), so a child runs the jobs on threads of its own.
const pid_t loaded_in = getpid();

// OpenBLAS keys each job's scratch buffer by its thread number, so two calls from different
// threads must not run at once (OpenBLAS's own server serialises them the same way).
std::mutex calls;

std::atomic<long long> n_calls{0}, n_on_started_threads{0};

void on_started_threads(BlasJob job, int n_jobs, std::size_t job_bytes, char* jobs,
                        int job_arg) {
    n_on_started_threads.fetch_add(1, std::memory_order_relaxed);
    std::vector<std::thread> helpers;
    helpers.reserve(static_cast<std::size_t>(n_jobs - 1));
    for (int i = 1; i < n_jobs; ++i)
        helpers.emplace_back(job, i, jobs + job_bytes * static_cast<std::size_t>(i), job_arg);
    job(0, jobs, job_arg);
    for (std::thread& t : helpers) t.join();
}

}  // namespace

void run_blas_jobs(int /*sync: OpenBLAS's pthread server always waits*/, BlasJob job, int n_jobs,
                   std::size_t job_bytes, void* jobs, int job_arg) {
    if (n_jobs <= 0) return;
    std::lock_guard<std::mutex> one_call(calls);
    n_calls.fetch_add(1, std::memory_order_relaxed);
    char* base = static_cast<char*>(jobs);
    if (n_jobs == 1) {
        job(0, base, job_arg);
        return;
    }
#ifdef _OPENMP
    if (getpid() == loaded_in && !omp_in_parallel() && n_jobs <= omp_get_thread_limit()) {
        // Every thread of the team sees the same team size, so either all n_jobs run here or
        // none does and the fallback below runs them all.
        bool ran = false;
#pragma omp parallel num_threads(n_jobs)
        {
            if (omp_get_num_threads() == n_jobs) {
                const int i = omp_get_thread_num();
                job(i, base + job_bytes * static_cast<std::size_t>(i), job_arg);
                if (i == 0) ran = true;
            }
        }
        if (ran) return;
    }
#endif
    on_started_threads(job, n_jobs, job_bytes, base, job_arg);
}

BlasJobCounts blas_job_counts() {
    return {n_calls.load(std::memory_order_relaxed),
            n_on_started_threads.load(std::memory_order_relaxed)};
}

}  // namespace minitl::cpu
