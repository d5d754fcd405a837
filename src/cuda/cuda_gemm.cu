/*
 * cuda_gemm.cu - Y[m, N] = X[m, K] W^T + bias with W in bitsandbytes' 4-bit format; the router and
 * three of the four paths (the first, for m = 1 with K % blocksize == 0, is cuda_gemv.cu's weight-
 * streaming CUDA-core kernel):
 *
 *  gemm_4bit_<dt>__mma_m16n8k16 (f16/bf16, K % 32 == 0, 16-byte aligned, m <= 32): the fused
 *    tensor-core kernel. Weights are the A operand (16 weight rows per mma), activations the B operand
 *    (8 of the m rows per mma), so m = 1 wastes no weight bandwidth. Each thread loads 16 contiguous
 *    packed bytes (32 k) of two weight rows; the mma's k order is permuted so that these bytes ARE the
 *    thread's A fragments (byte 2t and 2t+1 feed k-step t), and the activations are loaded with the same
 *    permutation (8 contiguous bytes per k-step), so no shuffles or shared-memory staging is needed.
 *    A byte decodes to a (code[hi], code[lo]) pair with one shared-memory lookup (a 256-entry table
 *    replicated per lane, so lookups never bank-conflict) and one packed multiply by the block's scale;
 *    nested absmax is decoded in the kernel. Weights are read exactly once, kept two steps ahead in
 *    registers (three named buffers, the loop unrolled by their period); K is split across CTAs to
 *    fill the GPU, and the last CTA of each row block adds the partial sums in a fixed order
 *    (deterministic), adds the bias and rounds once. Measured on H100 (docs/performance.md): about
 *    0.3-0.7 of copy bandwidth at m = 1, faster than dense cuBLAS up to m = 16-32.
 *  gemm_4bit_<dt>__simt: any dtype and shape, small m; one warp per weight row, float32 arithmetic.
 *  dequantize + cuBLAS: large m (and shapes the fused kernels do not take): dequantize into a
 *    temporary in the activation dtype, then cublasGemmEx with float32 accumulation. cuBLAS is loaded
 *    with dlopen on first use, not linked: linking it costs every process ~200 MB of resident memory
 *    (CPU-only users of the library included). Without it, large m falls back to the SIMT kernel.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

#include <cublas_v2.h>

#include "cuda_common.cuh"

namespace {

__constant__ float c_nf4_code[16] = {BNB4_NF4_CODEBOOK_VALUES};
__constant__ float c_fp4_code[16] = {BNB4_FP4_CODEBOOK_VALUES};

template <typename T> struct MmaOps;
template <> struct MmaOps<__half> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        const __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&h);
    }
    static __device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
        const __half2 r = __hmul2(*reinterpret_cast<const __half2 *>(&a), *reinterpret_cast<const __half2 *>(&b));
        return *reinterpret_cast<const uint32_t *>(&r);
    }
    static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};
template <> struct MmaOps<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&h);
    }
    static __device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
        const __nv_bfloat162 r =
            __hmul2(*reinterpret_cast<const __nv_bfloat162 *>(&a), *reinterpret_cast<const __nv_bfloat162 *>(&b));
        return *reinterpret_cast<const uint32_t *>(&r);
    }
    static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

struct GemmArgs {
    const uint8_t *packed;
    const float *absmax;        /* plain */
    const uint8_t *codes;       /* nested */
    const float *nested_absmax;
    const float *nested_code;
    float offset;
    unsigned nested_blocksize;
    int bs_log2;
    int quant_type;
    size_t N, K, M;
    const void *x, *bias;
    void *y;
    float *ws;                  /* split-K partial sums [splits][M][N], or NULL */
    unsigned *counters;         /* one per row block */
    size_t nblocks;             /* absmax entries (bounds the nested-code word loads) */
    int steps_per_split, splits;
};

__device__ __forceinline__ uint4 ldg16(const void *p) { return __ldg(reinterpret_cast<const uint4 *>(p)); }

template <typename T> __device__ __forceinline__ float load_f32(const void *p, size_t i) {
    return bnb4_dt<T>::to_f32(reinterpret_cast<const T *>(p)[i]);
}

/* Kernel shape per m range: NT n8-tiles of activations (m <= 8*NT), RT 16-row weight tiles per warp,
 * 8 warps per CTA, each on its own slice of the CTA's K range. */
