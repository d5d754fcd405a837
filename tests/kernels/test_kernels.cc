// test_kernels.cc - every CPU kernel of the dispatched ISA level (BNB4_ISA, see tests.cmake) against the
// scalar reference, on fresh random data (seed printed; replay with BNB4_TEST_SEED).
//
// The sweep hits every tile edge of the kernels: m in 1..17, 33, 64, 127; K at, below and above 16,
// 32, 64, 128 (the direct gemv's chunk), the block sizes and the tile driver's K chunk (2048); odd and
// prime N and K; every dtype, quant type, blocksize, plain and nested absmax. Outputs sit in guarded
// buffers. Quantize must match byte for byte, dequantize bit for bit; gemm within an error bound that
// grows with K (float32 accumulation vs the reference's float64), and every op must give the same bits
// for 1, 2 and 3 threads.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

#include "bnb4.h"
#include "bnb4_format.h"
#include "bnb4_half.h"
#include "bnb4_rcp.h"
#include "bnb4_ref.h"
#include "cpu_internal.h"
#include "test_util.h"

using namespace bnb4test;

namespace {

const bnb4_dtype kDtypes[] = {BNB4_F32, BNB4_F16, BNB4_BF16};
const bnb4_quant_type kQuantTypes[] = {BNB4_NF4, BNB4_FP4};
const size_t kBlocksizes[] = {32, 64, 128, 256, 512, 1024, 2048, 4096};

struct Ctx {
    bnb4_ctx *ctx = nullptr;
    explicit Ctx(int threads) {
        bnb4_ctx_params p;
        bnb4_ctx_params_default(&p);
        p.num_threads = threads;
        EXPECT_EQ(BNB4_OK, bnb4_ctx_create(&p, &ctx));
    }
    ~Ctx() { bnb4_ctx_destroy(ctx); }
};

// Random data with the values that decide bytes mixed in: zeros of both signs, subnormals, NaN, inf,
// huge and tiny magnitudes, and whole blocks of zeros (absmax 0 -> rcp = inf -> 0 * inf = NaN codes).
Array special_data(bnb4_dtype dt, size_t n, size_t blocksize, std::mt19937_64 &g) {
    Array a = randn(dt, n, g);
    std::uniform_int_distribution<int> pick(0, 99);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    const float specials[] = {0.0f, -0.0f, 1e-40f, -3e-39f, NAN, INFINITY, -INFINITY, 1e30f, -1e-30f, 65504.0f};
    for (size_t i = 0; i < n; i++) {
        const int r = pick(g);
        if (r < 3)
            a.set(i, specials[pick(g) % 10]);
        else if (r < 5)
            a.set(i, u(g) * 1e-38f);
        else if (r < 6) // a signaling NaN (quiet bit clear, payload nonzero): C's fmaxf does not ignore it
            set_signaling_nan(a, i, (uint32_t)g());
    }
    const size_t nb = n / blocksize;
    if (nb > 2) { // a zero block, a subnormal-only block, a block of tiny normals
        const size_t b = std::uniform_int_distribution<size_t>(0, nb - 1)(g);
        for (size_t i = 0; i < blocksize; i++)
            a.set(b * blocksize + i, 0.0f);
        const size_t c = (b + 1) % nb;
        for (size_t i = 0; i < blocksize; i++)
            a.set(c * blocksize + i, u(g) * 1e-39f);
        const size_t d = (b + 2) % nb;
        for (size_t i = 0; i < blocksize; i++)
            a.set(d * blocksize + i, u(g) * 1e-36f);
        // absmax just above 2^-110 (the kernels' no-flush fast path) with subnormals of both signs among
        // the values: their huge normalised products must still encode as flushed zeros
        if (nb > 3) {
            const size_t e = (b + 3) % nb;
            for (size_t i = 0; i < blocksize; i++)
                a.set(e * blocksize + i, i % 3 ? u(g) * 1e-32f : u(g) * 1e-39f);
        }
    }
    return a;
}

std::vector<size_t> quantize_sizes(size_t bs) {
    return {1, 2, 15, 16, 17, 31, 32, 33, bs - 1, bs, bs + 1, 2 * bs, 3 * bs + 2, 5 * bs + 17, 1009, 65536 + 3 * bs + 1};
}

// A quantized tensor with its backing storage; nested when requested (bitsandbytes' nested blocks of 256).
struct QTensor {
    size_t rows, cols, bs;
    bnb4_quant_type qt;
    std::vector<uint8_t> packed, codes;
    std::vector<float> absmax, nested_absmax;
    float offset = 0.0f;
    bool nested;
    size_t nested_bs = 256;
    const float *nested_code = bnb4_nested_code();
    bnb4_qtensor view() const {
        if (!nested)
            return bnb4_qtensor_plain(rows, cols, bs, qt, packed.data(), absmax.data());
        return bnb4_qtensor_nested(rows, cols, bs, qt, packed.data(), codes.data(), nested_absmax.data(),
                                   nested_code, offset, nested_bs);
    }
};

QTensor make_qtensor(size_t rows, size_t cols, size_t bs, bnb4_quant_type qt, bool nested, std::mt19937_64 &g,
                     bool wild_scales = false, size_t nested_bs = 256) {
    QTensor q{rows, cols, bs, qt, {}, {}, {}, {}, 0.0f, nested};
    q.nested_bs = nested_bs;
    const size_t n = rows * cols, nb = (n + bs - 1) / bs;
    q.packed.resize((n + 1) / 2);
    for (auto &b : q.packed)
        b = (uint8_t)g();
    q.absmax.resize(nb);
    std::uniform_real_distribution<float> u(0.01f, 2.0f);
    for (auto &s : q.absmax)
        s = u(g);
    if (wild_scales && nb > 0) { // the dequantize kernels' scalar-FTZ path and special scales
        const float wild[] = {1e-38f, 5e-39f, 0x1p-118f, 0x1.fffffep-119f, 0.0f, -1.5f, INFINITY, NAN, 1e38f};
        for (size_t i = 0; i < nb; i += 3)
            q.absmax[i] = wild[(i / 3) % 9];
    }
    if (nested) {
        EXPECT_EQ(BNB4_OK, bnb4_nested_offset(nullptr, q.absmax.data(), nb, &q.offset));
        q.codes.resize(nb);
        q.nested_absmax.resize((nb + nested_bs - 1) / nested_bs);
        EXPECT_EQ(BNB4_OK, bnb4_quantize_nested(nullptr, q.absmax.data(), nb, q.offset, nested_bs, q.codes.data(),
                                                q.nested_absmax.data()));
        q.absmax.clear();
    }
    return q;
}

std::string isa_suffix() {
    const bnb4_cpu_info *info = bnb4_cpu_info_get();
    return std::string("__") + bnb4_isa_name(info->level == BNB4_ISA_AMX ? BNB4_ISA_AVX512 : info->level);
}

} // namespace

