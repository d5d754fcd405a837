/*
 * cuda_gemm_f32_tile.cu - Y[m, N] = X[m, K] W^T + bias for float32 activations past the SIMT kernel's m
 * (BNB4_CUDA_SIMT_F32_MAX_M): a register-blocked CUDA-core tile kernel that decodes each weight once per tile
 * into shared memory.
 *
 * float32 has no tensor-core path that keeps its arithmetic (bitsandbytes dequantizes and multiplies in float32;
 * TF32 would round the operands), so past m = 48 it took dequantize + SGEMM, whose dequantize writes and SGEMM
 * reads 4 bytes a weight: 0.72-0.76x SGEMM's own speed at m = 64 (H200, docs/performance.md v51). Here a CTA reads
 * its 128 weight rows' 4-bit codes, decodes them exactly as bnb4_dequantize does (code x absmax, f32, subnormals
 * flushed) into shared memory, and multiplies them with 64 activation rows, accumulating in f32 with fused
 * multiply-adds: the arithmetic of the SIMT kernel, in another order.
 *
 * A chunk of 64 k a turn, two stages: while the CTA multiplies one, the next chunk's activations are copied in
 * (cp.async) and its packed weights loaded into registers, decoded into the other stage after the math. A thread
 * takes 8 weight rows x 4 activation rows (32 sums), each k step 2 + 1 16-byte shared loads for 32 FMAs (the
 * activations as float4s of 4 k, so 12 loads a 128 FMAs); the lanes' loads fall on distinct bank groups or share an
 * address (see the layouts below). Where the tiles do not fill the device (small N and m) the CTAs split K
 * (gridDim.z) and the last of a tile's CTAs to arrive adds their partial sums in a fixed order: the result does not
 * depend on which arrives last.
 */
#include "cuda_common.cuh"

