/*
 * bench_cuda_common.cuh - what the CUDA benchmarks (bench_cuda, bench_cuda_read) time and compare with
 * in the same way: the error check, the graph timer and the copy-bandwidth ceiling. BNB4_BENCH_NAME (the
 * program's name) prefixes their messages.
 */
#ifndef BNB4_BENCH_CUDA_COMMON_CUH
#define BNB4_BENCH_CUDA_COMMON_CUH

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include <cuda_runtime.h>

#ifndef BNB4_BENCH_NAME
#define BNB4_BENCH_NAME "bench_cuda"
#endif

#define CK(expr)                                                                                              \
    do {                                                                                                      \
        cudaError_t e_ = (expr);                                                                              \
        if (e_ != cudaSuccess) {                                                                              \
            std::fprintf(stderr, BNB4_BENCH_NAME ": %s failed: %s (line %d)\n", #expr, cudaGetErrorString(e_),  \
                         __LINE__);                                                                           \
            std::exit(2);                                                                                     \
        }                                                                                                     \
    } while (0)

namespace bnb4_bench {

/* A plain 16-byte-per-thread copy: on some parts it beats cudaMemcpyAsync, and the ceiling is the better of the two. */
__global__ void copy16(const uint4 *__restrict__ a, uint4 *__restrict__ b, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    for (; i + 3 * stride < n; i += 4 * stride) {
        const uint4 v0 = a[i], v1 = a[i + stride], v2 = a[i + 2 * stride], v3 = a[i + 3 * stride];
        b[i] = v0, b[i + stride] = v1, b[i + 2 * stride] = v2, b[i + 3 * stride] = v3;
    }
    for (; i < n; i += stride)
        b[i] = a[i];
}

struct Timer {
    cudaStream_t s;
    int reps;
    bool graphs = true; /* false: every batch launches its calls one by one, the host's cost included */
    bool warm_up = true; /* false: the graph is captured from the first calls (nothing run before it) */
    /* Median ms per call of f(i) over `reps` batches of `iters` calls, each batch a graph replay. */
    double run(int iters, const std::function<void(int)> &f) { return run_together({{iters, f}})[0]; }