// The level asked for in BNB4_ISA is the one that runs (or the best one, when capped), and every
// op names a kernel of that level.
TEST(Kernels, DispatchHonoursBnb4Isa) {
    const bnb4_cpu_info *info = bnb4_cpu_info_get();
    std::printf("[bnb4] features: %s; best %s, running %s%s%s\n", bnb4_cpu_features(), bnb4_isa_name(info->best),
                bnb4_isa_name(info->level), info->isa_note[0] ? "; " : "", info->isa_note);
    const char *env = std::getenv("BNB4_ISA");
    if (env && *env) {
        const int forced = bnb4_isa_parse(env);
        ASSERT_GE(forced, 0) << "BNB4_ISA=" << env << " is not a level name";
        if ((bnb4_isa)forced > info->best)
            GTEST_SKIP() << "BNB4_ISA=" << env << " is above this CPU's best level (" << bnb4_isa_name(info->best)
                         << "); the suite ran capped";
        EXPECT_EQ((bnb4_isa)forced, info->level);
    }
    for (bnb4_dtype dt : kDtypes) {
        const std::string q = bnb4_kernel_name(nullptr, BNB4_OP_QUANTIZE, dt, 1);
        const std::string d = bnb4_kernel_name(nullptr, BNB4_OP_DEQUANTIZE, dt, 1);
        const std::string v = bnb4_kernel_name(nullptr, BNB4_OP_GEMV, dt, 1);
        const std::string m = bnb4_kernel_name(nullptr, BNB4_OP_GEMM, dt, 64);
        std::printf("[bnb4] %s: quantize %s, dequantize %s, gemv %s, gemm(m=64) %s\n", bnb4_dtype_name(dt), q.c_str(),
                    d.c_str(), v.c_str(), m.c_str());
        const std::string sfx = isa_suffix();
        EXPECT_NE(std::string::npos, q.find(sfx)) << q;
        EXPECT_NE(std::string::npos, d.find(sfx)) << d;
        if (info->level != BNB4_ISA_SCALAR) {
            EXPECT_NE(std::string::npos, v.find("__")) << v;
            EXPECT_NE(std::string::npos, m.find("__")) << m;
        }
    }
    EXPECT_STRNE("", bnb4_cpu_features());
}

TEST(Kernels, ParseIsaNames) {
    EXPECT_EQ((int)BNB4_ISA_SCALAR, bnb4_isa_parse("scalar"));
    EXPECT_EQ((int)BNB4_ISA_AVX2, bnb4_isa_parse("avx2"));
    EXPECT_EQ((int)BNB4_ISA_AVX512, bnb4_isa_parse("avx512"));
    EXPECT_EQ((int)BNB4_ISA_AMX, bnb4_isa_parse("amx"));
    EXPECT_EQ((int)BNB4_ISA_NEON, bnb4_isa_parse("neon"));
    EXPECT_EQ(-1, bnb4_isa_parse("avx1024"));
}

// The pool runs every unit exactly once for any thread count, and runs inline when nested.
TEST(Kernels, ThreadPoolRunsEachUnitOnce) {
    for (int threads : {1, 2, 3, 8}) {
        for (size_t units : {(size_t)0, (size_t)1, (size_t)2, (size_t)7, (size_t)1000}) {
            std::vector<int> hits(units, 0);
            bnb4_parallel_for(threads, units, [](void *arg, size_t u, int) { ((int *)arg)[u]++; }, hits.data());
            for (size_t u = 0; u < units; u++)
                ASSERT_EQ(1, hits[u]) << "threads " << threads << " units " << units << " unit " << u;
        }
    }
}

