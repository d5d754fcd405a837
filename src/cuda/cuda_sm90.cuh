/*
 * cuda_sm90.cuh - what the tensor-core matmul kernels (cuda_gemm_pipe.cuh, cuda_gemm_tile.cu) share: the
 * half2 code-pair table they decode packed bytes with, and the Hopper (sm_90 / sm_90a) building blocks -
 * mbarriers, tensor copies (TMA), programmatic dependent launch, wgmma - as thin inline-PTX wrappers, plus
 * the host side's tensor-map encoder (fetched from the driver at run time: no link to libcuda).
 *
 * Guards: BNB4_HAS_TMA is 1 in device code for sm_90+ (mbarrier, TMA, griddepcontrol), BNB4_HAS_WGMMA
 * in sm_90a code (the arch-specific target; wgmma exists nowhere else). Kernels that need them trap
 * elsewhere and are never launched there (the host checks the device and BNB4_CUDA_SM90A).
 */
#ifndef BNB4_CUDA_SM90_CUH
#define BNB4_CUDA_SM90_CUH

#include <stdlib.h>

#include <cuda.h> /* CUtensorMap (the driver's encoder is fetched at run time: no link to libcuda) */

#include "cuda_common.cuh"

namespace {

/* ---- f16 / bf16 pairs ------------------------------------------------------------------------------ */
template <typename T> struct PairOps;
template <> struct PairOps<__half> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        const __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&h);
    }
    static __device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
        const __half2 r = __hmul2(*reinterpret_cast<const __half2 *>(&a), *reinterpret_cast<const __half2 *>(&b));
        return *reinterpret_cast<const uint32_t *>(&r);
    }
};
template <> struct PairOps<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<const uint32_t *>(&h);
    }
    static __device__ __forceinline__ uint32_t mul2(uint32_t a, uint32_t b) {
        const __nv_bfloat162 r =
            __hmul2(*reinterpret_cast<const __nv_bfloat162 *>(&a), *reinterpret_cast<const __nv_bfloat162 *>(&b));
        return *reinterpret_cast<const uint32_t *>(&r);
    }
};

/* The code-pair table: for every byte value v, the pair (code[v >> 4], code[v & 15]) in T (high nibble
 * first: the lower k), 32 copies, one per lane (entry (v, lane) at v * 256 + 4 lane), so a warp's 32
 * lookups never share a bank. One PRMT of a packed word with the lane's 4 * lane forms the address:
 * pair_offset. kPairTableBytes of shared memory, filled by all `nthreads` threads. (kCopies / kRowBytes: a
 * smaller table, entry (v, copy) at v * kRowBytes + 4 copy: the pipe kernel's on 99 KB GPUs.) */
constexpr int kPairTableBytes = 256 * 256;
template <typename T, int kCopies = 32, int kRowBytes = 256>
__device__ __forceinline__ void build_pair_table(unsigned char *table, const float *codebook, int tid, int nthreads) {
    constexpr int kQuads = kCopies / 4, kQuadsLog2 = kQuads == 8 ? 3 : kQuads == 2 ? 1 : -1; /* 16-byte stores */
    static_assert(kQuadsLog2 >= 0 && kCopies * 4 <= kRowBytes, "8 or 32 copies, in the row");
    for (int e = tid; e < 256 * kQuads; e += nthreads) {
        const int v = e >> kQuadsLog2;
        const uint32_t p = PairOps<T>::pack(codebook[v >> 4], codebook[v & 15]);
        reinterpret_cast<uint4 *>(table + v * kRowBytes)[e & (kQuads - 1)] = make_uint4(p, p, p, p);
    }
}
/* The table offset of byte b (0..3) of `word` for the lane whose 4 * lane is lane4: PRMT selector
 * 0x5504 | b << 4 takes lane4's byte 0, the word's byte b, then lane4's byte 1 (zero) twice. */
__device__ __forceinline__ uint32_t pair_offset(uint32_t word, uint32_t lane4, uint32_t sel) {
    return __byte_perm(word, lane4, sel);
}
__device__ __forceinline__ uint32_t pair_sel(uint32_t b) { return 0x5504u | (b << 4); }

__device__ __forceinline__ uint4 lds128(const unsigned char *p) { return *reinterpret_cast<const uint4 *>(p); }

