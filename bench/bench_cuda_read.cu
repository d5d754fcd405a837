/*
 * bench_cuda_read.cu - the read floor of the small-m kernels: how fast one GPU reads a 4-bit weight
 * matrix (packed bytes + float32 absmax, NF4 blocksize 64) in the access pattern of the pipe kernel
 * (src/cuda/cuda_gemm_pipe.cu), with nothing done with the data. It tells the kernels' own cost apart
 * from what the memory system allows at a shape (launch, pipeline fill, tail included), which the copy
 * ceiling alone cannot: a 30 MB read is not a 1 GiB copy.
 *
 * Rows, per N x K (the benchmark's four shapes, or --shape NxK): a linear 16-byte-per-thread read of the
 * packed bytes; a persistent grid of one CTA per SM whose one warp streams, by tensor copies with six
 * stages in flight, the pipe kernel's boxes in stream-K order (128 rows x 128 packed bytes, and the rows'
 * 16 bytes of absmax, per step), with programmatic dependent launch, with and without 256-byte L2
 * promotion; and the same read as the pipe kernel does it at m = 1: its grid (whole tiles or equal parts
 * where they cost little, cuda_grid.h), its producer's 3 stages in flight, and its four activation boxes
 * per step. --sweep adds both grids at 2, 3, 4, 6 and 8 stages in flight, with and without the
 * activation boxes (docs/performance.md v20: what m = 1 loses to the pipeline's configuration). The ratio is
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

/* One warp per CTA: lane 0 keeps `depth` steps in flight (tensor copies of the weight box, the absmax
 * box and, with `xboxes`, the pipe kernel's four activation boxes, on one mbarrier per stage); the warp
 * waits for each step, touches one word of it, and refills it. Since the pipe kernel's consumer warps
 * are not what bounds it at m = 1 (docs/performance.md v20), its producer's window (BNB4_CUDA_PIPE_INFLIGHT)
 * is this depth. */