// A fork()ed child (Python multiprocessing) has none of the parent's workers; its ops must still run
// on several threads without waiting for workers that do not exist (alarm turns a hang into a failure).
TEST(Kernels, ThreadPoolWorksAfterFork) {
    if (std::getenv("BNB4_TEST_UNDER_QEMU"))
        GTEST_SKIP() << "qemu-user (7.2) aborts when a fork()ed child of a threaded process creates a thread";
    std::vector<int> hits(64, 0);
    bnb4_parallel_for(2, hits.size(), [](void *arg, size_t u, int) { ((int *)arg)[u]++; }, hits.data());
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        alarm(20);
        std::vector<int> h(1000, 0);
        for (int rep = 0; rep < 3; rep++)
            bnb4_parallel_for(2, h.size(), [](void *arg, size_t u, int) { ((int *)arg)[u]++; }, h.data());
        for (int v : h)
            if (v != 3)
                _exit(1);
        _exit(0);
    }
    int status = 0;
    ASSERT_EQ(pid, waitpid(pid, &status, 0));
    EXPECT_TRUE(WIFEXITED(status)) << "child killed by signal " << (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
    EXPECT_EQ(0, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

TEST(Kernels, QuantizeByteExact) {
    auto g = rng(301);
    Ctx one(1), two(2), three(3);
    for (bnb4_dtype dt : kDtypes)
        for (bnb4_quant_type qt : kQuantTypes)
            for (size_t bs : kBlocksizes)
                for (size_t n : quantize_sizes(bs)) {
                    SCOPED_TRACE(std::string(dtype_name(dt)) + " " + bnb4_quant_type_name(qt) + " bs " +
                                 std::to_string(bs) + " n " + std::to_string(n));
                    const Array x = special_data(dt, n, bs, g);
                    const size_t nb = (n + bs - 1) / bs, pb = (n + 1) / 2;
                    std::vector<uint8_t> ref_packed(pb);
                    std::vector<float> ref_absmax(nb);
                    bnb4_ref_quantize_blocks(x.data(), dt, n, bs, qt, 0, nb, ref_packed.data(), ref_absmax.data());
                    for (Ctx *c : {&one, &two, &three}) {
                        Guarded packed(pb), absmax(nb * sizeof(float));
                        ASSERT_EQ(BNB4_OK, bnb4_quantize(c->ctx, x.data(), dt, n, bs, qt, packed.data(),
                                                         (float *)absmax.data()));
                        ASSERT_TRUE(packed.fence_intact());
                        ASSERT_TRUE(absmax.fence_intact());
                        ASSERT_EQ(0, std::memcmp(ref_packed.data(), packed.data(), pb));
                        ASSERT_EQ(0, std::memcmp(ref_absmax.data(), absmax.data(), nb * sizeof(float)));
                    }
                }
}

// Values exactly on, just below and just above every threshold (times a power-of-two absmax, so
// the normalised value is the threshold itself): ties must go to the lower code, as on the GPU.
TEST(Kernels, QuantizeThresholdTies) {
    const float nf4[] = {BNB4_NF4_T0, BNB4_NF4_T1, BNB4_NF4_T2,  BNB4_NF4_T3,  BNB4_NF4_T4,
                         BNB4_NF4_T5, BNB4_NF4_T6, BNB4_NF4_T7,  BNB4_NF4_T8,  BNB4_NF4_T9,
                         BNB4_NF4_T10, BNB4_NF4_T11, BNB4_NF4_T12, BNB4_NF4_T13, BNB4_NF4_T14};
    const float fp4[] = {BNB4_FP4_U0, BNB4_FP4_U1, BNB4_FP4_U2, BNB4_FP4_U3, BNB4_FP4_U4, BNB4_FP4_U5, BNB4_FP4_U6};
    for (bnb4_quant_type qt : kQuantTypes) {
        std::vector<float> x;
        const float *t = qt == BNB4_NF4 ? nf4 : fp4;
        const size_t nt = qt == BNB4_NF4 ? 15 : 7;
        for (size_t k = 0; k < nt; k++)
            for (float sgn : {1.0f, -1.0f})
                for (float v : {t[k], std::nextafter(t[k], -2.0f), std::nextafter(t[k], 2.0f)})
                    x.push_back(sgn * v * 4.0f);
        while (x.size() % 64 != 63)
            x.push_back(0.5f);
        x.push_back(4.0f); // absmax of the last block: the scale is exactly 4
        for (size_t i = 0; i < x.size(); i += 64)
            x[i] = 4.0f;
        const size_t n = x.size(), nb = n / 64;
        std::vector<uint8_t> ref(n / 2), got(n / 2);
        std::vector<float> ra(nb), ga(nb);
        bnb4_ref_quantize_blocks(x.data(), BNB4_F32, n, 64, qt, 0, nb, ref.data(), ra.data());
        ASSERT_EQ(BNB4_OK, bnb4_quantize(nullptr, x.data(), BNB4_F32, n, 64, qt, got.data(), ga.data()));
        EXPECT_EQ(ref, got) << bnb4_quant_type_name(qt);
        EXPECT_EQ(0, std::memcmp(ra.data(), ga.data(), nb * sizeof(float)));
    }
}

// FP4's sign where x * rcp(absmax) meets the flush boundary: a product of exactly -FLT_MIN is normal, so the
// code is 8 (negative, smallest magnitude); just above it in magnitude too; just below, it is flushed to -0
// and the code is 0. absmax 2^e (an exact reciprocal) from the fast path's range (>= 2^-110) down to below it;
// float32 and bfloat16 (float16 cannot come near: its values are >= 2^-24).
TEST(Kernels, QuantizeFp4SignAtTheFlushBoundary) {
    Ctx one(1);
    for (bnb4_dtype dt : {BNB4_F32, BNB4_BF16})
        for (int e : {126, 100, 40, 20, 1, 0, -90, -110, -111, -120})
            for (size_t bs : {(size_t)32, (size_t)64, (size_t)4096}) {
                SCOPED_TRACE(std::string(dtype_name(dt)) + " absmax 2^" + std::to_string(e) + " bs " + std::to_string(bs));
                Array x = make_array(dt, bs);
                const float fmin_x = std::ldexp(1.0f, e - 126);  // times 2^-e: exactly FLT_MIN
                const float vals[] = {-fmin_x, -fmin_x * (1.0f + 0x1p-7f), -fmin_x * (1.0f - 0x1p-8f), fmin_x,
                                      -fmin_x * 2.0f, -fmin_x * 0.5f};
                for (size_t i = 0; i < bs; i++)
                    x.set(i, i == 0 ? std::ldexp(1.0f, e) : vals[i % 6]);
                std::vector<uint8_t> ref(bs / 2);
                float ref_absmax;
                bnb4_ref_quantize_blocks(x.data(), dt, bs, bs, BNB4_FP4, 0, 1, ref.data(), &ref_absmax);
                if (e >= 0) { // normal inputs: products of -FLT_MIN and beyond keep the sign, flushed ones not
                    auto nibble = [&](size_t i) { return i % 2 ? ref[i / 2] & 15 : ref[i / 2] >> 4; };
                    EXPECT_EQ(8, nibble(6)) << "x * rcp(absmax) = -FLT_MIN";
                    EXPECT_EQ(8, nibble(1)) << "just above FLT_MIN in magnitude";
                    if (std::fabs(x.get(2)) < fmin_x) { // (bfloat16 at 2^0 rounds it up to FLT_MIN)
                        EXPECT_EQ(0, nibble(2)) << "just below: flushed to -0";
                    }
                    EXPECT_EQ(0, nibble(3)) << "+FLT_MIN";
                }
                for (Ctx *c : {(Ctx *)nullptr, &one}) {
                    std::vector<uint8_t> got(bs / 2);
                    float got_absmax;
                    ASSERT_EQ(BNB4_OK, bnb4_quantize(c ? c->ctx : nullptr, x.data(), dt, bs, bs, BNB4_FP4, got.data(),
                                                     &got_absmax));
                    EXPECT_EQ(ref, got);
                    EXPECT_EQ(f32_bits(ref_absmax), f32_bits(got_absmax));
                }
            }
}

// mul.ftz flushes a product that, rounded to 24 bits with an unbounded exponent, is below FLT_MIN: one less
// than a quarter of 2^-149 below FLT_MIN is kept, one further below is flushed, though IEEE's gradual
// underflow rounds both up to FLT_MIN. Recorded on the H200 (bnb4's CUDA kernel and bitsandbytes' agreed):
// absmax a, x, and whether FP4 kept x's sign (x * rcp(a) at -0.07..-0.21 (kept), -0.31..-0.42 (flushed) and
// +0.03..+0.36 (kept) units of 2^-149 from -FLT_MIN).
TEST(Kernels, QuantizeFlushesAsTheGpuRoundsFirst) {
    static const struct {
        uint32_t a, x;
        bool kept;
    } rows[] = {
        {0x65732d9cu, 0xa6732d9bu, true},  {0x4200474du, 0x8300474du, true},  {0x787ca764u, 0xb97ca764u, true},
        {0x5c0cc4d0u, 0x9d0cc4d0u, true},  {0x6c7e5ea0u, 0xad7e5ea0u, false}, {0x40e5b2ceu, 0x81e5b2cdu, false},
        {0x5112b416u, 0x9212b416u, false}, {0x6da173b4u, 0xaea173b4u, false}, {0x65732d9cu, 0xa6732d9cu, true},
        {0x6fc0205cu, 0xb0c0205cu, true},  {0x6c7e5ea0u, 0xad7e5ea1u, true},  {0x787ca764u, 0xb97ca765u, true},
    };
    Ctx one(1);
    for (size_t bs : {(size_t)32, (size_t)64, (size_t)4096})
        for (const auto &r : rows) {
            std::vector<float> x(bs, bnb4_bits_f32(r.x));
            x[0] = bnb4_bits_f32(r.a);
            std::vector<uint8_t> ref(bs / 2);
            float ref_absmax;
            bnb4_ref_quantize_blocks(x.data(), BNB4_F32, bs, bs, BNB4_FP4, 0, 1, ref.data(), &ref_absmax);
            EXPECT_EQ(r.kept ? 8 : 0, ref[0] & 15) << std::hex << r.a << " " << r.x;
            for (Ctx *c : {(Ctx *)nullptr, &one}) {
                std::vector<uint8_t> got(bs / 2);
                float got_absmax;
                ASSERT_EQ(BNB4_OK,
                          bnb4_quantize(c ? c->ctx : nullptr, x.data(), BNB4_F32, bs, bs, BNB4_FP4, got.data(), &got_absmax));
                EXPECT_EQ(ref, got) << std::hex << r.a << " " << r.x << " bs " << std::dec << bs;
            }
        }
    // the same rule on dequantize's products: code * absmax around FLT_MIN, every ISA against the reference
    const float c1 = bnb4_bits_f32(0x3baaaaabu); // FP4 code 1
    std::vector<float> absmax;
    for (int k = -40; k <= 40; k++)
        absmax.push_back(bnb4_bits_f32(bnb4_f32_bits(0x1p-126f / c1) + k));
    const size_t bs = 64, n = absmax.size() * bs;
    std::vector<uint8_t> packed(n / 2, 0x19); // codes 1 and 9 (-code 1)
    const bnb4_qtensor q = bnb4_qtensor_plain(1, n, bs, BNB4_FP4, packed.data(), absmax.data());
    std::vector<float> ref(n), got(n);
    bnb4_ref_dequantize_range(&q, BNB4_F32, 0, n, ref.data());
    size_t kept = 0;
    for (float v : ref)
        kept += v != 0.0f;
    EXPECT_GT(kept, 0u);
    EXPECT_LT(kept, n);
    for (Ctx *c : {(Ctx *)nullptr, &one}) {
        ASSERT_EQ(BNB4_OK, bnb4_dequantize(c ? c->ctx : nullptr, &q, BNB4_F32, got.data()));
        EXPECT_EQ(0, std::memcmp(ref.data(), got.data(), n * sizeof(float)));
    }
}

// Nested (8-bit) quantization of absmax: every nested blocksize shape (1, below/at/above the 16 lanes,
// bitsandbytes' 256, odd), absmax with NaN, inf, ties and values equal to the offset.
TEST(Kernels, QuantizeNestedByteExact) {
    auto g = rng(305);
    Ctx one(1), two(2), three(3);
    std::uniform_real_distribution<float> u(0.0f, 3.0f);
    for (size_t nbs : {(size_t)1, (size_t)7, (size_t)16, (size_t)17, (size_t)256, (size_t)300})
        for (size_t nblocks : {(size_t)1, (size_t)5, (size_t)16, (size_t)255, (size_t)256, (size_t)257, (size_t)4099}) {
            SCOPED_TRACE("nested blocksize " + std::to_string(nbs) + " nblocks " + std::to_string(nblocks));
            std::vector<float> absmax(nblocks);
            for (auto &a : absmax)
                a = u(g);
            float offset = 0.0f;
            ASSERT_EQ(BNB4_OK, bnb4_nested_offset(nullptr, absmax.data(), nblocks, &offset));
            uint32_t snan_bits = 0x7fa00001u; // a signaling NaN
            float snan;
            std::memcpy(&snan, &snan_bits, 4);
            for (size_t i = 0; i < nblocks; i += 11) // specials, including exactly the offset (difference 0)
                absmax[i] = (const float[]){NAN, INFINITY, 0.0f, 1e-39f, offset, -1.0f, snan}[(i / 11) % 7];
            const size_t nn = (nblocks + nbs - 1) / nbs;
            std::vector<uint8_t> ref_codes(nblocks);
            std::vector<float> ref_nabs(nn);
            bnb4_ref_quantize_nested_blocks(absmax.data(), nblocks, offset, nbs, 0, nn, ref_codes.data(), ref_nabs.data());
            for (Ctx *c : {&one, &two, &three}) {
                Guarded codes(nblocks), nabs(nn * sizeof(float));
                ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(c->ctx, absmax.data(), nblocks, offset, nbs, codes.data(),
                                                        (float *)nabs.data()));
                ASSERT_TRUE(codes.fence_intact() && nabs.fence_intact());
                ASSERT_EQ(0, std::memcmp(ref_codes.data(), codes.data(), nblocks));
                ASSERT_EQ(0, std::memcmp(ref_nabs.data(), nabs.data(), nn * sizeof(float)));
            }
        }
}

// Every midpoint between neighbouring entries of the signed map, and its float neighbours and the entries
// themselves: with absmax 1 (rcp exactly 1) and offset 0 the normalised value is the value itself, so
// the ties of the kernel's midpoint test are hit exactly.
TEST(Kernels, QuantizeNestedMidpointTies) {
    const float *map = bnb4_nested_code();
    std::vector<float> v = {1.0f};
    for (int k = 0; k < 255; k++) {
        const float mid = bnb4_mul_ftz(bnb4_ftz(map[k] + map[k + 1]), 0.5f);
        for (float f : {mid, std::nextafter(mid, -2.0f), std::nextafter(mid, 2.0f), map[k]})
            v.push_back(f);
    }
    v.push_back(map[255]);
    v.push_back(-1.0f);
    const size_t n = v.size();
    for (size_t nbs : {n, (size_t)256}) {
        const size_t nn = (n + nbs - 1) / nbs;
        if (nbs == 256) // pin every nested block's absmax at 1
            for (size_t j = 0; j < nn; j++)
                v[j * 256] = 1.0f;
        std::vector<uint8_t> ref(n), got(n);
        std::vector<float> ra(nn), ga(nn);
        bnb4_ref_quantize_nested_blocks(v.data(), n, 0.0f, nbs, 0, nn, ref.data(), ra.data());
        ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(nullptr, v.data(), n, 0.0f, nbs, got.data(), ga.data()));
        EXPECT_EQ(ref, got) << "nested blocksize " << nbs;
        EXPECT_EQ(0, std::memcmp(ra.data(), ga.data(), nn * sizeof(float)));
    }
}

