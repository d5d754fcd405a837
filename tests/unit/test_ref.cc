// test_ref.cc - properties of bnb4's ops on fresh random data (the seed is printed): decision
// rules and ties, round trips, tails, every blocksize / dtype / quant type, odd and prime shapes,
// special values, nested absmax, gemv == gemm(m=1) == linear, outputs fully written and never
// overrun. Runs through the public API, so whatever kernel the CPU backend picks is checked.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>

#include "bnb4_format.h"
#include "bnb4_ref.h"
#include "bnb4_torch_mean.h"
#include "test_util.h"

using namespace bnb4test;

namespace {

const size_t kBlocksizes[] = {32, 64, 128, 256, 512, 1024, 2048, 4096};
const bnb4_dtype kDtypes[] = {BNB4_F32, BNB4_F16, BNB4_BF16};
const bnb4_quant_type kQuantTypes[] = {BNB4_NF4, BNB4_FP4};

size_t ceil_div(size_t a, size_t b) { return a / b + (a % b != 0); }

struct Quantized {
    std::vector<uint8_t> packed;
    std::vector<float> absmax;
};

Quantized quantize(const Array &src, size_t bs, bnb4_quant_type qt) {
    Quantized q;
    q.packed.resize(ceil_div(src.size(), 2));
    q.absmax.resize(ceil_div(src.size(), bs));
    EXPECT_EQ(BNB4_OK, bnb4_quantize(nullptr, src.data(), src.dtype, src.size(), bs, qt, q.packed.data(),
                                     q.absmax.data()))
        << bnb4_last_error();
    return q;
}

const float *codebook(bnb4_quant_type qt) { return bnb4_codebook(qt); }

}  // namespace

// ---- the decision rule ------------------------------------------------------------------------------

TEST(DecisionRule, CodebookValuesMapToThemselves) {
    for (int i = 0; i < 16; i++) {
        EXPECT_EQ((unsigned)i, bnb4_nf4_encode(codebook(BNB4_NF4)[i])) << i;
        EXPECT_EQ(i == 8 ? 0u : (unsigned)i, bnb4_fp4_encode(codebook(BNB4_FP4)[i])) << i;  // -0.0 has no sign
    }
}

TEST(DecisionRule, TiesGoToTheLowerCode) {
    const float t[15] = {BNB4_NF4_T0, BNB4_NF4_T1, BNB4_NF4_T2,  BNB4_NF4_T3,  BNB4_NF4_T4,
                         BNB4_NF4_T5, BNB4_NF4_T6, BNB4_NF4_T7,  BNB4_NF4_T8,  BNB4_NF4_T9,
                         BNB4_NF4_T10, BNB4_NF4_T11, BNB4_NF4_T12, BNB4_NF4_T13, BNB4_NF4_T14};
    for (unsigned k = 0; k < 15; k++) {
        EXPECT_EQ(k, bnb4_nf4_encode(t[k])) << k;
        EXPECT_EQ(k + 1, bnb4_nf4_encode(std::nextafter(t[k], 2.0f))) << k;
    }
    const float u[7] = {BNB4_FP4_U0, BNB4_FP4_U1, BNB4_FP4_U2, BNB4_FP4_U3, BNB4_FP4_U4, BNB4_FP4_U5, BNB4_FP4_U6};
    const unsigned rank_to_code[8] = {BNB4_FP4_RANK_TO_CODE};
    for (unsigned k = 0; k < 7; k++) {
        EXPECT_EQ(rank_to_code[k], bnb4_fp4_encode(u[k])) << k;
        EXPECT_EQ(rank_to_code[k + 1], bnb4_fp4_encode(std::nextafter(u[k], 2.0f))) << k;
        EXPECT_EQ(8 | rank_to_code[k + 1], bnb4_fp4_encode(-std::nextafter(u[k], 2.0f))) << k;
    }
    // the spec's bit patterns (format.md 2.3 / 2.4)
    EXPECT_EQ(0xbf591cd9u, f32_bits(BNB4_NF4_T0));
    EXPECT_EQ(0x3df64863u, f32_bits(BNB4_NF4_T8));
    EXPECT_EQ(0x3f006d03u, f32_bits(BNB4_NF4_T12));
    EXPECT_EQ(0x3f5c89d9u, f32_bits(BNB4_NF4_T14));
    EXPECT_EQ(0x3b2aaab9u, f32_bits(BNB4_FP4_U0));
    EXPECT_EQ(0x3f155550u, f32_bits(BNB4_FP4_U5));
}