/* The consumer threads' barrier (named barrier 1: a producer warp never takes part). */
template <int kConsumerThreads> __device__ __forceinline__ void consumer_sync() {
    asm volatile("bar.sync 1, %0;" ::"n"(kConsumerThreads) : "memory");
}
/* The pipe kernel's hand-over barrier (2): the consumers wait at it (handover_sync) until the producer warp, which has
 * seen every other contributor's partial sums published, arrives (handover_arrive). A hardware wait: any loop or
 * mbarrier wait at the consumers' tile end cost their main loops 30-100 instructions a step (docs/performance.md v55). */
template <int kConsumerThreads> __device__ __forceinline__ void handover_sync() {
    asm volatile("bar.sync 2, %0;" ::"n"(kConsumerThreads + 32) : "memory");
}
template <int kConsumerThreads> __device__ __forceinline__ void handover_arrive() {
    asm volatile("bar.arrive 2, %0;" ::"n"(kConsumerThreads + 32) : "memory");
}

/* ---- mbarrier + tensor copies + programmatic dependent launch (sm_90) ---- */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define BNB4_HAS_TMA 1
__device__ __forceinline__ void mbar_init(uint32_t bar, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_arrive_tx(uint32_t bar, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile("{\n"
                 ".reg .pred p;\n"
                 "WAIT_%=:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 p, [%0], %1;\n"
                 "@!p bra WAIT_%=;\n"
                 "}" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}
/* one lane of the warp (all 32 must call it together): true there, false elsewhere. Unlike lane == 0 it
 * needs no lane index, which the compiler tends to re-read from %tid inside a loop (a slow special
 * register read per turn) */
__device__ __forceinline__ bool elect_one() {
    uint32_t r;
    asm volatile("{\n.reg .pred p;\nelect.sync _|p, 0xffffffff;\nselp.u32 %0, 1, 0, p;\n}" : "=r"(r));
    return r != 0;
}
/* One lane of the warp arrives (elect.sync, all 32 lanes calling together), predicated rather than
 * branched: elect_one() + mbar_arrive took a convergence block around a branch (5 instructions, 2 here). */
__device__ __forceinline__ void mbar_arrive_elected(uint32_t bar) {
    asm volatile("{\n.reg .pred p;\nelect.sync _|p, 0xffffffff;\n"
                 "@p mbarrier.arrive.shared::cta.b64 _, [%0];\n}" ::"r"(bar)
                 : "memory");
}
/* mbar_wait as a loop the compiler sees (no branch inside the asm, so no convergence block around it) */
__device__ __forceinline__ bool mbar_try_wait(uint32_t bar, uint32_t parity) {
    uint32_t ok;
    asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
                 : "=r"(ok)
                 : "r"(bar), "r"(parity)
                 : "memory");
    return ok != 0;
}
/* whether the phase of parity `parity` has completed, without waiting (mbar_try_wait may wait a while) */
__device__ __forceinline__ bool mbar_test_wait(uint32_t bar, uint32_t parity) {
    uint32_t ok;
    asm volatile("{\n.reg .pred p;\nmbarrier.test_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
                 : "=r"(ok)
                 : "r"(bar), "r"(parity)
                 : "memory");
    return ok != 0;
}
/* make mbarrier.init visible to the tensor copies' completion mechanism */
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory"); }
/* Programmatic dependent launch (launches with the attribute; a no-op otherwise): let the next kernel on
 * the stream start its prologue on the SMs this grid frees, and wait until the previous kernel has
 * completed and its writes are visible (nothing it may write is read before this). */
__device__ __forceinline__ void pdl_launch_dependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdl_wait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void tma_prefetch_map(const CUtensorMap *map) {
    asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
/* a box of a 2D tensor map into L2 only (a hint: no completion, nothing written to shared memory) */
__device__ __forceinline__ void tma_prefetch_l2_2d(const CUtensorMap *map, int x0, int y0) {
    asm volatile("cp.async.bulk.prefetch.tensor.2d.L2.global.tile [%0, {%1, %2}];" ::"l"(reinterpret_cast<uint64_t>(map)),
                 "r"(x0), "r"(y0)
                 : "memory");
}
/* a box of a 2D tensor map (columns x0.., rows y0..; outside the tensor: zeros) into shared memory,
 * completing on mbarrier bar */
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap *map, int x0, int y0, uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];"
                 ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(x0), "r"(y0), "r"(bar)
                 : "memory");
}
/* bytes contiguous bytes (a multiple of 16; both addresses 16-byte aligned) into shared memory, completing on
 * mbarrier bar (a bulk copy: no tensor map) */
