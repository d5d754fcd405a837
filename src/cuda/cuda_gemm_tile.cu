/*
 * cuda_gemm_tile.cu - Y[m, N] = X[m, K] W^T + bias for m past the pipe kernel's 64 (by default every m >= 65
 * on large weights, and on smaller ones where its tiles fill the grid: BNB4_CUDA_TILE_*, tile_rows) with
 * f16/bf16 activations on compute capability 9.0 (sm_90a code):
 * gemm_4bit_<dt>__tile_wgmma_m64nNk16, a fused tensor-core kernel where the weights are decoded into
 * registers and never written out (dequantize + cuBLAS writes and reads the whole dense weight per call).
 *
 *  - Tiles: 128 weight rows x BX activation rows (the wgmma's n: 128 at m <= 128 and 257..384, else 256;
 *    on weights under BNB4_CUDA_TILE_MIN_WEIGHTS the one that fills the grid), all of K.
 *    Tile t is (weight tile t / m_tiles, activation tile t % m_tiles), so CTAs running side by side share
 *    weight tiles (one DRAM read) and the activations' k slices (L2). A tile is a run of K / 64 steps of 64 k;
 *    the steps of all tiles are cut into equal runs over a persistent grid of at most one CTA per SM:
 *    whole tiles or equal parts of a tile where that makes the runs at most 17.5 % longer than an even
 *    split of all steps (stream-K: no partial last wave), else stream-K (bnb4_cuda_steps_per_cta).
 *  - Loads (one lane of a producer warpgroup): per step one tensor copy of the activations (BX rows x 64
 *    k, 128-byte swizzle: what wgmma reads as B), one of the packed weights (128 rows x 32 bytes, 32-byte
 *    swizzle) and one of the rows' scales into a ring of stages, with full / empty mbarriers per stage.
 *  - Math (consumer warpgroups of 64 weight rows; BX = 256: 2, BX = 128: 4, the even and the odd steps'
 *    pairs, see TileShape): a warpgroup's wgmma.m64nBXk16 takes the weights as A from registers and the
 *    stage's activations as B. Thread (g, c) of a warp holds rows g and g + 8
 *    of its 16; for k-step s its A registers are the k 16 s + 2 c, + 1 (byte 8 s + c of the row's 32 bytes)
 *    and 16 s + 2 c + 8, + 9 (byte 8 s + 4 + c): byte c of words 2 s and 2 s + 1. Each byte becomes its two
 *    values with one PRMT and one load from the code-pair table (cuda_sm90.cuh), then one packed multiply
 *    by the block scale. A step's 4 wgmmas run while the next step is decoded; its stage goes back to
 *    the producer once they are done.
 *  - Block scales: a first small kernel (tile_scales_kernel) writes every row's scale for every step
 *    (nested absmax decoded), steps-major, into the context's scratch (bnb4_cuda_scratch), so each stage
 *    gets its 128 rows' scales as a third tensor copy: the main loop reads nothing from global memory
 *    itself (loading them there, one step ahead, left every step waiting ~1 us on their DRAM latency:
 *    docs/performance.md v13). With plain absmax it is mostly skipped (TileScales, tile_scale_source): the
 *    third copy brings each row's 16-byte run of absmax holding the step's block, which the consumers round
 *    (v40, v41).
 *  - Ends of tiles: a tile one CTA covered is stored directly (bias added in f32, one rounding), as 16-byte
 *    runs through shared memory (stmatrix.trans) where N % 8 == 0 and y is aligned; a tile several CTAs
 *    share is summed through the split-K workspace by the last to arrive, in contributor order
 *    (deterministic), as in cuda_gemm_pipe.cuh.
 *
 * Requirements (bnb4_cuda_tile_fits): compute capability 9.0, an sm_90a build, f16/bf16, K % 32 == 0,
 * 16-byte-aligned packed weights and activations, fewer than 2^31 rows and columns.
 */
#include <algorithm>
#include <type_traits>

#include "cuda_sm90.cuh"

