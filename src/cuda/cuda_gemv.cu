/*
 * cuda_gemv.cu - Y[m, N] = X[m, K] W^T + bias for small m (batch-1 decode and a few rows more) on CUDA
 * cores: gemv_4bit_<dt>__cuda. At m = 1..4 the matmul is a pure stream of the packed weights
 * (0.5 byte per weight against 2*m flops), so the kernel is built to keep DRAM busy:
 *
 *  - each warp owns 2 weight rows; its 32 lanes cover 1024 contiguous k per step (16 bytes each, so a
 *    warp-step reads 4 whole 128-byte lines of each row), streamed with ld.global.nc.L1::no_allocate;
 *  - a warp walks its rows as one flat sequence of (row pair, step) items, 2 items per batch, with the
 *    next batch's loads issued before the current batch is computed (two named register buffers), so
 *    every warp keeps 64-128 bytes per lane in flight, also across row-pair boundaries. The grid is
 *    persistent (as many CTAs as fit), so the per-CTA decode table is built once per CTA;
 *  - decoding: one PRMT and one shared-memory lookup per packed byte give both codebook values (a
 *    256-entry table of code pairs, replicated per lane so lookups never bank-conflict, 64 KB: float2
 *    pairs, exact, or half2 pairs, half the shared-memory traffic but two conversions, codes rounded
 *    to f16 as the tensor-core kernel rounds whole weights; float32 activations always take the
 *    exact table); codes are multiplied with the activations and summed in float32 per 32-element
 *    chunk, and the chunk's sum is multiplied by its block scale once (a chunk never straddles a block: K %
 *    blocksize == 0, blocksize >= 32). Nested absmax is decoded in the kernel, with the 8-bit map in
 *    shared memory, exactly as bnb4_dequantize_nested rounds it;
 *  - activations (small, shared by all rows) are read through L1 with 16-byte loads and reused for
 *    both rows of the warp and, for m > 1, each decoded code serves all MT (1, 2, 4) activation rows;
 *  - epilogue: warp-shuffle sums in a fixed order (deterministic), bias in float32, one rounding.
 *
 * That is the table kernel (gemv_4bit_kernel). A second one, the stream kernel (gemv_4bit_stream_kernel,
 * further down), runs m = 1 by default: same decode and rounding (f16/bf16: half2 code pairs; f32: the exact
 * float2 pairs; f32 sums per 32-element chunk, one scale per chunk, in-kernel nested absmax), but no pipeline
 * state across row pairs: per row pair it issues the loads of U warp-steps (weights, block scales and
 * activations) before any of their math, so no load sits on the math's critical path, and its CTAs are
 * smaller in registers. H100, docs/performance.md (v9): 1.04-1.21x the speed of the 05:45 routing at m = 1.
 * Where they fit, it reads the activations from shared memory, staged once per CTA (XS, below): read from
 * global memory, a lane's 32-activation run made each 16-byte load of a warp touch 16 (f16) or 32 (f32) lines;
 * f32 m = 1 took the table kernel's 42 us on 14336x4096, now 19 (H200, v50).
 *
 * The router (cuda_gemm.cu) takes these kernels for m <= bnb4_cuda_gemv_max_m() (1 by default) when K %
 * blocksize == 0, the packed weights and the activations are 16-byte aligned and the block count fits
 * 32 bits; with the table kernel (BNB4_CUDA_GEMV_KERNEL=table) for f16/bf16 not for plain-absmax tensors
 * of more than BNB4_CUDA_GEMV_PLAIN_MAX_N rows (the tensor-core kernel beats it there). The table kernel
 * takes m up to 4 (tiers 1, 2, 4; BNB4_CUDA_GEMV_MAX_M=4 turns them on): correct (the test suite passed
 * with them on), but slower than the tensor-core kernel there on H200; not profiled, the likely cause is
 * the activations, read per item through L1 and so on every item's critical path.
 */
#include <stdlib.h>
#include <string.h>

#include <type_traits>

#include "cuda_common.cuh"

