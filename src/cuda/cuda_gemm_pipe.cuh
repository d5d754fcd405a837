/*
 * cuda_gemm_pipe.cuh - Y[m, N] = X[m, K] W^T + bias for m = 2..64 (and m = 1 on large weights on sm_90, or
 * with BNB4_CUDA_GEMV_MAX_M=0) with f16/bf16 activations:
 * gemm_4bit_<dt>__pipe_mma_m16n8k16 (and __pipe_wgmma_m64nNk16), a weight-streaming tensor-core kernel
 * built so the weights stream from DRAM continuously whatever m is (the small-m regime is a stream of 0.5
 * byte per weight; the math per byte grows with m but stays under the tensor cores' rate up to m = 64).
 *
 *  - Work: the weight matrix is cut into tiles of 128 rows x K; a tile is a run of K/256 iterations of
 *    256 k. All tiles' iterations form one sequence that is cut into equal runs over a persistent grid of
 *    at most one CTA per SM, and a CTA runs on from one tile into the next without draining its pipeline.
 *    The runs are whole tiles or equal parts of a tile where that makes them at most 17.5 % (or 4 steps)
 *    longer than an even split of all iterations ("stream-K", every SM the same number, whatever N, K and
 *    the SM count), else stream-K: a run that starts or ends inside a tile hands its partial sums over, and
 *    one in mid-run stalls the CTA (bnb4_cuda_steps_per_cta, cuda_grid.h).
 *  - Loads: a ring of shared-memory stages, all but one in flight: per stage the 128 rows x 128 packed
 *    bytes (16 KB), the m activation rows x 256 k, and per row the block scales (plain absmax) or the
 *    8-bit codes (nested) it needs. So every SM keeps 48-80 KB of weights in flight with no registers
 *    held, and an iteration's math never waits on DRAM. Two variants fill it:
 *    cp.async (any sm_80+, every layout): all 512 threads issue 16-byte copies (each thread's copies are
 *    fixed: row, chunk, scale slot, with addresses set up once per tile) and meet at __syncthreads;
 *    TMA (sm_90, blocksize 32/64 layouts: pipe_use_tma): one lane of a producer warp issues per stage
 *    one tensor copy of the weight tile, one of the activations (a 3D view: their 64-k boxes at once) and
 *    one of the plain scales (or of a 16-code run of the nested codes per row; where a row's codes are not
 *    16-byte strided the warp's lanes load and store the step's codes in 4-byte words, v31, or - post-scaled
 *    math, whole tiles - one bulk copy brings a tile's codes, its rows being contiguous, into a buffer the
 *    consumers read at the rows' stride: pipe_codes_tile, v33), completing on
 *    the stage's "full" mbarrier (the copies are what a step's producer costs: narrow tiles with one copy
 *    per 64-k box, 20 a stage, ran 9-36 % slower than 128-row ones, v30); the consumer warps wait on it and
 *    release the stage on its "empty" mbarrier (one lane a warp; nested: every thread, kLaneRelease), so
 *    they issue nothing but decode and math (docs/performance.md v11).
 *  - Math: 16 warps, or 8 (TMA at m > 32: PipeShape::RF); a warp owns 16 rows (row group w mod 8) or 32
 *    rows (row groups 2 (w mod 4) and 2 (w mod 4) + 1, two mma row fragments that share the activations
 *    read from shared memory) of the tile and one 128-k half of every step (w / 8, or w / 4; the
 *    halves' sums are added through shared memory when a tile ends); mma.sync m16n8k16, weights as
 *    A (16 rows), activations as B (8 of the m rows per n-tile). The mma's k order is permuted so that a
 *    thread's 16-byte chunk (32 k) of a weight row IS its A fragments: thread (g, c) of a warp holds rows
 *    g and g + 8, and bytes 4u + 2h and 4u + 2h + 1 of its chunk are its A registers of k-step 2u + h
 *    (the mma's k 2c, 2c+1 and 2c+8, 2c+9 stand for the chunk's k 8u+4h .. 8u+4h+3); activations are read
 *    with the same permutation (8 contiguous bytes per k-step), so no shuffles. A byte decodes to its
 *    (code[hi], code[lo]) pair with one PRMT (which forms the address) and one shared-memory load from a
 *    64 KB table (256 B per byte value, one half2 per lane: no bank conflicts), then one packed multiply
 *    by the block scale; nested scales are decoded in the kernel from the staged codes. Shared-memory
 *    rows are XOR-swizzled so the 16-byte reads of a quarter-warp hit 8 distinct bank groups (cp.async:
 *    w_slot / x_slot; TMA: the copies' 128-byte swizzle, with rows and read orders chosen to match:
 *    tma_row, tma_xrow). The kernel is issue- and latency-bound: its instructions per byte and their
 *    dependency chains decide its speed (docs/performance.md, v10, v11).
 *  - Post-scaled k quarters (PS: TMA variant, mma.sync, blocksize 64): a warp owns 32 rows x one 64-k
 *    quarter of every step, which is one block, so its mma chains run on the unscaled codes (from zero,
 *    one chain per row fragment and step) and the f32 sums take the block scale once: no packed multiply
 *    per byte. A thread reads 8 bytes of each of its four rows (ps_row orders the rows for the swizzle);
 *    nested scales are decoded once per quad (the four lanes share rows and block) and shuffled; the
 *    four quarters' sums join at a tile's end. m = 1: 126 instructions per warp and step against 155
 *    (docs/performance.md v16).
 *  - Narrow tiles (PS, m <= 16, pipe_use_narrow): 32 rows x K in steps of 1024 k, where 128-row tiles are
 *    too few for the grid (4096 rows: 32 tiles on 132 SMs, each cut in 4 parts whose sums are handed over)
 *    and 32-row ones run whole (or in equal parts on more CTAs). The stage's 16 KB of weights take the wide
 *    stage's layout (256-k chunk q where rows 32 q on would be), so the loop is the same; a tile's end adds
 *    16 parts instead of 4.
 *    H200 (docs/performance.md v30): m = 1..8 6-17 % faster on 4096x4096, 1-10 % on 4096x14336, 6-19 % on
 *    1024x4096 and 1024x8192; m = 9..16 (nested, and plain on large weights) 18-27 % on 4096x4096 and
 *    1024x4096, 3-7 % on 4096x14336. At m = 9..16 a tile's end takes the compact form too: its 16 parts
 *    fit a narrow stage's 48 KB of weights and activations. Their plain scales (64 bytes a row and step) come
 *    64-byte swizzled (narrow_scale_off), and the post-scaled math's stages hold only m activation rows
 *    (pipe_x_rows): m = 1 13-15 % faster on 4096x14336 and 4096x4096 (docs/performance.md v34).
 *  - wgmma (TMA variant, compute capability 9.0, sm_90a build; m >= 17, plain absmax m >= 9, nested natural m >= 9:
 *    pipe_use_wgmma): the same decoded fragments are the A operand of wgmma.m64nNk16 (a warpgroup's 4
 *    warps hold its 64 rows), and the activations are read by the tensor cores straight from the stage (B,
 *    K-major with the copy's 128-byte swizzle) instead of per warp through registers: the per-warp
 *    activation reads and mma.sync issue were what bound m = 32/64. B comes in the activations' own k
 *    order (the copy's 16-byte rows are 8 consecutive k), so the fragments must take it too. Two ways
 *    (PipeShape's WG values, pipe_use_natural): on weights past 5 x 2^24 elements (but nested at m = 9..16)
 *    a small kernel first writes the activations permuted into the fragments' order (pipe_permute_x, into
 *    the context's scratch: bnb4_cuda_scratch); on smaller ones, whose CTAs run fewer steps and to which
 *    that kernel's cost per call matters more, a thread reads its rows' whole 128-k half and decodes byte c
 *    of each word (decode_fragment_natural: 6 more shared-memory reads a thread and step than the permuted order, the
 *    same as its quad's; at m = 33..64, short of registers, the quad trades weight bytes after each
 *    read instead: quad_natural, 16 PRMT, 6 SHFL, 16 SEL per warp and step), and a thread takes the scales
 *    of every block of its 128-k half (docs/performance.md v26, v35). At m = 9..16 there, a half's 4 wgmmas (one
 *    block) run on the unscaled codes into sums of their own, scaled into the accumulators once the next half
 *    is decoded (kPostWG, v38).
 *    m <= 8, and nested absmax at m <= 16 but on the activations as they are at blocksize 64, keep mma.sync
 *    (post-scaled at blocksize 64): measured faster (docs/performance.md v16, v45).
 *  - Programmatic dependent launch (TMA variant): the kernel lets the next one on the stream start once
 *    it has passed its own griddepcontrol.wait, and waits before reading the activations or anything
 *    else a previous kernel may write, so launch and prologue (barriers, the code-pair table) overlap the
 *    previous kernel's tail. The first stages' weights and scales are copied before the wait: the
 *    previous kernel, if it may still run, is one of ours and writes no weights (pipe_early), and with them
 *    their activations where the call is captured right after a matmul of ours whose y is no part of x
 *    (pipe_x_early: those stages are whole when the wait returns; at m <= 16 the consumers then wait only at
 *    their first tile end, kLateWait). (Where the weights are the previous matmul's output, m <= 16
 *    prefetches them into L2 instead: pipe_prefetch.)
 *  - Partial tiles: a tile covered by one CTA is stored directly (bias in f32, one rounding). A tile shared
 *    by several CTAs: each writes its f32 partial sums to a slot of the context's split-K workspace; the
 *    last to arrive (a per-tile counter) adds the slots in contributor order, so the result does not
 *    depend on timing (deterministic), adds the bias, rounds once and resets the counter. This hand-over
 *    is up to 1 us of a call at m = 1 on 4096x4096 (H200, docs/performance.md v23), 2.9 us at m = 1 and 4.6
 *    at m = 64 on 14336x4096 on a stream-K grid, and 10-34 % of m = 32 / 64 where tiles are split (v55). On
 *    stream-K grids at m > 16 a kernel of its own hands over by flags instead (FH, pipe_flags_built: no
 *    contributor waits for a round trip; 1-8 % faster there, v55), and where a tile is cut in equal parts at
 *    m = 33..64 the same kernel has the last contributors to arrive add a share of the rows each once all are in -
 *    every contributor in 4 or more parts of short runs at m = 49..64, else the last 3 of 4 parts on plain absmax
 *    (PipeArgs::spread, bnb4_grid_pipe_spread: 1-6.7 % faster there, v59, v60). Measured alternatives: a
 *    cluster per tile does not fit (30 clusters of 4 at one CTA per SM, 32 tiles), a serial hand-over to the last
 *    part's CTA through L2 was slower (v23); any wait at the consumers' tile end (a spin, a call, an mbarrier
 *    wait) cost the main loops their uniform registers, hence the flags' wait in the producer warp (v55).
 *    At m <= 8 (and m <= 16 on wgmma) a tile's sums leave the registers through shared memory, so the
 *    stores (or the workspace writes) are one short loop over the tile's elements: the tile end runs once
 *    per tile at the pace of its instruction fetch, where code per fragment element cost ~0.4 us a call
 *    (docs/performance.md v24).
 *
 * Requirements (bnb4_cuda_pipe_fits): f16/bf16, K % 32 == 0 and K < 2^31, 16-byte-aligned packed weights
 * and activations, 4-byte-aligned nested codes. The TMA variant's tensor maps are encoded per call with
 * the driver's encoder, fetched through the runtime (no link to libcuda).
 *
 * The kernels, their launch and the choice among them, for two translation units: cuda_gemm_pipe.cu (the entry
 * points, float16) and cuda_gemm_pipe_bf16.cu (bfloat16), so the two types' kernels (about 100 each for every
 * target) compile in parallel. All of it is in an anonymous namespace: each unit instantiates its own type's
 * kernels only.
 */
#pragma once
#include <stdlib.h>
#include <string.h>
#include <type_traits>

#include "cuda_sm90.cuh"

namespace {

__constant__ float c_pipe_nf4[16] = {BNB4_NF4_CODEBOOK_VALUES};
__constant__ float c_pipe_fp4[16] = {BNB4_FP4_CODEBOOK_VALUES};

constexpr int kWarps = 16;                      /* 8 row groups of 16 rows x 2 halves of the step's k */
constexpr int kThreads = kWarps * 32;
constexpr int kTileRows = 128;                  /* weight rows per tile */
constexpr int kStepK = 256;                     /* k per iteration (a 128-byte line of each weight row) */
constexpr int kRowBytes = kStepK / 2;
constexpr int kScaleSlots = 8;                  /* block scales per row and stage (blocksize 32: 8) */
constexpr int kWBytes = kTileRows * kRowBytes;  /* 16 KB */
constexpr int kScaleBytes = kTileRows * kScaleSlots * 4;
constexpr int kTableBytes = kPairTableBytes;    /* the code-pair table (cuda_sm90.cuh) */
constexpr int kNcodeBytes = 256 * 4;
/* The cp.async variant's sizing (template parameter CP) for the shared memory a device gives a CTA (pipe_cp_sizing):
 * kCpHopper, the shape's stages beside the 64 KB table (227 KB); kCpFew, 3 stages (A100 / Orin: 163 KB); kCpSmall,
 * 3 stages beside an 8 KB table (sm_86 / 89 / 120: 99 KB) - 8 copies of each entry instead of 32 (entry (v, copy) at
 * v * 32 + 4 copy, lane l reading copy l % 8), so a warp's 32 lookups meet 2-way bank conflicts on average, and its
 * offset takes a shift more than the one PRMT. */
constexpr int kCpHopper = 0, kCpFew = 1, kCpSmall = 2;
constexpr int kSmallTableBytes = 256 * 32;

/* The pipe kernel's math (its template parameter WG): mma.sync (0), or wgmma (TMA variant) on activations
 * permuted beforehand into the decoded fragments' k order (kWgPermuted: pipe_permute_x; kWgPermuted64 the same
 * for nested absmax at blocksize 64, where two lanes of a quad share a block: kPermutedQuad), or on the
 * activations as they are, the weights decoded in their k order (decode_fragment_natural, or quad_natural at
 * m = 33..64; 2 or 4 blocks of scales in a 128-k half: kWgNatural64 / kWgNatural32, blocksize 64 / 32). */
constexpr int kWgPermuted = 1, kWgNatural64 = 2, kWgNatural32 = 4, kWgPermuted64 = 8;
__host__ __device__ constexpr bool wg_permuted(int wg) { return wg == kWgPermuted || wg == kWgPermuted64; }

/* The post-scaled mma.sync math (template parameter PS): off, in k quarters of 128-row tiles, or in narrow
 * tiles - 32 rows x steps of 1024 k (kPsNarrow, m <= 16: pipe_use_narrow). A narrow stage holds the same 16 KB
 * of weights as a wide one, laid out the same way: 256-k chunk q of its 32 rows where rows 32 q .. 32 q + 31
 * of a wide stage lie, so the warps read it as they read a wide stage and only what their rows and k stand
 * for changes (row group rg of a wide stage is chunk rg of a narrow one). */
constexpr int kPsOff = 0, kPsQuarters = 1, kPsNarrow = 2;

/* The dynamic shared memory one CTA may take: 227 KB an SM, 1 KB kept for the static data. */
constexpr int kSmemLimit = 227 * 1024 - 1024;

/* How nested codes reach the TMA variant's consumers (PipeArgs::codes_async): a tensor copy of each row's 16-code
 * run per stage (K % (16 blocksize) == 0), 4-byte words the producer warp's lanes load and store per stage, or
 * (post-scaled math) one bulk copy of a tile's codes - its rows are contiguous - into a buffer after the
 * stages, which the consumers read at a row stride of K / blocksize (pipe_codes_tile), or tensor copies of row
 * groups (kCodesGroups): where a row's codes are not 16-byte strided, g consecutive rows' are (g = 2 or 4: K /
 * blocksize a multiple of 8 or 4), so the codes seen as [N / g][g x K / blocksize] take g copies a stage, copy q
 * bringing rows q, q + g, q + 2g, ... 32 codes each from the 16-byte boundary before their step's 16-code run (a
 * tensor copy's first byte in a row must be 16-byte aligned: an illegal instruction otherwise, v54), which the
 * run follows at (q K / blocksize) mod 16 (code_run: where a tile row's run lands). */
constexpr unsigned kCodesTensor = 0, kCodesLanes = 1, kCodesTile = 2, kCodesGroups = 3;
/* The stage offset of tile row r's 16-code run (the step's, from its 16-aligned first): [row][16] (groups_log2 0), or
 * (kCodesGroups) 32 bytes a row in the copies' order, the run (q per_row) mod 16 on, among tile_rows rows in
 * 2^groups_log2 copies (q = r mod 2^groups_log2) */
__host__ __device__ constexpr uint32_t code_run(uint32_t r, uint32_t tile_rows, uint32_t groups_log2, uint32_t per_row) {
    return groups_log2 == 0 ? r * 16
                            : ((r & ((1u << groups_log2) - 1)) * (tile_rows >> groups_log2) + (r >> groups_log2)) * 32 +
                                  (((r & ((1u << groups_log2) - 1)) * per_row) & 15u);
}
/* the shared memory a CT kernel's stages leave at least (narrow tiles at m = 9..16: 17 KB, against 5 KB with
 * the stages' code slots, which the code buffers of K = 11008 did not fit) */
constexpr int kCodeRoom = 16 * 1024;
/* a code buffer's bytes: the tile's codes and 16 more, which a step past K's end may read (and not use) */
__host__ __device__ constexpr unsigned codes_tile_stride(unsigned tile_rows, unsigned per_row) {
    return tile_rows * per_row + 16;
}

/* Narrow tiles, plain scales: a row's 16 scales a step are 64 bytes, so the 8 rows a warp's scale read covers
 * (one a quad, the same block) would fall on 2 banks, 4-way conflicts at each of a thread's 4 reads a step
 * (ncu: 356 000 bank conflicts a call at m = 1 on 4096x14336, 10 000 on 128-row tiles; docs/performance.md v34).
 * Their tensor copy takes the 64-byte swizzle instead (16-byte chunk c of row r at chunk c ^ ((r / 2) % 4)),
 * which spreads any 8 consecutive rows over 8 banks; this is the offset in it (stages start 1024-byte aligned,
 * the scales at whole KB after them). */
__host__ __device__ constexpr unsigned narrow_scale_off(unsigned dense) { return dense ^ ((dense >> 3) & 0x30u); }

/* CP: the cp.async variant's sizing where the device's shared memory holds less than Hopper's (kCpFew, kCpSmall) */
template <int NT, bool TMA, int WG = 0, int PS = kPsOff, bool CT = false, int CP = kCpHopper> struct PipeShape {
    static constexpr bool Narrow = PS == kPsNarrow;
    static constexpr int TileRows = Narrow ? kTileRows / 4 : kTileRows; /* weight rows per tile */
    static constexpr int StepK = Narrow ? 4 * kStepK : kStepK;          /* k per iteration */
    static constexpr int MT = NT * 8;                       /* activation rows per stage (m padded) */
    static constexpr int XBytes = MT * StepK * 2;
    /* CT (nested codes by tile, kCodesTile): no codes in the stages, and kCodeRoom kept for the code buffers */
    static constexpr int StageBytes = kWBytes + XBytes + (CT ? 0 : kScaleBytes); /* a multiple of 1024 */
    /* as many as fit beside the table in the 227 KB an SM gives one CTA (1 KB kept for the static data,
     * after which the dynamic shared memory starts at a whole KB: see the kernel's smem); CT: no more than
     * without it (the same pipeline) */
    static constexpr int BaseStages = (kSmemLimit - kTableBytes - kNcodeBytes) / (kWBytes + XBytes + kScaleBytes);
    static constexpr int RoomStages = (kSmemLimit - kTableBytes - kNcodeBytes - kCodeRoom) / StageBytes;
    static constexpr int Stages = CP != kCpHopper ? 3 : CT && RoomStages < BaseStages ? RoomStages : BaseStages;
    static constexpr int TableBytes = CP == kCpSmall ? kSmallTableBytes : kTableBytes;
    static constexpr int SmemBytes = TableBytes + kNcodeBytes + Stages * StageBytes;
    /* 16-row mma fragments per consumer warp. TMA at m > 32: 8 consumer warps of 32 rows (the activations
     * they read from shared memory serve twice as many weights, and the 9 warps may take 168 registers
     * where 17 could take only 96, too few for m = 64). Elsewhere 16 warps of 16 rows: measured on the
     * H200 (docs/performance.md v11), 8 warps of 32 rows were up to 15 % slower at m <= 32 on the small
     * shapes and within noise on the large ones. */
    static constexpr int RF = PS || (TMA && !WG && NT == 8) ? 2 : 1; /* (wgmma: warpgroups of 4 x 16 rows) */
    /* the parts a step's 256 k are split in among the warps (PS: quarters of 64 k, one block each) */
    static constexpr int KParts = PS ? 4 : 2;
    static constexpr int RowGroups = kTileRows / (16 * RF);
    static constexpr int ConsumerWarps = RowGroups * KParts;
    static constexpr int Threads = ConsumerWarps * 32 + (TMA ? 32 : 0);
    static_assert(Stages >= 3 && Stages <= 8, "a pipeline needs 3 stages (8 barrier pairs at most)");
    static_assert(CP == kCpHopper || (!TMA && !WG && !PS && Stages <= BaseStages), "the cp.async variant's sizings");
    static_assert((TableBytes + kNcodeBytes) % 1024 == 0, "the stages follow the table at a whole KB");
    static_assert(!Narrow || (TMA && !WG && NT <= 2), "narrow tiles: the post-scaled TMA math at m <= 16");
    static_assert(StageBytes % 1024 == 0, "stages keep the swizzle's 1024-byte alignment");
    static_assert((kWBytes + XBytes) % 1024 == 0, "the scales start at a whole KB (narrow_scale_off's swizzle)");
};

struct PipeArgs : bnb4_cuda_weight_args {
    int scale_slots;            /* plain: block scales a row's 256-k step can touch */
    int scale_vec;              /* plain, blocksize 32 or 64, K % (4 blocksize) == 0, aligned absmax: a row's
                                   scales of a step are 1 or 2 aligned 16-byte words */
    int scale_fixed;            /* K % blocksize == 0 and blocksize <= 256: a chunk's scale slot is fixed */
    size_t N, K, M, nblocks;
    const void *x, *bias;
    void *y;
    float *ws;                  /* [tiles][max_contrib][MT][128] partial sums */
    unsigned *counters;         /* one per tile; FH: one per tile and contributor, their hand-over flags */
    unsigned k_steps, iters, per_cta, max_contrib;
    unsigned inflight;          /* TMA: stages the producer keeps issued but not landed (0: no limit) */
    unsigned prefetch;          /* TMA, m <= 16 without early stages: first stages prefetched into L2 before it */
    unsigned early;             /* TMA: first stages whose weights and scales are copied before it (<= STAGES) */
    unsigned x_early;           /* TMA: their activations too (pipe_x_early: the previous kernel is a matmul of
                                   ours, which does not write x) */
    unsigned x_one_copy;        /* TMA: a stage's activations are one copy of a 3D view (else one a 64-k box) */
    unsigned x_rows;            /* TMA: the activation rows a stage's copy brings - MT, or (post-scaled, one copy)
                                   m where m < MT (pipe_x_rows) */
    unsigned codes_async;       /* TMA, nested: kCodesTensor, kCodesLanes (the producer warp's lanes load and store
                                   the codes in 4-byte words: a row's codes are not 16-byte strided, which their
                                   tensor copy needs), kCodesTile (post-scaled: a tile's codes in one bulk copy)
                                   or kCodesGroups (tensor copies of row groups) */
    unsigned code_groups_log2;  /* kCodesGroups: log2 of the rows a group (1 or 2; else 0) */
    unsigned codes_nbuf;        /* kCodesTile: code buffers, 1 (every CTA's run inside one tile) or 2 */
    unsigned nab_steps;         /* TMA, nested: the steps of a window (nab_window): nested blocksize x blocksize k,
                                   at least 1 */
    uint32_t nnab;              /* TMA, nested: the nested absmax's count */
    unsigned spread;            /* FH on equal parts of a tile: the last `spread` contributors to arrive (all of
                                   them where it is the parts) add a share of its rows m each (pipe_spread); 0: the
                                   counter's last arrival adds them all */
};

/* The CTAs whose runs share tile t (per_cta steps each, one after another): blockIdx.x from tile_first_cta to
 * tile_last_cta; the first is the one whose run ends in the tile (or the tile is whole: first == last). */
__device__ __forceinline__ unsigned tile_first_cta(const PipeArgs &a, unsigned t) { return t * a.k_steps / a.per_cta; }
__device__ __forceinline__ unsigned tile_last_cta(const PipeArgs &a, unsigned t) {
    return ((t + 1) * a.k_steps - 1) / a.per_cta;
}
/* FH: the hand-over flag of tile t's contributor i (blockIdx.x - tile_first_cta; the first one's, 0, is never set) */
__device__ __forceinline__ unsigned *handover_flag(const PipeArgs &a, unsigned t, unsigned i) {
    return a.counters + (size_t)t * a.max_contrib + i;
}

/* Debugging a hang (build with -DBNB4_PIPE_WATCHDOG, e.g. CMAKE_CUDA_FLAGS=-DBNB4_PIPE_WATCHDOG): the pipeline's
 * waits give up after about 2 s, printing the CTA, thread, barrier, the parity waited for, the barrier's word as a
 * plain load reads it (on the H200 not the barrier's state: read it as noise) and the iteration, then trap (the
 * message shows at the host's next sync, as a device assert's does). Which thread waits where, at which iteration,
 * named v43's hang in one call (docs/performance.md v44). */
#if defined(BNB4_PIPE_WATCHDOG) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __noinline__ void pipe_watchdog_wait(uint32_t bar, uint32_t parity, const char *what, unsigned it) {
    const long long t0 = clock64();
    while (!mbar_try_wait(bar, parity)) {
        if (clock64() - t0 > 4000000000LL) {
            unsigned long long state;
            asm volatile("ld.shared.b64 %0, [%1];" : "=l"(state) : "r"(bar));
            printf("[pipe hang] cta %d thread %d: %s barrier at smem 0x%x, parity %u, raw state 0x%016llx, "
                   "iteration %u\n",
                   (int)blockIdx.x, (int)threadIdx.x, what, bar, parity, state, it);
            __trap();
        }
    }
}
#define BNB4_PIPE_WAIT(bar, parity, what, it) pipe_watchdog_wait(bar, parity, what, it)
#else
#define BNB4_PIPE_WAIT(bar, parity, what, it) mbar_wait(bar, parity)
#endif