__device__ __forceinline__ void bulk_load(uint32_t dst, const void *src, uint32_t bytes, uint32_t bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(dst), "l"(reinterpret_cast<uint64_t>(src)), "r"(bytes), "r"(bar)
                 : "memory");
}
/* the same for a 3D tensor map (x0, y0, z0: its box's first element in each dimension) */
__device__ __forceinline__ void tma_prefetch_l2_3d(const CUtensorMap *map, int x0, int y0, int z0) {
    asm volatile("cp.async.bulk.prefetch.tensor.3d.L2.global.tile [%0, {%1, %2, %3}];"
                 ::"l"(reinterpret_cast<uint64_t>(map)), "r"(x0), "r"(y0), "r"(z0)
                 : "memory");
}
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap *map, int x0, int y0, int z0,
                                            uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
                 " [%0], [%1, {%2, %3, %4}], [%5];"
                 ::"r"(dst), "l"(reinterpret_cast<uint64_t>(map)), "r"(x0), "r"(y0), "r"(z0), "r"(bar)
                 : "memory");
}
/* stmatrix.trans: four 8x8 b16 matrices from a warp's mma fragments (register i of lane (g, c): row g,
 * columns 2c and 2c + 1 of matrix i, the lower column in the low half) to shared memory transposed: column
 * k of matrix i becomes the 16-byte row whose address lane 8 i + k gives */
__device__ __forceinline__ void stmatrix_x4_trans(uint32_t addr, uint32_t r0, uint32_t r1, uint32_t r2, uint32_t r3) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.trans.shared.b16 [%0], {%1, %2, %3, %4};" ::"r"(addr), "r"(r0),
                 "r"(r1), "r"(r2), "r"(r3)
                 : "memory");
}
/* ---- wgmma (sm_90a, the arch-specific target the build adds for Hopper) ---- */
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define BNB4_HAS_WGMMA 1
/* the wgmma group protocol: fence before wgmmas that read registers written since, commit the issued ones
 * as a group, wait until at most N groups are pending (their registers and shared memory are then free) */
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory"); }
/* a warpgroup's per-thread register budget, lowered (a producer) or raised (the math) from the launch's */
template <int N> __device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;" ::"n"(N)); }
template <int N> __device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;" ::"n"(N)); }
/* keep the compiler from moving accesses of v across the asynchronous wgmma (it sees only the issue) */
__device__ __forceinline__ void wg_keep(float &v) { asm volatile("" : "+f"(v)::"memory"); }
__device__ __forceinline__ void wg_keep(uint32_t &v) { asm volatile("" : "+r"(v)::"memory"); }
/* ... every element of an array: a wgmma's accumulators, or the fragments it reads, which must stay live
 * (and in their registers) until the wait that says it is done - the compiler would otherwise reuse them */
