/*
 * cpu_backend.c - the CPU backend: runs each op with the reference kernels of src/ref.
 *
 * This is the portable fallback every faster CPU path is measured against; SIMD kernels and the
 * thread pool plug in here through per-op dispatch (see the CPU-speed issue).
 */
#include "bnb4_backend.h"
#include "bnb4_ref.h"

bnb4_status bnb4_cpu_ctx_init(bnb4_ctx *ctx) {
    (void)ctx;
    return BNB4_OK;
}

void bnb4_cpu_ctx_free(bnb4_ctx *ctx) { (void)ctx; }

const char *bnb4_cpu_feature_string(void) { return ""; }

static size_t blocks_of(size_t n, size_t blocksize) { return n / blocksize + (n % blocksize != 0); }

bnb4_status bnb4_cpu_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype dt, size_t n, size_t blocksize,
                              bnb4_quant_type qt, uint8_t *packed, float *absmax) {
    (void)ctx;
    bnb4_ref_quantize_blocks(src, dt, n, blocksize, qt, 0, blocks_of(n, blocksize), packed, absmax);
    return BNB4_OK;
}

bnb4_status bnb4_cpu_nested_offset(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float *offset) {
    (void)ctx;
    *offset = bnb4_ref_nested_offset(absmax, nblocks);
    return BNB4_OK;
}

bnb4_status bnb4_cpu_quantize_nested(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float offset,
                                     size_t nested_blocksize, uint8_t *codes, float *nested_absmax) {
    (void)ctx;
    bnb4_ref_quantize_nested_blocks(absmax, nblocks, offset, nested_blocksize, 0, blocks_of(nblocks, nested_blocksize),
                                    codes, nested_absmax);
    return BNB4_OK;
}

bnb4_status bnb4_cpu_dequantize_nested(bnb4_ctx *ctx, const bnb4_qtensor *q, float *absmax) {
    (void)ctx;
    const size_t nb = blocks_of(q->rows * q->cols, q->blocksize);
    for (size_t b = 0; b < nb; b++)
        absmax[b] = bnb4_ref_block_scale(q, b);
    return BNB4_OK;
}

bnb4_status bnb4_cpu_dequantize(bnb4_ctx *ctx, const bnb4_qtensor *q, bnb4_dtype dt, void *dst) {
    (void)ctx;
    bnb4_ref_dequantize_range(q, dt, 0, q->rows * q->cols, dst);
    return BNB4_OK;
}

bnb4_status bnb4_cpu_gemm(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                          const void *bias, void *y) {
    (void)ctx;
    bnb4_ref_gemm_cols(w, dt, m, x, bias, y, 0, w->rows);
    return BNB4_OK;
}

const char *bnb4_cpu_kernel_name(bnb4_ctx *ctx, bnb4_op op, bnb4_dtype dt, size_t m) {
    (void)ctx, (void)op, (void)dt, (void)m;
    return "ref";
}