/* PairOps (cuda_sm90.cuh) plus the mma.sync of the dtype */
template <typename T> struct PipeOps;
template <> struct PipeOps<__half> : PairOps<__half> {
    static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};
template <> struct PipeOps<__nv_bfloat16> : PairOps<__nv_bfloat16> {
    static __device__ __forceinline__ void mma(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
};

/* The table as a shared-space address (table_s, warp-uniform): through the generic pointer the compiler
 * may rebuild the shared window's base in a vector register inside the loop and add it to every lookup's
 * offset (the post-scaled loop: 160 instructions per step instead of 126; the wgmma loops after an
 * unrelated change: 35 more per step). */
__device__ __forceinline__ uint32_t lds_pair(uint32_t addr) {
    uint32_t v;
    asm("ld.shared.b32 %0, [%1];" : "=r"(v) : "r"(addr));
    return v;
}

/* The A fragment of k-step 2u + h from word u of the thread's two rows (wA: row g, wB: row g + 8): bytes
 * 2h and 2h + 1 of each decode to their code pairs (one PRMT forms the table offset), times the row's
 * block scale pair. The mma.sync and the wgmma math take the same fragments. */
template <typename T, bool kSmallTable = false>
__device__ __forceinline__ void decode_fragment(uint32_t af[4], uint32_t table_s, uint32_t wA, uint32_t wB,
                                                uint32_t lane4, int h, uint32_t sA2, uint32_t sB2) {
    const uint32_t sel0 = pair_sel(2u * h), sel1 = pair_sel(2u * h + 1);
    /* kSmallTable (kCpSmall): lane4 is the lane's copy x 32, so the PRMT gives byte x 256 + copy x 32: an eighth of
     * it is the entry's offset */
    auto off = [&](uint32_t w, uint32_t sel) { return kSmallTable ? pair_offset(w, lane4, sel) >> 3 : pair_offset(w, lane4, sel); };
    af[0] = PipeOps<T>::mul2(lds_pair(table_s + off(wA, sel0)), sA2);
    af[1] = PipeOps<T>::mul2(lds_pair(table_s + off(wB, sel0)), sB2);
    af[2] = PipeOps<T>::mul2(lds_pair(table_s + off(wA, sel1)), sA2);
    af[3] = PipeOps<T>::mul2(lds_pair(table_s + off(wB, sel1)), sB2);
}

/* PS: the same fragment's codes alone (the block scale is applied to the mma sums). */
__device__ __forceinline__ void decode_codes(uint32_t af[4], uint32_t table_s, uint32_t wA, uint32_t wB,
                                             uint32_t lane4, int h) {
    const uint32_t sel0 = pair_sel(2u * h), sel1 = pair_sel(2u * h + 1);
    af[0] = lds_pair(table_s + pair_offset(wA, lane4, sel0));
    af[1] = lds_pair(table_s + pair_offset(wB, lane4, sel0));
    af[2] = lds_pair(table_s + pair_offset(wA, lane4, sel1));
    af[3] = lds_pair(table_s + pair_offset(wB, lane4, sel1));
}

/* wgmma (natural k order), m = 33..64 (kTradeNatural): thread (g, c) reads chunk c (16 bytes, 4 words, 32 k)
 * of its row's 64-byte half, but the wgmma A fragment of k-step ks wants byte c of the half's words 2 ks and
 * 2 ks + 1 (the mma's k 2c, 2c+1 and 2c+8, 2c+9 of the tensor copy's natural 16 k), which lie in chunk ks / 2.
 * The quad trades bytes so that word u of the result is byte c of chunk u's four words (byte i of it from word
 * i): then k-step 2u + h is bytes 2h and 2h + 1 of word u, the same as the permuted order's fragments. The
 * sender packs byte c ^ x
 * of its four words for lane c ^ x (4 PRMT with the lane's selectors, 4 with constant ones), three
 * butterfly shuffles deliver them, and the received words, which came from lane c ^ x, are put in chunk
 * order by two conditional swaps (c's two bits). sel_lo: bytes c, c ^ 1 of a pair of words (pair_trade_sel);
 * sel_hi, c ^ 2 and c ^ 3, follows from it. */
__device__ __forceinline__ uint32_t pair_trade_sel(uint32_t c) {
    return c | (4u + c) << 4 | (c ^ 1u) << 8 | (4u + (c ^ 1u)) << 12;
}
[[maybe_unused]] __device__ __forceinline__ uint4 quad_natural(uint4 q, uint32_t sel_lo, uint32_t c_odd, uint32_t c_high) {
    const uint32_t sel_hi = sel_lo ^ 0x2222u; /* c ^ 2 in each selector nibble */
    const uint32_t a01 = __byte_perm(q.x, q.y, sel_lo), a23 = __byte_perm(q.z, q.w, sel_lo);
    const uint32_t b01 = __byte_perm(q.x, q.y, sel_hi), b23 = __byte_perm(q.z, q.w, sel_hi);
    uint32_t r0 = __byte_perm(a01, a23, 0x5410);                       /* byte c: this lane's own */
    uint32_t r1 = __shfl_xor_sync(~0u, __byte_perm(a01, a23, 0x7632), 1); /* byte c ^ 1, for lane c ^ 1 */
    uint32_t r2 = __shfl_xor_sync(~0u, __byte_perm(b01, b23, 0x5410), 2);
    uint32_t r3 = __shfl_xor_sync(~0u, __byte_perm(b01, b23, 0x7632), 3);
    /* r_x came from lane c ^ x: word u is r_(u ^ c) */
    const uint32_t s0 = c_odd ? r1 : r0, s1 = c_odd ? r0 : r1, s2 = c_odd ? r3 : r2, s3 = c_odd ? r2 : r3;
    r0 = c_high ? s2 : s0, r1 = c_high ? s3 : s1, r2 = c_high ? s0 : s2, r3 = c_high ? s1 : s3;
    return make_uint4(r0, r1, r2, r3);
}

/* wgmma (natural k order), m <= 32: the A fragment of k-step ks wants, for thread (g, c), byte c of words 2 ks and
 * 2 ks + 1 of its row's 64-byte half (the mma's k 2c, 2c+1 and 2c+8, 2c+9 of the tensor copy's natural 16 k).
 * So the thread reads the whole half (its quad reads the same 16 bytes at each of the 4 reads) and picks byte c
 * with the table offset's PRMT (a selector in a register instead of an immediate): the decode costs what the
 * permuted order's does, plus 3 reads a row and step - 24 shared-memory wavefronts a warp and step, as a
 * quarter-warp's two quads' identical reads cost what distinct ones do (ncu, docs/performance.md v35).
 * wX0 / wX1: words 2 ks and 2 ks + 1 of row g (A) and row g + 8 (B); sel: pair_sel(c). */
template <typename T>
__device__ __forceinline__ void decode_fragment_natural(uint32_t af[4], uint32_t table_s, uint32_t wA0, uint32_t wA1,
                                                        uint32_t wB0, uint32_t wB1, uint32_t lane4, uint32_t sel,
                                                        uint32_t sA2, uint32_t sB2) {
    af[0] = PipeOps<T>::mul2(lds_pair(table_s + pair_offset(wA0, lane4, sel)), sA2);
    af[1] = PipeOps<T>::mul2(lds_pair(table_s + pair_offset(wB0, lane4, sel)), sB2);
    af[2] = PipeOps<T>::mul2(lds_pair(table_s + pair_offset(wA1, lane4, sel)), sA2);
    af[3] = PipeOps<T>::mul2(lds_pair(table_s + pair_offset(wB1, lane4, sel)), sB2);
}

/* kPostWG: the same fragment's codes alone (the block scale is applied to the group's sums) */
[[maybe_unused]] __device__ __forceinline__ void decode_codes_natural(uint32_t af[4], uint32_t table_s, uint32_t wA0, uint32_t wA1,
                                                     uint32_t wB0, uint32_t wB1, uint32_t lane4, uint32_t sel) {
    af[0] = lds_pair(table_s + pair_offset(wA0, lane4, sel));
    af[1] = lds_pair(table_s + pair_offset(wB0, lane4, sel));
    af[2] = lds_pair(table_s + pair_offset(wA1, lane4, sel));
    af[3] = lds_pair(table_s + pair_offset(wB1, lane4, sel));
}

/* 16 bytes of a stage at shared address `addr`: the chunk's XOR applies to the address itself (through a
 * generic pointer the loop took 4 instructions more a step); volatile, so it stays after the stage's
 * full-barrier wait (an asm volatile too) */
[[maybe_unused]] __device__ __forceinline__ uint4 lds128_at(uint32_t addr) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
    return v;
}

/* (cp.async: cuda_common.cuh) */
[[maybe_unused]] __device__ __forceinline__ void st_shared_u32(uint32_t dst, uint32_t v) {
    asm volatile("st.shared.u32 [%0], %1;" ::"r"(dst), "r"(v) : "memory");
}
/* Swizzles (16-byte units). Weight row r, chunk j (0..7): a quarter-warp reads chunk 4j'+c of rows g
 * and g+1 (g even), so odd rows move by 4 chunks. Activation row m, chunk j (0..31): a quarter-warp reads
 * chunk 16j'+4c+u (c = 0..3) of rows g and g+1; chunk bits 2 (c's low bit) and 1 (c's high bit, from
 * bit 3) and the row's parity (bit 0) make the 8 reads land in 8 distinct 16-byte bank groups. */
__device__ __forceinline__ uint32_t w_slot(uint32_t r, uint32_t j) { return j ^ ((r & 1u) << 2); }
__device__ __forceinline__ uint32_t x_slot(uint32_t m, uint32_t j) { return j ^ ((j >> 2) & 2u) ^ (m & 1u); }

/* TMA: tile row of mma row g (0..7) of a 16-row group: the 128-byte swizzle XORs a row's chunk index with
 * row & 7, and this order puts the two rows a quarter-warp reads (g = 2i, 2i + 1) 4 apart, so their chunks
 * land in distinct bank groups. */
__device__ __forceinline__ int tma_row(int g) { return (g >> 1) | ((g & 1) << 2); }
/* TMA: activation row (within 8) of mma column n. The activations come as four 64-k boxes (128-byte rows,
 * 128-byte swizzle) and thread (g, c) takes its four 16-byte pieces in the order u + c / 2 (mod 4): with
 * the two rows of a quarter-warp 2 apart, its 8 reads hit 8 bank groups. */
__device__ __forceinline__ int tma_xrow(int n) { return (n & 4) | ((n & 1) << 1) | ((n >> 1) & 1); }
/* PS (quarters, 8-byte weight reads): tile row (within 8) of mma row g. A half-warp reads rows g = 0..3
 * (or 4..7), 32 bytes of each; rows whose swizzle XORs differ in bits 1 and 2 put those 32-byte runs in
 * 4 distinct quarters of the banks. (The activations need no reordering there: see x_off.) */
__device__ __forceinline__ int ps_row(int g) { return ((g & 3) << 1) | (g >> 2); }

/* Whether the kernel's tile end is compact (kCompactEnd: its sums leave the registers through shared memory in one
 * short loop - m <= 8, m <= 16 on wgmma, narrow tiles; see the tile's end). The hand-over by flags (FH) is built for
 * the others alone (pipe_flags_built). */
template <int NT, bool TMA, int WG, int PS> constexpr bool pipe_compact_end() {
    return NT == 1 || (WG && NT == 2) || PipeShape<NT, TMA, WG, PS>::Narrow;
}

/* Whether the kernel is also built with the hand-over by flags (FH) for stream-K grids: the TMA variant where the
 * tile end is not compact (m > 16, and mma.sync's m = 9..16). Its consumers store their slot, and one thread
 * publishes it with a release store; the tile's first contributor, whose run ends in the tile, has its producer
 * warp acquire the others' flags (with every copy issued) and let the consumers through the hand-over barrier.
 * No contributor waits for a counter's round trip. H200 (docs/performance.md v55): stream-K runs at m = 24..64
 * 1-8 % faster (18944x3584, 17408x5120, 11008x4096); on equal parts of a tile, which all end together, the wait for
 * the others' release is on the critical path where the counter's last arrival is not (3-21 % slower: they keep
 * the counter); carried in one kernel beside the counter, the m = 17..64 loops grew up to 2 instructions, and on
 * the compact tile ends the m <= 16 kernels ran 1-4 % slower: hence a kernel of its own, where it pays. */
template <int NT, bool TMA, int WG, int PS> constexpr bool pipe_flags_built() {
    return TMA && !pipe_compact_end<NT, TMA, WG, PS>();
}

/* Whether the hand-over kernel (FH) also lets the last contributors to arrive at a tile cut in equal parts add a share
 * of its rows m each (PipeArgs::spread, where pipe_spread says): at m = 33..64, slots of 64 rows (H200,
 * docs/performance.md v59: at m = 32, slots of half the size, 0-4 % slower in 4 parts - every contributor waiting for
 * the last cost more than the last one's whole fix-up saved). */
template <int NT, bool TMA, int WG, int PS> constexpr bool pipe_spread_built() {
    return pipe_flags_built<NT, TMA, WG, PS>() && NT == 8;
}

/* Whether the kernel keeps each row's nested absmax in registers by window (kNabWindow, in the kernel): the TMA
 * variant at m <= 32 where a thread has one row (the post-scaled math; wgmma at blocksize 64) or on permuted wgmma. */
template <int NT, bool NESTED, bool TMA, int WG, int PS> constexpr bool pipe_nab_window() {
    return TMA && NESTED && NT <= 4 && (PS != kPsOff || WG == kWgNatural64 || wg_permuted(WG));
}

/* Whether the kernel is also built for weights whose rows each lie in one nested block (NR: K / blocksize divides
 * the nested blocksize, as at K = 4096 and 8192 with bitsandbytes' 64 and 256): a row's one nested absmax is
 * loaded at a tile's start, with no window test and no choice between two values a step (3-5 instructions a warp
 * and step fewer). Built where the issue's nested shapes run at m <= 32: the post-scaled math and wgmma on the
 * activations as they are. */
template <int NT, bool NESTED, bool TMA, int WG, int PS> constexpr bool pipe_row_nab_built() {
    return pipe_nab_window<NT, NESTED, TMA, WG, PS>() && (PS != kPsOff || WG == kWgNatural64);
}

/* TMA = false: all 512 threads issue cp.async copies for a stage and meet at __syncthreads (any sm_80+).
 * TMA = true (sm_90, the common layouts: see pipe_use_tma): one more warp produces - tensor copies of the
 * weight tile, the activations and the plain scales or nested codes - and full / empty
 * mbarriers per stage replace the CTA-wide barrier, so the consumer warps issue only decode and math.
 * WG != 0 (with TMA): the math is wgmma, the weights decoded into registers as A, the activations read
 * by the tensor cores straight from the stage (B), permuted beforehand so their k order matches the
 * decoded fragments' (kWgPermuted: pipe_permute_x) or as they are, the quad trading its weight bytes into
 * their order (kWgNatural64 / 32: quad_natural); a warpgroup takes 64 rows x one 128-k half of every step.
 * (kWgNatural64, nested: the quad's lanes need the same four scales and decode one each, kNaturalQuad.)
 * w_map / x_map / s_map: the TMA variant's tensor maps (zeros, unused, for the cp.async one). */
template <typename T, int NT, bool NESTED, bool TMA, int WG, int PS, bool CT = false, int CP = kCpHopper, bool FH = false,
          bool NR = false>
