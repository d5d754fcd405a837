/*
 * cuda_quantize.cu - 4-bit blockwise quantize and the 8-bit nested quantize of absmax, byte-identical
 * to bitsandbytes' kQuantizeBlockwise(Small) and to src/ref/bnb4_ref.c (the spec followed here line by
 * line: running fmaxf of |ftz(x)| from -FLT_MAX, a partial last block reduced over its padding zeros,
 * x * rcp.approx(absmax) with mul.ftz, strict threshold comparisons, the padding zero's code in an odd
 * n's last low nibble).
 *
 * Two 4-bit kernels, same bytes. Bandwidth-bound: one read of the input, one write of the output.
 *  - quantize_4bit_vec_kernel, the fast path (16-byte aligned input, 4-byte aligned output, bs <= 512):
 *    16 elements of a block per thread, NF4 codes from a 32-bucket table, persistent with the next
 *    step's loads in flight. H200, 2026-11-28, bench_cuda --conv, f16 NF4 bs64, of copy bandwidth:
 *    0.79 / 0.94 / 0.95 / 1.04 (4096x4096, 14336x4096, 4096x14336, 28672x8192); was 0.45-0.56.
 *  - quantize_4bit_kernel, the general path (misaligned pointers, bs 1024..4096): BS/8 threads per block,
 *    8 elements per thread.
 * Tried and dropped: the vec kernel with one step per CTA (not persistent), 1-4 % slower (0.76-1.01).
 */
#include <float.h>
#include <string.h>

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

/* The general path: any blocksize, any alignment, any n. A group of G = BS/8 threads owns one block;
 * each thread loads 8 consecutive elements (16-byte loads when aligned), the group reduces absmax
 * (G <= 32: shuffles within the aligned lane group; G > 32: the group's warps through shared memory), and
 * each thread writes its 8 codes as one 32-bit word. Each group handles kQuantUnroll blocks, loaded before
 * any is reduced, so every thread keeps several 16-byte loads in flight. */
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

/* ---- quantize_4bit_vec_kernel: the fast path (aligned, BS <= 512) ------------------------------------
 * Same bytes as quantize_4bit_kernel with about half the instructions per element (~10 instead of ~20 in
 * the f16 NF4 SASS), and the next step's loads in flight while the current one is encoded:
 *  - a thread owns 16 elements of a block (G = BS/16 threads per block; BS <= 512 keeps a group inside one
 *    warp). Its 16-byte chunks c = 0.. sit at (c * G + tig) * 16 bytes, so each load instruction of a group
 *    reads contiguous memory. 16-bit inputs reduce |x| in half2 (HMNMX2 ignores NaN as fmaxf does, is
 *    exact, and no f16 value is an f32 subnormal; a bf16 subnormal maximum is flushed by the final
 *    abs.ftz), then log2(G) shuffles (2 per 16 elements for bs 64; quantize_4bit_kernel: 3 per 8).
 *  - NF4 codes come from a 32-bucket table instead of the 4-level search: J = fma.sat(xn, 15*2^-149,
 *    16*2^-149) is rne(15 xn + 16) as the bits of a subnormal float (NaN -> +0), a monotone function of xn
 *    whose buckets (width 1/15) hold at most one threshold each (the closest two are 0.080 apart), so
 *    code = base[J] + (xn > thr[J]) exactly. Checked on the CPU over every float in [-1.001, 1.001] and
 *    NaN; |xn| <= 1 + 2^-21 because |x| <= absmax, and J stays in 0..31. Each CTA builds the table from
 *    the thresholds with the same instruction, so it cannot disagree with the device arithmetic; base[] is
 *    stored shifted to each nibble position, so a code costs fma, lea, 2 lds, compare, select and an add.
 *    FP4 keeps the search (bnb4_dev_fp4_encode).
 *  - persistent (as many CTAs as fit, grid-stride over steps of BPS blocks), issuing the loads of step
 *    s + grid before encoding step s (two register buffers, the loop unrolled by two so the buffers swap
 *    roles without copies). Only the last step can be partial; it takes the guarded path.
 * Misaligned pointers and BS > 512 take quantize_4bit_kernel. */
constexpr int kVecThreads = 256;
constexpr int kVecElems = 16; /* elements of one block per thread */

struct Nf4Table {
    float thr[32];        /* the threshold inside bucket j, or +inf */
    uint32_t base[8][32]; /* #thresholds below bucket j, shifted to nibble position p */
};

__device__ __forceinline__ unsigned nf4_bucket(float xn) {
    float r;
    asm("fma.rn.sat.f32 %0, %1, %2, %3;" : "=f"(r) : "f"(xn), "f"(__uint_as_float(15u)), "f"(__uint_as_float(16u)));
    return __float_as_uint(r);
}

