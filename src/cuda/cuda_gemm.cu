/*
 * cuda_gemm.cu - Y[m, N] = X[m, K] W^T + bias with W in bitsandbytes' 4-bit format: the router and two
 * of the five paths. The router takes, in this order: cuda_gemv.cu's weight-streaming CUDA-core kernel
 * (m = 1, K % blocksize == 0, aligned), cuda_gemm_tile.cu's fused wgmma tile kernel (m >= 65 on large
 * weights, compute capability 9.0), cuda_gemm_pipe.cuh's pipelined tensor-core kernel (m <= 64, and to
 * m = 128 as matmuls of 64 rows: bnb4_cuda_pipe_chunks; f16/bf16, K % 32 == 0, aligned), the SIMT kernel
 * here, cuda_gemm_f32_tile.cu's CUDA-core tile kernel (f32 past the SIMT kernel's m to
 * BNB4_CUDA_F32_TILE_MAX_M, K % 32 == 0, aligned), then dequantize + cuBLAS:
 *
 *  gemm_4bit_<dt>__simt: any dtype, shape and alignment, m <= 16 (f32: to BNB4_CUDA_SIMT_F32_MAX_M = 40, in
 *    launches of 16 rows), float32 arithmetic: K % 32 == 0 with aligned data on a CTA of 16 weight rows whose 8
 *    warps split K (each activation load feeding 4 weight rows, the activations staged in shared memory), else one
 *    warp per weight row.
 *  dequantize + cuBLAS: large m where the tile kernels do not run (float32 past m = 64, other GPUs, weights under
 *    BNB4_CUDA_TILE_MIN_WEIGHTS whose tiles would not fill the grid - but from 2^24 elements and 2048 rows to
 *    m = 128 the pipe kernel's 64-row matmuls, bnb4_cuda_pipe_chunks - odd layouts): dequantize into a
 *    temporary in the activation dtype, then cublasGemmEx with float32 accumulation; with a bias,
 *    cublasLtMatmul and its bias epilogue (the bias added in float32 before the one rounding), where a
 *    broadcast of the bias into y and cuBLAS with beta = 1 cost 10-22 % of a call (docs/performance.md
 *    v36). cuBLAS and cuBLASLt are loaded with dlopen on first use, not linked: linking them costs every
 *    process ~200 MB of resident memory (CPU-only users of the library included). Without cuBLAS, large m
 *    falls back to the SIMT kernel; without cuBLASLt, a bias takes the broadcast.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

#include <cublasLt.h>
#include <cublas_v2.h>

#include "cuda_common.cuh"

namespace {

__constant__ float c_nf4_code[16] = {BNB4_NF4_CODEBOOK_VALUES};
__constant__ float c_fp4_code[16] = {BNB4_FP4_CODEBOOK_VALUES};

struct GemmArgs : bnb4_cuda_weight_args {
    size_t N, K, M;
    const void *x, *bias;
    void *y;
};

template <typename T> __device__ __forceinline__ float load_f32(const void *p, size_t i) {
    return bnb4_dt<T>::to_f32(reinterpret_cast<const T *>(p)[i]);
}

/* ---- SIMT: any shape, dtype and alignment ------------------------------------------------------------
 * Weights are dequantized exactly as bnb4_dequantize does (f32), multiplied with the f32 activations and
 * accumulated in f32 (fused multiply-adds). Two kernels:
 *
 * gemm_4bit_simt_rows_kernel (K % 32 == 0, packed weights and activations 16-byte aligned): a CTA takes
 * kRowsCta = 16 weight rows; its kSimtWarps warps split K in 64-k chunks (warp w takes chunks w, w + 8, ...).
 * Within a warp, lane (g, kl) = (lane / 8, lane % 8) takes rows 4 g .. 4 g + 3 at the chunk's k run 8 kl ..
 * 8 kl + 7: a 4-byte weight load per row (a group's 8 lanes read 32 contiguous bytes of their row) and 8
 * activations per activation row, which the four groups share (the same addresses). Each activation then feeds 4
 * weight rows: 32 fused multiply-adds per 8-activation load, where a warp per weight row gave 8 and was bound by L1
 * (f32, 14336x4096 m = 16: 300 -> 138 us, H200, docs/performance.md v50). The activations come from shared memory,
 * each warp copying its next chunk's while it works on one (XS below: 138 -> 76 us, v51). The lanes' sums meet in a
 * butterfly over the 8 k lanes (each step halves what a lane holds), then in shared memory over the warps. Plain or nested absmax is a template parameter: as a branch around the loads it took
 * nested twice plain's time (v50); the nested blocksize must be a power of two (bitsandbytes' is 256), else the
 * other kernel runs.
 *
 * gemm_4bit_simt_kernel (any other layout): one warp per weight row, single elements. */
constexpr int kSimtWarps = 8;
constexpr int kRowsLane = 4;               /* weight rows a lane takes */
constexpr int kRowsCta = 4 * kRowsLane;    /* a warp's 4 lane groups' rows, shared by the CTA's warps */
constexpr int kChunkK = 64;                /* a warp's k a turn: 8 lanes x 8 */

