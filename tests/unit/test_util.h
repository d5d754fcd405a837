// test_util.h - shared helpers for bnb4's tests: seeded random data (the seed is printed so any
// failure can be replayed with BNB4_TEST_SEED), dtype conversion, guarded buffers, error norms.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bnb4.h"
#include "bnb4_half.h"

namespace bnb4test {

// The process-wide seed: BNB4_TEST_SEED if set, else from the clock; printed once.
uint64_t seed();
// A generator for one test, derived from the seed and a per-test salt.
std::mt19937_64 rng(uint64_t salt);

// Elements of a given dtype, stored as raw bytes.
struct Array {
    bnb4_dtype dtype = BNB4_F32;
    std::vector<uint8_t> bytes;
    size_t size() const { return bytes.size() / bnb4_dtype_size(dtype); }
    void *data() { return bytes.data(); }
    const void *data() const { return bytes.data(); }
    float get(size_t i) const;
    void set(size_t i, float v);
};
Array make_array(bnb4_dtype dt, size_t n);
// A signaling NaN of a's dtype at i, either sign (the quiet bit clear, a nonzero payload from bits): what
// set() cannot make, as a conversion quiets a NaN.
void set_signaling_nan(Array &a, size_t i, uint32_t bits);
// randn * scale rounded to dt.
Array randn(bnb4_dtype dt, size_t n, std::mt19937_64 &g, float scale = 1.0f);

// Output buffer with poison before use and guard bytes after: catches short and long writes.
struct Guarded {
    static constexpr size_t kGuard = 64;
    static constexpr uint8_t kPoison = 0xA5, kFence = 0x5A;
    std::vector<uint8_t> buf;
    size_t size;
    explicit Guarded(size_t bytes);
    uint8_t *data() { return buf.data(); }
    bool fence_intact() const;
    bool untouched() const;  // every byte still poison (for "writes nothing on error")
};

// dt's unit roundoff (its relative rounding of a normal value: 2^-24, 2^-11, 2^-8) and half the spacing of
// its subnormals (its absolute rounding below the smallest normal: 2^-150, 2^-25, 2^-134).
inline double unit_roundoff(bnb4_dtype dt) { return dt == BNB4_F32 ? 0x1p-24 : dt == BNB4_F16 ? 0x1p-11 : 0x1p-8; }
inline double subnormal_half_gap(bnb4_dtype dt) {
    return dt == BNB4_F32 ? 0x1p-150 : dt == BNB4_F16 ? 0x1p-25 : 0x1p-134;
}

// Normwise relative error ||a - b|| / ||b||.
double rel_err(const std::vector<double> &a, const std::vector<double> &b);

inline uint32_t f32_bits(float f) { return bnb4_f32_bits(f); }
const char *dtype_name(bnb4_dtype dt);

}  // namespace bnb4test