TEST(Kernels, DequantizeBitExact) {
    auto g = rng(302);
    Ctx one(1), two(2), three(3);
    const size_t shapes[][2] = {{1, 1}, {1, 33}, {3, 31}, {7, 64}, {5, 129}, {17, 1000}, {2, 4096}, {33, 4099}, {96, 700}};
    for (bnb4_dtype dt : kDtypes)
        for (bnb4_quant_type qt : kQuantTypes)
            for (size_t bs : kBlocksizes)
                for (bool nested : {false, true})
                    for (const auto &sh : shapes) {
                        SCOPED_TRACE(std::string(dtype_name(dt)) + " " + bnb4_quant_type_name(qt) + " bs " +
                                     std::to_string(bs) + (nested ? " nested " : " plain ") + std::to_string(sh[0]) +
                                     "x" + std::to_string(sh[1]));
                        const QTensor q = make_qtensor(sh[0], sh[1], bs, qt, nested, g, /*wild_scales=*/!nested);
                        const bnb4_qtensor v = q.view();
                        const size_t n = sh[0] * sh[1], bytes = n * bnb4_dtype_size(dt);
                        std::vector<uint8_t> ref(bytes);
                        bnb4_ref_dequantize_range(&v, dt, 0, n, ref.data());
                        for (Ctx *c : {&one, &two, &three}) {
                            Guarded out(bytes);
                            ASSERT_EQ(BNB4_OK, bnb4_dequantize(c->ctx, &v, dt, out.data()));
                            ASSERT_TRUE(out.fence_intact());
                            ASSERT_EQ(0, std::memcmp(ref.data(), out.data(), bytes));
                        }
                        if (nested) {
                            const size_t nb = (n + bs - 1) / bs;
                            Guarded am(nb * sizeof(float));
                            ASSERT_EQ(BNB4_OK, bnb4_dequantize_nested(nullptr, &v, (float *)am.data()));
                            ASSERT_TRUE(am.fence_intact());
                            for (size_t b = 0; b < nb; b++) {
                                const float s = bnb4_ref_block_scale(&v, b);
                                ASSERT_EQ(0, std::memcmp(&s, am.data() + b * sizeof(float), sizeof s)) << "block " << b;
                            }
                        }
                    }
}

