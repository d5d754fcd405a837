#!/usr/bin/env python3
"""Live check of bnb4_py_float_repr against this Python's repr() on fresh random values.

usage: check_py_float_repr.py FILTER_BINARY [COUNT]   (prints the seed; BNB4_SEED overrides it)
"""
import math
import os
import random
import struct
import subprocess
import sys


def main():
    exe = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 200000
    seed = int(os.environ.get('BNB4_SEED', random.SystemRandom().randrange(2**32)))
    print('seed', seed)
    rng = random.Random(seed)
    vals = []
    while len(vals) < count:
        r = rng.random()
        if r < 0.5:
            v = struct.unpack('<f', struct.pack('<I', rng.getrandbits(32)))[0]
        elif r < 0.8:
            v = struct.unpack('<d', struct.pack('<Q', rng.getrandbits(64)))[0]
        else:
            v = math.ldexp(1.0, rng.randint(-1074, 1023))
        if math.isfinite(v):
            vals.append(v)
    inp = ''.join('%016x\n' % struct.unpack('<Q', struct.pack('<d', v))[0] for v in vals)
    out = subprocess.run([exe], input=inp.encode(), capture_output=True, check=True).stdout.decode().split('\n')
    bad = [(v, o) for v, o in zip(vals, out) if repr(v) != o]
    for v, o in bad[:10]:
        print('mismatch: python %r, bnb4 %s' % (v, o))
    print('%d values, %d mismatches' % (len(vals), len(bad)))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