__global__ void __launch_bounds__(PipeShape<NT, TMA, WG, PS, CT, CP>::Threads, 1)
    gemm_4bit_pipe_kernel(PipeArgs a, const __grid_constant__ CUtensorMap w_map,
                          const __grid_constant__ CUtensorMap x_map, const __grid_constant__ CUtensorMap s_map) {
#if !BNB4_HAS_TMA
    if constexpr (TMA) {
        __trap(); /* never launched below sm_90 (bnb4_cuda_gemm_pipe checks the device) */
    } else
#elif !BNB4_HAS_WGMMA
    if constexpr (WG) {
        __trap(); /* only launched on compute capability 9.0 from an sm_90a build (pipe_use_wgmma) */
    } else
#endif
    {
    using Ops = PipeOps<T>;
    using S = PipeShape<NT, TMA, WG, PS, CT, CP>;
    constexpr bool kSmallTable = CP == kCpSmall;
    static_assert(!WG || TMA, "wgmma reads the activations as the tensor copy lays them out");
    static_assert(WG == 0 || wg_permuted(WG) || WG == kWgNatural64 || WG == kWgNatural32, "the math (PipeShape)");
    static_assert(WG != kWgPermuted64 || NESTED, "kWgPermuted64: nested absmax at blocksize 64");
    constexpr bool kNatural = WG == kWgNatural64 || WG == kWgNatural32; /* wgmma on the activations as they are: */
    /* a thread reads its rows' whole 128-k half (decode_fragment_natural); at m = 33..64, where its registers would
     * spill, the quad trades its bytes (quad_natural) */
    constexpr bool kTradeNatural = kNatural && NT == 8, kReadNatural = kNatural && !kTradeNatural;
    /* wgmma, post-scaled groups (m = 9..16: plain, and nested on the activations as they are, v45): on the
     * activations as they are at blocksize 64, a half's 4 wgmmas (64 k) are one block, so they run on the unscaled
     * codes into sums of their own (wg_sum), which take the rows' block scales once - 8 FFMA a group where its
     * fragments took 16 HMUL2: 145 instructions a warp and step instead of 163, 14336x4096 m = 9..16 2 % faster
     * (H200, docs/performance.md v38). At m = 17..32 the FFMA cost what the HMUL2 did, and nested m = 24..32 ran
     * 5-15 % slower. */
    constexpr bool kPostWG = WG == kWgNatural64 && NT <= 2;
    static_assert(!PS || (TMA && !WG && NT <= 2), "post-scaled quarters: the TMA layouts' mma.sync at m <= 16");
    constexpr int MT = S::MT, STAGES = S::Stages;
    constexpr int kConsumerWarps = S::ConsumerWarps, kConsumerThreads = kConsumerWarps * 32;
    /* TMA, nested: every consumer thread releases a slot itself (elsewhere one lane a warp). The producer's
     * lanes may store codes into a slot (codes_async), and only a thread's own arrival orders its reads
     * before them for the sanitizer's race check: one elected lane's arrival, a warp barrier before it or not,
     * was reported as racing (docs/performance.md v31). The CT kernels' stages get no lanes' stores, but with
     * one elected lane racecheck reported hazards there too (v33; no faster either). */
    [[maybe_unused]] constexpr bool kLaneRelease = TMA && NESTED;
    /* x_early (the early stages whole before the producer's griddepcontrol.wait): at m <= 16 the consumers wait for
     * the previous kernel only at their first tile end, the first place they touch what it may write (bias,
     * split-K workspace, y), so they run the early stages during its tail: 0.8 % faster there (nested 4096x4096
     * m = 1..8 3 %), 0.4 % slower at m = 64 (H200, docs/performance.md v44) */
    [[maybe_unused]] constexpr bool kLateWait = NT <= 2;
    constexpr int RF = S::RF, KP = S::KParts, RG = S::RowGroups;
    constexpr int U = PS ? 2 : 4; /* 4-byte words of a weight row a thread takes per step */
    constexpr bool kNarrow = S::Narrow; /* 32-row tiles, 1024-k steps (PipeShape) */
    /* FH: the hand-over by flags, else by the counter (pipe_flags_built, launched on stream-K grids); kSpread: and
     * where a tile is cut in equal parts, the last contributors to arrive adding a share each (PipeArgs::spread,
     * pipe_spread_built) */
    static_assert(!FH || (TMA && !pipe_compact_end<NT, TMA, WG, PS>()), "flags: TMA, tile ends not compact");
    constexpr bool kSpread = pipe_spread_built<NT, TMA, WG, PS>() && FH;
    constexpr int TR = S::TileRows, SK = S::StepK;
    extern __shared__ __align__(1024) unsigned char smem[];
    unsigned char *table = smem; /* the code-pair table (its lookups go through table_s) */
    /* the table's shared address, shuffled from lane 0 so the compiler knows it is warp-uniform and keeps
     * it in a uniform register (each lookup one LDS [R + UR]) */
    const uint32_t table_s = __shfl_sync(~0u, (uint32_t)__cvta_generic_to_shared(table), 0);
    float *ncode = reinterpret_cast<float *>(smem + S::TableBytes);
    unsigned char *stages = smem + S::TableBytes + kNcodeBytes;
    /* TMA: the stages start 1024-byte aligned (the 128-byte swizzle's period): the declaration's alignment
     * places the dynamic shared memory so, and the table and code book before them take whole KB (a fix
     * computed from the address at run time was rebuilt at every turn of the loop: 4 instructions) */
    const uint32_t stages_addr = (uint32_t)__cvta_generic_to_shared(stages);
    __shared__ int s_last;
    __shared__ __align__(8) uint64_t s_bars[2 * 8]; /* TMA: full[STAGES], then empty[STAGES] */
    /* kCodesTile: the code buffers' full[2], then empty[2] */
    [[maybe_unused]] __shared__ __align__(8) uint64_t s_code_bars[4];
    /* kSpread: completes once the consumers' thread 0 has stored their CTA's arrival at the tile's counter in s_last
     * (PipeArgs::spread below every part), which the producer warp then reads */
    [[maybe_unused]] __shared__ __align__(8) uint64_t s_arrival_bar;
    /* (shuffled from lane 0 like table_s: warp-uniform and opaque, so the wgmma loop no longer rebuilds it
     * from %cgactaid at every turn, 4-5 instructions) */
    const uint32_t full_bar = __shfl_sync(~0u, (uint32_t)__cvta_generic_to_shared(s_bars), 0);
    [[maybe_unused]] const uint32_t empty_bar = full_bar + 8 * STAGES;

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, c = lane & 3;
    /* Nested codes by tile (CT: kCodesTile, the post-scaled math's consumers only): the CTA's run's tiles'
     * codes, tile after tile, in code buffers after the stages; buffer b (load L of the run: b = L % nbuf)
     * completes on code_full + 8 b and is released by the consumer warps on code_empty + 8 b once they leave
     * its tile. A template parameter: a run-time choice cost the nested loop at m <= 8 4 instructions a step. */
    static_assert(!CT || (TMA && NESTED && PS != kPsOff), "codes by tile: the post-scaled math's nested codes");
    constexpr bool codes_tile = CT;
    [[maybe_unused]] const unsigned code_nbuf = a.codes_nbuf; /* 1 or 2 */
    [[maybe_unused]] const unsigned code_stride = codes_tile_stride(TR, (unsigned)(a.K >> a.bs_log2));
    [[maybe_unused]] const uint32_t code_full = (uint32_t)__cvta_generic_to_shared(s_code_bars);
    [[maybe_unused]] const uint32_t code_empty = code_full + 16;
    const int j = (warp / RG) & (KP - 1); /* the k part (128-k half, PS: 64-k quarter) of each step it takes */
    const size_t N = a.N, K = a.K, M = a.M;
    const unsigned it_begin = blockIdx.x * a.per_cta;
    /* kCodesGroups: log2 of the rows a group, else 0 (never the post-scaled math's: pipe_codes_async) */
    [[maybe_unused]] const unsigned code_groups_log2 = TMA && NESTED && !PS ? a.code_groups_log2 : 0u;
    const unsigned it_end = min(a.iters, it_begin + a.per_cta);
    const T *x = reinterpret_cast<const T *>(a.x);
#if BNB4_HAS_TMA
    if constexpr (TMA) {
        /* the producer warp's lanes store the nested codes (pipe_codes_async) */
        const bool codes_async = NESTED && a.codes_async == kCodesLanes;
        if (tid == 0) {
            for (int i = 0; i < STAGES; i++) {
                /* the producer's arrival with the copies' byte count (codes_async: and each of its lanes' once
                 * it has stored its share of the codes) */
                mbar_init(full_bar + 8 * i, codes_async ? 33 : 1);
                mbar_init(empty_bar + 8 * i, kLaneRelease ? kConsumerThreads : kConsumerWarps);
            }
            if (codes_tile)
                for (int b = 0; b < 2; b++) {
                    mbar_init(code_full + 8 * b, 1);
                    mbar_init(code_empty + 8 * b, kConsumerWarps);
                }
            if (kSpread)
                mbar_init((uint32_t)__cvta_generic_to_shared(&s_arrival_bar), 1);
            mbar_init_fence();
        }
        __syncthreads();
        if (warp == kConsumerWarps) { /* ---- the producer warp: one lane issues every tensor copy ---- */
            /* codes_async: every lane stores a share of the nested codes (else the others have nothing to do) */
            const bool lead = lane == 0;
            /* Whether this CTA finishes the tile its run ends in (it started it and other CTAs hold the rest), or
             * (spread: equal parts) shares it at all: then the warp's lanes wait at the end to learn whether its
             * consumers add (spread below every part), and arrive at their hand-over barrier (handover_arrive) once
             * every other contributor has published its partial sums (see the consumers' tile end) */
            const unsigned last_t = (it_end - 1) / a.k_steps;
            const bool fixes = FH && it_end > it_begin &&
                               (kSpread && a.spread ? tile_first_cta(a, last_t) != tile_last_cta(a, last_t)
                                         : it_end < (last_t + 1) * a.k_steps && last_t * a.k_steps >= it_begin);
            if (!lead && !codes_async && !fixes)
                return;
            const unsigned bs_log2 = (unsigned)a.bs_log2;
            /* plain: the step's 256 / blocksize scales of each row; nested: 16 codes of each row, the 16-aligned
             * run holding the step's 4 or 8 (a tensor copy's row is at least 16 bytes; codes_async: the step's
             * codes alone, where that run has them) */
            const bool s_copies = !codes_async && !codes_tile; /* the scales' or codes' tensor copies */
            const unsigned s_bytes = !s_copies ? 0u : NESTED ? TR * (code_groups_log2 ? 32 : 16) : TR * 4 * (SK >> bs_log2);
            const unsigned s_mask = NESTED ? ~15u : ~0u;
            const unsigned x_bytes = a.x_rows * (SK * 2); /* (pipe_x_rows) */
            if (lead) {
                tma_prefetch_map(&w_map);
                tma_prefetch_map(&x_map);
                if (s_copies)
                    tma_prefetch_map(&s_map);
            }
            /* codes_async: a step's codes of each row in 4-byte words (K % (4 blocksize) == 0 and 4-byte aligned
             * codes: pipe_use_tma), loaded into registers kCodesAhead steps ahead and stored where the tensor
             * copy's run would put them, after the stage's tensor copies are issued; each lane's arrival on the
             * stage's full barrier releases its stores (plain loads and stores, which the sanitizer's race check
             * follows: cp.async with cp.async.mbarrier.arrive was reported as racing, v31). Loaded one step
             * ahead, a load's DRAM round trip held up the next stage's copies (v31: nested 4096x11008 m = 1
             * 14.0 us against plain's 9.8); kCodesAhead = 3 is the producer's in-flight window, in the
             * post-scaled kernels (m <= 16) only: on wgmma at m = 32 / 64 3 ahead ran 8-12 % and 2 ahead 2-4 %
             * slower than 1 (v32). Words a row: 1 or 2 (blocksize 64 / 32), 4 on narrow tiles; TR << wpr_log2 =
             * 128 or 256 words a stage, 4 or 8 a lane. */
            constexpr int kCodesAhead = PS ? 3 : 1;
            constexpr int kLaneWords = PS ? 4 : 8; /* (the post-scaled math: blocksize 64, 4 words a lane) */
            const unsigned per_row = (unsigned)(K >> bs_log2);
            const unsigned wpr_log2 = (unsigned)__ffs((int)(SK >> bs_log2)) - 3;
            const unsigned stage_words = (unsigned)TR << wpr_log2;
            uint32_t codes_w[kCodesAhead][kLaneWords]; /* ring entries: stages' codes, ring turns apart */
            auto load_codes = [&](uint32_t(&w)[kLaneWords], unsigned k0, int n0) {
                const unsigned first = k0 >> bs_log2;
#pragma unroll
                for (unsigned q = 0; q < kLaneWords; q++) {
                    const unsigned i = lane + 32 * q, r = i >> wpr_log2, wd = i & ((1u << wpr_log2) - 1);
                    const size_t n = (size_t)n0 + r;
                    w[q] = 0u; /* rows past N, words past K: zeros */
                    if (i < stage_words && n < N && first + 4 * wd < per_row)
                        w[q] = __ldg(reinterpret_cast<const unsigned *>(a.codes + n * per_row + first + 4 * wd));
                }
            };
            auto store_codes = [&](const uint32_t(&w)[kLaneWords], uint32_t base, uint32_t fb, unsigned k0) {
                const uint32_t dst0 = base + kWBytes + S::XBytes + ((k0 >> bs_log2) & 15u);
#pragma unroll
                for (unsigned q = 0; q < kLaneWords; q++) {
                    const unsigned i = lane + 32 * q;
                    if (i < stage_words)
                        st_shared_u32(dst0 + (i >> wpr_log2) * 16 + 4 * (i & ((1u << wpr_log2) - 1)), w[q]);
                }
                mbar_arrive(fb);
            };
            /* a stage's scales or codes: one tensor copy, or kCodesGroups one per row of a group (code_run) */
            auto copy_scales = [&](uint32_t dst, uint32_t fb, unsigned k0, int n0) {
                const int col = (int)((k0 >> bs_log2) & s_mask);
                if constexpr (NESTED && !PS)
                    if (code_groups_log2) {
                        for (unsigned q = 0; q < (1u << code_groups_log2); q++)
                            tma_load_2d(dst + code_run(q, TR, code_groups_log2, 0), &s_map,
                                        (int)((q * per_row) & ~15u) + col, n0 >> code_groups_log2, fb);
                        return;
                    }
                tma_load_2d(dst, &s_map, col, n0, fb);
            };
            /* a stage's weight and scale copies, after its byte count (the activations' included) */
            auto copy_weights = [&](uint32_t base, uint32_t fb, unsigned k0, int n0) {
                if (lead) {
                    mbar_arrive_tx(fb, kWBytes + x_bytes + s_bytes);
                    if constexpr (kNarrow) /* 256-k chunk q where a wide stage has rows 32 q on (a 3D view) */
                        tma_load_3d(base, &w_map, 0, n0, (int)(k0 / kStepK), fb);
                    else
                        tma_load_2d(base, &w_map, (int)(k0 / 2), n0, fb);
                    if (s_copies)
                        copy_scales(base + kWBytes + S::XBytes, fb, k0, n0);
                }
            };
            /* a stage's activations: 64-k boxes (4, narrow 16) of x_rows rows, one copy or one each */
            auto copy_x = [&](uint32_t base, uint32_t fb, unsigned k0) {
                if (a.x_one_copy) {
                    tma_load_3d(base + kWBytes, &x_map, 0, 0, (int)(k0 / 64), fb);
                } else {
#pragma unroll
                    for (int q = 0; q < SK / 64; q++)
                        tma_load_2d(base + kWBytes + q * (MT * 128), &x_map, (int)(k0 + 64 * q), 0, fb);
                }
            };
            /* kCodesTile: the codes of the run's tiles, one bulk copy each (the tile's rows are contiguous: TR rows
             * of per_row bytes, a multiple of 16, at a 16-byte aligned start - pipe_codes_tile); the first
             * code_nbuf now (they are weights: safe before the wait, as the early stages), each later one once the
             * consumers have left the tile that held its buffer */
            const unsigned run = it_end - it_begin;
            const unsigned code_t0 = it_begin / a.k_steps;
            /* (not const: where it folds to 0, nvcc warns of the pointless "< code_tiles" tests) */
            unsigned code_tiles = codes_tile && run ? (it_end - 1) / a.k_steps - code_t0 + 1 : 0;
            unsigned code_loads = 0;
            auto load_tile_codes = [&]() {
                const uint32_t b = code_loads & (code_nbuf - 1), bar = code_full + 8 * b;
                const unsigned bytes = TR * per_row;
                mbar_arrive_tx(bar, bytes);
                bulk_load(stages_addr + STAGES * S::StageBytes + b * code_stride,
                          a.codes + (size_t)(code_t0 + code_loads) * bytes, bytes, bar);
                code_loads++;
            };
            /* (a load past the first code_nbuf waits for the release of load code_loads - code_nbuf) */
            auto code_parity = [&]() { return (code_loads / code_nbuf - 1) & 1u; };
            if (lead)
                while (code_loads < code_tiles && code_loads < code_nbuf)
                    load_tile_codes();
            /* The first `early` stages' weights and scales go out now, while the previous kernel ends, and
             * only their activations wait (see pipe_early: the host knows the previous kernel did not write
             * them); else the first `prefetch` stages into L2 (pipe_prefetch). */
            const unsigned early = min(run, a.early), ahead = min(run, early + a.prefetch);
            for (unsigned i = 0; i < ahead; i++) {
                const unsigned it = it_begin + i, t = it / a.k_steps, k0 = (it - t * a.k_steps) * SK;
                const int n0 = (int)(t * TR);
                if (i < early) { /* slot i, its first use */
                    const uint32_t base = stages_addr + i * S::StageBytes, fb = full_bar + 8 * i;
                    if (kCodesAhead == 1 && codes_async)
                        load_codes(codes_w[0], k0, n0);
                    copy_weights(base, fb, k0, n0);
                    if (a.x_early && lead)
                        copy_x(base, fb, k0);
                    if (kCodesAhead == 1 && codes_async)
                        store_codes(codes_w[0], base, fb, k0);
                } else if (lead) {
                    if constexpr (kNarrow)
                        tma_prefetch_l2_3d(&w_map, 0, n0, (int)(k0 / kStepK));
                    else
                        tma_prefetch_l2_2d(&w_map, (int)(k0 / 2), n0);
                    if (s_copies) /* (kCodesGroups: the first row's copy, which the others' runs are beside) */
                        tma_prefetch_l2_2d(&s_map, (int)((k0 >> bs_log2) & s_mask), n0 >> code_groups_log2);
                }
            }
            /* codes_async, more than 1 ahead: the early stages' codes, after all their copies are on their
             * way, loaded kCodesAhead stages at a time before any is stored (one DRAM round trip each group,
             * not each stage) */
            for (unsigned i0 = 0; kCodesAhead > 1 && codes_async && i0 < early; i0 += kCodesAhead) {
#pragma unroll
                for (int d = 0; d < kCodesAhead; d++) {
                    const unsigned it = it_begin + i0 + d, t = it / a.k_steps;
                    if (i0 + d < early)
                        load_codes(codes_w[d], (it - t * a.k_steps) * SK, (int)(t * TR));
                }
#pragma unroll
                for (int d = 0; d < kCodesAhead; d++) {
                    const unsigned i = i0 + d, it = it_begin + i, t = it / a.k_steps;
                    if (i < early)
                        store_codes(codes_w[d], stages_addr + i * S::StageBytes, full_bar + 8 * i,
                                    (it - t * a.k_steps) * SK);
                }
            }
            pdl_wait(); /* the activations may come from the previous kernel (unless x_early) */
            /* Only now may the next kernel start: so when any of ours starts, everything before the kernel
             * just before it is complete (what makes the early stages safe; the whole grid is resident, one
             * CTA per SM at most, so nothing can starve). One lane's signal counts for its CTA. */
            if (lead)
                pdl_launch_dependents();
            unsigned tile = it_begin / a.k_steps, step = it_begin - tile * a.k_steps;
            int slot = 0, lag_slot = 0; /* lag: the oldest stage issued and not yet seen landed */
            uint32_t phase = 0, lag_phase = 0;
            /* codes_async: the iteration whose codes load next, and the first kCodesAhead loads */
            unsigned c_it = it_begin + early, c_tile = c_it / a.k_steps, c_step = c_it - c_tile * a.k_steps;
            auto load_next_codes = [&](uint32_t(&w)[kLaneWords]) {
                if (c_it < it_end)
                    load_codes(w, c_step * SK, (int)(c_tile * TR));
                c_it++;
                if (++c_step == a.k_steps) {
                    c_step = 0;
                    c_tile++;
                }
            };
            if (codes_async && (kCodesAhead > 1 || (early == 0 && run > 0))) { /* (1 ahead, early stages: the
                                                                                  last one's turn loads them) */
#pragma unroll
                for (int d = 0; d < kCodesAhead; d++)
                    load_next_codes(codes_w[d]);
            }
            unsigned ring = 0; /* codes_async: the ring entry holding this stage's codes */
            for (unsigned it = it_begin; it < it_end; it++) {
                /* the consumers are done with the slot - from its second use on. A slot's first use waits for
                 * nothing, and must not: an early stage whose activations came early too (x_early) is whole
                 * before this loop starts, so the consumers may have finished it and released its slot once
                 * already, and a wait for parity 1 would then wait for the second release - which needs a stage
                 * only this producer can issue (the hang of docs/performance.md v43) */
                if (it - it_begin >= STAGES)
                    BNB4_PIPE_WAIT(empty_bar + 8 * slot, phase ^ 1u, "producer: empty", it);
                /* at most `inflight` stages on their way: the memory serves a CTA's queued copies together,
                 * so with all stages queued at once the first landed late (v17: m = 1 on the mid shapes
                 * 1-5 % faster with 3) */
                if (a.inflight && it - it_begin >= a.inflight) {
                    BNB4_PIPE_WAIT(full_bar + 8 * lag_slot, lag_phase, "producer: lag full", it);
                    if (++lag_slot == STAGES) {
                        lag_slot = 0;
                        lag_phase ^= 1u;
                    }
                }
                const unsigned k0 = step * SK;
                const uint32_t base = stages_addr + slot * S::StageBytes, fb = full_bar + 8 * slot;
                const int n0 = (int)(tile * TR);
                if (it - it_begin >= early) /* (early: weights and scales issued before the wait) */
                    copy_weights(base, fb, k0, n0);
                if (lead) {
                    if (!a.x_early || it - it_begin >= early)
                        copy_x(base, fb, k0);
                    /* kCodesTile: the next tile's codes as soon as their buffer is free (probed each turn, after
                     * the slot's wait: so it is issued at the latest a turn after the consumers leave the tile
                     * before, which they can only do once the slots of its stages are released) */
                    if (code_loads < code_tiles && mbar_test_wait(code_empty + 8 * (code_loads & (code_nbuf - 1)),
                                                                  code_parity()))
                        load_tile_codes();
                }
                /* this stage's codes, and that entry reloaded kCodesAhead stages ahead: a branch per entry,
                 * so each entry stays in its registers (moving the ring down an entry a turn would wait for
                 * the newest load; unrolling the whole turn by kCodesAhead, with 8-word entries, cost the
                 * consumers' loops registers: m = 9..16 nested 163 -> 169-174 instructions a step) */
                if (codes_async && it - it_begin >= early) {
#pragma unroll
                    for (int d = 0; d < kCodesAhead; d++)
                        if (ring == (unsigned)d) {
                            store_codes(codes_w[d], base, fb, k0);
                            if constexpr (kCodesAhead > 1)
                                load_next_codes(codes_w[d]);
                        }
                    ring = ring + 1 == kCodesAhead ? 0 : ring + 1;
                }
                if (++slot == STAGES) {
                    slot = 0;
                    phase ^= 1u;
                }
                if (++step == a.k_steps) {
                    step = 0;
                    tile++;
                }
                /* 1 ahead: the next stage's codes, loaded at the turn's end (loaded beside the stores, the
                 * m = 33..64 natural nested loop spilled) */
                if constexpr (kCodesAhead == 1)
                    if (codes_async && it + 1 < it_end && it + 1 - it_begin >= early)
                        load_codes(codes_w[0], step * SK, (int)(tile * TR));
            }
            /* the run's last tiles' codes, if their buffers were not free before its last stage was issued */
            while (lead && code_loads < code_tiles) {
                mbar_wait(code_empty + 8 * (code_loads & (code_nbuf - 1)), code_parity());
                load_tile_codes();
            }
            /* The hand-over: wait here, with every copy issued, for the flags of the tile's other contributors
             * (later CTAs, which publish without waiting for anything: the grid is at most one CTA an SM, all
             * resident at once, as CUTLASS's stream-K assumes), empty them for the next launch, and let the
             * consumers through to the fix-up (spread: each sharer but the last waits for all the others; the same
             * residency). Past ~2^26 polls (seconds) a contributor cannot be running (the grid not resident at
             * once: a partitioned GPU?): the launch fails rather than hangs. */
            if (fixes) {
                /* spread: the tile's counter (its contributor 0's flag word, which the flags leave unset); every
                 * contributor counts its slot in (bnb4_dev_count_release) or takes its place in the arrival order
                 * (bnb4_dev_arrive_inc_acq_rel). (kSpread stays in each test below: with a sharers count of 0 in
                 * the kernels without the spread, `sharers >= parts` still held for parts = 0 to the compiler, and
                 * they kept the spread's code.) */
                unsigned *const count = handover_flag(a, last_t, 0);
                const unsigned parts = tile_last_cta(a, last_t) - tile_first_cta(a, last_t) + 1;
                const bool all_share = kSpread && a.spread >= parts;
                if (kSpread && a.spread && !all_share) {
                    /* the last a.spread to arrive share: the consumers' arrival (s_last, stored before their
                     * thread 0 arrives on s_arrival_bar) says whether this CTA is one of them but the last, which
                     * alone waits - until the last arrival wraps the counter to 0 */
                    mbar_wait((uint32_t)__cvta_generic_to_shared(&s_arrival_bar), 0);
                    const unsigned arrival = (unsigned)*reinterpret_cast<volatile int *>(&s_last);
                    if (arrival + a.spread < parts || arrival + 1 == parts)
                        return;
                    if (lead) {
                        for (unsigned polls = 0; bnb4_dev_flag_load(count) != 0; polls++)
                            if (polls == (1u << 26))
                                __trap();
                        bnb4_dev_fence_acquire();
                    }
                } else if (all_share && lead) {
                    for (unsigned polls = 0; bnb4_dev_flag_load(count) < parts; polls++)
                        if (polls == (1u << 26))
                            __trap();
                    bnb4_dev_fence_acquire();
                } else if (lead && !(kSpread && a.spread)) { /* (every flag loaded at once, relaxed, then one fence:
                                                             * an acquire each, in turn, cost a round trip each, v55) */
                    const unsigned others = tile_last_cta(a, last_t) - blockIdx.x;
                    unsigned *flags = handover_flag(a, last_t, 1);
                    for (unsigned polls = 0;; polls++) {
                        bool all = true;
                        for (unsigned c = 0; c < others; c++)
                            all &= bnb4_dev_flag_load(flags + c) != 0;
                        if (all)
                            break;
                        if (polls == (1u << 26))
                            __trap();
                    }
                    bnb4_dev_fence_acquire();
                    for (unsigned c = 0; c < others; c++)
                        flags[c] = 0;
                }
                __syncwarp();
                handover_arrive<kConsumerThreads>();
                if (all_share && lead) /* (seen: counted again; the last count turns it back to 0) */
                    bnb4_dev_count_relaxed(count, 2 * parts - 1);
            }
            return; /* every copy issued is waited for by the consumers before they finish */
        }
    }
#endif

    /* ---- loads: each thread's copies are fixed (row / chunk / scale slot): their shared-memory offsets
     * are constants, their global addresses are set up once per tile and advanced per step, and every
     * copy is issued without a branch (a copy that must not read gets a source size of 0) ---- */
    constexpr int WC = kTileRows * 8 / kThreads;            /* weight chunks per thread and stage */
    constexpr int XC = (MT * 32 + kThreads - 1) / kThreads; /* activation chunks */
    constexpr int SC = kTileRows * kScaleSlots / kThreads;  /* plain: 4-byte scale slots; nested: code words */
    const unsigned Ku = (unsigned)K;                        /* < 2^31 (bnb4_cuda_pipe_fits) */
    const unsigned bs = 1u << a.bs_log2;
    uint32_t w_dst[WC], x_dst[XC], s_dst[SC];
    const uint8_t *w_src[WC];
    const T *x_src[XC];
    unsigned w_k[WC], x_k[XC];  /* k of the copy within a step; K (never < K) when the copy is off */
    const float *v_src = a.absmax; /* scale_vec: row tid / 2's scales, word tid % 2 */
    unsigned v_k = Ku;
    size_t s_first[SC];          /* non-vector scales: the row's first block, (row * K) mod blocksize */
    unsigned s_off[SC];
    bool s_on[SC];
    if constexpr (!TMA) {
#pragma unroll
    for (int i = 0; i < WC; i++) {
        const int ch = tid + kThreads * i, r = ch >> 3, cj = ch & 7;
        w_dst[i] = pin(r * kRowBytes + (w_slot(r, cj) << 4));
    }
#pragma unroll
    for (int i = 0; i < XC; i++) {
        const int ch = tid + kThreads * i, mm = ch >> 5, cj = ch & 31;
        x_dst[i] = pin(kWBytes + mm * (kStepK * 2) + (x_slot(mm, cj) << 4));
        const bool on = ch < MT * 32 && (size_t)mm < M;
        x_src[i] = on ? x + mm * K + 8 * cj : x;
        x_k[i] = on ? 8u * cj : Ku;
    }
#pragma unroll
    for (int i = 0; i < SC; i++) {
        const int e = tid + kThreads * i;
        s_dst[i] = pin(kWBytes + S::XBytes + (NESTED ? (e >> 2) * 16 + (e & 3) * 4 : e * 4));
    }
    }
    unsigned i_tile = it_begin / a.k_steps, i_step = it_begin - i_tile * a.k_steps, i_left = it_end - it_begin;
    auto issue_tile = [&]() { /* the issuing side moved to tile i_tile */
        const size_t n0 = (size_t)i_tile * kTileRows;
#pragma unroll
        for (int i = 0; i < WC; i++) {
            const int ch = tid + kThreads * i, r = ch >> 3, cj = ch & 7;
            const bool on = n0 + r < N;
            w_src[i] = on ? a.packed + (n0 + r) * (K / 2) + 16 * cj : a.packed;
            w_k[i] = on ? 32u * cj : Ku;
        }
        if (!NESTED && a.scale_vec) {
            const size_t n = n0 + (tid >> 1);
            const bool on = tid < 2 * kTileRows && n < N && (tid & 1) < a.scale_slots / 4;
            v_src = on ? a.absmax + ((n * K) >> a.bs_log2) + 4 * (tid & 1) : a.absmax;
            v_k = on ? (tid & 1) * 4 * bs : Ku; /* a step past K's end has no second word */
        } else {
#pragma unroll
            for (int i = 0; i < SC; i++) {
                const int e = tid + kThreads * i, r = NESTED ? e >> 2 : e >> 3;
                const size_t flat = (n0 + r) * K;
                s_on[i] = n0 + r < N && (NESTED ? e < kTileRows * 4 : (e & 7) < a.scale_slots);
                s_first[i] = flat >> a.bs_log2;
                s_off[i] = (unsigned)(flat & (bs - 1));
            }
        }
    };
    if constexpr (!TMA)
        issue_tile();
    /* Fill stage slot `slot` with the next iteration (nothing once this CTA's range is issued). */
    auto issue = [&](int slot) {
        if (i_left == 0)
            return;
        i_left--;
        const unsigned k0 = i_step * kStepK;
        const uint32_t base = stages_addr + slot * S::StageBytes;
#pragma unroll
        for (int i = 0; i < WC; i++) /* weights: 128 rows x 8 chunks */
            cp_async16(base + w_dst[i], w_src[i] + k0 / 2, k0 + w_k[i] < Ku ? 16 : 0);
#pragma unroll
        for (int i = 0; i < XC; i++) /* activations: MT rows x 32 chunks (rows past m, k past K: zeros) */
            if (MT * 32 >= kThreads * (i + 1) || tid + kThreads * i < MT * 32) {
                const bool on = k0 + x_k[i] < Ku;
                cp_async16(base + x_dst[i], on ? x_src[i] + k0 : x, on ? 16 : 0);
            }
        if (!NESTED && a.scale_vec) { /* row tid / 2, 16-byte word tid % 2 of its scales */
            if (tid < 2 * kTileRows) {
                const bool on = k0 + v_k < Ku;
                cp_async16(base + kWBytes + S::XBytes + (tid >> 1) * (kScaleSlots * 4) + (tid & 1) * 16,
                           on ? v_src + (k0 >> a.bs_log2) : a.absmax, on ? 16 : 0);
            }
        } else {
#pragma unroll
            for (int i = 0; i < (NESTED ? kTileRows * 4 / kThreads : SC); i++) {
                const size_t first = s_first[i] + ((s_off[i] + k0) >> a.bs_log2); /* the step's first block */
                if (NESTED) { /* 4 aligned words of 8-bit codes per row cover the step's blocks */
                    const size_t word = (first >> 2) + (tid & 3);
                    const size_t have = s_on[i] && a.nblocks > 4 * word ? a.nblocks - 4 * word : 0;
                    if (have >= 4 || have == 0) {
                        cp_async4(base + s_dst[i], have ? a.codes + 4 * word : a.codes, have ? 4 : 0);
                    } else { /* the array's last, partial word: byte loads (a 4-byte copy would read past it) */
                        uint32_t v = 0;
                        for (size_t q = 0; q < have; q++)
                            v |= (uint32_t)a.codes[4 * word + q] << (8 * q);
                        *reinterpret_cast<uint32_t *>(stages + slot * S::StageBytes + s_dst[i]) = v;
                    }
                } else {
                    const bool on = s_on[i] && first + (tid & 7) < a.nblocks;
                    cp_async4(base + s_dst[i], on ? a.absmax + first + (tid & 7) : a.absmax, on ? 4 : 0);
                }
            }
        }
        if (++i_step == a.k_steps) {
            i_step = 0;
            i_tile++;
            if (i_left)
                issue_tile();
        }
    };

    /* Prologue: the first STAGES - 1 iterations' loads (TMA: the producer's), then the code-pair table
     * while they fly. */
    if constexpr (!TMA) {
#pragma unroll
        for (int i = 0; i < STAGES - 1; i++) {
            issue(i);
            cp_async_commit();
        }
    }
    { /* the code-pair table (cuda_sm90.cuh) */
        if constexpr (kSmallTable) /* (kCpSmall: 8 copies, v * 32 + 4 copy) */
            build_pair_table<T, 8, 32>(table, a.quant_type == BNB4_NF4 ? c_pipe_nf4 : c_pipe_fp4, tid, kConsumerThreads);
        else
            build_pair_table<T>(table, a.quant_type == BNB4_NF4 ? c_pipe_nf4 : c_pipe_fp4, tid, kConsumerThreads);
        /* the nested map before the wait where the early stages are safe (the same check covers it), so
         * its latency overlaps the previous kernel's end */
        const bool ncode_early = TMA && a.early;
        auto load_ncode = [&] {
            for (int i = tid; i < 256; i += kConsumerThreads)
                ncode[i] = a.nested_code[i];
        };
        if (NESTED && ncode_early)
            load_ncode();
#if BNB4_HAS_TMA
        if constexpr (TMA) /* the table came from this module's constants; the bias, the split-K workspace and y
                            * may be the previous kernel's (and the nested absmax, unless the early stages are
                            * safe: then ncode_early). kLateWait with x_early: at the first tile end instead */
            if (!(kLateWait && a.x_early))
                pdl_wait();
#endif
        if (NESTED && !ncode_early)
            load_ncode();
        if constexpr (TMA)
            consumer_sync<kConsumerThreads>(); /* (the classic loop's first __syncthreads does this) */
    }

    /* m <= 16: the odd k-steps accumulate apart (acc2) and join at the tile's end, so a step's mma.syncs
     * form more dependency chains (their latency, not their rate, bounds a warp there) */
    constexpr bool kTwoChains = NT <= 2 && !WG && !PS; /* (PS: a chain per fragment and block) */
    float acc[RF][NT][4], acc2[RF][NT][4];
#pragma unroll
    for (int f = 0; f < RF; f++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                acc[f][nt][i] = acc2[f][nt][i] = 0.0f;

    const uint32_t lane4 = pin(kSmallTable ? (uint32_t)(lane & 7) << 5 : (uint32_t)lane * 4); /* (decode_fragment) */
    /* wgmma on the activations as they are: the byte of each weight word the thread decodes
     * (decode_fragment_natural) */
    [[maybe_unused]] const uint32_t natural_sel = pin_if<kReadNatural>(pair_sel(c));
    [[maybe_unused]] const uint32_t trade_sel = pin_if<kTradeNatural>(pair_trade_sel(c));
    [[maybe_unused]] const uint32_t trade_odd = pin_if<kTradeNatural>(c & 1), trade_high = pin_if<kTradeNatural>(c & 2);
    /* this thread's k within the step: 32 k of a 128-k half (PS: 16 k of a 64-k quarter; narrow: of 256-k
     * chunk warp % RG) */
    const uint32_t kk = pin(kNarrow ? 256 * (warp % RG) + 64 * j + 16 * c
                            : PS    ? 64 * j + 16 * c
                                    : 128 * j + 32 * c);
    /* shared-memory offsets of this thread's reads (fixed: its rows, chunk and activation row) */
    const int gr = TMA ? (PS ? ps_row(g) : tma_row(g)) : g; /* tile row (within 8) of the thread's mma row g */
    int row0[RF];                        /* fragment f's rows: row0[f] and row0[f] + 8 (same parity) */
    int trow0[RF];                       /* ... and what they are in the tile (narrow: chunk warp % RG's rows) */
    uint32_t w_off[RF];
#pragma unroll
    for (int f = 0; f < RF; f++) {
        row0[f] = (warp % RG) * 16 * RF + 16 * f + gr;
        trow0[f] = kNarrow ? 16 * f + gr : row0[f];
        /* (kReadNatural: the half's chunk 0; chunk u is at this offset XOR 16 u) */
        const int chunk = 4 * j + (kReadNatural ? 0 : c);
        w_off[f] = pin(row0[f] * kRowBytes + (PS ? (((2 * j + (c >> 1)) ^ gr) << 4) + 8 * (c & 1) /* 8 bytes */
                                              : (TMA ? chunk ^ gr : w_slot(g, chunk)) << 4));
    }
    /* the activation row (within 8) of the thread's mma column g (PS: the rows of a quarter-warp, g = 2i and
     * 2i + 1, differ in parity, which moves their 16-byte pieces 2c + u to distinct bank groups) */
    const int xg = TMA && !PS ? tma_xrow(g) : g;
    uint32_t x_off[4]; /* (wgmma: the tensor cores read the activations) */
#pragma unroll
    for (int u = 0; u < (WG ? 0 : U); u++) {
        if constexpr (TMA) { /* 16-byte piece u + c / 2 of the thread's 64 bytes (PS: piece u of its 32
                              * bytes), in box (piece / 8) */
            const int ch = PS ? (kNarrow ? 32 * (warp % RG) : 0) + 8 * j + 2 * c + u
                              : 16 * j + 4 * c + ((u + (c >> 1)) & 3);
            /* the box's 128-byte row of (box ch / 8, activation row xg), its 16-byte pieces swizzled by its index
             * mod 8 (PS: boxes of x_rows rows, pipe_x_rows; elsewhere MT, a whole KB) */
            const int xr128 = (ch >> 3) * (PS ? (int)a.x_rows : MT) + xg;
            x_off[u] = pin(xr128 * 128 + (((ch & 7) ^ (xr128 & 7)) << 4));
        } else {
            x_off[u] = pin(g * (kStepK * 2) + (x_slot(g, 16 * j + 4 * c + u) << 4));
        }
    }
    constexpr int kXTileStride = TMA ? 8 * 128 : 8 * (kStepK * 2); /* from one 8-row n-tile to the next */
    /* (kNatural: the half's first block; a thread takes the scales of all of the half's blocks) */
    const unsigned fixed_slot = (kNatural ? 128 * j : kk) >> a.bs_log2;
    /* scale_fixed (always with TMA): where each row finds its chunk's scale (TMA nested: its code; kCodesGroups: the
     * rows' runs in the copies' order, code_run) */
    [[maybe_unused]] const uint32_t code_per_row = (uint32_t)(K >> a.bs_log2);
    uint32_t fixed_off[RF][2];
#pragma unroll
    for (int f = 0; f < RF; f++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = trow0[f] + 8 * h;
            /* (nested: a row's 16-code run, + the step's first block's place in it) */
            fixed_off[f][h] = pin(!TMA ? (r * kScaleSlots + fixed_slot) * 4
                                  : NESTED ? code_run(r, TR, code_groups_log2, code_per_row) + fixed_slot
                                  : kNarrow ? narrow_scale_off(r * 64 + fixed_slot * 4) /* [row][16], swizzled */
                                            : (r * (SK >> a.bs_log2) + fixed_slot) * 4); /* dense [row][k] */
        }
    /* wgmma on permuted activations, nested, blocksize 64 (kWgPermuted64): lanes c and c ^ 1 of a quad read
     * chunks of one block (k 32 c of their 128-k half) of the same two rows, so lane c decodes row c % 2's
     * scale and the pair trades them by shuffles (two decodes a thread and step become one) */
    constexpr bool kPermutedQuad = TMA && NESTED && WG == kWgPermuted64;
    /* kNaturalQuad, kPermutedQuad: where this lane's code is - row c % 2's run, at block c / 2 of the half
     * (kNaturalQuad) or the block of the lane's chunk (kPermutedQuad: fixed_off has it) */
    [[maybe_unused]] const uint32_t quad_code_off =
        pin((c & 1 ? fixed_off[0][1] : fixed_off[0][0]) + (kNatural ? c >> 1 : 0));
    const int m_rows = (int)min(M, (size_t)MT);
    /* the activation row of accumulator column n (wgmma: the stage's row order) */
    auto out_col = [](int n) { return TMA && !WG && !PS ? tma_xrow(n) : n; };
    /* activation rows past m hold zeros: for m < 16 they are not read (less shared-memory traffic; at
     * larger m the registers this takes are worth more) */
    uint32_t x_on[NT]; /* (pinned: else recomputed from %tid at every turn) */
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
        x_on[nt] = NT > 2 ? 1u : pin(nt * 8 + xg < m_rows);
    /* compute side: its tile and step, and per row its index, whether it is inside the matrix, its first
     * block and (row * K) mod blocksize */
    unsigned t = it_begin / a.k_steps, step = it_begin - t * a.k_steps;
    size_t n_[RF][2], first_[RF][2];
    unsigned off_[RF][2];
    bool on_[RF][2];
    /* PS, nested: a quad's four lanes share their four rows and their block, so lane c decodes the scale of
     * one of them (fragment c / 2, row half c % 2: own_row) and the quad trades them by shuffles */
    constexpr bool kQuadScales = PS && NESTED;
    [[maybe_unused]] const uint32_t own_row = /* (its tile row) */
        pin_if<kQuadScales>((kNarrow ? 0 : (warp % RG) * 16 * RF) + 16 * (c >> 1) + gr + 8 * (c & 1));
    [[maybe_unused]] size_t own_first = 0;
    [[maybe_unused]] bool own_on = false;
    [[maybe_unused]] unsigned own_k = 0; /* K where own_row is in the matrix, else 0 (k < own_k: both tests) */
    /* wgmma on the activations as they are, nested, blocksize 64: a quad's four lanes take the same two rows
     * (h) and the same two blocks of their 128-k half, so lane c decodes the scale of row h = c % 2, block
     * c / 2, and the quad trades the four by shuffles (as kQuadScales does at m <= 16) */
    constexpr bool kNaturalQuad = TMA && NESTED && WG == kWgNatural64;
    auto compute_tile = [&]() {
        if constexpr (kQuadScales || kNaturalQuad || kPermutedQuad) {
            const size_t n = (size_t)t * TR + (kQuadScales ? own_row : trow0[0] + 8 * (c & 1));
            own_on = n < N;
            own_k = own_on ? (unsigned)K : 0u;
            own_first = (n * K) >> a.bs_log2;
        }
#pragma unroll
        for (int f = 0; f < RF; f++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const size_t n = (size_t)t * TR + trow0[f] + 8 * h;
                n_[f][h] = n;
                on_[f][h] = n < N;
                first_[f][h] = (n * K) >> a.bs_log2;
                off_[f][h] = (unsigned)((n * K) & (((size_t)1 << a.bs_log2) - 1));
            }
    };
    compute_tile();
    int slot = 0;
    uint32_t phase = 0; /* TMA: parity of the slots' current fill */
    /* wgmma: the decoded fragments of a stage's two halves (k-steps 0-3, 4-7; each half's wgmmas run while
     * the next half is decoded), and the slot whose release waits for its last wgmmas (-1: none) */
    [[maybe_unused]] uint32_t wg_af[8][4];
    [[maybe_unused]] int wg_pending = -1;
    /* kPostWG: the sums of the group in flight and its block scales (rows g, g + 8); 0 where none is (its sums,
     * finite, then add nothing) */
    [[maybe_unused]] float wg_sum[NT][4] = {};
    [[maybe_unused]] float post_s[2] = {0.0f, 0.0f};
#if BNB4_HAS_WGMMA
    /* (after a wait for every wgmma: the finished group's sums, times its rows' block scales, join acc) */
    [[maybe_unused]] auto join_group = [&]() {
        wg_keep(wg_sum);
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                acc[0][nt][i] = fmaf(wg_sum[nt][i], post_s[i >> 1], acc[0][nt][i]);
    };
    /* (after a wait that covers half `h`'s wgmmas: its fragments, which they read until then, are free) */
    [[maybe_unused]] auto keep_half = [&](int h) {
#pragma unroll
        for (int ks = 4 * h; ks < 4 * h + 4; ks++)
#pragma unroll
            for (int i = 0; i < 4; i++)
                wg_keep(wg_af[ks][i]);
    };
#endif
    /* wgmma: the descriptor of this warpgroup's activations (its 128-k half) in stage 0; stage i adds
     * i StageBytes / 16. Built once from a shuffled (so warp-uniform) half index: computed per wgmma from
     * the thread index, it cost ~7 instructions each and a %tid read per turn. */
#if BNB4_HAS_WGMMA
    [[maybe_unused]] const uint64_t wg_x_desc0 =
        WG ? wg_desc(stages_addr + kWBytes + 2 * __shfl_sync(0xffffffffu, (uint32_t)j, 0) * (MT * 128)) : 0;
#endif
    /* per-thread constants of the loop, pinned (kk above too): left to the compiler, it re-read %tid (a
     * slow special register) and recomputed them at every turn */
    [[maybe_unused]] const uint32_t rotate = pin(TMA && !WG && !PS && (c & 2)); /* see x_off */
    const unsigned it_stop = pin(it_end);
    /* m <= 8, and m <= 16 on wgmma (two k parts): the compact tile end (see the tile's end) */
    constexpr bool kCompactEnd = pipe_compact_end<NT, TMA, WG, PS>();
    /* at a tile's end without the compact form: whether this warp adds its k part's sums to the first's (PS:
     * part j's in scratch area j - 1), and its slot in the reduction scratch (one per row group of 16 and
     * lane; fragment f adds 32 f). Pinned at m = 9..32 (at m = 33..64 the registers are short: recomputing
     * them there costs less than spilling; the compact form does not use them) */
    const uint32_t hands_over = pin_if<(NT < 8 && !kCompactEnd)>(j);
    const uint32_t red_q = pin_if<(NT < 8 && !kCompactEnd)>((warp % RG) * RF * 32 + lane);
    constexpr int kRedPitch = TR + 4;
    /* the compact end's tile elements per thread (narrow: 256 elements, one for each of the first 256 threads) */
    constexpr int kCE = kCompactEnd ? (MT * TR + kConsumerThreads - 1) / kConsumerThreads : 1;
    static_assert(!kCompactEnd || MT * TR % kConsumerThreads == 0 || kCE == 1, "whole elements per thread");
    /* the compact end's k parts: the 4 quarters (narrow: 16, the chunks' quarters in k order), this warp's */
    constexpr int kParts = kNarrow ? RG * KP : KP;
    const int red_part = kNarrow ? (warp % RG) * KP + j : j;
    /* m < 16 (x_on): activation registers of rows past m stay zero, set once here rather than per read */
    uint4 xr[4][NT];
#pragma unroll
    for (int u = 0; u < 4; u++)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
            xr[u][nt] = make_uint4(0, 0, 0, 0);
    /* TMA, nested: each row's nested absmax. A thread's scales of a step are those of one k of its rows (kk on
     * from the step's start), so over a window of PipeArgs::nab_steps steps its k span less than a nested block
     * (nested blocksize x blocksize k) and touch at most two: at a tile's start and then every window, each row's
     * two values and the k where the second's blocks start are loaded (nab_window), and a step picks its row's
     * with a compare and a select, where a load per row and step took ~10 instructions and its latency
     * (docs/performance.md v45; bitsandbytes' nested blocksize 256, K <= 16384 at blocksize 64: one window a
     * tile). That takes 3 registers a row: at m <= 32, where a thread has one row (kOwnRow) and on the permuted
     * wgmma path (two). At m = 33..64 the permuted path spilled and the natural one ran 1-3 % slower with it, and
     * at blocksize 32 ptxas spilled: there the loads stay per step, at m <= 16 a step ahead (kNabAhead: a
     * dependent global load per row and step, its latency otherwise in every step's path). */
    constexpr bool kOwnRow = kQuadScales || kNaturalQuad || kPermutedQuad; /* one row a lane: own_row ([0][0]) */
    constexpr bool kNabWindow = pipe_nab_window<NT, NESTED, TMA, WG, PS>();
    static_assert(kNabWindow == (TMA && NESTED && NT <= 4 && (kOwnRow || WG == kWgPermuted)), "pipe_nab_window");
    static_assert(!NR || pipe_row_nab_built<NT, NESTED, TMA, WG, PS>(), "NR: built with pipe_row_nab_built");
    constexpr bool kNabAhead = TMA && NESTED && !kNabWindow && NT <= 2;
    [[maybe_unused]] float nab_lo[RF][2], nab_hi[RF][2]; /* kNabWindow */
    [[maybe_unused]] unsigned nab_k[RF][2];
    [[maybe_unused]] unsigned nab_until = 0; /* the step that starts the next window */
    [[maybe_unused]] float nab_next[RF][2] = {}; /* kNabAhead: the next step's */
    /* a row's: whether it is in the matrix, and its first block (the TMA layouts have fewer than 2^32 blocks
     * and rows of whole blocks, pipe_use_tma) */
    [[maybe_unused]] auto row_on = [&](int f, int h) { return kOwnRow ? own_on : on_[f][h]; };
    [[maybe_unused]] auto row_first = [&](int f, int h) { return (uint32_t)(kOwnRow ? own_first : first_[f][h]); };
    [[maybe_unused]] auto nab_window = [&]() { /* from `step` on */
#pragma unroll
        for (int f = 0; f < (kOwnRow ? 1 : RF); f++)
#pragma unroll
            for (int h = 0; h < (kOwnRow ? 1 : 2); h++) {
                /* (a window from past K's end: steps whose scales go unused, kin; entry 0 then) */
                const unsigned k = step * SK + kk;
                const bool on = row_on(f, h) && k < (unsigned)K;
                const uint32_t first = row_first(f, h);
                const uint32_t nb = on ? (first + (k >> a.bs_log2)) >> a.nbs_log2 : 0u, next = nb + 1;
                nab_lo[f][h] = __ldg(a.nested_absmax + nb);
                if constexpr (NR) /* (the row's only one) */
                    continue;
                nab_hi[f][h] = __ldg(a.nested_absmax + (next < a.nnab ? next : nb));
                /* (< K + nested blocksize x blocksize <= 2^31 + 2^30, pipe_use_tma) */
                nab_k[f][h] = ((next << a.nbs_log2) - first) << a.bs_log2;
            }
        nab_until = step + a.nab_steps;
    };
    [[maybe_unused]] auto load_nab = [&](int f, int h, unsigned at_step) {
        /* (the TMA layouts have fewer than 2^32 blocks, pipe_use_tma: 32-bit block indices, 5 instructions
         * a step fewer than 64-bit ones) */
        const unsigned k = at_step * SK + kk;
        const uint32_t b = row_on(f, h) && k < (unsigned)K ? row_first(f, h) + (k >> a.bs_log2) : 0u;
        return __ldg(a.nested_absmax + (b >> a.nbs_log2)); /* nested blocksize: a power of 2 (TMA layouts) */
    };
    [[maybe_unused]] auto nab_at = [&](int f, int h, unsigned at_step) {
        if constexpr (kNabWindow)
            return NR || at_step * SK + kk < nab_k[f][h] ? nab_lo[f][h] : nab_hi[f][h];
        if constexpr (kNabAhead) {
            const float v = nab_next[f][h];
            nab_next[f][h] = load_nab(f, h, at_step + 1); /* (past K: entry 0, unused) */
            return v;
        }
        return load_nab(f, h, at_step);
    };
    /* kCodesTile: own_row's codes in the current tile's buffer, from the quad's block of a step's first k on
     * (a step adds k0 / blocksize), and the buffers' uses so far */
    [[maybe_unused]] const unsigned char *tile_codes = nullptr;
    [[maybe_unused]] unsigned code_uses = 0;
    /* One turn of the outer loop per tile this CTA works on (or the part of it in its range); the inner
     * loop runs that tile's steps with no tile-end tests, the tile's end follows it. */
    unsigned it = it_begin;
    [[maybe_unused]] bool consumer_waited = false;
    while (it < it_stop) {
        if (it != it_begin)
            compute_tile();
#if BNB4_HAS_TMA
        if constexpr (codes_tile) { /* the tile's codes have landed */
            const unsigned b = code_uses & (code_nbuf - 1);
            while (!mbar_try_wait(code_full + 8 * b, (code_uses / code_nbuf) & 1u)) {
            }
            tile_codes = stages + STAGES * S::StageBytes + b * code_stride +
                         own_row * (unsigned)(K >> a.bs_log2) + fixed_slot;
        }
#endif
        if constexpr (kNabWindow) {
            nab_window();
        } else if constexpr (kNabAhead) {
#pragma unroll
            for (int f = 0; f < RF; f++)
#pragma unroll
                for (int h = 0; h < 2; h++)
                    nab_next[f][h] = load_nab(f, h, step);
        }
        const unsigned seg_stop = pin_if<(NT < 8)>(min(it_stop, it + (a.k_steps - step))); /* the tile's end */
        int used; /* the slot of the tile's last step, released once its sums are read */
        for (;;) {
            const unsigned k0 = step * SK;
            const bool kin = k0 + kk < (unsigned)K; /* (K < 2^31) */
            if constexpr (TMA) {
#if BNB4_HAS_TMA
                /* the producer's copies for `it` have landed (mma.sync: the retry loop in C++, which spares the
                 * asm loop's convergence block, 2 instructions per step; wgmma: the asm loop, 1-2 fewer) */
#ifdef BNB4_PIPE_WATCHDOG
                BNB4_PIPE_WAIT(full_bar + 8 * slot, phase, "consumer: full", it);
#else
                if constexpr (WG)
                    mbar_wait(full_bar + 8 * slot, phase);
                else
                    while (!mbar_try_wait(full_bar + 8 * slot, phase)) {
                    }
#endif
#endif
            } else {
                cp_async_wait<STAGES - 2>(); /* this thread's copies for `it` have landed ... */
                __syncthreads();             /* ... everyone's, and everyone is done with the slot refilled next */
                issue(slot == 0 ? STAGES - 1 : slot - 1);
                cp_async_commit();
            }

            const unsigned char *ws_ = stages + slot * S::StageBytes;
            const unsigned char *xs_ = ws_ + kWBytes;
            const unsigned char *ss = xs_ + S::XBytes;
            /* kNaturalQuad, kPermutedQuad: the step's scale of this lane's row (blocksize 64), 0 past N and K (one
             * compare: own_k) */
            [[maybe_unused]] auto own_quad_scale = [&]() {
                const float nab = nab_at(0, 0, step);
                const unsigned q = ss[quad_code_off + ((k0 >> 6) & 15u)];
                const float v = bnb4_dev_nested_scale(ncode[q], nab, a.offset);
                return k0 + kk < own_k ? v : 0.0f;
            };
            {
                uint4 qw[RF][2];   /* fragment f's 16-byte chunks (PS: 8 bytes, .x .y) of rows row0[f] (h = 0)
                                      and row0[f] + 8 */
                [[maybe_unused]] uint32_t s2[RF][2]; /* and their block scales, as pairs */
                [[maybe_unused]] uint32_t wg_s2[2][4]; /* (kNatural: per row, chunk u's) */
                [[maybe_unused]] float wg_sf[2][4];    /* (kPostWG: the same as floats) */
                [[maybe_unused]] float sv[RF][2]; /* (PS: as floats) */
                [[maybe_unused]] float quad_v = 0.0f; /* kQuadScales, kPermutedQuad: own row's scale */
                if constexpr (kPermutedQuad)
                    quad_v = own_quad_scale();
                if constexpr (kQuadScales) {
                    const float nab = nab_at(0, 0, step);
                    const unsigned kb = k0 >> a.bs_log2; /* the step's first block in the row */
                    /* ([row][16] runs: the post-scaled math takes no row groups, pipe_codes_async) */
                    const unsigned q = codes_tile ? tile_codes[kb] : ss[own_row * 16 + fixed_slot + (kb & 15u)];
                    const float v = bnb4_dev_nested_scale(ncode[q], nab, a.offset);
                    quad_v = own_on && kin ? v : 0.0f; /* (v computed first: ptxas put a branch around the loads) */
                }
#pragma unroll
                for (int f = 0; f < RF; f++) {
#pragma unroll
                    for (int h = 0; h < 2 && !kReadNatural; h++) { /* (kReadNatural: read at the wgmmas) */
                        uint4 q;
                        if constexpr (PS) {
                            const uint2 v = *reinterpret_cast<const uint2 *>(ws_ + w_off[f] + h * 8 * kRowBytes);
                            q = make_uint4(v.x, v.y, 0u, 0u);
                        } else {
                            q = lds128(ws_ + w_off[f] + h * 8 * kRowBytes);
                            if (TMA && !WG && rotate) /* this thread takes its words in the order u + 1 (see x_off) */
                                q = make_uint4(q.y, q.z, q.w, q.x);
                        }
                        qw[f][h] = q;
                    }
                    if constexpr (kNatural) { /* the scales of the half's four 32-k chunks (k-step 2u + h: chunk u's) */
                        [[maybe_unused]] float natural_quad[2][2]; /* kNaturalQuad: [h][block] */
                        if constexpr (kNaturalQuad) {
                            const float own = own_quad_scale();
#pragma unroll
                            for (int h = 0; h < 2; h++)
#pragma unroll
                                for (int b = 0; b < 2; b++)
                                    natural_quad[h][b] = __shfl_sync(~0u, own, h + 2 * b, 4);
                        }
#pragma unroll
                        for (int h = 0; h < 2; h++) {
                            const unsigned char *sp = ss + fixed_off[0][h];
                            float v[4];
                            if constexpr (kNaturalQuad) {
                                v[0] = v[1] = natural_quad[h][0];
                                v[2] = v[3] = natural_quad[h][1];
                            } else if constexpr (NESTED) {
                                const float nab = nab_at(0, h, step);
                                const bool on = on_[0][h] && kin;
                                sp += (k0 >> a.bs_log2) & 15u; /* the step's codes in the row's run of 16 */
                                if constexpr (WG == kWgNatural32) {
                                    const uint32_t q = *reinterpret_cast<const uint32_t *>(sp);
#pragma unroll
                                    for (int u = 0; u < 4; u++)
                                        v[u] = bnb4_dev_nested_scale(ncode[(q >> (8 * u)) & 255u], nab, a.offset);
                                } else {
                                    const uint32_t q = *reinterpret_cast<const uint16_t *>(sp);
                                    v[0] = v[1] = bnb4_dev_nested_scale(ncode[q & 255u], nab, a.offset);
                                    v[2] = v[3] = bnb4_dev_nested_scale(ncode[q >> 8], nab, a.offset);
                                }
#pragma unroll
                                for (int u = 0; u < 4; u++)
                                    v[u] = on ? v[u] : 0.0f;
                            } else if constexpr (WG == kWgNatural32) { /* (plain: past N and K the copy's zero fill) */
                                const float4 f4 = *reinterpret_cast<const float4 *>(sp);
                                v[0] = f4.x, v[1] = f4.y, v[2] = f4.z, v[3] = f4.w;
                            } else {
                                const float2 f2 = *reinterpret_cast<const float2 *>(sp);
                                v[0] = v[1] = f2.x, v[2] = v[3] = f2.y;
                            }
#pragma unroll
                            for (int u = 0; u < 4; u++) {
                                wg_sf[h][u] = v[u];
                                if constexpr (!kPostWG)
                                    wg_s2[h][u] = Ops::pack(v[u], v[u]);
                            }
                        }
                    } else
#pragma unroll
                    for (int h = 0; h < 2; h++) { /* branch-free: rows past N and k past K get scale 0 (TMA, plain:
                                                    * the tensor copy's zero fill gives those their 0) */
                        const bool on = on_[f][h] && kin;
                        float v;
                        if constexpr (kQuadScales) {
                            v = __shfl_sync(~0u, quad_v, 2 * f + h, 4); /* from lane 2f + h of the quad */
                        } else if constexpr (kPermutedQuad) {
                            v = __shfl_sync(~0u, quad_v, (c & 2) | h, 4); /* row h, this lane's block */
                        } else if constexpr (TMA) { /* K % blocksize == 0, blocksize <= 64: the chunk's slot is fixed */
                            if (NESTED) {
                                const float nab = nab_at(f, h, step);
                                const unsigned q = ss[fixed_off[f][h] + ((k0 >> a.bs_log2) & 15u)];
                                v = bnb4_dev_nested_scale(ncode[q], nab, a.offset);
                            } else if (PS) { /* blocksize 64: rows 16 f + 8 h on, SK / 16 bytes each (constant
                                              * offsets from one address per step: 3 instructions less) */
                                v = *reinterpret_cast<const float *>(ss + fixed_off[0][0] +
                                                                     (16 * f + 8 * h) * (SK / 16));
                            } else {
                                v = *reinterpret_cast<const float *>(ss + fixed_off[f][h]);
                            }
                        } else {
                            const int r = row0[f] + 8 * h;
                            const unsigned off = off_[f][h];
                            const unsigned b_step = (off + k0) >> a.bs_log2, b_chunk = (off + k0 + kk) >> a.bs_log2;
                            if (NESTED) {
                                const size_t first = first_[f][h] + b_step;
                                const size_t b = on ? first_[f][h] + b_chunk : 0;
                                const unsigned q = ss[r * 16 + (unsigned)(first & 3u) + (b_chunk - b_step)];
                                const float nab = __ldg(a.nested_absmax +
                                                        (a.nbs_log2 >= 0 ? b >> a.nbs_log2 : b / a.nested_blocksize));
                                v = bnb4_dev_nested_scale(ncode[q], nab, a.offset);
                            } else {
                                const float *sf = reinterpret_cast<const float *>(ss);
                                v = a.scale_fixed ? *reinterpret_cast<const float *>(ss + fixed_off[f][h])
                                                  : sf[r * kScaleSlots + b_chunk - b_step];
                            }
                        }
                        if ((NESTED && !kQuadScales && !kPermutedQuad) || !TMA)
                            v = on ? v : 0.0f;
                        sv[f][h] = v;
                        s2[f][h] = Ops::pack(v, v);
                    }
                }
#if BNB4_HAS_WGMMA
                if constexpr (WG) { /* k-step 2u + h: bytes 2h, 2h + 1 of word u (as below); one wgmma per k-step,
                                     * the stage's activations its B */
                    [[maybe_unused]] uint4 qA = {}, qB = {}; /* (kReadNatural: read per chunk below) */
                    if constexpr (!kReadNatural) {
                        qA = qw[0][0], qB = qw[0][1];
                        if constexpr (kTradeNatural) {
                            qA = quad_natural(qA, trade_sel, trade_odd, trade_high);
                            qB = quad_natural(qB, trade_sel, trade_odd, trade_high);
                        }
                    }
                    /* k-step ks of half j: 64-k box 2 j + ks / 4, 32 bytes per k-step inside its 128-byte rows (the
                     * descriptor counts 16-byte units) */
                    const uint64_t xd = wg_x_desc0 + (uint64_t)(slot * (S::StageBytes >> 4));
#pragma unroll
                    for (int half = 0; half < 2; half++) {
#pragma unroll
                        for (int u = 2 * half; u < 2 * half + 2; u++) {
                            if constexpr (kReadNatural) { /* chunk u of the half (k-steps 2u, 2u + 1), rows g, g + 8 */
                                const uint32_t ca = (stages_addr + slot * S::StageBytes + w_off[0]) ^ (u << 4);
                                const uint4 cA = lds128_at(ca), cB = lds128_at(ca + 8 * kRowBytes);
                                if constexpr (kPostWG) { /* (unscaled) */
                                    decode_codes_natural(wg_af[2 * u], table_s, cA.x, cA.y, cB.x, cB.y, lane4,
                                                         natural_sel);
                                    decode_codes_natural(wg_af[2 * u + 1], table_s, cA.z, cA.w, cB.z, cB.w, lane4,
                                                         natural_sel);
                                    continue;
                                }
                                decode_fragment_natural<T>(wg_af[2 * u], table_s, cA.x, cA.y, cB.x, cB.y, lane4,
                                                           natural_sel, wg_s2[0][u], wg_s2[1][u]);
                                decode_fragment_natural<T>(wg_af[2 * u + 1], table_s, cA.z, cA.w, cB.z, cB.w, lane4,
                                                           natural_sel, wg_s2[0][u], wg_s2[1][u]);
                            } else {
                                const uint32_t wA = u == 0 ? qA.x : u == 1 ? qA.y : u == 2 ? qA.z : qA.w;
                                const uint32_t wB = u == 0 ? qB.x : u == 1 ? qB.y : u == 2 ? qB.z : qB.w;
#pragma unroll
                                for (int h = 0; h < 2; h++)
                                    decode_fragment<T>(wg_af[2 * u + h], table_s, wA, wB, lane4, h,
                                                       kNatural ? wg_s2[0][u] : s2[0][0],
                                                       kNatural ? wg_s2[1][u] : s2[0][1]);
                            }
                        }
                        if constexpr (kPostWG) {
                            /* the group before this one (run while this one was decoded) is done: its fragments and
                             * stage are free, and its sums, scaled, join acc - before this group's wgmmas, as ptxas
                             * serializes every wgmma where sums are read with a group in flight */
                            wg_wait<0>();
                            keep_half(1 - half);
                            join_group();
                            post_s[0] = wg_sf[0][2 * half], post_s[1] = wg_sf[1][2 * half];
                        }
                        wg_fence();
#pragma unroll
                        for (int ks = 4 * half; ks < 4 * half + 4; ks++) {
                            const uint64_t d = xd + ((ks >> 2) * (MT * 128) + 32 * (ks & 3)) / 16;
                            if constexpr (kPostWG)
                                Wgmma<T, NT>::mma(wg_sum, wg_af[ks], d, ks != 4 * half);
                            else
                                Wgmma<T, NT>::mma(acc[0], wg_af[ks], d);
                        }
                        wg_commit();
                        if constexpr (!kPostWG) {
                            wg_wait<1>(); /* the group before this one is done: its fragments and its stage are free */
                            keep_half(1 - half);
                        }
                        if (half == 0 && wg_pending >= 0) { /* the previous stage's last wgmmas are done */
                            if (kLaneRelease || elect_one()) /* (elect.sync: every lane is past its reads) */
                                mbar_arrive(empty_bar + 8 * wg_pending);
                            wg_pending = -1;
                        }
                    }
                } else
#endif
                if constexpr (PS) { /* the quarter is one block: a fragment's mma chain runs on the codes alone, from
                                     * zero, and its sums take the block scale once (instead of a packed multiply per
                                     * byte); one fragment at a time keeps one set of partial sums live */
#pragma unroll
                    for (int u = 0; u < 2; u++)
#pragma unroll
                        for (int nt = 0; nt < NT; nt++)
                            if (x_on[nt])
                                xr[u][nt] = lds128(xs_ + nt * kXTileStride + x_off[u]);
#pragma unroll
                    for (int f = 0; f < RF; f++) {
                        float part[NT][4];
#pragma unroll
                        for (int nt = 0; nt < NT; nt++)
#pragma unroll
                            for (int i = 0; i < 4; i++)
                                part[nt][i] = 0.0f;
#pragma unroll
                        for (int u = 0; u < 2; u++) {
                            const uint32_t wA = u == 0 ? qw[f][0].x : qw[f][0].y;
                            const uint32_t wB = u == 0 ? qw[f][1].x : qw[f][1].y;
#pragma unroll
                            for (int h = 0; h < 2; h++) { /* k-step 2u + h: bytes 2h, 2h + 1 of word u */
                                uint32_t af[4];
                                decode_codes(af, table_s, wA, wB, lane4, h);
#pragma unroll
                                for (int nt = 0; nt < NT; nt++)
                                    Ops::mma(part[nt], af, h ? xr[u][nt].z : xr[u][nt].x,
                                             h ? xr[u][nt].w : xr[u][nt].y);
                            }
                        }
#pragma unroll
                        for (int nt = 0; nt < NT; nt++)
#pragma unroll
                            for (int i = 0; i < 4; i++) /* c0, c1: row row0[f]; c2, c3: row row0[f] + 8 */
                                acc[f][nt][i] = fmaf(sv[f][i >> 1], part[nt][i], acc[f][nt][i]);
                    }
                } else {
#pragma unroll
                for (int u = 0; u < 4; u++) {
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) /* read once for all the warp's fragments */
                        if (x_on[nt])
                            xr[u][nt] = lds128(xs_ + nt * kXTileStride + x_off[u]);
#pragma unroll
                    for (int f = 0; f < RF; f++) {
                        const uint4 &qA = qw[f][0], &qB = qw[f][1];
                        const uint32_t wA = u == 0 ? qA.x : u == 1 ? qA.y : u == 2 ? qA.z : qA.w;
                        const uint32_t wB = u == 0 ? qB.x : u == 1 ? qB.y : u == 2 ? qB.z : qB.w;
                        const uint32_t sA2 = s2[f][0], sB2 = s2[f][1];
#pragma unroll
                        for (int h = 0; h < 2; h++) { /* k-step 2u + h: bytes 2h, 2h + 1 of word u */
                            uint32_t af[4];
                            decode_fragment<T, kSmallTable>(af, table_s, wA, wB, lane4, h, sA2, sB2);
#pragma unroll
                            for (int nt = 0; nt < NT; nt++)
                                Ops::mma(kTwoChains && h ? acc2[f][nt] : acc[f][nt], af, h ? xr[u][nt].z : xr[u][nt].x,
                                         h ? xr[u][nt].w : xr[u][nt].y);
                        }
                    }
                }
                }
            }
            const int this_slot = slot;
            if (++slot == STAGES) {
                slot = 0;
                phase ^= 1u;
            }
            step++;
            if (++it == seg_stop) {
                used = this_slot;
                break;
            }
#if BNB4_HAS_TMA
            if constexpr (TMA) { /* release the slot to the producer (wgmma: once its last wgmmas are done) */
                if (WG)
                    wg_pending = this_slot;
                else if (kLaneRelease)
                    mbar_arrive(empty_bar + 8 * this_slot);
                else /* (elect.sync: every lane of the warp is past its reads) */
                    mbar_arrive_elected(empty_bar + 8 * this_slot);
            }
#endif
            if constexpr (kNabWindow && !NR)
                if (step == nab_until)
                    nab_window();
        }

#if BNB4_HAS_TMA
        if constexpr (codes_tile) { /* every code of the tile is read: its buffer is free */
            mbar_arrive_elected(code_empty + 8 * (code_uses & (code_nbuf - 1)));
            code_uses++;
        }
#endif
        /* ---- end of a tile (or of this CTA's range inside it): store or hand over the sums ---- */
#if BNB4_HAS_TMA
        if constexpr (TMA)
            if (kLateWait && a.x_early && !consumer_waited) { /* (the prologue's wait, moved here) */
                pdl_wait();
                consumer_waited = true;
            }
#endif
        const unsigned cur_t = t;
        step = 0; /* the next turn starts the next tile */
        t++;
#if BNB4_HAS_WGMMA
        if constexpr (WG) { /* the sums are read below: every wgmma done */
            wg_wait<0>();
            if constexpr (kPostWG) { /* the last group's sums join acc */
                join_group();
                post_s[0] = post_s[1] = 0.0f;
            }
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    wg_keep(acc[0][nt][i]);
            keep_half(1);
        }
#endif
        /* kCompactEnd: the tile's sums leave the registers for shared memory before the stores, so the stores
         * and hand-over below are one short loop over the tile's elements (coalesced) instead of code per
         * fragment element: this code runs once per tile, at ~35 cycles per 128 bytes of it (instruction
         * fetch, most likely), and its length was most of the ~1500 cycles from a CTA's last step to its
         * exit at m = 1 (H200, v24). Where every k part's sums fit a stage's weights and activations at once:
         * m <= 8, and m = 9..16 on wgmma (two parts; mma.sync's four do not fit there, and at m = 17..32 the
         * registers are short). */
        float ev[kCE]; /* this thread's tile elements e = tid + q kConsumerThreads: row e % 128, m e / 128 */
        /* The bias of the rows n this thread stores if the tile is whole (compact: those of its elements; else
         * its fragments' rows, in warps of the first k part), loaded here so that its L2 round trip runs
         * beside the k parts' reduction instead of after it, on the CTA's critical path (v36) */
        const T *bias = reinterpret_cast<const T *>(a.bias);
        constexpr int kBiasN = kCompactEnd ? kCE : 2 * RF;
        float bias_n[kBiasN];
#pragma unroll
        for (int q = 0; q < kBiasN; q++) {
            const size_t n = kCompactEnd ? (size_t)cur_t * TR + (tid + q * kConsumerThreads) % TR : n_[q / 2][q % 2];
            bias_n[q] = bias && (kCompactEnd || j == 0) && n < N ? bnb4_dt<T>::to_f32(bias[n]) : 0.0f;
        }
        { /* the other k parts' sums join the first's (in part order), through the stage just used (refilled
             only after the next iteration's barrier, TMA: after every consumer warp released it below) */
            if constexpr (kTwoChains)
#pragma unroll
                for (int f = 0; f < RF; f++)
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            acc[f][nt][i] += acc2[f][nt][i];
                            acc2[f][nt][i] = 0.0f;
                        }
            /* NT <= 4: within the weight rows (stale weights decode to finite codes, and the rows and k they
             * stand for have scale 0); NT = 8 also covers the first 16 KB of the activations (cp.async: rows
             * 0..31; TMA: the first two 64-k boxes), which every fill rewrites (rows past m, k past K: zeros);
             * PS (three parts hand over): the weight rows and, at m = 9..16, all the activation boxes */
            constexpr int kScratchBytes = (KP - 1) * NT * 4 * 256 * 4;
            static_assert(PS ? kScratchBytes <= kWBytes + S::XBytes
                             : kScratchBytes <= kWBytes || (NT == 8 && kScratchBytes <= kWBytes + 32 * kStepK * 2),
                          "reduction scratch must only cover rows the next fill rewrites");
            float *red = reinterpret_cast<float *>(stages + used * S::StageBytes);
            consumer_sync<kConsumerThreads>(); /* every warp is done reading the stage */
            if constexpr (kCompactEnd) {
                /* every part's sums to [part][m][row] (rows padded to kRedPitch: the quad's four m land in
                 * distinct banks), then each thread adds a tile element's parts in part order, as below */
                static_assert(kParts * MT * kRedPitch * 4 <= kWBytes + S::XBytes,
                              "reduction scratch must only cover rows the next fill rewrites");
#pragma unroll
                for (int f = 0; f < RF; f++)
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            const int m = nt * 8 + out_col(2 * c + (i & 1));
                            if (m < m_rows)
                                red[(red_part * MT + m) * kRedPitch + trow0[f] + 8 * (i >> 1)] = acc[f][nt][i];
                            acc[f][nt][i] = 0.0f;
                        }
                consumer_sync<kConsumerThreads>();
#pragma unroll
                for (int q = 0; q < kCE; q++) {
                    const int e = tid + q * kConsumerThreads, m = e / TR, r = e % TR;
                    float v = 0.0f;
                    if (m < m_rows) { /* (m_rows <= MT: e < MT TR) */
                        v = red[m * kRedPitch + r];
#pragma unroll
                        for (int p = 1; p < kParts; p++)
                            v += red[(p * MT + m) * kRedPitch + r];
                    }
                    ev[q] = v;
                }
            } else {
#pragma unroll
                for (int f = 0; f < RF; f++) {
                    const uint32_t q = red_q + 32 * f + (KP > 2 ? (hands_over - 1) * (NT * 4 * 256) : 0);
                    if (hands_over)
#pragma unroll
                        for (int nt = 0; nt < NT; nt++)
#pragma unroll
                            for (int i = 0; i < 4; i++)
                                red[(nt * 4 + i) * 256 + q] = acc[f][nt][i];
                }
                consumer_sync<kConsumerThreads>();
#pragma unroll
                for (int f = 0; f < RF; f++) {
                    const uint32_t q = red_q + 32 * f;
                    if (!hands_over)
#pragma unroll
                        for (int p = 0; p < KP - 1; p++)
#pragma unroll
                            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                                for (int i = 0; i < 4; i++)
                                    acc[f][nt][i] += red[((p * NT + nt) * 4 + i) * 256 + q];
                }
            }
        }
#if BNB4_HAS_TMA
        if constexpr (TMA) { /* release the tile's last slot; the scratch writes above come before the tensor
                              * copy that overwrites them */
            asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
            if (kLaneRelease || elect_one())
                mbar_arrive(empty_bar + 8 * used);
        }
#endif
        T *y = reinterpret_cast<T *>(a.y);
        /* Whether the whole tile was ours. kCompactEnd: a test on registers (the contributor range takes two
         * divisions and kernel parameters this late in the kernel: 100-200 cycles on a CTA's critical path;
         * elsewhere the registers are short) */
        const bool whole = kCompactEnd ? cur_t * a.k_steps >= it_begin && (cur_t + 1) * a.k_steps <= it_stop
                                       : tile_first_cta(a, cur_t) == tile_last_cta(a, cur_t);
        if (whole) {
            /* (the bias was loaded above: a store orders the loads after it, so loaded beside each store it
             * took an L2 round trip each, up to 32 a tile - docs/performance.md v36) */
            if constexpr (kCompactEnd) {
#pragma unroll
                for (int q = 0; q < kCE; q++) {
                    const int e = tid + q * kConsumerThreads, m = e / TR;
                    const size_t n = (size_t)cur_t * TR + e % TR;
                    if (m < m_rows && n < N)
                        y[m * N + n] = bnb4_dt<T>::from_f32(ev[q] + bias_n[q]);
                }
            } else {
#pragma unroll
                for (int f = 0; f < RF; f++)
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int i = 0; i < 4; i++) {
                            const size_t n = n_[f][i >> 1], m = (size_t)nt * 8 + out_col(2 * c + (i & 1));
                            if (j == 0 && n < N && m < M) {
                                float v = acc[f][nt][i];
                                if (bias) /* (no + 0.0f without one: this path keeps a -0.0f sum) */
                                    v += bias_n[2 * f + (i >> 1)];
                                y[m * N + n] = bnb4_dt<T>::from_f32(v);
                            }
                            acc[f][nt][i] = 0.0f;
                        }
            }
            continue;
        }
        const unsigned c_lo = tile_first_cta(a, cur_t), c_hi = tile_last_cta(a, cur_t);
        const size_t slot_base = ((size_t)cur_t * a.max_contrib + (blockIdx.x - c_lo)) * MT * TR;
        if constexpr (kCompactEnd) { /* (the fix-up reads rows m < min(M, MT) only) */
#pragma unroll
            for (int q = 0; q < kCE; q++) {
                const int e = tid + q * kConsumerThreads;
                if (e / TR < m_rows)
                    a.ws[slot_base + e] = ev[q];
            }
        } else {
#pragma unroll
            for (int f = 0; f < RF; f++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        const int r = row0[f] + 8 * (i >> 1), m = nt * 8 + out_col(2 * c + (i & 1));
                        if (j == 0)
                            a.ws[slot_base + (size_t)m * kTileRows + r] = acc[f][nt][i];
                        acc[f][nt][i] = 0.0f;
                    }
        }
        const unsigned n_contrib = c_hi - c_lo + 1;
        [[maybe_unused]] unsigned share = 0, shares = 1; /* spread: this contributor's share of the rows m */
        if constexpr (FH) {
            /* Flags: the tile's first contributor, whose run ends in it (so it ends last or about when the
             * others do), adds the slots. The others publish theirs (a barrier, then one thread's release store:
             * only that thread's warp waits for the release, against the whole CTA for a counter's acq_rel round
             * trip before, on every contributor); the first one's producer warp acquires them all, with its copies
             * issued, and lets its consumers through the hand-over barrier: docs/performance.md v55.
             * Spread (equal parts, which all end together): every contributor counts its slot in, its producer
             * warp waits until all are, and its consumers add a share of the tile's rows m - each SM pulls 1 / parts
             * of the slots from L2, where the counter's last arrival pulled them all (v56: what bound it).
             * Spread below every part: only the last a.spread to arrive share, the others leave at once as with the
             * counter. The arrival's order (an acq_rel round trip), which the producer warp learns through
             * s_arrival_bar and, for a sharer but the last, waits for the last arrival; the last one's acquire made
             * every slot visible to it. */
            if (kSpread && a.spread >= n_contrib) {
                consumer_sync<kConsumerThreads>();
                if (tid == 0)
                    bnb4_dev_count_release(handover_flag(a, cur_t, 0), 2 * n_contrib - 1);
                share = blockIdx.x - c_lo, shares = n_contrib;
                handover_sync<kConsumerThreads>(); /* (also orders its own slot's stores before the loads below) */
            } else if (kSpread && a.spread) {
                consumer_sync<kConsumerThreads>();
                if (tid == 0) {
                    s_last = (int)bnb4_dev_arrive_inc_acq_rel(handover_flag(a, cur_t, 0), n_contrib - 1);
#if BNB4_HAS_TMA
                    mbar_arrive((uint32_t)__cvta_generic_to_shared(&s_arrival_bar)); /* (for the producer warp) */
#endif
                }
                consumer_sync<kConsumerThreads>();
                const unsigned arrival = (unsigned)s_last;
                if (arrival + a.spread < n_contrib)
                    continue;
                share = arrival + a.spread - n_contrib, shares = a.spread;
                if (arrival + 1 < n_contrib)
                    handover_sync<kConsumerThreads>();
            } else if (blockIdx.x != c_lo) {
                consumer_sync<kConsumerThreads>();
                if (tid == 0)
                    bnb4_dev_publish(handover_flag(a, cur_t, blockIdx.x - c_lo));
                continue;
            } else {
                handover_sync<kConsumerThreads>(); /* (also orders its own slot's stores before the loads below) */
            }
        } else {
            consumer_sync<kConsumerThreads>(); /* every partial sum stored, then counted (bnb4_dev_arrive_acq_rel) */
            if (tid == 0)
                s_last = bnb4_dev_arrive_acq_rel(a.counters + cur_t) == c_hi - c_lo;
            consumer_sync<kConsumerThreads>();
            if (!s_last)
                continue;
        }
        /* The last CTA (spread: each sharer, its share of rows m) adds every contributor's slot, in
         * contributor order (deterministic, the same bits either way), on the kernel's critical path. A thread
         * takes float4s of 4 rows n (the same 4 rows at each of its m), and kFixBatch contributors' float4s at a
         * time, all loads issued before the first add: one L2 round trip a batch. Element by element, a
         * contributor at a time, ptxas waited for a chunk's first load before issuing the others: 2 round trips a
         * contributor and chunk of 8 elements, 16 at m = 64 in 4 parts (docs/performance.md v36). And all loads
         * before the first store, which would order loads after it behind it (v21). More float4s a thread at once
         * made ptxas spill in more kernels. */
        constexpr int kRowUnits = TR / 4, kFixBatch = 4; /* (kRowUnits: the float4s of a tile row m) */
        static_assert(kConsumerThreads % kRowUnits == 0, "a thread's float4s share their rows n");
        const float4 *slots = reinterpret_cast<const float4 *>(a.ws + (size_t)cur_t * a.max_contrib * MT * TR);
        const int m_fix = (int)min(M, (size_t)MT);
        int u_begin = 0, u_end = m_fix * kRowUnits; /* spread: this contributor's share, whole rows m */
        if constexpr (kSpread)
            if (a.spread) {
                u_begin = (int)(share * m_fix / shares) * kRowUnits;
                u_end = (int)((share + 1) * m_fix / shares) * kRowUnits;
            }
        const size_t n0 = (size_t)cur_t * TR + 4 * (tid % kRowUnits);
        float b[4];