__device__ __forceinline__ void nf4_table_build(Nf4Table &tab) {
    if (threadIdx.x < 32) {
        const unsigned j = threadIdx.x;
        unsigned below = 0;
        float thr = __uint_as_float(0x7f800000u);
#pragma unroll
        for (int k = 0; k < 15; k++) {
            const unsigned jk = nf4_bucket(c_nf4_thresholds[k]);
            below += jk < j ? 1u : 0u;
            thr = jk == j ? c_nf4_thresholds[k] : thr;
        }
        tab.thr[j] = thr;
#pragma unroll
        for (int p = 0; p < 8; p++)
            tab.base[p][j] = below << (4 * p);
    }
}

/* A thread's 16 elements of one block as NC 16-byte chunks: element e of chunk c as f32, and the max of |x|
 * over all of them (NaN ignored; not flushed: the caller applies abs.ftz to the group's maximum). */
template <typename T> struct Raw16;
template <> struct Raw16<float> {
    static constexpr int CE = 4;
    static __device__ __forceinline__ float get(const uint4 &r, int e) {
        return __uint_as_float(e == 0 ? r.x : e == 1 ? r.y : e == 2 ? r.z : r.w);
    }
    template <int NC> static __device__ __forceinline__ float amax(const uint4 (&r)[NC]) {
        float m = fmaxf(fmaxf(fabsf(get(r[0], 0)), fabsf(get(r[0], 1))), fmaxf(fabsf(get(r[0], 2)), fabsf(get(r[0], 3))));
#pragma unroll
        for (int c = 1; c < NC; c++)
            m = fmaxf(m, fmaxf(fmaxf(fabsf(get(r[c], 0)), fabsf(get(r[c], 1))),
                               fmaxf(fabsf(get(r[c], 2)), fabsf(get(r[c], 3)))));
        return m;
    }
};
template <typename H, typename H2> struct Raw16Half {
    static constexpr int CE = 8;
    static __device__ __forceinline__ float get(const uint4 &r, int e) {
        const uint32_t w = (e >> 1) == 0 ? r.x : (e >> 1) == 1 ? r.y : (e >> 1) == 2 ? r.z : r.w;
        return bnb4_dt<H>::to_f32(bnb4_dt<H>::from_bits((uint16_t)((e & 1) ? w >> 16 : w & 0xffffu)));
    }
    static __device__ __forceinline__ H2 abs2(uint32_t w) {
        H2 v;
        memcpy(&v, &w, 4);
        return __habs2(v);
    }
    template <int NC> static __device__ __forceinline__ float amax(const uint4 (&r)[NC]) {
        H2 m = __hmax2(abs2(r[0].x), abs2(r[0].y));
        m = __hmax2(m, __hmax2(abs2(r[0].z), abs2(r[0].w)));
#pragma unroll
        for (int c = 1; c < NC; c++) {
            m = __hmax2(m, __hmax2(abs2(r[c].x), abs2(r[c].y)));
            m = __hmax2(m, __hmax2(abs2(r[c].z), abs2(r[c].w)));
        }
        return fmaxf(bnb4_dt<H>::to_f32(m.x), bnb4_dt<H>::to_f32(m.y));
    }
};
template <> struct Raw16<__half> : Raw16Half<__half, __half2> {};
template <> struct Raw16<__nv_bfloat16> : Raw16Half<__nv_bfloat16, __nv_bfloat162> {};

/* Nibble position (in 4-bit units) of element e of a chunk: byte e/2, element 2i in the high nibble. */
__device__ __forceinline__ constexpr int nib_pos(int e) { return 2 * (e >> 1) + ((e & 1) ? 0 : 1); }

template <typename T, int QT>
__device__ __forceinline__ uint32_t encode_chunk(const uint4 &r, float inv, const Nf4Table &tab, const float *fp4) {
    constexpr int CE = Raw16<T>::CE;
    uint32_t bases = 0, ups = 0;
#pragma unroll
    for (int e = 0; e < CE; e++) {
        const float xn = bnb4_dev_mul_ftz(Raw16<T>::get(r, e), inv);
        if (QT == BNB4_NF4) {
            const unsigned j = nf4_bucket(xn);
            bases += tab.base[nib_pos(e)][j];
            ups += xn > tab.thr[j] ? 1u << (4 * nib_pos(e)) : 0u;
        } else {
            bases |= bnb4_dev_fp4_encode(xn, fp4) << (4 * nib_pos(e));
        }
    }
    return bases + ups;
}

