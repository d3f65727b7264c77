// 09 minitl tensor cores: the production TF32 kernel, csrc/cuda/gemm_mma.cu as it is, timed
// by the same harness: step 07 rebuilt on a 3-stage cp.async ring in shared memory, ldmatrix
// fragment loads and mma.sync m16n8k8, with edges and a fused epilogue. (A separate file from
// step 08: the two kernels declare their dynamic shared memory with different types.)
//
// gemm_mma wants B as (N, K), K-contiguous (x W^T); the launcher transposes B once into a
// scratch buffer on the warm-up call, outside the timed runs. Target (gemm_mma.cu): >= 0.8x
// cuBLAS TF32; H100 SXM dense TF32 ~495 TFLOP/s. sm_80 or newer.
#define MINITL_NO_INSTANTIATIONS  // instantiate only the tile launched below
#include "../../csrc/cuda/gemm_mma.cu"
#include "common.cuh"

__global__ void transpose(const float* in, float* out, int rows, int cols) {  // out = in^T
    __shared__ float tile[32][33];
    const int c = blockIdx.x * 32 + threadIdx.x, r = blockIdx.y * 32 + threadIdx.y;
    if (r < rows && c < cols) tile[threadIdx.y][threadIdx.x] = in[size_t(r) * cols + c];
    __syncthreads();
    const int oc = blockIdx.y * 32 + threadIdx.x, orow = blockIdx.x * 32 + threadIdx.y;
    if (orow < cols && oc < rows) out[size_t(orow) * rows + oc] = tile[threadIdx.x][threadIdx.y];
}

void launch_mma(int M, int N, int K, const float* A, const float* B, float* C) {
    static float* bt = nullptr;  // B^T (N, K), made on the first (warm-up) call
    static const float* bt_of = nullptr;
    if (bt_of != B) {
        if (bt) CUDA_CHECK(cudaFree(bt));
        CUDA_CHECK(cudaMalloc(&bt, size_t(N) * K * 4));
        transpose<<<dim3(ceil_div(N, 32), ceil_div(K, 32)), dim3(32, 32)>>>(B, bt, K, N);
        bt_of = B;
    }
    constexpr int NT = (128 / 64) * (128 / 32) * 32, smem = 3 * (128 + 128) * (128 + 16);
    auto kernel = gemm_mma<128, 128, 64, 32, 3, false>;
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    kernel<<<dim3(ceil_div(N, 128), ceil_div(M, 128), 1), NT, smem>>>(
        A, bt, C, M, N, K, K, K, N, 1.0f, 0.0f, nullptr, nullptr, 0, 0, nullptr, 0, 0, 0, 0.0f);
}

int main(int argc, char** argv) {
    return run_step("09_minitl_tensor_cores_tf32", launch_mma, argc, argv, 2e-3, 4, 4);
}
