/*
 * cuda_dequantize.cu - 4-bit dequantize and the decode of nested absmax, bit-identical to the CPU
 * reference: out = dtype(mul.ftz(code[nibble], scale)) with round-to-nearest-even, where the scale of
 * a nested tensor is f32(f32(code8[q] * nested_absmax) + offset) (the multiply flushes, the add is IEEE).
 *
 * Each thread writes 16 bytes of output (4 float32 or 8 halves) with one vector store, so a warp's
 * store is 512 contiguous bytes; it reads the 2 or 4 packed bytes it needs and one scale (a thread's
 * elements never straddle a block: blocks are multiples of 32 elements). Four such chunks per thread
 * are loaded before any is stored, to keep enough reads in flight. Misaligned pointers and the tail
 * take an element-wise path.
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
    const float dq = bnb4_dev_mul_ftz(__ldg(sc.nested_code + __ldg(sc.codes + b)),
                                      __ldg(sc.nested_absmax + b / sc.nested_blocksize));
    return __fadd_rn(dq, sc.offset);
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
            scale[u] = __fadd_rn(bnb4_dev_mul_ftz(ncode[q[u]], scale[u]), sc.offset);
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

template <typename T>
bnb4_status launch_dequantize(bnb4_cuda_state *s, const bnb4_qtensor *q, T *dst) {
    const size_t n = q->rows * q->cols;
    constexpr int E = Pack16<T>::E;
    const int vec_ok = bnb4_aligned(dst, 16) && bnb4_aligned(q->packed, E / 2);
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