__global__ void __launch_bounds__(32, 1)
    read_pipe_boxes(const __grid_constant__ CUtensorMap w_map, const __grid_constant__ CUtensorMap s_map,
                    const __grid_constant__ CUtensorMap x_map, unsigned k_steps, unsigned iters, unsigned per_cta,
                    int depth, int xboxes, unsigned *sink) {
#if BNB4_HAS_TMA
    /* the stages start 1024-byte aligned (the 128-byte swizzle's period) as in the kernels: the
     * declaration's alignment places the dynamic shared memory so (no fix computed at run time) */
    extern __shared__ __align__(1024) unsigned char smem[];
    __shared__ __align__(8) uint64_t bars[kMaxStages];
    const uint32_t base = (uint32_t)__cvta_generic_to_shared(smem);
    const unsigned char *stages = smem;
    const uint32_t bar0 = (uint32_t)__cvta_generic_to_shared(bars);
    const int lane = threadIdx.x;
    pdl_launch_dependents();
    if (lane == 0) {
        for (int i = 0; i < depth; i++)
            mbar_init(bar0 + 8 * i, 1);
        mbar_init_fence();
    }
    __syncwarp();
    pdl_wait();
    const unsigned begin = blockIdx.x * per_cta, end = min(iters, begin + per_cta);
    auto issue = [&](unsigned it, int slot) {
        const unsigned tile = it / k_steps, step = it - tile * k_steps;
        const uint32_t dst = base + slot * kStageBytes, bar = bar0 + 8 * slot;
        const int x = (int)(step * kRowBytes), s = (int)(step * (kScaleBytes / 4)), y = (int)(tile * kTileRows);
        mbar_arrive_tx(bar, kWeightBoxBytes + (xboxes ? 4 * kXBoxBytes : 0));
        tma_load_2d(dst, &w_map, x, y, bar);
        tma_load_2d(dst + kTileRows * kRowBytes, &s_map, s, y, bar);
        if (xboxes)
            for (int q = 0; q < 4; q++)
                tma_load_2d(dst + kWeightBoxBytes + q * kXBoxBytes, &x_map, 2 * x + 64 * q, 0, bar);
    };
    if (lane == 0)
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
    bool sweep = false;
    for (int i = 1; i < argc; i++) {
        unsigned long n = 0, k = 0;
        if (!std::strcmp(argv[i], "--shape") && i + 1 < argc && std::sscanf(argv[i + 1], "%lux%lu", &n, &k) == 2 &&
            n % kTileRows == 0 && k % 256 == 0 && n > 0 && k > 0) {
            shapes = {{n, k}};
            i++;
        } else if (!std::strcmp(argv[i], "--sweep")) {
            sweep = true;
        } else {
            std::fprintf(stderr, "usage: %s [--shape NxK] [--sweep]  (N a multiple of 128, K of 256)\n", argv[0]);
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

    CK(cudaFuncSetAttribute(read_pipe_boxes, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxStages * kStageBytes));
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
        void *xv; /* one activation row (m = 1), read by every CTA as the pipe kernel reads it */
        CK(cudaMalloc(&xv, K * 2));
        CK(cudaMemset(xv, 0, K * 2));
        CUtensorMap xm;
        if (!encode_2d(&xm, xv, CU_TENSOR_MAP_DATA_TYPE_UINT16, K, 1, K * 2, 64, 8, CU_TENSOR_MAP_SWIZZLE_128B, false)) {
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
        /* per CTA: stream-K over every SM, or the runs the pipe kernel takes (cuda_grid.h) */
        const unsigned per_sk = (iters + sms - 1) / sms;
        const unsigned per_kernel = (unsigned)bnb4_grid_steps_per_cta(tiles, k_steps, (size_t)sms);
        for (int promote = 0; promote < 2; promote++) {
            std::vector<CUtensorMap> wm(copies), smap(copies);
            for (size_t c = 0; c < copies; c++) {
                encode(&wm[c], CU_TENSOR_MAP_DATA_TYPE_UINT8, pk[c], K / 2, N, K / 2, kRowBytes,
                       CU_TENSOR_MAP_SWIZZLE_128B, promote);
                encode(&smap[c], CU_TENSOR_MAP_DATA_TYPE_FLOAT32, am[c], K / 64, N, K / 64 * 4, kScaleBytes / 4,
                       CU_TENSOR_MAP_SWIZZLE_NONE, promote);
            }
            auto run = [&](unsigned per, int depth, int xboxes) {
                return time_us(20, [&](int i) {
                    cudaLaunchConfig_t cfg = {};
                    cfg.gridDim = dim3((iters + per - 1) / per);
                    cfg.blockDim = dim3(32);
                    cfg.dynamicSmemBytes = depth * kStageBytes;
                    cfg.stream = s;
                    CK(bnb4_launch_ex(cfg, true, read_pipe_boxes, wm[i % copies], smap[i % copies], xm, k_steps, iters,
                                      per, depth, xboxes, sink));
                });
            };
            row(promote ? "pipe boxes (weights + absmax), 256 B L2 lines" : "pipe boxes (weights + absmax), no promotion",
                run(per_sk, 6, 0), (double)(packed + absmax));
            if (promote)
                continue;
            /* the pipe kernel's m = 1 configuration: its grid, its producer's window, the activation boxes */
            row("as the pipe kernel at m = 1: 3 in flight, x", run(per_kernel, 3, 1), (double)(packed + absmax));
            if (sweep)
                for (int grid = 0; grid < 2; grid++)
                    for (int depth : {2, 3, 4, 6, 8})
                        for (int xboxes = 0; xboxes < 2; xboxes++) {
                            char what[64];
                            std::snprintf(what, sizeof what, "  %s, %d in flight%s", grid ? "kernel's grid" : "stream-K",
                                          depth, xboxes ? ", x" : "");
                            row(what, run(grid ? per_kernel : per_sk, depth, xboxes), (double)(packed + absmax));
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
