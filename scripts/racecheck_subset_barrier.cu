// racecheck_subset_barrier.cu - a correct kernel that compute-sanitizer's racecheck reports as racing (CUDA 13.0,
// H200), kept because the tile kernel's k split had the same pattern (docs/performance.md v29).
//
// Two groups of 8 warps hand sums over through shared memory between two named barriers of all 512 threads
// (the odd group writes, the even group reads). With only that, racecheck is clean. When the even group also
// synchronizes alone between hand-overs (named barrier 1, its 256 threads, around a flag in shared memory),
// racecheck reports the hand-over buffer's accesses as hazards, though every access is ordered by barrier 2.
//
//   nvcc -O3 --generate-code=arch=compute_90a,code=sm_90a -o /tmp/repro scripts/racecheck_subset_barrier.cu
//   compute-sanitizer --tool racecheck /tmp/repro 0    # hand-overs only: 0 hazards
//   compute-sanitizer --tool racecheck /tmp/repro 1    # and the even group's own barrier: hazards reported
#include <cstdio>
#include <cstdlib>

template <int kId, int kThreads> __device__ __forceinline__ void bar_sync() {
    asm volatile("bar.sync %0, %1;" ::"n"(kId), "n"(kThreads) : "memory");
}

template <bool kEvenGroupBarrier> __global__ void __launch_bounds__(640, 1) hand_over(float *out, int rounds) {
    __shared__ float buffer[8 * 256];
    __shared__ int flag;
    const int tid = threadIdx.x, warp = tid / 32;
    if (warp >= 16) // 4 more warps that leave (the tile kernel's producer warpgroup)
        return;
    const int group = warp / 8, gtid = tid - group * 256;
    float acc[16];
    for (int i = 0; i < 16; i++)
        acc[i] = (float)(tid + i);
    for (int r = 0; r < rounds; r++) {
        for (int half = 0; half < 2; half++) {
            if (group == 1)
                for (int i = 0; i < 8; i++)
                    buffer[i * 256 + gtid] = acc[half * 8 + i];
            bar_sync<2, 512>();
            if (group == 0)
                for (int i = 0; i < 8; i++)
                    acc[half * 8 + i] += buffer[i * 256 + gtid];
            bar_sync<2, 512>(); // every read done before the next half is written
        }
        if (kEvenGroupBarrier && group == 0) {
            bar_sync<1, 256>();
            if (gtid == 0)
                flag = r;
            bar_sync<1, 256>();
            acc[0] += (float)flag;
        }
    }
    if (group == 0)
        for (int i = 0; i < 16; i++)
            out[(blockIdx.x * 256 + gtid) * 16 + i] = acc[i];
}

int main(int argc, char **argv) {
    const int variant = argc > 1 ? atoi(argv[1]) : 0;
    float *out = nullptr;
    if (cudaMalloc(&out, 4 * 256 * 16 * sizeof(float)) != cudaSuccess)
        return 1;
    if (variant == 0)
        hand_over<false><<<4, 640>>>(out, 3);
    else
        hand_over<true><<<4, 640>>>(out, 3);
    const cudaError_t e = cudaDeviceSynchronize();
    printf("variant %d (%s): %s\n", variant, variant ? "with the even group's own barrier" : "hand-overs only",
           cudaGetErrorString(e));
    cudaFree(out);
    return e == cudaSuccess ? 0 : 1;
}
