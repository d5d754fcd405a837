// test_conformance.cc - bnb4 against the reference vectors bitsandbytes' CUDA kernels produced
// (../shared/conformance, described in its README). Quantize, nested quantize and dequantize must
// match byte for byte (any NaN may stand for any NaN); gemv/gemm/linear must be within a normwise
// relative error of 1e-5 (f32), 1e-3 (f16), 8e-3 (bf16) of the float64 reference; the three-layer
// checkpoint runs through bnb4_linear against its float64 chain. Skips, with a message, when the
// directory is absent.
#include <gtest/gtest.h>
#include <jansson.h>

#include <cmath>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "bnb4.h"
#include "bnb4_safetensors.h"
#include "test_util.h"

using namespace bnb4test;

namespace {

std::string conformance_dir() {
    const char *env = std::getenv("BNB4_CONFORMANCE_DIR");
    return env ? env : BNB4_CONFORMANCE_DIR;
}

struct StFile {
    bnb4_st_file *f = nullptr;
    ~StFile() { bnb4_st_close(f); }
};

// Opens a conformance file, or skips the calling test with a visible message.
#define OPEN_OR_SKIP(var, name)                                                                       \
    StFile var;                                                                                       \
    do {                                                                                              \
        const std::string path_ = conformance_dir() + "/" + (name);                                   \
        char err_[512];                                                                               \
        if (bnb4_st_open(path_.c_str(), &var.f, err_, sizeof err_) != 0)                               \
            GTEST_SKIP() << "conformance vectors not available (" << err_                             \
                         << "); set BNB4_CONFORMANCE_DIR or check out ../shared";                     \
    } while (0)

const bnb4_st_tensor &tensor(const StFile &f, const std::string &name) {
    const bnb4_st_tensor *t = bnb4_st_find(f.f, name.c_str());
    if (!t)
        throw std::runtime_error("missing tensor " + name);
    return *t;
}

std::vector<uint8_t> bytes_of(const bnb4_st_tensor &t) { return std::vector<uint8_t>(t.data, t.data + t.nbytes); }

template <typename T> std::vector<T> values_of(const bnb4_st_tensor &t) {
    std::vector<T> v(t.nbytes / sizeof(T));
    std::memcpy(v.data(), t.data, t.nbytes);
    return v;
}

bnb4_dtype dtype_of(const std::string &s) {
    if (s == "f32" || s == "F32")
        return BNB4_F32;
    if (s == "f16" || s == "F16")
        return BNB4_F16;
    if (s == "bf16" || s == "BF16")
        return BNB4_BF16;
    throw std::runtime_error("unknown dtype " + s);
}

bnb4_quant_type quant_type_of(const std::string &s) { return s == "nf4" ? BNB4_NF4 : BNB4_FP4; }

Array array_of(const bnb4_st_tensor &t) {
    Array a;
    a.dtype = dtype_of(t.dtype);
    a.bytes = bytes_of(t);
    return a;
}

std::vector<std::string> split(const std::string &s, char sep) {
    std::vector<std::string> parts;
    std::stringstream ss(s);
    for (std::string p; std::getline(ss, p, sep);)
        parts.push_back(p);
    return parts;
}

// Case names ("nf4_bs64_f16_n1000_randn") of every tensor ending in `.suffix`.
std::vector<std::string> cases_with(const StFile &f, const std::string &suffix) {
    std::vector<std::string> out;
    for (size_t i = 0; i < bnb4_st_count(f.f); i++) {
        const std::string name = bnb4_st_at(f.f, i)->name;
        if (name.size() > suffix.size() + 1 && name.compare(name.size() - suffix.size() - 1, std::string::npos,
                                                            "." + suffix) == 0)
            out.push_back(name.substr(0, name.size() - suffix.size() - 1));
    }
    return out;
}

// Element-wise bit equality, where any NaN matches any NaN. Returns the first mismatch or -1.
long first_mismatch(const Array &got, const Array &want) {
    if (got.size() != want.size())
        return 0;
    const size_t es = bnb4_dtype_size(got.dtype);
    for (size_t i = 0; i < got.size(); i++) {
        if (std::isnan(got.get(i)) && std::isnan(want.get(i)))
            continue;
        if (std::memcmp(got.bytes.data() + i * es, want.bytes.data() + i * es, es) != 0)
            return (long)i;
    }
    return -1;
}

std::vector<double> to_double(const Array &a) {
    std::vector<double> v(a.size());
    for (size_t i = 0; i < v.size(); i++)
        v[i] = a.get(i);
    return v;
}

double tolerance(bnb4_dtype dt) { return dt == BNB4_F32 ? 1e-5 : dt == BNB4_F16 ? 1e-3 : 8e-3; }

size_t ceil_div(size_t a, size_t b) { return a / b + (a % b != 0); }

}  // namespace

