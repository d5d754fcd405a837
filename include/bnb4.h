/*
 * bnb4.h - 4-bit NF4/FP4 blockwise weight quantization in the bitsandbytes format.
 *
 * The only public header of libbnb4. Five operations on bitsandbytes' 4-bit format, bit-exact with
 * bitsandbytes' CUDA kernels where bytes are defined (quantize, dequantize, nested absmax):
 *
 *   bnb4_quantize     float32/float16/bfloat16 -> packed nibbles + one float32 absmax per block
 *   bnb4_dequantize   packed nibbles -> float32/float16/bfloat16 (codebook value * absmax)
 *   bnb4_gemv         y = W x + bias                  (fused dequantize, batch 1)
 *   bnb4_gemm         Y = X W^T + bias                (fused dequantize, batch m)
 *   bnb4_linear       bnb4_gemm, choosing the fastest kernel for m
 *
 * plus double ("nested") quantization of absmax as bitsandbytes stores it. A five-minute example:
 *
 *   float w[N*K] = ...;                          // a linear layer's weight, row-major [N, K]
 *   uint8_t packed[(N*K + 1) / 2];
 *   float absmax[(N*K + 63) / 64];
 *   bnb4_quantize(NULL, w, BNB4_F32, N*K, 64, BNB4_NF4, packed, absmax);
 *   bnb4_qtensor q = bnb4_qtensor_plain(N, K, 64, BNB4_NF4, packed, absmax);
 *   bnb4_gemv(NULL, &q, BNB4_F32, x, NULL, y);   // y[N] = W x
 *
 * Every entry point validates all arguments before writing anything, returns a bnb4_status, and on
 * failure leaves a human-readable reason in bnb4_last_error() (per thread).
 *
 * The declarations marked "contract" follow ../shared/spec/api.md exactly; other programs are
 * written against them. Everything else is an addition.
 */
#ifndef BNB4_H
#define BNB4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(BNB4_SHARED_BUILD)
#define BNB4_API __declspec(dllexport)
#elif defined(_WIN32) && defined(BNB4_SHARED)
#define BNB4_API __declspec(dllimport)
#elif defined(__GNUC__)
#define BNB4_API __attribute__((visibility("default")))
#else
#define BNB4_API
#endif

/* ---- version (contract) ---------------------------------------------------------------------- */
#define BNB4_VERSION_MAJOR 0
#define BNB4_VERSION_MINOR 1
#define BNB4_VERSION_PATCH 0
#define BNB4_VERSION_NUMBER (BNB4_VERSION_MAJOR * 10000 + BNB4_VERSION_MINOR * 100 + BNB4_VERSION_PATCH)
/* Bumped only if the bytes bnb4 reads or writes ever change meaning (they follow bitsandbytes). */
#define BNB4_FORMAT_VERSION 1

BNB4_API const char *bnb4_version_string(void);  /* "0.1.0" */
BNB4_API unsigned bnb4_version_number(void);     /* BNB4_VERSION_NUMBER of the linked library */

/* ---- enums (contract) -------------------------------------------------------------------------- */
typedef enum bnb4_quant_type { BNB4_FP4 = 1, BNB4_NF4 = 2 } bnb4_quant_type; /* bitsandbytes' numbering */
typedef enum bnb4_dtype { BNB4_F32 = 0, BNB4_F16 = 1, BNB4_BF16 = 2 } bnb4_dtype;
typedef enum bnb4_device { BNB4_DEVICE_CPU = 0, BNB4_DEVICE_CUDA = 1 } bnb4_device;

typedef enum bnb4_status {
    BNB4_OK = 0,
    BNB4_ERR_INVALID_ARGUMENT, /* NULL pointer, zero size, unknown enum value, inconsistent shape   */
    BNB4_ERR_UNSUPPORTED,      /* well-formed but not supported: blocksize, dtype, device not built  */
    BNB4_ERR_OVERFLOW,         /* size arithmetic would overflow size_t                              */
    BNB4_ERR_OUT_OF_MEMORY,
    BNB4_ERR_DEVICE            /* a CUDA runtime / driver error                                      */
} bnb4_status;

/* A static English description of a status; never NULL, also for unknown values. (contract) */
BNB4_API const char *bnb4_status_string(bnb4_status status);

/* The detailed reason for the last non-OK status returned to the calling thread, e.g.
 * "bnb4_quantize: blocksize 48 is not supported (32, 64, ..., 4096)". Never NULL; "" after success
 * is not guaranteed (it is only updated on failure). Thread-local. */
BNB4_API const char *bnb4_last_error(void);

/* ---- execution context (contract) ---------------------------------------------------------------
 * Passing NULL wherever a context is taken means "the default CPU context" (all cores). A CUDA
 * context makes every pointer argument of an op a device pointer, and the op is enqueued on
 * params.stream (NULL = the default stream) of params.device_index. */
