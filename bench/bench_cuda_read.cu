/*
 * bench_cuda_read.cu - the read floor of the small-m kernels: how fast one GPU reads a 4-bit weight
 * matrix (packed bytes + float32 absmax, NF4 blocksize 64) in the access pattern of the pipe kernel
 * (src/cuda/cuda_gemm_pipe.cuh), with nothing done with the data. It tells the kernels' own cost apart
 * from what the memory system allows at a shape (launch, pipeline fill, tail included), which the copy
 * ceiling alone cannot: a 30 MB read is not a 1 GiB copy.
 *
 * Rows, per N x K (the benchmark's four shapes, or --shape NxK): a linear 16-byte-per-thread read of the
 * packed bytes; a persistent grid of one CTA per SM whose one warp streams, by tensor copies with six
 * stages in flight, the pipe kernel's boxes in stream-K order (128 rows x 128 packed bytes, and the rows'
 * 16 bytes of absmax, per step), with programmatic dependent launch, with and without 256-byte L2
 * promotion; and the pipe kernel's own pipeline at m = 1 without its math (read_pipe_skeleton): its grid
 * (whole tiles or equal parts where they cost little, cuda_grid.h), its producer warp with the first 2
 * stages' weights copied before griddepcontrol.wait and 3 stages in flight, the four activation boxes per
 * step, and 16 consumer warps that wait for each stage and release it, in its 200 KB of shared memory -
 * the floor the kernel's decode, math and tile end add to (docs/performance.md v24). --sweep adds the
 * one-warp read at 2, 3, 4, 6 and 8 stages in flight on both grids, with and without the activation
 * boxes (v20), with the first stages copied before the wait at one and at two CTAs per SM (whether the
 * next call's CTAs, resident beside this call's, would hide the boundary: v24), and the skeleton at
 * other windows and in half the shared memory (two CTAs per SM); --wide the pipeline at m = 32 and 64 (the wgmma
 * kernel's stages and activations, docs/performance.md v54), with a stage more and on stream-K's grid. The ratio is
 * bytes read over the copy ceiling measured in the same run, as in bench_cuda's m = 1 rows; timer and
 * ceiling are bench_cuda's (bench_cuda_common.cuh): CUDA graphs of back-to-back calls, replayed 50 ms
 * before 7 timed batches (median), weights rotated among copies spanning 3x L2. Needs compute
 * capability 9.0 (tensor copies). The tensor maps, copies, barriers and launches are the kernels' own
 * (cuda_sm90.cuh), so the floor is read the way the pipe kernel reads.
 */
#include <cstring>

#define BNB4_BENCH_NAME "bench_cuda_read"
#include "bench_cuda_common.cuh"
#include "cuda_grid.h"
#include "cuda_sm90.cuh"

namespace {

using namespace bnb4_bench;

constexpr int kMaxStages = 8, kTileRows = 128, kRowBytes = 128, kScaleBytes = 16; /* the pipe kernel's m = 1 step */
constexpr int kXBoxBytes = 8 * 128;       /* an activation box: 8 rows (m = 1: one real, seven zero-filled) x 64 k */
constexpr int kWeightBoxBytes = kTileRows * (kRowBytes + kScaleBytes); /* a step's packed bytes and absmax */
constexpr int kStageBytes = kWeightBoxBytes + 4 * kXBoxBytes;           /* a multiple of 1024 */
static_assert(kStageBytes % 1024 == 0, "stages keep the swizzle's 1024-byte alignment");
/* the pipe kernel's m = 1 pipeline: 16 consumer warps and a producer warp, 6 stages (its count at m = 1) */
constexpr int kSkeletonConsumers = 16, kSkeletonThreads = (kSkeletonConsumers + 1) * 32, kSkeletonStages = 6;

/* Every 16-byte word read once; a folded value kept so the loads are not dropped. */
__global__ void read16(const uint4 *__restrict__ p, size_t n, unsigned *sink) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned acc = 0;
    for (; i + 3 * stride < n; i += 4 * stride) { /* four loads in flight per thread */
        const uint4 a = __ldg(p + i), b = __ldg(p + i + stride), c = __ldg(p + i + 2 * stride),
                    d = __ldg(p + i + 3 * stride);
        acc ^= a.x ^ b.y ^ c.z ^ d.w;
    }
    for (; i < n; i += stride)
        acc ^= __ldg(p + i).x;
    if (acc == 0x9e3779b9u) /* practically never: a store the compiler cannot remove */
        *sink = acc;
}

