/*
 * bnb4_api.c - the public entry points: validate every argument, then route to one backend.
 *
 * Validation is a flat list of early returns (zstd style) and happens before any write, so an error
 * status always means "no output byte touched". Order of checks, and so which status wins when
 * several things are wrong: NULL context/params, enums, sizes (zero, then overflow), blocksizes,
 * pointers. Backends receive only arguments that passed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bnb4_backend.h"
#include "bnb4_format.h"

static const float nf4_codebook[16] = {BNB4_NF4_CODEBOOK_VALUES};
static const float fp4_codebook[16] = {BNB4_FP4_CODEBOOK_VALUES};
static const float fp4_quant_map[16] = {BNB4_FP4_QUANT_MAP_VALUES};
static const float nested_code[256] = {BNB4_NESTED_CODE_VALUES};

/* The NULL context: CPU, all cores, default state. Backends treat its NULL state as defaults. */
static bnb4_ctx default_ctx = {{BNB4_DEVICE_CPU, 0, NULL, 0}, NULL, NULL};

#define BNB4_STR2(x) #x
#define BNB4_STR(x) BNB4_STR2(x)

const char *bnb4_version_string(void) {
    return BNB4_STR(BNB4_VERSION_MAJOR) "." BNB4_STR(BNB4_VERSION_MINOR) "." BNB4_STR(BNB4_VERSION_PATCH);
}
unsigned bnb4_version_number(void) { return BNB4_VERSION_NUMBER; }

/* ---- small helpers ------------------------------------------------------------------------------ */

size_t bnb4_dtype_size(bnb4_dtype dtype) {
    switch (dtype) {
    case BNB4_F32:
        return 4;
    case BNB4_F16:
    case BNB4_BF16:
        return 2;
    }
    return 0;
}

const char *bnb4_dtype_name(bnb4_dtype dtype) {
    switch (dtype) {
    case BNB4_F32:
        return "float32";
    case BNB4_F16:
        return "float16";
    case BNB4_BF16:
        return "bfloat16";
    }
    return "?";
}

const char *bnb4_quant_type_name(bnb4_quant_type qt) {
    return qt == BNB4_NF4 ? "nf4" : qt == BNB4_FP4 ? "fp4" : "?";
}

int bnb4_blocksize_supported(size_t blocksize) {
    return blocksize >= BNB4_MIN_BLOCKSIZE && blocksize <= BNB4_MAX_BLOCKSIZE && (blocksize & (blocksize - 1)) == 0;
}

bnb4_status bnb4_packed_bytes(size_t n, size_t *out) {
    if (!out)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "bnb4_packed_bytes: out is NULL");
    *out = n / 2 + n % 2; /* never overflows */
    return BNB4_OK;
}

bnb4_status bnb4_absmax_count(size_t n, size_t blocksize, size_t *out) {
    if (!out)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "bnb4_absmax_count: out is NULL");
    if (blocksize == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "bnb4_absmax_count: blocksize is 0");
    *out = n / blocksize + (n % blocksize != 0);
    return BNB4_OK;
}

const float *bnb4_codebook(bnb4_quant_type qt) {
    return qt == BNB4_NF4 ? nf4_codebook : qt == BNB4_FP4 ? fp4_codebook : NULL;
}
const float *bnb4_quant_map(bnb4_quant_type qt) {
    return qt == BNB4_NF4 ? nf4_codebook : qt == BNB4_FP4 ? fp4_quant_map : NULL;
}
const float *bnb4_nested_code(void) { return nested_code; }

const char *bnb4_cpu_features(void) { return bnb4_cpu_feature_string(); }
int bnb4_cuda_device_count(void) { return bnb4_cuda_devices(); }

/* ---- contexts ----------------------------------------------------------------------------------- */

void bnb4_ctx_params_default(bnb4_ctx_params *params) {
    if (!params)
        return;
    params->device = BNB4_DEVICE_CPU;
    params->device_index = 0;
    params->stream = NULL;
    params->num_threads = 0;
}

