/*
 * cuda_quantize.cu - 4-bit blockwise quantize and the 8-bit nested quantize of absmax, byte-identical
 * to bitsandbytes' kQuantizeBlockwise(Small) and to src/ref/bnb4_ref.c (the spec followed here line by
 * line: running fmaxf of |ftz(x)| from -FLT_MAX, a partial last block reduced over its padding zeros,
 * x * rcp.approx(absmax) with mul.ftz, strict threshold comparisons, the padding zero's code in an odd
 * n's last low nibble).
 *
 * quantize_4bit: a group of BS/8 threads owns one block; each thread loads 8 consecutive elements
 * (16-byte loads), the group reduces absmax with shuffles (and shared memory past one warp), and each
 * thread writes its 8 codes as one 32-bit word. Bandwidth-bound: one read of the input, one write of
 * the output.
 */
#include <float.h>

#include "cuda_common.cuh"

namespace {

constexpr int kQuantThreads = 256;

__constant__ float c_nf4_thresholds[16] = {BNB4_NF4_THRESHOLDS, 0.0f};
__constant__ float c_fp4_thresholds[16] = {BNB4_FP4_THRESHOLDS};
__constant__ float c_nested_code[256] = {BNB4_NESTED_CODE_VALUES};

template <typename T> struct Load8;
template <> struct Load8<float> {
    static __device__ __forceinline__ void run(const float *p, float v[8]) {
        const float4 a = __ldg(reinterpret_cast<const float4 *>(p));
        const float4 b = __ldg(reinterpret_cast<const float4 *>(p) + 1);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    }
};
template <typename H> struct Load8Half {
    static __device__ __forceinline__ void run(const H *p, float v[8]) {
        const uint4 a = __ldg(reinterpret_cast<const uint4 *>(p));
        const uint32_t w[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            v[2 * i] = bnb4_dt<H>::to_f32(bnb4_dt<H>::from_bits((uint16_t)(w[i] & 0xffffu)));
            v[2 * i + 1] = bnb4_dt<H>::to_f32(bnb4_dt<H>::from_bits((uint16_t)(w[i] >> 16)));
        }
    }
};
template <> struct Load8<__half> : Load8Half<__half> {};
template <> struct Load8<__nv_bfloat16> : Load8Half<__nv_bfloat16> {};

template <int QT> __device__ __forceinline__ unsigned encode4(float xn, const float *t) {
    return QT == BNB4_NF4 ? bnb4_dev_nf4_encode(xn, t) : bnb4_dev_fp4_encode(xn, t);
}

/* Group size G = BS/8 threads. G <= 32: shuffles within the aligned lane group; G > 32: the group's
 * warps reduce through shared memory. Each group handles kQuantUnroll blocks, loaded before any is
 * reduced, so every thread keeps several 16-byte loads in flight. */
constexpr int kQuantUnroll = 4;

template <typename T, int BS, int QT>
__global__ void __launch_bounds__(BS / 8 > kQuantThreads ? BS / 8 : kQuantThreads)
    quantize_4bit_kernel(const T *__restrict__ src, size_t n, int vec_ok, uint8_t *__restrict__ packed,
                         float *__restrict__ absmax, size_t nblocks) {
    constexpr int G = BS / 8;
    constexpr int CTA = G > kQuantThreads ? G : kQuantThreads;
    constexpr int GROUPS = CTA / G;
    constexpr int U = kQuantUnroll;
    __shared__ float thr[16];
    __shared__ float warp_max[U][CTA / 32];
    if (threadIdx.x < 16)
        thr[threadIdx.x] = QT == BNB4_NF4 ? c_nf4_thresholds[threadIdx.x] : c_fp4_thresholds[threadIdx.x];
    const int tig = threadIdx.x % G;
    size_t block[U], begin[U];
    bool live[U];
    float v[U][8];
    float amax[U];
#pragma unroll
    for (int u = 0; u < U; u++) {
        block[u] = ((size_t)blockIdx.x * U + u) * GROUPS + threadIdx.x / G;
        live[u] = block[u] < nblocks;
        begin[u] = block[u] * BS + (size_t)tig * 8;
        amax[u] = -FLT_MAX;
        if (live[u] && vec_ok && begin[u] + 8 <= n) {
            Load8<T>::run(src + begin[u], v[u]);
        } else {
#pragma unroll
            for (int i = 0; i < 8; i++) /* elements past n are the kernel's padding zeros: they take part */
                v[u][i] = live[u] && begin[u] + i < n ? bnb4_dt<T>::to_f32(src[begin[u] + i]) : 0.0f;
        }
    }
#pragma unroll
    for (int u = 0; u < U; u++) {
#pragma unroll
        for (int i = 0; i < 8; i++)
            amax[u] = fmaxf(amax[u], bnb4_dev_abs_ftz(v[u][i]));
#pragma unroll
        for (int off = (G < 32 ? G : 32) / 2; off > 0; off /= 2)
            amax[u] = fmaxf(amax[u], __shfl_xor_sync(0xffffffffu, amax[u], off));
        if (G > 32 && threadIdx.x % 32 == 0)
            warp_max[u][threadIdx.x / 32] = amax[u];
    }
    __syncthreads(); /* thresholds (and warp maxima) visible */
#pragma unroll
    for (int u = 0; u < U; u++) {
        if (G > 32) { /* the warps of this thread's group only (a CTA may hold several groups) */
            const int w0 = (threadIdx.x / G) * (G / 32);
            amax[u] = warp_max[u][w0];
#pragma unroll
            for (int i = 1; i < G / 32; i++)
                amax[u] = fmaxf(amax[u], warp_max[u][w0 + i]);
        }
        if (!live[u] || begin[u] >= n + (n & 1)) /* nothing of this thread's 8 elements is stored */
            continue;
        if (tig == 0)
            absmax[block[u]] = amax[u];
        const float inv = bnb4_dev_rcp_approx(amax[u]);
        uint32_t word = 0;
#pragma unroll
        for (int i = 0; i < 8; i += 2) {
            const unsigned hi = encode4<QT>(bnb4_dev_mul_ftz(v[u][i], inv), thr);
            const unsigned lo = encode4<QT>(bnb4_dev_mul_ftz(v[u][i + 1], inv), thr);
            word |= ((hi << 4) | lo) << (4 * i);
        }
        uint8_t *out = packed + begin[u] / 2;
        if (vec_ok && begin[u] + 8 <= n) {
            *reinterpret_cast<uint32_t *>(out) = word;
        } else {
            const size_t bytes = (n + 1) / 2 - begin[u] / 2; /* bytes of this chunk that exist */
            for (size_t i = 0; i < 4 && i < bytes; i++)
                out[i] = (uint8_t)(word >> (8 * i));
        }
    }
}

template <typename T, int QT>
bnb4_status launch_quantize_bs(bnb4_cuda_state *s, const T *src, size_t n, size_t bs, uint8_t *packed, float *absmax) {
    const size_t nblocks = bnb4_div_up(n, bs);
    const int vec_ok = bnb4_aligned(src, 16) && bnb4_aligned(packed, 4);
#define BNB4_QUANT_CASE(BS)                                                                                     \
    case BS: {                                                                                                  \
        constexpr int G = BS / 8, CTA = G > kQuantThreads ? G : kQuantThreads, GROUPS = CTA / G;                \
        quantize_4bit_kernel<T, BS, QT><<<(unsigned)bnb4_div_up(nblocks, GROUPS * kQuantUnroll), CTA, 0,          \
                                          s->stream>>>(                                                         \
            src, n, vec_ok, packed, absmax, nblocks);                                                           \
        break;                                                                                                  \
    }
    switch (bs) {
        BNB4_QUANT_CASE(32)
        BNB4_QUANT_CASE(64)
        BNB4_QUANT_CASE(128)
        BNB4_QUANT_CASE(256)
        BNB4_QUANT_CASE(512)
        BNB4_QUANT_CASE(1024)
        BNB4_QUANT_CASE(2048)
        BNB4_QUANT_CASE(4096)
    default:
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_quantize: blocksize %zu", bs);
    }
#undef BNB4_QUANT_CASE
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_quantize");
}

template <typename T>
bnb4_status launch_quantize_t(bnb4_cuda_state *s, const T *src, size_t n, size_t bs, bnb4_quant_type qt,
                              uint8_t *packed, float *absmax) {
    return qt == BNB4_NF4 ? launch_quantize_bs<T, BNB4_NF4>(s, src, n, bs, packed, absmax)
                          : launch_quantize_bs<T, BNB4_FP4>(s, src, n, bs, packed, absmax);
}

/* ---- nested (8-bit) quantize of absmax - offset ----------------------------------------------------
 * dQuantize<0> of bitsandbytes, restated from bnb4_ref.c: a 7-step binary search over the 256-entry
 * signed dynamic map that remembers the last entries seen below and above x, then a midpoint test
 * (add.ftz, mul.ftz by 0.5) between the final pivot and the bracketing entry on x's side. */
__device__ __forceinline__ float add_ftz(float a, float b) {
    float r;
    asm("add.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
    return r;
}

__device__ __forceinline__ uint8_t quantize_8bit(const float *code, float x) {
    int pivot = 127, upper_pivot = 255, lower_pivot = 0;
    float lower = -1.0f, upper = 1.0f;
    float val = code[pivot];
    for (int step = 64; step > 0; step >>= 1) {
        if (x > val) {
            lower_pivot = pivot;
            lower = val;
            pivot += step;
        } else {
            upper_pivot = pivot;
            upper = val;
            pivot -= step;
        }
        val = code[pivot];
    }
    if (upper_pivot == 255)
        upper = code[upper_pivot];
    if (lower_pivot == 0)
        lower = code[lower_pivot];
    if (x > val)
        return (uint8_t)(x > bnb4_dev_mul_ftz(add_ftz(upper, val), 0.5f) ? upper_pivot : pivot);
    return (uint8_t)(x < bnb4_dev_mul_ftz(add_ftz(lower, val), 0.5f) ? lower_pivot : pivot);
}

constexpr int kNestedThreads = 256;

/* One CTA per nested block (any nested blocksize): reduce, then encode. */
__global__ void __launch_bounds__(kNestedThreads)
    quantize_nested_kernel(const float *__restrict__ absmax, size_t nblocks, float offset, size_t nbs,
                           uint8_t *__restrict__ codes, float *__restrict__ nested_absmax) {
    __shared__ float code[256];
    __shared__ float warp_max[kNestedThreads / 32];
    for (int i = threadIdx.x; i < 256; i += kNestedThreads)
        code[i] = c_nested_code[i];
    const size_t begin = (size_t)blockIdx.x * nbs;
    const size_t end = nblocks - begin < nbs ? nblocks : begin + nbs;
    float amax = end - begin < nbs ? 0.0f : -FLT_MAX;
    for (size_t i = begin + threadIdx.x; i < end; i += kNestedThreads)
        amax = fmaxf(amax, bnb4_dev_abs_ftz(__fsub_rn(absmax[i], offset)));
    for (int off = 16; off > 0; off /= 2)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
    if (threadIdx.x % 32 == 0)
        warp_max[threadIdx.x / 32] = amax;
    __syncthreads();
    amax = warp_max[0];
    for (int i = 1; i < kNestedThreads / 32; i++)
        amax = fmaxf(amax, warp_max[i]);
    if (threadIdx.x == 0)
        nested_absmax[blockIdx.x] = amax;
    const float inv = bnb4_dev_rcp_approx(amax);
    for (size_t i = begin + threadIdx.x; i < end; i += kNestedThreads)
        codes[i] = quantize_8bit(code, bnb4_dev_mul_ftz(__fsub_rn(absmax[i], offset), inv));
}

/* Deterministic float64 sum: one CTA, fixed per-thread strides, fixed tree. */
__global__ void __launch_bounds__(1024) nested_sum_kernel(const float *__restrict__ absmax, size_t n, double *out) {
    __shared__ double part[32];
    double acc = 0.0;
    for (size_t i = threadIdx.x; i < n; i += blockDim.x)
        acc += (double)absmax[i];
    for (int off = 16; off > 0; off /= 2)
        acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (threadIdx.x % 32 == 0)
        part[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        double total = 0.0;
        for (unsigned i = 0; i < blockDim.x / 32; i++)
            total += part[i];
        *out = total;
    }
}

} // namespace

bnb4_status bnb4_cuda_launch_quantize(bnb4_cuda_state *s, const void *src, bnb4_dtype dt, size_t n, size_t bs,
                                      bnb4_quant_type qt, uint8_t *packed, float *absmax) {
    if (bnb4_div_up(n, bs) > (size_t)INT32_MAX * 8) /* grid.x limit (2^31 - 1 CTAs) */
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_quantize: n = %zu is too large for one launch", n);
    switch (dt) {
    case BNB4_F16:
        return launch_quantize_t(s, (const __half *)src, n, bs, qt, packed, absmax);
    case BNB4_BF16:
        return launch_quantize_t(s, (const __nv_bfloat16 *)src, n, bs, qt, packed, absmax);
    default:
        return launch_quantize_t(s, (const float *)src, n, bs, qt, packed, absmax);
    }
}

bnb4_status bnb4_cuda_launch_quantize_nested(bnb4_cuda_state *s, const float *absmax, size_t nblocks, float offset,
                                             size_t nbs, uint8_t *codes, float *nested_absmax) {
    const size_t groups = bnb4_div_up(nblocks, nbs);
    if (groups > (size_t)INT32_MAX)
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_quantize_nested: %zu nested blocks in one launch", groups);
    quantize_nested_kernel<<<(unsigned)groups, kNestedThreads, 0, s->stream>>>(absmax, nblocks, offset, nbs, codes,
                                                                               nested_absmax);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_quantize_nested");
}

bnb4_status bnb4_cuda_launch_nested_sum(bnb4_cuda_state *s, const float *absmax, size_t nblocks, double *sum_dev) {
    nested_sum_kernel<<<1, 1024, 0, s->stream>>>(absmax, nblocks, sum_dev);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_nested_offset");
}
