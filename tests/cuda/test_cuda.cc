// test_cuda.cc - the CUDA backend against the CPU reference (src/ref) on the same inputs, and against
// bitsandbytes' recorded outputs (../shared/conformance).
//
// quantize, nested quantize and dequantize must be bit-identical to the reference (NaN payloads aside:
// both sides produce a NaN, with the platform's own bits); matmuls must be within the float64-reference
// tolerances of the core tests, on every kernel path (tensor-core, SIMT, dequantize + cuBLAS), odd
// shapes and misaligned pointers included. Without a GPU every test skips with a message saying so
// (the build without CUDA checks that a CUDA context is refused with BNB4_ERR_UNSUPPORTED).
// BNB4_CUDA_TEST_QUICK=1 shrinks the sweeps (used under compute-sanitizer, which is slow). BNB4_CUDA_TEST_TRACE=1
// prints each matmul configuration of the sweeps before it runs, so a hang or a crash names the one it stopped in.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "bnb4.h"
#include "cuda_grid.h"
#include "cuda_outputs.h"
#include "bnb4_format.h"
#include "bnb4_half.h"
#include "bnb4_ref.h"
#include "safetensors_lite.h"
#include "test_util.h"

#ifdef BNB4_WITH_CUDA
#include <cuda_runtime.h>

#include "caller_kernels.h"
#include "kernel_choice.h"
#endif

using namespace bnb4test;

namespace {

const bnb4_dtype kDtypes[] = {BNB4_F32, BNB4_F16, BNB4_BF16};
const bnb4_quant_type kQuantTypes[] = {BNB4_NF4, BNB4_FP4};
const size_t kBlocksizes[] = {32, 64, 128, 256, 512, 1024, 2048, 4096};


#ifndef BNB4_WITH_CUDA

TEST(Cuda, BuiltWithoutCudaRefusesContexts) {
    std::printf("[bnb4] built without the CUDA backend: CUDA contexts must be refused\n");
    bnb4_ctx_params p;
    bnb4_ctx_params_default(&p);
    p.device = BNB4_DEVICE_CUDA;
    bnb4_ctx *ctx = nullptr;
    EXPECT_EQ(BNB4_ERR_UNSUPPORTED, bnb4_ctx_create(&p, &ctx));
    EXPECT_EQ(nullptr, ctx);
    EXPECT_NE(std::string(""), bnb4_last_error());
    EXPECT_EQ(0, bnb4_cuda_device_count());
}

#else

// Whether a test switch is set (to anything but empty or 0)
bool test_switch(const char *name) {
    const char *e = std::getenv(name);
    return e && *e && *e != '0';
}
bool quick() { return test_switch("BNB4_CUDA_TEST_QUICK"); }
// BNB4_CUDA_TEST_TRACE=1: the configuration about to run, flushed at once
void trace(const std::string &what) {
    static const bool on = test_switch("BNB4_CUDA_TEST_TRACE");
    if (on) {
        std::printf("[ trace    ] %s\n", what.c_str());
        std::fflush(stdout);
    }
}
size_t ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }
// Whether the environment sets `name` to 0 (the library's switches, read as it reads them).
bool env_off(const char *name) {
    const char *e = std::getenv(name);
    return e && *e == '0';
}
// Whether the named matmul kernel launches with programmatic dependent launch: the wgmma kernels (sm_90,
// tensor copies), unless BNB4_CUDA_PDL=0, or BNB4_CUDA_PIPE_TMA=0 makes the pipe kernel's cp.async variant
// run under the same name.
bool launches_early(const char *kernel) {
    return strstr(kernel, "wgmma") && !env_off("BNB4_CUDA_PDL") &&
           (strstr(kernel, "__tile_") || !env_off("BNB4_CUDA_PIPE_TMA"));
}

// ---- device memory helpers ---------------------------------------------------------------------------
#define CUDA_OK(expr) ASSERT_EQ(cudaSuccess, (expr)) << #expr
struct DevBuf {
    void *p = nullptr;
    size_t bytes = 0;
    // The poison and the uploads go through the legacy default stream, which a context's non-blocking
    // stream does not wait for (and a pageable cudaMemcpy may return before its DMA lands): both end with
    // a device sync, or a kernel could read the poison instead of the data (an H200 run's quantize
    // failure fits that: zeros, the codes of NaN input, from one point of the source on).
    explicit DevBuf(size_t n) : bytes(n) {
        if (cudaMalloc(&p, n ? n : 1) != cudaSuccess)
            p = nullptr;
        else
            cudaMemset(p, 0xFF, n ? n : 1); // poison: 0xFF.. is a NaN in every float format
        cudaDeviceSynchronize();
    }
    DevBuf(const void *host, size_t n) : DevBuf(n) { put(0, host, n); }
    void put(size_t offset, const void *host, size_t n) {
        if (p)
            cudaMemcpy((uint8_t *)p + offset, host, n, cudaMemcpyHostToDevice);
        cudaDeviceSynchronize();
    }
    ~DevBuf() { cudaFree(p); }
    DevBuf(const DevBuf &) = delete;
    DevBuf &operator=(const DevBuf &) = delete;
    template <typename T> T *as(size_t byte_offset = 0) { return (T *)((uint8_t *)p + byte_offset); }
    std::vector<uint8_t> get(size_t offset = 0, size_t n = SIZE_MAX) const {
        if (n == SIZE_MAX)
            n = bytes - offset;
        std::vector<uint8_t> h(n);
        cudaMemcpy(h.data(), (const uint8_t *)p + offset, n, cudaMemcpyDeviceToHost);
        return h;
    }
};

// The BNB4_CUDA_* settings a test forces (read per call, or per context): each variable set to its value, or left as
// it is where the value is null (the test sets it later), and all of them unset when the ScopedEnv goes.
class ScopedEnv {
  public:
    ScopedEnv(std::initializer_list<std::pair<const char *, const char *>> vars) {
        for (const auto &v : vars) {
            names_.push_back(v.first);
            if (v.second)
                setenv(v.first, v.second, 1);
        }
    }
    ~ScopedEnv() {
        for (const char *name : names_)
            unsetenv(name);
    }
    ScopedEnv(const ScopedEnv &) = delete;
    ScopedEnv &operator=(const ScopedEnv &) = delete;

  private:
    std::vector<const char *> names_;
};

template <typename T> std::vector<T> as_vec(const std::vector<uint8_t> &b) {
    std::vector<T> v(b.size() / sizeof(T));
    std::memcpy(v.data(), b.data(), v.size() * sizeof(T));
    return v;
}

struct MatmulRef; // a float64 matmul reference (reference_matmul)

class CudaTest : public ::testing::Test {
  protected:
    bnb4_ctx *ctx = nullptr;
    cudaStream_t stream = nullptr;
    void SetUp() override {
        if (bnb4_cuda_device_count() == 0)
            GTEST_SKIP() << "no CUDA device on this machine: CUDA backend tests skipped";
        ASSERT_EQ(cudaSuccess, cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
        bnb4_ctx_params p;
        bnb4_ctx_params_default(&p);
        p.device = BNB4_DEVICE_CUDA;
        p.stream = stream; // a non-default stream: results are only valid after syncing it
        ASSERT_EQ(BNB4_OK, bnb4_ctx_create(&p, &ctx)) << bnb4_last_error();
    }
    void TearDown() override {
        bnb4_ctx_destroy(ctx);
        if (stream)
            cudaStreamDestroy(stream);
    }
    void sync() { ASSERT_EQ(cudaSuccess, cudaStreamSynchronize(stream)); }
    using CtxPtr = std::unique_ptr<bnb4_ctx, void (*)(bnb4_ctx *)>;
    // Another context on the test's stream (null, the error reported, if it cannot be made).
    CtxPtr context_on_stream() {
        bnb4_ctx_params p;
        bnb4_ctx_params_default(&p);
        p.device = BNB4_DEVICE_CUDA;
        p.stream = stream;
        bnb4_ctx *c = nullptr;
        EXPECT_EQ(BNB4_OK, bnb4_ctx_create(&p, &c)) << bnb4_last_error();
        return CtxPtr(c, bnb4_ctx_destroy);
    }
    // bnb4_gemm with the grid forced to each of `grids` through the environment variable `grid_env` (read
    // per call): every output written and within tolerance of `want` (expect_close), nothing past the end,
    // the same bytes twice (determinism). Defined after the matmul helpers it uses.
    void check_gemm_on_grids(const bnb4_qtensor &wd, bnb4_dtype dt, size_t m, const void *x, const void *bias,
                             const MatmulRef &want, const char *grid_env,
                             const std::vector<const char *> &grids, const std::string &what);
};

// Compare two float-format byte arrays: bit-identical, except that any NaN matches any NaN.
::testing::AssertionResult same_values(const std::vector<uint8_t> &want, const std::vector<uint8_t> &got, bnb4_dtype dt,
                                       const std::string &what) {
    if (want.size() != got.size())
        return ::testing::AssertionFailure() << what << ": sizes differ";
    const size_t es = bnb4_dtype_size(dt), n = want.size() / es;
    size_t bad = 0, first = SIZE_MAX;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = 0, b = 0;
        std::memcpy(&a, want.data() + i * es, es);
        std::memcpy(&b, got.data() + i * es, es);
        if (a == b)
            continue;
        const bool nan_a = es == 4 ? (a & 0x7fffffffu) > 0x7f800000u
                                   : dt == BNB4_F16 ? (a & 0x7fffu) > 0x7c00u : (a & 0x7fffu) > 0x7f80u;
        const bool nan_b = es == 4 ? (b & 0x7fffffffu) > 0x7f800000u
                                   : dt == BNB4_F16 ? (b & 0x7fffu) > 0x7c00u : (b & 0x7fffu) > 0x7f80u;
        if (nan_a && nan_b)
            continue;
        if (!bad++)
            first = i;
    }
    if (!bad)
        return ::testing::AssertionSuccess();
    uint32_t a = 0, b = 0;
    std::memcpy(&a, want.data() + first * es, es);
    std::memcpy(&b, got.data() + first * es, es);
    return ::testing::AssertionFailure() << what << ": " << bad << " of " << n << " values differ, first at " << first
                                         << " (want 0x" << std::hex << a << ", got 0x" << b << ")";
}

::testing::AssertionResult same_bytes(const std::vector<uint8_t> &want, const std::vector<uint8_t> &got,
                                      const std::string &what) {
    if (want.size() != got.size())
        return ::testing::AssertionFailure() << what << ": sizes differ";
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < want.size(); i++)
        if (want[i] != got[i] && !bad++)
            first = i;
    if (!bad)
        return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << what << ": " << bad << " of " << want.size() << " bytes differ, first at "
                                         << first << " (want " << (int)want[first] << ", got " << (int)got[first] << ")";
}

// The first n values of dtype dt in `bytes` (a matmul's output copied back), as float64.
std::vector<double> values_of(const std::vector<uint8_t> &bytes, bnb4_dtype dt, size_t n) {
    Array a = make_array(dt, n);
    std::memcpy(a.data(), bytes.data(), n * bnb4_dtype_size(dt));
    std::vector<double> v(n);
    for (size_t i = 0; i < n; i++)
        v[i] = a.get(i);
    return v;
}
size_t count_nonfinite(const std::vector<double> &v) {
    size_t n = 0;
    for (double x : v)
        n += !std::isfinite(x);
    return n;
}

// Hard inputs for the quantizer: block by block, one of several patterns, on top of randn * 10^u.
Array hard_input(bnb4_dtype dt, size_t n, size_t bs, std::mt19937_64 &g, bnb4_quant_type qt) {
    Array a = make_array(dt, n);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_real_distribution<float> ud(-2.0f, 2.0f);
    std::uniform_int_distribution<int> pick(0, 12);
    const float nf4_t[15] = {BNB4_NF4_T0, BNB4_NF4_T1, BNB4_NF4_T2,  BNB4_NF4_T3,  BNB4_NF4_T4,
                             BNB4_NF4_T5, BNB4_NF4_T6, BNB4_NF4_T7,  BNB4_NF4_T8,  BNB4_NF4_T9,
                             BNB4_NF4_T10, BNB4_NF4_T11, BNB4_NF4_T12, BNB4_NF4_T13, BNB4_NF4_T14};
    const float fp4_u[7] = {BNB4_FP4_U0, BNB4_FP4_U1, BNB4_FP4_U2, BNB4_FP4_U3, BNB4_FP4_U4, BNB4_FP4_U5, BNB4_FP4_U6};
    const float big = dt == BNB4_F16 ? 60000.0f : 3.0e38f;
    for (size_t b0 = 0; b0 < n; b0 += bs) {
        const size_t b1 = std::min(n, b0 + bs);
        const float scale = std::pow(10.0f, ud(g));
        const int kind = pick(g);
        for (size_t i = b0; i < b1; i++) {
            float v = nd(g) * scale;
            switch (kind) {
            case 0: v = 0.0f; break;                                  // zero block
            case 1: v = (i % 3 == 0) ? NAN : v; break;                // NaNs inside
            case 2: v = (i == b0 + (b1 - b0) / 2) ? INFINITY : v; break;
            case 3: v = (i == b0) ? -INFINITY : v; break;
            case 4: v = bnb4_bits_f32((uint32_t)(g() & 0x807fffffu)); break; // f32 subnormals (0 in f16)
            case 5: v = (i == b0) ? big : nd(g) * big / 8; break;     // near the dtype's max
            case 6: v = NAN; break;                                   // all NaN
            case 7: {                                                 // threshold neighbours at absmax 1 or 3
                const float A = (b0 / bs) % 2 ? 3.0f : 1.0f;
                if (i == b0) {
                    v = A;
                } else {
                    const float t = qt == BNB4_NF4 ? nf4_t[i % 15] : fp4_u[i % 7] * ((i & 8) ? -1.0f : 1.0f);
                    const float tv = t * A;
                    const int ulps = (int)(i % 3) - 1;
                    v = bnb4_bits_f32(bnb4_f32_bits(tv) + ulps);
                }
                break;
            }
            case 8: v = nd(g) * 1e-30f; break;                        // tiny (f16: zero)
            default: break;
            }
            a.set(i, v);
            if (kind == 9 && i % 5 == 2) // signaling NaNs inside: ignored by the absmax like quiet ones
                set_signaling_nan(a, i, (uint32_t)g());
        }
    }
    return a;
}

// ---- context -------------------------------------------------------------------------------------------
TEST(CudaContext, DeviceIndexOutOfRangeIsADeviceError) {
    bnb4_ctx_params p;
    bnb4_ctx_params_default(&p);
    p.device = BNB4_DEVICE_CUDA;
    p.device_index = bnb4_cuda_device_count(); // one past the last, or 0 when there is none
    bnb4_ctx *ctx = nullptr;
    EXPECT_EQ(BNB4_ERR_DEVICE, bnb4_ctx_create(&p, &ctx));
    EXPECT_EQ(nullptr, ctx);
    EXPECT_NE(std::string(""), bnb4_last_error());
    if (bnb4_cuda_device_count() == 0)
        std::printf("[bnb4] no CUDA device: checked that a CUDA context is refused with BNB4_ERR_DEVICE (%s)\n",
                    bnb4_last_error());
}

// The shared memory one CTA may take on the test's device, as the library reads it: the device's, or less where
// BNB4_CUDA_SMEM_OPTIN says so (scripts/cuda_check.sh runs the suite as on an A100 and as on 99 KB devices).
size_t test_smem_optin() {
    int dev = 0, optin = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess)
        return 0;
    const char *e = std::getenv("BNB4_CUDA_SMEM_OPTIN");
    const size_t env = e && *e ? (size_t)std::strtoull(e, nullptr, 10) : 0;
    return env && env < (size_t)optin ? env : (size_t)optin;
}
// Whether BNB4_CUDA_GEMV_MAX_M=0 turns the gemv kernel off (m = 1 then takes the matmul kernels)
bool gemv_off() { return env_off("BNB4_CUDA_GEMV_MAX_M"); }
// What the pipe kernel takes (m <= 64, f16/bf16): 227 KB (Hopper) every shape; A100's 163 KB its cp.async variant
// in 3 stages at m <= 16, to m = 48 in chunks of 16 rows, then dequantize + cuBLAS; 99 KB (sm_86 / 89 / 120) the
// same with an 8 KB code-pair table.
const size_t kSmemHopper = 232448, kSmemA100 = 166912, kSmem99K = 101376;

TEST_F(CudaTest, KernelNamesSayCuda) {
    // m = 1 streams on CUDA cores unless BNB4_CUDA_GEMV_MAX_M=0 turns that kernel off; m = 32 is tensor-core
    // where the device's shared memory holds the pipe kernel
    const bool pipe = test_smem_optin() >= kSmem99K;
    EXPECT_NE(nullptr, std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMV, BNB4_F16, 1),
                                   !gemv_off() ? "gemv" : pipe ? "mma" : "simt"));
    EXPECT_NE(nullptr, std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_BF16, 32), pipe ? "mma" : "cublas"));
    EXPECT_NE(nullptr, std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F32, 2048), "cublas"));
    // m >= 65: the fused wgmma tile kernel on compute capability 9.0 (sm_90a build), else dequantize + cuBLAS
    for (size_t m : {65, 128, 2048}) {
        const char *name = bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, m);
        EXPECT_TRUE(std::strstr(name, "tile_wgmma") != nullptr || std::strstr(name, "cublas") != nullptr) << name;
    }
    EXPECT_NE(nullptr, std::strstr(bnb4_kernel_name(ctx, BNB4_OP_QUANTIZE, BNB4_BF16, 0), "cuda"));
    // a build without sm_90 code on a Hopper GPU (the driver compiles its compute_80 PTX): the sm_90 kernels are
    // compiled out there and trap, so nothing may pick them (scripts/cuda_check.sh runs such a build)
    int dev = 0;
    cudaDeviceProp prop;
    ASSERT_EQ(cudaSuccess, cudaGetDevice(&dev));
    ASSERT_EQ(cudaSuccess, cudaGetDeviceProperties(&prop, dev));
    const int code = test_code_arch();
    ASSERT_GT(code, 0);
    if (code < 90 || test_smem_optin() < kSmemHopper) { // (nor where the device's shared memory is short of them)
        for (size_t m : {1, 9, 16, 32, 64, 128, 512})
            EXPECT_EQ(nullptr, std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, m), "wgmma")) << m;
        std::printf("[bnb4] %s (compute capability %d.%d) runs compute_%d code with %zu KB of shared memory a CTA: "
                    "m = 16 takes %s, m = 32 %s, m = 128 %s\n",
                    prop.name, prop.major, prop.minor, code, test_smem_optin() / 1024,
                    bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, 16), bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, 32),
                    bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, 128));
    }
}

