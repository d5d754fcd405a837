/*
 * cuda_dequantize.cu - 4-bit dequantize and the decode of nested absmax, bit-identical to the CPU
 * reference: out = dtype(mul.ftz(code[nibble], scale)) with round-to-nearest-even, where the scale of
 * a nested tensor is f32(f32(code8[q] * nested_absmax) + offset) (the multiply flushes, the add is IEEE).
 *
 * Each thread writes 16 bytes of output (4 float32 or 8 halves) with one vector store, so a warp's
 * store is 512 contiguous bytes; it reads the 2 or 4 packed bytes it needs and one scale (a thread's
 * elements never straddle a block: blocks are multiples of 32 elements). Four such chunks per thread
 * are loaded before any is stored, to keep enough reads in flight. Two kernels, same bits:
 *  - dequantize_4bit_vec_kernel, the fast path (aligned pointers; plain absmax or a power-of-two nested
 *    blocksize): block indices by shifts, the nested map copied after the tile's loads are issued.
 *    H200, 2026-11-28, bench_cuda --conv, f16 NF4 bs64, of copy bandwidth (4096x4096, 14336x4096,
 *    4096x14336, 28672x8192): plain 0.97 / 0.97 / 0.97 / 1.01 (was 0.89-1.00), nested 0.95 / 0.96 /
 *    0.96 / 1.01 (was 0.71-0.85).
 *  - dequantize_4bit_kernel, the general path (misaligned pointers, a nested blocksize that is not a power
 *    of two); its tail and misaligned chunks go element by element.
 * Tried and dropped: a persistent vec kernel (slower, 0.89-0.93) and streaming stores on it (no gain).
 */
#include "cuda_common.cuh"

namespace {

__constant__ float c_nf4_code[16] = {BNB4_NF4_CODEBOOK_VALUES};
__constant__ float c_fp4_code[16] = {BNB4_FP4_CODEBOOK_VALUES};

struct Scales {
    const float *absmax;       /* plain, or NULL */
    const uint8_t *codes;      /* nested */
    const float *nested_absmax;
    const float *nested_code;
    float offset;
    size_t nested_blocksize;
};

__device__ __forceinline__ float block_scale(const Scales &sc, size_t b) {
    if (sc.absmax)
        return __ldg(sc.absmax + b);
    return bnb4_dev_nested_scale(__ldg(sc.nested_code + __ldg(sc.codes + b)),
                                 __ldg(sc.nested_absmax + b / sc.nested_blocksize), sc.offset);
}

constexpr int kThreads = 256;
constexpr int kUnroll = 4;

template <typename T> struct Pack16;
template <> struct Pack16<float> { /* 4 elements, 2 packed bytes */
    static constexpr int E = 4;
    static __device__ __forceinline__ void store(float *dst, const float v[4]) {
        *reinterpret_cast<float4 *>(dst) = make_float4(v[0], v[1], v[2], v[3]);
    }
};
template <typename H> struct Pack16Half { /* 8 elements, 4 packed bytes */
    static constexpr int E = 8;
    static __device__ __forceinline__ void store(H *dst, const float v[8]) {
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            w[i] = (uint32_t)bnb4_dt<H>::bits(bnb4_dt<H>::from_f32(v[2 * i])) |
                   ((uint32_t)bnb4_dt<H>::bits(bnb4_dt<H>::from_f32(v[2 * i + 1])) << 16);
        }
        *reinterpret_cast<uint4 *>(dst) = make_uint4(w[0], w[1], w[2], w[3]);
    }
};
template <> struct Pack16<__half> : Pack16Half<__half> {};
template <> struct Pack16<__nv_bfloat16> : Pack16Half<__nv_bfloat16> {};