TEST(Conformance, QuantizeAndDequantizeAreByteExact) {
    OPEN_OR_SKIP(f, "quantize.safetensors");
    const auto cases = cases_with(f, "input");
    EXPECT_EQ(348u, cases.size());
    size_t checked = 0;
    for (const std::string &c : cases) {
        const auto p = split(c, '_');  // qt, bsN, dt, nN, pattern
        const bnb4_quant_type qt = quant_type_of(p[0]);
        const size_t bs = std::stoul(p[1].substr(2));
        const Array input = array_of(tensor(f, c + ".input"));
        const std::vector<uint8_t> want_packed = bytes_of(tensor(f, c + ".packed"));
        const std::vector<float> want_absmax = values_of<float>(tensor(f, c + ".absmax"));
        const size_t n = input.size();

        std::vector<uint8_t> packed(ceil_div(n, 2));
        std::vector<float> absmax(ceil_div(n, bs));
        ASSERT_EQ(BNB4_OK, bnb4_quantize(nullptr, input.data(), input.dtype, n, bs, qt, packed.data(), absmax.data()))
            << c << ": " << bnb4_last_error();
        for (size_t b = 0; b < absmax.size(); b++)
            ASSERT_EQ(f32_bits(want_absmax[b]), f32_bits(absmax[b])) << c << " absmax[" << b << "]";
        for (size_t i = 0; i < packed.size(); i++)
            ASSERT_EQ(want_packed[i], packed[i]) << c << " byte " << i << " (elements " << 2 * i << ", " << 2 * i + 1
                                                 << ")";

        const Array want_dq = array_of(tensor(f, c + ".dequant"));
        const bnb4_qtensor q = bnb4_qtensor_plain(1, n, bs, qt, want_packed.data(), want_absmax.data());
        Array dq = make_array(want_dq.dtype, n);
        ASSERT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &q, dq.dtype, dq.data()));
        const long bad = first_mismatch(dq, want_dq);
        ASSERT_EQ(-1, bad) << c << " dequant[" << bad << "] = " << dq.get(bad) << ", bitsandbytes " << want_dq.get(bad);
        checked++;
    }
    std::printf("[bnb4] %zu quantize/dequantize cases byte-exact\n", checked);
}