namespace {

[[maybe_unused]] __constant__ float c_tile_nf4[16] = {BNB4_NF4_CODEBOOK_VALUES};
[[maybe_unused]] __constant__ float c_tile_fp4[16] = {BNB4_FP4_CODEBOOK_VALUES};

constexpr int kTileRows = 128;                   /* weight rows per tile: 2 warpgroups x 64 */
constexpr int kStepK = 64;                       /* k per step */
constexpr int kWRowBytes = kStepK / 2;           /* a weight row's packed bytes per step */
constexpr int kWBytes = kTileRows * kWRowBytes;  /* 4 KB */
constexpr int kSBytes = kTileRows * 2 * 4;      /* the rows' scales: 1 or 2 per row (TileArgs::pairs) */
constexpr int kGroupWarps = 8, kGroupThreads = kGroupWarps * 32; /* a k group: 2 consumer warpgroups, 128 rows */
constexpr int kProducerThreads = 128;           /* the producer warpgroup (one lane of it issues the copies) */
/* Where a step's block scales come from (a template parameter of the kernel; tile_scale_source picks it):
 *  - kScalesPrePass: tile_scales_kernel's pairs, one box of the step's 128 rows;
 *  - kScalesAbsmax: plain absmax straight from the weight, per step a box of each row's 16-byte aligned run of
 *    4 floats holding the step's block (a tensor copy's start must be 16-byte aligned along the row: from the
 *    step's own column on it faulted), which the consumers round to their pairs; whole 64-k steps each inside
 *    one block (blocksize >= 64: one scale a step). */
enum TileScales { kScalesPrePass, kScalesAbsmax };
constexpr int kRawRowBytes = 16, kRawBytes = kTileRows * kRawRowBytes;
/* kScalesAbsmax: the absmax column (a row's block) of step `step`, one block a step (blocksize >= 64) */
[[maybe_unused]] __device__ __forceinline__ unsigned step_block(unsigned step, int bs_log2) { return step >> (bs_log2 - 6); }

/* Consumers: at BX = 256, one k group (every step) with two fragment sets, so a step's wgmmas run while the
 * next step is decoded. At BX = 128 two k groups, the even and the odd steps of the CTA's run, each with one
 * set, their sums added at a tile's end: a warp's decode chain per step, not the tensor cores, bounded one
 * group there (docs/performance.md v27, v28), and four warpgroups hide it. Registers per thread: the launch
 * bounds give every thread 65536 / threads; the producer warpgroup gives most of its share back
 * (setmaxnreg), so the consumers' accumulators (BX / 2 per thread) and fragments fit without spills (112 at
 * BX = 128: one fragment set, not two). */
template <int BX, TileScales SRC> struct TileShape {
    static constexpr bool KSplit = BX == 128;
    static constexpr int Groups = KSplit ? 2 : 1;
    static constexpr int ConsumerThreads = Groups * kGroupThreads, Threads = ConsumerThreads + kProducerThreads;
    /* setmaxnreg.inc only takes what .dec gave back: 640 threads start at 96, the producer's 128 give 72
     * each (9216), so 512 consumers reach 112, not 120 (at 120 the tile tests hung: docs/performance.md v28) */
    static constexpr int ProducerRegs = KSplit ? 24 : 40, ConsumerRegs = KSplit ? 112 : 232;
    static_assert((65536 / Threads / 8 * 8 - ProducerRegs) * kProducerThreads >=
                      (ConsumerRegs - 65536 / Threads / 8 * 8) * ConsumerThreads,
                  "the consumers' registers come from the producer's");
    static constexpr int NT = BX / 8;                          /* 8-column accumulator tiles */
    static constexpr int XBytes = BX * kStepK * 2;             /* BX rows x 128 bytes */
    /* the scales' area: the pre-pass's pairs or a box of the rows' absmax runs; with the k split the pairs' 1 KB
     * unless the box is taken (256 rows: always 2 KB, the stages' room is the same) */
    static constexpr int SBytes = KSplit && SRC == kScalesPrePass ? kSBytes : kRawBytes;
    static_assert(kRawBytes >= kSBytes, "the scales' area holds either");
    static constexpr int StageBytes = XBytes + kWBytes + SBytes; /* a multiple of 1024 (the swizzles' period) */
    /* k split: the odd group's sums cross to the even one half a set at a time through the pair table's unused
     * upper halves (each 256-byte row holds its 32 lanes' entries in the first 128 bytes): 32 KB a half, which
     * as a buffer of its own left room for 6 stages only with the pre-pass's 1 KB of scales (docs/performance.md
     * v41; crossing in quarters instead made ptxas schedule the step's loads later, 20 % slower) */
    static_assert(!KSplit || NT * 4 / 2 * kGroupWarps * 256 <= kPairTableBytes, "a half of the sums fits the table");
    /* a whole tile's stores go through 512 bytes a warp of the group that stores it (finish_tile) */
    static constexpr int EpiBytes = kGroupWarps * 512;
    /* as many as fit beside the tables and the store buffers in the 227 KB an SM gives one CTA (2 KB kept for
     * the static data, after which the dynamic shared memory starts at a whole KB: see the kernel's smem);
     * k split: an even number, so each group's steps keep to their own slots */
    static constexpr int FitStages = (227 * 1024 - 2048 - kPairTableBytes - EpiBytes) / StageBytes;
    static constexpr int Stages = (FitStages > 8 ? 8 : FitStages) & (KSplit ? ~1 : ~0);
    static constexpr int SmemBytes = kPairTableBytes + EpiBytes + Stages * StageBytes;
    static_assert(Stages >= 3 + KSplit, "a pipeline needs 3 stages (k split: 2 per group)");
    static_assert(Stages == (KSplit ? 6 : 4), "the stages measured (docs/performance.md v29, v40)");
    static_assert(StageBytes % 1024 == 0 && EpiBytes % 1024 == 0,
                  "stages keep the swizzles' 1024-byte alignment");
};

/* named barrier `kId` of kThreads threads (1: the only k group, at BX = 256; 2: both groups of the k split) */
template <int kId, int kThreads> __device__ __forceinline__ void bar_sync() {
    asm volatile("bar.sync %0, %1;" ::"n"(kId), "n"(kThreads) : "memory");
}

struct TileArgs : bnb4_cuda_weight_args {
    size_t N, K, M;
    const void *bias;
    void *y;
    float *ws;          /* [ctas][2][BX][128] partial sums: a CTA's first and last tile */
    unsigned *counters; /* one per tile */
    unsigned k_steps, m_tiles, iters, per_cta;
    unsigned pairs;     /* scales per row and step: 2 (one per 32-k half: blocksize 32, or K % 64 == 32) or 1 */
    unsigned vec_y;     /* y 16-byte aligned and N % 8 == 0: whole tiles stored as 16-byte runs of 8 rows */
    unsigned x_rows;    /* the activation rows a stage's copy brings: BX, or m (launch_tile_from) */
};

/* The scales of every (step, row): scales[step][row * pairs + p] = the scale of k 64 step + 32 p of the
 * row (0 past K), nested absmax decoded as bnb4_dequantize does, as the T pair (scale, scale) the decode
 * multiplies by (rounded once, here, instead of once per step in the main loop); rows padded to `row_pad`
 * entries with zeros (a tensor copy's row stride is a multiple of 16 bytes).
 * A transpose: absmax is row-major (a row's blocks along k) and the scales step-major, so a CTA takes 32
 * entries x 32 steps, reads them with the lanes along the steps (a row's consecutive blocks) and writes them
 * through shared memory with the lanes along the entries; both sides coalesced, and no division (a
 * thread per entry with 64-bit divisions and 8-way scattered reads: 9.5 against 7.3 us alone on 4096x14336;
 * m = 128 on the three larger shapes 1-10 % faster: docs/performance.md v19). Grid: x over entry tiles, y
 * strided over step tiles. */
struct TileScaleArgs : bnb4_cuda_weight_args {
    size_t N, K, row_pad, k_steps;
    unsigned pairs;
    unsigned early; /* the weight is no output the previous kernel may still write (bnb4_cuda_weights_may_be_
                       pending): the first pass's loads go before the wait, overlapping that kernel's end */
    uint32_t *scales;
};
constexpr int kScaleTile = 32, kScaleRowsPerPass = 8; /* 32 x 8 threads, 4 entries each per tile */
template <typename T> __global__ void __launch_bounds__(kScaleTile * kScaleRowsPerPass)
    tile_scales_kernel(TileScaleArgs a) {
#if BNB4_HAS_TMA
    /* (before the wait: the tile kernel that follows reads nothing before its own; it is the one whose
     * signal must come after its wait, see the pipe kernel's early stages, cuda_gemm_pipe.cuh) */
    pdl_launch_dependents();
    if (!a.early)
        pdl_wait(); /* the weight may come from the previous kernel */
#endif
    __shared__ uint32_t tile[kScaleTile][kScaleTile + 1]; /* [entry][step], padded: no bank conflicts */
    /* nested: the 8-bit code's 256 values, one a thread, looked up here instead of in global memory - the
     * code's load then no longer waits for the block's code (one round trip to memory, not two, before the
     * first write; the pre-pass is on the tile kernel's critical path) */
    __shared__ float code_values[256];
    static_assert(kScaleTile * kScaleRowsPerPass == 256, "a thread per code value");
    const int tx = threadIdx.x, ty = threadIdx.y;
    const bool nested = a.absmax == nullptr;
    const float code_value = nested ? __ldg(a.nested_code + ty * kScaleTile + tx) : 0.0f;
    bool first_pass = true;
    const size_t e0 = (size_t)blockIdx.x * kScaleTile;
    for (size_t s0 = (size_t)blockIdx.y * kScaleTile; s0 < a.k_steps; s0 += (size_t)gridDim.y * kScaleTile) {
        const size_t step = s0 + tx;
        /* every load of the pass first (plain: the absmax; nested: the code and its nested absmax) */
        constexpr int kPer = kScaleTile / kScaleRowsPerPass;
        float got[kPer];
        uint32_t code[kPer];
        bool in[kPer]; /* (past N or K: scale 0) */
#pragma unroll
        for (int j = 0; j < kPer; j++) {
            const int el = ty + kScaleRowsPerPass * j;
            const size_t e = e0 + el, n = a.pairs == 2 ? e >> 1 : e;
            const size_t k = step * kStepK + (a.pairs == 2 ? 32 * (e & 1) : 0);
            got[j] = 0.0f;
            code[j] = 0;
            in[j] = n < a.N && k < a.K && step < a.k_steps;
            if (in[j]) {
                const size_t b = (n * a.K + k) >> a.bs_log2;
                if (nested) {
                    code[j] = __ldg(a.codes + b);
                    got[j] = __ldg(a.nested_absmax + (a.nbs_log2 >= 0 ? b >> a.nbs_log2 : b / a.nested_blocksize));
                } else {
                    got[j] = __ldg(a.absmax + b);
                }
            }
        }
        if (first_pass) { /* (block-uniform) */
#if BNB4_HAS_TMA
            if (a.early)
                pdl_wait(); /* the previous kernel may still read the scratch: every write comes after the wait */
#endif
            if (nested) {
                code_values[ty * kScaleTile + tx] = code_value;
                __syncthreads();
            }
            first_pass = false;
        }
#pragma unroll
        for (int j = 0; j < kPer; j++) {
            const int el = ty + kScaleRowsPerPass * j;
            const float v = nested && in[j] ? bnb4_dev_nested_scale(code_values[code[j]], got[j], a.offset) : got[j];
            tile[el][tx] = PairOps<T>::pack(v, v);
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < kPer; j++) {
            const int sl = ty + kScaleRowsPerPass * j;
            if (s0 + sl < a.k_steps && e0 + tx < a.row_pad)
                a.scales[(s0 + sl) * a.row_pad + e0 + tx] = tile[tx][sl];
        }
        __syncthreads(); /* the tile is rewritten by the next pass */
    }
}

/* One step of 64 k for one warpgroup: decode the thread's fragments (af), issue the 4 wgmmas. */
template <typename T, int NT>
__device__ __forceinline__ void tile_step(float (&acc)[NT][4], uint32_t (&af)[4][4], const unsigned char *table,
                                          const uint4 (&wq)[2][2], const uint32_t (&s2)[2][2], uint32_t lane4,
                                          uint32_t sel, uint64_t x_desc, uint32_t accumulate) {
#if BNB4_HAS_WGMMA
#pragma unroll
    for (int s = 0; s < 4; s++) {
        const uint4 &qa = wq[0][s >> 1], &qb = wq[1][s >> 1];
        const uint32_t a0 = s & 1 ? qa.z : qa.x, a1 = s & 1 ? qa.w : qa.y; /* words 2 s, 2 s + 1 of row g */
        const uint32_t b0 = s & 1 ? qb.z : qb.x, b1 = s & 1 ? qb.w : qb.y; /* of row g + 8 */
        const uint32_t sa = s2[0][s >> 1], sb = s2[1][s >> 1];
        af[s][0] = PairOps<T>::mul2(*reinterpret_cast<const uint32_t *>(table + pair_offset(a0, lane4, sel)), sa);
        af[s][1] = PairOps<T>::mul2(*reinterpret_cast<const uint32_t *>(table + pair_offset(b0, lane4, sel)), sb);
        af[s][2] = PairOps<T>::mul2(*reinterpret_cast<const uint32_t *>(table + pair_offset(a1, lane4, sel)), sa);
        af[s][3] = PairOps<T>::mul2(*reinterpret_cast<const uint32_t *>(table + pair_offset(b1, lane4, sel)), sb);
    }
    wg_fence();
#pragma unroll
    for (int s = 0; s < 4; s++) /* k-step s: 32 bytes (2 descriptor units) into the activations' 128-byte rows */
        Wgmma<T, NT>::mma(acc, af[s], x_desc + 2 * s, s == 0 ? accumulate : 1u);
    wg_commit();
#else
    (void)acc, (void)af, (void)table, (void)wq, (void)s2, (void)lane4, (void)sel, (void)x_desc, (void)accumulate;
#endif
}

/* SRC: where the block scales come from (TileScales; a template parameter: a run-time branch cost the k split's
 * loop 25 instructions a step) */
template <typename T, int BX, TileScales SRC>
__global__ void __launch_bounds__(TileShape<BX, SRC>::Threads, 1)
    gemm_4bit_tile_kernel(TileArgs a, const __grid_constant__ CUtensorMap w_map, const __grid_constant__ CUtensorMap x_map,
                          const __grid_constant__ CUtensorMap s_map) {
#if !BNB4_HAS_WGMMA
    __trap(); /* only launched on compute capability 9.0 from an sm_90a build (bnb4_cuda_tile_fits) */
#else
    using S = TileShape<BX, SRC>;
    constexpr int NT = S::NT, STAGES = S::Stages;
    constexpr bool kFromWeight = SRC == kScalesAbsmax; /* the stages take the weight's absmax */
    /* the stages start 1024-byte aligned (the swizzles' period): the declaration's alignment places the
     * dynamic shared memory so, and the table and the store buffers before them take whole KB (as in the
     * pipe kernel: no fix computed from the address at run time) */
    extern __shared__ __align__(1024) unsigned char smem[];
    static_assert(kPairTableBytes % 1024 == 0, "the stages follow the table at a whole KB");
    unsigned char *table = smem; /* at the base: its loads take the address as a register + constant */
    unsigned char *epi = smem + kPairTableBytes; /* the store buffers */
    unsigned char *stages = smem + kPairTableBytes + S::EpiBytes;
    const uint32_t stages_addr = (uint32_t)__cvta_generic_to_shared(stages);
    __shared__ int s_last;
    __shared__ __align__(8) uint64_t s_bars[2 * 8]; /* full[STAGES], then empty[STAGES] */
    /* (shuffled from lane 0: warp-uniform and opaque, so the loop does not rebuild it from %cgactaid at every
     * turn) */
    const uint32_t full_bar = __shfl_sync(~0u, (uint32_t)__cvta_generic_to_shared(s_bars), 0);
    const uint32_t empty_bar = full_bar + 8 * STAGES;

    const int tid = threadIdx.x, lane = tid & 31;
    const int warp = __shfl_sync(0xffffffffu, tid >> 5, 0); /* (seen as warp-uniform: no wgmma serialization) */
    const unsigned it_begin = blockIdx.x * a.per_cta, it_end = min(a.iters, it_begin + a.per_cta);
    if (tid == 0) {
        for (int i = 0; i < STAGES; i++) {
            mbar_init(full_bar + 8 * i, 1);            /* the producer's arrival with the byte count */
            mbar_init(empty_bar + 8 * i, kGroupWarps); /* one per warp of the group that takes the step */
        }
        mbar_init_fence();
    }
    __syncthreads();

    if (warp >= S::ConsumerThreads / 32) { /* ---- the producer warpgroup: one lane issues every copy ---- */
        setmaxnreg_dec<S::ProducerRegs>();
        if (warp != S::ConsumerThreads / 32 || lane != 0)
            return;
        tma_prefetch_map(&w_map);
        tma_prefetch_map(&x_map);
        tma_prefetch_map(&s_map);
        pdl_wait(); /* the activations, and the weights themselves, may come from the previous kernel */
        /* the next kernel may start only now (see the pipe kernel's early stages, cuda_gemm_pipe.cuh); one
         * CTA per SM, the whole grid resident: nothing can starve */
        pdl_launch_dependents();
        unsigned tile = it_begin / a.k_steps, step = it_begin - tile * a.k_steps;
        int slot = 0;
        uint32_t phase = 0;
        for (unsigned it = it_begin; it < it_end; it++) {
            mbar_wait(empty_bar + 8 * slot, phase ^ 1u); /* the consumers are done with the slot */
            const uint32_t base = stages_addr + slot * S::StageBytes, fb = full_bar + 8 * slot;
            const unsigned wt = tile / a.m_tiles, mt = tile - wt * a.m_tiles;
            /* the three boxes' bytes */
            mbar_arrive_tx(fb, a.x_rows * (kStepK * 2) + kWBytes + (kFromWeight ? kRawBytes : kTileRows * 4 * a.pairs));
            tma_load_2d(base, &x_map, (int)(step * kStepK), (int)(mt * BX), fb);
            tma_load_2d(base + S::XBytes, &w_map, (int)(step * kWRowBytes), (int)(wt * kTileRows), fb);
            if (kFromWeight) /* (the 16-byte run of 4 absmax floats holding the step's block) */
                tma_load_2d(base + S::XBytes + kWBytes, &s_map, (int)(step_block(step, a.bs_log2) & ~3u),
                            (int)(wt * kTileRows), fb);
            else
                tma_load_2d(base + S::XBytes + kWBytes, &s_map, (int)(wt * kTileRows * a.pairs), (int)step, fb);
            if (++slot == STAGES) {
                slot = 0;
                phase ^= 1u;
            }
            if (++step == a.k_steps) {
                step = 0;
                tile++;
            }
        }
        return; /* every copy issued is waited for by the consumers before they finish */
    }

    /* ---- consumers ---- */
    setmaxnreg_inc<S::ConsumerRegs>();
    build_pair_table<T>(table, a.quant_type == BNB4_NF4 ? c_tile_nf4 : c_tile_fp4, tid, S::ConsumerThreads);
    pdl_wait(); /* everything below may come from the previous kernel (bias, workspace, y) */
    bar_sync<S::KSplit ? 2 : 1, S::ConsumerThreads>();

    /* the thread's k group (k split: the CTA's even or odd steps) and its index there; its warpgroup's rows */
    const int group = warp / kGroupWarps, gtid = tid - group * kGroupThreads, gwarp = warp - group * kGroupWarps;
    const int g = lane >> 2, c = lane & 3;
    const int r0 = (gwarp >> 2) * 64 + (gwarp & 3) * 16 + g; /* the thread's tile rows: r0 and r0 + 8 */
    const uint32_t lane4 = pin((uint32_t)lane * 4), sel = pin(pair_sel((uint32_t)c));
    /* its weight chunks q = 0, 1 of rows r0 + 8 h (the 32-byte swizzle: chunk q ^ bit 2 of the row) */
    uint32_t w_off[2][2];
#pragma unroll
    for (int h = 0; h < 2; h++)
#pragma unroll
        for (int q = 0; q < 2; q++) {
            const int r = r0 + 8 * h;
            w_off[h][q] = pin(S::XBytes + r * kWRowBytes + ((q ^ ((r >> 2) & 1)) << 4));
        }

    float acc[NT][4]; /* (a tile's first wgmma here overwrites them: accumulate = 0) */
    /* The per-thread offsets are pinned (kept in registers) only where the instance uses them: a pinned value is
     * never dropped, and the k split's loop has no register to spare at 112 (when ptxas runs short it issues the
     * step's shared-memory loads later: docs/performance.md v41). */
    /* its scales in a stage: rows r0 and r0 + 8, k-steps 0-1 and 2-3 (the same entry unless 2 pairs) */
    [[maybe_unused]] uint32_t s_off[2][2];
    if constexpr (!kFromWeight)
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int p = 0; p < 2; p++)
                s_off[h][p] = pin(S::XBytes + kWBytes + ((r0 + 8 * h) * a.pairs + (a.pairs == 2 ? p : 0)) * 4);
    const uint64_t desc0 = wg_desc(stages_addr); /* the activations of stage 0; stage i: + i StageBytes / 16 */
    const unsigned it_stop = pin(it_end);
    T *y = reinterpret_cast<T *>(a.y);
    /* absmax from the weight: rows r0 and r0 + 8's runs in a stage */
    [[maybe_unused]] uint32_t raw_off[2];
    if constexpr (kFromWeight)
#pragma unroll
        for (int h = 0; h < 2; h++)
            raw_off[h] = pin(S::XBytes + kWBytes + (r0 + 8 * h) * kRawRowBytes);
    /* A step's operands from its stage: the rows' scale pairs (rows past N, k past K: scale 0; from the weight:
     * step `step`'s block's absmax, rounded here) and weights */
    const auto load_step = [&](int slot, unsigned step, uint32_t(&s2)[2][2], uint4(&wq)[2][2]) {
        const unsigned char *st = stages + slot * S::StageBytes;
        if constexpr (kFromWeight) {
            const uint32_t in_run = (step_block(step, a.bs_log2) & 3u) * 4; /* (its place in the row's run) */
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const float v = *reinterpret_cast<const float *>(st + raw_off[h] + in_run);
                s2[h][0] = s2[h][1] = PairOps<T>::pack(v, v);
            }
        } else {
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int p = 0; p < 2; p++)
                    s2[h][p] = *reinterpret_cast<const uint32_t *>(st + s_off[h][p]);
        }
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int q = 0; q < 2; q++)
                wq[h][q] = lds128(st + w_off[h][q]);
    };

    /* the first and last CTA with steps of tile cur_t: the same one unless the tile is shared */
    const auto tile_ctas = [&](unsigned cur_t, unsigned &c_lo, unsigned &c_hi) {
        c_lo = (cur_t * a.k_steps) / a.per_cta;
        c_hi = ((cur_t + 1) * a.k_steps - 1) / a.per_cta;
    };
    /* The barrier around the split-K hand-over. With the k split both groups take it (the odd group only
     * waits), not the even group alone on a barrier of its own: compute-sanitizer's racecheck then reports
     * the join's shared-memory exchange on barrier 2 as racing (a false report, reproduced by a 40-line
     * kernel: docs/performance.md v29), and the checks run racecheck. */
    const auto handover_sync = [] {
        if constexpr (S::KSplit)
            bar_sync<2, S::ConsumerThreads>();
        else
            bar_sync<1, kGroupThreads>();
    };
    /* The end of tile cur_t (or of this CTA's range in it), by the even (or only) group with every sum of the
     * tile in acc: stored directly, or handed over through the split-K workspace. */
    const auto finish_tile = [&](unsigned cur_t) {
        const unsigned wt = cur_t / a.m_tiles, mt = cur_t - wt * a.m_tiles;
        const size_t n_base = (size_t)wt * kTileRows + r0, m_base = (size_t)mt * BX + 2 * c;
        unsigned c_lo, c_hi;
        tile_ctas(cur_t, c_lo, c_hi);
        if (c_lo == c_hi) { /* the whole tile was ours */
            float b[2]; /* (loaded before the first store, which would order them behind it) */
#pragma unroll
            for (int h = 0; h < 2; h++)
                b[h] = a.bias && n_base + 8 * h < a.N
                           ? bnb4_dt<T>::to_f32(reinterpret_cast<const T *>(a.bias)[n_base + 8 * h])
                           : 0.0f;
            if (a.vec_y) {
                /* 16-byte stores of 8 rows at one m (a full 32-byte sector per pair of lanes) where the
                 * fragments' own stores were 2-byte ones (each warp instruction writing half-sectors of 4
                 * m): stmatrix.trans turns the warp's fragments of two nt (its 16 rows x 16 m) into 16 m rows
                 * of 32 bytes in its buffer, and lane l stores bytes 16 l.. of it. Row r's halves swap when
                 * bit 2 of r is set, so the 8 rows of a matrix hit distinct banks. */
                unsigned char *buf = epi + gwarp * 512;
                const uint32_t st = (uint32_t)__cvta_generic_to_shared(buf) + (8 * (lane >> 4) + (lane & 7)) * 32 +
                                    16 * (((lane >> 3) ^ (lane >> 2)) & 1);
                const size_t n_ld = n_base - g + 8 * ((lane ^ (lane >> 3)) & 1); /* the rows lane l stores */
#pragma unroll
                for (int p = 0; p < NT / 2; p++) {
                    uint32_t r[4]; /* matrix 2 q + h: nt 2 p + q, rows + 8 h */
#pragma unroll
                    for (int q = 0; q < 2; q++)
#pragma unroll
                        for (int h = 0; h < 2; h++)
                            r[2 * q + h] = PairOps<T>::pack(acc[2 * p + q][2 * h] + b[h], acc[2 * p + q][2 * h + 1] + b[h]);
                    stmatrix_x4_trans(st, r[0], r[1], r[2], r[3]);
                    __syncwarp();
                    const uint4 v = lds128(buf + 16 * lane);
                    __syncwarp(); /* read before the next pair's stmatrix */
                    const size_t m = (size_t)mt * BX + 16 * p + (lane >> 1);
                    if (n_ld < a.N && m < a.M)
                        *reinterpret_cast<uint4 *>(y + m * a.N + n_ld) = v;
                }
                return;
            }
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const size_t n = n_base + 8 * h;
                if (n >= a.N)
                    continue;
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int e = 0; e < 2; e++) {
                        const size_t m = m_base + 8 * nt + e;
                        if (m < a.M)
                            y[m * a.N + n] = bnb4_dt<T>::from_f32(acc[nt][2 * h + e] + b[h]);
                    }
            }
        } else { /* partial sums to this CTA's slot (0: its first tile, 1: its last), the last to arrive adds */
            const auto slot_of = [&](unsigned cta) {
                return (size_t)cta * 2 + (cur_t == (cta * a.per_cta) / a.k_steps ? 0 : 1);
            };
            float *mine = a.ws + slot_of(blockIdx.x) * (BX * kTileRows);
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    __stcg(mine + (8 * nt + 2 * c + (i & 1)) * kTileRows + r0 + 8 * (i >> 1), acc[nt][i]);
            handover_sync(); /* every partial sum stored, then counted (bnb4_dev_arrive_acq_rel) */
            if (gtid == 0)
                s_last = bnb4_dev_arrive_acq_rel(a.counters + cur_t) == c_hi - c_lo;
            handover_sync();
            if (s_last) {
                /* A thread takes float4s of 4 rows n (the same 4 at each m), kUnits at a time, and loads
                 * kFixBatch contributors' float4s of them before the first add: one L2 round trip a batch of 4
                 * loads (a 128-row tile has 4 parts where tiles are shared, a 256-row one 2). With a contributor
                 * at a time, or a branch around a missing one's add, ptxas moved each load down to its add: a
                 * round trip each, and the k split's m = 96 / 128 on 4096x14336 12 % slower for it
                 * (docs/performance.md v37). The sum's order is fixed: 0, then the contributors in order. */
                constexpr int kVec = BX * kTileRows / 4, kUnits = BX == 256 ? 2 : 1, kFixBatch = 4 / kUnits;
                static_assert(kVec % (kUnits * kGroupThreads) == 0, "every thread takes whole rounds");
                /* their bias, loaded before the first store (which would order the loads behind it) */
                static_assert(4 * kGroupThreads % kTileRows == 0, "a thread's float4s share their rows");
                const size_t n0 = (size_t)wt * kTileRows + 4 * gtid % kTileRows;
                float b[4];
#pragma unroll
                for (int q = 0; q < 4; q++)
                    b[q] = a.bias && n0 + q < a.N ? bnb4_dt<T>::to_f32(reinterpret_cast<const T *>(a.bias)[n0 + q])
                                                  : 0.0f;
                for (int v0 = gtid; v0 < kVec; v0 += kUnits * kGroupThreads) {
                    float4 sum[kUnits];
#pragma unroll
                    for (int u = 0; u < kUnits; u++)
                        sum[u] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                    for (unsigned c0 = c_lo; c0 <= c_hi; c0 += kFixBatch) {
                        float4 part[kFixBatch][kUnits];
#pragma unroll
                        for (int i = 0; i < kFixBatch; i++) { /* (one past the last reads the first one's slot) */
                            const unsigned cc = c0 + i <= c_hi ? c0 + i : c_lo;
                            const float4 *src = reinterpret_cast<const float4 *>(a.ws + slot_of(cc) * (BX * kTileRows));
#pragma unroll
                            for (int u = 0; u < kUnits; u++)
                                part[i][u] = __ldcg(src + v0 + u * kGroupThreads);
                        }
#pragma unroll
                        for (int i = 0; i < kFixBatch; i++) {
                            /* a missing one adds -0.0f, which changes no sum (+ 0.0f would turn -0.0f into
                             * 0.0f); no branch, so ptxas keeps the loads together */
                            const bool in = c0 + i <= c_hi;
#pragma unroll
                            for (int u = 0; u < kUnits; u++) {
                                sum[u].x += in ? part[i][u].x : -0.0f;
                                sum[u].y += in ? part[i][u].y : -0.0f;
                                sum[u].z += in ? part[i][u].z : -0.0f;
                                sum[u].w += in ? part[i][u].w : -0.0f;
                            }
                        }
                    }
#pragma unroll
                    for (int u = 0; u < kUnits; u++) {
                        const size_t m = (size_t)mt * BX + 4 * (v0 + u * kGroupThreads) / kTileRows;
                        if (m >= a.M)
                            continue;
                        const float vals[4] = {sum[u].x, sum[u].y, sum[u].z, sum[u].w};
#pragma unroll
                        for (int q = 0; q < 4; q++)
                            if (n0 + q < a.N)
                                y[m * a.N + n0 + q] = bnb4_dt<T>::from_f32(vals[q] + b[q]);
                    }
                }
                if (gtid == 0)
                    a.counters[cur_t] = 0; /* ready for the next launch on this stream */
            }
            /* this CTA's slot is rewritten only for its other partial tile: a different slot */
        }
    };

    if constexpr (S::KSplit) {
        /* Each group takes every other step of the CTA's run (group 1 the odd ones: slots 1, 3, ...; STAGES
         * is even) with one fragment set: decode, wgmmas, wait for them, release the stage. Every tile the
         * run touches ends in both groups, a group without a step there adding zeros. */
        uint32_t af[4][4];
        int slot = group;
        uint32_t phase = 0;
        unsigned it = it_begin + group;
        for (unsigned t = it_begin / a.k_steps; t * a.k_steps < it_stop; t++) {
            const unsigned t_stop = min(it_stop, (t + 1) * a.k_steps);
            uint32_t has = 0; /* whether this group took a step of the tile: its first overwrites acc */
            for (; it < t_stop; it += 2) {
                mbar_wait(full_bar + 8 * slot, phase); /* the producer's copies for the step have landed */
                uint32_t s2[2][2];
                uint4 wq[2][2];
                load_step(slot, it - t * a.k_steps, s2, wq);
                tile_step<T, NT>(acc, af, table, wq, s2, lane4, sel, desc0 + (uint64_t)(slot * (S::StageBytes >> 4)),
                                 has);
                wg_wait<0>(); /* its fragments and its stage are free */
                wg_keep(af);
                wg_keep(acc);
                if (elect_one()) /* (elect.sync: every lane of the warp is past its reads) */
                    mbar_arrive(empty_bar + 8 * slot);
                has = 1;
                slot += 2;
                if (slot >= STAGES) {
                    slot -= STAGES;
                    phase ^= 1u;
                }
            }
            if (!has)
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int i = 0; i < 4; i++)
                        acc[nt][i] = 0.0f;
            /* the odd group's sums to the even group's, half a set at a time through the pair table's upper
             * halves: value j of the thread's half at float j * 512 + 64 gwarp + 32 + lane (row 8 j + gwarp, bytes
             * 128 + 4 lane: a warp's stores and loads hit 32 banks). Fixed order: deterministic; the half a
             * template constant: a loop over it, not unrolled around its barriers, indexed acc at run time,
             * which put it in local memory. The decode reads only the rows' first halves. */
            float *red = reinterpret_cast<float *>(table + 128 + lane4) + 64 * gwarp;
            const auto join_half = [&](auto half) {
                constexpr int lo = decltype(half)::value * (NT / 2);
                if (group == 1)
#pragma unroll
                    for (int nt = 0; nt < NT / 2; nt++)
#pragma unroll
                        for (int i = 0; i < 4; i++)
                            red[(nt * 4 + i) * 512] = acc[lo + nt][i];
                bar_sync<2, S::ConsumerThreads>();
                if (group == 0)
#pragma unroll
                    for (int nt = 0; nt < NT / 2; nt++)
#pragma unroll
                        for (int i = 0; i < 4; i++)
                            acc[lo + nt][i] += red[(nt * 4 + i) * 512];
                bar_sync<2, S::ConsumerThreads>(); /* read before the next half (or tile) rewrites it */
            };
            /* Where the CTA's last tile was whole and stored (vec_y), both groups meet once more first. Not for
             * the data (the sums now cross through the table, the stores through their own buffers): without
             * it ptxas scheduled every step's shared-memory loads later (as in v41's quarter-set join, 20 %
             * slower), so it stays. */
            if (a.vec_y && t * a.k_steps > it_begin) {
                unsigned c_lo, c_hi;
                tile_ctas(t - 1, c_lo, c_hi);
                if (c_lo == c_hi)
                    bar_sync<2, S::ConsumerThreads>();
            }
            join_half(std::integral_constant<int, 0>());
            join_half(std::integral_constant<int, 1>());
            if (group == 0) {
                finish_tile(t);
            } else {
                unsigned c_lo, c_hi;
                tile_ctas(t, c_lo, c_hi);
                if (c_lo != c_hi) { /* the even group's two hand-over barriers */
                    handover_sync();
                    handover_sync();
                }
            }
        }
    } else {
        /* The fragments of two consecutive steps: a step's wgmmas read its set while the next step decodes
         * into the other. The loop below runs two steps per turn so each set has fixed registers: with one
         * step per turn and the set picked by the step's parity, the compiler merged the two into one, and
         * ptxas then had to wait for the wgmmas before every decode (its note C7517). */
        uint32_t af0[4][4] = {}, af1[4][4] = {};
        unsigned t = it_begin / a.k_steps, step = it_begin - t * a.k_steps, end_t = t;
        int slot = 0, pending = -1; /* pending: the slot whose release waits for its wgmmas */
        uint32_t phase = 0;
        unsigned it = it_begin;
        /* One step: wait for its stage, decode it into `cur`, issue its wgmmas, wait for the previous step's
         * (whose fragments, `prev`, and stage are then free) and release that stage. Returns whether a tile,
         * or this CTA's range in it, ends with the step (end_t: that tile). */
        const auto step_once = [&](uint32_t(&cur)[4][4], uint32_t(&prev)[4][4]) -> bool {
            const uint32_t accumulate = step != 0 && it != it_begin; /* 0: the tile's first step here */
            const unsigned this_step = step;
            const bool tile_end = step + 1 == a.k_steps || it + 1 == it_stop;
            end_t = t;
            if (++step == a.k_steps) {
                step = 0;
                t++;
            }
            it++;
            mbar_wait(full_bar + 8 * slot, phase); /* the producer's copies for the step have landed */
            uint32_t s2[2][2];
            uint4 wq[2][2];
            load_step(slot, this_step, s2, wq);
            const uint64_t x_desc = desc0 + (uint64_t)(slot * (S::StageBytes >> 4));
            tile_step<T, NT>(acc, cur, table, wq, s2, lane4, sel, x_desc, accumulate);
            wg_wait<1>(); /* the previous step's wgmmas are done: its fragments and its stage are free */
            wg_keep(prev); /* (its wgmmas read it until the wait above) */
            if (pending >= 0 && elect_one()) /* (elect.sync: every lane of the warp is past its reads) */
                mbar_arrive(empty_bar + 8 * pending);
            pending = slot;
            if (++slot == STAGES) {
                slot = 0;
                phase ^= 1u;
            }
            return tile_end;
        };
        while (it < it_stop) {
            if (!step_once(af0, af1) && !step_once(af1, af0))
                continue;
            /* ---- end of a tile (or of this CTA's range inside it) ---- */
            wg_wait<0>();
            wg_keep(acc);
            wg_keep(af0);
            wg_keep(af1);
            if (elect_one())
                mbar_arrive(empty_bar + 8 * pending);
            pending = -1;
            finish_tile(end_t);
        }
        /* (every turn that ends the loop ended a tile, so nothing is in flight here; without this wait ptxas
         * cannot see that and waits for the wgmmas at every turn instead) */
        wg_wait<0>();
    }
