/*
 * cuda_stub.c - the CUDA backend when the library is built without it (BNB4_CUDA=OFF or no nvcc).
 *
 * Keeps the core linkable with the same symbols (MLX's no_gpu idea): creating a CUDA context fails
 * with BNB4_ERR_UNSUPPORTED and a message saying why. The op functions cannot be reached, because
 * no CUDA context can exist, but answer the same way for safety.
 */
#include "bnb4_backend.h"

static bnb4_status not_built(void) {
    return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4 was built without the CUDA backend (configure with -DBNB4_CUDA=ON)");
}

bnb4_status bnb4_cuda_ctx_init(bnb4_ctx *ctx) {
    (void)ctx;
    return not_built();
}
void bnb4_cuda_ctx_free(bnb4_ctx *ctx) { (void)ctx; }
int bnb4_cuda_devices(void) { return 0; }

bnb4_status bnb4_cuda_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype dt, size_t n, size_t blocksize,
                               bnb4_quant_type qt, uint8_t *packed, float *absmax) {
    (void)ctx, (void)src, (void)dt, (void)n, (void)blocksize, (void)qt, (void)packed, (void)absmax;
    return not_built();
}
bnb4_status bnb4_cuda_nested_offset(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float *offset) {
    (void)ctx, (void)absmax, (void)nblocks, (void)offset;
    return not_built();
}
bnb4_status bnb4_cuda_quantize_nested(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float offset,
                                      size_t nested_blocksize, uint8_t *codes, float *nested_absmax) {
    (void)ctx, (void)absmax, (void)nblocks, (void)offset, (void)nested_blocksize, (void)codes, (void)nested_absmax;
    return not_built();
}
bnb4_status bnb4_cuda_dequantize_nested(bnb4_ctx *ctx, const bnb4_qtensor *q, float *absmax) {
    (void)ctx, (void)q, (void)absmax;
    return not_built();
}
bnb4_status bnb4_cuda_dequantize(bnb4_ctx *ctx, const bnb4_qtensor *q, bnb4_dtype dt, void *dst) {
    (void)ctx, (void)q, (void)dt, (void)dst;
    return not_built();
}
bnb4_status bnb4_cuda_gemm(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                           const void *bias, void *y) {
    (void)ctx, (void)w, (void)dt, (void)m, (void)x, (void)bias, (void)y;
    return not_built();
}
const char *bnb4_cuda_kernel_name(bnb4_ctx *ctx, bnb4_op op, bnb4_dtype dt, size_t m) {
    (void)ctx, (void)op, (void)dt, (void)m;
    return "unavailable (built without CUDA)";
}