template <typename T, int BS, int U> struct VecGeom {
    static constexpr int CE = Raw16<T>::CE;
    static constexpr int NC = kVecElems / CE; /* chunks per thread per block */
    static constexpr int G = BS / kVecElems;  /* threads per block */
    static constexpr int GPC = kVecThreads / G;
    static constexpr int BPS = GPC * U; /* blocks per step */
    static constexpr size_t STEP = (size_t)BPS * BS; /* elements per step */
    static_assert(G >= 1 && G <= 32, "a block's group must fit in one warp");
    /* element offset of chunk c of this thread's u-th block, from its first element */
    static __device__ __forceinline__ constexpr int at(int u, int c) { return u * GPC * BS + c * G * CE; }
    static __device__ __forceinline__ int thread_offset() {
        return (int)(threadIdx.x / G) * BS + (int)(threadIdx.x % G) * CE;
    }
};

/* Load step `step` into r: vector loads when the whole step lies before n, else element by element with
 * zeros past n (the padding zeros of a partial last block take part in its maximum). */
template <typename T, int BS, int U>
__device__ __forceinline__ void vec_load(const T *__restrict__ src, size_t n, size_t step,
                                         uint4 (&r)[U][VecGeom<T, BS, U>::NC]) {
    using Gm = VecGeom<T, BS, U>;
    const size_t first = step * Gm::STEP + (size_t)Gm::thread_offset();
    const T *p = src + first;
    if ((step + 1) * Gm::STEP <= n) {
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int c = 0; c < Gm::NC; c++)
                r[u][c] = __ldg(reinterpret_cast<const uint4 *>(p + Gm::at(u, c)));
    } else {
        const size_t left = first < n ? n - first : 0; /* elements of this thread's span that exist */
#pragma unroll
        for (int u = 0; u < U; u++)
#pragma unroll
            for (int c = 0; c < Gm::NC; c++) {
                T v[Gm::CE];
#pragma unroll
                for (int e = 0; e < Gm::CE; e++)
                    v[e] = (size_t)(Gm::at(u, c) + e) < left ? p[Gm::at(u, c) + e] : bnb4_dt<T>::from_f32(0.0f);
                memcpy(&r[u][c], v, 16);
            }
    }
}

template <typename T, int BS, int QT, int U, bool FULL>
__device__ __forceinline__ void vec_process(size_t n, size_t step, const uint4 (&r)[U][VecGeom<T, BS, U>::NC],
                                            uint8_t *__restrict__ packed, float *__restrict__ absmax,
                                            const Nf4Table &tab, const float *fp4) {
    using Gm = VecGeom<T, BS, U>;
    constexpr int CE = Gm::CE;
    const size_t first = step * Gm::STEP + (size_t)Gm::thread_offset();
    float m[U];
#pragma unroll
    for (int u = 0; u < U; u++)
        m[u] = Raw16<T>::amax(r[u]);
#pragma unroll
    for (int off = Gm::G / 2; off > 0; off /= 2)
#pragma unroll
        for (int u = 0; u < U; u++)
            m[u] = fmaxf(m[u], __shfl_xor_sync(0xffffffffu, m[u], off));
    uint8_t *out = packed + first / 2;
    float *am = absmax + first / BS;
    const size_t left = first < n ? n - first : 0;
#pragma unroll
    for (int u = 0; u < U; u++) {
        const float amax = fmaxf(-FLT_MAX, bnb4_dev_abs_ftz(m[u]));
        if (threadIdx.x % Gm::G == 0 && (FULL || (size_t)Gm::at(u, 0) < left)) /* the block exists */
            am[u * Gm::GPC] = amax;
        const float inv = bnb4_dev_rcp_approx(amax);
#pragma unroll
        for (int c = 0; c < Gm::NC; c++) {
            const uint32_t word = encode_chunk<T, QT>(r[u][c], inv, tab, fp4);
            uint8_t *o = out + Gm::at(u, c) / 2;
            if (FULL || (size_t)(Gm::at(u, c) + CE) <= left) {
                if (CE == 8)
                    *reinterpret_cast<uint32_t *>(o) = word;
                else
                    *reinterpret_cast<uint16_t *>(o) = (uint16_t)word;
            } else if ((size_t)Gm::at(u, c) < left) { /* the bytes that exist (odd n: with the pad nibble) */
                const size_t bytes = (left + 1) / 2 - (size_t)Gm::at(u, c) / 2;
                for (size_t i = 0; i < (size_t)(CE / 2) && i < bytes; i++)
                    o[i] = (uint8_t)(word >> (8 * i));
            }
        }
    }
}