namespace {

__constant__ float c_gemv_nf4[16] = {BNB4_NF4_CODEBOOK_VALUES};
__constant__ float c_gemv_fp4[16] = {BNB4_FP4_CODEBOOK_VALUES};

constexpr int kWarps = 8;       /* warps per CTA */
constexpr int kRows = 2;        /* weight rows per warp (the activations loaded are used for both) */
constexpr int kBatch = 2;       /* items (row pair, 1024-k step) per batch; two batches in flight */
constexpr int kStepK = 1024;    /* k per warp-step: 32 lanes x 32 elements (16 packed bytes) */
constexpr int kTableBytes = 256 * 256; /* code-pair table: entry (byte, lane) at byte * 256 + lane part */

enum GemvTable { TABLE_F32 = 0, TABLE_H2 = 1 };

struct GemvArgs : bnb4_cuda_weight_args {
    unsigned N, K, M, steps, groups;
    const void *x, *bias;
    void *y;
};

__device__ __forceinline__ uint4 ld_stream16(const void *p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
    return v;
}

/* One item's raw loads for the warp's two rows: 16 packed bytes and the chunk's scale (plain: absmax;
 * nested: the 8-bit code and its nested absmax, decoded when used). */
struct Item {
    uint4 w[kRows];
    float s[kRows];
    unsigned q[kRows];
};

/* Where the next item to load is: its row pair and step, the pair's first packed byte and first block
 * index (advanced incrementally: the flat 64-bit index math would cost ~20 instructions per load). */
struct LoadCursor {
    unsigned g, s;
    const uint8_t *row;
    unsigned blk;
};

template <bool NESTED>
__device__ __forceinline__ void load_item(const GemvArgs &a, Item &it, const LoadCursor &c, unsigned lane32) {
    const unsigned k0 = c.s * kStepK + lane32;
    const bool in = c.g < a.groups && k0 < a.K;
#pragma unroll
    for (int rr = 0; rr < kRows; rr++) {
        it.w[rr] = make_uint4(0, 0, 0, 0);
        it.s[rr] = 0.0f;
        it.q[rr] = 0;
        if (in && (rr == 0 || c.g * kRows + rr < a.N)) {
            it.w[rr] = ld_stream16(c.row + (size_t)rr * (a.K / 2) + k0 / 2);
            const unsigned b = c.blk + rr * (a.K >> a.bs_log2) + (k0 >> a.bs_log2);
            if (NESTED) {
                it.q[rr] = __ldg(a.codes + b);
                it.s[rr] = __ldg(a.nested_absmax + (a.nbs_log2 >= 0 ? b >> a.nbs_log2 : b / a.nested_blocksize));
            } else {
                it.s[rr] = __ldg(a.absmax + b);
            }
        }
    }
}

/* Codebook pair of packed byte `i` of word `w` (high nibble = the even element). Entry (byte, lane) of
 * the table sits at byte * 256 + lane part, so one PRMT forms its offset: byte i of w as the offset's
 * byte 1, the lane part (< 256) as byte 0. */
template <int TABLE>
__device__ __forceinline__ float2 code_pair(const unsigned char *tab, uint32_t w, int i, uint32_t lane_off) {
    const uint32_t off = __byte_perm(w, lane_off, 0x5504u | ((uint32_t)i << 4));
    const unsigned char *p = tab + off;
    if (TABLE == TABLE_F32)
        return *reinterpret_cast<const float2 *>(p);
    return __half22float2(*reinterpret_cast<const __half2 *>(p));
}

/* Both kernels' 64 KB code-pair table, entry (byte, lane) at byte * 256 + lane part: float2 pairs (F32, exact) or half2
 * pairs, each 16-byte store 4 or 2 lanes' copies; and, for nested absmax, the 8-bit map (after the table). */
template <bool F32, bool NESTED>
__device__ __forceinline__ void fill_code_pairs(unsigned char *tab, float *nested_map, const GemvArgs &a) {
    const float *code = a.quant_type == BNB4_NF4 ? c_gemv_nf4 : c_gemv_fp4;
    for (int v = threadIdx.x; v < kTableBytes / 16; v += blockDim.x) { /* 16 stores per byte value */
        const int b = v >> 4;
        uint4 e;
        if (F32) {
            const float hi = code[b >> 4], lo = code[b & 15];
            e = make_uint4(__float_as_uint(hi), __float_as_uint(lo), __float_as_uint(hi), __float_as_uint(lo));
        } else {
            const __half2 h = __floats2half2_rn(code[b >> 4], code[b & 15]);
            const uint32_t u = *reinterpret_cast<const uint32_t *>(&h);
            e = make_uint4(u, u, u, u);
        }
        reinterpret_cast<uint4 *>(tab)[v] = e;
    }
    if (NESTED)
        for (int v = threadIdx.x; v < 256; v += blockDim.x)
            nested_map[v] = a.nested_code[v];
}

/* Register cap: CTAs that must fit on an SM (more activation rows need more registers). */
template <int MT> constexpr int gemv_min_ctas() { return MT == 1 ? 3 : 2; }

template <typename T, int MT, bool NESTED, int TABLE>
__global__ void __launch_bounds__(kWarps * 32, gemv_min_ctas<MT>()) gemv_4bit_kernel(GemvArgs a) {
    /* 256 bytes x 256 B: float2 pairs, one per lane (8 B each), or half2 pairs (4 B each, the first
     * 128 B used), so 32 lanes never bank-conflict; dynamic shared memory (64 KB), then the nested map. */
    extern __shared__ __align__(16) unsigned char tab[];
    float *nested_map = reinterpret_cast<float *>(tab + kTableBytes);
    fill_code_pairs<TABLE == TABLE_F32, NESTED>(tab, nested_map, a);
    __syncthreads();

    const int lane = threadIdx.x & 31;
    const uint32_t lane_off = TABLE == TABLE_F32 ? (uint32_t)lane * 8u : (uint32_t)lane * 4u;
    /* warp w takes row pairs w, w + warps, ...; w counts CTAs fastest, so when the pairs do not divide
     * evenly, the warps with one pair more are spread over every CTA (and SM), not packed into the
     * first CTAs */
    const unsigned warp_id = (threadIdx.x >> 5) * gridDim.x + blockIdx.x, warps = gridDim.x * kWarps;
    if (warp_id >= a.groups)
        return;
    const T *x = reinterpret_cast<const T *>(a.x);
    const unsigned K = a.K, steps = a.steps;
    /* items of this warp: groups warp_id, warp_id + warps, ...; each `steps` long */
    const unsigned my_groups = (a.groups - warp_id + warps - 1) / warps;
    const unsigned items = my_groups * steps;

    float acc[kRows][MT];
#pragma unroll
    for (int rr = 0; rr < kRows; rr++)
#pragma unroll
        for (int r = 0; r < MT; r++)
            acc[rr][r] = 0.0f;

    /* load cursor and compute cursor: (group, step) */
    const unsigned lane32 = (unsigned)lane * 32u;
    LoadCursor lc = {warp_id, 0, a.packed + (size_t)warp_id * K, (unsigned)(((size_t)warp_id * kRows * K) >> a.bs_log2)};
    const size_t row_stride = (size_t)warps * K; /* packed bytes from one of the warp's row pairs to the next */
    const unsigned blk_stride = (unsigned)(row_stride * 2 >> a.bs_log2);
    unsigned cg = warp_id, cs = 0;
    auto advance = [&](unsigned &g, unsigned &s) {
        if (++s == steps) {
            s = 0;
            g += warps;
        }
    };
    auto load_batch = [&](Item (&b)[kBatch]) {
#pragma unroll
        for (int u = 0; u < kBatch; u++) {
            load_item<NESTED>(a, b[u], lc, lane32); /* past the warp's last group: g >= groups, no load */
            if (++lc.s == steps) {
                lc.s = 0;
                lc.g += warps;
                lc.row += row_stride;
                lc.blk += blk_stride;
            }
        }
    };
    auto compute_batch = [&](const Item (&b)[kBatch], unsigned &done) {
#pragma unroll
        for (int u = 0; u < kBatch; u++) {
            if (done >= items)
                return;
            const unsigned k0 = cs * kStepK + (unsigned)lane * 32u;
            if (k0 < K) {
                float part[kRows][MT][2];
#pragma unroll
                for (int rr = 0; rr < kRows; rr++)
#pragma unroll
                    for (int r = 0; r < MT; r++)
                        part[rr][r][0] = part[rr][r][1] = 0.0f;
                /* MT >= 4: one word at a time (unrolled, the compiler hoists every word's activations) */
#pragma unroll(MT >= 4 ? 1 : 4)
                for (int qw = 0; qw < 4; qw++) {
                    float xv[MT][8];
#pragma unroll
                    for (int r = 0; r < MT; r++) {
                        if (r < (int)a.M)
                            bnb4_x8<T>::get(x + (size_t)r * K + k0 + qw * 8, xv[r]);
                        else
#pragma unroll
                            for (int e = 0; e < 8; e++)
                                xv[r][e] = 0.0f;
                    }
#pragma unroll
                    for (int rr = 0; rr < kRows; rr++) {
                        const uint32_t w = qw == 0 ? b[u].w[rr].x : qw == 1 ? b[u].w[rr].y : qw == 2 ? b[u].w[rr].z
                                                                                                   : b[u].w[rr].w;
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            const float2 c = code_pair<TABLE>(tab, w, i, lane_off);
#pragma unroll
                            for (int r = 0; r < MT; r++) {
                                part[rr][r][0] = fmaf(c.x, xv[r][2 * i], part[rr][r][0]);
                                part[rr][r][1] = fmaf(c.y, xv[r][2 * i + 1], part[rr][r][1]);
                            }
                        }
                    }
                }
#pragma unroll
                for (int rr = 0; rr < kRows; rr++) {
                    const float sc = NESTED ? bnb4_dev_nested_scale(nested_map[b[u].q[rr]], b[u].s[rr], a.offset)
                                            : b[u].s[rr];
#pragma unroll
                    for (int r = 0; r < MT; r++)
                        acc[rr][r] = fmaf(part[rr][r][0] + part[rr][r][1], sc, acc[rr][r]);
                }
            }
            if (cs == steps - 1) { /* the row pair is complete: reduce across lanes and store */
                float b[kRows]; /* (loaded before the first store, which would order them behind it) */
#pragma unroll
                for (int rr = 0; rr < kRows; rr++)
                    b[rr] = a.bias && lane == 0 && cg * kRows + rr < a.N
                                ? bnb4_dt<T>::to_f32(reinterpret_cast<const T *>(a.bias)[cg * kRows + rr])
                                : 0.0f;
#pragma unroll
                for (int rr = 0; rr < kRows; rr++) {
                    const unsigned j = cg * kRows + rr;
#pragma unroll
                    for (int r = 0; r < MT; r++) {
                        float v = acc[rr][r];
#pragma unroll
                        for (int off = 16; off > 0; off /= 2)
                            v += __shfl_xor_sync(0xffffffffu, v, off);
                        acc[rr][r] = 0.0f;
                        if (lane == 0 && r < (int)a.M && j < a.N) {
                            if (a.bias)
                                v += b[rr];
                            reinterpret_cast<T *>(a.y)[(size_t)r * a.N + j] = bnb4_dt<T>::from_f32(v);
                        }
                    }
                }
            }
            advance(cg, cs);
            done++;
        }
    };