/* Sums v[0..C) over the 8 lanes of each lane group (lanes differing in bits 0-2) by halving: after the step
 * at distance o a lane keeps the half of the values its bit o selects, summed with its partner's copy of that
 * half. Leaves in v[0..C/8) the sums of indices kl * C / 8 .. (kl + 1) * C / 8 - 1 (k lane kl's bits, highest
 * first, picked the halves). */
template <int O, int C, int N> __device__ __forceinline__ void simt_halve(float (&v)[N], int kl) {
    const bool upper = (kl & O) != 0;
#pragma unroll
    for (int t = 0; t < C / 2; t++) {
        const float keep = upper ? v[t + C / 2] : v[t], give = upper ? v[t] : v[t + C / 2];
        v[t] = keep + __shfl_xor_sync(0xffffffffu, give, O);
    }
}
template <int C> __device__ __forceinline__ void simt_reduce_k_lanes(float (&v)[C], int kl) {
    static_assert(C % 8 == 0, "8 k lanes halve the values three times");
    simt_halve<4, C>(v, kl);
    simt_halve<2, C / 2>(v, kl);
    simt_halve<1, C / 4>(v, kl);
}

/* XS: a warp's activations for its next chunk are copied into shared memory (cp.async) while it works on the
 * current one, two stages a warp. Without them the activation loads waited on L2 just before their FMAs, turn after
 * turn. A stage holds MT rows of kChunkK activations in 16-byte units; in f32 rows (16 units) a lane reads units
 * 2 kl and 2 kl + 1, so units 8..15 trade places in pairs (simt_x_slot): a warp's 16-byte reads then cover all 8
 * bank groups once. (f16 / bf16 rows are 8 units, a lane's one unit kl: already conflict free.) */
/* The rows kernel's dynamic shared memory for activations of es bytes, MT rows: the tables, then the warps' stages (XS)
 * or their sums (which take the stages' place after the loop) */
constexpr size_t simt_rows_smem(size_t es, int mt, bool xs) {
    const size_t partial = (size_t)kSimtWarps * kRowsCta * mt * sizeof(float), stages = (size_t)kSimtWarps * 2 * mt * kChunkK * es;
    return kBnb4CodeTablesBytes + (xs && stages > partial ? stages : partial);
}
__device__ __forceinline__ int simt_x_slot(int u) { return u ^ ((u >> 3) & 1); }