// ---- quantize --------------------------------------------------------------------------------------------
TEST_F(CudaTest, QuantizeIsBitIdenticalToReference) {
    auto g = rng(101);
    for (bnb4_quant_type qt : kQuantTypes)
        for (size_t bs : kBlocksizes)
            for (bnb4_dtype dt : kDtypes) {
                std::vector<size_t> sizes = {1, 7, bs - 1, bs + 1, 3 * bs + 17, 4097};
                if (!quick())
                    sizes.push_back(bs * 37 + 2 * (g() % bs)); // larger, even
                for (size_t n : sizes)
                    for (int misalign = 0; misalign < 2; misalign++) {
                        const Array x = hard_input(dt, n, bs, g, qt);
                        const size_t nb = ceil_div(n, bs), pb = (n + 1) / 2, es = bnb4_dtype_size(dt);
                        std::vector<uint8_t> want_p(pb);
                        std::vector<float> want_a(nb);
                        bnb4_ref_quantize_blocks(x.data(), dt, n, bs, qt, 0, nb, want_p.data(), want_a.data());
                        // misaligned: source at +1 element, packed at +1 byte (the scalar paths)
                        DevBuf src(n * es + 16), packed(pb + 16), absmax(nb * 4);
                        const size_t so = misalign ? es : 0, po = misalign ? 1 : 0;
                        src.put(so, x.data(), n * es);
                        ASSERT_EQ(BNB4_OK, bnb4_quantize(ctx, src.as<void>(so), dt, n, bs, qt, packed.as<uint8_t>(po),
                                                         absmax.as<float>()))
                            << bnb4_last_error();
                        sync();
                        const std::string what = std::string(bnb4_quant_type_name(qt)) + " bs" + std::to_string(bs) +
                                                 " " + bnb4_dtype_name(dt) + " n" + std::to_string(n) +
                                                 (misalign ? " misaligned" : "");
                        const std::vector<uint8_t> gp = packed.get();
                        ASSERT_TRUE(same_bytes(want_p, std::vector<uint8_t>(gp.begin() + po, gp.begin() + po + pb),
                                               what + " packed"));
                        ASSERT_EQ(0xFF, gp[po + pb]) << what << ": wrote past the packed output";
                        ASSERT_TRUE(same_bytes(std::vector<uint8_t>((uint8_t *)want_a.data(),
                                                                    (uint8_t *)want_a.data() + nb * 4),
                                               absmax.get(), what + " absmax"));
                    }
            }
}

// ---- nested absmax ------------------------------------------------------------------------------------------
TEST_F(CudaTest, NestedQuantizeIsBitIdenticalToReference) {
    auto g = rng(102);
    std::uniform_real_distribution<float> ud(0.01f, 4.0f);
    const size_t counts[] = {1, 255, 256, 257, 1000, 5003};
    const size_t nbss[] = {256, 1, 7, 1000};
    for (size_t nb : counts) {
        std::vector<float> absmax(nb);
        for (float &v : absmax)
            v = ud(g);
        if (nb > 10) {
            absmax[3] = 0.0f;         // zero block
            absmax[5] = -FLT_MAX;     // an all-NaN block's absmax
            absmax[7] = 1e-40f;       // subnormal
        }
        DevBuf dabs(absmax.data(), nb * 4);
        float off_gpu = 0.0f;
        ASSERT_EQ(BNB4_OK, bnb4_nested_offset(ctx, dabs.as<float>(), nb, &off_gpu)) << bnb4_last_error();
        const float off_ref = bnb4_ref_nested_offset(absmax.data(), nb);
        EXPECT_EQ(bnb4_f32_bits(off_ref), bnb4_f32_bits(off_gpu)) << "offset " << off_gpu << " vs " << off_ref;
        for (size_t nbs : nbss) {
            const size_t ng = ceil_div(nb, nbs);
            std::vector<uint8_t> want_c(nb);
            std::vector<float> want_n(ng);
            bnb4_ref_quantize_nested_blocks(absmax.data(), nb, off_ref, nbs, 0, ng, want_c.data(), want_n.data());
            DevBuf codes(nb + 8), nabs(ng * 4);
            ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(ctx, dabs.as<float>(), nb, off_ref, nbs, codes.as<uint8_t>(),
                                                    nabs.as<float>()))
                << bnb4_last_error();
            sync();
            const std::string what = "nb " + std::to_string(nb) + " nbs " + std::to_string(nbs);
            ASSERT_TRUE(same_bytes(want_c, codes.get(0, nb), what + " codes"));
            ASSERT_EQ(0xFF, codes.get(nb, 1)[0]) << what << ": wrote past the codes";
            ASSERT_TRUE(same_values(std::vector<uint8_t>((uint8_t *)want_n.data(), (uint8_t *)want_n.data() + ng * 4),
                                    nabs.get(), BNB4_F32, what + " nested absmax"));

            // decode: dequantize_nested on a tensor whose absmax count is nb
            const size_t bs = 64, n = nb * bs - (nb > 1 ? 3 : 0);
            DevBuf packed(n); // contents irrelevant for the absmax decode
            DevBuf dcode(bnb4_nested_code(), 256 * 4);
            bnb4_qtensor q = bnb4_qtensor_nested(1, n, bs, BNB4_NF4, packed.as<uint8_t>(), codes.as<uint8_t>(),
                                                 nabs.as<float>(), dcode.as<float>(), off_ref, nbs);
            DevBuf out(nb * 4);
            ASSERT_EQ(BNB4_OK, bnb4_dequantize_nested(ctx, &q, out.as<float>())) << bnb4_last_error();
            sync();
            bnb4_qtensor qh = bnb4_qtensor_nested(1, n, bs, BNB4_NF4, nullptr, want_c.data(), want_n.data(),
                                                  bnb4_nested_code(), off_ref, nbs);
            std::vector<float> want_d(nb);
            for (size_t b = 0; b < nb; b++)
                want_d[b] = bnb4_ref_block_scale(&qh, b);
            ASSERT_TRUE(same_values(std::vector<uint8_t>((uint8_t *)want_d.data(), (uint8_t *)want_d.data() + nb * 4),
                                    out.get(), BNB4_F32, what + " decoded absmax"));
        }
    }
}

// ---- dequantize ------------------------------------------------------------------------------------------------
TEST_F(CudaTest, DequantizeIsBitIdenticalToReference) {
    auto g = rng(103);
    for (bnb4_quant_type qt : kQuantTypes)
        for (size_t bs : kBlocksizes)
            for (int nested = 0; nested < 2; nested++) {
                const size_t n = quick() ? 3 * bs + 5 : 9 * bs + 2 * (g() % bs) + 1;
                const Array src = hard_input(BNB4_F32, n, bs, g, qt);
                const size_t nb = ceil_div(n, bs), pb = (n + 1) / 2;
                std::vector<uint8_t> packed(pb);
                std::vector<float> absmax(nb);
                bnb4_ref_quantize_blocks(src.data(), BNB4_F32, n, bs, qt, 0, nb, packed.data(), absmax.data());
                for (float &a : absmax) // keep scales finite so the nested path sees ordinary data too
                    if (!std::isfinite(a) || a < 0)
                        a = 1.0f;
                std::vector<uint8_t> codes(nb);
                std::vector<float> nabs(ceil_div(nb, 256));
                const float offset = nested ? bnb4_ref_nested_offset(absmax.data(), nb) : 0.0f;
                if (nested)
                    bnb4_ref_quantize_nested_blocks(absmax.data(), nb, offset, 256, 0, nabs.size(), codes.data(),
                                                    nabs.data());
                DevBuf dp(packed.data(), pb), da(absmax.data(), nb * 4), dc(codes.data(), nb),
                    dn(nabs.data(), nabs.size() * 4), dcode(bnb4_nested_code(), 1024);
                bnb4_qtensor qd = bnb4_qtensor_plain(1, n, bs, qt, dp.as<uint8_t>(), da.as<float>());
                bnb4_qtensor qh = bnb4_qtensor_plain(1, n, bs, qt, packed.data(), absmax.data());
                if (nested) {
                    qd = bnb4_qtensor_nested(1, n, bs, qt, dp.as<uint8_t>(), dc.as<uint8_t>(), dn.as<float>(),
                                             dcode.as<float>(), offset, 256);
                    qh = bnb4_qtensor_nested(1, n, bs, qt, packed.data(), codes.data(), nabs.data(), bnb4_nested_code(),
                                             offset, 256);
                }
                for (bnb4_dtype dt : kDtypes)
                    for (int misalign = 0; misalign < 2; misalign++) {
                        const size_t es = bnb4_dtype_size(dt), off = misalign ? es : 0;
                        std::vector<uint8_t> want(n * es);
                        bnb4_ref_dequantize_range(&qh, dt, 0, n, want.data());
                        DevBuf out(n * es + 32);
                        ASSERT_EQ(BNB4_OK, bnb4_dequantize(ctx, &qd, dt, out.as<void>(off))) << bnb4_last_error();
                        sync();
                        const std::string what = std::string(bnb4_quant_type_name(qt)) + " bs" + std::to_string(bs) +
                                                 " " + bnb4_dtype_name(dt) + (nested ? " nested" : "") +
                                                 (misalign ? " misaligned" : "") + " n" + std::to_string(n);
                        ASSERT_TRUE(same_values(want, out.get(off, n * es), dt, what));
                        const std::vector<uint8_t> tail = out.get(off + n * es, es);
                        ASSERT_EQ(std::vector<uint8_t>(es, 0xFF), tail) << what << ": wrote past the output";
                    }
            }
}

// ---- matmul -------------------------------------------------------------------------------------------------
struct HostWeight {
    size_t N, K, bs;
    bnb4_quant_type qt;
    std::vector<uint8_t> packed, codes;
    std::vector<float> absmax, nabs;
    float offset = 0.0f;
    size_t nbs = 256; // nested blocksize
};

HostWeight make_weight(size_t N, size_t K, size_t bs, bnb4_quant_type qt, std::mt19937_64 &g, size_t nbs = 256) {
    HostWeight w{N, K, bs, qt, {}, {}, {}, {}, 0.0f, nbs};
    const size_t n = N * K, nb = ceil_div(n, bs);
    const Array src = randn(BNB4_F32, n, g, 0.05f);
    w.packed.resize((n + 1) / 2);
    w.absmax.resize(nb);
    bnb4_ref_quantize_blocks(src.data(), BNB4_F32, n, bs, qt, 0, nb, w.packed.data(), w.absmax.data());
    w.codes.resize(nb);
    w.nabs.resize(ceil_div(nb, nbs));
    w.offset = bnb4_ref_nested_offset(w.absmax.data(), nb);
    bnb4_ref_quantize_nested_blocks(w.absmax.data(), nb, w.offset, nbs, 0, w.nabs.size(), w.codes.data(),
                                    w.nabs.data());
    return w;
}

// A HostWeight uploaded, with its device and host views (plain or nested absmax).
struct DeviceWeight {
    const HostWeight &h;
    DevBuf packed, absmax, codes, nabs, code;
    explicit DeviceWeight(const HostWeight &w)
        : h(w), packed(w.packed.data(), w.packed.size()), absmax(w.absmax.data(), w.absmax.size() * 4),
          codes(w.codes.data(), w.codes.size()), nabs(w.nabs.data(), w.nabs.size() * 4),
          code(bnb4_nested_code(), 1024) {}
    bnb4_qtensor device(bool nested) {
        return nested ? bnb4_qtensor_nested(h.N, h.K, h.bs, h.qt, packed.as<uint8_t>(), codes.as<uint8_t>(),
                                            nabs.as<float>(), code.as<float>(), h.offset, h.nbs)
                      : bnb4_qtensor_plain(h.N, h.K, h.bs, h.qt, packed.as<uint8_t>(), absmax.as<float>());
    }
    bnb4_qtensor host(bool nested) const {
        return nested ? bnb4_qtensor_nested(h.N, h.K, h.bs, h.qt, h.packed.data(), h.codes.data(), h.nabs.data(),
                                            bnb4_nested_code(), h.offset, h.nbs)
                      : bnb4_qtensor_plain(h.N, h.K, h.bs, h.qt, h.packed.data(), h.absmax.data());
    }
};

// float64 reference on the float32-dequantized weight (as the core tests compute it), with each output's
// magnitude (the sum of its terms' absolute values) for the rounding bound. Each output is one sequential
// sum over k; the outputs are shared among the host's cores (the sweeps' references were most of the CUDA
// suite's time: 150 of its 200 s on the GPU machine, one core converting an activation per term).
struct MatmulRef {
    size_t K;
    std::vector<double> y, magnitude;
};
MatmulRef reference_matmul(const bnb4_qtensor &wq, const Array &x, size_t m, const Array *bias) {
    const size_t N = wq.rows, K = wq.cols;
    std::vector<float> wf(N * K);
    bnb4_ref_dequantize_range(&wq, BNB4_F32, 0, N * K, wf.data());
    std::vector<double> xd(m * K);
    for (size_t i = 0; i < m * K; i++)
        xd[i] = x.get(i);
    MatmulRef ref{K, std::vector<double>(m * N), std::vector<double>(m * N)};
    auto rows = [&](size_t j0, size_t j1) { // weight rows j0 .. j1 - 1, every activation row
        for (size_t j = j0; j < j1; j++) {
            const float *wr = wf.data() + j * K;
            const double b = bias ? bias->get(j) : 0.0;
            for (size_t r0 = 0; r0 < m; r0 += 4) { // four activation rows at a time: independent sums
                const size_t rn = std::min<size_t>(4, m - r0);
                double acc[4] = {b, b, b, b}, mag[4];
                for (size_t i = 0; i < 4; i++)
                    mag[i] = std::fabs(b);
                for (size_t k = 0; k < K; k++)
                    for (size_t i = 0; i < rn; i++) {
                        const double t = xd[(r0 + i) * K + k] * wr[k];
                        acc[i] += t, mag[i] += std::fabs(t);
                    }
                for (size_t i = 0; i < rn; i++)
                    ref.y[(r0 + i) * N + j] = acc[i], ref.magnitude[(r0 + i) * N + j] = mag[i];
            }
        }
    };
    const size_t work = N * K * m, threads = std::min<size_t>({std::max(1u, std::thread::hardware_concurrency()),
                                                                N, 1 + work / (1u << 22)});
    std::vector<std::thread> pool;
    for (size_t t = 1; t < threads; t++)
        pool.emplace_back(rows, N * t / threads, N * (t + 1) / threads);
    rows(0, N / threads);
    for (std::thread &th : pool)
        th.join();
    return ref;
}

// Normwise limits of the core issue (float32 1e-5, float16 1e-3, bfloat16 8e-3); the conformance cases are
// held to these alone.
double tolerance(bnb4_dtype dt) { return dt == BNB4_F32 ? 1e-5 : dt == BNB4_F16 ? 1e-3 : 8e-3; }

// Random data: every element within its rounding bound - one rounding of the output to dt, a float32 sum of
// K + 1 terms, and for float16 / bfloat16 activations the weights decoded in that type (the tensor-core
// kernels round the code value, the block scale and their product: 3 roundings) - twice that for slack;
// and the normwise limit over 64 outputs or more. A few outputs can line those systematic roundings up
// (one block scale for the whole weight, a few code values): 16 bfloat16 outputs measured 8.4e-3 normwise,
// within their element bounds.
void expect_close(const std::vector<double> &got, const MatmulRef &ref, bnb4_dtype dt, const std::string &what) {
    const double u = unit_roundoff(dt);
    const double u_weights = dt == BNB4_F32 ? 0.0 : 3 * u;
    const double tiny_out = subnormal_half_gap(dt); // (subnormal outputs)
    for (size_t i = 0; i < got.size(); i++) {
        const double bound = 2.0 * (u * std::fabs(ref.y[i]) +
                                    ((double)(ref.K + 1) * 0x1p-24 + u_weights) * ref.magnitude[i] + tiny_out) +
                             1e-30;
        ASSERT_LE(std::fabs(got[i] - ref.y[i]), bound) << what << " element " << i;
    }
    if (got.size() >= 64) {
        EXPECT_LE(rel_err(got, ref.y), tolerance(dt)) << what;
    }
}

TEST_F(CudaTest, MatmulAgreesWithFloat64OnEveryPath) {
    auto g = rng(104);
    struct Shape { size_t N, K, bs; };
    // K % blocksize == 0 shapes take a CUDA-core gemv kernel at m = 1 (the streaming kernel, 8200 rows included;
    // its activations staged in shared memory where they fit (f32; f16/bf16 where an SM keeps its CTAs), not at
    // K = 45056, whose 176 KB of f32 do not fit beside the table; odd N, a partial last 1024-k step; every m tier of
    // the table kernel with BNB4_CUDA_GEMV_MAX_M=4);
    // K % 32 == 0 ones the pipelined tensor-core kernel (m = 2..64, f16/bf16), the SIMT rows kernel (f32, m <= 40)
    // or the f32 tile kernel (f32, m = 41..64); the others the SIMT kernel or cuBLAS.
    std::vector<Shape> shapes = {{64, 256, 64},   {100, 96, 32}, {33, 72, 64},  {17, 31, 32},
                                 {300, 1056, 128}, {129, 4096, 64}, {8, 64, 4096}, {5, 1000, 256},
                                 {37, 3072, 256},  {9, 2080, 32},  {6, 8192, 4096}, {8200, 64, 64},
                                 {3, 45056, 64}};
    std::vector<size_t> ms = {1, 2, 3, 4, 8, 13, 16, 17, 32, 33, 41, 64, 65, 130};
    if (quick()) {
        shapes = {{64, 256, 64}, {33, 72, 64}, {300, 1056, 128}, {37, 3072, 256}};
        ms = {1, 2, 3, 16, 33, 64, 65};
    }
    size_t combo = 0;
    for (const Shape &s : shapes) {
        for (bnb4_quant_type qt : kQuantTypes) {
            const HostWeight w = make_weight(s.N, s.K, s.bs, qt, g);
            DeviceWeight dw(w);
            for (int nested = 0; nested < 2; nested++) {
                const bnb4_qtensor wd = dw.device(nested), wh = dw.host(nested);
                for (size_t m : ms)
                    for (bnb4_dtype dt : kDtypes) {
                        const bool with_bias = (combo++ % 2) == 0;
                        const size_t es = bnb4_dtype_size(dt);
                        const Array x = randn(dt, m * s.K, g);
                        const Array bias = randn(dt, s.N, g);
                        const MatmulRef want = reference_matmul(wh, x, m, with_bias ? &bias : nullptr);
                        DevBuf dx(x.data(), m * s.K * es), db(bias.data(), s.N * es), dy(m * s.N * es + 16);
                        const std::string what = "N " + std::to_string(s.N) + " K " + std::to_string(s.K) + " bs " +
                                                 std::to_string(s.bs) + " m " + std::to_string(m) + " " +
                                                 bnb4_dtype_name(dt) + " " + bnb4_quant_type_name(qt) +
                                                 (nested ? " nested" : "") + (with_bias ? " bias" : "");
                        trace(what);
                        ASSERT_EQ(BNB4_OK, bnb4_linear(ctx, &wd, dt, m, dx.as<void>(), with_bias ? db.as<void>() : nullptr,
                                                       dy.as<void>()))
                            << what << ": " << bnb4_last_error();
                        sync();
                        const std::vector<uint8_t> yb = dy.get();
                        const std::vector<double> gotd = values_of(yb, dt, m * s.N);
                        const size_t nonfinite = count_nonfinite(gotd); // the output was poisoned with NaN
                        ASSERT_EQ(0u, nonfinite) << what << ": unwritten or non-finite outputs";
                        expect_close(gotd, want, dt, what);
                        ASSERT_EQ(std::vector<uint8_t>(16, 0xFF),
                                  std::vector<uint8_t>(yb.end() - 16, yb.end()))
                            << what << ": wrote past the output";
                        // gemm, linear and (m = 1) gemv are the same computation, bit for bit
                        DevBuf dy2(m * s.N * es);
                        ASSERT_EQ(BNB4_OK, m == 1 ? bnb4_gemv(ctx, &wd, dt, dx.as<void>(),
                                                              with_bias ? db.as<void>() : nullptr, dy2.as<void>())
                                                  : bnb4_gemm(ctx, &wd, dt, m, dx.as<void>(),
                                                              with_bias ? db.as<void>() : nullptr, dy2.as<void>()));
                        sync();
                        ASSERT_TRUE(same_bytes(dy.get(0, m * s.N * es), dy2.get(), what + " repeat (determinism)"));
                    }
            }
        }
    }
}