template <int NT> struct MmaShape {
    static constexpr int RT = NT <= 2 ? 1 : 2;
    static constexpr int WARPS = 8;
};
/* Register cap (CTAs that must fit on an SM): as many resident warps as fit without spilling. */
template <int NT, bool NESTED, int CH> constexpr int mma_min_ctas() {
    return CH == 1 ? (NT == 1 ? (NESTED ? 2 : 3) : NT == 2 && !NESTED ? 2 : 1) : NT == 1 && !NESTED ? 2 : 1;
}

/* One step = 128 k of 16*RT weight rows per warp: the thread's 16 packed bytes of rows g and g+8 of
 * each 16-row tile, and their scales (raw: nested codes are decoded when used). */
template <int RT, bool NESTED, int CH> struct WeightStep {
    uint4 w[CH][RT][2];
    float s[CH][RT][2];    /* plain: absmax; nested: nested_absmax */
    unsigned q[CH][RT][2]; /* nested: 8-bit code */
};

/* CH = 16-byte chunks per row and step: with CH = 2 a step is 256 k and the four threads of a row
 * fetch a whole 128-byte line at once (bytes 16c and 64 + 16c), instead of two 64-byte halves a step
 * apart. */
template <typename T, int NT, bool NESTED, int CH>
__global__ void __launch_bounds__(MmaShape<NT>::WARPS * 32, mma_min_ctas<NT, NESTED, CH>()) gemm_4bit_mma_kernel(GemmArgs a) {
    using Ops = MmaOps<T>;
    constexpr int RT = MmaShape<NT>::RT, WARPS = MmaShape<NT>::WARPS;
    constexpr int THREADS = WARPS * 32;
    constexpr int RB = WARPS * 16 * RT;
    constexpr bool XPRE = NT <= 2 && CH == 1; /* small m: activations prefetched a step ahead, in registers */
    constexpr int SK = 128 * CH;              /* k per step */
    constexpr int XU = XPRE ? 4 : 1;
    __shared__ __align__(16) uint32_t table[256 * 32];
    __shared__ float ncode[NESTED ? 256 : 1];
    __shared__ int is_last;

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, c = lane & 3;
    const size_t N = a.N, K = a.K, M = a.M;
    const size_t total_steps = (K + SK - 1) / SK;
    const size_t s_begin = (size_t)blockIdx.y * a.steps_per_split;
    const size_t s_end = min(total_steps, s_begin + a.steps_per_split);

    size_t row[RT][2];
#pragma unroll
    for (int rt = 0; rt < RT; rt++) {
        const size_t r = (size_t)blockIdx.x * RB + warp * 16 * RT + rt * 16 + g;
        row[rt][0] = min(r, N - 1); /* rows past N load row N-1 and are never stored */
        row[rt][1] = min(r + 8, N - 1);
    }
    const T *x = reinterpret_cast<const T *>(a.x);

    auto load_w = [&](size_t s, WeightStep<RT, NESTED, CH> &ws) {
#pragma unroll
        for (int j = 0; j < CH; j++) {
            const size_t kc = s * SK + 128 * j + 32 * c;
            const bool kv = s < s_end && kc < K;
#pragma unroll
            for (int rt = 0; rt < RT; rt++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const size_t flat = row[rt][h] * K + kc;
                    const size_t b = flat >> a.bs_log2;
                    ws.w[j][rt][h] = kv ? ldg16(a.packed + flat / 2) : make_uint4(0, 0, 0, 0);
                    if (NESTED) {
                        ws.q[j][rt][h] = kv ? __ldg(a.codes + b) : 0u;
                        ws.s[j][rt][h] = kv ? __ldg(a.nested_absmax + b / a.nested_blocksize) : 0.0f;
                    } else {
                        ws.s[j][rt][h] = kv ? __ldg(a.absmax + b) : 0.0f;
                    }
                }
        }
    };
    auto load_x = [&](size_t s, int j, int u, uint4 (&xu)[NT]) {
        const size_t kc = s * SK + 128 * j + 32 * c;
#pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const size_t m = (size_t)nt * 8 + g;
            xu[nt] = s < s_end && kc < K && m < M ? ldg16(x + m * K + kc + 8 * u) : make_uint4(0, 0, 0, 0);
        }
    };

    /* Weights run two steps ahead (three register buffers), activations one step ahead (two). */
    WeightStep<RT, NESTED, CH> wb0, wb1, wb2;
    uint4 xb0[XU][NT], xb1[XU][NT];
    load_w(s_begin, wb0);
    load_w(s_begin + 1, wb1);
    if (XPRE)