TEST(DecisionRule, NaNAndSignedZero) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    EXPECT_EQ(0u, bnb4_nf4_encode(nan));
    EXPECT_EQ(0u, bnb4_fp4_encode(nan));
    EXPECT_EQ(7u, bnb4_nf4_encode(-0.0f));
    EXPECT_EQ(0u, bnb4_fp4_encode(-0.0f));
    EXPECT_EQ(8u, bnb4_fp4_encode(-1e-30f));  // a tiny negative keeps its sign
    EXPECT_EQ(0u, bnb4_fp4_encode(1e-30f));
}

// ---- quantize / dequantize properties ----------------------------------------------------------------

TEST(Quantize, RoundTripEveryConfiguration) {
    auto g = rng(1);
    // odd, prime and exact sizes around the block boundaries
    for (size_t bs : kBlocksizes)
        for (bnb4_dtype dt : kDtypes)
            for (bnb4_quant_type qt : kQuantTypes)
                for (size_t n : {(size_t)1, (size_t)2, (size_t)7, bs - 1, bs, bs + 1, 3 * bs + 17, (size_t)4099}) {
                    const Array x = randn(dt, n, g, 3.0f);
                    const Quantized q = quantize(x, bs, qt);
                    Guarded out(n * 4);
                    const bnb4_qtensor view = bnb4_qtensor_plain(1, n, bs, qt, q.packed.data(), q.absmax.data());
                    ASSERT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &view, BNB4_F32, out.data()));
                    ASSERT_TRUE(out.fence_intact());
                    // half the widest gap between adjacent code values, plus rounding of the input
                    const float half_gap = qt == BNB4_NF4 ? 0.1520f : 0.1667f;  // NF4: between -1 and -0.696
                    for (size_t i = 0; i < n; i++) {
                        const float am = q.absmax[i / bs];
                        float y;
                        std::memcpy(&y, out.data() + 4 * i, 4);
                        ASSERT_LE(std::fabs(y - x.get(i)), half_gap * am * 1.0001f + 1e-30f)
                            << "bs " << bs << " " << dtype_name(dt) << " qt " << qt << " n " << n << " i " << i;
                    }
                    // absmax is the exact block maximum of |x|
                    for (size_t b = 0; b < q.absmax.size(); b++) {
                        float am = 0;
                        for (size_t i = b * bs; i < std::min(n, (b + 1) * bs); i++)
                            am = std::max(am, std::fabs(x.get(i)));
                        ASSERT_EQ(f32_bits(am), f32_bits(q.absmax[b]));
                    }
                    // odd n: the pad nibble encodes 0 * rcp(absmax) (NF4 7, FP4 0 for absmax > 0)
                    if (n % 2 == 1 && q.absmax.back() > 0) {
                        ASSERT_EQ(qt == BNB4_NF4 ? 7 : 0, q.packed.back() & 15);
                    }
                }
}

TEST(Quantize, OutputsFullyWrittenAndNotOverrun) {
    auto g = rng(2);
    for (size_t n : {(size_t)1, (size_t)63, (size_t)64, (size_t)65, (size_t)1000, (size_t)4097}) {
        const Array x = randn(BNB4_BF16, n, g);
        // two runs over differently poisoned buffers must agree byte for byte
        std::vector<uint8_t> results[2];
        for (int run = 0; run < 2; run++) {
            Guarded p(ceil_div(n, 2)), a(4 * ceil_div(n, 64));
            std::memset(p.data(), run ? 0x00 : 0xff, p.size);
            std::memset(a.data(), run ? 0x00 : 0xff, a.size);
            ASSERT_EQ(BNB4_OK, bnb4_quantize(nullptr, x.data(), x.dtype, n, 64, BNB4_NF4, p.data(), (float *)a.data()));
            ASSERT_TRUE(p.fence_intact() && a.fence_intact()) << n;
            results[run].assign(p.data(), p.data() + p.size);
            results[run].insert(results[run].end(), a.data(), a.data() + a.size);
        }
        ASSERT_EQ(results[0], results[1]) << n;
    }
}