namespace {

// |y - ref| <= bound: float32 accumulation error grows with K; bfloat16-dot kernels also round each
// weight to bfloat16 (relative 2^-9); the result is rounded once to dt.
void check_gemm(const bnb4_qtensor &w, bnb4_dtype dt, size_t m, const Array &x, const Array *bias, const Guarded &y,
                const std::vector<uint8_t> &yref, bool bf16_weights) {
    const size_t N = w.rows, K = w.cols;
    const double eps_dt = unit_roundoff(dt), tiny_dt = 2 * subnormal_half_gap(dt);
    const double eps_acc = (double)(K + 16) * 0x1p-23 + (bf16_weights ? 0x1p-8 : 0.0);
    Array got = make_array(dt, m * N), want = make_array(dt, m * N);
    std::memcpy(got.data(), y.buf.data(), m * N * bnb4_dtype_size(dt));
    std::memcpy(want.data(), yref.data(), m * N * bnb4_dtype_size(dt));
    const float *cb = bnb4_codebook(w.quant_type);
    for (size_t j = 0; j < N; j++) {
        // sum_k |x w| for the bound, from the reference's own decoded weights
        std::vector<double> wabs(K);
        for (size_t k = 0; k < K; k++) {
            const size_t flat = j * K + k;
            wabs[k] = std::fabs((double)bnb4_mul_ftz(cb[bnb4_nibble_at(w.packed, flat)], bnb4_ref_block_scale(&w, flat / w.blocksize)));
        }
        for (size_t r = 0; r < m; r++) {
            double mag = bias ? std::fabs((double)bias->get(j)) : 0.0;
            for (size_t k = 0; k < K; k++)
                mag += std::fabs((double)x.get(r * K + k)) * wabs[k];
            const double a = got.get(r * N + j), b = want.get(r * N + j);
            // (both outputs rounded to dt: absolutely where subnormal, up to the smallest spacing apart)
            const double bound = eps_acc * mag + eps_dt * std::fabs(b) * 2 + tiny_dt + 1e-30;
            if (!(std::fabs(a - b) <= bound))
                FAIL() << "y[" << r << "][" << j << "] = " << a << ", reference " << b << ", bound " << bound
                       << " (m " << m << " N " << N << " K " << K << ")";
        }
    }
}

void run_gemm_view(std::mt19937_64 &g, bnb4_dtype dt, const bnb4_qtensor &w, size_t m, bool with_bias, Ctx *ctxs[3]) {
    const size_t N = w.rows, K = w.cols;
    const Array x = randn(dt, m * K, g);
    const Array bias = randn(dt, N, g);
    const size_t ybytes = m * N * bnb4_dtype_size(dt);
    std::vector<uint8_t> yref(ybytes);
    bnb4_ref_gemm_cols(&w, dt, m, x.data(), with_bias ? bias.data() : nullptr, yref.data(), 0, N);
    const std::string kname = bnb4_kernel_name(nullptr, m == 1 ? BNB4_OP_GEMV : BNB4_OP_GEMM, dt, m);
    const bool bf16_weights = kname.find("bf16dot") != std::string::npos;
    std::vector<uint8_t> first;
    for (int c = 0; c < 3; c++) {
        Guarded y(ybytes);
        if (m == 1 && c == 0)
            ASSERT_EQ(BNB4_OK, bnb4_gemv(ctxs[c]->ctx, &w, dt, x.data(), with_bias ? bias.data() : nullptr, y.data()));
        else
            ASSERT_EQ(BNB4_OK, (c == 2 ? bnb4_linear : bnb4_gemm)(ctxs[c]->ctx, &w, dt, m, x.data(),
                                                                  with_bias ? bias.data() : nullptr, y.data()));
        ASSERT_TRUE(y.fence_intact());
        if (c == 0) {
            check_gemm(w, dt, m, x, with_bias ? &bias : nullptr, y, yref, bf16_weights);
            first.assign(y.buf.begin(), y.buf.begin() + (long)ybytes);
        } else {
            ASSERT_EQ(0, std::memcmp(first.data(), y.data(), ybytes)) << "thread count changed the bits";
        }
    }
}

/* Every other block's scale one whose products flush to zero or sit at the vector paths' edge (2^-118),
 * a zero and a plain one: the decoders' exact scalar fallbacks against their vector paths. */
void set_flushing_scales(QTensor &q) {
    const float tiny[] = {1e-38f, 5e-39f, 0x1p-118f, 0x1.fffffep-119f, 0.0f, -1.5f, 3e-36f};
    for (size_t i = 0; i < q.absmax.size(); i += 2)
        q.absmax[i] = tiny[(i / 2) % 7];
}

void run_gemm_case(std::mt19937_64 &g, bnb4_dtype dt, bnb4_quant_type qt, size_t bs, bool nested, size_t m, size_t N,
                   size_t K, bool with_bias, Ctx *ctxs[3]) {
    SCOPED_TRACE(std::string(dtype_name(dt)) + " " + bnb4_quant_type_name(qt) + " bs " + std::to_string(bs) +
                 (nested ? " nested" : " plain") + " m " + std::to_string(m) + " N " + std::to_string(N) + " K " +
                 std::to_string(K));
    const QTensor q = make_qtensor(N, K, bs, qt, nested, g);
    run_gemm_view(g, dt, q.view(), m, with_bias, ctxs);
}

} // namespace