#pragma unroll
        for (int u = 0; u < XU; u++)
            load_x(s_begin, 0, u, xb0[u]);

    { /* the table, while those loads are in flight: 256 entries, one per thread, each stored to its 32
         per-lane copies with 16-byte stores */
        const float *cb = a.quant_type == BNB4_NF4 ? c_nf4_code : c_fp4_code;
        for (int e = threadIdx.x; e < 256; e += THREADS) {
            const uint32_t v = Ops::pack(cb[e >> 4], cb[e & 15]);
            uint4 *dst = reinterpret_cast<uint4 *>(table + e * 32);
#pragma unroll
            for (int j = 0; j < 8; j++)
                dst[j] = make_uint4(v, v, v, v);
        }
    }
    if (NESTED)
        for (int i = threadIdx.x; i < 256; i += THREADS)
            ncode[i] = a.nested_code[i];
    __syncthreads();

    float acc[RT][NT][4];
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                acc[rt][nt][i] = 0.0f;

    const uint32_t *tab = table + lane;
    size_t s = s_begin;
    /* One step on `cur` (and, for small m, activations `xc`), refilling `fut` with step s + 2 and `xn`
     * with s + 1 first. Buffers are named, not indexed, so they stay in registers. */
    auto step = [&](WeightStep<RT, NESTED, CH> &cur, WeightStep<RT, NESTED, CH> &fut, uint4 (&xc)[XU][NT],
                    uint4 (&xn)[XU][NT]) {
        load_w(s + 2, fut);
        if (XPRE)
#pragma unroll
            for (int u = 0; u < XU; u++)
                load_x(s + 1, 0, u, xn[u]);
#pragma unroll
        for (int j = 0; j < CH; j++) {
        uint32_t scale2[RT][2];
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float sc = cur.s[j][rt][h];
                if (NESTED)
                    sc = __fadd_rn(bnb4_dev_mul_ftz(ncode[cur.q[j][rt][h]], sc), a.offset);
                scale2[rt][h] = Ops::pack(sc, sc);
            }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            uint4 xu[NT];
            if (XPRE) {
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    xu[nt] = xc[XPRE ? u : 0][nt];
            } else {
                load_x(s, j, u, xu);
            }
#pragma unroll
            for (int h = 0; h < 2; h++) { /* k-step t = 2u + h uses bytes 2t, 2t+1 = bytes 2h, 2h+1 of word u */
#pragma unroll
                for (int rt = 0; rt < RT; rt++) {
                    const uint4 &q0 = cur.w[j][rt][0], &q1 = cur.w[j][rt][1];
                    const uint32_t w0 = u == 0 ? q0.x : u == 1 ? q0.y : u == 2 ? q0.z : q0.w;
                    const uint32_t w1 = u == 0 ? q1.x : u == 1 ? q1.y : u == 2 ? q1.z : q1.w;
                    uint32_t af[4];
                    af[0] = Ops::mul2(tab[__byte_perm(w0, 0, 0x4440 + 2 * h) * 32], scale2[rt][0]);
                    af[1] = Ops::mul2(tab[__byte_perm(w1, 0, 0x4440 + 2 * h) * 32], scale2[rt][1]);
                    af[2] = Ops::mul2(tab[__byte_perm(w0, 0, 0x4441 + 2 * h) * 32], scale2[rt][0]);
                    af[3] = Ops::mul2(tab[__byte_perm(w1, 0, 0x4441 + 2 * h) * 32], scale2[rt][1]);
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
                        Ops::mma(acc[rt][nt], af, h ? xu[nt].z : xu[nt].x, h ? xu[nt].w : xu[nt].y);
                }
            }
        }
        }
        s++;
    };
    /* Unrolled by 6, the period of 3 weight buffers and 2 activation buffers. */
    while (s < s_end) {
        step(wb0, wb2, xb0, xb1);
        if (s >= s_end) break;
        step(wb1, wb0, xb1, xb0);
        if (s >= s_end) break;
        step(wb2, wb1, xb0, xb1);
        if (s >= s_end) break;
        step(wb0, wb2, xb1, xb0);
        if (s >= s_end) break;
        step(wb1, wb0, xb0, xb1);
        if (s >= s_end) break;
        step(wb2, wb1, xb1, xb0);
    }

    /* Accumulator (rt, nt, i): weight row tile_row + g (+8 for i >= 2), m = nt*8 + 2c + (i & 1). */
    T *y = reinterpret_cast<T *>(a.y);
    const size_t row0 = (size_t)blockIdx.x * RB + warp * 16 * RT + g;
    if (a.splits == 1) {
#pragma unroll
        for (int rt = 0; rt < RT; rt++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const size_t r = row0 + rt * 16 + (i >> 1) * 8, m = (size_t)nt * 8 + 2 * c + (i & 1);
                    if (r < N && m < M) {
                        float v = acc[rt][nt][i];
                        if (a.bias)
                            v += load_f32<T>(a.bias, r);
                        y[m * N + r] = bnb4_dt<T>::from_f32(v);
                    }
                }
        return;
    }
    float *part = a.ws + (size_t)blockIdx.y * M * N;
