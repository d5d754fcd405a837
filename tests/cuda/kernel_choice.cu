// kernel_choice.cu - the library's matmul choice on a described device (kernel_choice.h): a context's state filled in
// by hand, no GPU needed. Only the layout's pointers' alignment is read, so they point nowhere.
#include "kernel_choice.h"

#include "cuda_common.cuh"

namespace {
bnb4_cuda_state state_of(const TestDevice &d) {
    bnb4_cuda_state s = {};
    s.cc_major = d.cc_major;
    s.cc_minor = d.cc_minor;
    s.code_arch = d.code_arch;
    s.sm_count = d.sm_count;
    s.sm_threads = 2048;
    s.smem_optin = d.smem_optin;
    s.l2_bytes = 40u << 20;
    return s;
}

const char *path_name(bnb4_cuda_gemm_path path) {
    switch (path) {
    case BNB4_CUDA_GEMM_GEMV:
        return "gemv";
    case BNB4_CUDA_GEMM_PIPE:
        return "pipe";
    case BNB4_CUDA_GEMM_TILE:
        return "tile";
    case BNB4_CUDA_GEMM_SIMT:
        return "simt";
    case BNB4_CUDA_GEMM_F32_TILE:
        return "f32_tile";
    default:
        return "dequant+cublas";
    }
}
} // namespace

const char *test_gemm_path(const TestDevice &d, size_t rows, size_t cols, bool nested, bnb4_dtype dt, size_t m) {
    const bnb4_cuda_state s = state_of(d);
    uint8_t *const aligned = reinterpret_cast<uint8_t *>(uintptr_t{1} << 20);
    const bnb4_qtensor w =
        nested ? bnb4_qtensor_nested(rows, cols, 64, BNB4_NF4, aligned, aligned, reinterpret_cast<float *>(aligned),
                                     reinterpret_cast<float *>(aligned), 0.0f, 256)
               : bnb4_qtensor_plain(rows, cols, 64, BNB4_NF4, aligned, reinterpret_cast<float *>(aligned));
    return path_name(bnb4_cuda_pick_gemm(&s, &w, dt, m, aligned));
}

const char *test_ctx_gemm_path(const bnb4_ctx *ctx, const bnb4_qtensor &w, bnb4_dtype dt, size_t m, const void *x) {
    return ctx && ctx->cuda ? path_name(bnb4_cuda_pick_gemm(ctx->cuda, &w, dt, m, x)) : "none";
}

size_t test_pipe_rows(const TestDevice &d) {
    const bnb4_cuda_state s = state_of(d);
    return bnb4_cuda_pipe_rows(&s);
}

bool test_gemv_stages_x(const TestDevice &d, bnb4_dtype dt, bool nested, size_t K) {
    const bnb4_cuda_state s = state_of(d);
    return bnb4_cuda_gemv_stages_x(&s, dt, nested, K) != 0;
}

bool test_simt_stages_x(const TestDevice &d, bnb4_dtype dt, size_t m) {
    const bnb4_cuda_state s = state_of(d);
    return bnb4_cuda_simt_stages_x(&s, dt, m) != 0;
}

size_t test_f32_tile_splits(const TestDevice &d, size_t N, size_t K, size_t m) {
    const bnb4_cuda_state s = state_of(d);
    return bnb4_cuda_f32_tile_splits(&s, N, K, m);
}