// Devices that give a CTA less shared memory than Hopper's 227 KB, emulated here by lowering what the library
// reads (BNB4_CUDA_SMEM_OPTIN, at context creation): A100 / Orin (163 KB: the pipe kernel's cp.async variant in 3
// stages at m <= 16, m = 17..48 in chunks of 16 rows, no TMA, wgmma or tile kernel) and sm_86 / 89 / 120 (99 KB:
// the same with an 8 KB code-pair table). Every kernel those choose must launch and agree with the float64
// reference; before, the pipe kernel asked for 209-221 KB everywhere and its launches failed on such devices.
TEST_F(CudaTest, SmallerSharedMemoryTakesKernelsThatFit) {
    struct Shape { size_t N, K, bs; };
    std::vector<Shape> shapes = {{129, 4096, 64}, {1024, 4096, 64}, {300, 1056, 128}, {37, 3072, 256}};
    std::vector<size_t> ms = {1, 2, 8, 9, 16, 17, 33, 48, 49, 64, 65};
    if (quick()) {
        shapes = {{129, 4096, 64}, {300, 1056, 128}};
        ms = {1, 9, 17, 64};
    }
    auto g = rng(105);
    for (size_t smem : {kSmemA100, kSmem99K}) {
        const ScopedEnv env({{"BNB4_CUDA_SMEM_OPTIN", std::to_string(smem).c_str()}});
        CtxPtr c = context_on_stream();
        ASSERT_NE(nullptr, c.get());
        for (size_t m : {1, 9, 16, 32, 48, 49, 64, 65, 512}) {
            const std::string name = bnb4_kernel_name(c.get(), BNB4_OP_GEMM, BNB4_F16, m);
            EXPECT_EQ(std::string::npos, name.find("wgmma")) << smem << " m " << m << ": " << name;
            const char *want = m == 1 && !gemv_off() ? "gemv" : m > 48 ? "cublas" : "pipe_mma";
            EXPECT_NE(std::string::npos, name.find(want)) << smem << " m " << m << ": " << name;
        }
        for (const Shape &sh : shapes)
            for (bnb4_quant_type qt : kQuantTypes) {
                if (qt == BNB4_FP4 && sh.N != 129)
                    continue; // (FP4 on one shape: the paths do not depend on the code book)
                const HostWeight w = make_weight(sh.N, sh.K, sh.bs, qt, g);
                DeviceWeight dw(w);
                for (int nested = 0; nested < 2; nested++) {
                    const bnb4_qtensor wd = dw.device(nested), wh = dw.host(nested);
                    for (size_t m : ms)
                        for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16}) {
                            const size_t es = bnb4_dtype_size(dt);
                            const bool with_bias = m % 2 == 1;
                            const Array x = randn(dt, m * sh.K, g);
                            const Array bias = randn(dt, sh.N, g);
                            const MatmulRef want = reference_matmul(wh, x, m, with_bias ? &bias : nullptr);
                            DevBuf dx(x.data(), m * sh.K * es), db(bias.data(), sh.N * es), dy(m * sh.N * es + 16),
                                dy2(m * sh.N * es);
                            const std::string what = std::to_string(smem / 1024) + " KB: N " + std::to_string(sh.N) +
                                                     " K " + std::to_string(sh.K) + " bs " + std::to_string(sh.bs) +
                                                     " m " + std::to_string(m) + " " + bnb4_dtype_name(dt) + " " +
                                                     bnb4_quant_type_name(qt) + (nested ? " nested" : "");
                            trace(what);
                            ASSERT_EQ(BNB4_OK, bnb4_linear(c.get(), &wd, dt, m, dx.as<void>(),
                                                           with_bias ? db.as<void>() : nullptr, dy.as<void>()))
                                << what << ": " << bnb4_last_error();
                            ASSERT_EQ(BNB4_OK, bnb4_gemm(c.get(), &wd, dt, m, dx.as<void>(),
                                                         with_bias ? db.as<void>() : nullptr, dy2.as<void>()))
                                << what << ": " << bnb4_last_error();
                            sync();
                            const std::vector<uint8_t> yb = dy.get();
                            const std::vector<double> got = values_of(yb, dt, m * sh.N);
                            ASSERT_EQ(0u, count_nonfinite(got)) << what << ": unwritten or non-finite outputs";
                            expect_close(got, want, dt, what);
                            ASSERT_EQ(std::vector<uint8_t>(16, 0xFF), std::vector<uint8_t>(yb.end() - 16, yb.end()))
                                << what << ": wrote past the output";
                            ASSERT_TRUE(same_bytes(dy.get(0, m * sh.N * es), dy2.get(), what + " gemm = linear"));
                        }
                }
            }
    }
}

void CudaTest::check_gemm_on_grids(const bnb4_qtensor &wd, bnb4_dtype dt, size_t m, const void *x, const void *bias,
                                   const MatmulRef &want, const char *grid_env,
                                   const std::vector<const char *> &grids, const std::string &what_shape) {
    const size_t es = bnb4_dtype_size(dt), n_out = m * wd.rows;
    for (const char *grid : grids) {
        const std::string what = what_shape + " grid " + grid;
        std::vector<uint8_t> out[2];
        bnb4_status st[2];
        setenv(grid_env, grid, 1);
        trace(what);
        for (int rep = 0; rep < 2; rep++) {
            DevBuf dy(n_out * es + 16);
            st[rep] = bnb4_gemm(ctx, &wd, dt, m, x, bias, dy.as<void>());
            sync();
            out[rep] = dy.get();
        }
        unsetenv(grid_env);
        ASSERT_EQ(BNB4_OK, st[0]) << what << ": " << bnb4_last_error();
        ASSERT_EQ(BNB4_OK, st[1]) << what << ": " << bnb4_last_error();
        for (const std::vector<uint8_t> &yb : out)
            ASSERT_EQ(std::vector<uint8_t>(16, 0xFF), std::vector<uint8_t>(yb.end() - 16, yb.end()))
                << what << ": wrote past the output";
        ASSERT_TRUE(same_bytes(out[0], out[1], what + " repeat (determinism)"));
        const std::vector<double> gotd = values_of(out[0], dt, n_out);
        const size_t nonfinite = count_nonfinite(gotd);
        ASSERT_EQ(0u, nonfinite) << what << ": unwritten or non-finite outputs";
        expect_close(gotd, want, dt, what);
        if (HasFatalFailure())
            return;
    }
}

// The matmul path by device class, from the context's record of the device alone (no GPU needed: runs in CI). The
// pipe kernel fits every class from 99 KB of shared memory a block on (3 stages, m > 16 in chunks of 16 rows to m =
// 48 where Hopper's 227 KB are short); below the gemv kernel's 66 KB nothing but the SIMT kernel and cuBLAS fits.
// Which of its variants runs and the TMA, wgmma and tile kernels need the driver (tests on the GPU: the CudaTest
// suite, KernelNamesSayCuda and SmallerSharedMemoryTakesKernelsThatFit).
TEST(CudaChoice, PathsByDeviceClass) {
    const TestDevice a100{8, 0, 80, 108, kSmemA100}, rtx4090{8, 9, 80, 128, kSmem99K}, rtx5090{12, 0, 90, 170, kSmem99K},
        h100{9, 0, 90, 132, kSmemHopper}, tiny{8, 0, 80, 16, 48 * 1024};
    EXPECT_EQ(16u, test_pipe_rows(a100));
    EXPECT_EQ(16u, test_pipe_rows(rtx4090));
    EXPECT_EQ(16u, test_pipe_rows(rtx5090));
    EXPECT_EQ(64u, test_pipe_rows(h100));
    EXPECT_EQ(0u, test_pipe_rows(tiny));
    for (bool nested : {false, true})
        for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16}) {
            const std::string what = std::string(bnb4_dtype_name(dt)) + (nested ? " nested" : " plain");
            for (const TestDevice &d : {a100, rtx4090, rtx5090}) {
                const std::string dev = what + " on " + std::to_string(d.smem_optin / 1024) + " KB";
                EXPECT_STREQ("gemv", test_gemm_path(d, 4096, 4096, nested, dt, 1)) << dev;
                for (size_t m : {2, 9, 16, 17, 32, 48})
                    EXPECT_STREQ("pipe", test_gemm_path(d, 4096, 4096, nested, dt, m)) << dev << " m " << m;
                for (size_t m : {49, 64, 65, 512})
                    EXPECT_STREQ("dequant+cublas", test_gemm_path(d, 4096, 4096, nested, dt, m)) << dev << " m " << m;
            }
            for (size_t m : {2, 16, 32, 64})
                EXPECT_STREQ("pipe", test_gemm_path(h100, 4096, 4096, nested, dt, m)) << what << " m " << m;
            EXPECT_STREQ("simt", test_gemm_path(tiny, 4096, 4096, nested, dt, 1)) << what;
            EXPECT_STREQ("simt", test_gemm_path(tiny, 4096, 4096, nested, dt, 16)) << what;
            EXPECT_STREQ("dequant+cublas", test_gemm_path(tiny, 4096, 4096, nested, dt, 17)) << what;
        }
    // float32 activations: the gemv kernel at m = 1, SIMT to 40 (launches of 16 rows), then to m = 64 the f32 tile
    // kernel where its 50 KB fit (not under 48 KB), then dequantize + SGEMM
    for (const TestDevice &d : {a100, rtx4090, h100})
        for (bool nested : {false, true}) {
            const std::string what = std::to_string(d.smem_optin / 1024) + " KB" + (nested ? " nested" : " plain");
            EXPECT_STREQ("gemv", test_gemm_path(d, 4096, 4096, nested, BNB4_F32, 1)) << what;
            for (size_t m : {2, 8, 16, 17, 40})
                EXPECT_STREQ("simt", test_gemm_path(d, 4096, 4096, nested, BNB4_F32, m)) << what << " m " << m;
            for (size_t m : {41, 48, 49, 64})
                EXPECT_STREQ("f32_tile", test_gemm_path(d, 4096, 4096, nested, BNB4_F32, m)) << what << " m " << m;
            for (size_t m : {65, 512})
                EXPECT_STREQ("dequant+cublas", test_gemm_path(d, 4096, 4096, nested, BNB4_F32, m)) << what << " m " << m;
        }
    EXPECT_STREQ("dequant+cublas", test_gemm_path(tiny, 4096, 4096, false, BNB4_F32, 41));
}

// The f32 tile kernel splits K where its tiles leave CTA slots idle or fill the last wave in part (as many CTAs an SM as
// fit, at most 4): the count whose CTAs finish first (waves x (chunks a split + 1)), each split of at least 4 chunks of
// 32 k, at most 32, none empty, the partial sums at most 128 MiB.
TEST(CudaChoice, F32TileSplitsKWhereTilesLeaveSlotsIdle) {
    const TestDevice a100{8, 0, 80, 108, kSmemA100}, rtx4090{8, 9, 80, 128, kSmem99K}, h100{9, 0, 90, 132, kSmemHopper};
    EXPECT_EQ(16u, test_f32_tile_splits(h100, 4096, 4096, 64));   // 32 tiles, 528 slots: 1 wave of 8 chunks
    EXPECT_EQ(9u, test_f32_tile_splits(h100, 14336, 4096, 64));   // 112 tiles: 2 waves of 15
    EXPECT_EQ(7u, test_f32_tile_splits(h100, 28672, 8192, 64));   // 224 tiles: 3 waves of 37
    EXPECT_EQ(7u, test_f32_tile_splits(h100, 28672, 8192, 96));   // 448 tiles: 6 waves of 37, not 2 of 256
    EXPECT_EQ(4u, test_f32_tile_splits(h100, 14336, 4096, 512));  // 896 tiles: 7 waves of 32, not 2 of 128
    EXPECT_EQ(2u, test_f32_tile_splits(h100, 28672, 8192, 512));  // 1792 tiles: 7 waves of 128, not 4 of 256
    EXPECT_EQ(10u, test_f32_tile_splits(a100, 4096, 4096, 64));   // three CTAs an SM, 324 slots: 1 wave of 13
    EXPECT_EQ(4u, test_f32_tile_splits(rtx4090, 4096, 4096, 64)); // one, 128 slots: 1 wave of 32
    EXPECT_EQ(32u, test_f32_tile_splits(h100, 129, 4096, 64));    // 2 tiles: at most 32 splits
    EXPECT_EQ(1u, test_f32_tile_splits(h100, 129, 224, 64));      // 7 chunks: no split
    EXPECT_EQ(32u, test_f32_tile_splits(h100, 4, 45056, 49));     // 1408 chunks: 44 each
    for (size_t N : {1, 100, 129, 4096})
        for (size_t K : {32, 64, 96, 1056, 4096, 45056})
            for (size_t m : {49, 64, 130}) {
                const size_t splits = test_f32_tile_splits(h100, N, K, m), chunks = (K + 31) / 32,
                             per = (chunks + splits - 1) / splits;
                EXPECT_GE(splits, 1u);
                EXPECT_LE(splits, std::max<size_t>(1, std::min<size_t>(32, chunks / 4))) << N << "x" << K << " m " << m;
                EXPECT_GT(chunks, (splits - 1) * per) << N << "x" << K << " m " << m << ": an empty split";
            }
}

// The SIMT rows kernel stages each warp's activations in shared memory, two chunks of 64 k (f32 m = 16 on 14336x4096:
// 138 -> 76 us on the H200): 65 KB at f32 m > 8, which every GPU the library runs on gives a CTA; under 48 KB (as
// cuda_check.sh's SIMT pass emulates) f32 m > 8 reads them from global memory, f16 / bf16 (33 KB) still stage them.
TEST(CudaChoice, SimtStagesActivationsWhereTheyFit) {
    if (env_off("BNB4_CUDA_SIMT_XS"))
        GTEST_SKIP() << "BNB4_CUDA_SIMT_XS=0 turns the staging off";
    const TestDevice a100{8, 0, 80, 108, kSmemA100}, rtx4090{8, 9, 80, 128, kSmem99K}, h100{9, 0, 90, 132, kSmemHopper},
        tiny{8, 0, 80, 16, 48 * 1024};
    for (const TestDevice &d : {a100, rtx4090, h100})
        for (bnb4_dtype dt : kDtypes)
            for (size_t m : {1, 2, 3, 5, 9, 16})
                EXPECT_TRUE(test_simt_stages_x(d, dt, m)) << bnb4_dtype_name(dt) << " m " << m << " on "
                                                          << d.smem_optin / 1024 << " KB";
    for (size_t m : {1, 4, 8})
        EXPECT_TRUE(test_simt_stages_x(tiny, BNB4_F32, m)) << "m " << m;
    for (size_t m : {9, 16})
        EXPECT_FALSE(test_simt_stages_x(tiny, BNB4_F32, m)) << "m " << m;
    for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16})
        EXPECT_TRUE(test_simt_stages_x(tiny, dt, 16)) << bnb4_dtype_name(dt);
}

// m = 1's stream kernel stages its activations in shared memory where they fit beside its 66 KB: float32 always (2-2.6x
// faster on the H200, at one CTA an SM too), f16 / bf16 only where an SM keeps as many CTAs as without (as its
// registers allow: 2 with plain absmax, 3 nested).
TEST(CudaChoice, GemvStagesActivationsWhereTheyFit) {
    const TestDevice a100{8, 0, 80, 108, kSmemA100}, rtx4090{8, 9, 80, 128, kSmem99K}, h100{9, 0, 90, 132, kSmemHopper};
    for (bool nested : {false, true}) {
        const std::string what = nested ? "nested" : "plain";
        for (size_t K : {4096, 14336})
            EXPECT_TRUE(test_gemv_stages_x(h100, BNB4_F32, nested, K)) << what << " K " << K; // 81 / 121 KB
        EXPECT_FALSE(test_gemv_stages_x(h100, BNB4_F32, nested, 45056)) << what;          // 241 KB
        EXPECT_TRUE(test_gemv_stages_x(a100, BNB4_F32, nested, 14336)) << what;           // 121 of 163 KB
        EXPECT_TRUE(test_gemv_stages_x(rtx4090, BNB4_F32, nested, 8192)) << what;         // 97 of 99 KB
        EXPECT_FALSE(test_gemv_stages_x(rtx4090, BNB4_F32, nested, 14336)) << what;
        for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16}) {
            EXPECT_TRUE(test_gemv_stages_x(h100, dt, nested, 4096)) << what; // 3 CTAs of 74 KB an SM
            EXPECT_TRUE(test_gemv_stages_x(a100, dt, nested, 4096)) << what; // 2 of 74 KB, as of 66 KB
            EXPECT_FALSE(test_gemv_stages_x(a100, dt, nested, 14336)) << what; // 1 of 94 KB, 2 of 66 KB
            EXPECT_TRUE(test_gemv_stages_x(rtx4090, dt, nested, 14336)) << what; // 1 CTA either way
        }
        // 2 CTAs of 94 KB: the plain kernel's registers allow 2, the nested one's 3
        EXPECT_EQ(!nested, test_gemv_stages_x(h100, BNB4_F16, nested, 14336)) << what;
    }
}