    Item A[kBatch], B[kBatch];
    unsigned done = 0;
    load_batch(A);
    while (done < items) {
        load_batch(B);
        compute_batch(A, done);
        if (done >= items)
            break;
        load_batch(A);
        compute_batch(B, done);
    }
}

/* ---- gemv_4bit_stream: m = 1, every dtype (the default there) ------------------------------------------
 * The table kernel above loads each item's activations inside its compute phase and carries two batches
 * of pipeline state per warp. This one has no load on the math's critical path: per row pair, the loads
 * of kStreamU warp-steps (16 packed bytes per row and lane, the block scales, the lane's 32 activations)
 * are ALL issued before any of their math, and occupancy (2-3 CTAs of 8 warps per SM) hides the rest.
 * Decode as in the table kernel: a per-lane code-pair table (entry (byte, lane) at byte * 256 + lane * 4 for
 * half2 pairs, lane * 8 for f32's float2 pairs, conflict-free; 64 KB of address space, so one PRMT per byte
 * forms the offset). */
constexpr int kStreamTableBytes = 256 * 256; /* rows of 256 B (half2 pairs use the first 128): one PRMT forms an offset */
constexpr int kStreamMapBytes = 256 * 4;     /* the nested map (reserved with staged activations too) */

/* A lane's 32 activations of a warp-step as 16-byte loads (4 for f16 / bf16, 8 for f32), and their element pair
 * p (0..15: elements 2 p and 2 p + 1) as float32. */