    struct Job {
        int iters;
        std::function<void(int)> f;
    };
    /* The same for several jobs timed together: each of `reps` rounds times one batch of every job, the job
     * that goes first rotating, so all of them are timed over the same stretch of time. Why: under a
     * sustained load the H200 holds its power cap by moving the SM clock (1590-1980 MHz, in swings of about
     * 0.7 s, docs/performance.md v38, v39); timed one after another, a ratio's two sides could meet different
     * clocks (one row 15-35 % apart between processes at 28672x8192 m = 16..64). */
    std::vector<double> run_together(const std::vector<Job> &jobs) {
        const size_t n = jobs.size();
        std::vector<cudaGraph_t> graph(n, nullptr);
        std::vector<cudaGraphExec_t> exec(n, nullptr);
        /* warm-up: module load, handles, pools, counters - every job's before any capture, so the context's
         * buffers have grown to what all the jobs need before the first graph is captured */
        for (size_t j = 0; j < n; j++)
            for (int i = 0; i < (warm_up ? 3 : 0); i++)
                jobs[j].f(i);
        CK(cudaStreamSynchronize(s));
        for (size_t j = 0; j < n; j++) {
            bool graphed = graphs && cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess;
            if (graphed) {
                for (int i = 0; i < jobs[j].iters; i++)
                    jobs[j].f(i);
                graphed = cudaStreamEndCapture(s, &graph[j]) == cudaSuccess &&
                          cudaGraphInstantiate(&exec[j], graph[j], 0) == cudaSuccess;
            }
            const cudaError_t capture_err = cudaGetLastError();
            if (!graphed && graphs) { /* timed all the same, but launch overhead is then part of every call */
                static bool told = false;
                if (!told)
                    std::fprintf(stderr, BNB4_BENCH_NAME ": graph capture failed (%s): timing plain launches\n",
                                 cudaGetErrorString(capture_err));
                told = true;
            }
        }
        const auto batch = [&](size_t j) {
            if (exec[j])
                CK(cudaGraphLaunch(exec[j], s));
            else
                for (int i = 0; i < jobs[j].iters; i++)
                    jobs[j].f(i);
        };
        cudaEvent_t e0, e1;
        CK(cudaEventCreate(&e0));
        CK(cudaEventCreate(&e1));
        /* Settle: replay for 50 ms before timing. The SM clock follows the load of the last few hundred
         * milliseconds; without this the first rows after a heavy phase (the weights' set-up, large-m GEMMs)
         * ran at a lowered clock, 5-15 % slower for the issue-bound small-m kernels (2026-11-28 16:21 run). */
        const auto settle_end = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
        while (std::chrono::steady_clock::now() < settle_end) {
            for (size_t j = 0; j < n; j++)
                batch(j);
            CK(cudaStreamSynchronize(s));
        }
        std::vector<std::vector<float>> t(n);
        for (int r = 0; r < reps; r++)
            for (size_t q = 0; q < n; q++) {
                const size_t j = (r + q) % n;
                CK(cudaEventRecord(e0, s));
                batch(j);
                CK(cudaEventRecord(e1, s));
                CK(cudaEventSynchronize(e1));
                float ms = 0;
                CK(cudaEventElapsedTime(&ms, e0, e1));
                t[j].push_back(ms / jobs[j].iters);
            }
        std::vector<double> median(n);
        for (size_t j = 0; j < n; j++) {
            if (exec[j])
                cudaGraphExecDestroy(exec[j]);
            if (graph[j])
                cudaGraphDestroy(graph[j]);
            std::sort(t[j].begin(), t[j].end());
            median[j] = t[j][t[j].size() / 2];
        }
        cudaEventDestroy(e0);
        cudaEventDestroy(e1);
        return median;
    }
    /* Median host ms per call spent issuing `iters` calls of f(i) one by one (the stream drained between
     * batches, so a full queue never blocks the issuing). */
    double host(int iters, const std::function<void(int)> &f) {
        std::vector<double> t;
        for (int r = 0; r < reps; r++) {
            CK(cudaStreamSynchronize(s));
            const auto t0 = std::chrono::steady_clock::now();
            for (int i = 0; i < iters; i++)
                f(i);
            const auto t1 = std::chrono::steady_clock::now();
            t.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count() / iters);
        }
        CK(cudaStreamSynchronize(s));
        std::sort(t.begin(), t.end());
        return t[t.size() / 2];
    }
};

/* The copy ceiling: bytes read + written per second by cudaMemcpyAsync and by copy16, each copying 1 GiB
 * device to device (ms per copy and GB/s; a benchmark takes the better of the two, the stricter ceiling). */
struct CopyCeiling {
    double memcpy_ms, memcpy_gbs, kernel_ms, kernel_gbs;
    double best_gbs() const { return std::max(memcpy_gbs, kernel_gbs); }
};
inline CopyCeiling measure_copy(Timer &timer, int sm_count) {
    const size_t copy_bytes = (size_t)1 << 30;
    void *ca, *cb;
    CK(cudaMalloc(&ca, copy_bytes));
    CK(cudaMalloc(&cb, copy_bytes));
    CK(cudaMemset(ca, 1, copy_bytes));
    CopyCeiling c;
    c.memcpy_ms = timer.run(10, [&](int) { cudaMemcpyAsync(cb, ca, copy_bytes, cudaMemcpyDeviceToDevice, timer.s); });
    c.memcpy_gbs = 2.0 * copy_bytes / (c.memcpy_ms * 1e-3) / 1e9;
    c.kernel_ms = timer.run(10, [&](int) {
        copy16<<<sm_count * 8, 256, 0, timer.s>>>((const uint4 *)ca, (uint4 *)cb, copy_bytes / 16);
    });
    c.kernel_gbs = 2.0 * copy_bytes / (c.kernel_ms * 1e-3) / 1e9;
    CK(cudaFree(ca));
    CK(cudaFree(cb));
    return c;
}

} // namespace bnb4_bench

#endif /* BNB4_BENCH_CUDA_COMMON_CUH */