// How the persistent matmul kernels cut tiles x steps over a grid (cuda_grid.h: host code, checked on
// every machine). The benchmark's cases: 14336x4096 takes whole tiles (16 steps against stream-K's 14),
// 4096x14336 tiles in quarters, 28672x8192 at m = 512 (448 tiles of 128 steps) stays stream-K, 17.7 %
// longer runs being past the slack; 1024x4096 and 2048x4096 on the pipe kernel, whose tiles are shared
// by at most 8 CTAs (4 past m = 32); the pipe kernel's aligned runs up to BNB4_GRID_PIPE_SK_STEPS (4) steps
// longer than stream-K's (docs/performance.md v54: 6144x4096 halves of 8 steps against 6, 13824x5120 whole
// tiles of 20 against 17; 11008x4096's whole tiles, 16 against 11, and 18944x3584's, 28 against 16, stay
// stream-K); then every (tiles, steps, CTAs, parts limit, slack) up to a size: each run a whole number of
// tiles or a tile's equal part (or stream-K's length), at most 17.5 % or the slack longer than stream-K's
// (stream-K's no shorter than the limit allows), on at most the CTAs given.
TEST(CudaGrid, AlignedRunsWhereTheyCostLittle) {
    constexpr size_t kPipe = BNB4_GRID_PIPE_SK_STEPS;
    EXPECT_EQ(16u, bnb4_grid_steps_per_cta(112, 16, 132, 8, kPipe)); // pipe 14336x4096
    EXPECT_EQ(64u, bnb4_grid_steps_per_cta(224, 32, 132, 8, kPipe)); // pipe 28672x8192: 64 <= 1.175 x 55
    EXPECT_EQ(14u, bnb4_grid_steps_per_cta(32, 56, 132, 4, kPipe));  // pipe 4096x14336: quarters
    EXPECT_EQ(4u, bnb4_grid_steps_per_cta(32, 16, 132, 4, kPipe));   // pipe 4096x4096: quarters
    EXPECT_EQ(8u, bnb4_grid_steps_per_cta(48, 16, 132, 8, kPipe));   // pipe 6144x4096: halves, 6 + 2
    EXPECT_EQ(6u, bnb4_grid_steps_per_cta(48, 16, 132, 8, 0));       // (by 17.5 % alone: stream-K)
    EXPECT_EQ(20u, bnb4_grid_steps_per_cta(108, 20, 132, 8, kPipe)); // pipe 13824x5120: whole, 17 + 3
    EXPECT_EQ(11u, bnb4_grid_steps_per_cta(86, 16, 132, 8, kPipe));  // pipe 11008x4096: stream-K (16 = 11 + 5)
    EXPECT_EQ(16u, bnb4_grid_steps_per_cta(148, 14, 132, 8, kPipe)); // pipe 18944x3584: stream-K (28 = 16 + 12)
    EXPECT_EQ(1u, bnb4_grid_steps_per_cta(8, 16, 132, 0, 0));        // 1024x4096 unlimited: 16 parts
    EXPECT_EQ(2u, bnb4_grid_steps_per_cta(8, 16, 132, 8, kPipe));    // pipe 1024x4096 m <= 32: 8 parts
    EXPECT_EQ(4u, bnb4_grid_steps_per_cta(8, 16, 132, 4, kPipe));    // pipe 1024x4096 m > 32: 4 parts
    EXPECT_EQ(4u, bnb4_grid_steps_per_cta(16, 16, 132, 4, kPipe));   // pipe 2048x4096 m > 32: 4 parts
    EXPECT_EQ(3u, bnb4_grid_steps_per_cta(1, 9, 132, 4, kPipe));     // 9 steps, at most ~4 parts: stream-K by 3
    EXPECT_EQ(112u, bnb4_grid_steps_per_cta(64, 224, 132, 0, 0));    // tile 4096x14336 m = 512: halves
    EXPECT_EQ(435u, bnb4_grid_steps_per_cta(448, 128, 132, 0, 0));   // tile 28672x8192 m = 512: stream-K
    EXPECT_EQ(1u, bnb4_grid_steps_per_cta(1, 7, 132, 0, 0));         // 7 steps, no divisor fits: stream-K
    EXPECT_EQ(60u, bnb4_grid_steps_per_cta(3, 20, 1, 8, kPipe));     // one CTA takes everything
    for (size_t tiles = 1; tiles <= 40; tiles++)
        for (size_t k = 1; k <= 40; k++)
            for (size_t ctas : {1, 2, 3, 7, 16, 33, 132})
                for (size_t max_parts : {0, 1, 4, 8})
                    for (size_t slack : {(size_t)0, kPipe}) {
                        const size_t per = bnb4_grid_steps_per_cta(tiles, k, ctas, max_parts, slack);
                        const size_t steps = tiles * k, min_per = max_parts ? (k + max_parts - 1) / max_parts : 1;
                        const size_t per_sk = std::max((steps + ctas - 1) / ctas, min_per);
                        const std::string what = std::to_string(tiles) + " x " + std::to_string(k) + " on " +
                                                 std::to_string(ctas) + ", parts " + std::to_string(max_parts) +
                                                 ", slack " + std::to_string(slack);
                        ASSERT_GE(per, per_sk) << what;
                        ASSERT_TRUE(per * 1000 <= per_sk * 1175 || per <= per_sk + slack) << what;
                        ASSERT_TRUE(per == per_sk || per % k == 0 || k % per == 0) << what;
                        ASSERT_LE((steps + per - 1) / per, ctas) << what;
                    }
}

// Weights under the tile kernel's size threshold take it only where its whole tiles fill the grid's waves
// with rows m, to 90 % (cuda_grid.h: host code, checked on every machine): 256 activation rows at any number
// of waves, 128 in one wave with K >= 4096.
TEST(CudaGrid, SmallWeightsTakeTheTileKernelWhereItsTilesFillTheGrid) {
    EXPECT_EQ(128u, bnb4_grid_small_tile_rows(32, 4096, 512, 132));  // 4096x4096 m = 512: 128 tiles of 128
    EXPECT_EQ(256u, bnb4_grid_small_tile_rows(32, 4096, 1024, 132)); // m = 1024: 128 tiles of 256
    EXPECT_EQ(256u, bnb4_grid_small_tile_rows(32, 4096, 2048, 132)); // m = 2048: 256 tiles, 2 waves of 132
    EXPECT_EQ(0u, bnb4_grid_small_tile_rows(32, 4096, 384, 132));    // 96 tiles of 128 either way
    EXPECT_EQ(0u, bnb4_grid_small_tile_rows(32, 4096, 768, 132));    // 96 of 256, 192 of 128 (2 waves)
    EXPECT_EQ(0u, bnb4_grid_small_tile_rows(32, 4096, 128, 132));    // 32 tiles
    EXPECT_EQ(256u, bnb4_grid_small_tile_rows(64, 2048, 512, 132));  // 8192x2048 m = 512: 128 of 256
    EXPECT_EQ(0u, bnb4_grid_small_tile_rows(32, 2048, 512, 132));    // 4096x2048: 128 rows needs K >= 4096
    EXPECT_EQ(0u, bnb4_grid_small_tile_rows(32, 4096, 400, 132));    // 128 tiles, but 22 % of their rows padding
    EXPECT_EQ(128u, bnb4_grid_small_tile_rows(32, 4096, 480, 132));  // 6 % padding
    for (size_t row_tiles = 1; row_tiles <= 80; row_tiles++)
        for (size_t m = 65; m <= 4096; m += 37)
            for (size_t ctas : {1, 7, 132}) {
                const size_t bx = bnb4_grid_small_tile_rows(row_tiles, 4096, m, ctas);
                const std::string what = std::to_string(row_tiles) + " row tiles, m " + std::to_string(m) +
                                         " on " + std::to_string(ctas);
                ASSERT_TRUE(bx == 0 || bx == 128 || bx == 256) << what;
                if (bx == 0)
                    continue;
                const size_t tiles = row_tiles * ((m + bx - 1) / bx), waves = (tiles + ctas - 1) / ctas;
                ASSERT_GE(row_tiles * m * 10, waves * ctas * bx * 9) << what; // rows m fill 90 % of the waves
                ASSERT_TRUE(bx == 256 || waves == 1) << what;
            }
}

// m = 65..128 as the pipe kernel's matmuls of 64 rows (bnb4_grid_pipe_chunks; H200, docs/performance.md v57): on
// weights of 2^24+ elements and 2048+ rows where the tile kernel does not take m, and before it where the last slice
// has at most 8 rows. The rule alone (where it applies also needs the pipe kernel's TMA variant: the GPU's tests).
TEST(CudaGrid, MidSizedWeightsPastM64TakeThePipeKernelsSlices) {
    EXPECT_EQ(1, bnb4_grid_pipe_chunks(4096, 4096, 128, 64));  // 2^24 elements, 32 tiles: dequantize + cuBLAS before
    EXPECT_EQ(1, bnb4_grid_pipe_chunks(4096, 4096, 73, 64));   // a last slice of 9 rows
    EXPECT_EQ(2, bnb4_grid_pipe_chunks(4096, 4096, 72, 64));   // of 8: before the tile kernel too
    EXPECT_EQ(2, bnb4_grid_pipe_chunks(14336, 4096, 65, 64));  // (2-31 % faster than the tile kernel at m = 65..72)
    EXPECT_EQ(1, bnb4_grid_pipe_chunks(14336, 4096, 80, 64));  // (where the tile kernel takes m, it stays)
    EXPECT_EQ(1, bnb4_grid_pipe_chunks(2048, 8192, 96, 64));   // 2048 rows: 3-16 % faster
    EXPECT_EQ(0, bnb4_grid_pipe_chunks(1024, 16384, 96, 64));  // 1024 rows: 9-57 % slower
    EXPECT_EQ(0, bnb4_grid_pipe_chunks(2048, 4096, 96, 64));   // under 2^24 elements
    EXPECT_EQ(0, bnb4_grid_pipe_chunks(4096, 4096, 64, 64));   // the pipe kernel's own m
    EXPECT_EQ(0, bnb4_grid_pipe_chunks(4096, 4096, 129, 64));  // three slices lost (m = 192: 0.95-1.34x)
    EXPECT_EQ(0, bnb4_grid_pipe_chunks(4096, 4096, 100, 0));   // no pipe kernel
    for (size_t N : {1024, 2047, 2048, 4096, 100000})
        for (size_t K : {1024, 4096, 8192, 16384})
            for (size_t m = 1; m <= 300; m++) {
                const int c = bnb4_grid_pipe_chunks(N, K, m, 64);
                const std::string what = std::to_string(N) + "x" + std::to_string(K) + " m " + std::to_string(m);
                ASSERT_TRUE(c >= 0 && c <= 2) << what;
                ASSERT_EQ(m > 64 && m <= 128 && N * K >= ((size_t)1 << 24) && N >= 2048 ? (m <= 72 ? 2 : 1) : 0, c)
                    << what;
            }
}

// Tiles cut in equal parts at m = 33..64 (the rule is asked only there): every contributor adds a share of the rows
// where 4 parts or more of at most 8 steps end together, at m > 48; elsewhere the last 3 of 4 parts without nested
// absmax (bnb4_grid_pipe_spread; H200, docs/performance.md v59, v60). The rule alone.
TEST(CudaGrid, EqualPartsAddedInSharesWhereShortRunsEndTogether) {
    EXPECT_EQ(4u, bnb4_grid_pipe_spread(4, 4, 64, 0));  // 4096x4096: 16 steps a tile in 4 parts, 4.4-6.7 % faster
    EXPECT_EQ(4u, bnb4_grid_pipe_spread(4, 8, 56, 1));  // 3072x8192: 32 steps, 2.5-4.2 %
    EXPECT_EQ(4u, bnb4_grid_pipe_spread(4, 6, 64, 1));  // 4096x6144: 24 steps in 4 parts, 3.1-4.9 %
    EXPECT_EQ(3u, bnb4_grid_pipe_spread(4, 4, 40, 0));  // m = 33..48: the first to arrive leaves, up to 5 % faster
    EXPECT_EQ(0u, bnb4_grid_pipe_spread(4, 8, 40, 1));  // nested: up to 2.5 % slower, the counter
    EXPECT_EQ(0u, bnb4_grid_pipe_spread(8, 4, 40, 0));  // 8 parts at m <= 48: not measured, the counter
    EXPECT_EQ(3u, bnb4_grid_pipe_spread(4, 14, 64, 0)); // 4096x14336: runs of 14 steps, plain 0.7-3.5 % faster
    EXPECT_EQ(0u, bnb4_grid_pipe_spread(4, 14, 64, 1)); // nested -1.4..+2.9 %
    EXPECT_EQ(0u, bnb4_grid_pipe_spread(2, 8, 64, 0));  // halves (5120x5120, 6144x4096, 4608x4096): up to 5 % slower
    for (size_t parts = 1; parts <= 16; parts++)
        for (size_t per = 1; per <= 64; per++)
            for (size_t m = 33; m <= 64; m++)
                for (int nested = 0; nested < 2; nested++) {
                    const size_t want = parts >= 4 && per <= 8 && m > 48 ? parts : parts == 4 && !nested ? 3 : 0;
                    ASSERT_EQ(want, bnb4_grid_pipe_spread(parts, per, m, nested))
                        << parts << " parts of " << per << " steps, m " << m << (nested ? " nested" : " plain");
                }
}

// The log of the last matmul outputs that decides whether a matmul may read its weights before it waits
// for the kernel before it (cuda_outputs.h: host code, checked on every machine): per stream, direct
// launches and each capture apart, unknown streams counted as overlapping for direct launches; captured
// calls also against the recent outputs of their own capture from any stream.
TEST(CudaOutputs, WeightsInAPendingOutputWait) {
    bnb4_output_log log;
    int streams[bnb4_output_log::kStreams + 1];
    const void *a = &streams[0], *b = &streams[1];
    const bnb4_range y{1000, 2000}, inside{1500, 1600}, after{2000, 3000}, none{0, 0};
    EXPECT_TRUE(log.may_overlap(a, 0, &after, 1)) << "a stream never seen is unknown";
    log.record(a, 0, y);
    EXPECT_TRUE(log.may_overlap(a, 0, &inside, 1));
    EXPECT_FALSE(log.may_overlap(a, 0, &after, 1)) << "[lo, hi): the byte at 2000 is not y's";
    const bnb4_range parts[3] = {after, none, {1999, 2001}};
    EXPECT_TRUE(log.may_overlap(a, 0, parts, 3)) << "any part";
    EXPECT_FALSE(log.may_overlap(a, 0, parts, 2)) << "empty parts never overlap";
    EXPECT_TRUE(log.may_overlap(b, 0, &after, 1)) << "another stream is not a";
    log.record(b, 0, after);
    EXPECT_FALSE(log.may_overlap(a, 0, &after, 1)) << "b's output is not a's";
    // captures 7 and 8: compared with their own outputs only, and the direct record stays a's
    EXPECT_FALSE(log.may_overlap(a, 7, &inside, 1)) << "nothing captured yet: the graph's first node";
    log.record(a, 7, {5000, 6000});
    log.record(b, 7, {7000, 8000});
    log.record(a, 8, {9000, 9100});
    const bnb4_range c1{5500, 5501}, c2{7999, 8000}, c3{9050, 9060};
    EXPECT_TRUE(log.may_overlap(a, 7, &c1, 1));
    EXPECT_TRUE(log.may_overlap(a, 7, &c2, 1)) << "another stream joined into the capture";
    EXPECT_FALSE(log.may_overlap(a, 7, &c3, 1)) << "another capture";
    EXPECT_FALSE(log.may_overlap(a, 8, &c1, 1)) << "another capture";
    EXPECT_TRUE(log.may_overlap(a, 0, &inside, 1)) << "the direct launch before the captures";
    EXPECT_FALSE(log.may_overlap(a, 0, &c1, 1));
    for (int i = 0; i < bnb4_output_log::kCaptured; i++)
        log.record(b, 9, {100000 + 10 * (uintptr_t)i, 100000 + 10 * (uintptr_t)i + 10});
    EXPECT_FALSE(log.may_overlap(b, 7, &c1, 1)) << "the ring keeps the last kCaptured";
    EXPECT_TRUE(log.may_overlap(b, 7, &c2, 1)) << "b's last output in capture 7, pushed out of the ring";
    // a failed call voids its stream's record
    log.record(b, 0, {0, UINTPTR_MAX});
    EXPECT_TRUE(log.may_overlap(b, 0, &c3, 1));
    // direct: the least recently recorded (stream, capture) makes room; a stream pushed out is unknown
    // again (a's direct record is now the oldest)
    for (int i = 2; i < bnb4_output_log::kStreams; i++)
        log.record(&streams[i], 0, after);
    EXPECT_TRUE(log.may_overlap(a, 0, &after, 1)) << "a was pushed out";
    EXPECT_FALSE(log.may_overlap(&streams[2], 0, &inside, 1));
}

// The graph nodes our matmuls left, by which a captured call knows its predecessor is one of them (our_node: the
// early activations' condition, cuda_outputs.h)
TEST(CudaOutputs, OurMatmulsNodesAreKnownInTheirCaptureOnly) {
    bnb4_output_log log;
    int nodes[4];
    const void *stream = &nodes[3];
    EXPECT_FALSE(log.our_node(7, &nodes[0])) << "nothing recorded";
    log.record(stream, 7, {1000, 2000}, &nodes[0]);
    log.record(stream, 7, {3000, 4000}); // (a node not known)
    log.record(stream, 8, {5000, 6000}, &nodes[1]);
    EXPECT_TRUE(log.our_node(7, &nodes[0]));
    EXPECT_TRUE(log.our_node(8, &nodes[1]));
    EXPECT_FALSE(log.our_node(8, &nodes[0])) << "another capture's node";
    EXPECT_FALSE(log.our_node(7, &nodes[2])) << "a node no matmul of ours left (a caller's kernel)";
    EXPECT_FALSE(log.our_node(7, nullptr)) << "no node: not ours";
    EXPECT_FALSE(log.our_node(0, &nodes[0])) << "direct launches have no nodes";
    log.record(stream, 0, {7000, 8000}, &nodes[2]);
    EXPECT_FALSE(log.our_node(0, &nodes[2])) << "nor does a direct record keep one";
    for (int i = 0; i < bnb4_output_log::kCaptured; i++)
        log.record(stream, 9, {10000, 10010});
    EXPECT_FALSE(log.our_node(7, &nodes[0])) << "pushed out of the ring: not known, so not ours";
}