#if BNB4_HAS_TMA
/* Step `it`'s weight box and absmax box into the stage at dst, on its barrier, after announcing `bytes`
 * (the activation boxes' included where they follow: copy_step_x) */
__device__ __forceinline__ void copy_step_weights(const CUtensorMap *w_map, const CUtensorMap *s_map, uint32_t dst,
                                                  uint32_t bar, unsigned it, unsigned k_steps, unsigned bytes) {
    const unsigned tile = it / k_steps, step = it - tile * k_steps;
    const int y = (int)(tile * kTileRows);
    mbar_arrive_tx(bar, bytes);
    tma_load_2d(dst, w_map, (int)(step * kRowBytes), y, bar);
    tma_load_2d(dst + kTileRows * kRowBytes, s_map, (int)(step * (kScaleBytes / 4)), y, bar);
}
/* step `it`'s four activation boxes (64 k each, 8 rows: m = 1 and seven zero-filled; the skeleton at m = 16:
 * 16 rows, box_bytes 2048) */
__device__ __forceinline__ void copy_step_x(const CUtensorMap *x_map, uint32_t dst, uint32_t bar, unsigned it,
                                            unsigned k_steps, unsigned box_bytes = kXBoxBytes) {
    const unsigned k0 = (it % k_steps) * 256;
    for (int q = 0; q < 4; q++)
        tma_load_2d(dst + kWeightBoxBytes + q * box_bytes, x_map, (int)(k0 + 64 * q), 0, bar);
}
#endif

/* One warp per CTA: lane 0 keeps `depth` steps in flight (tensor copies of the weight box, the absmax
 * box and, with `xboxes`, the pipe kernel's four activation boxes, on one mbarrier per stage); the warp
 * waits for each step, touches one word of it, and refills it. Since the pipe kernel's consumer warps
 * are not what bounds it at m = 1 (docs/performance.md v20), its producer's window (BNB4_CUDA_PIPE_INFLIGHT)
 * is this depth. */
__global__ void __launch_bounds__(32, 1)
    read_pipe_boxes(const __grid_constant__ CUtensorMap w_map, const __grid_constant__ CUtensorMap s_map,
                    const __grid_constant__ CUtensorMap x_map, unsigned k_steps, unsigned iters, unsigned per_cta,
                    int depth, int xboxes, int early, unsigned *sink) {
#if BNB4_HAS_TMA
    /* the stages start 1024-byte aligned (the 128-byte swizzle's period) as in the kernels: the
     * declaration's alignment places the dynamic shared memory so (no fix computed at run time) */
    extern __shared__ __align__(1024) unsigned char smem[];
    __shared__ __align__(8) uint64_t bars[kMaxStages];
    const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem);
    const unsigned char *stages = smem;
    const uint32_t bar0 = (uint32_t)__cvta_generic_to_shared(bars);
    const int lane = threadIdx.x;
    if (!early)
        pdl_launch_dependents();
    if (lane == 0) {
        for (int i = 0; i < depth; i++)
            mbar_init(bar0 + 8 * i, 1);
        mbar_init_fence();
    }
    __syncwarp();
    const unsigned begin = blockIdx.x * per_cta, end = min(iters, begin + per_cta);
    auto issue_weights = [&](unsigned it, int slot) {
        copy_step_weights(&w_map, &s_map, base + slot * kStageBytes, bar0 + 8 * slot, it, k_steps,
                          kWeightBoxBytes + (xboxes ? 4 * kXBoxBytes : 0));
    };
    auto issue_x = [&](unsigned it, int slot) {
        if (xboxes)
            copy_step_x(&x_map, base + slot * kStageBytes, bar0 + 8 * slot, it, k_steps);
    };
    auto issue = [&](unsigned it, int slot) {
        issue_weights(it, slot);
        issue_x(it, slot);
    };
    /* early: the first stages' weights before the wait (as the pipe kernel's early stages), the next
     * kernel let in only after it - with room for two CTAs per SM it is resident while this one runs */
    if (early && lane == 0)
        for (int i = 0; i < depth && begin + i < end; i++)
            issue_weights(begin + i, i);
    pdl_wait();
    if (early) {
        pdl_launch_dependents();
        if (lane == 0)
            for (int i = 0; i < depth && begin + i < end; i++)
                issue_x(begin + i, i);
    }
    if (!early && lane == 0)
        for (int i = 0; i < depth && begin + i < end; i++)
            issue(begin + i, i);
    unsigned acc = 0, phase = 0;
    int slot = 0;
    for (unsigned it = begin; it < end; it++) {
        mbar_wait(bar0 + 8 * slot, phase);
        acc ^= reinterpret_cast<const unsigned *>(stages + slot * kStageBytes)[lane];
        __syncwarp(); /* every lane has read the slot before it is refilled */
        if (lane == 0 && it + depth < end)
            issue(it + depth, slot);
        if (++slot == depth) {
            slot = 0;
            phase ^= 1u;
        }
    }
    if (acc == 0x9e3779b9u)
        *sink = acc;