#pragma unroll
        for (int i = 0; i < 4; i++)
            b[i] = bias && n0 + i < N ? bnb4_dt<T>::to_f32(bias[n0 + i]) : 0.0f;
        for (int u = u_begin + tid; u < u_end && n0 < N; u += kConsumerThreads) {
            float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            for (unsigned c0 = 0; c0 < n_contrib; c0 += kFixBatch) {
                float4 part[kFixBatch];
#pragma unroll
                for (int i = 0; i < kFixBatch; i++) /* (a missing contributor reads the first one's slot) */
                    part[i] = __ldcg(slots + (size_t)(c0 + i < n_contrib ? c0 + i : 0) * (MT * TR / 4) + u);
#pragma unroll
                for (int i = 0; i < kFixBatch; i++)
                    if (c0 + i < n_contrib) { /* (not + 0.0f for a missing one: it turns -0.0f into 0.0f) */
                        v.x += part[i].x;
                        v.y += part[i].y;
                        v.z += part[i].z;
                        v.w += part[i].w;
                    }
            }
            T *row = y + (size_t)(u / kRowUnits) * N;
            const float sums[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
                if (n0 + i < N)
                    row[n0 + i] = bnb4_dt<T>::from_f32(sums[i] + b[i]);
        }
        if (!FH && tid == 0)
            a.counters[cur_t] = 0; /* ready for the next launch on this stream */
    }