// Where the pipe kernel's post-scaled math takes narrow tiles (32 rows x 1024-k steps) on 132 SMs, as
// measured (docs/performance.md v30, v54, v61): 128-row tiles of 4096-row weights are cut in parts, narrow ones run
// whole; 1024-row weights run narrow tiles in parts on 128 CTAs instead of 64; 2048-row ones on as many CTAs
// stay; 6144x4096's narrow tiles run whole (2 a CTA, 2 steps more than stream-K's) where 128-row ones are halved;
// 12288x4096's narrow ones whole in 12 steps, its 128-row ones whole in 16; 14336x4096 and 28672x8192 run 128-row
// tiles whole (narrow ones 16 and 56 steps against 16 and 64: not 80 % or fewer), as does 128256x4096 - but at plain
// absmax and m <= 8 (plain_small) narrow ones in 7/8 of the steps are taken too (28672x8192, not 128256x4096).
TEST(CudaGrid, NarrowTilesWhereWideOnesAreShared) {
    const auto narrow = [](size_t N, size_t K, size_t ctas = 132, int plain_small = 0) {
        const size_t wt = (N + 127) / 128, ws = (K + 255) / 256, nt = (N + 31) / 32, ns = (K + 1023) / 1024;
        return bnb4_grid_prefer_narrow(wt, ws, bnb4_grid_steps_per_cta(wt, ws, ctas, 8, BNB4_GRID_PIPE_SK_STEPS), nt,
                                       ns, bnb4_grid_steps_per_cta(nt, ns, ctas, 8, BNB4_GRID_PIPE_SK_STEPS),
                                       plain_small) != 0;
    };
    // both tilings whole, narrow ones in 7/8 of the steps (28672x8192: 7 narrow tiles of 8 steps a CTA against 2 of
    // 32): narrow at plain absmax and m <= 8 only; 124 of 128 steps (128256x4096) and 16 of 16 (14336x4096) never
    EXPECT_TRUE(narrow(28672, 8192, 132, 1));
    EXPECT_TRUE(narrow(28672, 4096, 132, 1));
    EXPECT_TRUE(narrow(57344, 8192, 132, 1));
    EXPECT_FALSE(narrow(28672, 4096));
    EXPECT_FALSE(narrow(128256, 4096, 132, 1));
    EXPECT_FALSE(narrow(14336, 4096, 132, 1));
    EXPECT_TRUE(narrow(4096, 4096, 132, 1));
    EXPECT_TRUE(narrow(4096, 4096));
    EXPECT_TRUE(narrow(4096, 14336));
    EXPECT_TRUE(narrow(4096, 11008));
    EXPECT_TRUE(narrow(8192, 8192));
    EXPECT_TRUE(narrow(1024, 4096));
    EXPECT_TRUE(narrow(1024, 8192));
    EXPECT_FALSE(narrow(2048, 4096));
    EXPECT_FALSE(narrow(2048, 14336));
    EXPECT_TRUE(narrow(6144, 4096));
    EXPECT_TRUE(narrow(11008, 4096));
    EXPECT_TRUE(narrow(12288, 4096));
    EXPECT_FALSE(narrow(14336, 4096));
    EXPECT_FALSE(narrow(28672, 8192));
    EXPECT_FALSE(narrow(128256, 4096));
    EXPECT_FALSE(narrow(300, 1024, 1)); // one CTA: every tiling whole
}

// The pipelined tensor-core kernel cuts all tiles' 256-k iterations into equal runs over its grid: whole
// tiles or equal parts of tiles on the default grid ("0", at most one CTA per SM), stream-K on a forced
// one (BNB4_CUDA_PIPE_CTAS, read per call), which makes small shapes share tiles between CTAs: 1 CTA doing
// everything, CTAs running from one tile into the next, tiles summed from 2..9 CTAs' partials, odd N /
// partial last step / blocksizes past the step.
// On sm_90 the shapes with blocksize 32/64 and whole blocks per step run the kernel's TMA variant (plain:
// K % (4 blocksize) == 0; nested: K % (4 blocksize) == 0), the others its cp.async variant. At m <= 16 with
// blocksize 64 its post-scaled math runs on 128-row tiles and on narrow ones (32 rows x 1024-k steps), each
// forced (BNB4_CUDA_PIPE_NARROW=0 / 1, read per call): 136 x 1024 and 200 x 1280 have a part-filled last
// tile, 200 x 1280 a step of 1024 k past K's end. Nested codes come by tensor copies where a row's codes are
// 16-byte strided (K % (16 blocksize) == 0), else in 4-byte words by the producer warp's lanes (200 x 1280,
// 70 x 384, 520 x 2304), and those are forced on the others too (BNB4_CUDA_PIPE_CODES_ASYNC=1); the post-scaled
// math takes instead a whole tile's codes by one bulk copy where its tiles are whole (256 x 1280, 128 x 3328:
// 20 and 52 codes a row; code buffers refilled as a CTA's run crosses tiles on the small grids), and the lanes'
// words forced there too (BNB4_CUDA_PIPE_CODES_TILE=0). The post-scaled math's stages hold m activation rows
// where m < 8 or 16 (m = 1, 2, 5, 9, 13: boxes whose 128-byte rows cross the swizzle's 8-row period anywhere).
TEST_F(CudaTest, PipeKernelSplitsTilesOverAnyGrid) {
    auto g = rng(106);
    // (70 x 384 bs32 and 200 x 1280 bs64 take the 16-byte scale copies, the first with a half last step;
    // TMA: 70 x 384, 200 x 1280 and 520 x 2304 (nested: codes by the producer's lanes), 136 x 1024 bs64
    // and 520 x 2560 bs32 plain and nested, N past the tile's rows, a step's codes in the second half of
    // their 16-code run, and at m = 17 / 40 activation rows past m in the boxes; bs64 at m <= 16 the
    // post-scaled k quarters; nested blocksizes 2 and 4, under a step's 4 / 8 blocks of a row, so a row's
    // blocks in one step have different nested absmax; wgmma takes a 128-k half's blocks under one nested
    // absmax, so bs32 with nested blocksize 2 runs on mma.sync; TMA, nested: the consumers load each row's two
    // nested absmax per window of nested blocksize x blocksize k - one step where that is less than a step
    // (nested blocksizes 2 and 4), and 136 x 2304 bs64 with nested blocksize 8 two 256-k steps a window, so a
    // tile's run crosses windows, and rows cross nested blocks inside them; at m = 9..16 nested blocks of 2+ at
    // blocksize 64 take the wgmma math where tiles are not narrow, and 200 x 1280 with nested blocksize 1 the
    // post-scaled one; rows that each lie in one nested block take the kernels without windows, pipe_row_nab_built:
    // 136 x 1024 bs64, 16 rows a nested block, and 136 x 512 bs64 with nested blocksize 8, one row each - and the
    // windows' kernels forced there too, BNB4_CUDA_PIPE_ROW_NAB=0)
    struct Shape { size_t N, K, bs, nbs = 256; };
    std::vector<Shape> shapes = {{300, 1056, 64},    {1000, 2080, 32}, {130, 4096, 256}, {257, 512, 4096},
                                 {64, 8192, 128},    {70, 384, 32},    {200, 1280, 64},  {136, 1024, 64},
                                 {520, 2304, 32},    {520, 2560, 32},  {264, 1024, 32, 4}, {136, 2048, 64, 2},
                                 {264, 1024, 32, 2}, {256, 1280, 64},  {128, 3328, 64, 2}, {136, 2304, 64, 8},
                                 {200, 1280, 64, 1}, {136, 512, 64, 8}};
    std::vector<size_t> ms = {1, 2, 5, 9, 13, 17, 40, 64};
    const std::vector<const char *> grids = {"1", "2", "5", "13", "0"}; // "0": the default (one CTA per SM)
    if (quick()) {
        shapes = {{300, 1056, 64}, {257, 512, 4096}, {70, 384, 32}, {136, 1024, 64}, {200, 1280, 64},
                  {264, 1024, 32, 4}, {256, 1280, 64}, {136, 2304, 64, 8}, {200, 1280, 64, 1}, {136, 512, 64, 8}};
        ms = {1, 2, 9, 40};
    }
    const bool pipe_m1 = std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMV, BNB4_F16, 1), "pipe") != nullptr;
    for (const Shape &s : shapes)
        for (int nested = 0; nested < 2; nested++) {
            const bnb4_quant_type qt = nested ? BNB4_FP4 : BNB4_NF4;
            const HostWeight w = make_weight(s.N, s.K, s.bs, qt, g, s.nbs);
            DeviceWeight dw(w);
            const bnb4_qtensor wd = dw.device(nested), wh = dw.host(nested);
            for (size_t m : ms) {
                if (m == 1 && !pipe_m1)
                    continue; // m = 1 is the gemv kernel's unless BNB4_CUDA_GEMV_MAX_M=0
                if (std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, m), "pipe") == nullptr &&
                    test_smem_optin() < kSmemHopper)
                    continue; // (the device's shared memory gives this m to dequantize + cuBLAS)
                for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16}) {
                    ASSERT_NE(nullptr, std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, m), "pipe"));
                    const size_t es = bnb4_dtype_size(dt);
                    const Array x = randn(dt, m * s.K, g), bias = randn(dt, s.N, g);
                    const MatmulRef want = reference_matmul(wh, x, m, &bias);
                    DevBuf dx(x.data(), m * s.K * es), db(bias.data(), s.N * es);
                    // (rows of one nested block each: blocksize 64's kernels at m <= 32 without windows)
                    const bool row_nab = nested && s.bs == 64 && m <= 32 && s.K % 64 == 0 && s.nbs % (s.K / 64) == 0;
                    for (int variant = 0; variant < 16; variant++) {
                        const char *narrow = variant & 1 ? "1" : "0", *codes_async = variant & 2 ? "1" : "0";
                        const char *codes_tile = variant & 4 ? "0" : "1", *row_nab_on = variant & 8 ? "0" : "1";
                        if ((m > 16 && *narrow == '1') || (!nested && (variant & 6)) ||
                            (*codes_tile == '0' && (m > 16 || s.bs != 64)) || (*row_nab_on == '0' && !row_nab))
                            continue; // (codes by tile: the post-scaled math, m <= 16 and blocksize 64)
                        setenv("BNB4_CUDA_PIPE_NARROW", narrow, 1);
                        setenv("BNB4_CUDA_PIPE_CODES_ASYNC", codes_async, 1);
                        setenv("BNB4_CUDA_PIPE_CODES_TILE", codes_tile, 1);
                        setenv("BNB4_CUDA_PIPE_ROW_NAB", row_nab_on, 1);
                        check_gemm_on_grids(wd, dt, m, dx.as<void>(), db.as<void>(), want, "BNB4_CUDA_PIPE_CTAS",
                                            grids,
                                            "N " + std::to_string(s.N) + " K " + std::to_string(s.K) + " bs " +
                                                std::to_string(s.bs) + " m " + std::to_string(m) + " " +
                                                bnb4_dtype_name(dt) +
                                                (nested ? " nested fp4 nbs " + std::to_string(s.nbs) : " nf4") +
                                                (m <= 16 ? std::string(" narrow ") + narrow : "") +
                                                (nested ? std::string(" codes_async ") + codes_async +
                                                              " codes_tile " + codes_tile
                                                        : "") +
                                                (row_nab ? std::string(" row_nab ") + row_nab_on : ""));
                        unsetenv("BNB4_CUDA_PIPE_NARROW");
                        unsetenv("BNB4_CUDA_PIPE_CODES_ASYNC");
                        unsetenv("BNB4_CUDA_PIPE_CODES_TILE");
                        unsetenv("BNB4_CUDA_PIPE_ROW_NAB");
                        if (HasFatalFailure())
                            return;
                    }
                }
            }
        }
}

// Nested codes by tile alone (the post-scaled math at m <= 16, blocksize 64, whole 32- and 128-row tiles, K %
// 1024 != 0): a small case of the sweep above, cheap enough to run under compute-sanitizer's race check - one CTA
// refilling both code buffers tile after tile, CTAs crossing tiles, and whole tiles on the default grid. (Nested
// blocksize 1: at m = 9 wider nested blocks would take the wgmma math, pipe_use_wgmma.)
TEST_F(CudaTest, PipeKernelCodesByTile) {
    auto g = rng(109);
    const size_t N = 256, K = 1280, bs = 64;
    const HostWeight w = make_weight(N, K, bs, BNB4_NF4, g, 1);
    DeviceWeight dw(w);
    const bnb4_qtensor wd = dw.device(true), wh = dw.host(true);
    for (size_t m : {2, 9}) { // (m = 2: m = 1's kernel, which small weights' m = 1 does not take)
        const Array x = randn(BNB4_F16, m * K, g);
        const MatmulRef want = reference_matmul(wh, x, m, nullptr);
        DevBuf dx(x.data(), m * K * 2);
        for (const char *narrow : {"0", "1"}) {
            setenv("BNB4_CUDA_PIPE_NARROW", narrow, 1);
            check_gemm_on_grids(wd, BNB4_F16, m, dx.as<void>(), nullptr, want, "BNB4_CUDA_PIPE_CTAS", {"1", "3", "0"},
                                "m " + std::to_string(m) + " narrow " + narrow);
            unsetenv("BNB4_CUDA_PIPE_NARROW");
            if (HasFatalFailure())
                return;
        }
    }
}

// Tiles cut in equal parts (BNB4_CUDA_PIPE_CTAS: 2, 4 and 5 parts) at m = 33..64: every contributor adds a share of
// the tile's rows m (BNB4_CUDA_PIPE_SPREAD=64: on any equal parts; by default bnb4_grid_pipe_spread), or only the
// last 3, 2 or 1 to arrive (the others leave), where else the counter's last arrival adds them all - the same sums in
// the same order, so the same bytes. Rows m that do not split evenly (m = 40 in 3, 4 or 5), a part-filled last tile,
// plain and nested, a bias; and m = 9 / 17, which keep the counter, on the same grids. Small enough for the
// sanitizers.
TEST_F(CudaTest, PipeKernelEqualPartsAddedInShares) {
    auto g = rng(113);
    struct Shape { size_t N, K, bs; const char *grid; };
    for (const Shape s : {Shape{136, 1024, 64, "5"}, Shape{136, 1024, 64, "13"}, Shape{200, 1280, 64, "13"},
                          Shape{264, 1024, 32, "7"}})
        for (int nested = 0; nested < 2; nested++) {
            const HostWeight w = make_weight(s.N, s.K, s.bs, BNB4_NF4, g, 256);
            DeviceWeight dw(w);
            const bnb4_qtensor wd = dw.device(nested), wh = dw.host(nested);
            for (size_t m : {9, 17, 40, 64}) {
                const bnb4_dtype dt = m % 2 ? BNB4_F16 : BNB4_BF16;
                const size_t es = bnb4_dtype_size(dt), n_out = m * s.N;
                const Array x = randn(dt, m * s.K, g), bias = randn(dt, s.N, g);
                const MatmulRef want = reference_matmul(wh, x, m, &bias);
                DevBuf dx(x.data(), m * s.K * es), db(bias.data(), s.N * es);
                const std::string what = "N " + std::to_string(s.N) + " K " + std::to_string(s.K) + " bs " +
                                         std::to_string(s.bs) + " grid " + s.grid + " m " + std::to_string(m) +
                                         (nested ? " nested" : " plain");
                trace(what);
                ScopedEnv env({{"BNB4_CUDA_PIPE_NARROW", "0"}, {"BNB4_CUDA_PIPE_CTAS", s.grid},
                               {"BNB4_CUDA_PIPE_SPREAD", nullptr}});
                std::vector<uint8_t> counter; // BNB4_CUDA_PIPE_SPREAD=0, then the shares against it
                for (const char *sharers : {"0", "64", "3", "2", "1"}) {
                    setenv("BNB4_CUDA_PIPE_SPREAD", sharers, 1);
                    const std::string setting = what + " sharers " + sharers;
                    DevBuf dy(n_out * es + 16);
                    ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &wd, dt, m, dx.as<void>(), db.as<void>(), dy.as<void>()))
                        << setting << ": " << bnb4_last_error();
                    sync();
                    const std::vector<uint8_t> out = dy.get();
                    ASSERT_EQ(std::vector<uint8_t>(16, 0xFF), std::vector<uint8_t>(out.end() - 16, out.end()))
                        << setting << ": wrote past the output";
                    if (counter.empty()) {
                        counter = out;
                        const std::vector<double> got = values_of(out, dt, n_out);
                        ASSERT_EQ(0u, count_nonfinite(got)) << setting << ": unwritten or non-finite outputs";
                        expect_close(got, want, dt, setting);
                    } else {
                        ASSERT_TRUE(same_bytes(counter, out, setting + ": shares = the last arrival's sums"));
                    }
                }
            }
        }
}

// Nested codes by tensor copies of row groups (kCodesGroups: K / blocksize not a multiple of 16, but of 8 or 4, and
// N of the group's 2 or 4 rows), on the wgmma math at m = 9 / 17 / 40 (128-row tiles forced at m = 9), mma.sync at
// blocksize 32 (m = 2), and at blocksize 64 m = 2 the post-scaled math, which takes the lanes' words instead (codes
// by tile off) - on one CTA, CTAs crossing tiles, and the default grid, with rows past N in the last tile. Small
// enough for compute-sanitizer's memcheck and racecheck.
TEST_F(CudaTest, PipeKernelCodesByRowGroups) {
    auto g = rng(111);
    struct Shape { size_t N, K, bs; };
    // 20, 24, 40 and 20 codes a row: groups of 4, 2, 2 and 4 rows
    for (const Shape s : {Shape{200, 1280, 64}, Shape{130, 1536, 64}, Shape{264, 2560, 64}, Shape{200, 640, 32}}) {
        const HostWeight w = make_weight(s.N, s.K, s.bs, BNB4_NF4, g, 256);
        DeviceWeight dw(w);
        const bnb4_qtensor wd = dw.device(true), wh = dw.host(true);
        for (size_t m : {2, 9, 17, 40}) {
            const Array x = randn(BNB4_BF16, m * s.K, g);
            const MatmulRef want = reference_matmul(wh, x, m, nullptr);
            DevBuf dx(x.data(), m * s.K * 2);
            ScopedEnv env({{"BNB4_CUDA_PIPE_NARROW", "0"}, {"BNB4_CUDA_PIPE_CODES_TILE", "0"}});
            check_gemm_on_grids(wd, BNB4_BF16, m, dx.as<void>(), nullptr, want, "BNB4_CUDA_PIPE_CTAS", {"1", "3", "0"},
                                "N " + std::to_string(s.N) + " K " + std::to_string(s.K) + " bs " +
                                    std::to_string(s.bs) + " m " + std::to_string(m));
            if (HasFatalFailure())
                return;
        }
    }
}