#endif
}

/* Per device: the kernel's dynamic shared memory limit (bnb4_cuda_smem_limit). */
template <typename T, int BX, TileScales SRC> unsigned g_tile_smem_limit[64];

/* Where the tile kernel takes its block scales (TileScales): plain absmax straight from the weight where whole
 * 64-k steps sit in one block (K % 64 == 0, K % blocksize == 0, blocksize >= 64), a row's 16-byte runs are the
 * tensor copy's (absmax 16-byte aligned, K / blocksize % 4 == 0) and, with 128-row tiles, each CTA runs whole
 * tiles (`whole_tiles`); else the pre-pass's pairs. The pre-pass costs a call more than its own run: the tile
 * kernel's start waits for it instead of overlapping the previous kernel's end (H200, docs/performance.md v40,
 * v41): 256 rows, 4096x14336 m = 512 110.4 -> 103.2 us, and 4-5 % on the other shapes' m = 512 / 2048; 128 rows
 * run whole, 14336x4096 m = 128 and 4096x4096 m = 512 12-14 % faster. Where 128-row tiles are shared by CTAs
 * (4096x14336 m = 128 / 320) the absmax step ran 1-2 % slower than the pre-pass saved: ptxas schedules the k
 * split's loop with its rounding less well (its shared-memory loads later). Nested absmax keeps the pre-pass:
 * decoded in the kernel, by two producer warps for the stages (v40: m = 512 8 % slower) or by the consumers from
 * a box of the rows' codes (v41: -1..+3 % at 256 rows), it cost what the pre-pass did.
 * BNB4_CUDA_TILE_SCALE_PASS=1 keeps the pre-pass (read per call: tests, measuring). */