#if BNB4_HAS_WGMMA
    /* (every turn that ends the loop ended a tile, so no wgmma is in flight here; without this wait ptxas
     * cannot see that and waits for the wgmmas at every turn instead, its note C7517) */
    if constexpr (WG)
        wg_wait<0>();
#endif
    cp_async_wait<0>(); /* no copy may still target shared memory when the CTA exits */
    }
}

/* The activations in the k order of the decoded weight fragments (kWgPermuted): in every 128-k group, k-step ks =
 * 2 u + h of the mma (16 k) holds, at its positions 2 c + e and 2 c + 8 + e (c = 0..3, e = 0, 1), the
 * group's k 32 c + 8 u + 4 h + e and 32 c + 8 u + 4 h + 2 + e: the k that byte 4 u + 2 h (+ 1) of lane c's
 * 16-byte weight chunk holds (see the kernel's fragment comment). One thread per 8 outputs (16 bytes);
 * K % 128 == 0 (the TMA layouts). */
template <typename T>
__global__ void pipe_permute_x(const T *__restrict__ x, T *__restrict__ xp, size_t total8, unsigned K) {
#if BNB4_HAS_TMA
    /* x may come from the previous kernel. The pipe kernel that follows may start only after this wait:
     * then everything but the permuted activations is complete before it starts, and it copies the first
     * stages' weights and scales without waiting (the producer's `early` stages). */
    pdl_wait();
    pdl_launch_dependents();
#endif
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total8; i += (size_t)gridDim.x * blockDim.x) {
        const size_t o = i * 8, row_k = o - o % K; /* first output element, its row's first */
        const unsigned v = (unsigned)(o - row_k), g0 = v & ~127u, ks = (v & 127u) >> 4, hi = (v >> 3) & 1u;
        const unsigned base = g0 + 8 * (ks >> 1) + 4 * (ks & 1) + 2 * hi; /* + 32 c */
        const uint32_t *src = reinterpret_cast<const uint32_t *>(x + row_k + base);
        uint4 r;
        r.x = src[0], r.y = src[16], r.z = src[32], r.w = src[48]; /* c = 0..3: 32 elements = 16 words apart */
        *reinterpret_cast<uint4 *>(xp + o) = r;
    }
}