template <typename T> struct XPair {
    static constexpr int kWords = 32 * (int)sizeof(T) / 16;
    static __device__ __forceinline__ uint32_t word(const uint4 &v, int i) {
        return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
    }
    static __device__ __forceinline__ float2 get(const uint4 (&xv)[kWords], int p) {
        if (sizeof(T) == 4) { /* f32: two pairs a load */
            const uint4 &v = xv[p >> 1];
            return (p & 1) ? make_float2(__uint_as_float(v.z), __uint_as_float(v.w))
                           : make_float2(__uint_as_float(v.x), __uint_as_float(v.y));
        }
        const uint32_t u = word(xv[p >> 2], p & 3);
        if (std::is_same<T, __nv_bfloat16>::value) /* exact: the bits move up */
            return make_float2(__uint_as_float(u << 16), __uint_as_float(u & 0xffff0000u));
        return __half22float2(*reinterpret_cast<const __half2 *>(&u));
    }
};

/* U: warp-steps of 1024 k whose loads are issued together (f16 / bf16: 2: 77-79 registers, 3 CTAs per SM, which
 * the 65 KB of shared memory also allows; 4: 2 CTAs per SM, twice the bytes per warp in flight; f32 takes U = 2
 * with twice the activation registers: 2 CTAs). */
constexpr int stream_min_ctas(size_t es, int u) { return u <= 2 && es == 2 ? 3 : 2; }

/* XS: the activations staged in shared memory (after the table and the nested map) for the whole kernel. Read from
 * global memory, a lane's 32 activations are one 64- or 128-byte run, so each 16-byte load of a warp touches 16 or 32
 * lines; from shared memory, with the 16-byte units of each 128-byte row XOR-swizzled by the row (unit u at
 * u ^ ((u >> 3) & 7)), a quarter-warp's loads hit 8 distinct bank groups. Copied with cp.async at the kernel's start,
 * in flight while the table is built. */
__device__ __forceinline__ unsigned stream_x_slot(unsigned u) { return u ^ ((u >> 3) & 7u); }