template <typename T, int MT, bool NESTED, bool XS>
__global__ void __launch_bounds__(kSimtWarps * 32, MT <= 4 ? 3 : 2) gemm_4bit_simt_rows_kernel(GemmArgs a) {
    constexpr int C = MT * kRowsLane, U = kChunkK * (int)sizeof(T) / 16; /* a lane's sums; the 16-byte units of a stage row */
    extern __shared__ __align__(64) unsigned char simt_smem[];
    float *code = reinterpret_cast<float *>(simt_smem), *nested_map = code + 16;
    const uint32_t code_s = pin((uint32_t)__cvta_generic_to_shared(code));
    unsigned char *area = simt_smem + kBnb4CodeTablesBytes; /* the stages, then the warps' sums */
    bnb4_dev_fill_code_tables<NESTED>(code, a, c_nf4_code, c_fp4_code);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 3, kl = lane & 7;
    const size_t K = a.K, N = a.N, j0 = (size_t)blockIdx.x * kRowsCta + g * kRowsLane;
    const int M = (int)a.M;
    const T *x = reinterpret_cast<const T *>(a.x);
    size_t row[kRowsLane]; /* (rows past N read row N - 1 and store nothing) */
#pragma unroll
    for (int i = 0; i < kRowsLane; i++)
        row[i] = j0 + i < N ? j0 + i : N - 1;
    float acc[C];
#pragma unroll
    for (int v = 0; v < C; v++)
        acc[v] = 0.0f;
    /* XS: the warp's chunk at k0 into stage st, one commit group per chunk (every lane, empty or not). Lane l copies
     * units l, l + 32, ...: unit l % U of rows l / U, l / U + 32 / U, ..., so a warp's copy takes whole rows (a few
     * lines an instruction; a lane taking a run of one row's units made each instruction touch 32 lines and took
     * 1.7x the time), one k test a chunk (K % 32 == 0: a unit is wholly in K or past it) and the same destination
     * offsets every chunk. Rows past M are zeroed once (below) and never copied, so every row's FMAs run without a
     * branch. */
    static_assert(32 % U == 0, "a lane's units share their place in the row");
    constexpr int kRowsCopy = 32 / U; /* rows between a lane's units */
    const int copy_row = lane / U, copy_u = lane % U;
    const T *copy_src = x + (size_t)copy_row * K + (size_t)copy_u * (16 / sizeof(T));
    const size_t copy_step = (size_t)kRowsCopy * K;
    const uint4 *stages = reinterpret_cast<const uint4 *>(area) + (size_t)warp * 2 * MT * U;
    const uint32_t copy_dst = pin((uint32_t)__cvta_generic_to_shared(stages + copy_row * U + simt_x_slot(copy_u)));
    const auto copy_x = [&](size_t k0, int st) {
        if (k0 + (size_t)copy_u * (16 / sizeof(T)) < K) {
            const T *src = copy_src + k0;
#pragma unroll
            for (int i = 0; i < (MT * U + 31) / 32; i++, src += copy_step) /* (lanes past MT rows: past M too) */
                if (copy_row + i * kRowsCopy < M)
                    cp_async16(copy_dst + (uint32_t)((st * MT + i * kRowsCopy) * U) * 16u, src, 16);
        }
        cp_async_commit();
    };
    if (XS && M < MT) {
        uint4 *zero = const_cast<uint4 *>(stages);
        for (int id = M * U + lane; id < MT * U; id += 32)
            zero[id] = zero[MT * U + id] = make_uint4(0, 0, 0, 0);
    }
    /* a turn's packed weights and scales (nested: the 8-bit code and the nested absmax - a power-of-two nested
     * blocksize, bitsandbytes' 256 - decoded when used, with the map in shared memory, so no load waits on another)
     * are loaded a turn ahead; the weights bypass L1, which keeps the activations every CTA of the SM reads */
    constexpr size_t kStride = (size_t)kSimtWarps * kChunkK;
    uint32_t wv[kRowsLane], q[kRowsLane];
    float sc[kRowsLane];
    const auto load_turn = [&](size_t k) {
#pragma unroll
        for (int i = 0; i < kRowsLane; i++) {
            const size_t flat = row[i] * K + k, b = flat >> a.bs_log2;
            asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(wv[i]) : "l"(a.packed + flat / 2));
            if (NESTED) {
                q[i] = __ldg(a.codes + b);
                sc[i] = __ldg(a.nested_absmax + (b >> a.nbs_log2));
            } else {
                sc[i] = __ldg(a.absmax + b);
            }
        }
    };
    size_t k0 = (size_t)warp * kChunkK; /* the warp's chunk; the lane's k run is k0 + 8 kl */
    if (XS && k0 < K)
        copy_x(k0, 0);
    if (k0 + kl * 8 < K)
        load_turn(k0 + kl * 8);
    __syncthreads(); /* the tables */
    for (int st = 0; k0 < K; k0 += kStride, st ^= 1) {
        /* (K % 32 == 0: a lane's 8 k are in K or all past it, and share a block, blocksize >= 32) */
        const size_t k = k0 + kl * 8;
        if (XS) {
            __syncwarp(); /* every lane is done with stage st ^ 1 (the turn before) */
            if (k0 + kStride < K)
                copy_x(k0 + kStride, st ^ 1);
            else
                cp_async_commit();
            cp_async_wait<1>(); /* this turn's chunk has landed (this lane's copies) */
            __syncwarp();       /* (and the other lanes') */
        }
        if (k >= K) /* the lanes past K of a last half chunk */
            continue;
        float w[kRowsLane][8];
#pragma unroll
        for (int i = 0; i < kRowsLane; i++) {
            const float scale = NESTED ? bnb4_dev_nested_scale(nested_map[q[i]], sc[i], a.offset) : sc[i];
            bnb4_dev_decode_word(code_s, wv[i], scale, w[i]);
        }
        if (k + kStride < K)
            load_turn(k + kStride);
        /* every row without a branch (rows past M: zeros from the stage, or row M - 1 again from global; their sums are
         * not stored), so the compiler can load a row's activations while the row before it is multiplied */
#pragma unroll
        for (int r = 0; r < MT; r++) {
            float xv[8];
            if (XS) {
                const uint4 *xr = stages + (st * MT + r) * U;
                uint4 units[bnb4_x8<T>::kUnits];
#pragma unroll
                for (int h = 0; h < bnb4_x8<T>::kUnits; h++)
                    units[h] = xr[simt_x_slot(kl * bnb4_x8<T>::kUnits + h)];
                bnb4_x8<T>::unpack(units, xv);
            } else {
                bnb4_x8<T>::get(x + (size_t)(r < M ? r : M - 1) * K + k, xv);
            }
#pragma unroll
            for (int i = 0; i < kRowsLane; i++)
#pragma unroll
                for (int e = 0; e < 8; e++)
                    acc[r * kRowsLane + i] = fmaf(xv[e], w[i][e], acc[r * kRowsLane + i]);
        }
    }
    simt_reduce_k_lanes<C>(acc, kl);
    if (XS)
        cp_async_wait<0>();
    __syncthreads(); /* (XS: every warp is done with its stages, which the sums take over) */
    float(*partial)[kRowsCta / kRowsLane][C] = reinterpret_cast<float(*)[kRowsCta / kRowsLane][C]>(area);