/* The general path: any alignment, any nested blocksize (block indices by 64-bit division). */
template <typename T>
__global__ void __launch_bounds__(kThreads, 4) /* (without the 4, nvcc 13 caps it at 32 registers and spills) */
    dequantize_4bit_kernel(const uint8_t *__restrict__ packed, Scales sc, size_t n, size_t blocksize, int qt,
                           int vec_ok, T *__restrict__ dst) {
    constexpr int E = Pack16<T>::E;
    __shared__ float code[16];
    __shared__ float ncode[256]; /* nested: the 8-bit map, so decoding a scale is one dependent load less */
    if (threadIdx.x < 16)
        code[threadIdx.x] = qt == BNB4_NF4 ? c_nf4_code[threadIdx.x] : c_fp4_code[threadIdx.x];
    if (!sc.absmax)
        for (int i = threadIdx.x; i < 256; i += kThreads)
            ncode[i] = __ldg(sc.nested_code + i);
    const size_t tile = (size_t)blockIdx.x * (kThreads * kUnroll);
    uint32_t bits[kUnroll];
    float scale[kUnroll];
    unsigned q[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; u++) { /* every load of the tile first, then the math */
        const size_t first = (tile + (size_t)u * kThreads + threadIdx.x) * E;
        bits[u] = 0;
        scale[u] = 0.0f;
        q[u] = 0;
        if (vec_ok && first + E <= n) {
            bits[u] = E == 8 ? __ldg(reinterpret_cast<const uint32_t *>(packed + first / 2))
                             : __ldg(reinterpret_cast<const uint16_t *>(packed + first / 2));
            const size_t b = first / blocksize;
            if (sc.absmax) {
                scale[u] = __ldg(sc.absmax + b);
            } else {
                q[u] = __ldg(sc.codes + b);
                scale[u] = __ldg(sc.nested_absmax + b / sc.nested_blocksize);
            }
        }
    }
    __syncthreads();
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
        const size_t first = (tile + (size_t)u * kThreads + threadIdx.x) * E;
        if (first >= n)
            continue;
        if (!sc.absmax) /* as block_scale(), with the map from shared memory */
            scale[u] = bnb4_dev_nested_scale(ncode[q[u]], scale[u], sc.offset);
        if (vec_ok && first + E <= n) {
            float v[E];
#pragma unroll
            for (int i = 0; i < E; i += 2) { /* byte i/2: element i in the high nibble */
                const unsigned byte = (bits[u] >> (4 * i)) & 0xffu;
                v[i] = bnb4_dev_mul_ftz(code[byte >> 4], scale[u]);
                v[i + 1] = bnb4_dev_mul_ftz(code[byte & 15u], scale[u]);
            }
            Pack16<T>::store(dst + first, v);
        } else {
            for (size_t i = first; i < first + E && i < n; i++)
                dst[i] = bnb4_dt<T>::from_f32(
                    bnb4_dev_mul_ftz(code[bnb4_nibble_at(packed, i)], block_scale(sc, i / blocksize)));
        }
    }
}

__global__ void dequantize_nested_kernel(Scales sc, size_t nblocks, float *__restrict__ out) {
    const size_t b = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (b < nblocks)
        out[b] = block_scale(sc, b);
}

Scales scales_of(const bnb4_qtensor *q) {
    Scales sc;
    sc.absmax = q->absmax;
    sc.codes = q->nested.codes;
    sc.nested_absmax = q->nested.absmax;
    sc.nested_code = q->nested.code;
    sc.offset = q->nested.offset;
    sc.nested_blocksize = q->nested.blocksize;
    return sc;
}

/* ---- dequantize_4bit_vec_kernel: the fast path (aligned, plain or power-of-two nested blocksize) --------
 * The same chunks and stores as dequantize_4bit_kernel (a warp stores 512 contiguous bytes, one tile per
 * CTA), without what makes that one slow, with nested absmax most:
 *  - block and nested-block indices are shifts (blocksizes are powers of two; a nested blocksize that is
 *    not, which bitsandbytes never writes, takes the kernel above): the kernel above divides two size_t
 *    per chunk (the 64-bit division subroutine: ~20 instructions per chunk for plain, twice for nested);
 *  - the nested map is copied to shared memory after the tile's loads are issued: above, the copy comes
 *    first and each warp waits at its STS for the map's load before issuing any tile load, so every CTA
 *    pays an L2 round trip and then a DRAM round trip in series.
 * Misaligned pointers take the kernel above. */