TileScales tile_scale_source(const bnb4_qtensor *w, size_t bx, bool whole_tiles) {
    const char *e = getenv("BNB4_CUDA_TILE_SCALE_PASS");
    if ((e && *e == '1') || !w->absmax || (bx == 128 && !whole_tiles) || w->blocksize < 64 ||
        w->cols % kStepK != 0 || w->cols % w->blocksize != 0)
        return kScalesPrePass;
    return (w->cols / w->blocksize) % 4 == 0 && bnb4_aligned(w->absmax, 16) ? kScalesAbsmax : kScalesPrePass;
}

/* A call's cut into tiles (of kTileRows weight rows x BX activation rows) and steps, and its steps per CTA
 * (bnb4_cuda_steps_per_cta): the grid split decides the kernel's template parameters (tile_scale_source) */
struct TileGrid {
    size_t m_tiles, tiles, k_steps, per;
};

template <typename T, int BX, TileScales SRC>
bnb4_status launch_tile_from(bnb4_cuda_state *s, TileArgs a, const bnb4_qtensor *w, const void *x, const TileGrid &g) {
    static const char fn[] = "bnb4_gemm (tile)";
    using S = TileShape<BX, SRC>;
    constexpr bool kFromWeight = SRC == kScalesAbsmax;
    const size_t m_tiles = g.m_tiles, tiles = g.tiles, k_steps = g.k_steps, per = g.per, iters = tiles * k_steps;
    /* a step's two 32-k halves are in one block unless blocksize is 32 or K % 64 == 32 (rows, and so steps,
     * may then start mid-block); each half always is (K % 32 == 0, blocksizes are multiples of 32) */
    a.pairs = w->blocksize == 32 || a.K % kStepK != 0 ? 2 : 1;
    a.vec_y = a.N % 8 == 0 && bnb4_aligned(a.y, 16);
    const size_t row_pad = bnb4_div_up(a.N * a.pairs, 4) * 4;
    const size_t per_row = a.K >> a.bs_log2;
    void *scales = nullptr; /* the context's scratch: see tile_scales_kernel */
    bnb4_status st = BNB4_OK;
    if (!kFromWeight && (st = bnb4_cuda_scratch(s, row_pad * k_steps * sizeof(uint32_t), &scales)) != BNB4_OK)
        return st;
    CUtensorMap w_map, x_map, s_map;
    /* weights: 128 rows x 32 bytes (32-byte swizzle); activations: BX rows x 64 k (128-byte swizzle); scales: a
     * step's 128 rows (from the weight: 4 absmax floats a row, absmax seen as N x K / blocksize); rows past N or m
     * and k past K come as zeros. But with the scales from the weight, whose copy is 128 runs of 16 bytes, the
     * activations' copy brings m rows where one tile covers m: its rows past the tensor, zero-filled, made those
     * kernels slower at m = 80 than at 128 (H200, docs/performance.md v57: m rows 15-20 % faster at m = 80 on
     * 14336x4096 and 28672x8192, and at 160 on 28672x8192; with the pre-pass's scales 1-5 % slower at m = 96).
     * The stage's rows past m then hold stale data, which reaches only the wgmmas' columns past m: never stored. */
    a.x_rows = kFromWeight && m_tiles == 1 ? (unsigned)a.M : (unsigned)BX;
    const bool s_ok = kFromWeight ? encode_2d(&s_map, w->absmax, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, per_row, a.N,
                                              per_row * 4, kRawRowBytes / 4, kTileRows, CU_TENSOR_MAP_SWIZZLE_NONE,
                                              false)
                                  : encode_2d(&s_map, scales, CU_TENSOR_MAP_DATA_TYPE_UINT32, row_pad, k_steps,
                                              row_pad * 4, kTileRows * a.pairs, 1, CU_TENSOR_MAP_SWIZZLE_NONE);
    if (!encode_2d(&w_map, w->packed, CU_TENSOR_MAP_DATA_TYPE_UINT8, a.K / 2, a.N, a.K / 2, kWRowBytes, kTileRows,
                   CU_TENSOR_MAP_SWIZZLE_32B) ||
        !encode_2d(&x_map, x, CU_TENSOR_MAP_DATA_TYPE_UINT16, a.K, a.M, a.K * 2, kStepK, a.x_rows,
                   CU_TENSOR_MAP_SWIZZLE_128B) ||
        !s_ok) {
        return bnb4_cuda_gemm_dequant_blas(s, w, std::is_same<T, __half>::value ? BNB4_F16 : BNB4_BF16, a.M, x, a.bias,
                                           a.y); /* (not expected: the layout was checked) */
    }
    auto kernel = gemm_4bit_tile_kernel<T, BX, SRC>;
    st = bnb4_cuda_check(bnb4_cuda_smem_limit(s, kernel, S::SmemBytes, g_tile_smem_limit<T, BX, SRC>),
                         "bnb4_gemm (tile): shared memory");
    if (st != BNB4_OK)
        return st;
    const size_t ctas = bnb4_div_up(iters, per);
    a.k_steps = (unsigned)k_steps;
    a.m_tiles = (unsigned)m_tiles;
    a.iters = (unsigned)iters;
    a.per_cta = (unsigned)per;
    if (per % k_steps != 0) { /* some tile is shared by CTAs: workspace (2 slots per CTA) and counters */
        st = bnb4_cuda_splitk(s, tiles, ctas * 2 * (size_t)BX * kTileRows * sizeof(float), &a.counters, &a.ws);
        if (st != BNB4_OK)
            return st;
    }
    TileScaleArgs sa = {};
    static_cast<bnb4_cuda_weight_args &>(sa) = a;
    sa.N = a.N;
    sa.K = a.K;
    sa.row_pad = row_pad;
    sa.k_steps = k_steps;
    sa.pairs = a.pairs;
    sa.scales = static_cast<uint32_t *>(scales);
    const bool pdl = bnb4_pdl_enabled();
    sa.early = pdl && !bnb4_cuda_weights_may_be_pending(s, w);
    cudaLaunchConfig_t sc = {};
    /* x: every 32-entry tile (row_pad / 32 < 2^27: rows < 2^31 were checked); y: up to 65535 step tiles, each
     * CTA striding over the rest. BNB4_CUDA_TILE_SCALE_GRID_Y=n caps y at n (read per call: tests use it to
     * run the stride, which real shapes need only past K = 2^27) */
    const size_t step_tiles = bnb4_div_up(k_steps, kScaleTile), y_env = bnb4_env_size("BNB4_CUDA_TILE_SCALE_GRID_Y", 0);
    const size_t y_cap = y_env >= 1 && y_env < 65535 ? y_env : 65535;
    sc.gridDim = dim3((unsigned)bnb4_div_up(row_pad, kScaleTile), (unsigned)(step_tiles < y_cap ? step_tiles : y_cap));
    sc.blockDim = dim3(kScaleTile, kScaleRowsPerPass);
    sc.stream = s->stream;
    cudaError_t e = kFromWeight ? cudaSuccess : bnb4_launch_ex(sc, pdl, tile_scales_kernel<T>, sa);
    if (e == cudaSuccess) {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3((unsigned)ctas);
        cfg.blockDim = dim3(S::Threads);
        cfg.dynamicSmemBytes = S::SmemBytes;
        cfg.stream = s->stream;
        e = bnb4_launch_ex(cfg, pdl, kernel, a, w_map, x_map, s_map);
    }
    return bnb4_cuda_check(e, fn);
}