#pragma unroll
    for (int t = 0; t < C / 8; t++)
        partial[warp][g][kl * (C / 8) + t] = acc[t];
    __syncthreads();
    /* thread (g, v): lane group g's sum v = r * kRowsLane + i over the warps */
    for (int gv = threadIdx.x; gv < (kRowsCta / kRowsLane) * C; gv += blockDim.x) {
        const int gg = gv / C, v = gv % C, r = v / kRowsLane, i = v % kRowsLane;
        const size_t j = (size_t)blockIdx.x * kRowsCta + gg * kRowsLane + i;
        if (r >= M || j >= N)
            continue;
        float sum = 0.0f;
#pragma unroll
        for (int ww = 0; ww < kSimtWarps; ww++)
            sum += partial[ww][gg][v];
        if (a.bias)
            sum += load_f32<T>(a.bias, j);
        reinterpret_cast<T *>(a.y)[r * N + j] = bnb4_dt<T>::from_f32(sum);
    }
}

template <typename T, int MT>
__global__ void __launch_bounds__(kSimtWarps * 32) gemm_4bit_simt_kernel(GemmArgs a) {
    __shared__ float code[16];
    if (threadIdx.x < 16)
        code[threadIdx.x] = a.quant_type == BNB4_NF4 ? c_nf4_code[threadIdx.x] : c_fp4_code[threadIdx.x];
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const size_t j = (size_t)blockIdx.x * kSimtWarps + (threadIdx.x >> 5);
    if (j >= a.N)
        return;
    const size_t K = a.K, M = a.M;
    auto scale_of = [&](size_t b) {
        if (a.absmax)
            return __ldg(a.absmax + b);
        return bnb4_dev_nested_scale(__ldg(a.nested_code + __ldg(a.codes + b)),
                                     __ldg(a.nested_absmax + b / a.nested_blocksize), a.offset);
    };
    float acc[MT];
#pragma unroll
    for (int r = 0; r < MT; r++)
        acc[r] = 0.0f;
    size_t block = (size_t)-1;
    float sc = 0.0f;
    for (size_t k = lane; k < K; k += 32) {
        const size_t flat = j * K + k;
        if ((flat >> a.bs_log2) != block) {
            block = flat >> a.bs_log2;
            sc = scale_of(block);
        }
        const float w = bnb4_dev_mul_ftz(code[bnb4_nibble_at(a.packed, flat)], sc);
#pragma unroll
        for (int r = 0; r < MT; r++)
            if (r < (int)M)
                acc[r] = fmaf(load_f32<T>(a.x, r * K + k), w, acc[r]);
    }
    const float b = a.bias && lane == 0 ? load_f32<T>(a.bias, j) : 0.0f; /* (before the first store, which
                                                                              * would order the load behind it) */
#pragma unroll
    for (int r = 0; r < MT; r++) {
        float v = acc[r];
#pragma unroll
        for (int off = 16; off > 0; off /= 2)
            v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == 0 && r < (int)M) {
            if (a.bias)
                v += b;
            reinterpret_cast<T *>(a.y)[r * a.N + j] = bnb4_dt<T>::from_f32(v);
        }
    }
}

template <typename T>
__global__ void broadcast_bias_kernel(const T *__restrict__ bias, size_t N, size_t M, T *__restrict__ y) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < M * N; i += (size_t)gridDim.x * blockDim.x)
        y[i] = bias[i % N];
}

GemmArgs args_of(const bnb4_qtensor *w, size_t m, const void *x, const void *bias, void *y) {
    GemmArgs a = {};
    bnb4_cuda_set_weight(a, w);
    a.N = w->rows;
    a.K = w->cols;
    a.M = m;
    a.x = x;
    a.bias = bias;
    a.y = y;
    return a;
}

/* Whether the SIMT rows kernel may stage its activations (BNB4_CUDA_SIMT_XS=0: never, for measuring) */
const bool g_simt_xs = bnb4_env_size("BNB4_CUDA_SIMT_XS", 1) != 0;
template <typename T, int MT, bool NESTED, bool XS> unsigned g_simt_smem_limit[64]; /* (bnb4_cuda_smem_limit) */

template <typename T, int MT, bool NESTED, bool XS> bnb4_status launch_simt_rows_mt(bnb4_cuda_state *s, const GemmArgs &a) {
    const auto kernel = gemm_4bit_simt_rows_kernel<T, MT, NESTED, XS>;
    constexpr size_t smem = simt_rows_smem(sizeof(T), MT, XS);
    const bnb4_status st = bnb4_cuda_check(bnb4_cuda_smem_limit(s, kernel, smem, g_simt_smem_limit<T, MT, NESTED, XS>),
                                           "bnb4_gemm (simt): shared memory");
    if (st != BNB4_OK)
        return st;
    kernel<<<(unsigned)bnb4_div_up(a.N, kRowsCta), kSimtWarps * 32, smem, s->stream>>>(a);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_gemm (simt)");
}
/* The activation rows (MT) the rows kernel a launch of m <= 16 rows takes is built for: every row of MT is
 * multiplied (m = 2 on MT = 4 took 1.25x its time) */