TEST(Quantize, SpecialBlocks) {
    const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
    Array x = make_array(BNB4_F32, 6 * 32 + 5);
    // block 0: all zero; block 1: all NaN; block 2: one NaN among ones; block 3: +inf among ones;
    // block 4: a huge absmax (> 2^126, reciprocal flushes to 0); block 5: subnormals only; tail: NaN + zeros
    for (size_t i = 0; i < 32; i++) {
        x.set(32 + i, nan);
        x.set(64 + i, 1.0f);
        x.set(96 + i, -0.5f);
        x.set(128 + i, 1e30f);
        x.set(160 + i, 1e-40f);
    }
    x.set(64 + 3, nan);
    x.set(96 + 7, inf);
    x.set(128, 3e38f);
    for (size_t i = 192; i < 197; i++)
        x.set(i, nan);
    for (bnb4_quant_type qt : kQuantTypes) {
        const Quantized q = quantize(x, 32, qt);
        const unsigned zero_code = qt == BNB4_NF4 ? 7 : 0;
        EXPECT_EQ(0.0f, q.absmax[0]);
        EXPECT_EQ(0, q.packed[0]);  // 0 * rcp(0) = 0 * inf = NaN -> code 0
        EXPECT_EQ(-FLT_MAX, q.absmax[1]);
        EXPECT_EQ(0, q.packed[16]);
        EXPECT_EQ(1.0f, q.absmax[2]);
        EXPECT_EQ(qt == BNB4_NF4 ? 0xf0 : 0x30, q.packed[(64 + 2) / 2]);  // elements 66 (1.0), 67 (NaN -> 0)
        EXPECT_EQ(inf, q.absmax[3]);
        EXPECT_EQ(zero_code << 4 | 0u, q.packed[(96 + 6) / 2]);  // finite * 0 -> zero code; inf * 0 = NaN -> 0
        EXPECT_EQ(3e38f, q.absmax[4]);
        for (size_t i = 128; i < 160; i += 2)
            EXPECT_EQ(zero_code << 4 | zero_code, q.packed[i / 2]) << i;
        EXPECT_EQ(0.0f, q.absmax[5]);  // subnormals flush to zero
        EXPECT_EQ(0.0f, q.absmax[6]);  // partial block: the padding zero takes part in the max
        EXPECT_EQ(0, q.packed[98]);
    }
}

TEST(Dequantize, MatchesCodebookTimesScaleEveryDtype) {
    auto g = rng(3);
    for (bnb4_quant_type qt : kQuantTypes)
        for (size_t bs : kBlocksizes) {
            const size_t n = 2 * bs + 33;
            std::vector<uint8_t> packed(ceil_div(n, 2));
            for (auto &b : packed)
                b = (uint8_t)g();
            std::vector<float> absmax(ceil_div(n, bs));
            std::normal_distribution<float> d;
            for (auto &a : absmax)
                a = d(g);  // may be negative, as bitsandbytes' own tests allow
            const bnb4_qtensor q = bnb4_qtensor_plain(1, n, bs, qt, packed.data(), absmax.data());
            for (bnb4_dtype dt : kDtypes) {
                Array out = make_array(dt, n);
                Guarded buf(n * bnb4_dtype_size(dt));
                ASSERT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &q, dt, buf.data()));
                ASSERT_TRUE(buf.fence_intact());
                std::memcpy(out.data(), buf.data(), buf.size);
                for (size_t i = 0; i < n; i++) {
                    Array want = make_array(dt, 1);
                    want.set(0, codebook(qt)[bnb4_nibble_at(packed.data(), i)] * absmax[i / bs]);
                    ASSERT_EQ(0, std::memcmp(want.data(), out.bytes.data() + i * want.bytes.size(), want.bytes.size()))
                        << dtype_name(dt) << " i " << i;
                }
            }
        }
}