TEST(Conformance, DoubleQuantIsByteExact) {
    OPEN_OR_SKIP(f, "double_quant.safetensors");
    const auto cases = cases_with(f, "input");
    EXPECT_EQ(4u, cases.size());
    for (const std::string &c : cases) {
        const auto p = split(c, '_');  // qt, bsN, nbsN, dt, nN
        const bnb4_quant_type qt = quant_type_of(p[0]);
        const size_t bs = std::stoul(p[1].substr(2)), nbs = std::stoul(p[2].substr(3));
        const Array input = array_of(tensor(f, c + ".input"));
        const size_t n = input.size(), nb = ceil_div(n, bs);
        const std::vector<float> absmax_raw = values_of<float>(tensor(f, c + ".absmax_raw"));
        const std::vector<uint8_t> want_codes = bytes_of(tensor(f, c + ".absmax"));
        const std::vector<float> want_nested = values_of<float>(tensor(f, c + ".nested_absmax"));
        const std::vector<float> want_code = values_of<float>(tensor(f, c + ".nested_code"));
        const std::vector<float> want_dq_absmax = values_of<float>(tensor(f, c + ".absmax_dq"));
        const float want_offset = values_of<float>(tensor(f, c + ".offset"))[0];
        const std::vector<uint8_t> want_packed = bytes_of(tensor(f, c + ".packed"));

        std::vector<uint8_t> packed(ceil_div(n, 2));
        std::vector<float> absmax(nb);
        ASSERT_EQ(BNB4_OK, bnb4_quantize(nullptr, input.data(), input.dtype, n, bs, qt, packed.data(), absmax.data()));
        ASSERT_EQ(want_packed, packed) << c;
        for (size_t b = 0; b < nb; b++)
            ASSERT_EQ(f32_bits(absmax_raw[b]), f32_bits(absmax[b])) << c << " absmax " << b;

        for (int i = 0; i < 256; i++)
            ASSERT_EQ(f32_bits(want_code[i]), f32_bits(bnb4_nested_code()[i])) << "nested code " << i;

        float offset;
        ASSERT_EQ(BNB4_OK, bnb4_nested_offset(nullptr, absmax.data(), nb, &offset));
        // torch's CUDA mean, bit for bit (bnb4_torch_mean.h; a correctly rounded mean is 1 ulp off on one case)
        EXPECT_EQ(f32_bits(want_offset), f32_bits(offset)) << c << ": offset " << offset << " vs bitsandbytes " << want_offset;

        std::vector<uint8_t> codes(nb);
        std::vector<float> nested(ceil_div(nb, nbs));
        ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(nullptr, absmax.data(), nb, want_offset, nbs, codes.data(), nested.data()));
        for (size_t j = 0; j < nested.size(); j++)
            ASSERT_EQ(f32_bits(want_nested[j]), f32_bits(nested[j])) << c << " nested_absmax " << j;
        for (size_t b = 0; b < nb; b++)
            ASSERT_EQ(want_codes[b], codes[b]) << c << " absmax code " << b << " (absmax " << absmax[b] << ")";

        const bnb4_qtensor q = bnb4_qtensor_nested(1, n, bs, qt, want_packed.data(), want_codes.data(),
                                                   want_nested.data(), want_code.data(), want_offset, nbs);
        std::vector<float> dq_absmax(nb);
        ASSERT_EQ(BNB4_OK, bnb4_dequantize_nested(nullptr, &q, dq_absmax.data()));
        for (size_t b = 0; b < nb; b++)
            ASSERT_EQ(f32_bits(want_dq_absmax[b]), f32_bits(dq_absmax[b])) << c << " absmax_dq " << b;

        const Array want_dq = array_of(tensor(f, c + ".dequant"));
        Array dq = make_array(want_dq.dtype, n);
        ASSERT_EQ(BNB4_OK, bnb4_dequantize(nullptr, &q, dq.dtype, dq.data()));
        const long bad = first_mismatch(dq, want_dq);
        ASSERT_EQ(-1, bad) << c << " dequant[" << bad << "]";
    }
}

TEST(Conformance, MatmulWithinTolerance) {
    OPEN_OR_SKIP(f, "gemv.safetensors");
    const auto cases = cases_with(f, "x");
    EXPECT_GT(cases.size(), 50u);
    for (const std::string &c : cases) {
        const auto p = split(c, '_');  // qt, bsN, dt, MN, NN, KN
        const bnb4_quant_type qt = quant_type_of(p[0]);
        const size_t bs = std::stoul(p[1].substr(2));
        const bnb4_dtype dt = dtype_of(p[2]);
        const size_t M = std::stoul(p[3].substr(1)), N = std::stoul(p[4].substr(1)), K = std::stoul(p[5].substr(1));
        const std::string w = "w_" + p[0] + "_" + p[1] + "_" + p[4] + "_" + p[5];
        const std::vector<uint8_t> packed = bytes_of(tensor(f, w + ".w_packed"));
        const std::vector<float> absmax = values_of<float>(tensor(f, w + ".absmax"));
        const bnb4_qtensor q = bnb4_qtensor_plain(N, K, bs, qt, packed.data(), absmax.data());
        const Array x = array_of(tensor(f, c + ".x"));
        const std::vector<double> y_ref = values_of<double>(tensor(f, c + ".y_ref"));
        const Array y_bnb = array_of(tensor(f, c + ".y"));
        ASSERT_EQ(M * K, x.size());

        Array y = make_array(dt, M * N), y_lin = make_array(dt, M * N);
        ASSERT_EQ(BNB4_OK, bnb4_gemm(nullptr, &q, dt, M, x.data(), nullptr, y.data())) << bnb4_last_error();
        ASSERT_EQ(BNB4_OK, bnb4_linear(nullptr, &q, dt, M, x.data(), nullptr, y_lin.data()));
        const double err = rel_err(to_double(y), y_ref), err_lin = rel_err(to_double(y_lin), y_ref);
        EXPECT_LE(err, tolerance(dt)) << c << " gemm";
        EXPECT_LE(err_lin, tolerance(dt)) << c << " linear";
        if (M == 1) {
            Array y1 = make_array(dt, N);
            ASSERT_EQ(BNB4_OK, bnb4_gemv(nullptr, &q, dt, x.data(), nullptr, y1.data()));
            EXPECT_LE(rel_err(to_double(y1), y_ref), tolerance(dt)) << c << " gemv";
        }
        std::printf("[bnb4] %-32s rel err %.2e (bitsandbytes %.2e)\n", c.c_str(), err, rel_err(to_double(y_bnb), y_ref));
    }
}