// Nested absmax on a weight past the natural wgmma path's size limit (5 x 2^24 elements: pipe_use_natural), where
// m = 9..16 still take that path and m = 17..64 the permuted activations, a lane decoding one of its quad pair's
// two rows (kWgPermuted64; the sweeps' weights are all under the limit, and reach it with NATURAL_MAX=0).
// Random bytes are a valid 4-bit tensor (any nibble and any 8-bit code decode), so the weight is drawn as such,
// not quantized: 88 M elements in well under a second.
TEST_F(CudaTest, PipeKernelNestedOnALargeWeight) {
    auto g = rng(110);
    const size_t N = 6144, K = 14336, bs = 64, nbs = 256, n = N * K, nb = n / bs;
    ASSERT_GT(n, (size_t)5 << 24);
    HostWeight w{N, K, bs, BNB4_NF4, {}, {}, {}, {}, 0.0f, nbs};
    w.packed.resize(n / 2);
    w.codes.resize(nb);
    w.nabs.resize(ceil_div(nb, nbs));
    for (size_t i = 0; i < w.packed.size(); i += 8) { // (n / 2 is a multiple of 8)
        const uint64_t r = g();
        std::memcpy(w.packed.data() + i, &r, 8);
    }
    for (uint8_t &c : w.codes)
        c = (uint8_t)g();
    std::uniform_real_distribution<float> nab(0.01f, 0.1f);
    for (float &v : w.nabs)
        v = nab(g);
    w.offset = 0.03f;
    DeviceWeight dw(w);
    const bnb4_qtensor wd = dw.device(true), wh = dw.host(true);
    const std::vector<size_t> ms = quick() ? std::vector<size_t>{16, 32} : std::vector<size_t>{1, 9, 16, 17, 32, 64};
    for (size_t m : ms)
        for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16}) {
            if (quick() && dt == BNB4_BF16)
                continue;
            const size_t es = bnb4_dtype_size(dt);
            const Array x = randn(dt, m * K, g);
            const std::string what = "6144x14336 nested m " + std::to_string(m) + " " + bnb4_dtype_name(dt) + " (" +
                                     bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, m) + ")";
            trace(what);
            DevBuf dx(x.data(), m * K * es), dy(m * N * es + 16);
            ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &wd, dt, m, dx.as<void>(), nullptr, dy.as<void>()))
                << what << ": " << bnb4_last_error();
            sync();
            const std::vector<uint8_t> yb = dy.get();
            const std::vector<double> got = values_of(yb, dt, m * N);
            ASSERT_EQ(0u, count_nonfinite(got)) << what << ": unwritten or non-finite outputs";
            expect_close(got, reference_matmul(wh, x, m, nullptr), dt, what);
            ASSERT_EQ(std::vector<uint8_t>(16, 0xFF), std::vector<uint8_t>(yb.end() - 16, yb.end()))
                << what << ": wrote past the output";
        }
}

// m past the pipe kernel's 64 as launches of 64 rows (bnb4_cuda_pipe_chunks): a matmul of m rows is then, bit for bit,
// the matmuls of its 64-row slices (each launch is one), and agrees with the float64 reference. Forced
// (BNB4_CUDA_PIPE_CHUNKS=1, read per call) on small weights - odd N, a half last step, blocksize 32, nested blocks
// crossing steps, a bias - and taken by the rule on a 4096x4096 weight (2^24 elements, whose tile-kernel tiles do not
// fill the grid), where dequantize + cuBLAS ran before. Under settings that route these m elsewhere (the forced passes
// of scripts/cuda_check.sh: no TMA, the tile kernel on every weight) only the reference holds.
TEST_F(CudaTest, PipeKernelInLaunchesOf64Rows) {
    if (std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, 64), "pipe_wgmma") == nullptr)
        GTEST_SKIP() << "the pipe kernel's TMA variant needs sm_90 code (m >= 65 takes the tile kernel or cuBLAS)";
    auto g = rng(111);
    struct Case { size_t N, K, bs, nbs; bool nested, forced; };
    // (the TMA layouts: plain K % (4 blocksize) == 0, nested blocksize 32 or 64 and K % (4 blocksize) == 0)
    std::vector<Case> cases = {{137, 1280, 64, 256, false, true}, {70, 384, 32, 256, false, true},
                               {520, 2560, 32, 4, true, true},    {136, 2304, 64, 8, true, true},
                               {4096, 4096, 64, 256, false, false}, {4096, 4096, 64, 256, true, false}};
    std::vector<size_t> ms = {65, 72, 80, 100, 128};
    if (quick()) {
        cases = {{137, 1280, 64, 256, false, true}, {136, 2304, 64, 8, true, true}, {4096, 4096, 64, 256, true, false}};
        ms = {65, 128};
    }
    bool routed_as_built = true; // (no setting that moves m = 65..128 to another path)
    for (const char *v : {"BNB4_CUDA_PIPE_CHUNKS", "BNB4_CUDA_PIPE_TMA", "BNB4_CUDA_PIPE_MAX_M",
                          "BNB4_CUDA_TILE_MIN_WEIGHTS", "BNB4_CUDA_TILE_MIN_M", "BNB4_CUDA_SMEM_OPTIN"})
        routed_as_built = routed_as_built && getenv(v) == nullptr;
    for (const Case &c : cases) {
        const ScopedEnv env({{"BNB4_CUDA_PIPE_CHUNKS", c.forced ? "1" : nullptr}});
        const HostWeight w = make_weight(c.N, c.K, c.bs, c.nested ? BNB4_FP4 : BNB4_NF4, g, c.nbs);
        DeviceWeight dw(w);
        const bnb4_qtensor wd = dw.device(c.nested), wh = dw.host(c.nested);
        for (size_t m : ms)
            for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16}) {
                if (quick() && dt == BNB4_BF16)
                    continue;
                const size_t es = bnb4_dtype_size(dt), row_bytes = c.N * es;
                const Array x = randn(dt, m * c.K, g), bias = randn(dt, c.N, g);
                const std::string what = std::to_string(c.N) + "x" + std::to_string(c.K) + " bs " +
                                         std::to_string(c.bs) + (c.nested ? " nested fp4" : " nf4") + " m " +
                                         std::to_string(m) + " " + bnb4_dtype_name(dt) +
                                         (c.forced ? " (forced)" : " (the rule)");
                trace(what);
                DevBuf dx(x.data(), m * c.K * es), db(bias.data(), row_bytes), dy(m * row_bytes + 16),
                    dparts(m * row_bytes);
                const bool sliced = !std::strcmp("pipe", test_ctx_gemm_path(ctx, wd, dt, m, dx.as<void>()));
                if (routed_as_built) {
                    ASSERT_TRUE(sliced) << what << ": takes " << test_ctx_gemm_path(ctx, wd, dt, m, dx.as<void>());
                }
                ASSERT_EQ(BNB4_OK, bnb4_linear(ctx, &wd, dt, m, dx.as<void>(), db.as<void>(), dy.as<void>()))
                    << what << ": " << bnb4_last_error();
                for (size_t r0 = 0; r0 < m; r0 += 64)
                    ASSERT_EQ(BNB4_OK, bnb4_linear(ctx, &wd, dt, std::min<size_t>(64, m - r0),
                                                   dx.as<void>(r0 * c.K * es), db.as<void>(),
                                                   dparts.as<void>(r0 * row_bytes)))
                        << what << " rows " << r0 << ": " << bnb4_last_error();
                sync();
                const std::vector<uint8_t> yb = dy.get();
                const std::vector<double> got = values_of(yb, dt, m * c.N);
                ASSERT_EQ(0u, count_nonfinite(got)) << what << ": unwritten or non-finite outputs";
                ASSERT_EQ(std::vector<uint8_t>(16, 0xFF), std::vector<uint8_t>(yb.end() - 16, yb.end()))
                    << what << ": wrote past the output";
                if (sliced) {
                    ASSERT_TRUE(
                        same_bytes(dparts.get(), dy.get(0, m * row_bytes), what + ": against its 64-row slices"));
                }
                expect_close(got, reference_matmul(wh, x, m, &bias), dt, what);
            }
    }
}

// The fused wgmma tile kernel for m past 64 (compute capability 9.0, sm_90a build): 128 weight rows x 128
// activation rows per tile (the k split: two groups of warpgroups on the even and odd steps) at m <= 128 and
// 257..384, else 256 (m = 130, 200, 400 here), 64-k steps cut into equal runs over the grid as the pipe
// kernel's. The grid is forced small (BNB4_CUDA_TILE_CTAS, read per call) so tiles are shared by 2..many CTAs
// and CTAs run across tiles; odd N and m (rows past the matrix in the boxes), a partial last step (K % 64 == 32),
// blocksize 32 (two scales per step) and blocks longer than a row (bs 4096 > K). With plain absmax the tiles take
// the rows' absmax themselves where K % 64 == 0, blocksize >= 64, a row's blocks are 16-byte strided (129 x 4096,
// 136 x 1024 bs 64, 64 x 8192 bs 256) and, at 128 rows, the CTAs run whole tiles (here the grids of 1 and 2
// CTAs); else (nested, the other shapes and grids, and forced: BNB4_CUDA_TILE_SCALE_PASS=1, read per call) the
// scale pairs a pre-pass kernel wrote.
TEST_F(CudaTest, TileKernelSplitsTilesOverAnyGrid) {
    // every weight size here (by default only weights of 2^25+ elements: read per call); the scale settings below
    const ScopedEnv env({{"BNB4_CUDA_TILE_MAX_M", "1000000"},
                         {"BNB4_CUDA_TILE_MIN_WEIGHTS", "0"},
                         {"BNB4_CUDA_TILE_SCALE_GRID_Y", nullptr},
                         {"BNB4_CUDA_TILE_SCALE_PASS", nullptr}});
    if (std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, 130), "tile") == nullptr)
        GTEST_SKIP() << "the tile kernel needs compute capability 9.0 and an sm_90a build (m >= 65 takes "
                     << bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F16, 130) << " here)";
    auto g = rng(107);
    struct Shape { size_t N, K, bs; };
    std::vector<Shape> shapes = {{300, 1056, 64}, {129, 4096, 64}, {257, 512, 4096},
                                 {136, 1024, 32}, {520, 2304, 128}, {64, 8192, 256}, {136, 1024, 64}};
    std::vector<size_t> ms = {65, 130, 200, 257, 300, 400};
    const std::vector<const char *> grids = {"1", "2", "5", "13", "0"}; // "0": the default (one CTA per SM)
    if (quick()) {
        shapes = {{300, 1056, 64}, {136, 1024, 64}}; // the pre-pass (two scales a step), scales from the weight
        ms = {65, 130, 300}; // 128, 256 and 3 x 128 rows
    }
    for (const Shape &s : shapes)
        for (int nested = 0; nested < 2; nested++) {
            const bnb4_quant_type qt = nested ? BNB4_FP4 : BNB4_NF4;
            // nested: the scale pre-pass on one CTA row, so it strides over the step tiles (32 steps each)
            setenv("BNB4_CUDA_TILE_SCALE_GRID_Y", nested ? "1" : "0", 1);
            const HostWeight w = make_weight(s.N, s.K, s.bs, qt, g);
            DeviceWeight dw(w);
            const bnb4_qtensor wd = dw.device(nested), wh = dw.host(nested);
            for (size_t m : ms)
                for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16})
                    for (const char *pass : {"0", "1"}) { // (1: the pre-pass forced; nested always takes it)
                        if (*pass == '1' && nested)
                            continue;
                        setenv("BNB4_CUDA_TILE_SCALE_PASS", pass, 1);
                        ASSERT_NE(nullptr, std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, m), "tile"));
                        const size_t es = bnb4_dtype_size(dt);
                        const Array x = randn(dt, m * s.K, g), bias = randn(dt, s.N, g);
                        const bool with_bias = (m + s.N) % 2 == 0;
                        const MatmulRef want = reference_matmul(wh, x, m, with_bias ? &bias : nullptr);
                        DevBuf dx(x.data(), m * s.K * es), db(bias.data(), s.N * es);
                        check_gemm_on_grids(wd, dt, m, dx.as<void>(), with_bias ? db.as<void>() : nullptr, want,
                                            "BNB4_CUDA_TILE_CTAS", grids,
                                            "N " + std::to_string(s.N) + " K " + std::to_string(s.K) + " bs " +
                                                std::to_string(s.bs) + " m " + std::to_string(m) + " " +
                                                bnb4_dtype_name(dt) + (nested ? " nested fp4" : " nf4") +
                                                (with_bias ? " bias" : "") + (*pass == '1' ? " scale pre-pass" : ""));
                        if (HasFatalFailure())
                            return;
                    }
        }
}

// The f32 tile kernel on every split of K (BNB4_CUDA_F32_TILE_SPLITS, read per call; "0": the default, "1000": as
// many as there are chunks): partial tiles in N and m, K of an odd number of 32-k chunks, blocksizes 32 to 4096, plain
// and nested, activations 16-byte or only 4-byte aligned (its 4-byte copies), the sums of a tile's splits added in a
// fixed order (the same bytes twice).
TEST_F(CudaTest, F32TileKernelSplitsKOverAnyGrid) {
    const ScopedEnv env({{"BNB4_CUDA_F32_TILE_MAX_M", "1000000"}}); // every m here (by default 41..64: read per call)
    if (std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F32, 64), "simt_tile") == nullptr)
        GTEST_SKIP() << "the f32 tile kernel does not fit this device (m = 64 takes "
                     << bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F32, 64) << ")";
    auto g = rng(108);
    struct Shape { size_t N, K, bs; };
    std::vector<Shape> shapes = {{300, 1056, 64}, {129, 4096, 64}, {9, 2080, 32}, {257, 512, 4096}, {136, 1024, 128}};
    std::vector<size_t> ms = {49, 64, 65, 130, 200};
    std::vector<const char *> grids = {"1", "2", "3", "7", "0", "1000"};
    if (quick()) {
        shapes = {{300, 1056, 64}, {9, 2080, 32}};
        ms = {49, 130};
        grids = {"1", "3", "0"};
    }
    for (const Shape &s : shapes)
        for (int nested = 0; nested < 2; nested++) {
            const bnb4_quant_type qt = nested ? BNB4_FP4 : BNB4_NF4;
            const HostWeight w = make_weight(s.N, s.K, s.bs, qt, g);
            DeviceWeight dw(w);
            const bnb4_qtensor wd = dw.device(nested), wh = dw.host(nested);
            for (size_t m : ms) {
                ASSERT_NE(nullptr, std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, BNB4_F32, m), "simt_tile")) << m;
                const Array x = randn(BNB4_F32, m * s.K, g), bias = randn(BNB4_F32, s.N, g);
                const bool with_bias = (m + s.N) % 2 == 0;
                const MatmulRef want = reference_matmul(wh, x, m, with_bias ? &bias : nullptr);
                const size_t x_off = with_bias ? 0 : 4; // bytes
                DevBuf dx(m * s.K * 4 + 16), db(bias.data(), s.N * 4);
                dx.put(x_off, x.data(), m * s.K * 4);
                check_gemm_on_grids(wd, BNB4_F32, m, dx.as<void>(x_off), with_bias ? db.as<void>() : nullptr, want,
                                    "BNB4_CUDA_F32_TILE_SPLITS", grids,
                                    "N " + std::to_string(s.N) + " K " + std::to_string(s.K) + " bs " +
                                        std::to_string(s.bs) + " m " + std::to_string(m) +
                                        (nested ? " nested fp4" : " nf4") + (with_bias ? " bias" : " x at +4 bytes"));
                if (HasFatalFailure())
                    return;
            }
        }
}

TEST_F(CudaTest, MatmulMisalignedActivationsTakeTheGeneralPath) {
    auto g = rng(105);
    const size_t N = 96, K = 256, bs = 64, m = 5;
    const HostWeight w = make_weight(N, K, bs, BNB4_NF4, g);
    DevBuf dp(w.packed.data(), w.packed.size()), da(w.absmax.data(), w.absmax.size() * 4);
    const bnb4_qtensor wd = bnb4_qtensor_plain(N, K, bs, BNB4_NF4, dp.as<uint8_t>(), da.as<float>());
    const bnb4_qtensor wh = bnb4_qtensor_plain(N, K, bs, BNB4_NF4, w.packed.data(), w.absmax.data());
    for (bnb4_dtype dt : kDtypes) {
        const size_t es = bnb4_dtype_size(dt);
        const Array x = randn(dt, m * K, g);
        DevBuf dx(m * K * es + 16), dy(m * N * es);
        dx.put(es, x.data(), m * K * es);
        ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &wd, dt, m, dx.as<void>(es), nullptr, dy.as<void>())) << bnb4_last_error();
        sync();
        expect_close(values_of(dy.get(), dt, m * N), reference_matmul(wh, x, m, nullptr), dt, bnb4_dtype_name(dt));
    }
}

// Nested codes wherever the caller's buffer puts them: 16-byte aligned (on sm_90 the pipe kernel's tensor
// copy of the codes), 4-byte aligned only (the producer lanes' 4-byte words), 1-byte aligned (past the pipe
// kernel: the general paths). K % (16 blocksize) == 0, so the alignment alone picks the path; m = 1 (the
// pipe or the gemv kernel), 9 (post-scaled mma.sync) and 40 (wgmma).
TEST_F(CudaTest, MatmulNestedCodesAtAnyAlignment) {
    auto g = rng(108);
    const size_t N = 136, K = 1024, bs = 64;
    const HostWeight w = make_weight(N, K, bs, BNB4_NF4, g);
    DeviceWeight dw(w);
    const bnb4_qtensor wh = dw.host(true);
    for (size_t offset : {0, 4, 1}) {
        DevBuf codes(w.codes.size() + 16);
        codes.put(offset, w.codes.data(), w.codes.size());
        bnb4_qtensor wd = dw.device(true);
        wd.nested.codes = codes.as<uint8_t>(offset);
        for (size_t m : {1, 9, 40})
            for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16}) {
                const size_t es = bnb4_dtype_size(dt);
                const Array x = randn(dt, m * K, g);
                DevBuf dx(x.data(), m * K * es), dy(m * N * es);
                ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &wd, dt, m, dx.as<void>(), nullptr, dy.as<void>()))
                    << bnb4_last_error();
                sync();
                expect_close(values_of(dy.get(), dt, m * N), reference_matmul(wh, x, m, nullptr), dt,
                             std::string(bnb4_dtype_name(dt)) + " m " + std::to_string(m) + " codes at +" +
                                 std::to_string(offset));
            }
    }
}

// For the graph tests: the pipe and tile kernels on 5 CTAs (tiles shared between CTAs: split-K) and the
// tile kernel at every m >= 65 on weights of any size (all read per call).
struct SmallGridsEverywhere : ScopedEnv {
    SmallGridsEverywhere()
        : ScopedEnv({{"BNB4_CUDA_PIPE_CTAS", "5"},
                     {"BNB4_CUDA_TILE_CTAS", "5"},
                     {"BNB4_CUDA_TILE_MAX_M", "1000000"},
                     {"BNB4_CUDA_TILE_MIN_WEIGHTS", "0"}}) {}
};