template <bool NESTED> struct DqLoad { /* one chunk's loads */
    uint32_t bits;
    float s; /* plain: absmax; nested: nested_absmax */
    uint32_t q;
};

template <typename T, bool NESTED>
__device__ __forceinline__ void dq_load1(const uint8_t *__restrict__ packed, const Scales &sc, int bs_log2, int nbs_log2,
                                         size_t first, DqLoad<NESTED> &r) {
    constexpr int E = Pack16<T>::E;
    r.bits = E == 8 ? __ldg(reinterpret_cast<const uint32_t *>(packed + first / 2))
                    : __ldg(reinterpret_cast<const uint16_t *>(packed + first / 2));
    const size_t b = first >> bs_log2;
    if (NESTED) {
        r.q = __ldg(sc.codes + b);
        r.s = __ldg(sc.nested_absmax + (b >> nbs_log2));
    } else {
        r.s = __ldg(sc.absmax + b);
        r.q = 0;
    }
}

/* The loads of this thread's U chunks of tile `tile`; a chunk that is not whole is left to dq_store. */
template <typename T, bool NESTED, int U>
__device__ __forceinline__ void dq_load(const uint8_t *__restrict__ packed, const Scales &sc, size_t n, int bs_log2,
                                        int nbs_log2, size_t tile, DqLoad<NESTED> (&r)[U]) {
    constexpr int E = Pack16<T>::E;
    const size_t first0 = (tile * U * kThreads + threadIdx.x) * E;
    if (first0 + ((size_t)(U - 1) * kThreads + 1) * E <= n) { /* every chunk of this thread is whole */
#pragma unroll
        for (int u = 0; u < U; u++)
            dq_load1<T, NESTED>(packed, sc, bs_log2, nbs_log2, first0 + (size_t)u * kThreads * E, r[u]);
    } else {
#pragma unroll
        for (int u = 0; u < U; u++) {
            const size_t first = first0 + (size_t)u * kThreads * E;
            r[u].bits = 0;
            r[u].s = 0.0f;
            r[u].q = 0;
            if (first + E <= n)
                dq_load1<T, NESTED>(packed, sc, bs_log2, nbs_log2, first, r[u]);
        }
    }
}

template <typename T, bool NESTED, int U>
__device__ __forceinline__ void dq_store(const uint8_t *__restrict__ packed, const Scales &sc, size_t n, int bs_log2,
                                         size_t tile, const DqLoad<NESTED> (&r)[U], const float *code,
                                         const float *ncode, T *__restrict__ dst) {
    constexpr int E = Pack16<T>::E;
    const size_t first0 = (tile * U * kThreads + threadIdx.x) * E;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const size_t first = first0 + (size_t)u * kThreads * E;
        if (first + E <= n) {
            const float scale = NESTED ? bnb4_dev_nested_scale(ncode[r[u].q], r[u].s, sc.offset) : r[u].s;
            float v[E];
#pragma unroll
            for (int i = 0; i < E; i += 2) { /* byte i/2: element i in the high nibble */
                const unsigned byte = (r[u].bits >> (4 * i)) & 0xffu;
                v[i] = bnb4_dev_mul_ftz(code[byte >> 4], scale);
                v[i + 1] = bnb4_dev_mul_ftz(code[byte & 15u], scale);
            }
            Pack16<T>::store(dst + first, v);
        } else if (first < n) {
            for (size_t i = first; i < n; i++)
                dst[i] = bnb4_dt<T>::from_f32(bnb4_dev_mul_ftz(code[bnb4_nibble_at(packed, i)], block_scale(sc, i >> bs_log2)));
        }
    }
}

