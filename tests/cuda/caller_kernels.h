// caller_kernels.h - kernels standing for a caller's own, for the CUDA tests (caller_kernels.cu).
#ifndef BNB4_TEST_CALLER_KERNELS_H
#define BNB4_TEST_CALLER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

// Copies bytes (a multiple of 16, both pointers 16-byte aligned) from src to dst on the stream, as a kernel that
// lets the next kernel start at once (griddepcontrol.launch_dependents, sm_90) and writes only after delay_us.
cudaError_t test_copy_late(const void *src, void *dst, size_t bytes, unsigned delay_us, cudaStream_t stream);

// The PTX architecture (10 x major + minor) of the code the driver loaded for the current device from this build
// (the tests and the library are built for the same architectures): below 90 on a Hopper GPU when the build has
// only compute_80 PTX; 0 if it has no code for the device.
int test_code_arch(void);

#endif