/* Activation rows per tile. A 256-row tile (wgmma n = 256) decodes each weight once per 256 rows; a 128-row
 * one (the k split, four consumer warpgroups) took 0.55-0.63 of a 256-row one's time on the large shapes
 * (H200, docs/performance.md v29: on 14336x4096 a row of tiles across the weights took 55-61 us at 256 rows,
 * 32-37 at 128). So 128 rows where ceil(m / 128) tiles at 0.6 cost less than ceil(m / 256) at 1: m <= 128
 * (a 256-row tile would be half padding) and m = 257..384 (two 256-row tiles, the second half padding: 128
 * rows 7-15 % faster on 14336x4096 and 28672x8192, 5 % on 4096x14336). Else 256: m = 160..256 15-30 % faster
 * on 14336x4096 and 28672x8192 (5-8 % slower on 4096x14336), m = 512 13-25 % (even on 4096x14336), m = 640
 * the tie (-10..+5 %), m = 768 and 2048 5-23 %. BNB4_CUDA_TILE_BX=128 or 256 forces one (for measuring; read
 * once). */
size_t forced_tile_bx() { /* BNB4_CUDA_TILE_BX's 128 or 256, else 0 */
    static const size_t forced = bnb4_env_size("BNB4_CUDA_TILE_BX", 0);
    return forced == 128 || forced == 256 ? forced : 0;
}
size_t tile_bx(size_t m) {
    if (const size_t forced = forced_tile_bx())
        return forced;
    return 3 * bnb4_div_up(m, 128) < 5 * bnb4_div_up(m, 256) ? 128 : 256;
}