#else
    __trap(); /* launched only on compute capability 9.0+ (main checks) */
#endif
}

/* The pipe kernel's pipeline without its math (read_pipe_skeleton): a producer warp whose one lane issues
 * the copies (the first `early` stages' weights before the wait, at most `window` stages in flight, 0: no
 * limit) and 16 consumer warps that wait for each stage's full barrier, touch a word and release the stage
 * on its empty barrier, then meet at a named barrier (the tile end) - as the pipe kernel's TMA variant
 * runs at m = 1 (x_rows 8: the activation boxes' rows, one real) or m = 16 (x_rows 16, all read). Its time
 * less the one-warp read's is the cost of the pipeline's own structure at a call's boundary; the kernel's
 * time less its time is the decode, the math and the tile end. */
__global__ void __launch_bounds__(kSkeletonThreads, 1)
    read_pipe_skeleton(const __grid_constant__ CUtensorMap w_map, const __grid_constant__ CUtensorMap s_map,
                       const __grid_constant__ CUtensorMap x_map, unsigned k_steps, unsigned iters, unsigned per_cta,
                       int stages, int early, int window, int x_rows, unsigned *sink) {
#if BNB4_HAS_TMA
    extern __shared__ __align__(1024) unsigned char smem[];
    __shared__ __align__(8) uint64_t bars[2 * kMaxStages];
    const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem);
    const uint32_t full0 = (uint32_t)__cvta_generic_to_shared(bars), empty0 = full0 + 8 * kMaxStages;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0) {
        for (int i = 0; i < stages; i++) {
            mbar_init(full0 + 8 * i, 1);
            mbar_init(empty0 + 8 * i, kSkeletonConsumers);
        }
        mbar_init_fence();
    }
    __syncthreads();
    const unsigned begin = blockIdx.x * per_cta, end = min(iters, begin + per_cta);
    const unsigned box_bytes = x_rows * 128, stage_bytes = kWeightBoxBytes + 4 * box_bytes;
    if (warp == kSkeletonConsumers) {
        if (lane != 0)
            return;
        auto weights = [&](unsigned it, int slot) {
            copy_step_weights(&w_map, &s_map, base + slot * stage_bytes, full0 + 8 * slot, it, k_steps, stage_bytes);
        };
        for (int i = 0; i < early && begin + i < end; i++)
            weights(begin + i, i);
        pdl_wait();
        pdl_launch_dependents();
        int slot = 0, lag = 0;
        uint32_t phase = 0, lag_phase = 0;
        for (unsigned it = begin; it < end; it++) {
            mbar_wait(empty0 + 8 * slot, phase ^ 1u);
            if (window && it - begin >= (unsigned)window) {
                mbar_wait(full0 + 8 * lag, lag_phase);
                if (++lag == stages) {
                    lag = 0;
                    lag_phase ^= 1u;
                }
            }
            if (it - begin >= (unsigned)early)
                weights(it, slot);
            copy_step_x(&x_map, base + slot * stage_bytes, full0 + 8 * slot, it, k_steps, box_bytes);
            if (++slot == stages) {
                slot = 0;
                phase ^= 1u;
            }
        }
        return;
    }
    pdl_wait();
    unsigned acc = 0, phase = 0;
    int slot = 0;
    for (unsigned it = begin; it < end; it++) {
        mbar_wait(full0 + 8 * slot, phase);
        acc ^= reinterpret_cast<const unsigned *>(smem + slot * stage_bytes)[tid];
        mbar_arrive_elected(empty0 + 8 * slot);
        if (++slot == stages) {
            slot = 0;
            phase ^= 1u;
        }
    }
    consumer_sync<kSkeletonConsumers * 32>();
    if (acc == 0x9e3779b9u)
        *sink = acc;
#else
    __trap();
#endif
}

