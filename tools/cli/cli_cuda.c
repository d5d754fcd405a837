/*
 * cli_cuda.c - `bnb4 quantize --device cuda`: one tensor through the CUDA backend. libbnb4's CUDA
 * context takes device pointers, so this file stages the tensor in device memory and copies the
 * results back; the bytes are the same as the CPU path's (both are bit-exact with bitsandbytes).
 * Built only with BNB4_CUDA.
 */
#include "bnb4_cli.h"

#include <cuda_runtime_api.h>
#include <stdio.h>

#define CU(call, what)                                                                           \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            snprintf(err, errlen, "CUDA %s failed: %s", what, cudaGetErrorString(e_));           \
            goto done;                                                                           \
        }                                                                                        \
    } while (0)

#define BNB(call, what)                                                                          \
    do {                                                                                         \
        if ((call) != BNB4_OK) {                                                                 \
            snprintf(err, errlen, "%s failed on the GPU: %s", what, bnb4_last_error());          \
            goto done;                                                                           \
        }                                                                                        \
    } while (0)

int cli_cuda_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype dtype, size_t n, size_t blocksize,
                      bnb4_quant_type qt, int nested, uint8_t *packed, float *absmax, uint8_t *absmax_codes,
                      float *nested_absmax, float *offset, char *err, size_t errlen) {
    int rc = -1;
    size_t esize = bnb4_dtype_size(dtype), packed_n = n / 2 + (n & 1), nb = (n + blocksize - 1) / blocksize;
    size_t nnb = (nb + 255) / 256;
    void *d_src = NULL, *d_packed = NULL, *d_absmax = NULL, *d_codes = NULL, *d_nabs = NULL;
    CU(cudaMalloc(&d_src, n * esize), "cudaMalloc");
    CU(cudaMalloc(&d_packed, packed_n), "cudaMalloc");
    CU(cudaMalloc(&d_absmax, nb * sizeof(float)), "cudaMalloc");
    CU(cudaMemcpy(d_src, src, n * esize, cudaMemcpyHostToDevice), "copy to the GPU");
    BNB(bnb4_quantize(ctx, d_src, dtype, n, blocksize, qt, d_packed, d_absmax), "quantize");
    CU(cudaMemcpy(packed, d_packed, packed_n, cudaMemcpyDeviceToHost), "copy from the GPU");
    CU(cudaMemcpy(absmax, d_absmax, nb * sizeof(float), cudaMemcpyDeviceToHost), "copy from the GPU");
    if (nested) {
        CU(cudaMalloc(&d_codes, nb), "cudaMalloc");
        CU(cudaMalloc(&d_nabs, nnb * sizeof(float)), "cudaMalloc");
        BNB(bnb4_nested_offset(ctx, d_absmax, nb, offset), "nested offset");
        BNB(bnb4_quantize_nested(ctx, d_absmax, nb, *offset, 256, d_codes, d_nabs), "nested quantize");
        CU(cudaMemcpy(absmax_codes, d_codes, nb, cudaMemcpyDeviceToHost), "copy from the GPU");
        CU(cudaMemcpy(nested_absmax, d_nabs, nnb * sizeof(float), cudaMemcpyDeviceToHost), "copy from the GPU");
    }
    CU(cudaDeviceSynchronize(), "synchronize");
    rc = 0;
done:
    cudaFree(d_src);
    cudaFree(d_packed);
    cudaFree(d_absmax);
    cudaFree(d_codes);
    cudaFree(d_nabs);
    return rc;
}