template <typename T, bool NESTED, int kStreamU, bool XS>
__global__ void __launch_bounds__(kWarps * 32, stream_min_ctas(sizeof(T), kStreamU)) gemv_4bit_stream_kernel(GemvArgs a) {
    /* f16 / bf16: half2 code pairs (codes rounded to f16, as the tensor-core kernels round them); f32: float2 pairs,
     * exact */
    constexpr bool kF32 = sizeof(T) == 4;
    constexpr int kXWords = XPair<T>::kWords;
    extern __shared__ __align__(16) unsigned char stab[];
    float *nested_map = reinterpret_cast<float *>(stab + kStreamTableBytes);
    const unsigned char *xs = stab + kStreamTableBytes + kStreamMapBytes;
    if (XS) { /* K % 32 == 0 (bnb4_cuda_gemv_fits): whole 16-byte units */
        const uint32_t base = (uint32_t)__cvta_generic_to_shared(xs);
        const unsigned units = a.K * (unsigned)sizeof(T) / 16u;
        for (unsigned u = threadIdx.x; u < units; u += blockDim.x)
            cp_async16(base + stream_x_slot(u) * 16u, reinterpret_cast<const uint8_t *>(a.x) + (size_t)u * 16, 16);
        cp_async_commit();
    }
    fill_code_pairs<kF32, NESTED>(stab, nested_map, a);
    if (XS)
        cp_async_wait<0>();
    __syncthreads();

    const unsigned lane = threadIdx.x & 31, lane_off = lane * (kF32 ? 8u : 4u);
    /* warp ids count CTAs fastest, so the warps with one row pair more are spread over every SM */
    const unsigned warp_id = (threadIdx.x >> 5) * gridDim.x + blockIdx.x, warps = gridDim.x * kWarps;
    const unsigned K = a.K, kb = K >> a.bs_log2; /* blocks per row (K % blocksize == 0) */
    const T *x = reinterpret_cast<const T *>(a.x);

    for (unsigned g = warp_id; g < a.groups; g += warps) {
        const unsigned row0 = g * kRows;
        const bool row1 = row0 + 1 < a.N;
        const uint8_t *wrow = a.packed + (size_t)row0 * (K / 2);
        const unsigned blk0 = (unsigned)(((size_t)row0 * K) >> a.bs_log2);
        float acc[kRows] = {0.0f, 0.0f};
        for (unsigned s0 = 0; s0 < a.steps; s0 += kStreamU) {
            uint4 wv[kStreamU][kRows], xv[kStreamU][kXWords];
            float sc[kStreamU][kRows];
            unsigned q[kStreamU][kRows];
            /* every load of the kStreamU steps first */
#pragma unroll
            for (int u = 0; u < kStreamU; u++) {
                const unsigned k0 = (s0 + u) * kStepK + lane * 32u;
                const bool in = k0 < K;
#pragma unroll
                for (int rr = 0; rr < kRows; rr++) {
                    wv[u][rr] = make_uint4(0, 0, 0, 0);
                    sc[u][rr] = 0.0f;
                    q[u][rr] = 0;
                    if (in && (rr == 0 || row1)) {
                        wv[u][rr] = ld_stream16(wrow + (size_t)rr * (K / 2) + k0 / 2);
                        const unsigned b = blk0 + rr * kb + (k0 >> a.bs_log2);
                        if (NESTED) {
                            q[u][rr] = __ldg(a.codes + b);
                            sc[u][rr] = __ldg(a.nested_absmax + (a.nbs_log2 >= 0 ? b >> a.nbs_log2 : b / a.nested_blocksize));
                        } else {
                            sc[u][rr] = __ldg(a.absmax + b);
                        }
                    }
                }
                const unsigned u0 = k0 * (unsigned)sizeof(T) / 16u; /* the lane's first 16-byte unit */
#pragma unroll
                for (int j = 0; j < kXWords; j++)
                    xv[u][j] = !in ? make_uint4(0, 0, 0, 0)
                               : XS ? *reinterpret_cast<const uint4 *>(xs + stream_x_slot(u0 + j) * 16u)
                                    : __ldg(reinterpret_cast<const uint4 *>(x + k0) + j);
            }
            /* then the math: per packed byte one table lookup gives both codes (high nibble = even k) */
#pragma unroll
            for (int u = 0; u < kStreamU; u++) {
                float part[kRows][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
#pragma unroll
                for (int qw = 0; qw < 4; qw++) {
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const float2 xf = XPair<T>::get(xv[u], qw * 4 + i);
#pragma unroll
                        for (int rr = 0; rr < kRows; rr++) {
                            const uint4 &wq = wv[u][rr];
                            const uint32_t w = qw == 0 ? wq.x : qw == 1 ? wq.y : qw == 2 ? wq.z : wq.w;
                            const uint32_t off = __byte_perm(w, lane_off, 0x5504u | ((uint32_t)i << 4));
                            const float2 c = kF32 ? *reinterpret_cast<const float2 *>(stab + off)
                                                  : __half22float2(*reinterpret_cast<const __half2 *>(stab + off));
                            part[rr][0] = fmaf(c.x, xf.x, part[rr][0]);
                            part[rr][1] = fmaf(c.y, xf.y, part[rr][1]);
                        }
                    }
                }
#pragma unroll
                for (int rr = 0; rr < kRows; rr++) {
                    const float s = NESTED ? bnb4_dev_nested_scale(nested_map[q[u][rr]], sc[u][rr], a.offset)
                                           : sc[u][rr];
                    acc[rr] = fmaf(part[rr][0] + part[rr][1], s, acc[rr]); /* 0 past K: the loads were zero */
                }
            }
        }
        /* warp-shuffle sums in a fixed order (deterministic), bias in float32, one rounding; the bias loaded
         * before the first store, which would order the loads behind it */
        float b[kRows];
#pragma unroll
        for (int rr = 0; rr < kRows; rr++)
            b[rr] = a.bias && lane == 0 && row0 + rr < a.N
                        ? bnb4_dt<T>::to_f32(reinterpret_cast<const T *>(a.bias)[row0 + rr])
                        : 0.0f;
#pragma unroll
        for (int rr = 0; rr < kRows; rr++) {
            float v = acc[rr];
#pragma unroll
            for (int off = 16; off > 0; off /= 2)
                v += __shfl_xor_sync(0xffffffffu, v, off);
            const unsigned j = row0 + rr;
            if (lane == 0 && j < a.N) {
                if (a.bias)
                    v += b[rr];
                reinterpret_cast<T *>(a.y)[j] = bnb4_dt<T>::from_f32(v);
            }
        }
    }
}