TEST(Nested, QuantizeAndDecode) {
    auto g = rng(4);
    for (size_t nbs : {(size_t)256, (size_t)64, (size_t)100, (size_t)1}) {
        const size_t nb = 1000;
        std::vector<float> absmax(nb);
        std::uniform_real_distribution<float> d(0.01f, 3.0f);
        for (auto &a : absmax)
            a = d(g);
        float offset;
        ASSERT_EQ(BNB4_OK, bnb4_nested_offset(nullptr, absmax.data(), nb, &offset));
        double mean = 0;
        for (float a : absmax)
            mean += a;
        // torch's float32 order (NestedOffsetIsTorchsCudaMean), close to the exact mean
        EXPECT_LE(std::llabs((long long)f32_bits((float)(mean / nb)) - (long long)f32_bits(offset)), 2);
        std::vector<uint8_t> codes(nb);
        std::vector<float> nested(ceil_div(nb, nbs));
        ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(nullptr, absmax.data(), nb, offset, nbs, codes.data(), nested.data()));
        std::vector<uint8_t> packed(nb * 32, 0x77);
        const bnb4_qtensor q = bnb4_qtensor_nested(1, nb * 64, 64, BNB4_NF4, packed.data(), codes.data(),
                                                   nested.data(), bnb4_nested_code(), offset, nbs);
        std::vector<float> decoded(nb);
        ASSERT_EQ(BNB4_OK, bnb4_dequantize_nested(nullptr, &q, decoded.data()));
        for (size_t i = 0; i < nb; i++) {
            const float want = bnb4_nested_code()[codes[i]] * nested[i / nbs] + offset;  // two roundings
            ASSERT_EQ(f32_bits(want), f32_bits(decoded[i])) << i;
            // the 8-bit dynamic map keeps absmax within about 1% of its block's range
            ASSERT_NEAR(absmax[i], decoded[i], 0.02 * nested[i / nbs] + 1e-6) << "nbs " << nbs << " i " << i;
            // and picks the nearest map entry (the search may differ only on exact ties)
            const float xn = (absmax[i] - offset) * (1.0f / nested[i / nbs]);
            float best = INFINITY;
            for (int c = 0; c < 256; c++)
                best = std::min(best, std::fabs(xn - bnb4_nested_code()[c]));
            ASSERT_LE(std::fabs(xn - bnb4_nested_code()[codes[i]]), best * 1.001f + 1e-6f) << i;
        }
    }
}

// ---- matmul -----------------------------------------------------------------------------------------

namespace {

// float64 reference on the float32-dequantized weight, and each output's magnitude sum
// |bias| + sum |x w| (what rounding errors in the sum are proportional to).
struct Reference {
    std::vector<double> y, magnitude;
};
Reference reference_matmul(const bnb4_qtensor &w, const Array &x, size_t m, const Array *bias) {
    const size_t N = w.rows, K = w.cols;
    std::vector<float> wf(N * K);
    EXPECT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &w, BNB4_F32, wf.data()));
    Reference ref{std::vector<double>(m * N), std::vector<double>(m * N)};
    for (size_t r = 0; r < m; r++)
        for (size_t j = 0; j < N; j++) {
            double acc = bias ? bias->get(j) : 0.0, mag = std::fabs(acc);
            for (size_t k = 0; k < K; k++) {
                const double p = (double)x.get(r * K + k) * wf[j * K + k];
                acc += p;
                mag += std::fabs(p);
            }
            ref.y[r * N + j] = acc, ref.magnitude[r * N + j] = mag;
        }
    return ref;
}

// Normwise limits of the core issue (float32 1e-5, float16 1e-3, bfloat16 8e-3), for outputs whose
// terms do not cancel; conformance holds bnb4 to these on bitsandbytes' own cases.
double tolerance(bnb4_dtype dt) { return dt == BNB4_F32 ? 1e-5 : dt == BNB4_F16 ? 1e-3 : 8e-3; }

// The rounding-error bound every element must meet, whatever cancellation does to the normwise
// error: one rounding of the output to dtype, a float32 sum of K + 1 terms (the contract allows
// float32 accumulation), and for bfloat16 the weights rounded to bfloat16 (bf16 dot products, as
// bitsandbytes' bfloat16 layers do). Twice that, for slack.
double element_bound(bnb4_dtype dt, size_t K, double want, double magnitude) {
    const double u_out = unit_roundoff(dt);
    const double u_weights = dt == BNB4_BF16 ? 0x1p-8 : 0.0;
    // (the output's rounding is absolute where it is subnormal in dt)
    return 2.0 * (u_out * std::fabs(want) + ((double)(K + 1) * 0x1p-24 + u_weights) * magnitude +
                  subnormal_half_gap(dt)) +
           1e-30;
}

}  // namespace