int simt_rows_mt(size_t m) { return m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : 16; }
/* XS where the two stages a warp fit the device's shared memory (f32 at m > 8 takes 65 KB); else from global */
template <typename T, int MT, bool NESTED> bnb4_status launch_simt_rows_xs(bnb4_cuda_state *s, const GemmArgs &a) {
    if (bnb4_cuda_simt_stages_x(s, bnb4_dt<T>::id, a.M))
        return launch_simt_rows_mt<T, MT, NESTED, true>(s, a);
    return launch_simt_rows_mt<T, MT, NESTED, false>(s, a);
}
template <typename T, bool NESTED> bnb4_status launch_simt_rows(bnb4_cuda_state *s, const GemmArgs &a) {
    switch (simt_rows_mt(a.M)) {
    case 2: return launch_simt_rows_xs<T, 2, NESTED>(s, a);
    case 4: return launch_simt_rows_xs<T, 4, NESTED>(s, a);
    case 8: return launch_simt_rows_xs<T, 8, NESTED>(s, a);
    default: return launch_simt_rows_xs<T, 16, NESTED>(s, a);
    }
}

template <typename T> bnb4_status launch_simt(bnb4_cuda_state *s, const GemmArgs &a, int vec_ok) {
    if (vec_ok)
        return a.absmax ? launch_simt_rows<T, false>(s, a) : launch_simt_rows<T, true>(s, a);
    const unsigned ctas = (unsigned)bnb4_div_up(a.N, kSimtWarps);
    if (a.M <= 1)
        gemm_4bit_simt_kernel<T, 1><<<ctas, kSimtWarps * 32, 0, s->stream>>>(a);
    else if (a.M <= 4)
        gemm_4bit_simt_kernel<T, 4><<<ctas, kSimtWarps * 32, 0, s->stream>>>(a);
    else
        gemm_4bit_simt_kernel<T, 16><<<ctas, kSimtWarps * 32, 0, s->stream>>>(a);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_gemm (simt)");
}

} // namespace

bnb4_cuda_gemm_path bnb4_cuda_pick_gemm(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m,
                                        const void *x) {
    /* m = 1 on large weights on sm_90: the TMA pipe kernel streams faster (BNB4_CUDA_PIPE_M1_MIN_WEIGHTS) */
    if (m == 1 && w->rows * w->cols >= BNB4_CUDA_PIPE_M1_MIN_WEIGHTS && bnb4_cuda_pipe_fits(s, w, dt, m, x) &&
        bnb4_cuda_pipe_tma_fits(s, w, m))
        return BNB4_CUDA_GEMM_PIPE;
    /* m = 1: stream the weights on CUDA cores (any dtype; see BNB4_CUDA_GEMV_MAX_M for when) */
    if (bnb4_cuda_gemv_fits(s, w, dt, m, x))
        return BNB4_CUDA_GEMM_GEMV;
    /* past m = 64: matmuls of 64 rows on the pipe kernel, before the tile kernel (a last slice of at most 8 rows) or
     * where it does not take m (bnb4_cuda_pipe_chunks) */
    const int chunks = bnb4_cuda_pipe_chunks(s, w, dt, m, x);
    if (chunks == 2)
        return BNB4_CUDA_GEMM_PIPE;
    if (bnb4_cuda_tile_fits(s, w, dt, m, x))
        return BNB4_CUDA_GEMM_TILE;
    if (chunks == 1 || bnb4_cuda_pipe_fits(s, w, dt, m, x))
        return BNB4_CUDA_GEMM_PIPE;
    if (m <= bnb4_cuda_simt_max_m(dt))
        return BNB4_CUDA_GEMM_SIMT;
    if (bnb4_cuda_f32_tile_fits(s, w, dt, m, x))
        return BNB4_CUDA_GEMM_F32_TILE;
    return BNB4_CUDA_GEMM_DEQUANT_BLAS;
}

int bnb4_cuda_simt_stages_x(const bnb4_cuda_state *s, bnb4_dtype dt, size_t m) {
    return g_simt_xs && bnb4_cuda_smem_fits(s, simt_rows_smem(bnb4_dtype_size(dt), simt_rows_mt(m), true));
}

size_t bnb4_cuda_simt_max_m(bnb4_dtype dt) {
    static const size_t f32_max = bnb4_env_size("BNB4_CUDA_SIMT_F32_MAX_M", BNB4_CUDA_SIMT_F32_MAX_M);
    return dt == BNB4_F32 ? f32_max : BNB4_CUDA_SIMT_MAX_M;
}

bnb4_status bnb4_cuda_gemm_simt(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                                const void *bias, void *y) {
    if (bnb4_div_up(w->rows, kSimtWarps) > (size_t)INT32_MAX)
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_gemm: %zu rows are too many for one launch", w->rows);
    const size_t N = w->rows, K = w->cols, es = bnb4_dtype_size(dt);
    const int vec_ok = K % 32 == 0 && bnb4_aligned(w->packed, 16) && bnb4_aligned(x, 16) && bnb4_cuda_scales_by_shift(w);
    /* BNB4_CUDA_SIMT_MAX_M activation rows a launch (each chunk stays 16-byte aligned: K % 32 == 0) */
    for (size_t r0 = 0; r0 < m; r0 += BNB4_CUDA_SIMT_MAX_M) {
        const size_t rows = m - r0 < BNB4_CUDA_SIMT_MAX_M ? m - r0 : BNB4_CUDA_SIMT_MAX_M;
        const GemmArgs a = args_of(w, rows, (const uint8_t *)x + r0 * K * es, bias, (uint8_t *)y + r0 * N * es);
        const bnb4_status st = dt == BNB4_F16    ? launch_simt<__half>(s, a, vec_ok)
                               : dt == BNB4_BF16 ? launch_simt<__nv_bfloat16>(s, a, vec_ok)
                                                 : launch_simt<float>(s, a, vec_ok);
        if (st != BNB4_OK)
            return st;
    }
    return BNB4_OK;
}