bnb4_status bnb4_ctx_create(const bnb4_ctx_params *params, bnb4_ctx **out) {
    if (!params || !out)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "bnb4_ctx_create: %s is NULL", !params ? "params" : "out");
    if (params->device != BNB4_DEVICE_CPU && params->device != BNB4_DEVICE_CUDA)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "bnb4_ctx_create: unknown device %d", (int)params->device);
    if (params->num_threads < 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "bnb4_ctx_create: num_threads %d < 0", params->num_threads);
    if (params->device_index < 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "bnb4_ctx_create: device_index %d < 0", params->device_index);
    bnb4_ctx *ctx = (bnb4_ctx *)calloc(1, sizeof *ctx);
    if (!ctx)
        return bnb4_fail(BNB4_ERR_OUT_OF_MEMORY, "bnb4_ctx_create: out of memory");
    ctx->params = *params;
    const bnb4_status st = params->device == BNB4_DEVICE_CUDA ? bnb4_cuda_ctx_init(ctx) : bnb4_cpu_ctx_init(ctx);
    if (st != BNB4_OK) {
        free(ctx);
        return st;
    }
    *out = ctx;
    return BNB4_OK;
}

void bnb4_ctx_destroy(bnb4_ctx *ctx) {
    if (!ctx || ctx == &default_ctx)
        return;
    if (ctx->params.device == BNB4_DEVICE_CUDA)
        bnb4_cuda_ctx_free(ctx);
    else
        bnb4_cpu_ctx_free(ctx);
    free(ctx);
}

static bnb4_ctx *resolve(bnb4_ctx *ctx) { return ctx ? ctx : &default_ctx; }
static int on_cuda(const bnb4_ctx *ctx) { return ctx->params.device == BNB4_DEVICE_CUDA; }

/* ---- validation --------------------------------------------------------------------------------- */

static int mul_overflows(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a)
        return 1;
    *out = a * b;
    return 0;
}

static bnb4_status check_dtype(const char *fn, const char *what, bnb4_dtype dt) {
    if (bnb4_dtype_size(dt) == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: unknown %s dtype %d (0 = f32, 1 = f16, 2 = bf16)", fn,
                         what, (int)dt);
    return BNB4_OK;
}

static bnb4_status check_quant_type(const char *fn, bnb4_quant_type qt) {
    if (qt != BNB4_FP4 && qt != BNB4_NF4)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: unknown quant_type %d (1 = fp4, 2 = nf4)", fn, (int)qt);
    return BNB4_OK;
}