template <typename T, int MT, bool NESTED, int TABLE> int g_gemv_ctas[64];
template <typename T, int MT, bool NESTED, int TABLE> unsigned g_gemv_smem_limit[64]; /* (bnb4_cuda_smem_limit) */
/* g_gemv_stream: 0 = the table kernel at m = 1; 1 = the stream kernel, U = 4 for plain and 2 for nested
 * absmax (the better of the two on the H100 run in docs/performance.md); 2, 4 = the stream kernel with that U */
int g_gemv_max_m = -1, g_gemv_table = -1, g_gemv_ctas_cap = 0, g_gemv_stream = 1, g_gemv_xs = 1; /* see read_settings() */

/* Both gemv kernels' grid: one resident wave at most (the table is built once per CTA; warps loop over row pairs), of
 * per_sm CTAs an SM or BNB4_CUDA_GEMV_CTAS where that is fewer */
unsigned gemv_grid(const bnb4_cuda_state *s, const GemvArgs &a, int per_sm) {
    const int cap = g_gemv_ctas_cap && g_gemv_ctas_cap < per_sm ? g_gemv_ctas_cap : per_sm;
    const size_t want = bnb4_div_up(a.groups, kWarps), fit = (size_t)s->sm_count * (size_t)cap;
    return (unsigned)(want < fit ? want : fit);
}

template <typename T, int MT, bool NESTED, int TABLE> bnb4_status launch(bnb4_cuda_state *s, const GemvArgs &a) {
    constexpr int smem = kTableBytes + (NESTED ? 256 * 4 : 0);
    int &per_sm = g_gemv_ctas<T, MT, NESTED, TABLE>[s->device & 63];
    if (!per_sm) {
        bnb4_status st = bnb4_cuda_check(
            bnb4_cuda_smem_limit(s, gemv_4bit_kernel<T, MT, NESTED, TABLE>, smem, g_gemv_smem_limit<T, MT, NESTED, TABLE>),
            "bnb4_gemm (gemv): shared memory");
        if (st != BNB4_OK)
            return st;
        int v = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, gemv_4bit_kernel<T, MT, NESTED, TABLE>, kWarps * 32,
                                                          smem) != cudaSuccess ||
            v < 1)
            v = 1;
        per_sm = v;
    }
    gemv_4bit_kernel<T, MT, NESTED, TABLE><<<gemv_grid(s, a, per_sm), kWarps * 32, smem, s->stream>>>(a);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_gemm (gemv)");
}

/* The stream kernel's resident CTAs per SM by its dynamic shared memory, which staged activations make depend on K: the
 * last few sizes per device (a model's layers have two or three K); and the largest size set as the kernel's limit. */
struct StreamFit {
    unsigned smem;
    int per_sm;
};
template <typename T, bool NESTED, int U, bool XS> StreamFit g_stream_fit[64][4];
template <typename T, bool NESTED, int U, bool XS> unsigned g_stream_smem_limit[64];

/* The dynamic shared memory of the stream kernel: the table, the nested map and (XS) the activations */
size_t stream_smem(bool nested, bool xs, size_t K, size_t es) {
    return kStreamTableBytes + (nested || xs ? kStreamMapBytes : 0) + (xs ? K * es : 0);
}