/* ---- cuBLAS, loaded on first use ------------------------------------------------------------------ */
namespace {
struct BlasApi {
    bool ok;
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    decltype(&cublasSetWorkspace_v2) set_workspace;
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                              const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
};
BlasApi g_blas;
pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;
#define BNB4_STR2(x) #x
#define BNB4_STR(x) BNB4_STR2(x)
/* cuBLASLt, for the bias epilogue */
struct BlasLtApi {
    bool ok;
    decltype(&cublasLtCreate) create;
    decltype(&cublasLtDestroy) destroy;
    decltype(&cublasLtMatmulDescCreate) desc_create;
    decltype(&cublasLtMatmulDescDestroy) desc_destroy;
    decltype(&cublasLtMatmulDescSetAttribute) desc_set;
    decltype(&cublasLtMatrixLayoutCreate) layout_create;
    decltype(&cublasLtMatrixLayoutDestroy) layout_destroy;
    decltype(&cublasLtMatmulPreferenceCreate) pref_create;
    decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy;
    decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set;
    decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic;
    decltype(&cublasLtMatmul) matmul;
};
BlasLtApi g_lt;
void *open_first(const char *const *names, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (void *lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL))
            return lib;
    return NULL;
}
/* fn = lib's symbol `name`; whether it was found */
template <typename F> bool load_symbol(void *lib, const char *name, F &fn) {
    fn = (F)dlsym(lib, name);
    return fn != NULL;
}
void load_blas() {
    const char *names[] = {"libcublas.so." BNB4_STR(CUBLAS_VER_MAJOR), "libcublas.so"};
    const char *lt_names[] = {"libcublasLt.so." BNB4_STR(CUBLAS_VER_MAJOR), "libcublasLt.so"};
    if (void *lt = open_first(lt_names, 2))
        g_lt.ok = load_symbol(lt, "cublasLtCreate", g_lt.create) &&
                  load_symbol(lt, "cublasLtDestroy", g_lt.destroy) &&
                  load_symbol(lt, "cublasLtMatmulDescCreate", g_lt.desc_create) &&
                  load_symbol(lt, "cublasLtMatmulDescDestroy", g_lt.desc_destroy) &&
                  load_symbol(lt, "cublasLtMatmulDescSetAttribute", g_lt.desc_set) &&
                  load_symbol(lt, "cublasLtMatrixLayoutCreate", g_lt.layout_create) &&
                  load_symbol(lt, "cublasLtMatrixLayoutDestroy", g_lt.layout_destroy) &&
                  load_symbol(lt, "cublasLtMatmulPreferenceCreate", g_lt.pref_create) &&
                  load_symbol(lt, "cublasLtMatmulPreferenceDestroy", g_lt.pref_destroy) &&
                  load_symbol(lt, "cublasLtMatmulPreferenceSetAttribute", g_lt.pref_set) &&
                  load_symbol(lt, "cublasLtMatmulAlgoGetHeuristic", g_lt.heuristic) &&
                  load_symbol(lt, "cublasLtMatmul", g_lt.matmul);
    if (void *lib = open_first(names, 2))
        g_blas.ok = load_symbol(lib, "cublasCreate_v2", g_blas.create) &&
                    load_symbol(lib, "cublasDestroy_v2", g_blas.destroy) &&
                    load_symbol(lib, "cublasSetStream_v2", g_blas.set_stream) &&
                    load_symbol(lib, "cublasSetWorkspace_v2", g_blas.set_workspace) &&
                    load_symbol(lib, "cublasGemmEx", g_blas.gemm_ex);
}
bool blas_available() {
    pthread_once(&g_blas_once, load_blas);
    return g_blas.ok;
}

/* A context's cuBLASLt handle and the algorithms its heuristic chose, by problem (the query costs the host
 * tens of microseconds; a call's descriptors are rebuilt, which costs little). */
struct LtPlan {
    bool used;
    int dt;
    size_t N, K, m;
    unsigned align; /* the operands' common alignment, which the heuristic's choice depends on */
    cublasLtMatmulAlgo_t algo;
};
constexpr int kLtPlans = 16;
/* cuBLAS's and cuBLASLt's workspace: the context's own (s->blas_workspace, made with the handle), so cuBLAS
 * allocates nothing per call - in a captured graph that would be an allocation node (its default pool does
 * that for some algorithms) */