/* Per device: the dynamic shared memory the kernel's limit was raised to (bnb4_cuda_smem_limit). */
template <typename T, int NT, bool NESTED, bool TMA, int WG, int PS, bool CT, int CP, bool FH = false, bool NR = false>
unsigned g_smem_limit[64];

/* The TMA variant's tensor maps: the weight tile as one 128-row x 128-byte box (128-byte swizzle) of the
 * packed rows (K / 2 bytes apart), the activations as 64-k x MT-row boxes (128-byte swizzle; rows past m
 * come as zeros; x_rows rows where pipe_x_rows takes fewer), plain scales as 128-row x (256 / blocksize) boxes
 * of absmax seen as N x (K / blocksize), nested codes as 128-row x 16 boxes of the codes seen the same way.
 * Narrow tiles (tile_rows 32, step_k 1024): the weights as one 3D box of four 256-k chunks x 32 rows, 16
 * scales (64-byte swizzle: narrow_scale_off) or codes a row. Either width:
 * the activations as one 3D box of a stage's 64-k chunks where x_one_copy. No L2 promotion: with 256-byte
 * lines (the tile kernel's) m = 2..64 ran 2-4 % slower on the mid shapes, and a pure read of the weights
 * in these boxes 2-5 % slower (docs/performance.md v15). */
