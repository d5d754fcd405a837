// test_cli.cc - the bnb4 command end to end: byte-exactness against bitsandbytes' checkpoint
// (conformance data), quantize -> inspect -> dequantize round trips on fresh random sharded models
// checked against the library called directly, thread-count independence, and every documented
// failure: exit code, message naming the file, and no output or temporary file left behind.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <dirent.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

extern "C" {
#include "bnb4.h"
#include "bnb4_quant_state.h"
#include "bnb4_safetensors.h"
}

extern char **environ;

namespace {

const std::string kExe = BNB4_CLI_EXE;

struct Result {
    int code;
    std::string out, err;
};

std::string slurp(const std::string &p) {
    std::ifstream f(p, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
}

std::string shell_quote(const std::string &s) {
    std::string r = "'";
    for (char c : s) r += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return r + "'";
}

Result run(const std::vector<std::string> &args) {
    static int counter = 0;
    std::string base = "/tmp/bnb4_cli_run_" + std::to_string(getpid()) + "_" + std::to_string(counter++);
    std::string cmd = shell_quote(kExe);
    for (auto &a : args) cmd += " " + shell_quote(a);
    cmd += " >" + base + ".out 2>" + base + ".err";
    int st = std::system(cmd.c_str());
    Result r;
    r.code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    r.out = slurp(base + ".out");
    r.err = slurp(base + ".err");
    unlink((base + ".out").c_str());
    unlink((base + ".err").c_str());
    return r;
}

struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/bnb4_cli_XXXXXX";
        path = mkdtemp(tmpl);
    }
    ~TempDir() { std::system(("rm -rf " + shell_quote(path)).c_str()); }
    std::string operator/(const std::string &n) const { return path + "/" + n; }
};

std::set<std::string> listdir(const std::string &d) {
    std::set<std::string> s;
    DIR *dir = opendir(d.c_str());
    if (!dir) return s;
    while (dirent *e = readdir(dir))
        if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) s.insert(e->d_name);
    closedir(dir);
    return s;
}

// ---- writing input checkpoints --------------------------------------------------------------------

struct InTensor {
    std::string name, dtype;
    std::vector<uint64_t> shape;
    std::vector<uint8_t> bytes;
};

void write_st(const std::string &path, const std::vector<InTensor> &ts) {
    bnb4_st_writer *w = nullptr;
    char err[512];
    ASSERT_EQ(bnb4_st_writer_create(path.c_str(), &w, err, sizeof err), 0) << err;
    ASSERT_EQ(bnb4_st_writer_add_metadata(w, "format", "pt", err, sizeof err), 0);
    std::vector<size_t> ids(ts.size());
    for (size_t i = 0; i < ts.size(); i++)
        ASSERT_EQ(bnb4_st_writer_add(w, ts[i].name.c_str(), ts[i].dtype.c_str(), ts[i].shape.size(), ts[i].shape.data(),
                                     &ids[i], err, sizeof err), 0) << err;
    ASSERT_EQ(bnb4_st_writer_layout(w, err, sizeof err), 0) << err;
    for (size_t i = 0; i < ts.size(); i++)
        ASSERT_EQ(bnb4_st_writer_pwrite(w, ids[i], 0, ts[i].bytes.data(), ts[i].bytes.size(), err, sizeof err), 0);
    ASSERT_EQ(bnb4_st_writer_commit(w, err, sizeof err), 0) << err;
}

uint16_t f32_to_f16_bits(float f) {  // round to nearest even; test data stays in the normal range
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, e = (x >> 23) & 0xff, m = x & 0x7fffff;
    int ee = (int)e - 127 + 15;
    if (ee <= 0) return (uint16_t)sign;
    uint32_t mm = m >> 13, rest = m & 0x1fff;
    uint32_t h = sign | ((uint32_t)ee << 10) | mm;
    if (rest > 0x1000 || (rest == 0x1000 && (mm & 1))) h++;
    return (uint16_t)h;
}

InTensor random_tensor(std::mt19937_64 &rng, const std::string &name, const std::string &dtype,
                       std::vector<uint64_t> shape) {
    InTensor t{name, dtype, shape, {}};
    uint64_t n = 1;
    for (auto d : shape) n *= d;
    std::normal_distribution<float> nd(0.0f, 0.05f);
    for (uint64_t i = 0; i < n; i++) {
        float v = nd(rng);
        if (dtype == "F32") {
            uint8_t b[4];
            std::memcpy(b, &v, 4);
            t.bytes.insert(t.bytes.end(), b, b + 4);
        } else if (dtype == "F16") {
            uint16_t h = f32_to_f16_bits(v);
            t.bytes.push_back((uint8_t)h);
            t.bytes.push_back((uint8_t)(h >> 8));
        } else if (dtype == "BF16") {
            uint32_t x;
            std::memcpy(&x, &v, 4);
            uint16_t h = (uint16_t)(x >> 16);
            t.bytes.push_back((uint8_t)h);
            t.bytes.push_back((uint8_t)(h >> 8));
        } else {  // I64 positions
            uint64_t q = i;
            for (int k = 0; k < 8; k++) t.bytes.push_back((uint8_t)(q >> (8 * k)));
        }
    }
    return t;
}