template <typename T, bool NESTED, int U>
__global__ void __launch_bounds__(kThreads, 4)
    dequantize_4bit_vec_kernel(const uint8_t *__restrict__ packed, Scales sc, size_t n, int bs_log2, int nbs_log2,
                               int qt, T *__restrict__ dst) {
    __shared__ float code[16];
    __shared__ float ncode[NESTED ? 256 : 1];
    DqLoad<NESTED> a[U];
    const size_t tile = blockIdx.x;
    dq_load<T, NESTED, U>(packed, sc, n, bs_log2, nbs_log2, tile, a); /* first: the tables wait on L2 */
    if (threadIdx.x < 16)
        code[threadIdx.x] = qt == BNB4_NF4 ? c_nf4_code[threadIdx.x] : c_fp4_code[threadIdx.x];
    static_assert(kThreads == 256, "one map entry per thread");
    if (NESTED)
        ncode[threadIdx.x] = __ldg(sc.nested_code + threadIdx.x);
    __syncthreads();
    dq_store<T, NESTED, U>(packed, sc, n, bs_log2, tile, a, code, ncode, dst);
}

template <typename T, bool NESTED>
bnb4_status launch_dequantize_vec(bnb4_cuda_state *s, const bnb4_qtensor *q, T *dst) {
    constexpr int U = 4, E = Pack16<T>::E;
    const size_t n = q->rows * q->cols;
    const size_t ctas = bnb4_div_up(bnb4_div_up(n, E), (size_t)kThreads * U);
    if (ctas > (size_t)INT32_MAX)
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_dequantize: %zu elements are too many for one launch", n);
    const int nbs_log2 = NESTED ? bnb4_log2_ceil(q->nested.blocksize) : 0;
    dequantize_4bit_vec_kernel<T, NESTED, U><<<(unsigned)ctas, kThreads, 0, s->stream>>>(
        q->packed, scales_of(q), n, bnb4_log2_ceil(q->blocksize), nbs_log2, (int)q->quant_type, dst);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_dequantize");
}

template <typename T>
bnb4_status launch_dequantize(bnb4_cuda_state *s, const bnb4_qtensor *q, T *dst) {
    const size_t n = q->rows * q->cols;
    constexpr int E = Pack16<T>::E;
    const int vec_ok = bnb4_aligned(dst, 16) && bnb4_aligned(q->packed, E / 2);
    const size_t nbs = q->nested.blocksize;
    if (vec_ok && (q->absmax || (nbs & (nbs - 1)) == 0))
        return q->absmax ? launch_dequantize_vec<T, false>(s, q, dst) : launch_dequantize_vec<T, true>(s, q, dst);
    const size_t ctas = bnb4_div_up(bnb4_div_up(n, E), (size_t)kThreads * kUnroll);
    if (ctas > (size_t)INT32_MAX)
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_dequantize: %zu elements are too many for one launch", n);
    dequantize_4bit_kernel<T><<<(unsigned)ctas, kThreads, 0, s->stream>>>(q->packed, scales_of(q), n, q->blocksize,
                                                                          (int)q->quant_type, vec_ok, dst);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_dequantize");
}

} // namespace

bnb4_status bnb4_cuda_launch_dequantize(bnb4_cuda_state *s, const bnb4_qtensor *q, bnb4_dtype dt, void *dst) {
    switch (dt) {
    case BNB4_F16:
        return launch_dequantize(s, q, (__half *)dst);
    case BNB4_BF16:
        return launch_dequantize(s, q, (__nv_bfloat16 *)dst);
    default:
        return launch_dequantize(s, q, (float *)dst);
    }
}

bnb4_status bnb4_cuda_launch_dequantize_nested(bnb4_cuda_state *s, const bnb4_qtensor *q, float *absmax) {
    const size_t nblocks = bnb4_div_up(q->rows * q->cols, q->blocksize);
    const size_t ctas = bnb4_div_up(nblocks, 256);
    if (ctas > (size_t)INT32_MAX)
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_dequantize_nested: too many blocks for one launch");
    dequantize_nested_kernel<<<(unsigned)ctas, 256, 0, s->stream>>>(scales_of(q), nblocks, absmax);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_dequantize_nested");
}
