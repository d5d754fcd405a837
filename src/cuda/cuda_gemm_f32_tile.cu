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
 * A chunk of 32 k a turn, two stages: while the CTA multiplies one, the next chunk's activations are copied into the
 * other (cp.async, transposed) and its packed weights loaded into registers, decoded into it after the math. A CTA of 4
 * warps takes 128 weight rows x 64 activation rows, a thread 8 x 8 (64 sums), each k step 4 16-byte shared loads for
 * 64 FMAs, the lanes paired so that each load returns in 2 cycles (see the math below); 4 CTAs fit an SM. Where the
 * tiles leave the device's CTA slots idle, or fill the last wave only in part, the CTAs split K (gridDim.z) and the last
 * of a tile's CTAs to arrive adds their partial sums in a fixed order: the result does not depend on which arrives
 * last.
 */
#include "cuda_common.cuh"

namespace {

__constant__ float c_nf4_code[16] = {BNB4_NF4_CODEBOOK_VALUES};
__constant__ float c_fp4_code[16] = {BNB4_FP4_CODEBOOK_VALUES};

constexpr int kFtThreads = 128;
constexpr int kFtN = 128; /* weight rows a tile: 2 warps x 8 lanes x 8 */
constexpr int kFtM = 64;  /* activation rows a tile: 2 warps x 4 lanes x 8 */
constexpr int kFtK = 32;  /* k a chunk */
/* A stage: the decoded weights and the activations, both k-major ([kFtK][kFtN], [kFtK][kFtXPitch]), so a k step's 8
 * weights and 8 activations of a thread are two float4s each. The activations come in transposed, by 4-byte cp.async
 * (a warp's copy takes 8 k x 4 rows: 4 32-byte sectors); the pitch of 68 floats puts those 32 lanes' stores on 32
 * distinct banks. */
constexpr int kFtXPitch = kFtM + 4;
constexpr size_t kFtWStage = (size_t)kFtK * kFtN, kFtXStage = (size_t)kFtK * kFtXPitch; /* floats */
constexpr size_t kFtSmem = kBnb4CodeTablesBytes + 2 * (kFtWStage + kFtXStage) * sizeof(float); /* 50 KB */
constexpr int kFtCtasSm = 4; /* CTAs an SM at most (the launch bound: 128 registers a thread) */
/* a split of K takes at least 4 chunks, a tile at most 32 splits (the last CTA adds their sums one after another), and
 * the partial sums at most 128 MiB */
constexpr size_t kFtMinChunksSplit = 4, kFtMaxSplits = 32, kFtMaxPartialBytes = (size_t)128 << 20;

struct F32TileArgs : bnb4_cuda_weight_args {
    size_t N, K, M;
    const float *x, *bias;
    float *y;
    unsigned chunks_per_split; /* chunks of kFtK a split of K takes (gridDim.z splits) */
    unsigned *counters;        /* split: a tile's arrivals (zero before and after) */
    float *partials;           /* split: [tile][split][kFtN x kFtM] */
};

template <bool NESTED>
__global__ void __launch_bounds__(kFtThreads, kFtCtasSm) gemm_4bit_f32_tile_kernel(F32TileArgs a) {
    extern __shared__ __align__(64) unsigned char ft_smem[];
    float *code = reinterpret_cast<float *>(ft_smem), *nested_map = code + 16;
    float *w_stages = reinterpret_cast<float *>(ft_smem + kBnb4CodeTablesBytes), *x_stages = w_stages + 2 * kFtWStage;
    const int tid = threadIdx.x;
    bnb4_dev_fill_code_tables<NESTED>(code, a, c_nf4_code, c_fp4_code);
    const uint32_t code_s = (uint32_t)__cvta_generic_to_shared(code);
    const size_t N = a.N, K = a.K, M = a.M, n0 = (size_t)blockIdx.x * kFtN, m0 = (size_t)blockIdx.y * kFtM;
    const size_t chunks = (K + kFtK - 1) / kFtK, c_begin = (size_t)blockIdx.z * a.chunks_per_split,
                 c_end = c_begin + a.chunks_per_split < chunks ? c_begin + a.chunks_per_split : chunks;

    /* Decoding: thread t takes weight row n0 + t's 32 k of a chunk, one 16-byte load (rows past N read row N - 1 and
     * their sums are not stored); a chunk lies in one block (blocksize >= 32, K % 32 == 0). */
    const size_t w_row = n0 + tid < N ? n0 + tid : N - 1;
    uint4 packed = make_uint4(0, 0, 0, 0);
    float scale = 0.0f;
    uint32_t q = 0; /* nested: the block's 8-bit code, decoded with `scale` (the nested absmax) when used */
    const auto load_chunk = [&](size_t c) {
        const size_t flat = w_row * K + c * kFtK, b = flat >> a.bs_log2;
        packed = __ldg(reinterpret_cast<const uint4 *>(a.packed + flat / 2));
        if (NESTED) {
            q = __ldg(a.codes + b);
            scale = __ldg(a.nested_absmax + (b >> a.nbs_log2));
        } else {
            scale = __ldg(a.absmax + b);
        }
    };
    const auto decode_chunk = [&](int st) {
        float *dst = w_stages + st * kFtWStage + tid;
        const float s = NESTED ? bnb4_dev_nested_scale(nested_map[q], scale, a.offset) : scale;
        const uint32_t words[4] = {packed.x, packed.y, packed.z, packed.w};
#pragma unroll
        for (int wi = 0; wi < 4; wi++) { /* word wi: k 8 wi .. 8 wi + 7 */
            float v[8];
            bnb4_dev_decode_word(code_s, words[wi], s, v);
#pragma unroll
            for (int j = 0; j < 8; j++)
                dst[(8 * wi + j) * kFtN] = v[j];
        }
    };
    /* Activations: copy j (0..15) of thread t = (warp w, lane l) brings k 8 (j % 4) + l % 8 of row 4 (w + 4 (j / 4)) +
     * l / 8 straight into its place in the stage; rows past M are zero-filled (nothing read). */
    const int warp = tid / 32, lane = tid % 32;
    const float *x_src[4];
    uint32_t x_bytes[4], x_dst = (uint32_t)__cvta_generic_to_shared(x_stages + (lane % 8) * kFtXPitch + lane / 8);
#pragma unroll
    for (int r = 0; r < 4; r++) {
        const size_t row = m0 + 4 * (warp + 4 * r) + lane / 8;
        x_src[r] = a.x + (row < M ? row * K : 0) + lane % 8;
        x_bytes[r] = row < M ? 4u : 0u;
    }
    const auto copy_chunk = [&](size_t c, int st) {
#pragma unroll
        for (int j = 0; j < 16; j++)
            cp_async4(x_dst + (uint32_t)((st * kFtXStage + 8 * (j % 4) * kFtXPitch + 4 * (warp + 4 * (j / 4))) *
                                         sizeof(float)),
                      x_src[j / 4] + c * kFtK + 8 * (j % 4), x_bytes[j / 4]);
        cp_async_commit();
    };

    /* The math: warp (wm, wn) = (warp / 2, warp % 2) takes 64 weight rows x 32 activation rows; lane bits 1-3 pick the
     * thread's weight rows, cn..cn + 3 and cn + 32..cn + 35, bits 0 and 4 its activation rows, cm..cm + 3 and cm + 16..
     * cm + 19: each k step 4 16-byte shared loads for 64 FMAs. A 16-byte shared load returns 128 bytes a cycle, so a
     * warp's takes 4 cycles, 2 where lanes l and l ^ 1 (or l and l ^ 2) load the same address: here lanes l and l ^ 1
     * share weights and l and l ^ 2 activations (ncu, H200: with neither pairing the loads averaged 3.3 cycles and
     * bounded the FMA pipe, docs/performance.md v52). */
    const int cn = (warp % 2) * 64 + ((lane >> 1) & 7) * 4, cm = (warp / 2) * 32 + ((lane & 1) | (lane >> 4) << 1) * 4;
    float acc[8][8]; /* [activation row][weight row] */
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int e = 0; e < 8; e++)
            acc[i][e] = 0.0f;