// K values straddling the kernels' edges: 16/32 lanes, 64/128-code chunks, blocksizes, the 2048 chunk.
TEST(Kernels, GemmSweep) {
    auto g = rng(303);
    Ctx one(1), two(2), three(3);
    Ctx *ctxs[3] = {&one, &two, &three};
    const size_t ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 33, 64, 127};
    const size_t Ks[] = {1, 7, 31, 32, 33, 63, 64, 65, 127, 128, 129, 256, 383, 384, 512, 1031, 2048, 2176, 4096, 4099};
    const size_t Ns[] = {1, 3, 4, 5, 15, 16, 17, 33};
    size_t case_index = 0;
    for (size_t m : ms)
        for (bnb4_dtype dt : kDtypes) {
            // a different (N, K, quant type, blocksize, nested) per case, cycling through every value
            for (int rep = 0; rep < 6; rep++, case_index++) {
                const size_t K = Ks[(case_index * 7) % (sizeof Ks / sizeof Ks[0])];
                const size_t N = Ns[(case_index * 3) % (sizeof Ns / sizeof Ns[0])];
                const size_t bs = kBlocksizes[case_index % 8];
                const bnb4_quant_type qt = kQuantTypes[(case_index / 8) % 2];
                const bool nested = (case_index / 3) % 2;
                if (m * N * K > 4000000)
                    continue;
                run_gemm_case(g, dt, qt, bs, nested, m, N, K, case_index % 4 != 0, ctxs);
                if (HasFatalFailure())
                    return;
            }
        }
}

// The AMX level's bfloat16 tile gemm (m > 6): 16-row activation groups in pairs (m = 7, 9 one group, 17 an odd
// count, 33 and 128 several pairs; 300 past the 4-unit blocks' limit), 32-row weight units with a
// part-filled last one (N = 31, 33, 70, 100; at m = 17 the 70 rows are one block of 3 units), K
// chunks of 2048 with a partial last 32-k step (K = 4099, 2080, 96), every blocksize, plain and nested,
// NF4 and FP4, with and without bias, on 1 / 2 / 3 threads (the same bits). Skipped where the CPU has no AMX
// or BNB4_ISA forces a lower level.
TEST(Kernels, GemmAmxTiles) {
    if (bnb4_cpu_info_get()->level != BNB4_ISA_AMX)
        GTEST_SKIP() << "the AMX level is not running here (best " << bnb4_isa_name(bnb4_cpu_info_get()->best)
                     << ", running " << bnb4_isa_name(bnb4_cpu_info_get()->level) << ")";
    ASSERT_NE(std::string::npos, std::string(bnb4_kernel_name(nullptr, BNB4_OP_GEMM, BNB4_BF16, 7)).find("__amx"));
    auto g = rng(305);
    Ctx one(1), two(2), three(3);
    Ctx *ctxs[3] = {&one, &two, &three};
    struct Case { size_t m, N, K; };
    const Case cases[] = {{9, 33, 4099},  {16, 32, 2048}, {17, 70, 2080},  {33, 31, 96},
                          {128, 40, 4096}, {64, 1, 64},   {300, 100, 512}, {7, 45, 1024}};
    size_t i = 0;
    for (const Case &c : cases)
        for (bool nested : {false, true}) {
            const size_t bs = kBlocksizes[i % 8];
            const size_t K = c.K % bs == 0 || i % 2 ? c.K : c.K / bs * bs + bs; /* aligned or not */
            run_gemm_case(g, BNB4_BF16, i % 3 ? BNB4_NF4 : BNB4_FP4, bs, nested, c.m, c.N, K, i % 2 == 0, ctxs);
            i++;
            if (HasFatalFailure())
                return;
        }
}