template <typename T, bool NESTED, int U, bool XS> bnb4_status launch_stream_u(bnb4_cuda_state *s, const GemvArgs &a) {
    const auto kernel = gemv_4bit_stream_kernel<T, NESTED, U, XS>;
    const unsigned smem = (unsigned)stream_smem(NESTED, XS, a.K, sizeof(T)), dev = (unsigned)s->device & 63;
    const bnb4_status st = bnb4_cuda_check(bnb4_cuda_smem_limit(s, kernel, smem, g_stream_smem_limit<T, NESTED, U, XS>),
                                           "bnb4_gemm (gemv): shared memory");
    if (st != BNB4_OK)
        return st;
    StreamFit(&fits)[4] = g_stream_fit<T, NESTED, U, XS>[dev];
    int per_sm = 0;
    for (const StreamFit &f : fits)
        if (f.smem == smem)
            per_sm = f.per_sm;
    if (!per_sm) {
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, smem) != cudaSuccess || per_sm < 1)
            per_sm = 1;
        StreamFit &slot = fits[smem / 1024 % 4]; /* (a race here only sizes one grid from another size's fit) */
        slot.per_sm = per_sm;
        slot.smem = smem;
    }
    kernel<<<gemv_grid(s, a, per_sm), kWarps * 32, smem, s->stream>>>(a);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_gemm (gemv)");
}

/* The stream kernel's U: f32 2 (its activations take twice the registers); f16 / bf16 by BNB4_CUDA_GEMV_KERNEL, 4 for
 * plain and 2 for nested absmax by default */
int stream_u(size_t es, bool nested) { return es == 4 ? 2 : g_gemv_stream == 1 ? (nested ? 2 : 4) : g_gemv_stream; }

template <typename T, bool NESTED, int U> bnb4_status launch_stream_x(bnb4_cuda_state *s, const GemvArgs &a) {
    return bnb4_cuda_gemv_stages_x(s, bnb4_dt<T>::id, NESTED, a.K) ? launch_stream_u<T, NESTED, U, true>(s, a)
                                                                     : launch_stream_u<T, NESTED, U, false>(s, a);
}

template <typename T, bool NESTED> bnb4_status launch_stream(bnb4_cuda_state *s, const GemvArgs &a) {
    if constexpr (sizeof(T) == 4)
        return launch_stream_x<T, NESTED, 2>(s, a);
    else
        return stream_u(sizeof(T), NESTED) == 4 ? launch_stream_x<T, NESTED, 4>(s, a) : launch_stream_x<T, NESTED, 2>(s, a);
}

template <typename T, int TABLE> bnb4_status launch_m(bnb4_cuda_state *s, const GemvArgs &a, bool nested) {
    if (a.M <= 1)
        return nested ? launch<T, 1, true, TABLE>(s, a) : launch<T, 1, false, TABLE>(s, a);
    if (a.M <= 2)
        return nested ? launch<T, 2, true, TABLE>(s, a) : launch<T, 2, false, TABLE>(s, a);
    return nested ? launch<T, 4, true, TABLE>(s, a) : launch<T, 4, false, TABLE>(s, a);
}

/* Settings read once from the environment (for measuring): BNB4_CUDA_GEMV_MAX_M (0..4; 0 turns the
 * kernels off), BNB4_CUDA_GEMV_KERNEL=stream|stream2|stream4|table (m = 1: the stream kernel with U = 4
 * for plain and 2 for nested absmax (f32: 2), or with that U (f16/bf16), or the table kernel),
 * BNB4_CUDA_GEMV_TABLE=f32|h2 (the table kernel's code-pair table for f16/bf16 activations),
 * BNB4_CUDA_GEMV_CTAS=1..8 (at most that many resident CTAs per SM in either kernel's grid) and
 * BNB4_CUDA_GEMV_XS=0 (the stream kernel's activations never staged in shared memory). */
void read_settings() {
    if (g_gemv_max_m >= 0)
        return;
    const char *m = getenv("BNB4_CUDA_GEMV_MAX_M"), *t = getenv("BNB4_CUDA_GEMV_TABLE");
    const int mv = m && m[0] >= '0' && m[0] <= '4' && m[1] == '\0' ? m[0] - '0' : BNB4_CUDA_GEMV_MAX_M;
    g_gemv_table = t && t[0] == 'f' ? TABLE_F32 : t && t[0] == 'h' ? TABLE_H2 : BNB4_CUDA_GEMV_TABLE_DEFAULT;
    const char *c = getenv("BNB4_CUDA_GEMV_CTAS");
    g_gemv_ctas_cap = c && c[0] >= '1' && c[0] <= '8' && c[1] == '\0' ? c[0] - '0' : 0;
    g_gemv_xs = (int)bnb4_env_size("BNB4_CUDA_GEMV_XS", 1);
    const char *k = getenv("BNB4_CUDA_GEMV_KERNEL");
    g_gemv_stream = k && !strcmp(k, "table")     ? 0
                    : k && !strcmp(k, "stream")  ? 1
                    : k && !strcmp(k, "stream2") ? 2
                    : k && !strcmp(k, "stream4") ? 4
                                                 : BNB4_CUDA_GEMV_STREAM_DEFAULT;
    g_gemv_max_m = mv;
}

} // namespace