/* Activation rows per tile for this call, or 0 where the tile kernel does not take it: weights under
 * BNB4_CUDA_TILE_MIN_WEIGHTS (read per call) only where its tiles fill the grid (bnb4_grid_small_tile_rows). */
size_t tile_rows(const bnb4_cuda_state *s, size_t N, size_t K, size_t m) {
    if (N * K >= bnb4_env_size("BNB4_CUDA_TILE_MIN_WEIGHTS", BNB4_CUDA_TILE_MIN_WEIGHTS))
        return tile_bx(m);
    const size_t bx = bnb4_grid_small_tile_rows(bnb4_div_up(N, kTileRows), K, m, s->sm_count > 0 ? s->sm_count : 1);
    return bx != 0 && forced_tile_bx() ? forced_tile_bx() : bx;
}

template <typename T>
bnb4_status launch_tile_t(bnb4_cuda_state *s, const TileArgs &a, const bnb4_qtensor *w, const void *x) {
    const size_t bx = tile_rows(s, a.N, a.K, a.M), m_tiles = bnb4_div_up(a.M, bx);
    const size_t tiles = bnb4_div_up(a.N, kTileRows) * m_tiles, k_steps = bnb4_div_up(a.K, kStepK);
    /* BNB4_CUDA_TILE_CTAS=n: n CTAs, stream-K (read per call: tests use it to force tiles shared by many
     * CTAs). Aligned runs (H200, v17): 14336x4096 m = 128 / 512 with 16-17 % longer runs 11-24 % faster,
     * 4096x14336 tiles in halves or quarters 6-10 %; 28672x8192 m = 512, 18 % longer, 2-9 % slower. No
     * limit on the CTAs a tile: unlike the pipe kernel's, bound by the math (v26: fewer, 11-62 % slower) */
    const TileGrid g{m_tiles, tiles, k_steps, bnb4_cuda_steps_per_cta(s, tiles, k_steps, 0, 0, "BNB4_CUDA_TILE_CTAS")};
    if (tile_scale_source(w, bx, g.per % k_steps == 0) == kScalesAbsmax)
        return bx == 256 ? launch_tile_from<T, 256, kScalesAbsmax>(s, a, w, x, g)
                         : launch_tile_from<T, 128, kScalesAbsmax>(s, a, w, x, g);
    return bx == 256 ? launch_tile_from<T, 256, kScalesPrePass>(s, a, w, x, g)
                     : launch_tile_from<T, 128, kScalesPrePass>(s, a, w, x, g);
}

} // namespace