typedef struct bnb4_ctx bnb4_ctx;
typedef struct bnb4_ctx_params {
    bnb4_device device;
    int device_index;
    void *stream;    /* cudaStream_t for CUDA contexts */
    int num_threads; /* CPU: 0 = all cores */
} bnb4_ctx_params;
BNB4_API void bnb4_ctx_params_default(bnb4_ctx_params *params);
BNB4_API bnb4_status bnb4_ctx_create(const bnb4_ctx_params *params, bnb4_ctx **out);
BNB4_API void bnb4_ctx_destroy(bnb4_ctx *ctx); /* NULL is a no-op */

/* ---- quantized tensor view (contract) -----------------------------------------------------------
 * A read-only view of memory the caller owns. n = rows * cols elements, quantized flat in row-major
 * order in blocks of `blocksize` consecutive elements (blocks do not restart at row boundaries).
 * For a linear layer's weight, rows = out_features (N), cols = in_features (K). Exactly one of
 * `absmax` (plain) or `nested.codes` (double-quantized) is set. */
typedef struct bnb4_nested_absmax {
    const uint8_t *codes;  /* ceil(n/blocksize) 8-bit codes                                */
    const float *absmax;   /* ceil(nblocks/nested.blocksize) float32                        */
    const float *code;     /* 256 float32: bitsandbytes' signed dynamic map                 */
    float offset;          /* added back after decoding                                    */
    size_t blocksize;      /* 256 in every bitsandbytes checkpoint                          */
} bnb4_nested_absmax;

typedef struct bnb4_qtensor {
    size_t rows, cols;
    size_t blocksize;
    bnb4_quant_type quant_type;
    const uint8_t *packed;     /* ceil(n/2) bytes; element 2i in the HIGH nibble of byte i     */
    const float *absmax;       /* ceil(n/blocksize) float32 scales, or NULL when nested         */
    bnb4_nested_absmax nested; /* all zero when plain                                          */
} bnb4_qtensor;

/* ---- operations (contract) ----------------------------------------------------------------------
 * Rules for every op: validation happens before any write (on error no output byte is touched);
 * blocksize is one of 32, 64, 128, 256, 512, 1024, 2048, 4096; any n >= 1 and rows/cols >= 1;
 * inputs and outputs never alias; several threads may call ops at once (a context is not used by
 * two threads at once). With a CUDA context every pointer is a device pointer (except `offset` of
 * bnb4_nested_offset) and the op is asynchronous on the context's stream. */

/* Quantize n elements of src (dtype src_dtype). Writes ceil(n/2) bytes to packed and
 * ceil(n/blocksize) floats to absmax, byte-identical to bitsandbytes' CUDA quantize_4bit. */
BNB4_API bnb4_status bnb4_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype src_dtype, size_t n,
                                   size_t blocksize, bnb4_quant_type quant_type, uint8_t *packed,
                                   float *absmax);

/* Double quantization of a float32 absmax vector, as bitsandbytes' compress_statistics=True does.
 * bnb4_nested_offset: the offset bitsandbytes subtracts first, the float32 mean of absmax: bit for bit
 * what torch.mean() gives for it on a CUDA GPU, whose summation order bnb4 restates. Past a size set by the
 * GPU's SMs (4.3 M blocks on the H100, 3.5 M on an A100, fewer on smaller GPUs) that order depends on the
 * GPU: a CUDA context follows its own, a CPU context the 132-SM H100 / H200.
 * bnb4_quantize_nested: 8-bit blockwise quantization of (absmax[i] - offset) with the signed dynamic
 * map in blocks of nested_blocksize (any value >= 1); writes nblocks codes and
 * ceil(nblocks/nested_blocksize) nested_absmax, byte-identical to bitsandbytes' CUDA
 * quantize_blockwise given the same offset. */
BNB4_API bnb4_status bnb4_nested_offset(bnb4_ctx *ctx, const float *absmax, size_t nblocks,
                                        float *offset /* always a host pointer */);
BNB4_API bnb4_status bnb4_quantize_nested(bnb4_ctx *ctx, const float *absmax, size_t nblocks,
                                          float offset, size_t nested_blocksize, uint8_t *absmax_q,
                                          float *nested_absmax);
/* Decode a nested tensor's absmax into ceil(n/blocksize) float32 (q must be nested), rounding as
 * bitsandbytes' dequantize_4bit does: f32(f32(code[q] * nested_absmax) + offset). */
BNB4_API bnb4_status bnb4_dequantize_nested(bnb4_ctx *ctx, const bnb4_qtensor *q, float *absmax);
/* Host pointer to the 256-entry signed dynamic map (bitsandbytes' create_dynamic_map(signed=True)). */
BNB4_API const float *bnb4_nested_code(void);

/* Decode all n = rows*cols elements of q into dst (dtype dst_dtype). */
BNB4_API bnb4_status bnb4_dequantize(bnb4_ctx *ctx, const bnb4_qtensor *q, bnb4_dtype dst_dtype,
                                     void *dst);