namespace {

__constant__ float c_nf4_code[16] = {BNB4_NF4_CODEBOOK_VALUES};
__constant__ float c_fp4_code[16] = {BNB4_FP4_CODEBOOK_VALUES};

constexpr int kFtThreads = 256;
constexpr int kFtN = 128; /* weight rows a tile: 2 warps x 8 lanes x 8 */
constexpr int kFtM = 64;  /* activation rows a tile: 4 warps x 4 lanes x 4 */
constexpr int kFtK = 64;  /* k a chunk */
/* A stage: the decoded weights k-major, [kFtK][kFtN] (a warp's 8 lanes' float4s of a k step cover one 128-byte row),
 * then the activations as they lie in memory, [kFtM][kFtXPitch]: a warp's 4 lane rows read 4 consecutive activation
 * rows, and the pitch of 68 floats (17 16-byte units) puts their float4s of the same k on 4 distinct bank groups. */
constexpr int kFtXPitch = kFtK + 4;
constexpr size_t kFtTables = (16 + 256) * sizeof(float); /* code, nested map */
constexpr size_t kFtWStage = (size_t)kFtK * kFtN, kFtXStage = (size_t)kFtM * kFtXPitch; /* floats */
constexpr size_t kFtSmem = kFtTables + 2 * (kFtWStage + kFtXStage) * sizeof(float);    /* 99 KB */
/* a split of K takes at least 4 chunks, and a tile at most 32 splits (the last CTA adds their sums one after another) */
constexpr size_t kFtMinChunksSplit = 4, kFtMaxSplits = 32;

struct F32TileArgs : bnb4_cuda_weight_args {
    size_t N, K, M;
    const float *x, *bias;
    float *y;
    unsigned chunks_per_split; /* 64-k chunks a split of K takes (gridDim.z splits) */
    unsigned *counters;        /* split: a tile's arrivals (zero before and after) */
    float *partials;           /* split: [tile][split][kFtN x kFtM] */
};

template <bool NESTED>
__global__ void __launch_bounds__(kFtThreads, 2) gemm_4bit_f32_tile_kernel(F32TileArgs a) {
    extern __shared__ __align__(64) unsigned char ft_smem[];
    float *code = reinterpret_cast<float *>(ft_smem), *nested_map = code + 16;
    float *w_stages = reinterpret_cast<float *>(ft_smem + kFtTables), *x_stages = w_stages + 2 * kFtWStage;
    const int tid = threadIdx.x;
    if (tid < 16)
        code[tid] = a.quant_type == BNB4_NF4 ? c_nf4_code[tid] : c_fp4_code[tid];
    if (NESTED)
        for (int v = tid; v < 256; v += kFtThreads)
            nested_map[v] = a.nested_code[v];
    const uint32_t code_s = (uint32_t)__cvta_generic_to_shared(code);
    const size_t N = a.N, K = a.K, M = a.M, n0 = (size_t)blockIdx.x * kFtN, m0 = (size_t)blockIdx.y * kFtM;
    const size_t chunks = (K + kFtK - 1) / kFtK, c_begin = (size_t)blockIdx.z * a.chunks_per_split,
                 c_end = c_begin + a.chunks_per_split < chunks ? c_begin + a.chunks_per_split : chunks;

    /* Decoding: thread (dh, dn) takes weight row n0 + dn's 32 k at dh x 32 of each chunk, one 16-byte load (rows past
     * N read row N - 1 and their sums are not stored); a 32-k run lies in one block (blocksize >= 32, K % 32 == 0). */
    const int dn = tid % kFtN, dh = tid / kFtN;
    const size_t w_row = n0 + dn < N ? n0 + dn : N - 1;
    uint4 packed = make_uint4(0, 0, 0, 0);
    float scale = 0.0f;
    uint32_t q = 0; /* nested: the block's 8-bit code, decoded with `scale` (the nested absmax) when used */
    const auto load_chunk = [&](size_t c) {
        const size_t k = c * kFtK + dh * 32;
        if (k >= K)
            return;
        const size_t flat = w_row * K + k, b = flat >> a.bs_log2;
        asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(packed.x), "=r"(packed.y), "=r"(packed.z), "=r"(packed.w)
            : "l"(a.packed + flat / 2));
        if (NESTED) {
            q = __ldg(a.codes + b);
            scale = __ldg(a.nested_absmax + (b >> a.nbs_log2));
        } else {
            scale = __ldg(a.absmax + b);
        }
    };
    const auto decode_chunk = [&](size_t c, int st) {
        float *dst = w_stages + st * kFtWStage + dh * 32 * kFtN + dn;
        if (c * kFtK + dh * 32 >= K) { /* past K (K % 64 == 32): zeros, as the activations there */
#pragma unroll
            for (int e = 0; e < 32; e++)
                dst[e * kFtN] = 0.0f;
            return;
        }
        const float s = NESTED ? bnb4_dev_nested_scale(nested_map[q], scale, a.offset) : scale;
        const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
        for (int wi = 0; wi < 4; wi++)
#pragma unroll
            for (int bi = 0; bi < 4; bi++) { /* byte bi of word wi: elements 8 wi + 2 bi (high nibble) and the next */
                const uint32_t hi = words[wi] >> (8 * bi + 2), lo = bi ? words[wi] >> (8 * bi - 2) : words[wi] << 2;
                dst[(8 * wi + 2 * bi) * kFtN] = bnb4_dev_mul_ftz(bnb4_dev_code_at(code_s, hi), s);
                dst[(8 * wi + 2 * bi + 1) * kFtN] = bnb4_dev_mul_ftz(bnb4_dev_code_at(code_s, lo), s);
            }
    };
    /* Copying: a chunk's activations are kFtM rows of 16 16-byte units; thread t copies unit t % 16 of rows t / 16 +
     * 16 j (a half warp a row's 256 bytes). Rows past M and k past K are zero-filled (nothing read). */
    const int xq = tid % 16, xr = tid / 16;
    const uint32_t x_dst = (uint32_t)__cvta_generic_to_shared(x_stages + xr * kFtXPitch + xq * 4);
    const auto copy_chunk = [&](size_t c, int st) {
        const size_t k = c * kFtK + xq * 4;
#pragma unroll
        for (int j = 0; j < kFtM / 16; j++) {
            const size_t m = m0 + xr + 16 * j;
            const bool in = m < M && k < K;
            cp_async16(x_dst + (uint32_t)((st * kFtXStage + 16 * j * kFtXPitch) * sizeof(float)),
                       in ? a.x + m * K + k : a.x, in ? 16 : 0);
        }
        cp_async_commit();
    };