    __syncthreads(); /* the tables */
    copy_chunk(c_begin, 0);
    load_chunk(c_begin);
    decode_chunk(0);
    cp_async_wait<0>();
    __syncthreads();
    int st = 0;
    for (size_t c = c_begin; c < c_end; c++, st ^= 1) {
        const bool next = c + 1 < c_end;
        if (next) { /* into the other stage, which every thread finished reading before the last barrier */
            copy_chunk(c + 1, st ^ 1);
            load_chunk(c + 1);
        }
        const float *ws = w_stages + st * kFtWStage + cn, *xs = x_stages + st * kFtXStage + cm;
#pragma unroll
        for (int k = 0; k < kFtK; k++) {
            const float4 wl = *reinterpret_cast<const float4 *>(ws + k * kFtN),
                         wh = *reinterpret_cast<const float4 *>(ws + k * kFtN + 32),
                         xl = *reinterpret_cast<const float4 *>(xs + k * kFtXPitch),
                         xh4 = *reinterpret_cast<const float4 *>(xs + k * kFtXPitch + 16);
            const float wv[8] = {wl.x, wl.y, wl.z, wl.w, wh.x, wh.y, wh.z, wh.w},
                        xv[8] = {xl.x, xl.y, xl.z, xl.w, xh4.x, xh4.y, xh4.z, xh4.w};
#pragma unroll
            for (int i = 0; i < 8; i++)
#pragma unroll
                for (int e = 0; e < 8; e++)
                    acc[i][e] = fmaf(xv[i], wv[e], acc[i][e]);
        }
        if (next) {
            decode_chunk(st ^ 1);
            cp_async_wait<0>();
        }
        __syncthreads(); /* the next stage is written; this one is read */
    }