TEST(Matmul, AgreesWithFloat64AcrossShapes) {
    auto g = rng(5);
    struct Shape { size_t m, N, K, bs; };
    const Shape shapes[] = {{1, 1, 32, 32},   {1, 7, 33, 32},    {3, 5, 64, 64},    {2, 13, 97, 64},
                            {5, 31, 128, 128}, {1, 17, 100, 256}, {4, 8, 4096, 4096}, {2, 3, 1000, 2048},
                            {17, 9, 61, 32},  {1, 2, 5, 1024}};
    for (const Shape &s : shapes)
        for (bnb4_dtype dt : kDtypes)
            for (bnb4_quant_type qt : kQuantTypes)
                for (int nested = 0; nested < 2; nested++)
                    for (int with_bias = 0; with_bias < 2; with_bias++) {
                        const Array wsrc = randn(BNB4_F32, s.N * s.K, g, 0.05f);
                        const Quantized q = quantize(wsrc, s.bs, qt);
                        std::vector<uint8_t> codes(q.absmax.size());
                        std::vector<float> nabs(ceil_div(q.absmax.size(), 256));
                        float offset = 0;
                        bnb4_qtensor w = bnb4_qtensor_plain(s.N, s.K, s.bs, qt, q.packed.data(), q.absmax.data());
                        if (nested) {
                            ASSERT_EQ(BNB4_OK, bnb4_nested_offset(nullptr, q.absmax.data(), q.absmax.size(), &offset));
                            ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(nullptr, q.absmax.data(), q.absmax.size(), offset,
                                                                    256, codes.data(), nabs.data()));
                            w = bnb4_qtensor_nested(s.N, s.K, s.bs, qt, q.packed.data(), codes.data(), nabs.data(),
                                                    bnb4_nested_code(), offset, 256);
                        }
                        const Array x = randn(dt, s.m * s.K, g);
                        const Array bias = randn(dt, s.N, g);
                        const Reference ref = reference_matmul(w, x, s.m, with_bias ? &bias : nullptr);
                        const size_t out_bytes = s.m * s.N * bnb4_dtype_size(dt);
                        Guarded y_gemm(out_bytes), y_linear(out_bytes);
                        ASSERT_EQ(BNB4_OK, bnb4_gemm(nullptr, &w, dt, s.m, x.data(), with_bias ? bias.data() : nullptr,
                                                     y_gemm.data()));
                        ASSERT_EQ(BNB4_OK, bnb4_linear(nullptr, &w, dt, s.m, x.data(),
                                                       with_bias ? bias.data() : nullptr, y_linear.data()));
                        ASSERT_TRUE(y_gemm.fence_intact() && y_linear.fence_intact());
                        Array got = make_array(dt, s.m * s.N);
                        std::memcpy(got.data(), y_gemm.data(), out_bytes);
                        std::vector<double> gotd(s.m * s.N);
                        for (size_t i = 0; i < gotd.size(); i++)
                            gotd[i] = got.get(i);
                        const std::string where = "m " + std::to_string(s.m) + " N " + std::to_string(s.N) + " K " +
                                                  std::to_string(s.K) + " bs " + std::to_string(s.bs) + " " +
                                                  dtype_name(dt) + " qt " + std::to_string(qt) + " nested " +
                                                  std::to_string(nested) + " bias " + std::to_string(with_bias);
                        for (size_t i = 0; i < gotd.size(); i++) {
                            ASSERT_LE(std::fabs(gotd[i] - ref.y[i]), element_bound(dt, s.K, ref.y[i], ref.magnitude[i]))
                                << where << " element " << i;
                        }
                        if (s.N * s.m >= 8) {  // a handful of outputs can all cancel; many cannot
                            EXPECT_LE(rel_err(gotd, ref.y), tolerance(dt)) << where;
                        }
                        EXPECT_EQ(0, std::memcmp(y_gemm.data(), y_linear.data(), out_bytes)) << "linear != gemm";
                        if (s.m == 1) {
                            Guarded y_gemv(out_bytes);
                            ASSERT_EQ(BNB4_OK, bnb4_gemv(nullptr, &w, dt, x.data(), with_bias ? bias.data() : nullptr,
                                                         y_gemv.data()));
                            EXPECT_EQ(0, std::memcmp(y_gemm.data(), y_gemv.data(), out_bytes)) << "gemv != gemm(m=1)";
                        }
                    }
}

