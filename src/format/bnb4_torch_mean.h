/* bnb4_torch_mean.h -- bit-exact CPU emulation of torch.mean() of a contiguous float32 CUDA tensor, the
 * value bitsandbytes subtracts from absmax before double quantization (`offset = absmax.mean()`).
 *
 * Why: float32 additions do not associate, so the mean depends on the order of the sum. torch's CUDA
 * reduction (ATen's Reduce.cuh, MeanOps) sums in a fixed order that follows from its launch
 * configuration. A correctly rounded mean misses it by an ulp on many tensors (2 of the 6 nested ones in
 * shared/conformance), and then nested codes and scales may differ too.
 *
 * The order, for n float32 values (n >= 128: loads of 4; else single values):
 *   threads:  a block of W = min(512, largest power of 2 <= n/4) threads (n < 128: <= n), and C
 *             blocks: C = max(min(132 SMs x 2048 / W, ceil(v / 16)), ceil(v / 256)) where v = ceil(n /
 *             W) >= 256, else 1. Thread t of block c takes the 4-vectors t + cW, t + cW + WC, ...,
 *             summing lane i of each into its own accumulator a_i (from +0), the last n % 4 values into
 *             a_0 (threads t < n % 4 of block 0), then ((a_0 + a_1) + a_2) + a_3;
 *   a block:  thread t adds thread t + d's value for d = W/2, W/4, ..., 1 (through shared memory down to
 *             32, then the warp's shuffles down), thread 0's value;
 *   blocks:   thread t of the last block sums the blocks' values t, t + W, ... (from +0) and the same
 *             block tree follows;
 *   mean:     sum * (1.0f / (float)n), one float32 multiply (not a division).
 * C depends on the GPU past S x (T / W) x 16 x 512 values, S its SM count and T its threads per SM (2048 on
 * sm_80 / sm_90, 1536 on sm_86 / 89 / 120): 4.3 M on the 132-SM H100 SXM and H200, on which bitsandbytes'
 * reference outputs were recorded and which bnb4_torch_cuda_mean_f32 follows; 3.5 M on an A100 (108 SMs). The
 * CUDA backend follows its own GPU (bnb4_torch_cuda_mean_f32_on), as torch on it would.
 * Checked against torch 2.11 on an H200: the 124 rows of tests/unit/test_ref.cc's table (1 to 16777219
 * values; a correctly rounded mean misses 44 of them) and every nested tensor of shared/conformance. */
#ifndef BNB4_TORCH_MEAN_H
#define BNB4_TORCH_MEAN_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The GPU whose launch configuration the emulation follows by default (see above). */
#define BNB4_TORCH_MEAN_SMS 132
#define BNB4_TORCH_MEAN_SM_THREADS 2048

/* torch.mean() of x[0..n) as float32 on a CUDA device of BNB4_TORCH_MEAN_SMS SMs; n >= 1. Past 2^31 - 1
 * values (where torch splits the reduction into 32-bit-indexed parts) the correctly rounded mean. */
float bnb4_torch_cuda_mean_f32(const float *x, size_t n);
/* The same on a device of `sms` SMs of `threads_per_sm` threads each (cudaDeviceProp's multiProcessorCount and
 * maxThreadsPerMultiProcessor; threads_per_sm >= 512). */
float bnb4_torch_cuda_mean_f32_on(const float *x, size_t n, unsigned sms, unsigned threads_per_sm);

#ifdef __cplusplus
}
#endif

#endif