bnb4_dtype lib_dtype(const std::string &st) { return st == "F32" ? BNB4_F32 : st == "F16" ? BNB4_F16 : BNB4_BF16; }

struct Model {
    std::map<std::string, std::pair<std::string, const bnb4_st_tensor *>> where;
    std::vector<bnb4_st_file *> files;
    ~Model() {
        for (auto *f : files) bnb4_st_close(f);
    }
    void open_dir(const std::string &dir) {
        for (const auto &n : listdir(dir)) {
            if (n.size() < 12 || n.substr(n.size() - 12) != ".safetensors") continue;
            open_file(dir + "/" + n, n);
        }
    }
    void open_file(const std::string &path, const std::string &label) {
        bnb4_st_file *f = nullptr;
        char err[512];
        ASSERT_EQ(bnb4_st_open(path.c_str(), &f, err, sizeof err), 0) << err;
        files.push_back(f);
        for (size_t i = 0; i < bnb4_st_count(f); i++) where[bnb4_st_at(f, i)->name] = {label, bnb4_st_at(f, i)};
    }
    const bnb4_st_tensor *get(const std::string &n) const {
        auto it = where.find(n);
        return it == where.end() ? nullptr : it->second.second;
    }
};

std::string bytes_of(const bnb4_st_tensor *t) { return t ? std::string((const char *)t->data, t->nbytes) : "<missing>"; }

// ---- byte-exactness against bitsandbytes' own checkpoint -------------------------------------------