constexpr size_t kBlasWorkspace = 32u << 20; /* cuBLAS's own default on Hopper */
struct BlasLt {
    cublasLtHandle_t h;
    LtPlan plans[kLtPlans];
    unsigned next; /* the plan a new problem replaces (round robin) */
};

unsigned common_alignment(const void *const *ptrs, size_t n) {
    unsigned a = 256;
    for (size_t i = 0; i < n; i++)
        while (a > 1 && !bnb4_aligned(ptrs[i], a))
            a /= 2;
    return a;
}

/* y[m, N] = x[m, K] wd[N, K]^T + bias through cublasLtMatmul's bias epilogue. BNB4_ERR_UNSUPPORTED (nothing
 * launched) where cuBLASLt is missing or offers no algorithm: the caller takes the broadcast instead. */
bnb4_status lt_matmul_bias(bnb4_cuda_state *s, bnb4_dtype dt, size_t N, size_t K, size_t m, const void *wd,
                           const void *x, const void *bias, void *y, const char *fn) {
    if (!g_lt.ok)
        return BNB4_ERR_UNSUPPORTED;
    if (!s->cublaslt) {
        const bnb4_cuda_relaxed_capture relaxed; /* (the stream may be being captured) */
        BlasLt *lt = (BlasLt *)calloc(1, sizeof(BlasLt));
        if (!lt)
            return bnb4_fail(BNB4_ERR_OUT_OF_MEMORY, "%s: out of host memory", fn);
        if (g_lt.create(&lt->h) != CUBLAS_STATUS_SUCCESS) {
            free(lt);
            return BNB4_ERR_UNSUPPORTED;
        }
        s->cublaslt = lt;
    }
    BlasLt *lt = (BlasLt *)s->cublaslt;
    const cudaDataType_t t = dt == BNB4_F16 ? CUDA_R_16F : dt == BNB4_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const void *ptrs[] = {wd, x, bias, y};
    const unsigned align = common_alignment(ptrs, 4);
    /* Row-major Y[m,N] = X[m,K] W[N,K]^T is column-major Y^T[N,m] = W^T' X^T with W read as K x N; the
     * bias runs along Y^T's rows. */
    const cublasOperation_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t la = NULL, lb = NULL, lc = NULL;
    bnb4_status st = BNB4_ERR_UNSUPPORTED;
    if (g_lt.desc_create(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS)
        return BNB4_ERR_UNSUPPORTED;
    if (g_lt.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof op_t) == CUBLAS_STATUS_SUCCESS &&
        g_lt.desc_set(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof op_n) == CUBLAS_STATUS_SUCCESS &&
        g_lt.desc_set(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue) == CUBLAS_STATUS_SUCCESS &&
        g_lt.desc_set(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias) == CUBLAS_STATUS_SUCCESS &&
        g_lt.desc_set(desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &t, sizeof t) == CUBLAS_STATUS_SUCCESS &&
        g_lt.layout_create(&la, t, K, N, K) == CUBLAS_STATUS_SUCCESS &&
        g_lt.layout_create(&lb, t, K, m, K) == CUBLAS_STATUS_SUCCESS &&
        g_lt.layout_create(&lc, t, N, m, N) == CUBLAS_STATUS_SUCCESS) {
        LtPlan *plan = NULL;
        for (LtPlan &p : lt->plans)
            if (p.used && p.dt == (int)dt && p.N == N && p.K == K && p.m == m && p.align == align) {
                plan = &p;
                break;
            }
        if (!plan) {
            cublasLtMatmulPreference_t pref = NULL;
            cublasLtMatmulHeuristicResult_t result;
            int found = 0;
            const size_t ws_bytes = kBlasWorkspace;
            if (g_lt.pref_create(&pref) == CUBLAS_STATUS_SUCCESS) {
                if (g_lt.pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof ws_bytes) ==
                        CUBLAS_STATUS_SUCCESS &&
                    g_lt.heuristic(lt->h, desc, la, lb, lc, lc, pref, 1, &result, &found) != CUBLAS_STATUS_SUCCESS)
                    found = 0;
                g_lt.pref_destroy(pref);
            }
            if (found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
                plan = &lt->plans[lt->next];
                lt->next = (lt->next + 1) % kLtPlans;
                *plan = LtPlan{true, (int)dt, N, K, m, align, result.algo};
            }
        }
        if (plan) {
            const float alpha = 1.0f, beta = 0.0f;
            const cublasStatus_t cs = g_lt.matmul(lt->h, desc, &alpha, wd, la, x, lb, &beta, y, lc, y, lc,
                                                  &plan->algo, s->blas_workspace, kBlasWorkspace, s->stream);
            st = cs == CUBLAS_STATUS_SUCCESS
                     ? BNB4_OK
                     : bnb4_fail(BNB4_ERR_DEVICE, "%s: cublasLtMatmul failed (status %d)", fn, (int)cs);
        }
    }
    if (lc)
        g_lt.layout_destroy(lc);
    if (lb)
        g_lt.layout_destroy(lb);
    if (la)
        g_lt.layout_destroy(la);
    g_lt.desc_destroy(desc);
    return st;
}
} // namespace

