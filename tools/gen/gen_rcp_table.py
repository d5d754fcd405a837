#!/usr/bin/env python3
"""Recover the coefficient tables of the GPU's approximate reciprocal (rcp.approx.ftz.f32, MUFU.RCP)
from the measured difference table and write src/format/bnb4_rcp_table.c.

Usage (from the repository root; needs Python 3 and numpy, about 30 s):

    python3 tools/gen/gen_rcp_table.py [tests/data/rcp_approx_diff.i8.gz] [src/format/bnb4_rcp_table.c]

Input: gzip of 2^23 signed bytes, entry m = bits(rcp_hw(1.m)) - bits(RN(1/1.m)) (see
shared/spec/rcp-approx.md). Output: three 128-entry tables, 1024 bytes in all.

The model (it reproduces every one of the 2^23 measured results; the script checks that and fails
otherwise). Write the mantissa m as segment s (top 7 bits) and offset i (low 16 bits). All sums are
integers in units of 2^-39, i.e. 2^-15 of the result's ulp (results are in (0.5, 1], ulp 2^-24):

    sum = (C0[s] << 13) + 2023 - C1[s] * i + C2[s] * (sq17(i) >> 17)
    rcp_hw(1.m) = (sum >> 15) * 2^-24                      # truncation

    C0: 26 bits, units 2^-26 (a quarter ulp)      C1: 16 bits (slope magnitude)      C2: 10 bits
    sq17(i): the square of the 16-bit i from a truncated squarer that keeps only the partial-product
             bits of weight >= 2^17 (the folded squarer array: terms i_a*i_b*2^(a+b+1), a < b, and
             i_a*2^(2a)), so sq17 is not floor(i*i / 2^17) but slightly below it.
    2023:    a constant (about 0.062 ulp) that rounds the truncated result; the data fix it uniquely.

This is quadratic interpolation as in Oberman & Siu's multifunction interpolator (ARITH 2005), whose
reciprocal row has the same widths: 128 segments, C0 26 bits, C1 16 bits, C2 10 bits.

How the coefficients are found: for each segment a least-squares fit of the measured results on
[1, i, sq17(i)] gives approximate C1, C2; every integer pair in a window around them is tried, and
for each the feasible C0 values form an interval computed exactly in integers. The script requires
exactly one (C1, C2) in the window with a C0 on the quarter-ulp grid (after the constant), and then
verifies all 2^23 mantissas.
"""
import gzip
import sys

import numpy as np

SEGMENT_BITS = 7
OFFSET_BITS = 23 - SEGMENT_BITS          # 16
SQUARE_DROP_BITS = 17                    # squarer keeps partial-product columns >= 2^17
FRACTION_BITS = 15                       # sum is in units of 2^-15 result ulp
C0_SHIFT = 13                            # C0 is in quarter ulps: 2^(15-2)
ROUNDING_CONSTANT = 2023


def truncated_square(i):
    """Folded squarer on OFFSET_BITS-bit i, keeping only the partial-product bits of weight >= 2^17."""
    out = np.zeros_like(i)
    bits = [(i >> a) & 1 for a in range(OFFSET_BITS)]
    for a in range(OFFSET_BITS):
        if 2 * a >= SQUARE_DROP_BITS:
            out += bits[a] << (2 * a)
        for b in range(a + 1, OFFSET_BITS):
            if a + b + 1 >= SQUARE_DROP_BITS:
                out += (bits[a] & bits[b]) << (a + b + 1)
    return out


def hardware_results(diff):
    """rcp_hw(1.m) in units of 2^-24, for every mantissa m (2^24 for m = 0, i.e. 1.0)."""
    m = np.arange(1 << 23, dtype=np.int64)
    den = (1 << 23) + m
    q = (1 << 47) // den
    r = (1 << 47) - q * den
    nearest = q + (2 * r >= den)
    return nearest + diff.astype(np.int64)


