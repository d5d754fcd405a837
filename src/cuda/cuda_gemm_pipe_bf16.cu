/*
 * cuda_gemm_pipe_bf16.cu - the pipe kernel for bfloat16 activations (cuda_gemm_pipe.cuh), a translation unit of its
 * own so that it compiles beside the float16 one (cuda_gemm_pipe.cu).
 */
#include "cuda_gemm_pipe.cuh"

bnb4_status bnb4_cuda_gemm_pipe_bf16(bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m, const void *x, const void *bias,
                                     void *y) {
    return gemm_pipe<__nv_bfloat16>(s, w, m, x, bias, y);
}
