"""The seed's API (bitsandbytes-mps), same names, argument order, defaults and return shapes, on numpy
arrays and torch tensors, with the seed's bugs fixed (format.md section 8):

  quantize_4bit(input, blocksize=64, quant_type=NF4) -> (packed u8 [(n+1)//2], absmax f32 [ceil(n/bs)])
  dequantize_4bit(packed, absmax, blocksize=64, quant_type=NF4, numel=-1, output_dtype=float16) -> [numel]
  gemv_4bit(x, w, absmax, output_features, blocksize=64, quant_type=NF4)   -> [..., N]
  gemm_4bit(x, w, absmax, output_features, blocksize=64, quant_type=NF4)   -> [..., M, N]
  linear_4bit(x, w, absmax, output_features, blocksize=64, quant_type=NF4, bias=None) -> [..., N]

Unlike the seed: every row of a batched gemv input and every batch of a 3-D gemm input is computed,
any N and K work, every blocksize bitsandbytes accepts works (32 ... 4096), the FP4 quantizer is
bitsandbytes' (the C library is byte-exact with bitsandbytes' CUDA kernels), and bias is added in
float32 before the single rounding to the output dtype (as bitsandbytes' kernels do).

The weight w is bitsandbytes' flat layout: n = N*K elements quantized in row-major order in blocks of
`blocksize` (blocks do not restart at row boundaries), so w holds ceil(n/2) bytes and absmax
ceil(n/blocksize) floats, whatever their shapes ([N, K/2] and [N, K/bs] in the seed).
"""

import ctypes

from . import _lib
from ._arrays import kind_of, resolve_dtype, same_kind

FP4 = _lib.FP4
NF4 = _lib.NF4
_QT_NAMES = {"fp4": FP4, "nf4": NF4}


def quant_type_code(quant_type):
    """bitsandbytes' quant type numbering from 1/2 or "fp4"/"nf4". Other integers go to the C library,
    which rejects them with its own message."""
    if isinstance(quant_type, str):
        code = _QT_NAMES.get(quant_type.lower())
        if code is None:
            raise ValueError(f"bnb4: quant_type {quant_type!r} is not 'nf4', 'fp4', NF4 (2) or FP4 (1)")
        return code
    if isinstance(quant_type, bool) or not isinstance(quant_type, int):
        raise ValueError(f"bnb4: quant_type must be NF4 (2), FP4 (1), 'nf4' or 'fp4', got {quant_type!r}")
    return int(quant_type)


def quant_type_name(quant_type):
    return {FP4: "fp4", NF4: "nf4"}[quant_type_code(quant_type)]


