// caller_kernels.cu - kernels standing for a caller's own, for the CUDA tests (test_cuda.cc).
#include "caller_kernels.h"

namespace {

// As inference engines write them for programmatic dependent launch: it lets the next kernel on the stream start
// at once (griddepcontrol.launch_dependents), then works - here it waits delay_ns - and writes its output last.
__global__ void copy_late_kernel(const uint4 *src, uint4 *dst, size_t n16, unsigned long long delay_ns) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
    unsigned long long t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    } while (t - t0 < delay_ns);
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = src[i];
}

} // namespace

cudaError_t test_copy_late(const void *src, void *dst, size_t bytes, unsigned delay_us, cudaStream_t stream) {
    if (bytes % 16 != 0 || (uintptr_t)src % 16 != 0 || (uintptr_t)dst % 16 != 0)
        return cudaErrorInvalidValue;
    copy_late_kernel<<<4, 256, 0, stream>>>(static_cast<const uint4 *>(src), static_cast<uint4 *>(dst), bytes / 16,
                                            1000ull * delay_us);
    return cudaGetLastError();
}

int test_code_arch(void) {
    cudaFuncAttributes fa;
    if (cudaFuncGetAttributes(&fa, copy_late_kernel) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return fa.ptxVersion > 0 ? fa.ptxVersion : fa.binaryVersion;
}
