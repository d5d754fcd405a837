/*
 * bnb4_backend.h - the seam between the public API (src/core) and the backends (src/cpu, src/cuda).
 *
 * src/core validates every argument and then calls exactly one backend function; backends may
 * assume valid arguments (sizes fit in size_t, enums known, pointers non-NULL where required,
 * q/w consistent). A backend reports failures through bnb4_fail() so the caller gets a message.
 * Each backend keeps its own per-context state behind an opaque pointer in bnb4_ctx.
 */
#ifndef BNB4_BACKEND_H
#define BNB4_BACKEND_H

#include "bnb4.h"

#ifdef __cplusplus
extern "C" {
#endif

struct bnb4_cpu_state;
struct bnb4_cuda_state;

struct bnb4_ctx {
    bnb4_ctx_params params;
    struct bnb4_cpu_state *cpu;   /* owned by src/cpu; NULL means "defaults" (the NULL context) */
    struct bnb4_cuda_state *cuda; /* owned by src/cuda; set for CUDA contexts */
};

/* Record a detailed message for bnb4_last_error() and return status (printf-style). */
bnb4_status bnb4_fail(bnb4_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* The op entry points every backend implements. gemm covers gemv (m == 1) and linear. */
#define BNB4_BACKEND_DECLARE(prefix)                                                                   \
    bnb4_status prefix##_ctx_init(bnb4_ctx *ctx);                                                     \
    void prefix##_ctx_free(bnb4_ctx *ctx);                                                            \
    bnb4_status prefix##_quantize(bnb4_ctx *ctx, const void *src, bnb4_dtype dt, size_t n,            \
                                  size_t blocksize, bnb4_quant_type qt, uint8_t *packed, float *absmax); \
    bnb4_status prefix##_nested_offset(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float *offset); \
    bnb4_status prefix##_quantize_nested(bnb4_ctx *ctx, const float *absmax, size_t nblocks, float offset, \
                                         size_t nested_blocksize, uint8_t *codes, float *nested_absmax);  \
    bnb4_status prefix##_dequantize_nested(bnb4_ctx *ctx, const bnb4_qtensor *q, float *absmax);      \
    bnb4_status prefix##_dequantize(bnb4_ctx *ctx, const bnb4_qtensor *q, bnb4_dtype dt, void *dst);  \
    bnb4_status prefix##_gemm(bnb4_ctx *ctx, const bnb4_qtensor *w, bnb4_dtype dt, size_t m,          \
                              const void *x, const void *bias, void *y);                              \
    const char *prefix##_kernel_name(bnb4_ctx *ctx, bnb4_op op, bnb4_dtype dt, size_t m);

BNB4_BACKEND_DECLARE(bnb4_cpu)
BNB4_BACKEND_DECLARE(bnb4_cuda)

/* Space-separated CPU feature list (src/cpu). */
const char *bnb4_cpu_feature_string(void);
/* Usable CUDA devices (src/cuda); 0 without CUDA. */
int bnb4_cuda_devices(void);

#ifdef __cplusplus
}
#endif
#endif /* BNB4_BACKEND_H */