static bnb4_status check_blocksize(const char *fn, size_t blocksize) {
    if (blocksize == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: blocksize is 0", fn);
    if (!bnb4_blocksize_supported(blocksize))
        return bnb4_fail(BNB4_ERR_UNSUPPORTED,
                         "%s: blocksize %zu is not supported (32, 64, 128, 256, 512, 1024, 2048 or 4096)", fn,
                         blocksize);
    return BNB4_OK;
}

/* n elements of dt must be addressable in bytes. */
static bnb4_status check_elements(const char *fn, size_t n, bnb4_dtype dt) {
    size_t bytes;
    if (mul_overflows(n, bnb4_dtype_size(dt), &bytes))
        return bnb4_fail(BNB4_ERR_OVERFLOW, "%s: %zu elements of %s overflow size_t bytes", fn, n, bnb4_dtype_name(dt));
    return BNB4_OK;
}

static bnb4_status check_qtensor(const char *fn, const bnb4_qtensor *q) {
    size_t n;
    if (!q)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: the quantized tensor is NULL", fn);
    bnb4_status st = check_quant_type(fn, q->quant_type);
    if (st != BNB4_OK)
        return st;
    if (q->rows == 0 || q->cols == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: empty tensor (%zu x %zu)", fn, q->rows, q->cols);
    if (mul_overflows(q->rows, q->cols, &n) || n > SIZE_MAX / 4)
        return bnb4_fail(BNB4_ERR_OVERFLOW, "%s: %zu x %zu elements overflow size_t", fn, q->rows, q->cols);
    if ((st = check_blocksize(fn, q->blocksize)) != BNB4_OK)
        return st;
    if (!q->packed)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: packed is NULL", fn);
    const bnb4_nested_absmax *nq = &q->nested;
    const int any_nested = nq->codes || nq->absmax || nq->code || nq->blocksize || nq->offset != 0.0f;
    if (q->absmax) {
        if (any_nested)
            return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT,
                             "%s: both absmax and nested fields are set (exactly one of them must be)", fn);
        return BNB4_OK;
    }
    if (!nq->codes)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: neither absmax nor nested.codes is set", fn);
    if (!nq->absmax || !nq->code)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: nested fields half set (nested.%s is NULL)", fn,
                         !nq->absmax ? "absmax" : "code");
    if (nq->blocksize == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: nested.blocksize is 0", fn);
    return BNB4_OK;
}

bnb4_status bnb4_qtensor_validate(const bnb4_qtensor *q) { return check_qtensor("bnb4_qtensor_validate", q); }

/* ---- operations --------------------------------------------------------------------------------- */

bnb4_status bnb4_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype src_dtype, size_t n, size_t blocksize,
                          bnb4_quant_type quant_type, uint8_t *packed, float *absmax) {
    static const char fn[] = "bnb4_quantize";
    bnb4_status st;
    if ((st = check_dtype(fn, "source", src_dtype)) != BNB4_OK || (st = check_quant_type(fn, quant_type)) != BNB4_OK)
        return st;
    if (n == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: n is 0", fn);
    if ((st = check_elements(fn, n, src_dtype)) != BNB4_OK || (st = check_blocksize(fn, blocksize)) != BNB4_OK)
        return st;
    if (!src || !packed || !absmax)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !src ? "src" : !packed ? "packed" : "absmax");
    ctx = resolve(ctx);
    return on_cuda(ctx) ? bnb4_cuda_quantize(ctx, src, src_dtype, n, blocksize, quant_type, packed, absmax)
                        : bnb4_cpu_quantize(ctx, src, src_dtype, n, blocksize, quant_type, packed, absmax);
}

bnb4_status bnb4_nested_offset(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float *offset) {
    static const char fn[] = "bnb4_nested_offset";
    bnb4_status st;
    if (nblocks == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: nblocks is 0", fn);
    if ((st = check_elements(fn, nblocks, BNB4_F32)) != BNB4_OK)
        return st;
    if (!absmax || !offset)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !absmax ? "absmax" : "offset");
    ctx = resolve(ctx);
    return on_cuda(ctx) ? bnb4_cuda_nested_offset(ctx, absmax, nblocks, offset)
                        : bnb4_cpu_nested_offset(ctx, absmax, nblocks, offset);
}