struct PipeMaps {
    CUtensorMap w, x, s;
};
bool pipe_tma_encode(PipeArgs &a, const bnb4_qtensor *w, int mt, unsigned tile_rows, unsigned step_k,
                     PipeMaps *maps) {
    const size_t K = a.K, N = a.N;
    const bool narrow = step_k > (unsigned)kStepK;
    if (narrow) { /* the packed rows as [K / 256 chunks][N rows][128 bytes] */
        const size_t dims[3] = {kRowBytes, N, K / kStepK}, strides[2] = {K / 2, kRowBytes}; /* (K % 256 == 0) */
        const unsigned box[3] = {kRowBytes, tile_rows, step_k / kStepK};
        if (!encode_3d(&maps->w, w->packed, CU_TENSOR_MAP_DATA_TYPE_UINT8, dims, strides, box,
                       CU_TENSOR_MAP_SWIZZLE_128B))
            return false;
    } else if (!encode_2d(&maps->w, w->packed, CU_TENSOR_MAP_DATA_TYPE_UINT8, K / 2, N, K / 2, kRowBytes, tile_rows,
                          CU_TENSOR_MAP_SWIZZLE_128B, false)) {
        return false;
    }
    /* the activations as [K / 64 chunks][M rows][64 k], a stage's chunks one copy of x_rows rows (else one 64-k
     * box of mt rows each, at whole KB) */
    const size_t x_dims[3] = {64, a.M, K / 64}, x_strides[2] = {K * 2, 128}; /* (K % 128 == 0) */
    const unsigned x_box[3] = {64, a.x_rows, step_k / 64};
    a.x_one_copy = a.x_one_copy && encode_3d(&maps->x, a.x, CU_TENSOR_MAP_DATA_TYPE_UINT16, x_dims, x_strides, x_box,
                                             CU_TENSOR_MAP_SWIZZLE_128B);
    if (!a.x_one_copy) {
        a.x_rows = (unsigned)mt;
        if (!encode_2d(&maps->x, a.x, CU_TENSOR_MAP_DATA_TYPE_UINT16, K, a.M, K * 2, 64, (unsigned)mt,
                       CU_TENSOR_MAP_SWIZZLE_128B, false))
            return false;
    }
    const size_t per_row = K >> a.bs_log2; /* whole blocks (the TMA layouts have K % blocksize == 0) */
    if (!w->absmax && (a.codes_async == kCodesLanes || a.codes_async == kCodesTile)) /* (no tensor map) */
        return true;
    if (!w->absmax) { /* nested codes: runs of 16 of each row (kCodesGroups: of g rows seen as one, their codes being
                         16-byte strided; N % g == 0, pipe_codes_async) */
        const unsigned g = 1u << a.code_groups_log2;
        return encode_2d(&maps->s, w->nested.codes, CU_TENSOR_MAP_DATA_TYPE_UINT8, g * per_row, N / g, g * per_row,
                         g > 1 ? 32 : 16, tile_rows / g, CU_TENSOR_MAP_SWIZZLE_NONE, false);
    }
    /* narrow tiles (blocksize 64): 16 scales a row, 64 bytes, swizzled (narrow_scale_off) */
    const unsigned s_box = step_k >> a.bs_log2;
    if (narrow && s_box != 16)
        return false;
    return encode_2d(&maps->s, w->absmax, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, per_row, N, per_row * 4, s_box, tile_rows,
                     narrow ? CU_TENSOR_MAP_SWIZZLE_64B : CU_TENSOR_MAP_SWIZZLE_NONE, false);
}

/* The TMA producer's activations as one copy of a 3D view per stage rather than one copy per 64-k box:
 * BNB4_CUDA_PIPE_X3D=0 / 1 (for measuring; read once: not a getenv per launch, whose host time m = 1 pays). */
unsigned pipe_x_one_copy() {
    static const unsigned on = bnb4_env_size("BNB4_CUDA_PIPE_X3D", 1) != 0;
    return on;
}

/* The activation rows a stage's copy brings (PipeArgs::x_rows): the post-scaled math (m <= 16) reads no row past
 * m, so a copy of m rows where m < MT rather than MT with the rest zero-filled (m = 1 on narrow tiles: 2 KB a
 * step instead of 16 KB of shared-memory writes; docs/performance.md v34); the consumers' offsets follow the
 * box's row count (x_off). BNB4_CUDA_PIPE_X_ROWS=0 copies MT rows everywhere (for measuring; read once). */
unsigned pipe_x_rows(bool postscaled, size_t m, unsigned mt) {
    static const bool full = bnb4_env_size("BNB4_CUDA_PIPE_X_ROWS", 1) == 0;
    return postscaled && !full && m < mt ? (unsigned)m : mt;
}

/* Nested codes on the TMA variant: a tensor copy of 16-code runs where a row's codes are 16-byte strided and
 * aligned (K % (16 blocksize) == 0); else, where 2 or 4 consecutive rows' codes are (K / blocksize a multiple of 8
 * or 4 - K = 11008, 13824, 18944 or 3584 at blocksize 64, say - and N a multiple of that), tensor copies of row
 * groups (kCodesGroups, groups_log2 set); else 4-byte words loaded and stored by the producer warp's lanes
 * (kCodesLanes). The post-scaled math (m <= 16, blocksize 64) takes a tile's codes in one bulk copy instead of
 * either where they fit (pipe_codes_tile), and no row groups (groups_ok false: the row map in its loop made it 26-66
 * instructions a step longer). On the wgmma math the lanes' loads,
 * one step ahead, held up the producer (H200, docs/performance.md v54: nested 5120x13824 m = 16 / 32 / 64 32 / 24
 * / 12 % slower than plain, where 16-byte strided codes cost 5-9 %); row groups took 15 / 11 / 7 % off those, 6-11
 * % on 9728x2560, 3-8 % on 18944x3584, 3584x18944 and 4096x11008 at m = 32 / 64. BNB4_CUDA_PIPE_CODES_ASYNC=1 takes
 * the lanes' words everywhere and BNB4_CUDA_PIPE_CODES_GROUPS=0 where groups would be (read per call: tests,
 * measuring; forced where the tensor copy fits, the bulk copy ran 3-14 % slower, v33). */
unsigned pipe_codes_async(const bnb4_qtensor *w, bool groups_ok, unsigned *groups_log2) {
    *groups_log2 = 0;
    if (w->absmax)
        return kCodesTensor;
    const char *e = getenv("BNB4_CUDA_PIPE_CODES_ASYNC"), *eg = getenv("BNB4_CUDA_PIPE_CODES_GROUPS");
    if ((e && *e == '1') || !bnb4_aligned(w->nested.codes, 16))
        return kCodesLanes;
    const size_t per_row = w->cols / w->blocksize; /* (the TMA layouts: whole blocks, a multiple of 4) */
    if (per_row % 16 == 0)
        return kCodesTensor;
    const unsigned g_log2 = per_row % 8 == 0 ? 1u : per_row % 4 == 0 ? 2u : 0u;
    /* (a row group's codes at least the copies' 32 bytes) */
    if (!groups_ok || g_log2 == 0 || w->rows % (1u << g_log2) != 0 || (per_row << g_log2) < 32 || (eg && *eg == '0'))
        return kCodesLanes;
    *groups_log2 = g_log2;
    return kCodesGroups;
}

/* Nested codes by tile (kCodesTile) for the post-scaled math where the lanes' words would come (kCodesLanes):
 * whole tiles (N % tile rows == 0: a part-filled last tile's copy would read past the codes), codes 16-byte
 * aligned, and the code buffers fit beside the stages - one where every CTA's run is inside one tile (per
 * steps a CTA, k_steps a tile), else two, so a tile's codes load while the consumers work on the tile before.
 * The lanes' words cost the producer's loop ~25-35 % of the call at m <= 16 (docs/performance.md v33: without
 * any code copies at all nested ran at plain's speed). The consumers read a byte of each row at the rows'
 * stride K / blocksize: taken where that is not a multiple of 16 bytes, at most 2 rows share a bank (where it
 * is, the tensor copy serves, and forced there the bulk copy ran 10-14 % slower: 16 rows a bank at K = 4096).
 * BNB4_CUDA_PIPE_CODES_TILE=0 keeps the lanes' words (read per call: tests). Returns the buffers' bytes (0: not
 * taken) and sets nbuf. */
size_t pipe_codes_tile(const bnb4_qtensor *w, unsigned tile_rows, size_t smem, size_t per, size_t k_steps,
                       unsigned *nbuf) {
    const char *e = getenv("BNB4_CUDA_PIPE_CODES_TILE");
    if ((e && *e == '0') || w->rows % tile_rows != 0 || !bnb4_aligned(w->nested.codes, 16))
        return 0;
    const size_t per_row = w->cols / w->blocksize, span = (size_t)tile_rows * per_row;
    if (span > UINT32_MAX / 2) /* (the buffers' offsets are 32-bit) */
        return 0;
    const unsigned n = per <= k_steps && k_steps % per == 0 ? 1 : 2;
    const size_t bytes = n * (size_t)codes_tile_stride(tile_rows, (unsigned)per_row);
    if (smem + bytes > (size_t)kSmemLimit)
        return 0;
    *nbuf = n;
    return bytes;
}

/* The TMA producer's in-flight window (PipeArgs::inflight): 3 stages, BNB4_CUDA_PIPE_INFLIGHT=n for
 * measuring (read once: not a getenv per launch). */
unsigned pipe_inflight() {
    static const unsigned n = (unsigned)bnb4_env_size("BNB4_CUDA_PIPE_INFLIGHT", 3);
    return n;
}

/* m <= 16 (TMA) without early stages (pipe_early: the weights may be the previous matmul's output): the
 * first stages prefetched into L2 before griddepcontrol.wait, so the memory works while the previous
 * kernel's last CTAs finish and its completion is signalled (1.3 us on the H200, docs/performance.md v20);
 * L2 is the GPU's point of coherence, so a prefetch cannot make a later copy see data older than what the
 * previous kernel wrote. 2 stages (m = 1..8 2-4 % faster on the three smaller shapes, v20; after early
 * stages 2 more were 1-4 % slower, v22); BNB4_CUDA_PIPE_PREFETCH=n for measuring (read once). */
unsigned pipe_prefetch() {
    static const unsigned n = (unsigned)bnb4_env_size("BNB4_CUDA_PIPE_PREFETCH", 2);
    return n;
}

/* The stages whose weights and scales the producer copies before griddepcontrol.wait. Safe where the
 * previous kernel cannot be writing them: with kWgPermuted it is pipe_permute_x, which let this one start only
 * after its own wait; else the previous kernel, if it may still run, is one of ours, and none writes a
 * caller's weights but a matmul's y - checked by the caller (bnb4_cuda_weights_may_be_pending).
 * Fewer than the window: the copies share the memory with the previous kernel's last CTAs, whose end this
 * kernel's wait waits for (H200, docs/performance.md v22: mma.sync 2 stages, m = 1..8 on 4096x4096 8-10 %
 * faster than none and 4-5 % than 3, on the mid shapes 1-3 %; wgmma 1 stage, m = 32 / 64 on 4096x4096 3 %
 * faster than 2 and 8 % than 3) - but wgmma 2 where their activations come early too (x_early: the stages are
 * whole when the wait returns; v44: m = 16 / 32 / 64 2.2 / 1.5 / 0.5-1 % faster than 1).
 * BNB4_CUDA_PIPE_EARLY=n for measuring (read once; 0: none). */
unsigned pipe_early(bool wgmma, bool x_early, unsigned stages) {
    static const size_t n = bnb4_env_size("BNB4_CUDA_PIPE_EARLY", (size_t)-1);
    const size_t want = n != (size_t)-1 ? n : wgmma && !x_early ? 1 : 2;
    return want < stages ? (unsigned)want : stages;
}

/* Equal parts of a tile on the hand-over kernel at m = 33..64 (pipe_spread_built): how many of its contributors, the
 * last to arrive, add a share of the tile's rows m each (PipeArgs::spread; 0: the counter's last arrival adds them
 * all, on the counter kernel) - as bnb4_grid_pipe_spread says (cuda_grid.h), or BNB4_CUDA_PIPE_SPREAD=k on any equal
 * parts (k at least the parts: every contributor; read per call, only where a tile is cut in equal parts: tests,
 * measuring). */
unsigned pipe_spread(size_t parts, size_t per, size_t m, bool nested) {
    const char *e = getenv("BNB4_CUDA_PIPE_SPREAD");
    const size_t k = e && *e ? strtoul(e, nullptr, 10) : bnb4_grid_pipe_spread(parts, per, m, nested);
    return (unsigned)(k < parts ? k : parts);
}

/* Whether the early stages bring their activations too, before griddepcontrol.wait, where the kernel is known to
 * follow a matmul of ours whose y is no part of x - in a capture, right after it (bnb4_cuda_activations_may_be_
 * pending: a caller's kernel writing x may let ours start before its writes are visible; not with kWgPermuted,
 * whose x pipe_permute_x has just written): then the first stages are whole when the wait returns, instead of
 * waiting for their activations' copies then (H200, docs/performance.md v44: 2.5 % faster at m <= 16, 1.3 % at
 * m = 64; 4096x4096 m = 16 5.66 -> 5.16 us). BNB4_CUDA_PIPE_X_EARLY=0 turns it off, for measuring (read once). */
bool pipe_x_early() {
    static const bool on = bnb4_env_size("BNB4_CUDA_PIPE_X_EARLY", 1) != 0;
    return on;
}

/* Steps per CTA of the kernel's grid on N x K weights at MT activation rows (bnb4_cuda_steps_per_cta):
 * at most 8 CTAs a tile, 4 past m = 32 (each part's sums are 4 MT x 128 bytes: 1024x4096, v26).
 * BNB4_CUDA_PIPE_CTAS=n: n CTAs, stream-K (read per call: tests use it to force tiles shared by many
 * CTAs and CTAs spanning tiles on small shapes). Aligned runs (H200, v17): 14336x4096 16 steps per CTA
 * against stream-K's 14, 9-23 % faster at m = 1..64; 28672x8192 64 against 55, within 1-3 % at m <= 16
 * and 4-9 % faster at m = 32 / 64; also where at most BNB4_GRID_PIPE_SK_STEPS steps longer (v54) */
size_t pipe_steps_per_cta(const bnb4_cuda_state *s, size_t N, size_t K, int mt, bool narrow = false) {
    const size_t rows = narrow ? PipeShape<1, true, 0, kPsNarrow>::TileRows : kTileRows;
    const size_t step = narrow ? PipeShape<1, true, 0, kPsNarrow>::StepK : kStepK;
    return bnb4_cuda_steps_per_cta(s, bnb4_div_up(N, rows), bnb4_div_up(K, step), mt <= 32 ? 8 : 4,
                                   BNB4_GRID_PIPE_SK_STEPS, "BNB4_CUDA_PIPE_CTAS");
}

/* The cp.async variant's sizing on this device (kCpHopper, kCpFew, kCpSmall: the first that fits), -1 where none
 * does. The smaller sizings are built at m <= 16 alone (3 stages at m = 17..64 take 173 / 221 KB beside the 64 KB
 * table, which no device between Hopper's 227 KB and A100's 163 KB gives): A100 / Orin (163 KB) run m <= 16 in 3
 * stages, sm_86 / 89 / 120 (99 KB) with the small table too, both larger m in chunks of 16 rows (bnb4_cuda_pipe_rows). */
template <int NT> constexpr bool pipe_cp_small_built() { return NT <= 2; }
template <int NT> int pipe_cp_sizing(const bnb4_cuda_state *s) {
    if (bnb4_cuda_smem_fits(s, PipeShape<NT, false>::SmemBytes))
        return kCpHopper;
    if constexpr (pipe_cp_small_built<NT>()) {
        if (bnb4_cuda_smem_fits(s, PipeShape<NT, false, 0, kPsOff, false, kCpFew>::SmemBytes))
            return kCpFew;
        if (bnb4_cuda_smem_fits(s, PipeShape<NT, false, 0, kPsOff, false, kCpSmall>::SmemBytes))
            return kCpSmall;
    }
    return -1;
}
/* Past this many chunks dequantize + cuBLAS is the faster (H200 running sm_80 code with an A100's 163 KB,
 * docs/performance.md v48: 14336x4096 f16 m = 17 / 32 in 2 chunks 38 / 44 us, m = 64 in 4 chunks 88 us, against 72
 * for dequantize + cuBLAS at each) */
constexpr size_t kPipeMaxChunks = 3;
/* The TMA variant's shapes take up to kSmemLimit: a Hopper SM's 227 KB (sm_90 code also runs on later GPUs,
 * some of which give a CTA 99 KB) */
bool pipe_tma_smem_fits(const bnb4_cuda_state *s) { return bnb4_cuda_smem_fits(s, kSmemLimit); }
static_assert(PipeShape<8, false>::SmemBytes <= kSmemLimit, "where the TMA variant fits, so does the cp.async one at m = 64");