/* the most shared memory a tile kernel takes (its shapes fill what a Hopper SM gives one CTA) */
constexpr size_t kTileSmemMax = std::max({TileShape<128, kScalesPrePass>::SmemBytes, TileShape<128, kScalesAbsmax>::SmemBytes,
                                          TileShape<256, kScalesPrePass>::SmemBytes, TileShape<256, kScalesAbsmax>::SmemBytes});

int bnb4_cuda_tile_enabled(const bnb4_cuda_state *s, size_t m) {
    static const size_t min_m = bnb4_env_size("BNB4_CUDA_TILE_MIN_M", BNB4_CUDA_TILE_MIN_M);
    return bnb4_cuda_wgmma_code(s) && bnb4_cuda_smem_fits(s, kTileSmemMax) && m >= min_m &&
           m <= bnb4_env_size("BNB4_CUDA_TILE_MAX_M", BNB4_CUDA_TILE_MAX_M) && encode_tiled() != nullptr;
}

int bnb4_cuda_tile_fits(const bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x) {
    if (!bnb4_cuda_tile_enabled(s, m))
        return 0;
    const size_t bx = tile_rows(s, w->rows, w->cols, m);
    if (bx == 0)
        return 0;
    if (dt == BNB4_F32 || w->cols % 32 != 0 || !bnb4_aligned(w->packed, 16) || !bnb4_aligned(x, 16))
        return 0;
    /* steps, tiles and rows are 32-bit in the kernel */
    const size_t lim = (size_t)1 << 31;
    if (w->cols >= lim || w->rows >= lim || m >= lim)
        return 0;
    const size_t tiles = bnb4_div_up(w->rows, kTileRows) * bnb4_div_up(m, bx), k_steps = bnb4_div_up(w->cols, kStepK);
    return tiles <= UINT32_MAX / k_steps;
}

bnb4_status bnb4_cuda_gemm_tile(bnb4_cuda_state *s, const bnb4_qtensor *w, bnb4_dtype dt, size_t m, const void *x,
                                const void *bias, void *y) {
    TileArgs a = {};
    bnb4_cuda_set_weight(a, w);
    a.N = w->rows;
    a.K = w->cols;
    a.M = m;
    a.bias = bias;
    a.y = y;
    return dt == BNB4_F16 ? launch_tile_t<__half>(s, a, w, x) : launch_tile_t<__nv_bfloat16>(s, a, w, x);
}