// The nodes of a captured graph by kind (kernels, memory allocations and frees, memsets, the rest), and its
// edges: all, and those that keep the programmatic (early) launch between two kernels.
struct GraphCensus {
    size_t kernels = 0, memory = 0, memsets = 0, others = 0, edges = 0, programmatic = 0;
};
static GraphCensus census_of(cudaGraph_t graph) {
    GraphCensus c;
    size_t n = 0;
    EXPECT_EQ(cudaSuccess, cudaGraphGetNodes(graph, nullptr, &n));
    std::vector<cudaGraphNode_t> nodes(n);
    if (n) {
        EXPECT_EQ(cudaSuccess, cudaGraphGetNodes(graph, nodes.data(), &n));
    }
    for (cudaGraphNode_t node : nodes) {
        cudaGraphNodeType type = cudaGraphNodeTypeEmpty;
        EXPECT_EQ(cudaSuccess, cudaGraphNodeGetType(node, &type));
        (type == cudaGraphNodeTypeKernel                                          ? c.kernels
         : type == cudaGraphNodeTypeMemAlloc || type == cudaGraphNodeTypeMemFree ? c.memory
         : type == cudaGraphNodeTypeMemset                                        ? c.memsets
                                                                                  : c.others)++;
    }
    size_t e = 0;
    EXPECT_EQ(cudaSuccess, cudaGraphGetEdges(graph, nullptr, nullptr, nullptr, &e));
    std::vector<cudaGraphNode_t> from(e), to(e);
    std::vector<cudaGraphEdgeData> data(e);
    if (e) {
        EXPECT_EQ(cudaSuccess, cudaGraphGetEdges(graph, from.data(), to.data(), data.data(), &e));
    }
    c.edges = e;
    for (const cudaGraphEdgeData &d : data)
        c.programmatic += d.type == cudaGraphDependencyTypeProgrammatic;
    return c;
}

// Matmuls captured into a CUDA graph: on a fresh context (its split-K space and scratch too small: they
// grow during the capture, which is in the strictest mode, global) and on one whose buffers earlier direct
// calls have grown. Each graph holds two calls and is replayed twice; every replay gives the bytes of
// direct calls (the kernels are deterministic). Either way the graph holds the calls' kernels and nothing
// else (no allocation, memset or free node; where m = 130 takes dequantize + cuBLAS - sm_80 code - cuBLAS's
// kernels too: it works in the context's workspace), and on sm_90 the wgmma kernels' programmatic launch is
// kept on every edge. The grids are forced small so tiles are shared between CTAs (split-K): the pipe kernel
// (m = 9 and, with wgmma, 40: with BNB4_CUDA_PIPE_NATURAL_MAX=0, a pass of cuda_check.sh, its permuted
// activations in the scratch) and the tile kernel (m = 130: its scales there; or dequantize + cuBLAS, the
// dequantized weight there).
TEST_F(CudaTest, MatmulsCapturedInAGraphMatchDirectCalls) {
    const SmallGridsEverywhere env;
    auto g = rng(108);
    const size_t N = 300, K = 1024, bs = 64;
    for (int nested = 0; nested < 2; nested++) {
        const HostWeight w = make_weight(N, K, bs, nested ? BNB4_FP4 : BNB4_NF4, g);
        DeviceWeight dw(w);
        const bnb4_qtensor wd = dw.device(nested);
        for (size_t m : {1, 9, 40, 130})
            for (bnb4_dtype dt : {BNB4_F16, BNB4_BF16}) {
                const std::string what = "m " + std::to_string(m) + " " + bnb4_dtype_name(dt) +
                                         (nested ? " nested" : " plain") + " (" +
                                         bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, m) + ")";
                const size_t es = bnb4_dtype_size(dt);
                const Array x0 = randn(dt, m * K, g), x1 = randn(dt, m * K, g), bias = randn(dt, N, g);
                DevBuf dx0(x0.data(), m * K * es), dx1(x1.data(), m * K * es), db(bias.data(), N * es);
                DevBuf want0(m * N * es), want1(m * N * es), got0(m * N * es), got1(m * N * es);
                ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &wd, dt, m, dx0.as<void>(), db.as<void>(), want0.as<void>()))
                    << what << ": " << bnb4_last_error();
                ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &wd, dt, m, dx1.as<void>(), nullptr, want1.as<void>()))
                    << what << ": " << bnb4_last_error();
                sync();
                const CtxPtr fresh_owner = context_on_stream();
                bnb4_ctx *fresh = fresh_owner.get();
                ASSERT_NE(nullptr, fresh);
                for (bnb4_ctx *c : {fresh, ctx}) {
                    const std::string which = what + (c == fresh ? ", fresh context" : ", grown context");
                    cudaGraph_t graph = nullptr;
                    cudaGraphExec_t exec = nullptr;
                    CUDA_OK(cudaStreamBeginCapture(stream, c == fresh ? cudaStreamCaptureModeGlobal
                                                                      : cudaStreamCaptureModeThreadLocal));
                    const bnb4_status s0 = bnb4_gemm(c, &wd, dt, m, dx0.as<void>(), db.as<void>(), got0.as<void>());
                    const std::string e0 = bnb4_last_error();
                    const bnb4_status s1 = bnb4_gemm(c, &wd, dt, m, dx1.as<void>(), nullptr, got1.as<void>());
                    const std::string e1 = bnb4_last_error();
                    CUDA_OK(cudaStreamEndCapture(stream, &graph));
                    EXPECT_EQ(BNB4_OK, s0) << which << ": " << e0;
                    EXPECT_EQ(BNB4_OK, s1) << which << ": " << e1;
                    const GraphCensus nodes = census_of(graph);
                    EXPECT_GE(nodes.kernels, 2u) << which;
                    EXPECT_EQ(0u, nodes.memory) << which << ": allocation or free nodes in the graph";
                    EXPECT_EQ(0u, nodes.memsets) << which << ": memset nodes in the graph";
                    EXPECT_EQ(0u, nodes.others) << which << ": nodes other than kernels in the graph";
                    if (launches_early(bnb4_kernel_name(c, BNB4_OP_GEMM, dt, m))) {
                        EXPECT_EQ(nodes.edges, nodes.programmatic) << which << ": an edge lost its early launch";
                    }
                    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
                    for (int replay = 0; replay < 2; replay++) {
                        CUDA_OK(cudaMemsetAsync(got0.p, 0xFF, got0.bytes, stream));
                        CUDA_OK(cudaMemsetAsync(got1.p, 0xFF, got1.bytes, stream));
                        CUDA_OK(cudaGraphLaunch(exec, stream));
                        sync();
                        EXPECT_TRUE(same_bytes(want0.get(), got0.get(), which + ", bias, replay " + std::to_string(replay)));
                        EXPECT_TRUE(same_bytes(want1.get(), got1.get(), which + ", replay " + std::to_string(replay)));
                    }
                    cudaGraphExecDestroy(exec);
                    cudaGraphDestroy(graph);
                }
                if (HasFailure())
                    return;
            }
    }
}

// A context's first large-m matmul (dequantize + cuBLAS, where it creates its cuBLAS handle) captured into a
// CUDA graph in the strictest capture mode, global: the capture stays valid, and replays agree with the
// float64 reference (cuBLAS may pick another algorithm in a graph: no byte comparison). Then its first with a
// bias (cuBLASLt's bias epilogue: its handle, heuristic and workspace), captured the same way.
TEST_F(CudaTest, FirstBlasCallCapturedInAGraph) {
    const ScopedEnv env({{"BNB4_CUDA_TILE_MAX_M", "0"}}); // large m: dequantize + cuBLAS (read per call)
    auto g = rng(111);
    const size_t N = 256, K = 512, bs = 64, m = 100;
    const HostWeight w = make_weight(N, K, bs, BNB4_NF4, g);
    DeviceWeight dw(w);
    const bnb4_qtensor wd = dw.device(false);
    const bnb4_qtensor wh = bnb4_qtensor_plain(N, K, bs, BNB4_NF4, w.packed.data(), w.absmax.data());
    const CtxPtr fresh_owner = context_on_stream();
    bnb4_ctx *fresh = fresh_owner.get();
    ASSERT_NE(nullptr, fresh);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        for (bnb4_dtype dt : {BNB4_F16, BNB4_F32}) {
            const std::string what = std::string(bnb4_dtype_name(dt)) + " (" +
                                     bnb4_kernel_name(fresh, BNB4_OP_GEMM, dt, m) + (with_bias ? ", bias)" : ")");
            const size_t es = bnb4_dtype_size(dt);
            const Array x = randn(dt, m * K, g), bias = randn(dt, N, g);
            DevBuf dx(x.data(), m * K * es), dy(m * N * es), db(bias.data(), N * es);
            cudaGraph_t graph = nullptr;
            cudaGraphExec_t exec = nullptr;
            CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
            const bnb4_status st =
                bnb4_gemm(fresh, &wd, dt, m, dx.as<void>(), with_bias ? db.as<void>() : nullptr, dy.as<void>());
            const std::string err = bnb4_last_error();
            CUDA_OK(cudaStreamEndCapture(stream, &graph));
            ASSERT_EQ(BNB4_OK, st) << what << ": " << err;
            CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
            CUDA_OK(cudaGraphLaunch(exec, stream));
            sync();
            cudaGraphExecDestroy(exec);
            cudaGraphDestroy(graph);
            expect_close(values_of(dy.get(), dt, m * N), reference_matmul(wh, x, m, with_bias ? &bias : nullptr), dt,
                         what);
        }
    }
}

// A graph captured from a context holds the addresses of the context's split-K space and scratch. When a
// later call grows them, the old buffers must stay valid (they are retired, not freed) so the graph still
// replays to the same bytes: graphs of the pipe kernel (mma.sync and wgmma) and the tile kernel on a grid
// forced small, replayed after a direct call on a larger weight has grown both buffers.
TEST_F(CudaTest, CapturedGraphsSurviveBufferGrowth) {
    const SmallGridsEverywhere env;
    auto g = rng(109);
    const bnb4_dtype dt = BNB4_F16;
    const size_t es = bnb4_dtype_size(dt);
    const HostWeight w = make_weight(200, 512, 64, BNB4_NF4, g);
    DeviceWeight dw(w);
    const bnb4_qtensor wd = dw.device(false);
    struct Case {
        size_t m;
        cudaGraphExec_t exec = nullptr;
        std::unique_ptr<DevBuf> x, want, got;
    };
    std::vector<Case> cases(3);
    cases[0].m = 9, cases[1].m = 40, cases[2].m = 130;
    for (Case &k : cases) {
        const Array x = randn(dt, k.m * 512, g);
        k.x = std::make_unique<DevBuf>(x.data(), k.m * 512 * es);
        k.want = std::make_unique<DevBuf>(k.m * 200 * es);
        k.got = std::make_unique<DevBuf>(k.m * 200 * es);
        ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &wd, dt, k.m, k.x->p, nullptr, k.want->p)) << bnb4_last_error();
        sync();
        cudaGraph_t graph = nullptr;
        CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
        const bnb4_status st = bnb4_gemm(ctx, &wd, dt, k.m, k.x->p, nullptr, k.got->p);
        CUDA_OK(cudaStreamEndCapture(stream, &graph));
        ASSERT_EQ(BNB4_OK, st) << bnb4_last_error();
        CUDA_OK(cudaGraphInstantiate(&k.exec, graph, 0));
        cudaGraphDestroy(graph);
    }
    { // a larger weight and m: the scratch and the partial-sum space grow
        const HostWeight big = make_weight(1000, 4096, 64, BNB4_NF4, g);
        DeviceWeight dbig(big);
        const bnb4_qtensor bd = dbig.device(false);
        for (size_t m : {64, 300}) {
            const Array x = randn(dt, m * 4096, g);
            DevBuf dx(x.data(), m * 4096 * es), dy(m * 1000 * es);
            ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &bd, dt, m, dx.p, nullptr, dy.p)) << bnb4_last_error();
            sync();
        }
    }
    for (Case &k : cases) {
        CUDA_OK(cudaMemsetAsync(k.got->p, 0xFF, k.got->bytes, stream));
        CUDA_OK(cudaGraphLaunch(k.exec, stream));
        sync();
        EXPECT_TRUE(same_bytes(k.want->get(), k.got->get(),
                               "m " + std::to_string(k.m) + " (" + bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, k.m) +
                                   "), replayed after the buffers grew"));
        cudaGraphExecDestroy(k.exec);
    }
}

// Ops queued back to back on the stream, no sync between: weights quantized on the GPU, a matmul on
// them, then a matmul whose packed weights are the bytes of that matmul's output y. The matmul kernels
// let the next kernel start before they end and copy their first weights before they wait for the one
// before (programmatic dependent launch); each must still see the bytes its predecessor wrote (the
// library knows the stream's last y, so the second matmul waits first - also when a second context on
// the same stream issues it, in the odd rounds). Its weight bytes are then nothing an NF4 tensor would
// hold (any nibble, read from float16 outputs), which the reference takes as they are.
TEST_F(CudaTest, ChainedOpsSeeTheirPredecessorsOutput) {
    auto g = rng(110);
    const bnb4_dtype dt = BNB4_F16;
    const size_t es = bnb4_dtype_size(dt), bs = 64;
    const size_t NA = 4096, KA = 8192, NB = 128, m = 4;
    const size_t KB = m * NA * es * 2 / NB; // B's packed bytes are exactly A's output
    const Array src = randn(BNB4_F32, NA * KA, g, 0.05f);
    const Array xa = randn(dt, m * KA, g), xb = randn(dt, m * KB, g);
    std::vector<float> absmax_b(NB * KB / bs);
    std::uniform_real_distribution<float> scale(0.5f, 2.0f);
    for (float &a : absmax_b)
        a = scale(g);
    DevBuf dsrc(src.data(), NA * KA * 4), dpacked(NA * KA / 2), dabsmax(NA * KA / bs * 4);
    DevBuf dxa(xa.data(), m * KA * es), dxb(xb.data(), m * KB * es), dabsmax_b(absmax_b.data(), absmax_b.size() * 4);
    DevBuf dya(m * NA * es), dyb(m * NB * es);
    const CtxPtr other_owner = context_on_stream();
    bnb4_ctx *other = other_owner.get();
    ASSERT_NE(nullptr, other);
    std::vector<uint8_t> want_packed(NA * KA / 2);
    std::vector<float> want_absmax(NA * KA / bs);
    bnb4_ref_quantize_blocks(src.data(), BNB4_F32, NA * KA, bs, BNB4_NF4, 0, want_absmax.size(), want_packed.data(),
                             want_absmax.data());
    const std::vector<uint8_t> want_absmax_bytes((const uint8_t *)want_absmax.data(),
                                                 (const uint8_t *)want_absmax.data() + want_absmax.size() * 4);
    const MatmulRef want_a =
        reference_matmul(bnb4_qtensor_plain(NA, KA, bs, BNB4_NF4, want_packed.data(), want_absmax.data()), xa, m, nullptr);
    for (int round = 0; round < 4; round++) { // (from the second on the context's buffers are grown)
        CUDA_OK(cudaMemsetAsync(dpacked.p, 0xFF, dpacked.bytes, stream));
        CUDA_OK(cudaMemsetAsync(dya.p, 0xFF, dya.bytes, stream));
        CUDA_OK(cudaMemsetAsync(dyb.p, 0xFF, dyb.bytes, stream));
        ASSERT_EQ(BNB4_OK, bnb4_quantize(ctx, dsrc.p, BNB4_F32, NA * KA, bs, BNB4_NF4, dpacked.as<uint8_t>(),
                                         dabsmax.as<float>()))
            << bnb4_last_error();
        const bnb4_qtensor wa = bnb4_qtensor_plain(NA, KA, bs, BNB4_NF4, dpacked.as<uint8_t>(), dabsmax.as<float>());
        ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &wa, dt, m, dxa.p, nullptr, dya.p)) << bnb4_last_error();
        const bnb4_qtensor wb = bnb4_qtensor_plain(NB, KB, bs, BNB4_NF4, dya.as<uint8_t>(), dabsmax_b.as<float>());
        ASSERT_EQ(BNB4_OK, bnb4_gemm(round % 2 ? other : ctx, &wb, dt, m, dxb.p, nullptr, dyb.p)) << bnb4_last_error();
        sync();
        const std::string what = "round " + std::to_string(round) + (round % 2 ? ", second context" : "") + " (" +
                                 bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, m) + ")";
        const std::vector<uint8_t> packed = dpacked.get(), absmax = dabsmax.get(), ya = dya.get(), yb = dyb.get();
        ASSERT_TRUE(same_bytes(want_packed, packed, what + ": quantized weights"));
        ASSERT_TRUE(same_bytes(want_absmax_bytes, absmax, what + ": absmax"));
        const MatmulRef want_b =
            reference_matmul(bnb4_qtensor_plain(NB, KB, bs, BNB4_NF4, ya.data(), absmax_b.data()), xb, m, nullptr);
        for (const auto &[out, ref, n, tag] : {std::make_tuple(&ya, &want_a, m * NA, "the first matmul"),
                                               std::make_tuple(&yb, &want_b, m * NB, "the matmul on its output")}) {
            expect_close(values_of(*out, dt, n), *ref, dt, what + ": " + tag);
        }
        if (HasFailure())
            return;
    }
}