    /* The math: warp (wm, wn) = (warp / 2, warp % 2); lane bits 1-3 pick its weight rows, cn..cn + 3 and cn + 32..cn +
     * 35 (8 lanes' float4s one 128-byte row of the stage), bits 0 and 4 its activation rows, cm + 4 i (4 float4s on 4
     * bank groups). A 16-byte shared load returns 128 bytes a cycle, so a warp's takes 4 cycles, 2 where lanes l and l ^ 1
     * (or l and l ^ 2) load the same address: here lanes l and l ^ 1 share weights and l and l ^ 2 activations. With
     * lanes 0-7 on one activation row and 8 lanes' weight rows in turn, the weights' loads took 4 cycles and the FMA pipe
     * was 53 % busy (ncu, H200, 14336x4096 m = 64: 3.3 cycles a load on average, docs/performance.md v52). */
    const int warp = tid / 32, lane = tid % 32;
    const int cn = (warp % 2) * 64 + ((lane >> 1) & 7) * 4, cm = (warp / 2) * 16 + ((lane & 1) | (lane >> 4) << 1);
    float acc[4][8];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int e = 0; e < 8; e++)
            acc[i][e] = 0.0f;

    __syncthreads(); /* the tables */
    copy_chunk(c_begin, 0);
    load_chunk(c_begin);
    decode_chunk(c_begin, 0);
    cp_async_wait<0>();
    __syncthreads();
    int st = 0;
    for (size_t c = c_begin; c < c_end; c++, st ^= 1) {
        const bool next = c + 1 < c_end;
        if (next) { /* into the other stage, which every thread finished reading before the last barrier */
            copy_chunk(c + 1, st ^ 1);
            load_chunk(c + 1);
        }
        const float *ws = w_stages + st * kFtWStage + cn, *xs = x_stages + st * kFtXStage + cm * kFtXPitch;
#pragma unroll
        for (int kq = 0; kq < kFtK / 4; kq++) {
            float4 xv[4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                xv[i] = *reinterpret_cast<const float4 *>(xs + 4 * i * kFtXPitch + 4 * kq);
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                const float4 lo = *reinterpret_cast<const float4 *>(ws + (4 * kq + kk) * kFtN),
                             hi = *reinterpret_cast<const float4 *>(ws + (4 * kq + kk) * kFtN + 32);
                const float wv[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
                for (int i = 0; i < 4; i++) {
                    const float xe = kk == 0 ? xv[i].x : kk == 1 ? xv[i].y : kk == 2 ? xv[i].z : xv[i].w;
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        acc[i][e] = fmaf(xe, wv[e], acc[i][e]);
                }
            }
        }
        if (next) {
            decode_chunk(c + 1, st ^ 1);
            cp_async_wait<0>();
        }
        __syncthreads(); /* the next stage is written; this one is read */
    }

    /* The sums: straight to y, or (split) to this CTA's partials, the last of the tile's CTAs adding them all */
    if (gridDim.z > 1) {
        __shared__ bool s_last;
        const size_t tile = (size_t)blockIdx.y * gridDim.x + blockIdx.x;
        float4 *mine = reinterpret_cast<float4 *>(a.partials + (tile * gridDim.z + blockIdx.z) * (kFtN * kFtM));
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
            for (int h = 0; h < 2; h++)
                __stcg(mine + (2 * i + h) * kFtThreads + tid,
                       make_float4(acc[i][4 * h], acc[i][4 * h + 1], acc[i][4 * h + 2], acc[i][4 * h + 3]));
        __syncthreads(); /* every partial sum stored, then counted (bnb4_dev_arrive_acq_rel) */
        if (tid == 0)
            s_last = bnb4_dev_arrive_acq_rel(a.counters + tile) == gridDim.z - 1;
        __syncthreads();
        if (!s_last)
            return;
        if (tid == 0)
            a.counters[tile] = 0; /* for the next launch */
        /* split 0's sums, then the others' in order (a thread reads back its own positions of each: 8 loads in
         * flight a split) */
        const float4 *all = reinterpret_cast<const float4 *>(a.partials + tile * gridDim.z * (kFtN * kFtM));
        float4 sum[8];
#pragma unroll
        for (int p = 0; p < 8; p++)
            sum[p] = __ldcg(all + p * kFtThreads + tid);
#pragma unroll 1
        for (unsigned z = 1; z < gridDim.z; z++) {
            float4 part[8];
#pragma unroll
            for (int p = 0; p < 8; p++)
                part[p] = __ldcg(all + (size_t)z * (kFtN * kFtM / 4) + p * kFtThreads + tid);
#pragma unroll
            for (int p = 0; p < 8; p++)
                sum[p].x += part[p].x, sum[p].y += part[p].y, sum[p].z += part[p].z, sum[p].w += part[p].w;
        }
#pragma unroll
        for (int p = 0; p < 8; p++) /* (position p = 2 i + h: row i, rows n of half h) */
            acc[p / 2][4 * (p % 2)] = sum[p].x, acc[p / 2][4 * (p % 2) + 1] = sum[p].y,
                               acc[p / 2][4 * (p % 2) + 2] = sum[p].z, acc[p / 2][4 * (p % 2) + 3] = sum[p].w;
    }
    float b[8];
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const size_t n = n0 + cn + (e / 4) * 32 + e % 4;
        b[e] = a.bias && n < N ? a.bias[n] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const size_t m = m0 + cm + 4 * i;
        if (m >= M)
            continue;
#pragma unroll
        for (int e = 0; e < 8; e++) {
            const size_t n = n0 + cn + (e / 4) * 32 + e % 4;
            if (n < N)
                a.y[m * N + n] = a.bias ? acc[i][e] + b[e] : acc[i][e];
        }
    }
}

