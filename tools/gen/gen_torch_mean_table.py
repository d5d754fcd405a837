#!/usr/bin/env python3
"""Record torch's CUDA float32 mean for the table in tests/unit/test_ref.cc (NestedOffsetIsTorchsCudaMean),
which checks src/format/bnb4_torch_mean.c (bitsandbytes' double-quantization offset is absmax.mean() on
the GPU) on a machine with no GPU.

Usage (on a machine with torch and a CUDA GPU of 132 SMs, as the H100 SXM and H200, where bitsandbytes'
reference outputs were recorded; a few seconds):

    python3 tools/gen/gen_torch_mean_table.py > table.inc

Each row is {n, seed, spread, bits}: torch.mean() of n float32 values made by torch_mean_values below
(restated in C by the test: an integer hash of the index, its top 23 bits the mantissa and its low bits
one of `spread` binades around 1), and the float32 bits of the result.
"""

import sys

import numpy as np
import torch

# where torch's reduction changes shape: single values below 128, loads of 4 from 128, blocks of up to 512
# threads (2048 values), several blocks from 130561, the SM count's cap from 4325377, and float32 counts
# that round past 2^24
SIZES = [1, 2, 3, 4, 5, 7, 31, 32, 33, 64, 100, 127, 128, 129, 130, 131, 132, 133, 200, 255, 256, 257, 511,
         512, 513, 767, 768, 769, 1000, 1023, 1024, 1025, 2047, 2048, 2049, 2051, 4095, 4096, 4097, 8192, 65535,
         65536, 65537, 130560, 130561, 131072, 131075, 262144, 262147, 524288, 704512, 1000003, 1048576,
         4325376, 4325377, 4325888, 5000001, 16777217, 16777219]
SPREADS = [16, 64]  # binades of the values: the wider, the more the summation order shows
# (n, seed, spread) rows where single values and loads of 4 sum differently at n = 128, the edge between them
EXTRA = [(128, seed, 64) for seed in (90007, 90009, 90011, 90012, 90014, 90015)]


def torch_mean_values(n, seed, spread):
    """float32 values from a hash of the index (the test's restatement must match bit for bit)."""
    with np.errstate(over="ignore"):
        h = np.arange(n, dtype=np.uint32) * np.uint32(0x9E3779B1) + np.uint32(seed)
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    exponent = np.uint32(127 - spread // 2) + (h & np.uint32(spread - 1))
    return ((exponent << np.uint32(23)) | (h >> np.uint32(9))).view(np.float32)


def main():
    props = torch.cuda.get_device_properties(0)
    print(f"/* torch {torch.__version__} on {props.name} ({props.multi_processor_count} SMs): "
          f"tools/gen/gen_torch_mean_table.py */")
    rows = [(n, 1000 * spread + i, spread) for spread in SPREADS for i, n in enumerate(SIZES)] + EXTRA
    for n, seed, spread in rows:
        x = torch.from_numpy(torch_mean_values(n, seed, spread)).cuda()
        bits = int(np.float32(x.mean().item()).view(np.uint32))
        print(f"{{{n}, {seed}, {spread}, 0x{bits:08x}u}},")
    if props.multi_processor_count != 132:
        print(f"warning: {props.multi_processor_count} SMs; rows past 3.5 M values follow this GPU, not the "
              f"132-SM reference", file=sys.stderr)


if __name__ == "__main__":
    main()