// The AMX gemm decodes weights exactly as dequantize writes them in bfloat16, flushing included: one-hot
// bfloat16 rows of X (one per activation row, at chunk edges and random k) make every output a single
// weight, compared as values (bit for bit but the sign of zero: the tiles sum from +0); K spans two 2048-k
// chunks and a partial step, every blocksize, plain (with scales whose products flush) and nested. Skipped
// where the AMX level is not running.
TEST(Kernels, GemmAmxDecodesLikeDequantize) {
    if (bnb4_cpu_info_get()->level != BNB4_ISA_AMX)
        GTEST_SKIP() << "the AMX level is not running here";
    auto g = rng(308);
    for (size_t bs : kBlocksizes)
        for (bool nested : {false, true}) {
            const size_t K = 4099 / bs * bs + (bs <= 64 ? bs : 0), N = 37, m = 20;
            SCOPED_TRACE("bs " + std::to_string(bs) + (nested ? " nested" : " plain"));
            QTensor q = make_qtensor(N, K, bs, (g() & 1) ? BNB4_NF4 : BNB4_FP4, nested, g);
            if (!nested)
                set_flushing_scales(q);
            const bnb4_qtensor w = q.view();
            std::vector<uint16_t> dense(N * K), x(m * K, 0), y(m * N);
            ASSERT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &w, BNB4_BF16, dense.data()));
            std::vector<size_t> col(m);
            const size_t edges[] = {0, 31, 32, 2047, 2048, K - 1};
            for (size_t i = 0; i < m; i++) {
                col[i] = i < 6 ? edges[i] : (size_t)(g() % K);
                x[i * K + col[i]] = 0x3f80; /* bfloat16 1.0 */
            }
            ASSERT_EQ(BNB4_OK, bnb4_gemm(nullptr, &w, BNB4_BF16, m, x.data(), nullptr, y.data()));
            const auto value = [](uint16_t b) { return bnb4_bf16_to_f32(b); }; /* (-0 and a sum's +0 equal) */
            for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < N; j++)
                    ASSERT_EQ(value(dense[j * K + col[i]]), value(y[i * N + j]))
                        << "row " << i << " column " << j << " k " << col[i];
        }
}

// The direct (streaming) kernels' shapes: K a multiple of 128 and of the blocksize, every blocksize,
// plain and nested, m up to the direct limit and past it.
TEST(Kernels, GemvAlignedShapes) {
    auto g = rng(304);
    Ctx one(1), two(2), three(3);
    Ctx *ctxs[3] = {&one, &two, &three};
    for (bnb4_dtype dt : kDtypes)
        for (size_t bs : kBlocksizes)
            for (bool nested : {false, true})
                for (size_t m : {(size_t)1, (size_t)2, (size_t)3, (size_t)8, (size_t)9}) {
                    const size_t K = bs <= 128 ? 384 : bs;
                    const size_t N = 1 + (size_t)(g() % 40);
                    run_gemm_case(g, dt, (g() & 1) ? BNB4_NF4 : BNB4_FP4, bs, nested, m, N, K, (g() & 1) != 0, ctxs);
                    if (HasFatalFailure())
                        return;
                }
}

// Nested scales as the direct kernels decode them: every nested blocksize path (per-nested-block tables
// for nested blocks of >= 128 blocks, a decoded scratch below), nested blocks straddling rows and work
// units, nested absmax values whose products flush to zero (tiny, zero, just above and below the
// tables' no-flush test) and a code map with subnormal and zero entries.
TEST(Kernels, GemvNestedScales) {
    auto g = rng(305);
    Ctx one(1), two(2), three(3);
    Ctx *ctxs[3] = {&one, &two, &three};
    std::vector<float> odd_code(bnb4_nested_code(), bnb4_nested_code() + 256);
    odd_code[3] = 1e-39f, odd_code[200] = -3e-40f, odd_code[17] = 0.0f, odd_code[130] = 0x1p-120f;
    const float wild[] = {1e-38f, 0.0f, 0x1p-100f, 0x1p-104f, 0x1p-106f, -2.5f, 1e-30f};
    size_t case_index = 0;
    for (bnb4_dtype dt : kDtypes)
        for (size_t bs : {(size_t)32, (size_t)64, (size_t)128, (size_t)512})
            for (size_t nbs : {(size_t)1, (size_t)7, (size_t)64, (size_t)128, (size_t)256, (size_t)300})
                for (size_t m : {(size_t)1, (size_t)2, (size_t)5}) {
                    case_index++;
                    const size_t K = bs <= 128 ? 384 : bs, N = 1 + (size_t)(g() % 45);
                    const bnb4_quant_type qt = (g() & 1) ? BNB4_NF4 : BNB4_FP4;
                    SCOPED_TRACE(std::string(dtype_name(dt)) + " bs " + std::to_string(bs) + " nested bs " +
                                 std::to_string(nbs) + " m " + std::to_string(m) + " N " + std::to_string(N));
                    QTensor q = make_qtensor(N, K, bs, qt, true, g, false, nbs);
                    if (case_index % 2) {
                        for (size_t i = 0; i < q.nested_absmax.size(); i += 2)
                            q.nested_absmax[i] = wild[(i / 2 + case_index) % 7];
                        q.nested_code = odd_code.data();
                    }
                    run_gemm_view(g, dt, q.view(), m, (g() & 1) != 0, ctxs);
                    if (HasFatalFailure())
                        return;
                }
}