bool g_f32_tile_smem_set[2][64]; /* per nested, per device: the attribute set */

template <bool NESTED> bnb4_status launch_f32_tile(bnb4_cuda_state *s, const F32TileArgs &a, dim3 grid) {
    const auto kernel = gemm_4bit_f32_tile_kernel<NESTED>;
    bool &set = g_f32_tile_smem_set[NESTED][(unsigned)s->device & 63];
    if (!set) {
        const bnb4_status st = bnb4_cuda_check(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)kFtSmem),
            "bnb4_gemm (f32 tile): shared memory");
        if (st != BNB4_OK)
            return st;
        set = true;
    }
    kernel<<<grid, kFtThreads, kFtSmem, s->stream>>>(a);
    return BNB4_CUDA_LAUNCH_CHECK("bnb4_gemm (f32 tile)");
}

} // namespace

size_t bnb4_cuda_f32_tile_max_m(void) {
    return bnb4_env_size("BNB4_CUDA_F32_TILE_MAX_M", BNB4_CUDA_F32_TILE_MAX_M);
}

int bnb4_cuda_f32_tile_enabled(const bnb4_cuda_state *s, size_t m) {
    return m <= bnb4_cuda_f32_tile_max_m() && bnb4_div_up(m, kFtM) <= 65535 && bnb4_cuda_smem_fits(s, kFtSmem);
}

int bnb4_cuda_f32_tile_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x) {
    return dt == BNB4_F32 && bnb4_cuda_f32_tile_enabled(s, m) && w->cols % 32 == 0 && bnb4_aligned(w->packed, 16) &&
           bnb4_aligned(x, 16) && (w->absmax || (w->nested.blocksize & (w->nested.blocksize - 1)) == 0) &&
           bnb4_div_up(w->rows, kFtN) <= INT32_MAX;
}

size_t bnb4_cuda_f32_tile_splits(const bnb4_cuda_state *s, size_t N, size_t K, size_t m) {
    const size_t tiles = bnb4_div_up(N, kFtN) * bnb4_div_up(m, kFtM), chunks = bnb4_div_up(K, kFtK);
    size_t splits = bnb4_env_size("BNB4_CUDA_F32_TILE_SPLITS", 0); /* (read per call: tests set it) */
    if (splits == 0) {
        /* the CTAs that run at once (two an SM where two fit), as many of them as the tiles leave idle: a split
         * makes no second wave */
        const size_t per_sm = bnb4_cuda_smem_fits(s, 2 * (kFtSmem + kBnb4StaticSmemReserve)) ? 2 : 1,
                     slots = per_sm * (size_t)s->sm_count, most = chunks / kFtMinChunksSplit;
        splits = slots / tiles;
        splits = splits < most ? splits : most;
        splits = splits < kFtMaxSplits ? splits : kFtMaxSplits;
    }
    splits = splits < 1 ? 1 : splits > chunks ? chunks : splits > 65535 ? 65535 : splits;
    return bnb4_div_up(chunks, bnb4_div_up(chunks, splits)); /* (no split empty) */
}

bnb4_status bnb4_cuda_gemm_f32_tile(bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m, const void *x, const void *bias,
                                    void *y) {
    F32TileArgs a = {};
    bnb4_cuda_set_weight(a, w);
    a.N = w->rows;
    a.K = w->cols;
    a.M = m;
    a.x = static_cast<const float *>(x);
    a.bias = static_cast<const float *>(bias);
    a.y = static_cast<float *>(y);
    const size_t tiles = bnb4_div_up(a.N, kFtN) * bnb4_div_up(m, kFtM), chunks = bnb4_div_up(a.K, kFtK),
                 splits = bnb4_cuda_f32_tile_splits(s, a.N, a.K, m);
    a.chunks_per_split = (unsigned)bnb4_div_up(chunks, splits);
    if (splits > 1) {
        size_t bytes = 0;
        if (__builtin_mul_overflow(tiles * splits, (size_t)kFtN * kFtM * sizeof(float), &bytes))
            return bnb4_fail(BNB4_ERR_OVERFLOW, "bnb4_gemm (f32 tile): %zu tiles x %zu splits overflow", tiles, splits);
        const bnb4_status st = bnb4_cuda_splitk(s, tiles, bytes, &a.counters, &a.partials);
        if (st != BNB4_OK)
            return st;
    }
    const dim3 grid((unsigned)bnb4_div_up(a.N, kFtN), (unsigned)bnb4_div_up(m, kFtM), (unsigned)splits);
    return a.absmax ? launch_f32_tile<false>(s, a, grid) : launch_f32_tile<true>(s, a, grid);
}