def positive_int(value, what):
    """A Python int >= 1 (0 and unsupported values are left to the C library when it can say more)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"bnb4: {what} must be an integer, got {value!r}")
    value = int(value.__index__())
    if value < 0:
        raise ValueError(f"bnb4: {what} must be positive, got {value}")
    return value


def blocks(n, blocksize):
    return -(-n // blocksize) if blocksize > 0 else 0


def make_qtensor(rows, cols, blocksize, quant_type, packed_ptr, absmax_ptr=None, nested=None):
    """A bnb4_qtensor view. nested = (codes_ptr, nested_absmax_ptr, code_ptr, offset, nested_blocksize)."""
    q = _lib.QTensorC()
    q.rows, q.cols, q.blocksize, q.quant_type = rows, cols, blocksize, quant_type
    q.packed = packed_ptr
    q.absmax = absmax_ptr
    if nested is not None:
        q.nested.codes, q.nested.absmax, q.nested.code, q.nested.offset, q.nested.blocksize = nested
    return q


def _byte_input(kind, arr, what, need, exact):
    """Contiguous uint8 view of a packed-weight argument, checked to hold `need` bytes."""
    same_kind(kind, arr, what)
    if not kind.is_uint8(arr):
        raise ValueError(f"bnb4: {what} must be uint8 (packed 4-bit codes), got {kind.dtype_name(arr)}")
    have = kind.numel(arr)
    if have < need or (exact and have != need):
        raise ValueError(f"bnb4: {what} holds {have} bytes but {need} are needed")
    return kind.contiguous(arr)


def _absmax_input(kind, arr, need, exact, what="absmax"):
    same_kind(kind, arr, what)
    if not kind.is_float32(arr):
        raise ValueError(f"bnb4: {what} must be float32, got {kind.dtype_name(arr)}")
    have = kind.numel(arr)
    if have < need or (exact and have != need):
        raise ValueError(f"bnb4: {what} holds {have} values but {need} blocks are needed")
    return kind.contiguous(arr)


def _float_input(kind, arr, what):
    code = kind.dtype_code(arr)
    if code is None:
        raise ValueError(f"bnb4: {what} has dtype {kind.dtype_name(arr)}; bnb4 takes float32, float16 or "
                         f"bfloat16" + ("" if kind.name != "numpy" else " (ml_dtypes.bfloat16 for numpy)"))
    return kind.contiguous(arr), code


def quantize_4bit(input, blocksize=64, quant_type=NF4):
    """Quantize every element of `input` (any shape, row-major order) in blocks of `blocksize`.
    Returns (packed uint8 [(n+1)//2], absmax float32 [ceil(n/blocksize)]), byte-identical to
    bitsandbytes' CUDA quantize_4bit."""
    kind = kind_of(input, "input")
    x, dt = _float_input(kind, input, "input")
    bs = positive_int(blocksize, "blocksize")
    qt = quant_type_code(quant_type)
    n = kind.numel(x)
    if n == 0:
        raise ValueError("bnb4: quantize_4bit got an empty input")
    packed = kind.empty_bytes(((n + 1) // 2,))
    absmax = kind.empty_f32((max(blocks(n, bs), 1),))
    with kind.run(x) as ctx:
        _lib.check(_lib.lib.bnb4_quantize(ctx, kind.ptr(x), dt, n, bs, qt, kind.ptr(packed), kind.ptr(absmax)))
    return packed, absmax


def dequantize_4bit(packed, absmax, blocksize=64, quant_type=NF4, numel=-1, output_dtype="float16"):
    """Decode `numel` elements (2 * packed.size when negative) into a 1-D array of output_dtype
    (float16 by default, as in the seed; any of float32/float16/bfloat16 as a name, numpy, ml_dtypes or
    torch dtype)."""
    kind = kind_of(packed, "packed")
    bs = positive_int(blocksize, "blocksize")
    qt = quant_type_code(quant_type)
    code = resolve_dtype(output_dtype, "output_dtype")
    if isinstance(numel, bool) or not hasattr(numel, "__index__"):
        raise ValueError(f"bnb4: numel must be an integer, got {numel!r}")
    n = int(numel) if int(numel) >= 0 else 2 * kind.numel(packed)
    out = kind.empty((n,), code)
    if n == 0:
        return out
    p = _byte_input(kind, packed, "packed", (n + 1) // 2, exact=False)
    a = _absmax_input(kind, absmax, max(blocks(n, bs), 1), exact=False)
    q = make_qtensor(1, n, bs, qt, kind.ptr(p), kind.ptr(a))
    with kind.run(p) as ctx:
        _lib.check(_lib.lib.bnb4_dequantize(ctx, ctypes.byref(q), code, kind.ptr(out)))
    return out


def _matmul(op, x, w, absmax, output_features, blocksize, quant_type, bias, min_dim):
    kind = kind_of(x, "x")
    n_out = positive_int(output_features, "output_features")
    bs = positive_int(blocksize, "blocksize")
    qt = quant_type_code(quant_type)
    shape = tuple(x.shape)
    if len(shape) < min_dim:
        raise ValueError(f"bnb4: {op} needs x with at least {min_dim} dimension(s), got shape {shape}")
    if n_out == 0:
        raise ValueError("bnb4: output_features is 0")
    k = shape[-1]
    if k == 0:
        raise ValueError(f"bnb4: x has shape {shape}: the inner dimension K is 0")
    xc, dt = _float_input(kind, x, "x")
    m = kind.numel(xc) // k
    out_shape = shape[:-1] + (n_out,)
    n = n_out * k
    wc = _byte_input(kind, w, "w", (n + 1) // 2, exact=True)
    ac = _absmax_input(kind, absmax, max(blocks(n, bs), 1), exact=True)
    y = kind.empty(out_shape, dt)
    bias_ptr = None
    if bias is not None:
        same_kind(kind, bias, "bias")
        if kind.numel(bias) != n_out or len(tuple(bias.shape)) != 1:
            raise ValueError(f"bnb4: bias must have shape ({n_out},), got {tuple(bias.shape)}")
        bias = kind.astype(bias, dt)  # the seed adds bias in x's dtype; the C library adds it in f32
        bias_ptr = kind.ptr(bias)
    if m == 0:
        return y
    q = make_qtensor(n_out, k, bs, qt, kind.ptr(wc), kind.ptr(ac))
    with kind.run(xc) as ctx:
        if op == "linear_4bit":
            st = _lib.lib.bnb4_linear(ctx, ctypes.byref(q), dt, m, kind.ptr(xc), bias_ptr, kind.ptr(y))
        elif m == 1:
            st = _lib.lib.bnb4_gemv(ctx, ctypes.byref(q), dt, kind.ptr(xc), bias_ptr, kind.ptr(y))
        else:
            st = _lib.lib.bnb4_gemm(ctx, ctypes.byref(q), dt, m, kind.ptr(xc), bias_ptr, kind.ptr(y))
        _lib.check(st)
    return y


def gemv_4bit(x, w, absmax, output_features, blocksize=64, quant_type=NF4):
    """y[..., N] = x[..., K] W^T for every row of x (the seed computes only row 0)."""
    return _matmul("gemv_4bit", x, w, absmax, output_features, blocksize, quant_type, None, 1)


def gemm_4bit(x, w, absmax, output_features, blocksize=64, quant_type=NF4):
    """Y[..., M, N] = X[..., M, K] W^T for every batch (the seed computes only the first)."""
    return _matmul("gemm_4bit", x, w, absmax, output_features, blocksize, quant_type, None, 2)


def linear_4bit(x, w, absmax, output_features, blocksize=64, quant_type=NF4, bias=None):
    """x W^T + bias with the seed's shapes: x [K] -> [N], x [..., K] -> [..., N]. The C library picks
    the gemv kernel for one row and the gemm kernel otherwise."""
    return _matmul("linear_4bit", x, w, absmax, output_features, blocksize, quant_type, bias, 1)


def codebook(quant_type):
    """The 16 float32 values the kernels decode with (FP4 code 8 is -0.0, as in bitsandbytes' CUDA)."""
    return _lib.table(_lib.lib.bnb4_codebook(quant_type_code(quant_type)), 16)


def quant_map(quant_type):
    """The 16-entry table bitsandbytes stores as `quant_map` (FP4 code 8 is +0.0)."""
    return _lib.table(_lib.lib.bnb4_quant_map(quant_type_code(quant_type)), 16)


def nested_code():
    """bitsandbytes' 256-entry signed dynamic map used for double quantization."""
    return _lib.table(_lib.lib.bnb4_nested_code(), 256)


def kernel_name(op, dtype="float32", m=1, device="cpu"):
    """Which kernel the C library runs for `op` ("quantize", "quantize_nested", "dequantize", "gemv",
    "gemm") with activations of `dtype` and m rows, on "cpu" or "cuda[:i]"."""
    ops = {"quantize": _lib.OP_QUANTIZE, "quantize_nested": _lib.OP_QUANTIZE_NESTED,
           "dequantize": _lib.OP_DEQUANTIZE, "gemv": _lib.OP_GEMV, "gemm": _lib.OP_GEMM}
    if op not in ops:
        raise ValueError(f"bnb4: unknown op {op!r} (one of {sorted(ops)})")
    ctx = None
    device = str(device)
    if device.startswith("cuda"):
        index = int(device.split(":")[1]) if ":" in device else 0
        ctx = _lib.cuda_context(index, 0)
    return _lib.lib.bnb4_kernel_name(ctx, ops[op], resolve_dtype(dtype), positive_int(m, "m")).decode()


__all__ = ["FP4", "NF4", "quantize_4bit", "dequantize_4bit", "gemv_4bit", "gemm_4bit", "linear_4bit",
           "codebook", "quant_map", "nested_code", "kernel_name"]