#pragma unroll
    for (int rt = 0; rt < RT; rt++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const size_t r = row0 + rt * 16 + (i >> 1) * 8, m = (size_t)nt * 8 + 2 * c + (i & 1);
                if (r < N && m < M)
                    part[m * N + r] = acc[rt][nt][i];
            }
    __threadfence(); /* partial sums visible device-wide before the counter says so */
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned prev = atomicAdd(a.counters + blockIdx.x, 1u);
        is_last = prev == (unsigned)a.splits - 1;
    }
    __syncthreads();
    if (!is_last)
        return;
    __threadfence();
    const size_t rbase = (size_t)blockIdx.x * RB;
    const size_t rows = min((size_t)RB, N - rbase);
    for (size_t i = threadIdx.x; i < rows * M; i += THREADS) {
        const size_t m = i / rows, r = rbase + i % rows;
        float v = 0.0f;
        for (int sp = 0; sp < a.splits; sp++) /* fixed order: deterministic */
            v += __ldcg(a.ws + ((size_t)sp * M + m) * N + r);
        if (a.bias)
            v += load_f32<T>(a.bias, r);
        y[m * N + r] = bnb4_dt<T>::from_f32(v);
    }
    if (threadIdx.x == 0)
        a.counters[blockIdx.x] = 0; /* ready for the next launch on this stream */
}

/* ---- SIMT: any shape, dtype and alignment ------------------------------------------------------------
 * One warp per weight row; lanes take 32-element chunks (16-byte loads when K % 32 == 0 and aligned),
 * or single elements otherwise. Weights are dequantized exactly as bnb4_dequantize does (f32), then
 * multiplied with the f32 activations and accumulated in f32. */
constexpr int kSimtWarps = 8;

template <typename T, int MT>
__global__ void __launch_bounds__(kSimtWarps * 32) gemm_4bit_simt_kernel(GemmArgs a, int vec_ok) {
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
        return __fadd_rn(bnb4_dev_mul_ftz(__ldg(a.nested_code + __ldg(a.codes + b)),
                                          __ldg(a.nested_absmax + b / a.nested_blocksize)),
                         a.offset);
    };
    float acc[MT];
#pragma unroll
    for (int r = 0; r < MT; r++)
        acc[r] = 0.0f;
    if (vec_ok) {
        for (size_t k = (size_t)lane * 32; k < K; k += 32 * 32) {
            const size_t flat = j * K + k;
            const float sc = scale_of(flat >> a.bs_log2);
            const uint4 wv = ldg16(a.packed + flat / 2);
            const uint32_t words[4] = {wv.x, wv.y, wv.z, wv.w};
#pragma unroll
            for (int q = 0; q < 4; q++)
#pragma unroll
                for (int bi = 0; bi < 4; bi++) {
                    const unsigned byte = (words[q] >> (8 * bi)) & 0xffu;
                    const float w0 = bnb4_dev_mul_ftz(code[byte >> 4], sc);
                    const float w1 = bnb4_dev_mul_ftz(code[byte & 15u], sc);
                    const size_t kk = k + q * 8 + bi * 2;
#pragma unroll
                    for (int r = 0; r < MT; r++)
                        if (r < (int)M) {
                            acc[r] = fmaf(load_f32<T>(a.x, r * K + kk), w0, acc[r]);
                            acc[r] = fmaf(load_f32<T>(a.x, r * K + kk + 1), w1, acc[r]);
                        }
                }
        }
    } else {
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
    }
