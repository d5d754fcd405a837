// kernel_choice.h - the matmul path the library picks on a described device, without one (kernel_choice.cu), so the
// choice per device class is tested on any machine, CI's included (test_cuda.cc, CudaChoice).
#ifndef BNB4_TEST_KERNEL_CHOICE_H
#define BNB4_TEST_KERNEL_CHOICE_H

#include <stddef.h>

#include "bnb4.h"

// A device as the library's context records it: compute capability, the PTX architecture of the code loaded for it
// (10 x major + minor), SM count and the shared memory a block may take.
struct TestDevice {
    int cc_major, cc_minor, code_arch, sm_count;
    size_t smem_optin;
};

// The path bnb4_cuda_pick_gemm takes for a plain (nested: double-quantized) NF4 weight of rows x cols, blocksize 64,
// with 16-byte aligned data, at m activation rows of dtype dt: "gemv", "pipe", "tile", "simt", "f32_tile" or
// "dequant+cublas".
const char *test_gemm_path(const TestDevice &d, size_t rows, size_t cols, bool nested, bnb4_dtype dt, size_t m);
// The path the same router takes on a CUDA context's own device ("none" for the CPU context), for a weight w on it
// and activations at x; "pipe" past m = 64 is the pipe kernel in 64-row slices (bnb4_cuda_pipe_chunks).
const char *test_ctx_gemm_path(const bnb4_ctx *ctx, const bnb4_qtensor &w, bnb4_dtype dt, size_t m, const void *x);
// The activation rows one launch of the pipe kernel takes there (bnb4_cuda_pipe_rows; 0: it does not fit).
size_t test_pipe_rows(const TestDevice &d);
// Whether the stream gemv kernel (m = 1) stages its activations in shared memory there, for K of dtype dt
// (bnb4_cuda_gemv_stages_x).
bool test_gemv_stages_x(const TestDevice &d, bnb4_dtype dt, bool nested, size_t K);
// Whether the SIMT rows kernel's launch of m <= 16 activation rows of dtype dt stages them in shared memory there
// (bnb4_cuda_simt_stages_x).
bool test_simt_stages_x(const TestDevice &d, bnb4_dtype dt, size_t m);
// The splits of K the f32 tile kernel makes for an N x K weight at m activation rows there (bnb4_cuda_f32_tile_splits).
size_t test_f32_tile_splits(const TestDevice &d, size_t N, size_t K, size_t m);

#endif