// The float32 panel gemms (m > 8, K a multiple of 128 and of the blocksize; column lanes in 8-row groups,
// or row lanes in 16/32-row groups): m across and between the groups, N across the 32-column panels, K over one and several 128-element chunks, every
// blocksize that divides K, plain (with scales whose products flush: the decode's FTZ path) and nested.
TEST(Kernels, GemmPanelShapes) {
    auto g = rng(306);
    Ctx one(1), two(2), three(3);
    Ctx *ctxs[3] = {&one, &two, &three};
    const size_t ms[] = {9, 15, 16, 17, 33, 64, 127};
    const size_t Ns[] = {1, 31, 32, 33, 65, 161};
    const size_t Ks[] = {128, 256, 384, 1024, 2048};
    size_t case_index = 0;
    for (bnb4_dtype dt : kDtypes)
        for (size_t bs : kBlocksizes)
            for (bool nested : {false, true})
                for (int rep = 0; rep < 3; rep++, case_index++) {
                    const size_t m = ms[(case_index * 3) % 7], N = Ns[(case_index * 5) % 6];
                    size_t K = Ks[case_index % 5];
                    if (K % bs)
                        K = bs;
                    if (m * N * K > 800000)
                        K = bs > 128 ? bs : 128;
                    const bnb4_quant_type qt = case_index % 2 ? BNB4_NF4 : BNB4_FP4;
                    SCOPED_TRACE(std::string(dtype_name(dt)) + " bs " + std::to_string(bs) + (nested ? " nested" : " plain") +
                                 " m " + std::to_string(m) + " N " + std::to_string(N) + " K " + std::to_string(K));
                    QTensor q = make_qtensor(N, K, bs, qt, nested, g);
                    if (!nested && rep == 1) { // finite scales around the flush threshold, zero, negative
                        const float tiny[] = {1e-38f, 5e-39f, 0x1p-118f, 0x1.fffffep-119f, 0.0f, -1.5f};
                        for (size_t i = 0; i < q.absmax.size(); i += 3)
                            q.absmax[i] = tiny[(i / 3) % 6];
                    }
                    run_gemm_view(g, dt, q.view(), m, (g() & 1) != 0, ctxs);
                    if (HasFatalFailure())
                        return;
                }
}

// Past 4096 rows of X the row-lane panel gemm sweeps one panel per K chunk (its C^T would outgrow L2).
TEST(Kernels, GemmPanelManyRows) {
    auto g = rng(309);
    Ctx one(1), two(2), three(3);
    Ctx *ctxs[3] = {&one, &two, &three};
    const QTensor q = make_qtensor(70, 256, 64, BNB4_NF4, false, g);
    run_gemm_view(g, BNB4_F32, q.view(), 4097, true, ctxs);
}

// The panel gemms decode weights exactly as dequantize writes them, flushing included: with one-hot rows
// of X every output is a single weight (all other products are zeros), compared with ==.
TEST(Kernels, GemmPanelDecodesLikeDequantize) {
    auto g = rng(307);
    for (size_t bs : kBlocksizes)
        for (size_t m : {(size_t)12, (size_t)32}) { // both panel kernels (column lanes, row lanes)
            const size_t K = bs < 256 ? 256 : bs, N = 37;
            SCOPED_TRACE("bs " + std::to_string(bs) + " m " + std::to_string(m));
            QTensor q = make_qtensor(N, K, bs, (g() & 1) ? BNB4_NF4 : BNB4_FP4, false, g);
            set_flushing_scales(q);
            const bnb4_qtensor w = q.view();
            std::vector<float> dense(N * K), x(m * K, 0.0f), y(m * N);
            ASSERT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &w, BNB4_F32, dense.data()));
            std::vector<size_t> col(m);
            for (size_t i = 0; i < m; i++) {
                col[i] = (size_t)(g() % K);
                x[i * K + col[i]] = 1.0f;
            }
            ASSERT_EQ(BNB4_OK, bnb4_gemm(nullptr, &w, BNB4_F32, m, x.data(), nullptr, y.data()));
            for (size_t i = 0; i < m; i++)
                for (size_t j = 0; j < N; j++)
                    ASSERT_EQ(dense[j * K + col[i]], y[i * N + j]) << "row " << i << " column " << j << " k " << col[i];
        }
}

#if defined(__x86_64__)
namespace {
// The quantize kernels' vector rcp.approx against the scalar emulation (itself proven exhaustively by
// rcp_exhaustive), bit for bit: every mantissa at one exponent (the coefficient lookups and the squarer),
// and sampled mantissas at every exponent and sign (scaling, flushing, zero, subnormal, infinity and NaN
// inputs).
std::vector<uint32_t> rcp_test_inputs() {
    std::vector<uint32_t> in;
    for (uint32_t m = 0; m < (1u << 23); m++)
        in.push_back((127u << 23) | m);
    auto g = rng(308);
    const uint32_t edge_mantissas[] = {0u, 1u, 0x7fffffu, 0x400000u};
    for (uint32_t e = 0; e < 256; e++)
        for (int i = 0; i < 512; i++) {
            const uint32_t m = i < 4 ? edge_mantissas[i] : (uint32_t)(g() & 0x7fffffu);
            in.push_back((e << 23) | m);
            in.push_back(0x80000000u | (e << 23) | m);
        }
    in.resize(in.size() - 3); // a length that is no multiple of 8 or 16: the vector functions' tails
    return in;
}

void expect_rcp_matches_scalar(void (*rcp)(const float *, size_t, float *)) {
    const std::vector<uint32_t> in = rcp_test_inputs();
    std::vector<float> x(in.size()), got(in.size());
    std::memcpy(x.data(), in.data(), in.size() * sizeof(float));
    rcp(x.data(), x.size(), got.data());
    for (size_t i = 0; i < x.size(); i++) {
        const float want = bnb4_rcp_approx_f32(x[i]);
        ASSERT_EQ(0, std::memcmp(&want, &got[i], sizeof want)) << "x bits " << std::hex << in[i];
    }
}
} // namespace

// The AVX-512 kernel's 16 lanes.
TEST(Kernels, RcpApproxVectorMatchesScalar) {
    if (bnb4_cpu_info_get()->best < BNB4_ISA_AVX512)
        GTEST_SKIP() << "no AVX-512 on this CPU";
    expect_rcp_matches_scalar(bnb4_avx512_rcp_approx);
}

// The AVX2 quantize kernel's 8-lane rcp.approx, the same way.
TEST(Kernels, RcpApproxAvx2MatchesScalar) {
    if (bnb4_cpu_info_get()->best < BNB4_ISA_AVX2)
        GTEST_SKIP() << "no AVX2 on this CPU";
    expect_rcp_matches_scalar(bnb4_avx2_rcp_approx);
}
#endif