#pragma unroll
    for (int r = 0; r < MT; r++) {
        float v = acc[r];
#pragma unroll
        for (int off = 16; off > 0; off /= 2)
            v += __shfl_xor_sync(0xffffffffu, v, off);
        if (lane == 0 && r < (int)M) {
            if (a.bias)
                v += load_f32<T>(a.bias, j);
            reinterpret_cast<T *>(a.y)[r * a.N + j] = bnb4_dt<T>::from_f32(v);
        }
    }
}

template <typename T>
__global__ void broadcast_bias_kernel(const T *__restrict__ bias, size_t N, size_t M, T *__restrict__ y) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < M * N; i += (size_t)gridDim.x * blockDim.x)
        y[i] = bias[i % N];
}

int log2_of(size_t v) {
    int l = 0;
    while (((size_t)1 << l) < v)
        l++;
    return l;
}

GemmArgs args_of(const bnb4_qtensor *w, size_t m, const void *x, const void *bias, void *y) {
    GemmArgs a = {};
    a.packed = w->packed;
    a.absmax = w->absmax;
    a.codes = w->nested.codes;
    a.nested_absmax = w->nested.absmax;
    a.nested_code = w->nested.code;
    a.offset = w->nested.offset;
    a.nested_blocksize = (unsigned)w->nested.blocksize;
    a.bs_log2 = log2_of(w->blocksize);
    a.quant_type = (int)w->quant_type;
    a.nblocks = bnb4_div_up(w->rows * w->cols, w->blocksize);
    a.N = w->rows;
    a.K = w->cols;
    a.M = m;
    a.x = x;
    a.bias = bias;
    a.y = y;
    return a;
}

/* Resident CTAs per SM of each instantiation, per device; a namespace-scope variable, not a
 * function-local static, so the library needs no C++ runtime guards when linked into C programs. */
template <typename T, int NT, bool NESTED, int CH> int g_ctas_per_sm[64];

/* Split-K sizing: 0 = waves of resident CTAs to aim for (0.5), 1 = least steps per CTA (3); from a
 * sweep on H100 (docs/performance.md): fewer, longer CTAs beat a full wave of short ones.
 * BNB4_CUDA_MMA_WAVES / BNB4_CUDA_MMA_MIN_STEPS override them (for measuring). */
double g_mma_tuning[2] = {0.0, 0.0};
double mma_tuning(int which) {
    if (g_mma_tuning[0] == 0.0) {
        const char *w = getenv("BNB4_CUDA_MMA_WAVES"), *m = getenv("BNB4_CUDA_MMA_MIN_STEPS");
        const double wv = w ? atof(w) : 0.0, mv = m ? atof(m) : 0.0;
        g_mma_tuning[1] = mv >= 1.0 && mv <= 64.0 ? mv : 3.0;
        g_mma_tuning[0] = wv > 0.0 && wv <= 64.0 ? wv : 0.5;
    }
    return g_mma_tuning[which];
}

template <typename T, int NT, bool NESTED, int CH>
bnb4_status launch_mma(bnb4_cuda_state *s, GemmArgs a) {
    using S = MmaShape<NT>;
    constexpr int THREADS = S::WARPS * 32;
    int &ctas_per_sm = g_ctas_per_sm<T, NT, NESTED, CH>[s->device & 63];
    if (!ctas_per_sm) {
        int v = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, gemm_4bit_mma_kernel<T, NT, NESTED, CH>, THREADS, 0) !=
                cudaSuccess ||
            v < 1)
            v = 1;
        ctas_per_sm = v;
    }
    constexpr size_t RB = S::WARPS * 16 * S::RT;
    const size_t row_blocks = bnb4_div_up(a.N, RB);
    const size_t steps = bnb4_div_up(a.K, 128 * CH);
    const size_t target = (size_t)((double)s->sm_count * ctas_per_sm * mma_tuning(0)); /* CTAs wanted */
    size_t splits = row_blocks >= target ? 1 : bnb4_div_up(target, row_blocks);
    const size_t min_steps = (size_t)mma_tuning(1); /* steps per CTA, to fill the pipeline */
    const size_t max_splits = steps >= 2 * min_steps ? steps / min_steps : 1;
    if (splits > max_splits)
        splits = max_splits;
    const size_t per = bnb4_div_up(steps, splits);
    splits = bnb4_div_up(steps, per);
    if (row_blocks > (size_t)INT32_MAX || splits > 65535)
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_gemm: %zu rows are too many for one launch", a.N);
    a.steps_per_split = (int)per;
    a.splits = (int)splits;
    if (splits > 1) {
        const bnb4_status st = bnb4_cuda_splitk(s, row_blocks, splits * a.M * a.N * sizeof(float), &a.counters, &a.ws);
        if (st != BNB4_OK)
            return st;
    }
    gemm_4bit_mma_kernel<T, NT, NESTED, CH><<<dim3((unsigned)row_blocks, (unsigned)splits), THREADS, 0, s->stream>>>(a);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_gemm (mma)");
}