namespace {

struct Layer {
    size_t rows, cols;
    bnb4_qtensor q;
    bnb4_dtype compute;
    const bnb4_st_tensor *bias;
    std::vector<uint8_t> packed, codes;
    std::vector<float> absmax, nested_absmax, nested_code;
    float offset = 0;
    bool nested = false;
};

// Reads layer i of the checkpoint as bitsandbytes' Linear4bit state_dict stores it.
std::unique_ptr<Layer> load_layer(const StFile &f, int i, bnb4_dtype compute) {
    auto L = std::make_unique<Layer>();
    const std::string p = std::to_string(i) + ".weight";
    const bnb4_st_tensor *qs = nullptr;
    std::string qt_name;
    for (const char *t : {"nf4", "fp4"})
        if ((qs = bnb4_st_find(f.f, (p + ".quant_state.bitsandbytes__" + t).c_str())) != nullptr) {
            qt_name = t;
            break;
        }
    if (!qs)
        throw std::runtime_error("no quant_state for " + p);
    json_error_t jerr;
    json_t *js = json_loadb((const char *)qs->data, qs->nbytes, 0, &jerr);
    if (!js)
        throw std::runtime_error("bad quant_state JSON: " + std::string(jerr.text));
    L->rows = (size_t)json_integer_value(json_array_get(json_object_get(js, "shape"), 0));
    L->cols = (size_t)json_integer_value(json_array_get(json_object_get(js, "shape"), 1));
    const size_t bs = (size_t)json_integer_value(json_object_get(js, "blocksize"));
    L->nested = json_object_get(js, "nested_offset") != nullptr;
    L->offset = (float)json_real_value(json_object_get(js, "nested_offset"));
    const size_t nbs = L->nested ? (size_t)json_integer_value(json_object_get(js, "nested_blocksize")) : 0;
    json_decref(js);
    L->packed = bytes_of(tensor(f, p));
    L->compute = compute;
    L->bias = bnb4_st_find(f.f, (std::to_string(i) + ".bias").c_str());
    const bnb4_quant_type qt = quant_type_of(qt_name);
    if (L->nested) {
        L->codes = bytes_of(tensor(f, p + ".absmax"));
        L->nested_absmax = values_of<float>(tensor(f, p + ".nested_absmax"));
        L->nested_code = values_of<float>(tensor(f, p + ".nested_quant_map"));
        L->q = bnb4_qtensor_nested(L->rows, L->cols, bs, qt, L->packed.data(), L->codes.data(), L->nested_absmax.data(),
                                   L->nested_code.data(), L->offset, nbs);
    } else {
        L->absmax = values_of<float>(tensor(f, p + ".absmax"));
        L->q = bnb4_qtensor_plain(L->rows, L->cols, bs, qt, L->packed.data(), L->absmax.data());
    }
    return L;
}

// Casts between dtypes the way torch's .to() does (through float32, round to nearest even).
Array cast(const Array &a, bnb4_dtype dt) {
    Array out = make_array(dt, a.size());
    for (size_t i = 0; i < a.size(); i++)
        out.set(i, a.get(i));
    return out;
}

}  // namespace