template <typename V, int R, int C> __device__ __forceinline__ void wg_keep(V (&v)[R][C]) {
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int c = 0; c < C; c++)
            wg_keep(v[r][c]);
}
/* shared-memory matrix descriptor: K-major rows of 128 bytes, 128-byte swizzle, 8-row groups 1024 B apart */
__device__ __forceinline__ uint64_t wg_desc(uint32_t saddr) {
    return (uint64_t)((saddr & 0x3ffffu) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}
/* D[64 rows x 8 NT cols] += A (registers: each warp's 16 rows, laid out as an m16n8k16 A fragment) x B
 * (shared memory, 16 k x 8 NT columns, K-major with the 128-byte swizzle: wg_desc). Asynchronous: see
 * wg_fence / wg_commit / wg_wait. One specialization per (dtype, n); the asm's operands: the 4 NT
 * accumulators, A (4 registers), the descriptor, then `accumulate` for the scale-d predicate (0: D = A B,
 * which starts a tile without zeroing the accumulators: an instruction writing them while wgmmas are in
 * flight makes ptxas wait for those at every loop turn); A and B scaled by 1, B not transposed. */
template <typename T, int NT> struct Wgmma;
#define BNB4_WG_D(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define BNB4_WGMMA(T, TY, NT, N, OPERANDS, ONE, ...)                                                           \
    template <> struct Wgmma<T, NT> {                                                                          \
        static __device__ __forceinline__ void mma(float (&d)[NT][4], const uint32_t a[4], uint64_t desc,      \
                                                   uint32_t accumulate = 1) {                                  \
            asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " ONE ", 0;\n"                                       \
                         "wgmma.mma_async.sync.aligned.m64n" #N "k16.f32." TY "." TY " " OPERANDS ", p, 1, 1, 0;\n}" \
                         : __VA_ARGS__                                                                         \
                         : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(accumulate));            \
        }                                                                                                      \
    };
#define BNB4_WG_N8 \
    "{%0,%1,%2,%3}, {%4,%5,%6,%7}, %8"
#define BNB4_WG_N16 \
    "{%0,%1,%2,%3,%4,%5,%6,%7}, {%8,%9,%10,%11}, %12"
#define BNB4_WG_N32 \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20"
#define BNB4_WG_N64 \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26," \
    "%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36"
#define BNB4_WG_N128 \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26," \
    "%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50," \
    "%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68"
#define BNB4_WG_N256 \
    "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23," \
    "%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
    "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71," \
    "%72,%73,%74,%75,%76,%77,%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95," \
    "%96,%97,%98,%99,%100,%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118,%119," \
    "%120,%121,%122,%123,%124,%125,%126,%127}, {%128,%129,%130,%131}, %132"
#define BNB4_WG_ALL(T, TY) \
    BNB4_WGMMA(T, TY, 1, 8, BNB4_WG_N8, "%9", BNB4_WG_D(0)) \
    BNB4_WGMMA(T, TY, 2, 16, BNB4_WG_N16, "%13", BNB4_WG_D(0), BNB4_WG_D(1)) \
    BNB4_WGMMA(T, TY, 4, 32, BNB4_WG_N32, "%21", BNB4_WG_D(0), BNB4_WG_D(1), BNB4_WG_D(2), BNB4_WG_D(3)) \
    BNB4_WGMMA(T, TY, 8, 64, BNB4_WG_N64, "%37", BNB4_WG_D(0), BNB4_WG_D(1), BNB4_WG_D(2), BNB4_WG_D(3), \
               BNB4_WG_D(4), BNB4_WG_D(5), BNB4_WG_D(6), BNB4_WG_D(7)) \
    BNB4_WGMMA(T, TY, 16, 128, BNB4_WG_N128, "%69", BNB4_WG_D(0), BNB4_WG_D(1), BNB4_WG_D(2), BNB4_WG_D(3), \
               BNB4_WG_D(4), BNB4_WG_D(5), BNB4_WG_D(6), BNB4_WG_D(7), \
               BNB4_WG_D(8), BNB4_WG_D(9), BNB4_WG_D(10), BNB4_WG_D(11), \
               BNB4_WG_D(12), BNB4_WG_D(13), BNB4_WG_D(14), BNB4_WG_D(15)) \
    BNB4_WGMMA(T, TY, 32, 256, BNB4_WG_N256, "%133", BNB4_WG_D(0), BNB4_WG_D(1), BNB4_WG_D(2), BNB4_WG_D(3), \
               BNB4_WG_D(4), BNB4_WG_D(5), BNB4_WG_D(6), BNB4_WG_D(7), \
               BNB4_WG_D(8), BNB4_WG_D(9), BNB4_WG_D(10), BNB4_WG_D(11), \
               BNB4_WG_D(12), BNB4_WG_D(13), BNB4_WG_D(14), BNB4_WG_D(15), \
               BNB4_WG_D(16), BNB4_WG_D(17), BNB4_WG_D(18), BNB4_WG_D(19), \
               BNB4_WG_D(20), BNB4_WG_D(21), BNB4_WG_D(22), BNB4_WG_D(23), \
               BNB4_WG_D(24), BNB4_WG_D(25), BNB4_WG_D(26), BNB4_WG_D(27), \
               BNB4_WG_D(28), BNB4_WG_D(29), BNB4_WG_D(30), BNB4_WG_D(31))
BNB4_WG_ALL(__half, "f16")
BNB4_WG_ALL(__nv_bfloat16, "bf16")
#undef BNB4_WG_ALL
#undef BNB4_WG_N256
#undef BNB4_WG_N128
#undef BNB4_WG_N64
#undef BNB4_WG_N32
#undef BNB4_WG_N16
#undef BNB4_WG_N8
#undef BNB4_WGMMA
#undef BNB4_WG_D
#else
#define BNB4_HAS_WGMMA 0
#endif
#else
#define BNB4_HAS_TMA 0
#define BNB4_HAS_WGMMA 0
#endif

/* ---- host ------------------------------------------------------------------------------------------ */
/* Programmatic dependent launch for the kernels that use it (BNB4_CUDA_PDL=0 turns it off, for measuring). */
inline bool bnb4_pdl_enabled() {
    static const bool on = [] {
        const char *e = getenv("BNB4_CUDA_PDL");
        return !(e && *e == '0');
    }();
    return on;
}
/* cudaLaunchKernelEx with programmatic stream serialization when `pdl`; (not expected) a stream or graph
 * that refuses the attribute gets a plain launch. */
template <typename Kernel, typename... Args>
cudaError_t bnb4_launch_ex(cudaLaunchConfig_t cfg, bool pdl, Kernel kernel, Args... args) {
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, args...);
    if (e != cudaSuccess && cfg.numAttrs) {
        (void)cudaGetLastError();
        cfg.numAttrs = 0;
        e = cudaLaunchKernelEx(&cfg, kernel, args...);
    }
    return e != cudaSuccess ? e : cudaGetLastError();
}

/* The driver's tensor-map encoder, fetched once through the runtime (NULL where the driver has none). */
using EncodeTiledFn = CUresult (*)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *,
                                   const cuuint64_t *, const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
inline EncodeTiledFn encode_tiled() {
    static const EncodeTiledFn fn = [] {
        void *p = nullptr;
        cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault, &q) !=
                cudaSuccess ||
            q != cudaDriverEntryPointSuccess) {
            (void)cudaGetLastError();
            return (EncodeTiledFn) nullptr;
        }
        return reinterpret_cast<EncodeTiledFn>(p);
    }();
    return fn;
}