/* Chunks per row and step for m <= 16: 2 for plain absmax, 1 for nested (its extra registers cost
 * more occupancy than the wider step gains; measured on H100, docs/performance.md).
 * BNB4_CUDA_MMA_CHUNKS=1|2 overrides both (for measuring). */
int g_mma_chunks = -1;
int mma_chunks(bool nested) {
    if (g_mma_chunks < 0) {
        const char *e = getenv("BNB4_CUDA_MMA_CHUNKS");
        g_mma_chunks = e && (e[0] == '1' || e[0] == '2') ? e[0] - '0' : 0;
    }
    return g_mma_chunks ? g_mma_chunks : nested ? 1 : 2;
}

template <typename T, bool NESTED> bnb4_status launch_mma_m(bnb4_cuda_state *s, const GemmArgs &a) {
    const bool wide = mma_chunks(NESTED) == 2;
    if (a.M <= 8)
        return wide ? launch_mma<T, 1, NESTED, 2>(s, a) : launch_mma<T, 1, NESTED, 1>(s, a);
    if (a.M <= 16)
        return wide ? launch_mma<T, 2, NESTED, 2>(s, a) : launch_mma<T, 2, NESTED, 1>(s, a);
    return launch_mma<T, 4, NESTED, 1>(s, a);
}

template <typename T> bnb4_status launch_simt(bnb4_cuda_state *s, const GemmArgs &a, int vec_ok) {
    const unsigned ctas = (unsigned)bnb4_div_up(a.N, kSimtWarps);
    if (a.M <= 1)
        gemm_4bit_simt_kernel<T, 1><<<ctas, kSimtWarps * 32, 0, s->stream>>>(a, vec_ok);
    else if (a.M <= 4)
        gemm_4bit_simt_kernel<T, 4><<<ctas, kSimtWarps * 32, 0, s->stream>>>(a, vec_ok);
    else
        gemm_4bit_simt_kernel<T, 16><<<ctas, kSimtWarps * 32, 0, s->stream>>>(a, vec_ok);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_gemm (simt)");
}

} // namespace

bnb4_cuda_gemm_path bnb4_cuda_pick_gemm(const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x) {
    /* m = 1: stream the weights on CUDA cores (any dtype; see BNB4_CUDA_GEMV_MAX_M for when) */
    if (bnb4_cuda_gemv_fits(w, dt, m, x))
        return BNB4_CUDA_GEMM_GEMV;
    if (bnb4_cuda_pipe_fits(w, dt, m, x))
        return BNB4_CUDA_GEMM_PIPE;
    const int fast_layout = w->cols % 32 == 0 && bnb4_aligned(w->packed, 16) && bnb4_aligned(x, 16);
    if (dt != BNB4_F32 && fast_layout && m <= BNB4_CUDA_MMA_MAX_M)
        return BNB4_CUDA_GEMM_MMA;
    if (m <= BNB4_CUDA_SIMT_MAX_M)
        return BNB4_CUDA_GEMM_SIMT;
    return BNB4_CUDA_GEMM_DEQUANT_BLAS;
}

bnb4_status bnb4_cuda_gemm_mma(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                               const void *bias, void *y) {
    const GemmArgs a = args_of(w, m, x, bias, y);
    const bool nested = w->absmax == NULL;
    if (dt == BNB4_F16)
        return nested ? launch_mma_m<__half, true>(s, a) : launch_mma_m<__half, false>(s, a);
    return nested ? launch_mma_m<__nv_bfloat16, true>(s, a) : launch_mma_m<__nv_bfloat16, false>(s, a);
}