template <typename T, int BS, int QT, int U>
__device__ __forceinline__ void vec_step(size_t n, size_t step, const uint4 (&r)[U][VecGeom<T, BS, U>::NC],
                                         uint8_t *__restrict__ packed, float *__restrict__ absmax, const Nf4Table &tab,
                                         const float *fp4) {
    if ((step + 1) * VecGeom<T, BS, U>::STEP <= n)
        vec_process<T, BS, QT, U, true>(n, step, r, packed, absmax, tab, fp4);
    else
        vec_process<T, BS, QT, U, false>(n, step, r, packed, absmax, tab, fp4);
}

template <typename T, int BS, int QT, int U>
__global__ void __launch_bounds__(kVecThreads, QT == BNB4_NF4 ? 4 : 3) /* FP4's search needs more than 64 */
    quantize_4bit_vec_kernel(const T *__restrict__ src, size_t n, uint8_t *__restrict__ packed,
                             float *__restrict__ absmax, size_t nsteps) {
    using Gm = VecGeom<T, BS, U>;
    __shared__ Nf4Table tab;
    __shared__ float fp4[16];
    uint4 a[U][Gm::NC];
    size_t step = blockIdx.x;
    vec_load<T, BS, U>(src, n, step, a); /* in flight while the tables are built */
    if (QT == BNB4_NF4)
        nf4_table_build(tab);
    else if (threadIdx.x < 16)
        fp4[threadIdx.x] = c_fp4_thresholds[threadIdx.x];
    __syncthreads();
    uint4 b[U][Gm::NC];
    for (;;) { /* two steps per trip */
        const size_t s1 = step + gridDim.x;
        if (s1 < nsteps)
            vec_load<T, BS, U>(src, n, s1, b);
        vec_step<T, BS, QT, U>(n, step, a, packed, absmax, tab, fp4);
        if (s1 >= nsteps)
            break;
        const size_t s2 = s1 + gridDim.x;
        if (s2 < nsteps)
            vec_load<T, BS, U>(src, n, s2, a);
        vec_step<T, BS, QT, U>(n, s1, b, packed, absmax, tab, fp4);
        if (s2 >= nsteps)
            break;
        step = s2;
    }
}

template <typename T, int BS, int QT, int U> int g_vec_ctas[64]; /* resident CTAs per SM, by device */

template <typename T, int BS, int QT>
bnb4_status launch_quantize_vec(bnb4_cuda_state *s, const T *src, size_t n, uint8_t *packed, float *absmax) {
    /* 64 bytes per thread per step, and as many prefetched */
    constexpr int U = sizeof(T) == 4 ? 1 : 2;
    using Gm = VecGeom<T, BS, U>;
    const size_t nsteps = bnb4_div_up(n, Gm::STEP);
    int &per_sm = g_vec_ctas<T, BS, QT, U>[s->device & 63];
    if (!per_sm) {
        int v = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, quantize_4bit_vec_kernel<T, BS, QT, U>, kVecThreads, 0) !=
                cudaSuccess ||
            v < 1)
            v = 1;
        per_sm = v;
    }
    const size_t fit = (size_t)(s->sm_count > 0 ? s->sm_count : 1) * (size_t)per_sm;
    const size_t ctas = nsteps < fit ? nsteps : fit;
    if (ctas > (size_t)INT32_MAX)
        return bnb4_fail(BNB4_ERR_UNSUPPORTED, "bnb4_quantize: n = %zu is too large for one launch", n);
    quantize_4bit_vec_kernel<T, BS, QT, U><<<(unsigned)ctas, kVecThreads, 0, s->stream>>>(src, n, packed, absmax,
                                                                                          nsteps);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_quantize");
}

template <typename T, int QT>
bnb4_status launch_quantize_bs(bnb4_cuda_state *s, const T *src, size_t n, size_t bs, uint8_t *packed, float *absmax) {
    const size_t nblocks = bnb4_div_up(n, bs);
    const int vec_ok = bnb4_aligned(src, 16) && bnb4_aligned(packed, 4);
    if (vec_ok && bs <= 512) {
#define BNB4_QUANT_VEC_CASE(BS)                                                                                 \
    case BS:                                                                                                    \
        return launch_quantize_vec<T, BS, QT>(s, src, n, packed, absmax);
        switch (bs) {
            BNB4_QUANT_VEC_CASE(32)
            BNB4_QUANT_VEC_CASE(64)
            BNB4_QUANT_VEC_CASE(128)
            BNB4_QUANT_VEC_CASE(256)
            BNB4_QUANT_VEC_CASE(512)
        default:
            break;
        }
#undef BNB4_QUANT_VEC_CASE
    }
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