uint32_t f32_bits(double d) {
    float f = (float)d;
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

TEST(Cli, ConformanceCheckpointByteExact) {
    std::string dir = BNB4_CONFORMANCE_DIR;
    std::string src = dir + "/checkpoint_source.safetensors", ref = dir + "/checkpoint.safetensors";
    if (access(src.c_str(), R_OK) != 0 || access(ref.c_str(), R_OK) != 0)
        GTEST_SKIP() << "conformance data not found at " << dir << " (set BNB4_CONFORMANCE_DIR)";
    Model want;
    want.open_file(ref, "ref");
    // per-layer settings of the reference checkpoint (conformance README)
    struct Layer {
        const char *prefix, *qt;
        bool dq;
    } layers[] = {{"0.", "nf4", true}, {"1.", "fp4", false}, {"2.", "fp4", true}};
    TempDir tmp;
    for (const Layer &L : layers) {
        std::string out = tmp / (std::string("layer") + L.prefix + "safetensors");
        std::vector<std::string> args = {"quantize", "-q", "--quant-type", L.qt, "--blocksize", "64", src, out};
        if (!L.dq) args.insert(args.begin() + 2, "--no-double-quant");
        Result r = run(args);
        ASSERT_EQ(r.code, 0) << r.err;
        Model got;
        got.open_file(out, "got");
        std::string state = std::string(L.prefix) + "weight.quant_state.bitsandbytes__" + L.qt;
        if (L.dq) {  // the offset is torch's CUDA mean, bit for bit (bnb4_torch_mean.h)
            bnb4_quant_state a, b;
            char err[256];
            const bnb4_st_tensor *ta = got.get(state), *tb = want.get(state);
            ASSERT_TRUE(ta && tb);
            ASSERT_EQ(bnb4_qs_parse(ta->data, ta->nbytes, "got", &a, err, sizeof err), 0) << err;
            ASSERT_EQ(bnb4_qs_parse(tb->data, tb->nbytes, "ref", &b, err, sizeof err), 0) << err;
            EXPECT_EQ(f32_bits(a.nested_offset), f32_bits(b.nested_offset))
                << "nested_offset " << a.nested_offset << " vs bitsandbytes " << b.nested_offset;
        }
        size_t compared = 0;
        for (auto &kv : want.where) {
            const std::string &name = kv.first;
            if (name.rfind(L.prefix, 0) != 0) continue;
            EXPECT_EQ(bytes_of(got.get(name)), bytes_of(kv.second.second)) << "tensor " << name;
            const bnb4_st_tensor *g = got.get(name);
            if (g) {
                EXPECT_STREQ(g->dtype, kv.second.second->dtype) << name;
                EXPECT_EQ(std::vector<uint64_t>(g->shape, g->shape + g->ndim),
                          std::vector<uint64_t>(kv.second.second->shape, kv.second.second->shape + kv.second.second->ndim))
                    << name;
            }
            compared++;
        }
        EXPECT_GE(compared, 4u);
    }
}

double f16_to_double(uint16_t h) {
    int e = (h >> 10) & 31, m = h & 1023;
    double v = e == 0 ? std::ldexp((double)m, -24) : e == 31 ? INFINITY : std::ldexp(1024.0 + m, e - 25);
    return (h & 0x8000) ? -v : v;
}

std::vector<double> as_doubles(const bnb4_st_tensor *t) {
    std::vector<double> v(t->numel);
    for (uint64_t i = 0; i < t->numel; i++) {
        if (!std::strcmp(t->dtype, "F16")) {
            uint16_t h;
            std::memcpy(&h, t->data + 2 * i, 2);
            v[i] = f16_to_double(h);
        } else if (!std::strcmp(t->dtype, "F32")) {
            float f;
            std::memcpy(&f, t->data + 4 * i, 4);
            v[i] = f;
        } else {
            std::memcpy(&v[i], t->data + 8 * i, 8);
        }
    }
    return v;
}

// y[r][o] = sum_k x[r][k] w[o][k] (+ b[o]) in float64
std::vector<double> linear64(const std::vector<double> &x, const std::vector<double> &w, const std::vector<double> *b,
                             size_t rows, size_t in, size_t out) {
    std::vector<double> y(rows * out);
    for (size_t r = 0; r < rows; r++)
        for (size_t o = 0; o < out; o++) {
            double s = b ? (*b)[o] : 0.0;
            for (size_t k = 0; k < in; k++) s += x[r * in + k] * w[o * in + k];
            y[r * out + o] = s;
        }
    return y;
}

// bitsandbytes' own checkpoint, dequantized by bnb4 to float32, reproduces the recorded float64 chain
// through bnb's float32-dequantized weights (conformance checkpoint_expected: ref_f64) to rounding of
// the summation order: every decoded weight is exact.
TEST(Cli, DequantizedBitsandbytesCheckpointReproducesFloat64Chain) {
    std::string dir = BNB4_CONFORMANCE_DIR;
    std::string ck = dir + "/checkpoint.safetensors", ex = dir + "/checkpoint_expected.safetensors";
    if (access(ck.c_str(), R_OK) != 0 || access(ex.c_str(), R_OK) != 0)
        GTEST_SKIP() << "conformance data not found at " << dir << " (set BNB4_CONFORMANCE_DIR)";
    TempDir tmp;
    Result r = run({"dequantize", "-q", "--dtype", "f32", ck, tmp / "dq.safetensors"});
    ASSERT_EQ(r.code, 0) << r.err;
    Model w, e;
    w.open_file(tmp / "dq.safetensors", "w");
    e.open_file(ex, "e");
    for (const char *name : {"0.weight", "1.weight", "2.weight"}) {
        ASSERT_NE(w.get(name), nullptr) << name;
        EXPECT_STREQ(w.get(name)->dtype, "F32");
    }
    std::vector<double> w0 = as_doubles(w.get("0.weight")), w1 = as_doubles(w.get("1.weight")),
                        w2 = as_doubles(w.get("2.weight")), b0 = as_doubles(w.get("0.bias")),
                        b2 = as_doubles(w.get("2.bias"));
    for (const char *x : {"x_b1", "x_b4", "x_b2x3"}) {
        const bnb4_st_tensor *in = e.get(std::string(x) + ".input"), *ref = e.get(std::string(x) + ".ref_f64");
        ASSERT_TRUE(in && ref) << x;
        size_t rows = in->numel / 256;
        std::vector<double> h = linear64(as_doubles(in), w0, &b0, rows, 256, 512);
        h = linear64(h, w1, nullptr, rows, 512, 384);
        h = linear64(h, w2, &b2, rows, 384, 128);
        std::vector<double> want = as_doubles(ref);
        ASSERT_EQ(h.size(), want.size());
        double worst = 0;
        for (size_t i = 0; i < h.size(); i++) worst = std::max(worst, std::fabs(h[i] - want[i]));
        EXPECT_LT(worst, 1e-12) << x;
        std::printf("%s: max |float64 chain - ref_f64| = %.3g\n", x, worst);
    }
}

// ---- round trips on random sharded models ----------------------------------------------------------

TEST(Cli, QuantizeInspectDequantizeRandomShardedModel) {
    unsigned seed = std::random_device{}();
    std::printf("seed %u\n", seed);
    std::mt19937_64 rng(seed);
    const char *qts[] = {"nf4", "fp4"};
    for (int round = 0; round < 3; round++) {
        TempDir tmp;
        std::string in = tmp / "in", out = tmp / "out", back = tmp / "back";
        mkdir(in.c_str(), 0755);
        std::string qt = qts[rng() % 2];
        size_t bs = (size_t)32 << (rng() % 8);
        bool dq = rng() % 2;
        uint64_t rows = 1 + rng() % 40, cols = 1 + rng() % 300;
        std::vector<InTensor> s1 = {
            random_tensor(rng, "model.embed_tokens.weight", "F16", {50, 16}),
            random_tensor(rng, "model.layers.0.self_attn.q_proj.weight", "BF16", {rows, cols}),
            random_tensor(rng, "model.layers.0.self_attn.q_proj.bias", "F16", {rows}),
            random_tensor(rng, "model.layers.0.input_layernorm.weight", "F32", {cols}),
        };
        std::vector<InTensor> s2 = {
            random_tensor(rng, "model.layers.1.mlp.down_proj.weight", "F16", {cols, rows + 3}),
            random_tensor(rng, "model.layers.1.mlp.up_proj.weight", "F32", {7, 9}),
            random_tensor(rng, "lm_head.weight", "F16", {50, 16}),
            random_tensor(rng, "model.rotary.positions", "I64", {5}),
        };
        write_st(in + "/model-00001-of-00002.safetensors", s1);
        write_st(in + "/model-00002-of-00002.safetensors", s2);
        {
            std::ofstream idx(in + "/model.safetensors.index.json");
            idx << "{\"metadata\": {\"total_size\": 1}, \"weight_map\": {";
            bool first = true;
            for (auto *v : {&s1, &s2})
                for (auto &t : *v) {
                    idx << (first ? "" : ", ") << "\"" << t.name << "\": \"model-0000" << (v == &s1 ? 1 : 2)
                        << "-of-00002.safetensors\"";
                    first = false;
                }
            idx << "}}\n";
            std::ofstream(in + "/config.json") << "{\"model_type\": \"llama\", \"rms_norm_eps\": 1e-06, \"torch_dtype\": \"float16\"}\n";
            std::ofstream(in + "/tokenizer.json") << "{\"fake\": true}\n";
        }
        std::vector<std::string> args = {"quantize", "-q", "--quant-type", qt, "--blocksize", std::to_string(bs),
                                         dq ? "--double-quant" : "--no-double-quant", "-j", "3", in, out};
        Result r = run(args);
        ASSERT_EQ(r.code, 0) << r.err;
        EXPECT_EQ(r.err, "");  // --quiet
        EXPECT_EQ(listdir(out), (std::set<std::string>{"config.json", "model-00001-of-00002.safetensors",
                                                       "model-00002-of-00002.safetensors", "model.safetensors.index.json",
                                                       "tokenizer.json"}));
        EXPECT_EQ(slurp(out + "/tokenizer.json"), slurp(in + "/tokenizer.json"));
        EXPECT_EQ(listdir(tmp.path), (std::set<std::string>{"in", "out"}));  // no temporary left
        // config.json gains transformers' quantization_config
        json_error_t je;
        json_t *cfg = json_load_file((out + "/config.json").c_str(), 0, &je);
        ASSERT_NE(cfg, nullptr) << je.text;
        json_t *qc = json_object_get(cfg, "quantization_config");
        ASSERT_TRUE(json_is_object(qc));
        EXPECT_STREQ(json_string_value(json_object_get(qc, "quant_method")), "bitsandbytes");
        EXPECT_STREQ(json_string_value(json_object_get(qc, "bnb_4bit_quant_type")), qt.c_str());
        EXPECT_EQ(json_is_true(json_object_get(qc, "bnb_4bit_use_double_quant")), dq);
        EXPECT_TRUE(json_is_true(json_object_get(qc, "load_in_4bit")));
        EXPECT_EQ(json_real_value(json_object_get(cfg, "rms_norm_eps")), 1e-06);
        json_decref(cfg);

        Model got;
        got.open_dir(out);
        // the index lists every tensor in the shard that holds it
        json_t *idx = json_load_file((out + "/model.safetensors.index.json").c_str(), 0, &je);
        ASSERT_NE(idx, nullptr);
        json_t *wm = json_object_get(idx, "weight_map");
        EXPECT_EQ(json_object_size(wm), got.where.size());
        for (auto &kv : got.where) {
            json_t *v = json_object_get(wm, kv.first.c_str());
            ASSERT_NE(v, nullptr) << kv.first;
            EXPECT_EQ(std::string(json_string_value(v)), kv.second.first) << kv.first;
        }
        json_decref(idx);

        // quantized: exactly what the library produces for the same data; others copied unchanged
        std::set<std::string> quantized = {"model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight",
                                           "model.layers.1.mlp.up_proj.weight"};
        bnb4_quant_type lqt = qt == "nf4" ? BNB4_NF4 : BNB4_FP4;
        for (auto *v : {&s1, &s2})
            for (auto &t : *v) {
                if (!quantized.count(t.name)) {
                    EXPECT_EQ(bytes_of(got.get(t.name)), std::string(t.bytes.begin(), t.bytes.end())) << t.name;
                    continue;
                }
                size_t n = t.shape[0] * t.shape[1], nb = (n + bs - 1) / bs;
                std::vector<uint8_t> packed((n + 1) / 2);
                std::vector<float> absmax(nb);
                ASSERT_EQ(bnb4_quantize(nullptr, t.bytes.data(), lib_dtype(t.dtype), n, bs, lqt, packed.data(), absmax.data()),
                          BNB4_OK);
                EXPECT_EQ(bytes_of(got.get(t.name)), std::string(packed.begin(), packed.end())) << t.name;
                const bnb4_st_tensor *pw = got.get(t.name);
                ASSERT_NE(pw, nullptr);
                EXPECT_EQ(pw->ndim, 2u);
                EXPECT_EQ(pw->shape[1], 1u);
                std::string state = t.name + ".quant_state.bitsandbytes__" + qt;
                const bnb4_st_tensor *st = got.get(state);
                ASSERT_NE(st, nullptr) << state;
                bnb4_quant_state qs;
                char err[256];
                ASSERT_EQ(bnb4_qs_parse(st->data, st->nbytes, state.c_str(), &qs, err, sizeof err), 0) << err;
                EXPECT_EQ(qs.blocksize, bs);
                EXPECT_EQ(qs.shape[0], t.shape[0]);
                EXPECT_EQ(qs.shape[1], t.shape[1]);
                EXPECT_STREQ(qs.dtype, t.dtype == "F32" ? "float32" : t.dtype == "F16" ? "float16" : "bfloat16");
                EXPECT_EQ(bytes_of(got.get(t.name + ".quant_map")),
                          std::string((const char *)bnb4_quant_map(lqt), 64));
                if (dq) {
                    float off;
                    ASSERT_EQ(bnb4_nested_offset(nullptr, absmax.data(), nb, &off), BNB4_OK);
                    std::vector<uint8_t> codes(nb);
                    std::vector<float> nabs((nb + 255) / 256);
                    ASSERT_EQ(bnb4_quantize_nested(nullptr, absmax.data(), nb, off, 256, codes.data(), nabs.data()), BNB4_OK);
                    EXPECT_EQ(qs.nested_offset, (double)off);
                    EXPECT_EQ(bytes_of(got.get(t.name + ".absmax")), std::string(codes.begin(), codes.end()));
                    EXPECT_EQ(bytes_of(got.get(t.name + ".nested_absmax")),
                              std::string((const char *)nabs.data(), nabs.size() * 4));
                    EXPECT_EQ(bytes_of(got.get(t.name + ".nested_quant_map")),
                              std::string((const char *)bnb4_nested_code(), 1024));
                    // the blob is exactly the formatter's output for these values
                    char *blob;
                    size_t blen;
                    ASSERT_EQ(bnb4_qs_format(&qs, &blob, &blen, err, sizeof err), 0);
                    EXPECT_EQ(bytes_of(st), std::string(blob, blen));
                    std::free(blob);
                } else {
                    EXPECT_EQ(bytes_of(got.get(t.name + ".absmax")),
                              std::string((const char *)absmax.data(), absmax.size() * 4));
                    EXPECT_EQ(got.get(t.name + ".nested_absmax"), nullptr);
                }
            }

        // inspect --json agrees
        Result ins = run({"inspect", "--json", out});
        ASSERT_EQ(ins.code, 0) << ins.err;
        json_t *doc = json_loads(ins.out.c_str(), 0, &je);
        ASSERT_NE(doc, nullptr) << je.text;
        EXPECT_EQ(json_integer_value(json_object_get(json_object_get(doc, "totals"), "quantized")), 3);
        EXPECT_EQ(json_integer_value(json_object_get(json_object_get(doc, "totals"), "tensors")), 8);
        json_decref(doc);
        Result table = run({"inspect", out});
        ASSERT_EQ(table.code, 0);
        EXPECT_NE(table.out.find("model.layers.0.self_attn.q_proj.weight"), std::string::npos);
        EXPECT_NE(table.out.find("8 tensors in 2 files, 3 quantized"), std::string::npos) << table.out;

        // dequantize: the library's dequantization of the same bytes, in each weight's original dtype
        Result d = run({"dequantize", "-q", out, back});
        ASSERT_EQ(d.code, 0) << d.err;
        Model deq;
        deq.open_dir(back);
        EXPECT_EQ(deq.where.size(), 8u);
        for (auto *v : {&s1, &s2})
            for (auto &t : *v) {
                const bnb4_st_tensor *b = deq.get(t.name);
                ASSERT_NE(b, nullptr) << t.name;
                EXPECT_EQ(std::string(b->dtype), t.dtype) << t.name;
                if (!quantized.count(t.name)) {
                    EXPECT_EQ(bytes_of(b), std::string(t.bytes.begin(), t.bytes.end()));
                    continue;
                }
                size_t n = t.shape[0] * t.shape[1], nb = (n + bs - 1) / bs;
                std::vector<float> absmax(nb);
                const bnb4_st_tensor *pk = got.get(t.name);
                if (dq) {
                    const bnb4_st_tensor *codes = got.get(t.name + ".absmax"), *na = got.get(t.name + ".nested_absmax");
                    std::vector<float> nav(na->numel);
                    std::memcpy(nav.data(), na->data, na->nbytes);
                    bnb4_quant_state qs;
                    char err[256];
                    const bnb4_st_tensor *st = got.get(t.name + ".quant_state.bitsandbytes__" + qt);
                    ASSERT_EQ(bnb4_qs_parse(st->data, st->nbytes, "s", &qs, err, sizeof err), 0);
                    bnb4_qtensor q = bnb4_qtensor_nested(t.shape[0], t.shape[1], bs, lqt, pk->data, codes->data, nav.data(),
                                                         bnb4_nested_code(), (float)qs.nested_offset, 256);
                    ASSERT_EQ(bnb4_dequantize_nested(nullptr, &q, absmax.data()), BNB4_OK);
                } else {
                    std::memcpy(absmax.data(), got.get(t.name + ".absmax")->data, nb * 4);
                }
                bnb4_qtensor q = bnb4_qtensor_plain(t.shape[0], t.shape[1], bs, lqt, pk->data, absmax.data());
                std::vector<uint8_t> want(n * bnb4_dtype_size(lib_dtype(t.dtype)));
                ASSERT_EQ(bnb4_dequantize(nullptr, &q, lib_dtype(t.dtype), want.data()), BNB4_OK);
                EXPECT_EQ(bytes_of(b), std::string(want.begin(), want.end())) << t.name;
                EXPECT_EQ(std::vector<uint64_t>(b->shape, b->shape + b->ndim), t.shape);
            }
        json_t *bcfg = json_load_file((back + "/config.json").c_str(), 0, &je);
        ASSERT_NE(bcfg, nullptr);
        EXPECT_EQ(json_object_get(bcfg, "quantization_config"), nullptr);
        json_decref(bcfg);
    }
}

TEST(Cli, OutputIndependentOfThreadCountAndSingleFileInput) {
    unsigned seed = std::random_device{}();
    std::printf("seed %u\n", seed);
    std::mt19937_64 rng(seed);
    TempDir tmp;
    std::string in = tmp / "w.safetensors";
    write_st(in, {random_tensor(rng, "a.weight", "F16", {300, 1000}), random_tensor(rng, "b.weight", "F32", {3, 5}),
                  random_tensor(rng, "c.bias", "F16", {300})});
    Result r1 = run({"quantize", "-q", "-j", "1", in, tmp / "one.safetensors"});
    Result r3 = run({"quantize", "-q", "--threads=3", in, tmp / "three.safetensors"});
    ASSERT_EQ(r1.code, 0) << r1.err;
    ASSERT_EQ(r3.code, 0) << r3.err;
    EXPECT_EQ(slurp(tmp / "one.safetensors"), slurp(tmp / "three.safetensors"));
    // without --quiet and not on a terminal: exactly one summary line
    Result s = run({"quantize", in, tmp / "sum.safetensors"});
    ASSERT_EQ(s.code, 0);
    EXPECT_EQ(std::count(s.err.begin(), s.err.end(), '\n'), 1) << s.err;
    EXPECT_NE(s.err.find("quantized 2 of 3 tensors"), std::string::npos) << s.err;
}

// ---- failures ------------------------------------------------------------------------------------

void expect_failure(const std::vector<std::string> &args, int code, const std::string &needle) {
    Result r = run(args);
    EXPECT_EQ(r.code, code) << "stderr: " << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err << "\nexpected: " << needle;
}

TEST(Cli, BadInputsGiveClearMessagesAndLeaveNothing) {
    std::mt19937_64 rng(7);
    TempDir tmp;
    std::string good = tmp / "good.safetensors";
    write_st(good, {random_tensor(rng, "x.weight", "F16", {8, 64})});
    std::set<std::string> before = listdir(tmp.path);

    expect_failure({"quantize", tmp / "missing.safetensors", tmp / "o.safetensors"}, 3, "missing.safetensors");
    {
        std::ofstream(tmp / "garbage.safetensors") << "this is not a safetensors file at all";
        expect_failure({"quantize", tmp / "garbage.safetensors", tmp / "o.safetensors"}, 3,
                       "garbage.safetensors: not a safetensors file");
        std::string g = slurp(good);
        std::ofstream(tmp / "trunc.safetensors", std::ios::binary) << g.substr(0, g.size() - 3);
        expect_failure({"quantize", tmp / "trunc.safetensors", tmp / "o.safetensors"}, 3, "outside the data section");
        std::string bad_json = std::string("\x08\0\0\0\0\0\0\0{\"a\":1,,", 16);
        std::ofstream(tmp / "badjson.safetensors", std::ios::binary) << bad_json;
        expect_failure({"inspect", tmp / "badjson.safetensors"}, 3, "bad JSON");
        write_st(tmp / "empty.safetensors", {});
        expect_failure({"quantize", tmp / "empty.safetensors", tmp / "o.safetensors"}, 3, "empty model");
    }
    before = listdir(tmp.path);
    // OUT exists: refused without --force, untouched; replaced with it
    std::ofstream(tmp / "exists.safetensors") << "old";
    expect_failure({"quantize", good, tmp / "exists.safetensors"}, 4, "already exists");
    EXPECT_EQ(slurp(tmp / "exists.safetensors"), "old");
    EXPECT_EQ(run({"quantize", "-q", "--force", good, tmp / "exists.safetensors"}).code, 0);
    EXPECT_NE(slurp(tmp / "exists.safetensors"), "old");
    expect_failure({"quantize", good, good}, 2, "input itself");
    expect_failure({"quantize", "--force", good, good}, 2, "input itself");
    // usage errors
    expect_failure({"quantize", good}, 2, "expected IN and OUT");
    expect_failure({"quantize", "--blocksize", "48", good, tmp / "o.safetensors"}, 2, "--blocksize");
    expect_failure({"quantize", "--quant-type", "int8", good, tmp / "o.safetensors"}, 2, "--quant-type");
    expect_failure({"quantize", "--frobnicate", good, tmp / "o.safetensors"}, 2, "unknown option");
    expect_failure({"quantize", "--threads", "-3", good, tmp / "o.safetensors"}, 2, "--threads");
    expect_failure({"frobnicate"}, 2, "unknown command");
    expect_failure({"dequantize", "--dtype", "f8", good, tmp / "o.safetensors"}, 2, "--dtype");
    write_st(tmp / "clash.safetensors", {random_tensor(rng, "x.weight", "F16", {8, 64}),
                                         random_tensor(rng, "x.weight.absmax", "F32", {8})});
    expect_failure({"quantize", tmp / "clash.safetensors", tmp / "o.safetensors"}, 3, "\"x.weight.absmax\"");
    // already quantized input; malformed quant_state in inspect/dequantize
    ASSERT_EQ(run({"quantize", "-q", good, tmp / "q.safetensors"}).code, 0);
    expect_failure({"quantize", tmp / "q.safetensors", tmp / "o.safetensors"}, 3, "already quantized");
    {
        Model q;
        q.open_file(tmp / "q.safetensors", "q");
        std::vector<InTensor> ts;
        for (auto &kv : q.where) {
            const bnb4_st_tensor *t = kv.second.second;
            InTensor it{t->name, t->dtype, std::vector<uint64_t>(t->shape, t->shape + t->ndim),
                        std::vector<uint8_t>(t->data, t->data + t->nbytes)};
            if (it.name.find("quant_state") != std::string::npos) {
                std::string blob = "{\"quant_type\": \"nf4\", \"blocksize\": 48}";
                it.bytes.assign(blob.begin(), blob.end());
                it.shape = {blob.size()};
            }
            ts.push_back(it);
        }
        write_st(tmp / "badstate.safetensors", ts);
        expect_failure({"inspect", tmp / "badstate.safetensors"}, 3, "malformed quant_state");
        expect_failure({"dequantize", tmp / "badstate.safetensors", tmp / "o.safetensors"}, 3, "malformed quant_state");
    }
    // nothing but the files this test made: no o.safetensors, no temporaries
    std::set<std::string> after = listdir(tmp.path);
    for (const auto &n : after) {
        EXPECT_EQ(n.find(".tmp"), std::string::npos) << "left behind: " << n;
        EXPECT_NE(n, "o.safetensors");
    }
}

TEST(Cli, ModelDirectoryProblems) {
    std::mt19937_64 rng(11);
    TempDir tmp;
    std::string d = tmp / "m";
    mkdir(d.c_str(), 0755);
    expect_failure({"quantize", d, tmp / "o"}, 3, "no .safetensors files");
    write_st(d + "/model-00001-of-00002.safetensors", {random_tensor(rng, "a.weight", "F16", {4, 64})});
    std::ofstream(d + "/model.safetensors.index.json")
        << "{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\", \"b.weight\": \"model-00002-of-00002.safetensors\"}}";
    expect_failure({"quantize", d, tmp / "o"}, 3, "model-00002-of-00002.safetensors");
    std::ofstream(d + "/model.safetensors.index.json") << "{\"weight_map\": {\"a.weight\": \"../../etc/passwd\"}}";
    expect_failure({"quantize", d, tmp / "o"}, 3, "not a file name");
    std::ofstream(d + "/model.safetensors.index.json") << "{\"weight_map\": {\"a.weight\": \"model-00001-of-00002.safetensors\"}}";
    std::ofstream(d + "/config.json") << "{\"model_type\": ";
    expect_failure({"quantize", d, tmp / "o"}, 3, "config.json");
    std::ofstream(d + "/config.json") << "{\"model_type\": \"llama\"}";
    EXPECT_EQ(run({"quantize", "-q", d, tmp / "o"}).code, 0);
    // an existing directory is replaced only with --force, and completely
    std::ofstream(tmp / "o/stale.txt") << "x";
    expect_failure({"quantize", d, tmp / "o"}, 4, "already exists");
    EXPECT_EQ(run({"quantize", "-q", "--force", d, tmp / "o"}).code, 0);
    EXPECT_EQ(listdir(tmp / "o").count("stale.txt"), 0u);
    EXPECT_EQ(listdir(tmp.path), (std::set<std::string>{"m", "o"}));
}

// Ctrl-C in the middle of a conversion: exit 130 and nothing left in the target directory.
TEST(Cli, InterruptLeavesNoOutput) {
    std::mt19937_64 rng(3);
    TempDir tmp;
    std::string d = tmp / "big";
    mkdir(d.c_str(), 0755);
    std::vector<InTensor> ts;
    for (int i = 0; i < 24; i++) ts.push_back(random_tensor(rng, "l" + std::to_string(i) + ".weight", "F32", {512, 1024}));
    write_st(d + "/model.safetensors", ts);
    std::ofstream(d + "/config.json") << "{}";
    bool interrupted = false;
    for (int attempt = 0; attempt < 5 && !interrupted; attempt++) {
        std::string out = tmp / "out";
        pid_t pid;
        std::vector<std::string> a = {kExe, "quantize", "-q", "-j", "1", d, out};
        std::vector<char *> argv;
        for (auto &s : a) argv.push_back(&s[0]);
        argv.push_back(nullptr);
        ASSERT_EQ(posix_spawn(&pid, kExe.c_str(), nullptr, nullptr, argv.data(), environ), 0);
        // wait until it is writing (its temporary directory exists), then interrupt
        for (int i = 0; i < 2000; i++) {
            bool writing = false;
            for (auto &n : listdir(tmp.path)) writing |= n.find(".out.tmp") != std::string::npos;
            if (writing) break;
            usleep(1000);
        }
        usleep(1000 * (attempt * 5));
        kill(pid, SIGINT);
        int st;
        waitpid(pid, &st, 0);
        ASSERT_TRUE(WIFEXITED(st));
        if (WEXITSTATUS(st) == 130) {
            interrupted = true;
            EXPECT_EQ(listdir(tmp.path), (std::set<std::string>{"big"}));
        } else {
            EXPECT_EQ(WEXITSTATUS(st), 0);  // finished before the signal: a complete output
            std::system(("rm -rf " + shell_quote(out)).c_str());
        }
    }
    EXPECT_TRUE(interrupted) << "the conversion always finished before SIGINT arrived";
}

// Streaming: the resident set stays near one tensor, not the model (issue: under about twice the
// largest tensor plus a small constant). 16 float32 tensors of 8 MiB = 128 MiB of model.
TEST(Cli, PeakMemoryBoundedByLargestTensor) {
#if defined(__SANITIZE_ADDRESS__)
    GTEST_SKIP() << "RSS is not meaningful under AddressSanitizer";
#else
    std::mt19937_64 rng(5);
    TempDir tmp;
    std::vector<InTensor> ts;
    for (int i = 0; i < 16; i++) ts.push_back(random_tensor(rng, "l" + std::to_string(i) + ".weight", "F32", {2048, 1024}));
    write_st(tmp / "m.safetensors", ts);
    ts.clear();
    Result r = run({"quantize", "-j", "2", tmp / "m.safetensors", tmp / "o.safetensors"});
    ASSERT_EQ(r.code, 0) << r.err;
    size_t at = r.err.find("peak RSS ");
    ASSERT_NE(at, std::string::npos) << r.err;
    double v = std::atof(r.err.c_str() + at + 9);
    std::string unit = r.err.substr(r.err.find(' ', at + 9) + 1, 3);
    double mib = unit == "GiB" ? v * 1024 : unit == "MiB" ? v : unit == "KiB" ? v / 1024 : v / (1 << 20);
    std::printf("peak RSS %.1f MiB for a 128 MiB model of 8 MiB tensors\n", mib);
    EXPECT_LT(mib, 2 * 8 + 24) << r.err;
#endif
}

TEST(Cli, HelpAndInfo) {
    Result h = run({"--help"});
    EXPECT_EQ(h.code, 0);
    EXPECT_NE(h.out.find("exit status"), std::string::npos);
    for (const char *c : {"quantize", "dequantize", "inspect", "info", "bench"}) {
        Result r = run({c, "--help"});
        EXPECT_EQ(r.code, 0) << c;
        EXPECT_NE(r.out.find("usage: bnb4"), std::string::npos) << c;
    }
    Result i = run({"info"});
    EXPECT_EQ(i.code, 0);
    EXPECT_NE(i.out.find(bnb4_version_string()), std::string::npos);
    EXPECT_NE(i.out.find("quantize"), std::string::npos);
    EXPECT_EQ(run({}).code, 2);
}

}  // namespace