TEST(Matmul, IdentityWeightIsExact) {
    // bitsandbytes' test_gemv_eye_4bit: zero blocks decode to +-0 and the diagonal to 1.0.
    const size_t d = 192;
    Array eye = make_array(BNB4_F16, d * d);
    for (size_t i = 0; i < d; i++)
        eye.set(i * d + i, 1.0f);
    auto g = rng(6);
    const Array x = randn(BNB4_F16, d, g, 0.1f);
    const Quantized q = quantize(eye, 64, BNB4_NF4);
    const bnb4_qtensor w = bnb4_qtensor_plain(d, d, 64, BNB4_NF4, q.packed.data(), q.absmax.data());
    Array y = make_array(BNB4_F16, d);
    ASSERT_EQ(BNB4_OK, bnb4_gemv(nullptr, &w, BNB4_F16, x.data(), nullptr, y.data()));
    EXPECT_EQ(x.bytes, y.bytes);
}

// bitsandbytes' double-quantization offset is absmax.mean() on the GPU: the emulation of torch's order
// (bnb4_torch_mean.c) against torch itself, on the values of tools/gen/gen_torch_mean_table.py (recorded on
// an H200, 132 SMs: sizes where torch's reduction changes shape, values over 16 or 64 binades).
static std::vector<float> torch_mean_values(size_t n, uint32_t seed, uint32_t spread) {
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) {
        uint32_t h = (uint32_t)i * 0x9E3779B1u + seed;
        h ^= h >> 16;
        h *= 0x85EBCA6Bu;
        h ^= h >> 13;
        h *= 0xC2B2AE35u;
        h ^= h >> 16;
        const uint32_t bits = ((127u - spread / 2 + (h & (spread - 1))) << 23) | (h >> 9);
        std::memcpy(&v[i], &bits, 4);
    }
    return v;
}

TEST(Nested, NestedOffsetIsTorchsCudaMean) {
    static const struct {
        size_t n;
        uint32_t seed, spread, bits;
    } torch_mean[] = {
#include "torch_mean_table.inc"
    };
    // other GPUs (a CUDA context follows its own): an A100's 108 SMs, an RTX 4090's 128 of 1536 threads
    const struct { unsigned sms, threads; } gpus[] = {{108, 2048}, {128, 1536}};
    size_t differ_from_exact = 0, past_grid = 0;
    for (const auto &t : torch_mean) {
        const std::vector<float> x = torch_mean_values(t.n, t.seed, t.spread);
        float offset;
        ASSERT_EQ(BNB4_OK, bnb4_nested_offset(nullptr, x.data(), t.n, &offset));
        EXPECT_EQ(t.bits, f32_bits(offset)) << "n " << t.n << " seed " << t.seed << ": " << offset;
        EXPECT_EQ(t.bits, f32_bits(bnb4_torch_cuda_mean_f32_on(x.data(), t.n, 132, 2048))) << "n " << t.n;
        double sum = 0;
        for (float a : x)
            sum += a;
        differ_from_exact += f32_bits((float)(sum / t.n)) != t.bits;
        // the GPU matters only where torch would split the sum over more blocks than that GPU's grid target
        // (multiProcessorCount x maxThreadsPerMultiProcessor / 512); below it the order, so the value, is the same
        const size_t per_thread = (t.n + 511) / 512, by_min = (per_thread + 15) / 16;
        for (const auto &gpu : gpus) {
            const float v = bnb4_torch_cuda_mean_f32_on(x.data(), t.n, gpu.sms, gpu.threads);
            if (t.n < 2048 || per_thread < 256 || by_min <= (size_t)gpu.sms * (gpu.threads / 512)) {
                EXPECT_EQ(t.bits, f32_bits(v)) << "n " << t.n << " on " << gpu.sms << " SMs";
            } else {
                past_grid++;
                EXPECT_NEAR(sum / t.n, v, 1e-6 * std::fabs(sum / t.n)) << "n " << t.n << " on " << gpu.sms << " SMs";
            }
        }
    }
    EXPECT_GT(past_grid, 0u); // (the table reaches past an A100's grid target)
    // the order matters: a correctly rounded mean misses torch's on a good share of these
    std::printf("[bnb4] torch's mean differs from the correctly rounded one on %zu of %zu sizes\n", differ_from_exact,
                sizeof torch_mean / sizeof torch_mean[0]);
}