void bnb4_cuda_blas_destroy(bnb4_cuda_state *s) {
    if (s->cublas && blas_available())
        g_blas.destroy((cublasHandle_t)s->cublas);
    if (s->cublaslt) {
        g_lt.destroy(((BlasLt *)s->cublaslt)->h);
        free(s->cublaslt);
    }
    if (s->blas_workspace)
        cudaFree(s->blas_workspace);
    s->cublas = s->cublaslt = s->blas_workspace = NULL;
}

bnb4_status bnb4_cuda_gemm_dequant_blas(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m,
                                        const void *x, const void *bias, void *y) {
    static const char fn[] = "bnb4_gemm (dequantize + cuBLAS)";
    const size_t N = w->rows, K = w->cols, es = bnb4_dtype_size(dt);
    if (!blas_available() || N > INT32_MAX || K > INT32_MAX || m > INT32_MAX) {
        /* No cuBLAS here (or sizes it cannot take): the SIMT kernel */
        return bnb4_cuda_gemm_simt(s, w, dt, m, x, bias, y);
    }
    if (!s->cublas) {
        const bnb4_cuda_relaxed_capture relaxed; /* (it allocates; the stream may be being captured) */
        bnb4_status st = bnb4_cuda_check(cudaMalloc(&s->blas_workspace, kBlasWorkspace), fn);
        cublasHandle_t h;
        if (st == BNB4_OK && g_blas.create(&h) != CUBLAS_STATUS_SUCCESS)
            st = bnb4_fail(BNB4_ERR_DEVICE, "%s: cublasCreate failed", fn);
        if (st != BNB4_OK) {
            if (s->blas_workspace)
                cudaFree(s->blas_workspace);
            s->blas_workspace = NULL;
            return st;
        }
        s->cublas = h;
    }
    cublasHandle_t h = (cublasHandle_t)s->cublas;
    /* (setting the stream puts cuBLAS back on its default workspace: ours again after it) */
    if (g_blas.set_stream(h, s->stream) != CUBLAS_STATUS_SUCCESS ||
        g_blas.set_workspace(h, s->blas_workspace, kBlasWorkspace) != CUBLAS_STATUS_SUCCESS)
        return bnb4_fail(BNB4_ERR_DEVICE, "%s: cublasSetStream / cublasSetWorkspace failed", fn);
    size_t wd_bytes = 0;
    if (__builtin_mul_overflow(N * K, es, &wd_bytes))
        return bnb4_fail(BNB4_ERR_OVERFLOW, "%s: a %zu x %zu dequantized weight overflows size_t bytes", fn, N, K);
    void *wd = NULL;
    bnb4_status st = bnb4_cuda_temp(s, wd_bytes, &wd, fn);
    if (st != BNB4_OK)
        return st;
    st = bnb4_cuda_launch_dequantize(s, w, dt, wd);
    if (st == BNB4_OK && bias) { /* the bias epilogue; BNB4_ERR_UNSUPPORTED: the broadcast below */
        const bnb4_status lt = lt_matmul_bias(s, dt, N, K, m, wd, x, bias, y, fn);
        if (lt != BNB4_ERR_UNSUPPORTED) {
            bnb4_cuda_temp_done(s, wd);
            return lt;
        }
    }
    float beta = 0.0f;
    if (st == BNB4_OK && bias) {
        const size_t total = m * N;
        const unsigned ctas = (unsigned)(bnb4_div_up(total, 256) < 65536 ? bnb4_div_up(total, 256) : 65536);
        if (dt == BNB4_F16)
            broadcast_bias_kernel<<<ctas, 256, 0, s->stream>>>((const __half *)bias, N, m, (__half *)y);
        else if (dt == BNB4_BF16)
            broadcast_bias_kernel<<<ctas, 256, 0, s->stream>>>((const __nv_bfloat16 *)bias, N, m, (__nv_bfloat16 *)y);
        else
            broadcast_bias_kernel<<<ctas, 256, 0, s->stream>>>((const float *)bias, N, m, (float *)y);
        st = BNB4_CUDA_LAUNCH_CHECK(fn);
        beta = 1.0f;
    }
    if (st == BNB4_OK) {
        const cudaDataType_t t = dt == BNB4_F16 ? CUDA_R_16F : dt == BNB4_BF16 ? CUDA_R_16BF : CUDA_R_32F;
        const float alpha = 1.0f;
        /* Row-major Y[m,N] = X[m,K] W[N,K]^T is column-major Y^T[N,m] = W^T' X^T with W read as K x N. */
        const cublasStatus_t cs =
            g_blas.gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)m, (int)K, &alpha, wd, t, (int)K, x, t, (int)K,
                         &beta, y, t, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (cs != CUBLAS_STATUS_SUCCESS)
            st = bnb4_fail(BNB4_ERR_DEVICE, "%s: cublasGemmEx failed (status %d)", fn, (int)cs);
    }
    bnb4_cuda_temp_done(s, wd);
    return st;
}