bnb4_status bnb4_cuda_gemm_simt(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                                const void *bias, void *y) {
    if (bnb4_div_up(w->rows, kSimtWarps) > (size_t)INT32_MAX)
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_gemm: %zu rows are too many for one launch", w->rows);
    const GemmArgs a = args_of(w, m, x, bias, y);
    const size_t es = bnb4_dtype_size(dt);
    const int vec_ok = w->cols % 32 == 0 && bnb4_aligned(w->packed, 16) && bnb4_aligned(x, es);
    switch (dt) {
    case BNB4_F16:
        return launch_simt<__half>(s, a, vec_ok);
    case BNB4_BF16:
        return launch_simt<__nv_bfloat16>(s, a, vec_ok);
    default:
        return launch_simt<float>(s, a, vec_ok);
    }
}

/* ---- cuBLAS, loaded on first use ------------------------------------------------------------------ */
namespace {
struct BlasApi {
    bool ok;
    decltype(&cublasCreate_v2) create;
    decltype(&cublasDestroy_v2) destroy;
    decltype(&cublasSetStream_v2) set_stream;
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int, const void *,
                              const void *, cudaDataType, int, const void *, cudaDataType, int, const void *, void *,
                              cudaDataType, int, cublasComputeType_t, cublasGemmAlgo_t);
};
BlasApi g_blas;
pthread_once_t g_blas_once = PTHREAD_ONCE_INIT;
#define BNB4_STR2(x) #x
#define BNB4_STR(x) BNB4_STR2(x)
void load_blas() {
    const char *names[] = {"libcublas.so." BNB4_STR(CUBLAS_VER_MAJOR), "libcublas.so"};
    void *lib = NULL;
    for (const char *name : names)
        if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)) != NULL)
            break;
    if (!lib)
        return;
    g_blas.create = (decltype(g_blas.create))dlsym(lib, "cublasCreate_v2");
    g_blas.destroy = (decltype(g_blas.destroy))dlsym(lib, "cublasDestroy_v2");
    g_blas.set_stream = (decltype(g_blas.set_stream))dlsym(lib, "cublasSetStream_v2");
    g_blas.gemm_ex = (decltype(g_blas.gemm_ex))dlsym(lib, "cublasGemmEx");
    g_blas.ok = g_blas.create && g_blas.destroy && g_blas.set_stream && g_blas.gemm_ex;
}
bool blas_available() {
    pthread_once(&g_blas_once, load_blas);
    return g_blas.ok;
}
} // namespace

void bnb4_cuda_blas_destroy(void *handle) {
    if (handle && blas_available())
        g_blas.destroy((cublasHandle_t)handle);
}

bnb4_status bnb4_cuda_gemm_dequant_blas(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m,
                                        const void *x, const void *bias, void *y) {
    static const char fn[] = "bnb4_gemm (dequantize + cuBLAS)";
    const size_t N = w->rows, K = w->cols, es = bnb4_dtype_size(dt);
    if (!blas_available() || N > INT32_MAX || K > INT32_MAX || m > INT32_MAX) {
        /* No cuBLAS here (or sizes it cannot take): the SIMT kernel, BNB4_CUDA_SIMT_MAX_M rows at a time. */
        for (size_t r0 = 0; r0 < m; r0 += BNB4_CUDA_SIMT_MAX_M) {
            const size_t rows = m - r0 < BNB4_CUDA_SIMT_MAX_M ? m - r0 : BNB4_CUDA_SIMT_MAX_M;
            const bnb4_status st = bnb4_cuda_gemm_simt(s, w, dt, rows, (const uint8_t *)x + r0 * K * es, bias,
                                                       (uint8_t *)y + r0 * N * es);
            if (st != BNB4_OK)
                return st;
        }
        return BNB4_OK;
    }
    if (!s->cublas) {
        cublasHandle_t h;
        if (g_blas.create(&h) != CUBLAS_STATUS_SUCCESS)
            return bnb4_fail(BNB4_ERR_DEVICE, "%s: cublasCreate failed", fn);
        s->cublas = h;
    }
    cublasHandle_t h = (cublasHandle_t)s->cublas;
    if (g_blas.set_stream(h, s->stream) != CUBLAS_STATUS_SUCCESS)
        return bnb4_fail(BNB4_ERR_DEVICE, "%s: cublasSetStream failed", fn);
    void *wd = NULL;
    bnb4_status st = bnb4_cuda_alloc(s, N * K * es, &wd, fn);
    if (st != BNB4_OK)
        return st;
    st = bnb4_cuda_launch_dequantize(s, w, dt, wd);
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
    bnb4_cuda_free(s, wd);
    return st;
}