TEST(Conformance, CheckpointRunsThroughLinear) {
    OPEN_OR_SKIP(ck, "checkpoint.safetensors");
    OPEN_OR_SKIP(ex, "checkpoint_expected.safetensors");
    const bnb4_dtype compute[3] = {BNB4_F16, BNB4_BF16, BNB4_F16};  // per the README's layer table
    std::vector<std::unique_ptr<Layer>> layers;
    for (int i = 0; i < 3; i++)
        layers.push_back(load_layer(ck, i, compute[i]));
    for (const std::string name : {"x_b1", "x_b4", "x_b2x3"}) {
        Array h = array_of(tensor(ex, name + ".input"));
        const bnb4_dtype in_dtype = h.dtype;
        const size_t m = h.size() / layers[0]->cols;
        for (const auto &L : layers) {
            const Array x = cast(h, L->compute);
            Array y = make_array(L->compute, m * L->rows);
            Array bias;
            if (L->bias)
                bias = cast(array_of(*L->bias), L->compute);
            ASSERT_EQ(BNB4_OK, bnb4_linear(nullptr, &L->q, L->compute, m, x.data(), L->bias ? bias.data() : nullptr,
                                           y.data()))
                << bnb4_last_error();
            h = cast(y, in_dtype);
        }
        const std::vector<double> ref = values_of<double>(tensor(ex, name + ".ref_f64"));
        const double err = rel_err(to_double(h), ref);
        const double err_bnb = rel_err(to_double(array_of(tensor(ex, name + ".output"))), ref);
        EXPECT_LE(err, 8e-3) << name;  // a bfloat16 layer sits in the chain
        std::printf("[bnb4] checkpoint %-7s rel err vs float64 %.2e (bitsandbytes %.2e)\n", name.c_str(), err, err_bnb);
    }
}

// bnb4 writes the same quantized layers as bitsandbytes from the same float16 weights.
TEST(Conformance, CheckpointQuantizesByteExact) {
    OPEN_OR_SKIP(src, "checkpoint_source.safetensors");
    OPEN_OR_SKIP(ck, "checkpoint.safetensors");
    for (int i = 0; i < 3; i++) {
        const auto L = load_layer(ck, i, BNB4_F16);
        const Array w = array_of(tensor(src, std::to_string(i) + ".weight"));
        const size_t n = w.size(), bs = L->q.blocksize, nb = ceil_div(n, bs);
        std::vector<uint8_t> packed(ceil_div(n, 2));
        std::vector<float> absmax(nb);
        ASSERT_EQ(BNB4_OK, bnb4_quantize(nullptr, w.data(), w.dtype, n, bs, L->q.quant_type, packed.data(), absmax.data()));
        ASSERT_EQ(L->packed, packed) << "layer " << i;
        if (!L->nested) {
            for (size_t b = 0; b < nb; b++)
                ASSERT_EQ(f32_bits(L->absmax[b]), f32_bits(absmax[b])) << "layer " << i << " absmax " << b;
            continue;
        }
        float offset;
        ASSERT_EQ(BNB4_OK, bnb4_nested_offset(nullptr, absmax.data(), nb, &offset));
        EXPECT_EQ(f32_bits(L->offset), f32_bits(offset)) << "layer " << i << ": offset " << offset;
        std::vector<uint8_t> codes(nb);
        std::vector<float> nested(ceil_div(nb, L->q.nested.blocksize));
        ASSERT_EQ(BNB4_OK, bnb4_quantize_nested(nullptr, absmax.data(), nb, L->offset, L->q.nested.blocksize,
                                                codes.data(), nested.data()));
        ASSERT_EQ(L->codes, codes) << "layer " << i;
        for (size_t j = 0; j < nested.size(); j++)
            ASSERT_EQ(f32_bits(L->nested_absmax[j]), f32_bits(nested[j])) << "layer " << i;
    }
}