bnb4_status bnb4_quantize_nested(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float offset,
                                 size_t nested_blocksize, uint8_t *absmax_q, float *nested_absmax) {
    static const char fn[] = "bnb4_quantize_nested";
    bnb4_status st;
    if (nblocks == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: nblocks is 0", fn);
    if ((st = check_elements(fn, nblocks, BNB4_F32)) != BNB4_OK)
        return st;
    if (nested_blocksize == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: nested_blocksize is 0", fn);
    if (!absmax || !absmax_q || !nested_absmax)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn,
                         !absmax ? "absmax" : !absmax_q ? "absmax_q" : "nested_absmax");
    ctx = resolve(ctx);
    return on_cuda(ctx) ? bnb4_cuda_quantize_nested(ctx, absmax, nblocks, offset, nested_blocksize, absmax_q, nested_absmax)
                        : bnb4_cpu_quantize_nested(ctx, absmax, nblocks, offset, nested_blocksize, absmax_q, nested_absmax);
}

bnb4_status bnb4_dequantize_nested(bnb4_ctx *ctx, const bnb4_qtensor *q, float *absmax) {
    static const char fn[] = "bnb4_dequantize_nested";
    const bnb4_status st = check_qtensor(fn, q);
    if (st != BNB4_OK)
        return st;
    if (q->absmax)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: the tensor is not nested (absmax is set)", fn);
    if (!absmax)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: absmax is NULL", fn);
    ctx = resolve(ctx);
    return on_cuda(ctx) ? bnb4_cuda_dequantize_nested(ctx, q, absmax) : bnb4_cpu_dequantize_nested(ctx, q, absmax);
}

bnb4_status bnb4_dequantize(bnb4_ctx *ctx, const bnb4_qtensor *q, bnb4_dtype dst_dtype, void *dst) {
    static const char fn[] = "bnb4_dequantize";
    bnb4_status st;
    if ((st = check_dtype(fn, "destination", dst_dtype)) != BNB4_OK || (st = check_qtensor(fn, q)) != BNB4_OK)
        return st;
    if (!dst)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: dst is NULL", fn);
    ctx = resolve(ctx);
    return on_cuda(ctx) ? bnb4_cuda_dequantize(ctx, q, dst_dtype, dst) : bnb4_cpu_dequantize(ctx, q, dst_dtype, dst);
}

static bnb4_status check_matmul(const char *fn, const bnb4_qtensor *w, bnb4_dtype dtype, size_t m, const void *x,
                                const void *y) {
    bnb4_status st;
    size_t mk, mn;
    if ((st = check_dtype(fn, "activation", dtype)) != BNB4_OK || (st = check_qtensor(fn, w)) != BNB4_OK)
        return st;
    if (m == 0)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: m is 0", fn);
    if (mul_overflows(m, w->cols, &mk) || mul_overflows(m, w->rows, &mn) ||
        check_elements(fn, mk, dtype) != BNB4_OK || check_elements(fn, mn, dtype) != BNB4_OK)
        return bnb4_fail(BNB4_ERR_OVERFLOW, "%s: m = %zu rows of %zu x %zu overflow size_t", fn, m, w->rows, w->cols);
    if (!x || !y)
        return bnb4_fail(BNB4_ERR_INVALID_ARGUMENT, "%s: %s is NULL", fn, !x ? "x" : "y");
    return BNB4_OK;
}

/* gemv, gemm and linear: the same validation, then the backend's gemm, which picks its kernel by m
 * (gemv-style for small m, tiled for large). linear exists for the seed's API and may diverge. */
static bnb4_status matmul(const char *fn, bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dtype, size_t m,
                          const void *x, const void *bias, void *y) {
    const bnb4_status st = check_matmul(fn, w, dtype, m, x, y);
    if (st != BNB4_OK)
        return st;
    ctx = resolve(ctx);
    return on_cuda(ctx) ? bnb4_cuda_gemm(ctx, w, dtype, m, x, bias, y) : bnb4_cpu_gemm(ctx, w, dtype, m, x, bias, y);
}

bnb4_status bnb4_gemv(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dtype, const void *x, const void *bias,
                      void *y) {
    return matmul("bnb4_gemv", ctx, w, dtype, 1, x, bias, y);
}

bnb4_status bnb4_gemm(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dtype, size_t m, const void *x,
                      const void *bias, void *y) {
    return matmul("bnb4_gemm", ctx, w, dtype, m, x, bias, y);
}

bnb4_status bnb4_linear(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dtype, size_t m, const void *x,
                        const void *bias, void *y) {
    return matmul("bnb4_linear", ctx, w, dtype, m, x, bias, y);
}

const char *bnb4_kernel_name(bnb4_ctx *ctx, bnb4_op op, bnb4_dtype dtype, size_t m) {
    ctx = resolve(ctx);
    if (bnb4_dtype_size(dtype) == 0 || (unsigned)op > BNB4_OP_GEMM)
        return "invalid";
    return on_cuda(ctx) ? bnb4_cuda_kernel_name(ctx, op, dtype, m) : bnb4_cpu_kernel_name(ctx, op, dtype, m);
}
