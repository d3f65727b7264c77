// csrc/cpu/blas_pool.h — run numpy's OpenBLAS parallel work on minitl's OpenMP team.
//
// On a small machine two thread pools fight: after a numpy matrix product OpenBLAS's workers
// spin for a while waiting for more work, and a minitl kernel started then shares its cores
// with them (a 1024^3 GEMM ran at half speed on 2 cores). OpenBLAS (0.3.27+) lets the caller
// run its parallel jobs instead (openblas_set_threads_callback_function); handing it
// run_blas_jobs makes numpy's BLAS and minitl's kernels use one team of threads.
#pragma once

#include <cstddef>

namespace minitl::cpu {

// OpenBLAS's openblas_dojob_callback and openblas_threads_callback (cblas.h).
using BlasJob = void (*)(int thread_num, void* job, int job_arg);

// Runs job(i, jobs + i * job_bytes, job_arg) for i in [0, n_jobs), all n_jobs at once: OpenBLAS's
// level-3 jobs wait on each other, so they must run concurrently, never one after another. On
// minitl's OpenMP team when it can give n_jobs threads; otherwise (inside a parallel region, a
// thread limit, a forked child whose team is gone) on threads started for the call.
void run_blas_jobs(int sync, BlasJob job, int n_jobs, std::size_t job_bytes, void* jobs,
                   int job_arg);

// How many times run_blas_jobs has run, and how many of those on started threads rather than
// the OpenMP team: the tests' evidence that OpenBLAS calls it and that the fallback works.
struct BlasJobCounts {
    long long calls;
    long long on_started_threads;
};
BlasJobCounts blas_job_counts();

}  // namespace minitl::cpu
