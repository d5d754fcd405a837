/*
 * cuda_gemm_pipe.cu - the pipe kernel's entry points (cuda_common.cuh) and its float16 kernels; the kernels, their
 * launch and the choice among them are in cuda_gemm_pipe.cuh, the bfloat16 ones built by cuda_gemm_pipe_bf16.cu.
 */
#include "cuda_gemm_pipe.cuh"

/* Read once (a benign race: every thread computes the same value). */
static long g_pipe_max_m = -1;
size_t bnb4_cuda_pipe_max_m(void) {
    if (g_pipe_max_m < 0) {
        const size_t v = bnb4_env_size("BNB4_CUDA_PIPE_MAX_M", BNB4_CUDA_PIPE_MAX_M);
        g_pipe_max_m = v <= BNB4_CUDA_PIPE_LIMIT_M ? (long)v : BNB4_CUDA_PIPE_MAX_M;
    }
    return (size_t)g_pipe_max_m;
}

int bnb4_cuda_pipe_takes(const bnb4_cuda_state *s, size_t m) {
    const size_t rows = bnb4_cuda_pipe_rows(s);
    return m >= 1 && m <= bnb4_cuda_pipe_max_m() && rows > 0 && m <= kPipeMaxChunks * rows;
}

int bnb4_cuda_pipe_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x) {
    if (dt == BNB4_F32 || !bnb4_cuda_pipe_takes(s, m))
        return 0;
    if (w->cols % 32 != 0 || w->blocksize < 32 || !bnb4_aligned(w->packed, 16) || !bnb4_aligned(x, 16))
        return 0;
    if (!w->absmax && !bnb4_aligned(w->nested.codes, 4))
        return 0;
    /* k, and k plus a copy's offset in its step, are 32-bit in the kernel, and so is the iteration count */
    if (w->cols >= ((size_t)1 << 31))
        return 0;
    const size_t tiles = bnb4_div_up(w->rows, kTileRows), k_steps = bnb4_div_up(w->cols, kStepK);
    return tiles <= UINT32_MAX / k_steps;
}

int bnb4_cuda_pipe_tma_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m) { return pipe_use_tma(s, w, m); }

int bnb4_cuda_pipe_chunks(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x) {
    const size_t rows = bnb4_cuda_pipe_max_m(); /* (a launch's) */
    if (rows == 0 || m <= rows || m > BNB4_CUDA_PIPE_CHUNKS_MAX_M || !bnb4_cuda_pipe_fits(s, w, dt, rows, x) ||
        !pipe_use_tma(s, w, rows))
        return 0;
    const char *e = getenv("BNB4_CUDA_PIPE_CHUNKS");
    if (e && (*e == '0' || *e == '1'))
        return *e == '1' ? 2 : 0;
    return bnb4_grid_pipe_chunks(w->rows, w->cols, m, rows);
}
int bnb4_cuda_pipe_wgmma(const bnb4_cuda_state *s, size_t m) { return pipe_tma_smem_fits(s) && pipe_use_wgmma(s, m, nullptr); }
/* The cp.async variant's rows at once (bnb4_cuda_gemm_pipe runs more in chunks of that many): where the TMA variant
 * fits, 64 as its own, since its shapes' shared memory bounds the cp.async ones' (static_assert by
 * pipe_tma_smem_fits) */
size_t bnb4_cuda_pipe_rows(const bnb4_cuda_state *s) {
    return pipe_cp_sizing<8>(s) >= 0 ? 64 : pipe_cp_sizing<4>(s) >= 0 ? 32 : pipe_cp_sizing<2>(s) >= 0 ? 16
           : pipe_cp_sizing<1>(s) >= 0 ? 8 : 0;
}

bnb4_status bnb4_cuda_gemm_pipe(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                                const void *bias, void *y) {
    return dt == BNB4_F16 ? gemm_pipe<__half>(s, w, m, x, bias, y) : bnb4_cuda_gemm_pipe_bf16(s, w, m, x, bias, y);
}