    /* The sums: straight to y, or (split) to this CTA's partials, the last of the tile's CTAs adding them all */
    constexpr int kVecs = 16; /* a thread's 64 sums as float4s: (activation row i, weight half h) = 2 i + h */
    if (gridDim.z > 1) {
        __shared__ bool s_last;
        const size_t tile = (size_t)blockIdx.y * gridDim.x + blockIdx.x;
        float4 *mine = reinterpret_cast<float4 *>(a.partials + (tile * gridDim.z + blockIdx.z) * (kFtN * kFtM));
#pragma unroll
        for (int p = 0; p < kVecs; p++) {
            const float *v = &acc[p / 2][4 * (p % 2)];
            __stcg(mine + p * kFtThreads + tid, make_float4(v[0], v[1], v[2], v[3]));
        }
        __syncthreads(); /* every partial sum stored, then counted (bnb4_dev_arrive_acq_rel) */
        if (tid == 0)
            s_last = bnb4_dev_arrive_acq_rel(a.counters + tile) == gridDim.z - 1;
        __syncthreads();
        if (!s_last)
            return;
        if (tid == 0)
            a.counters[tile] = 0; /* for the next launch */
        /* split 0's sums, then the others' in order (a thread reads back its own positions of each: 16 loads in
         * flight a split) */
        const float4 *all = reinterpret_cast<const float4 *>(a.partials + tile * gridDim.z * (kFtN * kFtM));
        float4 sum[kVecs];
#pragma unroll
        for (int p = 0; p < kVecs; p++)
            sum[p] = __ldcg(all + p * kFtThreads + tid);
#pragma unroll 1
        for (unsigned z = 1; z < gridDim.z; z++) {
            float4 part[kVecs];
#pragma unroll
            for (int p = 0; p < kVecs; p++)
                part[p] = __ldcg(all + (size_t)z * (kFtN * kFtM / 4) + p * kFtThreads + tid);
#pragma unroll
            for (int p = 0; p < kVecs; p++)
                sum[p].x += part[p].x, sum[p].y += part[p].y, sum[p].z += part[p].z, sum[p].w += part[p].w;
        }
#pragma unroll
        for (int p = 0; p < kVecs; p++) {
            float *v = &acc[p / 2][4 * (p % 2)];
            v[0] = sum[p].x, v[1] = sum[p].y, v[2] = sum[p].z, v[3] = sum[p].w;
        }
    }
    float b[8];
#pragma unroll
    for (int e = 0; e < 8; e++) {
        const size_t n = n0 + cn + (e / 4) * 32 + e % 4;
        b[e] = a.bias && n < N ? a.bias[n] : 0.0f;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const size_t m = m0 + cm + (i / 4) * 16 + i % 4;
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

unsigned g_f32_tile_smem_limit[2][64]; /* per nested (bnb4_cuda_smem_limit) */

template <bool NESTED> bnb4_status launch_f32_tile(bnb4_cuda_state *s, const F32TileArgs &a, dim3 grid) {
    const auto kernel = gemm_4bit_f32_tile_kernel<NESTED>;
    const bnb4_status st = bnb4_cuda_check(bnb4_cuda_smem_limit(s, kernel, kFtSmem, g_f32_tile_smem_limit[NESTED]),
                                           "bnb4_gemm (f32 tile): shared memory");
    if (st != BNB4_OK)
        return st;
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
    return dt == BNB4_F32 && bnb4_cuda_f32_tile_enabled(s, m) && w->rows > 0 && w->cols > 0 && w->cols % 32 == 0 &&
           bnb4_aligned(w->packed, 16) && bnb4_aligned(x, 4) && bnb4_cuda_scales_by_shift(w) &&
           bnb4_div_up(w->rows, kFtN) <= INT32_MAX && w->cols / kFtK <= UINT32_MAX; /* (grid x; chunks_per_split) */
}

size_t bnb4_cuda_f32_tile_splits(const bnb4_cuda_state *s, size_t N, size_t K, size_t m) {
    const size_t tiles = bnb4_div_up(N, kFtN) * bnb4_div_up(m, kFtM), chunks = bnb4_div_up(K, kFtK);
    const size_t forced = bnb4_env_size("BNB4_CUDA_F32_TILE_SPLITS", 0); /* (read per call: tests set it) */
    if (forced) {
        const size_t splits = forced > chunks ? chunks : forced > 65535 ? 65535 : forced;
        return bnb4_div_up(chunks, bnb4_div_up(chunks, splits)); /* (no split empty) */
    }
    /* The split count whose CTAs finish first: waves (of as many CTAs an SM as its shared memory and the launch bound
     * allow) x (chunks a split + 1, the prologue's and the sums' share). On the H200 (528 slots) 28672x8192 at m = 64
     * (224 tiles) takes 7 splits of 37 chunks in 3 waves, as at m = 96 (448 tiles: 6 waves), where unsplit it took
     * 2318 us against 1479 (2 waves of 256 chunks, the second of 52 tiles; v52 at 3 CTAs an SM also took 1036 us
     * unsplit at m = 64, one wave with 168 slots idle, against 831 split; docs/performance.md v52, v53). A larger count
     * must gain 2 %. */
    const size_t fit = bnb4_cuda_ctas_by_smem(s, kFtSmem), per_sm = fit < kFtCtasSm ? (fit ? fit : 1) : kFtCtasSm,
                 slots = per_sm * (size_t)(s->sm_count > 0 ? s->sm_count : 1),
                 most = chunks / kFtMinChunksSplit < kFtMaxSplits ? chunks / kFtMinChunksSplit : kFtMaxSplits,
                 tile_bytes = (size_t)kFtN * kFtM * sizeof(float);
    size_t best = 1, best_cost = bnb4_div_up(tiles, slots) * (chunks + 1);
    for (size_t splits = 2; splits <= most && tiles <= kFtMaxPartialBytes / tile_bytes / splits; splits++) {
        const size_t per = bnb4_div_up(chunks, splits), used = bnb4_div_up(chunks, per),
                     cost = bnb4_div_up(tiles * used, slots) * (per + 1);
        if (cost * 50 < best_cost * 49)
            best = used, best_cost = cost;
    }
    return best;
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