template <typename T, int NT, bool NESTED, bool TMA, int WG, int PS, int CP = kCpHopper>
bnb4_status launch_pipe(bnb4_cuda_state *s, PipeArgs a, const bnb4_qtensor *w) {
    using S = PipeShape<NT, TMA, WG, PS, false, CP>;
    if constexpr (!TMA && CP == kCpHopper) { /* (bnb4_cuda_gemm_pipe chunks m so that some sizing fits the device) */
        const int sizing = pipe_cp_sizing<NT>(s);
        if (sizing != kCpHopper) {
            if constexpr (pipe_cp_small_built<NT>()) {
                if (sizing == kCpFew)
                    return launch_pipe<T, NT, NESTED, false, 0, kPsOff, kCpFew>(s, a, w);
                if (sizing == kCpSmall)
                    return launch_pipe<T, NT, NESTED, false, 0, kPsOff, kCpSmall>(s, a, w);
            }
            return bnb4_fail(BNB4_ERR_DEVICE, "bnb4_gemm (pipe): %zu KB of shared memory a CTA is too little",
                             s->smem_optin / 1024);
        }
    }
    /* (kernels whose nested codes may come by tile: pipe_codes_tile) */
    constexpr bool kCodesByTile = TMA && NESTED && PS != kPsOff;
    PipeMaps maps;
    memset(&maps, 0, sizeof maps);
    void *xp = nullptr; /* kWgPermuted: the permuted activations (the context's scratch) */
    const void *x = a.x;
    if constexpr (wg_permuted(WG)) {
        const bnb4_status st = bnb4_cuda_scratch(s, a.M * a.K * sizeof(T), &xp);
        if (st != BNB4_OK)
            return st;
        a.x = xp;
    }
    if constexpr (TMA) {
        a.x_one_copy = pipe_x_one_copy();
        a.x_rows = pipe_x_rows(PS != kPsOff, a.M, S::MT);
        a.codes_async = pipe_codes_async(w, PS == kPsOff, &a.code_groups_log2);
        if (NESTED) { /* (pipe_use_tma: nested blocksize x blocksize <= 2^30, fewer than 2^32 blocks) */
            const size_t nested_k = w->nested.blocksize * w->blocksize;
            a.nab_steps = nested_k > (size_t)S::StepK ? (unsigned)(nested_k / S::StepK) : 1u;
            a.nnab = (uint32_t)bnb4_div_up(a.nblocks, w->nested.blocksize);
        }
        /* (failing is not expected: the layouts were checked) */
        if (!pipe_tma_encode(a, w, S::MT, S::TileRows, S::StepK, &maps)) {
            a.x = x;
            return launch_pipe<T, NT, NESTED, false, 0, kPsOff>(s, a, w);
        }
    }
    const size_t tiles = bnb4_div_up(a.N, S::TileRows), k_steps = bnb4_div_up(a.K, S::StepK);
    const size_t iters = tiles * k_steps;
    const size_t per = pipe_steps_per_cta(s, a.N, a.K, S::MT, S::Narrow);
    const size_t ctas = bnb4_div_up(iters, per);
    a.k_steps = (unsigned)k_steps;
    a.iters = (unsigned)iters;
    a.per_cta = (unsigned)per;
    a.max_contrib = (unsigned)(bnb4_div_up(k_steps, per) + 1);
    /* stream-K runs (not whole tiles, not equal parts of a tile): the hand-over by flags where built; equal parts:
     * the same kernel, the last contributors to arrive adding a share each (pipe_spread) */
    [[maybe_unused]] const bool flags = pipe_flags_built<NT, TMA, WG, PS>() && per % k_steps != 0 && k_steps % per != 0;
    a.spread = pipe_spread_built<NT, TMA, WG, PS>() && per < k_steps && k_steps % per == 0
                   ? pipe_spread(k_steps / per, per, a.M, NESTED)
                   : 0;
    /* the codes by tile where they fit (the CT kernel: its own stages and shared memory) */
    using SC = PipeShape<NT, TMA, WG, PS, kCodesByTile>;
    size_t smem = S::SmemBytes;
    unsigned stages = S::Stages;
    if (kCodesByTile && a.codes_async == kCodesLanes) {
        const size_t bytes = pipe_codes_tile(w, SC::TileRows, SC::SmemBytes, per, k_steps, &a.codes_nbuf);
        if (bytes) {
            a.codes_async = kCodesTile;
            smem = SC::SmemBytes + bytes;
            stages = SC::Stages;
        }
    }
    /* a window of the stage count or more is no limit: the slots' empty barriers hold the producer to it,
     * and waiting on a stage more than a ring turn back would read a full barrier a phase later (a hang) */
    const unsigned inflight = pipe_inflight();
    a.inflight = inflight < stages ? inflight : 0;
    const bool w_early = TMA && (wg_permuted(WG) || !bnb4_cuda_weights_may_be_pending(s, w));
    const bool x_early = w_early && !wg_permuted(WG) && pipe_x_early() &&
                         !bnb4_cuda_activations_may_be_pending(s, x, a.M * a.K * sizeof(T));
    a.early = w_early ? pipe_early(WG != 0, x_early, stages) : 0;
    a.x_early = x_early && a.early;
    a.prefetch = NT <= 2 && !wg_permuted(WG) && !a.early ? pipe_prefetch() : 0;
    if (per % k_steps != 0) { /* some tile is shared by CTAs: workspace and counters */
        const bnb4_status st = bnb4_cuda_splitk(s, tiles * a.max_contrib,
                                                tiles * a.max_contrib * S::MT * S::TileRows * sizeof(float),
                                                &a.counters, &a.ws);
        if (st != BNB4_OK)
            return st;
    }
    /* programmatic dependent launch (TMA variant, sm_90): this kernel's prologue overlaps the previous
     * kernel's end */
    const bool pdl = TMA && bnb4_pdl_enabled();
    cudaError_t e = cudaSuccess;
    if constexpr (wg_permuted(WG)) {
        const size_t total8 = a.M * a.K / 8;
        cudaLaunchConfig_t pc = {};
        pc.gridDim = dim3((unsigned)bnb4_div_up(total8, 256) < 4u * s->sm_count ? (unsigned)bnb4_div_up(total8, 256)
                                                                                  : 4u * s->sm_count);
        pc.blockDim = dim3(256);
        pc.stream = s->stream;
        e = bnb4_launch_ex(pc, pdl, pipe_permute_x<T>, reinterpret_cast<const T *>(x), reinterpret_cast<T *>(xp),
                           total8, (unsigned)a.K);
    }
    if (e == cudaSuccess) {
        cudaLaunchConfig_t cfg = {};
        cfg.gridDim = dim3((unsigned)ctas);
        cfg.blockDim = dim3(S::Threads);
        cfg.dynamicSmemBytes = smem;
        cfg.stream = s->stream;
        /* NR: the kernels for rows of one nested block each, where built (BNB4_CUDA_PIPE_ROW_NAB=0: the windows'
         * kernels there too, read per call: tests, A/B) */
        constexpr bool kRowNab = pipe_row_nab_built<NT, NESTED, TMA, WG, PS>();
        const char *rn = kRowNab ? getenv("BNB4_CUDA_PIPE_ROW_NAB") : nullptr;
        const bool row_nab = kRowNab && !(rn && *rn == '0') && a.K >= w->blocksize &&
                             w->nested.blocksize % (a.K / w->blocksize) == 0;
        /* the kernel with codes by tile (CT) or not, with the hand-over by flags (FH) or not, and NR as above; its
         * shared memory limit raised per device to the most it was asked for */
        auto launch = [&](auto ct, auto fh, size_t smem_max) {
            constexpr bool CT = decltype(ct)::value, FH = decltype(fh)::value;
            auto go = [&](auto kernel, unsigned(&limit)[64]) {
                const cudaError_t se = bnb4_cuda_smem_limit(s, kernel, smem_max, limit);
                return se != cudaSuccess ? se : bnb4_launch_ex(cfg, pdl, kernel, a, maps.w, maps.x, maps.s);
            };
            if constexpr (kRowNab)
                if (row_nab)
                    return go(gemm_4bit_pipe_kernel<T, NT, NESTED, TMA, WG, PS, CT, CP, FH, true>,
                              g_smem_limit<T, NT, NESTED, TMA, WG, PS, CT, CP, FH, true>);
            return go(gemm_4bit_pipe_kernel<T, NT, NESTED, TMA, WG, PS, CT, CP, FH>,
                      g_smem_limit<T, NT, NESTED, TMA, WG, PS, CT, CP, FH>);
        };
        using Yes = std::true_type;
        using No = std::false_type;
        static_assert(!kCodesByTile || CP == kCpHopper, "codes by tile: the TMA variant's sizing");
        if constexpr (kCodesByTile)
            if (a.codes_async == kCodesTile)
                return bnb4_cuda_check(launch(Yes(), No(), kSmemLimit), "bnb4_gemm (pipe)");
        if constexpr (pipe_flags_built<NT, TMA, WG, PS>())
            if (flags || a.spread)
                return bnb4_cuda_check(launch(No(), Yes(), smem), "bnb4_gemm (pipe)");
        e = launch(No(), No(), smem);
    }
    return bnb4_cuda_check(e, "bnb4_gemm (pipe)");
}

template <typename T, bool NESTED, bool TMA, int WG>
bnb4_status launch_pipe_m(bnb4_cuda_state *s, const PipeArgs &a, const bnb4_qtensor *w) {
    if (a.M <= 8)
        return launch_pipe<T, 1, NESTED, TMA, WG, kPsOff>(s, a, w);
    if (a.M <= 16)
        return launch_pipe<T, 2, NESTED, TMA, WG, kPsOff>(s, a, w);
    if (a.M <= 32)
        return launch_pipe<T, 4, NESTED, TMA, WG, kPsOff>(s, a, w);
    return launch_pipe<T, 8, NESTED, TMA, WG, kPsOff>(s, a, w);
}

/* variant: 0 cp.async, 1 TMA with mma.sync, 2 TMA with wgmma on permuted activations, 3 TMA with mma.sync
 * post-scaled (m <= 16), 4 TMA with wgmma on the activations as they are (pipe_use_natural), 5 TMA with
 * mma.sync post-scaled on narrow tiles (m <= 16, pipe_use_narrow) */
/* the post-scaled math (m <= 16) in k quarters of 128-row tiles or on narrow tiles */
template <typename T, int PS>
bnb4_status launch_pipe_postscaled(bnb4_cuda_state *s, const PipeArgs &a, const bnb4_qtensor *w, bool nested) {
    if (a.M <= 8)
        return nested ? launch_pipe<T, 1, true, true, 0, PS>(s, a, w) : launch_pipe<T, 1, false, true, 0, PS>(s, a, w);
    return nested ? launch_pipe<T, 2, true, true, 0, PS>(s, a, w) : launch_pipe<T, 2, false, true, 0, PS>(s, a, w);
}
template <typename T>
bnb4_status launch_pipe_t(bnb4_cuda_state *s, const PipeArgs &a, const bnb4_qtensor *w, bool nested, int variant) {
    if (variant == 5)
        return launch_pipe_postscaled<T, kPsNarrow>(s, a, w, nested);
    if (variant == 3)
        return launch_pipe_postscaled<T, kPsQuarters>(s, a, w, nested);
    if (variant == 2)
        return !nested                ? launch_pipe_m<T, false, true, kWgPermuted>(s, a, w)
               : w->blocksize == 64 ? launch_pipe_m<T, true, true, kWgPermuted64>(s, a, w)
                                    : launch_pipe_m<T, true, true, kWgPermuted>(s, a, w);
    if (variant == 4)
        return w->blocksize == 32 ? nested ? launch_pipe_m<T, true, true, kWgNatural32>(s, a, w)
                                           : launch_pipe_m<T, false, true, kWgNatural32>(s, a, w)
               : nested ? launch_pipe_m<T, true, true, kWgNatural64>(s, a, w)
                        : launch_pipe_m<T, false, true, kWgNatural64>(s, a, w);
    if (variant == 1)
        return nested ? launch_pipe_m<T, true, true, false>(s, a, w) : launch_pipe_m<T, false, true, false>(s, a, w);
    return nested ? launch_pipe_m<T, true, false, false>(s, a, w) : launch_pipe_m<T, false, false, false>(s, a, w);
}

/* The TMA variant's math is wgmma (sm_90a code: compute capability 9.0 and a build for sm_90a) from
 * m = 17 on, with plain absmax, and nested on the activations as they are at blocksize 64, from m = 9 on (A/B
 * on the H200 against the post-scaled mma.sync at m = 9..16, plain: docs/performance.md v16 and v18, 7 % faster
 * on 14336x4096, 0-10 % on 28672x8192, 1-2 % slower on 4096x14336; v26, on the activations as they are, 1-5 %
 * faster on 1024x4096 .. 6144x4096, where with the permutation kernel it had been 12 % slower on 4096x4096;
 * nested: v16 15-30 % slower, v26 on small weights +6..-6 %; v45, with a row's nested absmax per window, on the
 * activations as they are 14336x4096 5 % faster, on permuted ones 28672x8192 within -1..+0.4 %; v46, on the
 * activations as they are there too, 2-4 % faster: so at m = 9..16 they take them at any size,
 * pipe_use_natural); at m <= 8 mma.sync (v26: wgmma 1-18 % slower). Narrow tiles, where they apply at m <= 16,
 * beat both (bnb4_cuda_gemm_pipe). BNB4_CUDA_PIPE_WGMMA_MIN_M sets one threshold for every case (past 64: never;
 * pipe_prefer_postscale then never applies). w: the weight (NULL: plain). */
size_t pipe_wgmma_min_m_env() {
    static const size_t min_m = bnb4_env_size("BNB4_CUDA_PIPE_WGMMA_MIN_M", 0);
    return min_m;
}
bool pipe_use_natural(const bnb4_qtensor *w, size_t m);
bool pipe_use_wgmma(const bnb4_cuda_state *s, size_t m, const bnb4_qtensor *w) {
    if (!bnb4_cuda_wgmma_code(s))
        return false;
    const size_t min_m = pipe_wgmma_min_m_env();
    const bool nested_mma = w && !w->absmax && !(w->blocksize == 64 && pipe_use_natural(w, m));
    return m >= (min_m >= 1 ? min_m : nested_mma ? 17 : 9);
}

/* wgmma on the activations as they are (kWgNatural*) rather than permuted beforehand (kWgPermuted): on
 * weights of up to 5 x 2^24 (84 M) elements, whose CTAs run fewer steps, so the permutation kernel's cost per
 * call weighs more than the natural order's reads per step (H200: docs/performance.md v26, the quad's byte
 * trade: m = 17..64 up to 20 % faster on 1024x4096 .. 8192x4096, 14336x4096 and larger 0-15 % slower; v35,
 * whole-half reads at m <= 32: 11008x4096 and 4096x11008 m = 24..32 8-10 % faster, 14336x4096, 4096x14336,
 * 8192x8192, 18944x3584, 3584x18944, 13824x5120 and 5120x13824 (59-71 M) 0-6 %; 8192x11008 (90 M) -4..+6 %,
 * 28672x8192 4-15 % slower); on them
 * plain absmax at m = 9..16 also takes wgmma rather than mma.sync (pipe_use_wgmma). BNB4_CUDA_PIPE_NATURAL_MAX=n
 * moves the limit to n elements (for measuring; 0: never). Nested absmax at m = 9..16 takes it on weights of
 * any size: its post-scaled groups (kPostWG) with a row's nested absmax per window beat both the permuted
 * wgmma and mma.sync there (H200, docs/performance.md v46: 28672x8192 2-4 % faster than mma.sync; plain
 * 1-3 % slower, m = 17..32 nested 4-5 % slower), unless the variable is set. Each thread decodes all blocks
 * of a 128-k half (2 at blocksize 64, 4 at 32) with one nested absmax: nested blocksizes of fewer blocks
 * (1, or 2 at blocksize 32) keep the permutation. */
bool pipe_use_natural(const bnb4_qtensor *w, size_t m) {
    static const char *env = getenv("BNB4_CUDA_PIPE_NATURAL_MAX");
    static const size_t max = bnb4_env_size("BNB4_CUDA_PIPE_NATURAL_MAX", (size_t)5 << 24);
    const bool any_size = !w->absmax && m <= 16 && !(env && *env);
    return (any_size || w->rows * w->cols <= max) && (w->absmax || w->nested.blocksize * w->blocksize >= 128);
}

/* The TMA variant: compute capability 9.x (its copies and barriers), not switched off with
 * BNB4_CUDA_PIPE_TMA=0 (for measuring), and the layouts its fixed boxes fit: blocksize 32/64 with plain
 * scales, K % (4 blocksize) == 0 and 16-byte-aligned absmax (scale_vec: rows of whole blocks, 16-byte
 * aligned), or nested codes with K % (4 blocksize) == 0, 4-byte-aligned codes and a power-of-2 nested
 * blocksize (the codes by tensor copies of rows or row groups, or the producer lanes' 4-byte words: pipe_codes_async). */
bool scale_vec_fits(const bnb4_qtensor *w) {
    return w->absmax && w->blocksize <= 64 && w->cols % (4 * w->blocksize) == 0 && bnb4_aligned(w->absmax, 16);
}
bool pipe_use_tma(const bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m) {
    static const bool off = [] {
        const char *e = getenv("BNB4_CUDA_PIPE_TMA");
        return e && *e == '0';
    }();
    if (off || !bnb4_cuda_sm90_code(s) || !pipe_tma_smem_fits(s) || w->rows >= ((size_t)1 << 31) || !encode_tiled() ||
        bnb4_div_up(w->rows * w->cols, w->blocksize) > UINT32_MAX) /* (32-bit block indices: nab_window) */
        return false;
    const size_t bs = w->blocksize, nbs = w->nested.blocksize;
    /* (nested: a nested block's k fit 2^30, nab_window) */
    return w->absmax ? scale_vec_fits(w)
                     : (bs == 32 || bs == 64) && w->cols % (4 * bs) == 0 && bnb4_aligned(w->nested.codes, 4) && nbs &&
                           (nbs & (nbs - 1)) == 0 && nbs * bs <= ((size_t)1 << 30);
}

/* The TMA variant's mma.sync math post-scaled in k quarters (PS): blocksize 64 (a quarter is one block),
 * m <= 16; BNB4_CUDA_PIPE_POSTSCALE=0 switches it off (for measuring). */
bool pipe_use_postscale(const bnb4_qtensor *w, size_t m) {
    static const bool off = [] {
        const char *e = getenv("BNB4_CUDA_PIPE_POSTSCALE");
        return e && *e == '0';
    }();
    return !off && w->blocksize == 64 && m <= 16;
}

/* Narrow tiles (kPsNarrow: 32 rows x 1024-k steps) for the post-scaled math (m <= 16) where the grid's cut
 * of the two tilings favours them (bnb4_grid_prefer_narrow, cuda_grid.h: where 128-row tiles would be
 * shared by CTAs, H200 measurements there). H200 (docs/performance.md v30): 4096x4096 and 4096x14336 6-17 %
 * and 1-10 % faster at m = 1..8, 18-21 % and 3-7 % at m = 9..16; 1024x4096 and 1024x8192 6-19 % at m <= 8,
 * 1024x4096 nested 27 % at m = 9..16. Measured again on 13 model layers (v56): right at m <= 8 but on nested
 * 18944x3584 (4-6 %: its narrow steps end half past K), mixed at m = 16 (-12..+16 %); where both tilings run whole,
 * plain absmax at m <= 8 takes them in a larger share of the steps (v61). BNB4_CUDA_PIPE_NARROW=0 / 1: never /
 * wherever the math allows (read per call: tests). */
bool pipe_use_narrow(const bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m) {
    using Narrow = PipeShape<1, true, 0, kPsNarrow>;
    const size_t tiles = bnb4_div_up(w->rows, Narrow::TileRows), k_steps = bnb4_div_up(w->cols, Narrow::StepK);
    if (!pipe_use_postscale(w, m) || tiles > UINT32_MAX / k_steps) /* (post-scaled: m <= 16) */
        return false;
    const char *e = getenv("BNB4_CUDA_PIPE_NARROW");
    if (e && *e)
        return *e != '0';
    const int mt = m <= 8 ? 8 : 16;
    return bnb4_grid_prefer_narrow(bnb4_div_up(w->rows, kTileRows), bnb4_div_up(w->cols, kStepK),
                                   pipe_steps_per_cta(s, w->rows, w->cols, mt), tiles, k_steps,
                                   pipe_steps_per_cta(s, w->rows, w->cols, mt, true), w->absmax && m <= 8);
}

/* Plain absmax at m = 9..16 on the permuted wgmma path's weights (past pipe_use_natural's limit) whose
 * tiles the grid shares in runs of fewer than 32 steps: the post-scaled mma.sync instead (H200,
 * docs/performance.md v27, bs64: 4096x14336, 8192x8192, 4096x11008, 11008x4096 and 5120x13824, runs of
 * 11-18 steps, 1-7 % faster; whole tiles (14336x4096, 28672x8192) and 8192x28672's runs of 56 steps
 * 0-8 % slower; measured against the permuted wgmma: those now take the natural one, within 1-2 % of this
 * rule's choice at m = 9..16, v35). Not where BNB4_CUDA_PIPE_WGMMA_MIN_M sets the threshold. */
bool pipe_prefer_postscale(const bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m) {
    if (!w->absmax || !pipe_use_postscale(w, m) || pipe_wgmma_min_m_env() != 0) /* (postscale: m <= 16) */
        return false;
    const size_t per = pipe_steps_per_cta(s, w->rows, w->cols, 16); /* (m = 9..16: 16 activation rows) */
    return per % bnb4_div_up(w->cols, kStepK) != 0 && per < 32;
}

/* bnb4_cuda_gemm_pipe for activations of type T (cuda_gemm_pipe.cu: __half; cuda_gemm_pipe_bf16.cu: __nv_bfloat16) */
template <typename T>
bnb4_status gemm_pipe(bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m, const void *x, const void *bias, void *y) {
    PipeArgs a = {};
    bnb4_cuda_set_weight(a, w);
    a.scale_slots = w->blocksize <= (size_t)kStepK ? (int)(kStepK / w->blocksize) + (w->cols % w->blocksize != 0) : 2;
    a.scale_vec = scale_vec_fits(w);
    a.scale_fixed = w->cols % w->blocksize == 0 && w->blocksize <= (size_t)kStepK;
    a.N = w->rows;
    a.K = w->cols;
    a.M = m;
    a.nblocks = bnb4_div_up(w->rows * w->cols, w->blocksize);
    a.x = x;
    a.bias = bias;
    a.y = y;
    const bool nested = w->absmax == NULL;
    const auto launch = [&](const PipeArgs &args, int variant) { return launch_pipe_t<T>(s, args, w, nested, variant); };
    if (!pipe_use_tma(s, w, m)) {
        /* cp.async: m in chunks of the activation rows the device's shared memory holds at once (A100: 16) - each
         * chunk reads the weights again, which at m <= 64 still moves less than dequantize + cuBLAS would */
        const size_t rows = bnb4_cuda_pipe_rows(s), es = sizeof(T);
        for (size_t r0 = 0; r0 < m; r0 += rows) {
            PipeArgs c = a;
            c.M = m - r0 < rows ? m - r0 : rows;
            c.x = static_cast<const char *>(x) + r0 * a.K * es;
            c.y = static_cast<char *>(y) + r0 * a.N * es;
            const bnb4_status st = launch(c, 0);
            if (st != BNB4_OK)
                return st;
        }
        return BNB4_OK;
    }
    int variant = 1; /* (launch_pipe_t's numbers) */
    if (pipe_use_wgmma(s, m, w))
        /* m = 9..16: the post-scaled math on narrow tiles where they apply (H200, docs/performance.md v30, plain:
         * 4096x4096 / 1024x4096 14-21 % and 8192x4096 2-5 % faster than wgmma, on 2048x4096's 128-row tiles
         * 5-6 % slower; v45, nested: 4096x14336 15 %, 4096x4096 23 % faster); not where
         * BNB4_CUDA_PIPE_WGMMA_MIN_M sets the threshold */
        variant = m <= 16 && pipe_wgmma_min_m_env() == 0 && pipe_use_narrow(s, w, m) ? 5
                  : pipe_use_natural(w, m)                                           ? 4
                  : pipe_prefer_postscale(s, w, m)                                   ? 3
                                                                                     : 2;
    else if (pipe_use_postscale(w, m))
        variant = pipe_use_narrow(s, w, m) ? 5 : 3;
    return launch(a, variant);
}

} // namespace

/* cuda_gemm_pipe_bf16.cu: gemm_pipe<__nv_bfloat16>, compiled apart (the two types' kernels build in parallel) */
bnb4_status bnb4_cuda_gemm_pipe_bf16(bnb4_cuda_state *s, const bnb4_qtensor *w, size_t m, const void *x, const void *bias,
                                     void *y);