def solve_segment(s, hw, i, sq_hi):
    W = 1 << OFFSET_BITS
    h = hw[s * W:(s + 1) * W]
    # Approximate real coefficients, in units of 2^-15 ulp: h*2^15 ~ a - c1*i + c2*sq_hi.
    A = np.vstack([np.ones(W), -i.astype(float), sq_hi.astype(float)]).T
    approx, *_ = np.linalg.lstsq(A, h.astype(float) * 2**FRACTION_BITS, rcond=None)
    lo_bound = h << FRACTION_BITS                 # sum must lie in [h*2^15, (h+1)*2^15)
    hi_bound = (h + 1) << FRACTION_BITS
    found = []
    for c1 in range(int(round(approx[1])) - 8, int(round(approx[1])) + 9):
        for c2 in range(int(round(approx[2])) - 3, int(round(approx[2])) + 4):
            varying = -c1 * i + c2 * sq_hi
            lo = int((lo_bound - varying).max())  # (C0 << 13) + constant in [lo, hi)
            hi = int((hi_bound - varying).min())
            if lo >= hi:
                continue
            c0 = -(-(lo - ROUNDING_CONSTANT) >> C0_SHIFT)   # smallest on the quarter-ulp grid
            if (c0 << C0_SHIFT) + ROUNDING_CONSTANT < hi:
                found.append((c0, c1, c2))
    if len(found) != 1:
        sys.exit('segment %d: expected exactly one coefficient triple, found %r' % (s, found))
    return found[0]


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else 'tests/data/rcp_approx_diff.i8.gz'
    dst = sys.argv[2] if len(sys.argv) > 2 else 'src/format/bnb4_rcp_table.c'
    diff = np.frombuffer(gzip.open(src).read(), dtype=np.int8)
    if diff.size != 1 << 23:
        sys.exit('%s: expected 2^23 entries, got %d' % (src, diff.size))
    hw = hardware_results(diff)
    i = np.arange(1 << OFFSET_BITS, dtype=np.int64)
    sq_hi = truncated_square(i) >> SQUARE_DROP_BITS

    coeffs = np.array([solve_segment(s, hw, i, sq_hi) for s in range(1 << SEGMENT_BITS)],
                      dtype=np.int64)
    c0, c1, c2 = coeffs[:, 0], coeffs[:, 1], coeffs[:, 2]
    assert c0.max() <= 1 << 26 and c0.min() >= 1 << 25, 'C0 must fit 26 bits plus 1.0'
    assert 0 < c1.min() and c1.max() < 1 << 16 and 0 < c2.min() and c2.max() < 1 << 10

    # Verify every mantissa.
    m = np.arange(1 << 23, dtype=np.int64)
    s, off = m >> OFFSET_BITS, m & ((1 << OFFSET_BITS) - 1)
    total = (c0[s] << C0_SHIFT) + ROUNDING_CONSTANT - c1[s] * off + c2[s] * sq_hi[off]
    bad = np.count_nonzero((total >> FRACTION_BITS) != hw)
    if bad:
        sys.exit('model mismatches %d of 2^23 mantissas' % bad)

    def table(ctype, name, values, per_line, fmt):
        lines = ['const %s %s[%d] = {' % (ctype, name, len(values))]
        for k in range(0, len(values), per_line):
            lines.append('    ' + ', '.join(fmt % v for v in values[k:k + per_line]) + ',')
        lines.append('};')
        return '\n'.join(lines)

    with open(dst, 'w') as f:
        f.write('/* GENERATED by tools/gen/gen_rcp_table.py from tests/data/rcp_approx_diff.i8.gz.\n'
                ' * DO NOT EDIT: rerun the generator instead. Coefficients of the GPU reciprocal\n'
                ' * (rcp.approx.ftz.f32) per 7-bit mantissa segment; see bnb4_rcp.c for the formula. */\n')
        f.write('#include <stdint.h>\n\n')
        f.write('extern const uint32_t bnb4_rcp_c0[128];\nextern const uint16_t bnb4_rcp_c1[128];\n'
                'extern const uint16_t bnb4_rcp_c2[128];\n\n')
        f.write('/* C0: value at the segment start, units 2^-26 */\n')
        f.write(table('uint32_t', 'bnb4_rcp_c0', c0.tolist(), 6, '0x%07x') + '\n\n')
        f.write('/* C1: magnitude of the (negative) slope, units 2^-39 per mantissa ulp */\n')
        f.write(table('uint16_t', 'bnb4_rcp_c1', c1.tolist(), 8, '%5d') + '\n\n')
        f.write('/* C2: curvature, units 2^-39 per 2^17 of the truncated square */\n')
        f.write(table('uint16_t', 'bnb4_rcp_c2', c2.tolist(), 12, '%4d') + '\n')
    print('wrote %s: 128 segments, all 2^23 mantissas reproduced' % dst)


if __name__ == '__main__':
    main()
