// test_util.cc - see test_util.h.
#include "test_util.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace bnb4test {

uint64_t seed() {
    static const uint64_t s = [] {
        const char *env = std::getenv("BNB4_TEST_SEED");
        const uint64_t v = env ? std::strtoull(env, nullptr, 0)
                               : (uint64_t)std::chrono::steady_clock::now().time_since_epoch().count();
        std::printf("[bnb4] random seed %llu (replay with BNB4_TEST_SEED=%llu)\n", (unsigned long long)v,
                    (unsigned long long)v);
        return v;
    }();
    return s;
}

std::mt19937_64 rng(uint64_t salt) { return std::mt19937_64(seed() * 0x9E3779B97F4A7C15ull + salt); }

float Array::get(size_t i) const {
    switch (dtype) {
    case BNB4_F16: {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return bnb4_f16_to_f32(h);
    }
    case BNB4_BF16: {
        uint16_t h;
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return bnb4_bf16_to_f32(h);
    }
    default: {
        float f;
        std::memcpy(&f, bytes.data() + 4 * i, 4);
        return f;
    }
    }
}

void Array::set(size_t i, float v) {
    switch (dtype) {
    case BNB4_F16: {
        const uint16_t h = bnb4_f32_to_f16(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
    }
    case BNB4_BF16: {
        const uint16_t h = bnb4_f32_to_bf16(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
    }
    default:
        std::memcpy(bytes.data() + 4 * i, &v, 4);
    }
}

void set_signaling_nan(Array &a, size_t i, uint32_t bits) {
    const uint32_t sign = bits >> 31;
    if (a.dtype == BNB4_F32) {
        const uint32_t v = sign << 31 | 0x7f800000u | ((bits & 0x3fffffu) | 1u);
        std::memcpy(a.bytes.data() + 4 * i, &v, 4);
    } else {
        const uint16_t v = a.dtype == BNB4_F16 ? (uint16_t)(sign << 15 | 0x7c00u | ((bits & 0x1ffu) | 1u))
                                               : (uint16_t)(sign << 15 | 0x7f80u | ((bits & 0x3fu) | 1u));
        std::memcpy(a.bytes.data() + 2 * i, &v, 2);
    }
}

Array make_array(bnb4_dtype dt, size_t n) {
    Array a;
    a.dtype = dt;
    a.bytes.assign(n * bnb4_dtype_size(dt), 0);
    return a;
}

Array randn(bnb4_dtype dt, size_t n, std::mt19937_64 &g, float scale) {
    Array a = make_array(dt, n);
    std::normal_distribution<float> d(0.0f, 1.0f);
    for (size_t i = 0; i < n; i++)
        a.set(i, d(g) * scale);
    return a;
}

Guarded::Guarded(size_t bytes) : buf(bytes + kGuard, kPoison), size(bytes) {
    std::memset(buf.data() + bytes, kFence, kGuard);
}

bool Guarded::fence_intact() const {
    for (size_t i = size; i < size + kGuard; i++)
        if (buf[i] != kFence)
            return false;
    return true;
}

bool Guarded::untouched() const {
    for (size_t i = 0; i < size; i++)
        if (buf[i] != kPoison)
            return false;
    return fence_intact();
}

double rel_err(const std::vector<double> &a, const std::vector<double> &b) {
    double num = 0, den = 0;
    for (size_t i = 0; i < a.size(); i++) {
        num += (a[i] - b[i]) * (a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

const char *dtype_name(bnb4_dtype dt) { return bnb4_dtype_name(dt); }

}  // namespace bnb4test
