"""Plain numpy references the tests compare bnb4 against: the codebooks written out from the spec
(format.md section 1, as f32 bit patterns, independent of the library's own tables), nibble
unpacking, decoding, and an exact float64 dequantize-then-matmul."""

import numpy as np

NF4_BITS = [0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000,
            0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000]
_FP4_POS = [0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000, 0x3e2aaaab, 0x3e800000]
FP4_BITS = _FP4_POS + [b | 0x80000000 for b in _FP4_POS]  # code 8 decodes as -0.0 in bitsandbytes' kernels

NF4_CODEBOOK = np.array(NF4_BITS, dtype=np.uint32).view(np.float32)
FP4_CODEBOOK = np.array(FP4_BITS, dtype=np.uint32).view(np.float32)
FP4_QUANT_MAP = np.where(FP4_CODEBOOK == 0, np.float32(0), FP4_CODEBOOK).astype(np.float32)  # stored map: +0.0

FP4, NF4 = 1, 2


def codebook(qt):
    return NF4_CODEBOOK if qt == NF4 else FP4_CODEBOOK


def unpack(packed, n):
    """The n 4-bit codes of a packed byte array (element 2i is the high nibble of byte i)."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    codes = np.empty(2 * packed.size, dtype=np.uint8)
    codes[0::2] = packed >> 4
    codes[1::2] = packed & 0xF
    return codes[:n]


def dequantize(packed, absmax, blocksize, qt, n):
    """float32 values: f32(codebook[code] * absmax[block]), one rounding, as bitsandbytes does."""
    codes = unpack(packed, n)
    scale = np.asarray(absmax, dtype=np.float32).reshape(-1)[np.arange(n) // blocksize]
    return (codebook(qt)[codes] * scale).astype(np.float32)


def matmul(x, w_f32, bias=None):
    """Exact-ish float64 x[..., K] @ W^T (+ bias) and the scale sum |x| |W| for error bounds."""
    x64 = np.asarray(x, dtype=np.float64)
    w64 = np.asarray(w_f32, dtype=np.float64)
    y = x64 @ w64.T
    mag = np.abs(x64) @ np.abs(w64).T
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
        mag = mag + np.abs(np.asarray(bias, dtype=np.float64))
    return y, mag


# Error bound per activation dtype, relative to sum |x||W| (+|bias|): the kernels round the weight,
# each product and the output to the activation dtype at most once each, and accumulate in f32.
MATMUL_RTOL = {"float32": 1e-5, "float16": 4e-3, "bfloat16": 3e-2}
# ... plus the output's rounding where it is subnormal in its dtype, which is absolute: half the dtype's
# smallest spacing (a float16 output of 1e-6 is rounded by up to 2^-25, 3 % of it, whatever the sum).
MATMUL_ATOL = {"float32": 2.0**-150, "float16": 2.0**-25, "bfloat16": 2.0**-134}


def assert_matmul_close(y, ref, mag, dtype, what=""):
    rtol = MATMUL_RTOL[dtype]
    err = np.abs(np.asarray(y, dtype=np.float64) - ref)
    bound = rtol * mag + MATMUL_ATOL[dtype] + 1e-30
    worst = np.unravel_index(np.argmax(err / bound), err.shape) if err.size else None
    assert np.all(err <= bound), (f"{what}: |y - ref| exceeds {rtol} * sum|x||W| + {MATMUL_ATOL[dtype]:.3g} "
                                  f"at {worst}: y={np.asarray(y)[worst]}, ref={ref[worst]}, bound={bound[worst]}")


def bits(a):
    """Bit patterns of a float array (compare exactly, -0.0 != +0.0)."""
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])