/* a box of kTileRows rows (encode_2d: the kernels' encoder) */
void encode(CUtensorMap *map, CUtensorMapDataType type, void *base, size_t cols, size_t rows, size_t stride,
            unsigned box_cols, CUtensorMapSwizzle swizzle, bool promote) {
    if (!encode_2d(map, base, type, cols, rows, stride, box_cols, kTileRows, swizzle, promote)) {
        std::fprintf(stderr, "bench_cuda_read: tensor map encoding failed\n");
        std::exit(2);
    }
}

} // namespace

int main(int argc, char **argv) {
    std::vector<std::pair<size_t, size_t>> shapes = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {28672, 8192}};
    bool sweep = false, wide = false;
    for (int i = 1; i < argc; i++) {
        unsigned long n = 0, k = 0;
        if (!std::strcmp(argv[i], "--shape") && i + 1 < argc && std::sscanf(argv[i + 1], "%lux%lu", &n, &k) == 2 &&
            n % kTileRows == 0 && k % 256 == 0 && n > 0 && k > 0) {
            shapes = {{n, k}};
            i++;
        } else if (!std::strcmp(argv[i], "--sweep")) {
            sweep = true;
        } else if (!std::strcmp(argv[i], "--wide")) {
            wide = true;
        } else {
            std::fprintf(stderr, "usage: %s [--shape NxK] [--sweep] [--wide]  (N a multiple of 128, K of 256)\n", argv[0]);
            return 2;
        }
    }
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) { /* as bench_cuda */
        std::printf("bench_cuda_read: no CUDA device, nothing to measure\n");
        return 0;
    }
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    if (prop.major < 9) {
        std::printf("bench_cuda_read: %s is compute capability %d.%d; the tensor-copy rows need 9.0: skipped\n",
                    prop.name, prop.major, prop.minor);
        return 0;
    }
    if (!encode_tiled()) {
        std::fprintf(stderr, "bench_cuda_read: the driver has no cuTensorMapEncodeTiled\n");
        return 2;
    }
    const int sms = prop.multiProcessorCount;
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    unsigned *sink;
    CK(cudaMalloc(&sink, sizeof(unsigned)));

    Timer timer{s, 7};
    const double copy_gbs = measure_copy(timer, sms).best_gbs();
    /* us per call, as the timer's median ms */
    const auto time_us = [&](int iters, const std::function<void(int)> &f) { return 1e3 * timer.run(iters, f); };
    std::printf("%s, %d SMs, %d MB L2\nceiling: device-to-device copy of 1 GiB (read+write), the better of\n"
                "cudaMemcpyAsync and a copy kernel: %.1f GB/s\n\n",
                prop.name, sms, prop.l2CacheSize >> 20, copy_gbs);
    std::printf("%-12s %-44s %9s %9s %8s\n", "N x K", "read", "us", "GB/s", "/copy");

    /* (150 KB: the one-warp read padded to one CTA per SM; 200 KB: the pipe kernel's shared memory) */
    CK(cudaFuncSetAttribute(read_pipe_boxes, cudaFuncAttributeMaxDynamicSharedMemorySize,
                            std::max(kMaxStages * kStageBytes, 150 * 1024)));
    CK(cudaFuncSetAttribute(read_pipe_skeleton, cudaFuncAttributeMaxDynamicSharedMemorySize, 226 * 1024));
    for (const auto &sh : shapes) {
        const size_t N = sh.first, K = sh.second, packed = N * K / 2, absmax = N * (K / 64) * 4;
        const size_t copies = std::max<size_t>(2, (3 * (size_t)prop.l2CacheSize + packed + absmax - 1) / (packed + absmax));
        std::vector<void *> pk(copies), am(copies);
        for (size_t c = 0; c < copies; c++) {
            CK(cudaMalloc(&pk[c], packed));
            CK(cudaMalloc(&am[c], absmax));
            CK(cudaMemset(pk[c], 0x5a, packed));
            CK(cudaMemset(am[c], 0, absmax));
        }
        /* the activations, read by every CTA as the pipe kernel reads them: one row (m = 1) in boxes of 8, or
         * 16 rows (the skeleton at m = 16) in boxes of 16 */
        void *xv;
        CK(cudaMalloc(&xv, 64 * K * 2));
        CK(cudaMemset(xv, 0, 64 * K * 2));
        CUtensorMap xm, xm16, xm32, xm64;
        if (!encode_2d(&xm, xv, CU_TENSOR_MAP_DATA_TYPE_UINT16, K, 1, K * 2, 64, 8, CU_TENSOR_MAP_SWIZZLE_128B,
                       false) ||
            !encode_2d(&xm16, xv, CU_TENSOR_MAP_DATA_TYPE_UINT16, K, 16, K * 2, 64, 16, CU_TENSOR_MAP_SWIZZLE_128B,
                       false) ||
            !encode_2d(&xm32, xv, CU_TENSOR_MAP_DATA_TYPE_UINT16, K, 32, K * 2, 64, 32, CU_TENSOR_MAP_SWIZZLE_128B,
                       false) ||
            !encode_2d(&xm64, xv, CU_TENSOR_MAP_DATA_TYPE_UINT16, K, 64, K * 2, 64, 64, CU_TENSOR_MAP_SWIZZLE_128B,
                       false)) {
            std::fprintf(stderr, "bench_cuda_read: tensor map encoding failed\n");
            return 2;
        }
        auto row = [&](const char *what, double us, double bytes) {
            const double gbs = bytes / us * 1e-3;
            std::printf("%5zux%-6zu %-44s %9.2f %9.1f %8.3f\n", N, K, what, us, gbs, gbs / copy_gbs);
        };
        row("linear 16 B/thread, packed bytes only", time_us(20, [&](int i) {
                read16<<<sms * 8, 512, 0, s>>>(static_cast<const uint4 *>(pk[i % copies]), packed / 16, sink);
            }), (double)packed);
        const unsigned k_steps = (unsigned)(K / 256), tiles = (unsigned)(N / kTileRows), iters = tiles * k_steps;
        /* per CTA: stream-K over every SM, or the runs the pipe kernel takes at m = 1 (cuda_grid.h) */
        const unsigned per_sk = (iters + sms - 1) / sms;
        const unsigned per_kernel = (unsigned)bnb4_grid_steps_per_cta(tiles, k_steps, (size_t)sms, 8, BNB4_GRID_PIPE_SK_STEPS);
        const unsigned per_kernel64 = (unsigned)bnb4_grid_steps_per_cta(tiles, k_steps, (size_t)sms, 4, BNB4_GRID_PIPE_SK_STEPS); /* m > 32 */
        for (int promote = 0; promote < 2; promote++) {
            std::vector<CUtensorMap> wm(copies), smap(copies);
            for (size_t c = 0; c < copies; c++) {
                encode(&wm[c], CU_TENSOR_MAP_DATA_TYPE_UINT8, pk[c], K / 2, N, K / 2, kRowBytes,
                       CU_TENSOR_MAP_SWIZZLE_128B, promote);
                encode(&smap[c], CU_TENSOR_MAP_DATA_TYPE_FLOAT32, am[c], K / 64, N, K / 64 * 4, kScaleBytes / 4,
                       CU_TENSOR_MAP_SWIZZLE_NONE, promote);
            }
            /* the one-warp read: `depth` stages in flight, with the activation boxes (xboxes), the first
             * stages' weights before the wait (early), in at least `smem` bytes of shared memory (150 KB: one
             * CTA per SM) */
            auto run = [&](unsigned per, int depth, int xboxes, int early = 0, int smem = 0) {
                return time_us(20, [&](int i) {
                    cudaLaunchConfig_t cfg = {};
                    cfg.gridDim = dim3((iters + per - 1) / per);
                    cfg.blockDim = dim3(32);
                    cfg.dynamicSmemBytes = std::max(smem, depth * kStageBytes);
                    cfg.stream = s;
                    CK(bnb4_launch_ex(cfg, true, read_pipe_boxes, wm[i % copies], smap[i % copies], xm, k_steps, iters,
                                      per, depth, xboxes, early, sink));
                });
            };
            /* the pipe kernel's pipeline without its math, on the kernel's grid (m = 1, 16, 32 or 64: 8 activation
             * rows a box at m = 1, m at the others) or stream-K over every SM (per), in smem_kb of shared memory
             * (stages: as many as fit, at most kSkeletonStages, or max_stages) */
            auto skeleton = [&](int smem_kb, int early, int window, int m = 1, unsigned per = 0, int max_stages = 0) {
                const int x_rows = m == 1 ? 8 : m;
                const int stages = std::min(max_stages ? max_stages : kSkeletonStages,
                                            smem_kb * 1024 / (kWeightBoxBytes + 4 * x_rows * 128));
                if (!per)
                    per = m <= 32 ? per_kernel : per_kernel64;
                return time_us(20, [&](int i) {
                    cudaLaunchConfig_t cfg = {};
                    cfg.gridDim = dim3((iters + per - 1) / per);
                    cfg.blockDim = dim3(kSkeletonThreads);
                    cfg.dynamicSmemBytes = smem_kb * 1024;
                    cfg.stream = s;
                    CK(bnb4_launch_ex(cfg, true, read_pipe_skeleton, wm[i % copies], smap[i % copies],
                                      m == 1 ? xm : m == 16 ? xm16 : m == 32 ? xm32 : xm64, k_steps, iters, per,
                                      stages, early, window, x_rows, sink));
                });
            };
            row(promote ? "pipe boxes (weights + absmax), 256 B L2 lines" : "pipe boxes (weights + absmax), no promotion",
                run(per_sk, 6, 0), (double)(packed + absmax));
            if (promote)
                continue;
            /* the pipe kernel at m = 1 (its grid, early stages, window, warps and shared memory), no math */
            row("pipe kernel's pipeline at m = 1, no math", skeleton(200, 2, 3), (double)(packed + absmax));
            /* at m = 16: 16 activation rows a step, 8 KB (as the kernel's wgmma variant; mma.sync's early 2) */
            row("pipe kernel's pipeline at m = 16, no math", skeleton(200, 1, 3, 16), (double)(packed + absmax));
            if (wide) {
                /* the wgmma kernel at m = 32 / 64: its stages beside the 65 KB table (4 / 3 of 36 / 52 KB), all in
                 * flight, one early; then more stages (no table: 227 KB), stream-K over every SM, no activations */
                for (int m : {32, 64}) {
                    const int kernel_stages = m == 32 ? 4 : 3;
                    char what[80];
                    std::snprintf(what, sizeof what, "pipeline at m = %d, no math, %d stages", m, kernel_stages);
                    row(what, skeleton(226, 1, 0, m, 0, kernel_stages), (double)(packed + absmax));
                    std::snprintf(what, sizeof what, "  m = %d, %d stages", m, kernel_stages + 1);
                    row(what, skeleton(226, 1, 0, m, 0, kernel_stages + 1), (double)(packed + absmax));
                    std::snprintf(what, sizeof what, "  m = %d, %d stages, stream-K on %d", m, kernel_stages, sms);
                    row(what, skeleton(226, 1, 0, m, per_sk, kernel_stages), (double)(packed + absmax));
                    std::snprintf(what, sizeof what, "  m = %d, %d stages, stream-K, %d stages", m, kernel_stages + 1,
                                  kernel_stages + 1);
                    row(what, skeleton(226, 1, 0, m, per_sk, kernel_stages + 1), (double)(packed + absmax));
                }
                row("  m = 64's grid, 3 stages, m = 1's activations", skeleton(226, 1, 0, 1, per_kernel64, 3),
                    (double)(packed + absmax));
            }
            if (!sweep)
                continue;
            for (int grid = 0; grid < 2; grid++)
                for (int depth : {2, 3, 4, 6, 8})
                    for (int xboxes = 0; xboxes < 2; xboxes++) {
                        char what[64];
                        std::snprintf(what, sizeof what, "  %s, %d in flight%s", grid ? "kernel's grid" : "stream-K",
                                      depth, xboxes ? ", x" : "");
                        row(what, run(grid ? per_kernel : per_sk, depth, xboxes), (double)(packed + absmax));
                    }
            for (int grid = 0; grid < 2; grid++)
                for (int depth : {2, 3, 4, 6})
                    for (int two = 0; two < 2; two++) {
                        if (two && depth * kStageBytes > 100 * 1024) /* (two CTAs per SM: 100 KB each at most) */
                            continue;
                        char what[80];
                        std::snprintf(what, sizeof what, "  %s, %d in flight, x, early, %d CTA/SM",
                                      grid ? "kernel's grid" : "stream-K", depth, two ? 2 : 1);
                        row(what, run(grid ? per_kernel : per_sk, depth, 1, 1, two ? 0 : 150 * 1024),
                            (double)(packed + absmax));
                    }
            const int windows[][2] = {{3, 3}, {4, 4}, {4, 0}}; /* early, window (0: none) */
            for (int smem_kb : {200, 110})
                for (const auto &w : windows) {
                    char what[80];
                    std::snprintf(what, sizeof what, "  pipeline, no math, %d KB, early %d, window %d", smem_kb, w[0],
                                  w[1]);
                    row(what, skeleton(smem_kb, w[0], w[1]), (double)(packed + absmax));
                }
        }
        CK(cudaFree(xv));
        for (size_t c = 0; c < copies; c++) {
            CK(cudaFree(pk[c]));
            CK(cudaFree(am[c]));
        }
    }
    return 0;
}