/* A 2D tensor map: rows of `cols` elements, `stride` bytes apart; boxes of box_cols x box_rows (outside
 * the tensor: zeros); misses fetch 256-byte L2 lines, or only the sectors the box needs (promote = false). */
inline bool encode_2d(CUtensorMap *map, const void *base, CUtensorMapDataType type, size_t cols, size_t rows,
                      size_t stride, unsigned box_cols, unsigned box_rows, CUtensorMapSwizzle swizzle,
                      bool promote = true) {
    const cuuint64_t dims[2] = {cols, rows}, strides[1] = {stride};
    const cuuint32_t box[2] = {box_cols, box_rows}, elem_strides[2] = {1, 1};
    return encode_tiled()(map, type, 2, const_cast<void *>(base), dims, strides, box, elem_strides,
                          CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle,
                          promote ? CU_TENSOR_MAP_L2_PROMOTION_L2_256B : CU_TENSOR_MAP_L2_PROMOTION_NONE,
                          CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}
/* A 3D view: dimension 0 contiguous (dims[0] elements), dimensions 1 and 2 strides[0] and strides[1] bytes
 * apart, in either order of size (the box lands in shared memory dimension 0 fastest, then 1, then 2). */
inline bool encode_3d(CUtensorMap *map, const void *base, CUtensorMapDataType type, const size_t dims[3],
                      const size_t strides[2], const unsigned box[3], CUtensorMapSwizzle swizzle) {
    const cuuint64_t d[3] = {dims[0], dims[1], dims[2]}, st[2] = {strides[0], strides[1]};
    const cuuint32_t b[3] = {box[0], box[1], box[2]}, elem_strides[3] = {1, 1, 1};
    return encode_tiled()(map, type, 3, const_cast<void *>(base), d, st, b, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                          swizzle, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

} // namespace

#endif /* BNB4_CUDA_SM90_CUH */
