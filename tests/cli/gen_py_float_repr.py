#!/usr/bin/env python3
"""Writes data/py_float_repr.txt: '<IEEE-754 double as 16 hex digits> <Python repr>' per line.

The oracle for bnb4_py_float_repr (how json.dumps writes bitsandbytes' nested_offset). Values:
float32 numbers widened to double (what bitsandbytes stores), random doubles over the whole
exponent range, powers of two (asymmetric rounding intervals), and the notation boundaries.
Regenerate with: python3 tests/cli/gen_py_float_repr.py (deterministic, seed below).
"""
import math
import os
import random
import struct

SEED = 20261128


def main():
    rng = random.Random(SEED)
    vals = [0.0, -0.0, 1.0, -1.0, 0.5, 0.1, 1e-4, 9.999999999999999e-05, 1e-5, 1e15, 1e16, 9999999999999998.0,
            1e17, 123456789012345678.0, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
            0.06151936948299408, 0.05026658624410629, 3.4028234663852886e38, 1.1754943508222875e-38]
    while len(vals) < 3000:
        r = rng.random()
        if r < 0.5:  # float32 widened, like torch.Tensor.item() on a float32 offset
            f = struct.unpack('<f', struct.pack('<I', rng.getrandbits(32)))[0]
        elif r < 0.65:  # typical offsets: means of absmax values
            f = struct.unpack('<f', struct.pack('<f', rng.uniform(0, 1) * 10 ** rng.uniform(-6, 6)))[0]
        elif r < 0.85:
            f = struct.unpack('<d', struct.pack('<Q', rng.getrandbits(64)))[0]
        else:
            f = math.ldexp(1.0, rng.randint(-1074, 1023)) * rng.choice((1, -1))
        if math.isfinite(f):
            vals.append(f)
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, 'data', 'py_float_repr.txt'), 'w') as out:
        for v in vals:
            out.write('%016x %s\n' % (struct.unpack('<Q', struct.pack('<d', v))[0], repr(v)))


if __name__ == '__main__':
    main()