/* Staged activations (XS) where they fit beside the table (BNB4_CUDA_GEMV_XS=0 turns them off): f32 always (H200:
 * 2.0-2.6x faster, one CTA an SM at K = 14336 included, docs/performance.md v50); f16 / bf16 (7-9 % faster with as
 * many CTAs) only where an SM holds as many CTAs as without them, or as the kernel's registers allow */
int bnb4_cuda_gemv_stages_x(const bnb4_cuda_state *s, bnb4_dtype dt, int nested, size_t K) {
    read_settings();
    const size_t es = bnb4_dtype_size(dt), with = stream_smem(nested, true, K, es), without = stream_smem(nested, false, K, es);
    const int regs_cap = stream_min_ctas(es, stream_u(es, nested)), plain_ctas = (int)bnb4_cuda_ctas_by_smem(s, without);
    return g_gemv_xs && bnb4_cuda_smem_fits(s, with) &&
           (es == 4 || (int)bnb4_cuda_ctas_by_smem(s, with) >= (plain_ctas < regs_cap ? plain_ctas : regs_cap));
}

size_t bnb4_cuda_gemv_max_m(void) {
    read_settings();
    return (size_t)g_gemv_max_m;
}

int bnb4_cuda_gemv_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x) {
    if (m == 0 || m > bnb4_cuda_gemv_max_m())
        return 0;
    /* both kernels' table and nested map (66 KB: every device of compute capability 8.0 on gives a CTA 99 KB) */
    static_assert(kTableBytes == kStreamTableBytes, "one shared memory size for both kernels");
    if (!bnb4_cuda_smem_fits(s, kTableBytes + 256 * 4))
        return 0;
    /* measured: the tensor-core kernel beats the table kernel there (cuda_common.cuh) */
    if (dt != BNB4_F32 && w->absmax != NULL && w->rows > BNB4_CUDA_GEMV_PLAIN_MAX_N && !(g_gemv_stream && m == 1))
        return 0;
    const size_t n = w->rows * w->cols; /* validated: no overflow */
    /* 32-bit block indices, rows, k and per-warp item counts (n / 2048 items of 1024 k x 2 rows) */
    return n <= ((size_t)1 << 42) && w->cols % w->blocksize == 0 && w->blocksize >= 32 && bnb4_aligned(w->packed, 16) && bnb4_aligned(x, 16) &&
           w->cols <= 0x7fffffffu && w->rows <= 0x7fffffffu && n / w->blocksize <= 0xffffffffu &&
           (w->absmax != NULL || w->nested.blocksize <= 0xffffffffu);
}

bnb4_status bnb4_cuda_gemv(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                           const void *bias, void *y) {
    read_settings();
    GemvArgs a = {};
    bnb4_cuda_set_weight(a, w);
    a.N = (unsigned)w->rows;
    a.K = (unsigned)w->cols;
    a.M = (unsigned)m;
    a.steps = (unsigned)bnb4_div_up(w->cols, kStepK);
    a.groups = (unsigned)bnb4_div_up(w->rows, kRows);
    a.x = x;
    a.bias = bias;
    a.y = y;
    const bool nested = w->absmax == NULL;
    if (g_gemv_stream && m == 1) {
        if (dt == BNB4_F16)
            return nested ? launch_stream<__half, true>(s, a) : launch_stream<__half, false>(s, a);
        if (dt == BNB4_BF16)
            return nested ? launch_stream<__nv_bfloat16, true>(s, a) : launch_stream<__nv_bfloat16, false>(s, a);
        return nested ? launch_stream<float, true>(s, a) : launch_stream<float, false>(s, a);
    }
    switch (dt) {
    case BNB4_F16:
        return g_gemv_table == TABLE_F32 ? launch_m<__half, TABLE_F32>(s, a, nested)
                                         : launch_m<__half, TABLE_H2>(s, a, nested);
    case BNB4_BF16:
        return g_gemv_table == TABLE_F32 ? launch_m<__nv_bfloat16, TABLE_F32>(s, a, nested)
                                         : launch_m<__nv_bfloat16, TABLE_H2>(s, a, nested);
    default: /* float32 activations: exact float32 codes */
        return launch_m<float, TABLE_F32>(s, a, nested);
    }
}