/* y[N] = W x + bias, W = w (rows = N, cols = K), x[K]; x, bias and y have dtype `dtype`;
 * bias may be NULL. Accumulation in float32 or better; the result is rounded once to dtype. */
BNB4_API bnb4_status bnb4_gemv(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dtype, const void *x,
                               const void *bias, void *y);
/* Y[m, N] = X[m, K] W^T + bias, row-major, contiguous. */
BNB4_API bnb4_status bnb4_gemm(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dtype, size_t m,
                               const void *x, const void *bias, void *y);
/* Same contract as bnb4_gemm; chooses the fastest kernel for m (gemv for m == 1). */
BNB4_API bnb4_status bnb4_linear(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dtype, size_t m,
                                 const void *x, const void *bias, void *y);

/* ---- additions: sizes, views, codebooks ----------------------------------------------------------
 * Size helpers (zstd's "bound" idea): each returns BNB4_ERR_OVERFLOW instead of wrapping. */
BNB4_API bnb4_status bnb4_packed_bytes(size_t n, size_t *out);                      /* ceil(n/2)  */
BNB4_API bnb4_status bnb4_absmax_count(size_t n, size_t blocksize, size_t *out);    /* ceil(n/bs) */
BNB4_API size_t bnb4_dtype_size(bnb4_dtype dtype);                   /* 4, 2, 2; 0 when unknown */
BNB4_API const char *bnb4_dtype_name(bnb4_dtype dtype);   /* "float32", "float16", "bfloat16"  */
BNB4_API const char *bnb4_quant_type_name(bnb4_quant_type qt); /* "fp4", "nf4"; "?" if unknown  */
/* 1 if bitsandbytes accepts this 4-bit blocksize (32 .. 4096, powers of two), else 0. */
BNB4_API int bnb4_blocksize_supported(size_t blocksize);

/* The 16-entry float32 codebook the kernels decode with (index = 4-bit code). FP4 code 8 is -0.0,
 * as bitsandbytes' CUDA kernels decode it; bitsandbytes' stored `quant_map` holds +0.0 there
 * (bnb4_quant_map gives that table, for writing checkpoints). */
BNB4_API const float *bnb4_codebook(bnb4_quant_type qt);
BNB4_API const float *bnb4_quant_map(bnb4_quant_type qt);

/* Check a view for consistency (pointers, sizes, enums, nested fields all-or-nothing) without
 * touching the data. Returns the status any op would return for it. */
BNB4_API bnb4_status bnb4_qtensor_validate(const bnb4_qtensor *q);

/* Convenience constructors for views. */
static inline bnb4_qtensor bnb4_qtensor_plain(size_t rows, size_t cols, size_t blocksize,
                                              bnb4_quant_type quant_type, const uint8_t *packed,
                                              const float *absmax) {
    bnb4_qtensor q;
    q.rows = rows; q.cols = cols; q.blocksize = blocksize; q.quant_type = quant_type;
    q.packed = packed; q.absmax = absmax;
    q.nested.codes = NULL; q.nested.absmax = NULL; q.nested.code = NULL;
    q.nested.offset = 0.0f; q.nested.blocksize = 0;
    return q;
}
static inline bnb4_qtensor bnb4_qtensor_nested(size_t rows, size_t cols, size_t blocksize,
                                               bnb4_quant_type quant_type, const uint8_t *packed,
                                               const uint8_t *absmax_codes, const float *nested_absmax,
                                               const float *nested_code, float offset,
                                               size_t nested_blocksize) {
    bnb4_qtensor q = bnb4_qtensor_plain(rows, cols, blocksize, quant_type, packed, NULL);
    q.nested.codes = absmax_codes; q.nested.absmax = nested_absmax; q.nested.code = nested_code;
    q.nested.offset = offset; q.nested.blocksize = nested_blocksize;
    return q;
}

/* ---- additions: introspection ---------------------------------------------------------------------
 * Which kernel an op runs on this context for the given dtype (and m for gemm), e.g.
 * "gemv_nf4_f32__avx512" or "ref". ctx may be NULL (default CPU context). Never NULL. */
typedef enum bnb4_op {
    BNB4_OP_QUANTIZE = 0,
    BNB4_OP_QUANTIZE_NESTED,
    BNB4_OP_DEQUANTIZE,
    BNB4_OP_GEMV,
    BNB4_OP_GEMM
} bnb4_op;
BNB4_API const char *bnb4_kernel_name(bnb4_ctx *ctx, bnb4_op op, bnb4_dtype dtype, size_t m);
/* CPU features detected at run time, as a space-separated list ("avx2 fma f16c avx512f ..."). */
BNB4_API const char *bnb4_cpu_features(void);
/* Number of usable CUDA devices; 0 when built without CUDA or none is present. */
BNB4_API int bnb4_cuda_device_count(void);

#ifdef __cplusplus
}
#endif
#endif /* BNB4_H */