// The tile kernel's scale pre-pass loads a nested weight's codes and nested absmax before griddepcontrol.wait
// where the host's output log says the previous matmul's y is no part of them, and writes its scratch only after
// it. Queued back to back with no sync: a weight whose nested codes (the pre-pass) or packed bytes (plain: the
// tile kernel takes absmax straight from the weight) are the bytes of the previous y must wait for it (even
// rounds); with its own bytes it need not (odd rounds). Each must see the right bytes, at m = 130.
TEST_F(CudaTest, TileKernelSeesItsPredecessorsOutput) {
    const ScopedEnv env({{"BNB4_CUDA_TILE_MAX_M", "1000000"}, {"BNB4_CUDA_TILE_MIN_WEIGHTS", "0"}});
    const bnb4_dtype dt = BNB4_F16;
    const size_t es = bnb4_dtype_size(dt), bs = 64, ma = 4, mb = 130;
    if (std::strstr(bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, mb), "tile") == nullptr)
        GTEST_SKIP() << "the tile kernel needs compute capability 9.0 and an sm_90a build (m = 130 takes "
                     << bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, mb) << " here)";
    auto g = rng(111);
    const size_t NA = 4096, KA = 1024, NB = 256, y_bytes = ma * NA * es;
    const HostWeight wa = make_weight(NA, KA, bs, BNB4_NF4, g);
    DeviceWeight dwa(wa);
    const bnb4_qtensor qa = dwa.device(false);
    const Array xa = randn(dt, ma * KA, g);
    DevBuf dxa(xa.data(), ma * KA * es), dya(y_bytes), dcode(bnb4_nested_code(), 1024);
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> scale(0.5f, 2.0f);
    const float offset = 0.125f;
    const MatmulRef want_a = reference_matmul(dwa.host(false), xa, ma, nullptr);
    for (const bool nested : {true, false}) {
        // B's nested codes (a byte a block: the pre-pass's input) or packed bytes (two weights a byte) are A's y
        const size_t KB = nested ? y_bytes * bs / NB : y_bytes * 2 / NB, blocks = NB * KB / bs;
        const Array xb = randn(dt, mb * KB, g);
        std::vector<uint8_t> packed_b(NB * KB / 2), codes_b(blocks);
        std::vector<float> absmax_b(nested ? ceil_div(blocks, 256) : blocks); // (nested: its nested absmax)
        for (uint8_t &b : packed_b)
            b = (uint8_t)byte(g);
        for (uint8_t &b : codes_b)
            b = (uint8_t)byte(g);
        for (float &a : absmax_b)
            a = scale(g);
        DevBuf dxb(xb.data(), mb * KB * es), dyb(mb * NB * es), dpacked_b(packed_b.data(), packed_b.size());
        DevBuf dcodes_b(codes_b.data(), codes_b.size()), dabsmax_b(absmax_b.data(), absmax_b.size() * 4);
        for (int round = 0; round < 4; round++) {
            const bool from_y = round % 2 == 0;
            CUDA_OK(cudaMemsetAsync(dya.p, 0xFF, dya.bytes, stream));
            CUDA_OK(cudaMemsetAsync(dyb.p, 0xFF, dyb.bytes, stream));
            ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &qa, dt, ma, dxa.p, nullptr, dya.p)) << bnb4_last_error();
            const uint8_t *packed = !nested && from_y ? dya.as<uint8_t>() : dpacked_b.as<uint8_t>();
            const uint8_t *codes = nested && from_y ? dya.as<uint8_t>() : dcodes_b.as<uint8_t>();
            const bnb4_qtensor qb = nested ? bnb4_qtensor_nested(NB, KB, bs, BNB4_NF4, packed, codes, dabsmax_b.as<float>(),
                                                                 dcode.as<float>(), offset, 256)
                                           : bnb4_qtensor_plain(NB, KB, bs, BNB4_NF4, packed, dabsmax_b.as<float>());
            ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &qb, dt, mb, dxb.p, nullptr, dyb.p)) << bnb4_last_error();
            sync();
            const std::string what = std::string(nested ? "nested" : "plain") + ", round " + std::to_string(round) +
                                     (from_y ? (nested ? " (codes: the previous y)" : " (packed: the previous y)")
                                             : " (own bytes)");
            const std::vector<uint8_t> ya = dya.get(), yb = dyb.get();
            expect_close(values_of(ya, dt, ma * NA), want_a, dt, what + ": the first matmul");
            const uint8_t *hpacked = !nested && from_y ? ya.data() : packed_b.data();
            const uint8_t *hcodes = nested && from_y ? ya.data() : codes_b.data();
            const bnb4_qtensor hb = nested ? bnb4_qtensor_nested(NB, KB, bs, BNB4_NF4, hpacked, hcodes, absmax_b.data(),
                                                                 bnb4_nested_code(), offset, 256)
                                           : bnb4_qtensor_plain(NB, KB, bs, BNB4_NF4, hpacked, absmax_b.data());
            expect_close(values_of(yb, dt, mb * NB), reference_matmul(hb, xb, mb, nullptr), dt,
                         what + ": the tile kernel");
            if (HasFailure())
                return;
        }
    }
}

// Chained layers queued back to back with no sync, as a model runs them: B's activations are A's output (even
// rounds) or its own (odd rounds). The matmul kernels let the next kernel start before they end and copy their
// first weights before they wait for the one before; B must still read A's finished y, on the default grid and on
// one whose CTAs share tiles (both then use the split-K workspace and counters), m = 1..64, plain and nested.
TEST_F(CudaTest, ChainedLayersSeeTheirPredecessorsOutput) {
    const ScopedEnv grid_env({{"BNB4_CUDA_PIPE_CTAS", nullptr}}); // (set below; unset however the test ends)
    auto g = rng(112);
    const bnb4_dtype dt = BNB4_F16;
    const size_t es = bnb4_dtype_size(dt), bs = 64;
    const size_t NA = 1024, KA = 8192, NB = 4096, KB = NA; // (2^23 and 2^22 weights: the pipe kernel at m = 1)
    const HostWeight wa = make_weight(NA, KA, bs, BNB4_NF4, g), wb = make_weight(NB, KB, bs, BNB4_NF4, g);
    DeviceWeight dwa(wa), dwb(wb);
    std::vector<size_t> ms = {1, 4, 16, 32, 64};
    if (quick())
        ms = {1, 32}; // (the post-scaled mma.sync and the wgmma math)
    for (const size_t m : ms) {
        const Array xa = randn(dt, m * KA, g), xb = randn(dt, m * KB, g), bias = randn(dt, NB, g);
        DevBuf dxa(xa.data(), m * KA * es), dxb(xb.data(), m * KB * es), dbias(bias.data(), NB * es);
        DevBuf dya(m * NA * es), dyb(m * NB * es);
        // [nested]: the nested weights' scales differ from the plain ones
        const MatmulRef want_a[2] = {reference_matmul(dwa.host(false), xa, m, nullptr),
                                     reference_matmul(dwa.host(true), xa, m, nullptr)};
        const MatmulRef want_own[2] = {reference_matmul(dwb.host(false), xb, m, &bias),
                                       reference_matmul(dwb.host(true), xb, m, &bias)};
        for (const char *grid : {"0", "100"}) { // ("100": stream-K on 100 CTAs, tiles shared)
            setenv("BNB4_CUDA_PIPE_CTAS", grid, 1);
            for (int round = 0; round < 4; round++) {
                const bool from_y = round % 2 == 0, nested = round >= 2;
                const bnb4_qtensor qa = dwa.device(nested), qb = dwb.device(nested);
                const std::string what = "m " + std::to_string(m) + " grid " + grid + (nested ? " nested" : "") +
                                         (from_y ? " (x: the previous y)" : " (own x)") + " (" +
                                         bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, m) + ")";
                trace(what);
                CUDA_OK(cudaMemsetAsync(dya.p, 0xFF, dya.bytes, stream));
                CUDA_OK(cudaMemsetAsync(dyb.p, 0xFF, dyb.bytes, stream));
                ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &qa, dt, m, dxa.p, nullptr, dya.p)) << bnb4_last_error();
                ASSERT_EQ(BNB4_OK, bnb4_gemm(ctx, &qb, dt, m, from_y ? dya.p : dxb.p, dbias.p, dyb.p))
                    << bnb4_last_error();
                sync();
                const std::vector<uint8_t> ya = dya.get(), yb = dyb.get();
                expect_close(values_of(ya, dt, m * NA), want_a[nested], dt, what + ": A");
                expect_close(values_of(yb, dt, m * NB),
                             from_y ? reference_matmul(dwb.host(nested), Array{dt, ya}, m, &bias) : want_own[nested],
                             dt, what + ": B");
                if (HasFailure())
                    return;
            }
        }
    }
}

// Activations a caller's kernel wrote just before: such a kernel may let ours start before its writes are visible
// (griddepcontrol.launch_dependents, as inference engines' kernels do). Here one does so and writes x 30 us later
// (test_copy_late), between two matmuls of ours (A, then B on that x), then C runs on the same x: B must not read
// x before its griddepcontrol.wait, while C, right after a matmul of ours whose y is no part of x, may (the pipe
// kernel's early activations: in a capture only). Captured into a graph and replayed, and called directly; x holds
// other values before, so an early read shows in B's output.
TEST_F(CudaTest, ActivationsACallersKernelWritesLateAreSeen) {
    auto g = rng(113);
    const bnb4_dtype dt = BNB4_F16;
    const size_t es = bnb4_dtype_size(dt), N = 4096, K = 4096, bs = 64; // (2^24 weights: the pipe kernel at m = 1)
    const HostWeight hw = make_weight(N, K, bs, BNB4_NF4, g);
    DeviceWeight dw(hw);
    std::vector<size_t> ms = {1, 4, 16, 32, 64};
    if (quick())
        ms = {1, 32};
    for (const size_t m : ms) {
        const Array xa = randn(dt, m * K, g), x_old = randn(dt, m * K, g), x_new = randn(dt, m * K, g);
        DevBuf dxa(xa.data(), m * K * es), dold(x_old.data(), m * K * es), dnew(x_new.data(), m * K * es);
        DevBuf dx(m * K * es), dya(m * N * es), dyb(m * N * es), dyc(m * N * es);
        for (int nested = 0; nested < 2; nested++) {
            const bnb4_qtensor w = dw.device(nested);
            const MatmulRef want = reference_matmul(dw.host(nested), x_new, m, nullptr);
            for (int captured = 0; captured < 2; captured++) {
                const std::string what = "m " + std::to_string(m) + (nested ? " nested" : " plain") +
                                         (captured ? " captured" : " direct") + " (" +
                                         bnb4_kernel_name(ctx, BNB4_OP_GEMM, dt, m) + ")";
                trace(what);
                CUDA_OK(cudaMemcpyAsync(dx.p, dold.p, dx.bytes, cudaMemcpyDeviceToDevice, stream));
                CUDA_OK(cudaMemsetAsync(dyb.p, 0xFF, dyb.bytes, stream));
                CUDA_OK(cudaMemsetAsync(dyc.p, 0xFF, dyc.bytes, stream));
                sync();
                cudaGraph_t graph = nullptr;
                if (captured) {
                    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
                }
                const bnb4_status sa = bnb4_gemm(ctx, &w, dt, m, dxa.p, nullptr, dya.p);
                const cudaError_t sw = test_copy_late(dnew.p, dx.p, dx.bytes, 30, stream);
                const bnb4_status sb = bnb4_gemm(ctx, &w, dt, m, dx.p, nullptr, dyb.p);
                const bnb4_status sc = bnb4_gemm(ctx, &w, dt, m, dx.p, nullptr, dyc.p);
                const std::string err = bnb4_last_error();
                if (captured) {
                    CUDA_OK(cudaStreamEndCapture(stream, &graph));
                    cudaGraphExec_t exec = nullptr;
                    const cudaError_t ie = cudaGraphInstantiate(&exec, graph, 0);
                    const cudaError_t le = ie == cudaSuccess ? cudaGraphLaunch(exec, stream) : ie;
                    sync();
                    if (exec)
                        cudaGraphExecDestroy(exec);
                    cudaGraphDestroy(graph);
                    ASSERT_EQ(cudaSuccess, le) << what;
                }
                ASSERT_EQ(BNB4_OK, sa) << what << ": " << err;
                ASSERT_EQ(cudaSuccess, sw) << what;
                ASSERT_EQ(BNB4_OK, sb) << what << ": " << err;
                ASSERT_EQ(BNB4_OK, sc) << what << ": " << err;
                sync();
                expect_close(values_of(dyb.get(), dt, m * N), want, dt, what + ": B, right after the caller's kernel");
                expect_close(values_of(dyc.get(), dt, m * N), want, dt, what + ": C, after B");
                if (HasFailure())
                    return;
            }
        }
    }
}

// ---- conformance: bitsandbytes' recorded outputs ---------------------------------------------------------------
std::string conformance_file(const char *name) {
    const char *env = std::getenv("BNB4_CONFORMANCE_DIR");
    return std::string(env && *env ? env : BNB4_CONFORMANCE_DIR) + "/" + name;
}

bool load_or_skip(stlite::File &f, const char *name) {
    const std::string path = conformance_file(name);
    std::string err;
    if (!f.open(path, &err)) {
        std::printf("[bnb4] conformance file %s not available (%s): skipping\n", path.c_str(), err.c_str());
        return false;
    }
    return true;
}

bnb4_dtype dtype_of(const std::string &tag) {
    return tag == "F16" ? BNB4_F16 : tag == "BF16" ? BNB4_BF16 : BNB4_F32;
}

TEST_F(CudaTest, ConformanceQuantize) {
    stlite::File f;
    if (!load_or_skip(f, "quantize.safetensors"))
        GTEST_SKIP() << "conformance files absent (set BNB4_CONFORMANCE_DIR)";
    size_t cases = 0;
    for (const std::string &c : f.cases()) {
        const stlite::Tensor *in = f.find(c + ".input"), *pk = f.find(c + ".packed"), *am = f.find(c + ".absmax"),
                             *dq = f.find(c + ".dequant");
        if (!in || !pk || !am || !dq)
            continue;
        const bnb4_quant_type qt = c.rfind("nf4", 0) == 0 ? BNB4_NF4 : BNB4_FP4;
        const size_t bs = std::stoul(c.substr(c.find("_bs") + 3));
        const bnb4_dtype dt = dtype_of(in->dtype);
        const size_t n = in->numel(), nb = am->numel();
        DevBuf src(in->data, in->bytes), packed(pk->bytes), absmax(am->bytes), out(dq->bytes);
        ASSERT_EQ(BNB4_OK, bnb4_quantize(ctx, src.as<void>(), dt, n, bs, qt, packed.as<uint8_t>(), absmax.as<float>()));
        const bnb4_qtensor q = bnb4_qtensor_plain(1, n, bs, qt, packed.as<uint8_t>(), absmax.as<float>());
        ASSERT_EQ(BNB4_OK, bnb4_dequantize(ctx, &q, dt, out.as<void>()));
        sync();
        ASSERT_TRUE(same_bytes(pk->vec(), packed.get(), c + " packed"));
        ASSERT_TRUE(same_bytes(am->vec(), absmax.get(), c + " absmax"));
        ASSERT_TRUE(same_values(dq->vec(), out.get(), dt, c + " dequant"));
        (void)nb;
        cases++;
    }
    std::printf("[bnb4] %zu quantize conformance cases bit-identical on CUDA\n", cases);
    EXPECT_GT(cases, 300u);
}

TEST_F(CudaTest, ConformanceDoubleQuant) {
    stlite::File f;
    if (!load_or_skip(f, "double_quant.safetensors"))
        GTEST_SKIP() << "conformance files absent (set BNB4_CONFORMANCE_DIR)";
    size_t cases = 0;
    for (const std::string &c : f.cases()) {
        const stlite::Tensor *in = f.find(c + ".input"), *pk = f.find(c + ".packed"), *codes = f.find(c + ".absmax"),
                             *off = f.find(c + ".offset"), *nabs = f.find(c + ".nested_absmax"),
                             *raw = f.find(c + ".absmax_raw"), *dq = f.find(c + ".dequant"),
                             *adq = f.find(c + ".absmax_dq"), *ncode = f.find(c + ".nested_code");
        if (!in || !pk || !codes || !off || !nabs || !raw || !dq || !adq || !ncode)
            continue;
        const bnb4_quant_type qt = c.rfind("nf4", 0) == 0 ? BNB4_NF4 : BNB4_FP4;
        const size_t bs = std::stoul(c.substr(c.find("_bs") + 3));
        const size_t nbs = std::stoul(c.substr(c.find("_nbs") + 4));
        const bnb4_dtype dt = dtype_of(in->dtype);
        const size_t n = in->numel(), nb = raw->numel();
        float offset;
        std::memcpy(&offset, off->data, 4);
        DevBuf src(in->data, in->bytes), packed(pk->bytes), absmax(raw->bytes), dcodes(nb), dnabs(nabs->bytes),
            dcode(ncode->data, ncode->bytes), dadq(adq->bytes), out(dq->bytes);
        ASSERT_EQ(BNB4_OK, bnb4_quantize(ctx, src.as<void>(), dt, n, bs, qt, packed.as<uint8_t>(), absmax.as<float>()));
        float off_gpu = 0;
        ASSERT_EQ(BNB4_OK, bnb4_nested_offset(ctx, absmax.as<float>(), nb, &off_gpu));
        EXPECT_EQ(bnb4_f32_bits(offset), bnb4_f32_bits(off_gpu)) << c << " offset";  // torch's mean, bit for bit
        ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(ctx, absmax.as<float>(), nb, offset, nbs, dcodes.as<uint8_t>(),
                                                dnabs.as<float>()));
        const bnb4_qtensor q = bnb4_qtensor_nested(1, n, bs, qt, packed.as<uint8_t>(), dcodes.as<uint8_t>(),
                                                   dnabs.as<float>(), dcode.as<float>(), offset, nbs);
        ASSERT_EQ(BNB4_OK, bnb4_dequantize_nested(ctx, &q, dadq.as<float>()));
        ASSERT_EQ(BNB4_OK, bnb4_dequantize(ctx, &q, dt, out.as<void>()));
        sync();
        ASSERT_TRUE(same_bytes(pk->vec(), packed.get(), c + " packed"));
        ASSERT_TRUE(same_bytes(raw->vec(), absmax.get(), c + " absmax_raw"));
        ASSERT_TRUE(same_bytes(codes->vec(), dcodes.get(), c + " absmax codes"));
        ASSERT_TRUE(same_bytes(nabs->vec(), dnabs.get(), c + " nested_absmax"));
        ASSERT_TRUE(same_bytes(adq->vec(), dadq.get(), c + " absmax_dq"));
        ASSERT_TRUE(same_values(dq->vec(), out.get(), dt, c + " dequant"));
        cases++;
    }
    std::printf("[bnb4] %zu double-quant conformance cases bit-identical on CUDA\n", cases);
    EXPECT_GT(cases, 0u);
}

TEST_F(CudaTest, ConformanceGemv) {
    stlite::File f;
    if (!load_or_skip(f, "gemv.safetensors"))
        GTEST_SKIP() << "conformance files absent (set BNB4_CONFORMANCE_DIR)";
    size_t cases = 0;
    for (const std::string &c : f.cases()) {
        const stlite::Tensor *x = f.find(c + ".x"), *yref = f.find(c + ".y_ref");
        if (!x || !yref)
            continue;
        // case {qt}_bs{bs}_{dt}_M{M}_N{N}_K{K} uses weight w_{qt}_bs{bs}_N{N}_K{K}
        const size_t pm = c.find("_M"), pn = c.find("_N"), pk = c.find("_K");
        const std::string qtbs = c.substr(0, c.find('_', c.find("_bs") + 1));
        const std::string wname = "w_" + qtbs + c.substr(pn);
        const stlite::Tensor *wp = f.find(wname + ".w_packed"), *wa = f.find(wname + ".absmax");
        ASSERT_TRUE(wp && wa) << "weight " << wname << " missing";
        const size_t M = std::stoul(c.substr(pm + 2)), N = std::stoul(c.substr(pn + 2)), K = std::stoul(c.substr(pk + 2));
        const size_t bs = std::stoul(c.substr(c.find("_bs") + 3));
        const bnb4_quant_type qt = c.rfind("nf4", 0) == 0 ? BNB4_NF4 : BNB4_FP4;
        const bnb4_dtype dt = dtype_of(x->dtype);
        const size_t es = bnb4_dtype_size(dt);
        DevBuf dp(wp->data, wp->bytes), da(wa->data, wa->bytes), dx(x->data, x->bytes), dy(M * N * es);
        const bnb4_qtensor w = bnb4_qtensor_plain(N, K, bs, qt, dp.as<uint8_t>(), da.as<float>());
        ASSERT_EQ(BNB4_OK, bnb4_linear(ctx, &w, dt, M, dx.as<void>(), nullptr, dy.as<void>())) << c;
        sync();
        std::vector<double> want(M * N);
        std::memcpy(want.data(), yref->data, M * N * 8);
        EXPECT_LE(rel_err(values_of(dy.get(), dt, M * N), want), tolerance(dt)) << c;
        cases++;
    }
    std::printf("[bnb4] %zu gemv/gemm conformance cases within tolerance on CUDA\n", cases);
    EXPECT_GT(cases, 0u);
}

#endif // BNB4_WITH_CUDA

}  // namespace
