#!/usr/bin/env python3
"""Benchmark (not a test): `bnb4 quantize` of a generated 1 GiB float16 checkpoint vs copying the file.

    python3 tools/bench_convert.py [--bnb4 build/bnb4] [--dir DIR] [--reps 5] [--gib 1] [--threads 0]

Generates DIR/bench-f16.safetensors (32 Llama-sized [4096, 4096] float16 weights per GiB, randn * 0.02,
numpy needed) once, then alternates, REPS times each, in the same run on the same disk:
  copy:     cp IN DIR/copy.safetensors, then fsync it (`sync FILE`)
  convert:  bnb4 quantize -q IN DIR/out.safetensors  (nf4, blocksize 64, double quant; bnb4 fsyncs too)
and prints the medians, their ratio, and the peak RSS of the conversion. Both read IN from the page
cache after the first pass (the file is generated just before), so the comparison is the CPU and write
cost of each. Record results in docs/performance.md.
"""
import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time


def generate(path, gib):
    try:
        import numpy as np
    except ImportError:
        sys.exit("bench_convert: numpy is needed to generate the checkpoint (pip install numpy)")
    n_tensors, shape = 32 * gib, (4096, 4096)
    nbytes = shape[0] * shape[1] * 2
    header = {"__metadata__": {"format": "pt"}}
    for i in range(n_tensors):
        header["model.layers.%d.mlp.up_proj.weight" % i] = {
            "dtype": "F16", "shape": list(shape), "data_offsets": [i * nbytes, (i + 1) * nbytes]}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    rng = np.random.default_rng(1234)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for _ in range(n_tensors):
            f.write((rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16).tobytes())
    os.replace(tmp, path)


def timed(cmd):
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def peak_rss(cmd):
    """Peak RSS in bytes of cmd, from GNU time (getrusage of a forked Python child would count the
    parent's pages)."""
    if not os.path.exists("/usr/bin/time"):
        return None
    r = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, check=True, capture_output=True, text=True)
    return int(r.stderr.strip().splitlines()[-1]) * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--bnb4", default=os.path.join(here, "build", "bnb4"))
    ap.add_argument("--dir", default=os.path.join(here, "build", "bench-convert"))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--gib", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="bnb4 --threads (0 = all cores)")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    src = os.path.join(a.dir, "bench-f16.safetensors")
    if not os.path.exists(src) or os.path.getsize(src) < a.gib << 30:
        print("generating %s (%d GiB float16) ..." % (src, a.gib), flush=True)
        generate(src, a.gib)
    copy, out = os.path.join(a.dir, "copy.safetensors"), os.path.join(a.dir, "out.safetensors")
    t_copy, t_conv = [], []
    for _ in range(a.reps):
        for p in (copy, out):
            if os.path.exists(p):
                os.unlink(p)
        t_copy.append(timed(["sh", "-c", 'cp "$0" "$1" && sync "$1"', src, copy]))
        t_conv.append(timed([a.bnb4, "quantize", "-q", "--threads", str(a.threads), "--force", src, out]))
    rss = peak_rss([a.bnb4, "quantize", "-q", "--threads", str(a.threads), "--force", src, out])
    mc, mq = statistics.median(t_copy), statistics.median(t_conv)
    size = os.path.getsize(src)
    print("input            %.2f GiB float16, %d tensors of 4096x4096" % (size / 2**30, 32 * a.gib))
    print("copy + fsync     median %.3f s  (%s)" % (mc, " ".join("%.3f" % t for t in t_copy)))
    print("bnb4 quantize    median %.3f s  (%s)" % (mq, " ".join("%.3f" % t for t in t_conv)))
    print("ratio            convert / copy = %.2f  (target <= 2)" % (mq / mc))
    print("throughput       %.0f MiB/s of input" % (size / mq / 2**20))
    if rss is not None:
        print("peak RSS         %.1f MiB of bnb4 quantize (one input tensor is 32 MiB)" % (rss / 2**20))
    print("output           %.2f GiB" % (os.path.getsize(out) / 2**30))
    for p in (copy, out):
        os.unlink(p)


if __name__ == "__main__":
    main()
