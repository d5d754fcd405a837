"""Run bitsandbytes' 4-bit ops on bnb4's kernels.

bitsandbytes routes its 4-bit work through torch custom ops ("bitsandbytes::quantize_4bit",
"dequantize_4bit", "gemv_4bit", "gemm_4bit" and the ".out" overloads) and registers one kernel per
device type for each (its MPS backend plugs the seed in this way). register() registers bnb4's
kernels for the same ops on "cpu" and "cuda", so bitsandbytes.nn.Linear4bit, bnb.matmul_4bit and
transformers models loaded with BitsAndBytesConfig(load_in_4bit=True) run on bnb4:

    import bnb4.bitsandbytes_backend as backend
    backend.register()            # or: with backend.enabled(): ...
    ...                           # bitsandbytes now calls bnb4 for 4-bit quantize/dequantize/matmul
    backend.unregister()          # bitsandbytes' own kernels are active again

The torch dispatcher keeps earlier kernels under ours, so unregister() restores bitsandbytes' own.
Ops bnb4 does not implement (8-bit blockwise quantization used for double quantization, int8,
optimizers) stay with bitsandbytes. CUDA tensors run on their device and the current torch stream.

Two things bitsandbytes does around these ops that register() accounts for:
- On CPUs with AVX512-BF16, Linear4bit rewrites its weight into a private CPU layout before its
  first inference forward and then calls gemv_4bit with it. While bnb4 is registered on "cpu",
  modules created afterwards skip that rewrite; a module that already did it gets a clear error.
- A nested (double-quantized) gemm passes its offset as a 0-dim tensor. The C library takes it by
  value, so it is read once per offset tensor (cached while the tensor lives and is unmodified)
  instead of forcing a device synchronisation on every call.
"""

import contextlib
import ctypes
import threading
import warnings
import weakref

from . import _lib
from ._api import FP4, NF4, blocks, make_qtensor
from ._api import quant_map as _quant_map_table

_OPS = ("quantize_4bit", "dequantize_4bit", "dequantize_4bit.out", "gemv_4bit", "gemv_4bit.out", "gemm_4bit")
_DISPATCH_KEYS = {"cpu": "CPU", "cuda": "CUDA"}
_QT = {"nf4": NF4, "fp4": FP4}

_lock = threading.Lock()
_registered = {"lib": None, "devices": (), "patch": None}


_TORCH = []


def _torch():
    """torch, imported on first use (an import statement per call costs more than the rest of a check)."""
    if not _TORCH:
        import torch
        _TORCH.append(torch)
    return _TORCH[0]


_DTYPE_CODES = {}


def _dtype_code(t, what):
    if not _DTYPE_CODES:
        torch = _torch()
        _DTYPE_CODES.update({torch.float32: _lib.DT_F32, torch.float16: _lib.DT_F16, torch.bfloat16: _lib.DT_BF16})
    code = _DTYPE_CODES.get(t)
    if code is None:
        raise ValueError(f"bnb4: {what} dtype {t} is not float32, float16 or bfloat16")
    return code


def _quant_type(quant_type):
    qt = _QT.get(quant_type)
    if qt is None:
        raise ValueError(f"bnb4: quant_type must be 'nf4' or 'fp4', got {quant_type!r}")
    return qt


def _packed_bytes(B, n):
    """A contiguous tensor whose memory starts with the ceil(n/2) packed bytes of B (any storage
    dtype); B itself when it already is one (the usual case: no copy, only its pointer is used).
    bitsandbytes' storage can be a byte short for non-uint8 quant_storage (its CUDA kernel writes past
    it); the missing byte is read as 0 here instead of out of bounds."""
    need = (n + 1) // 2
    if not B.is_contiguous():
        B = B.contiguous()
    have = B.numel() * B.element_size()
    if have >= need:
        return B
    torch = _torch()
    flat = B.reshape(-1).view(torch.uint8)
    return torch.cat([flat, torch.zeros(need - have, dtype=torch.uint8, device=flat.device)])


def _absmax_f32(absmax, nblocks, what="absmax"):
    if absmax.dtype != _torch().float32:
        hint = ""
        if absmax.dtype == _torch().bfloat16:
            hint = (" (this is bitsandbytes' AVX512-BF16 CPU weight layout: the Linear4bit ran an inference "
                    "forward on bitsandbytes' kernels before bnb4 was registered; register bnb4 before the "
                    "first forward, or set module.support_avx512bf16_for_cpu = False)")
        raise ValueError(f"bnb4: {what} must be float32, got {absmax.dtype}{hint}")
    if absmax.numel() < nblocks:
        raise ValueError(f"bnb4: {what} holds {absmax.numel()} values, {nblocks} blocks are needed")
    return absmax if absmax.is_contiguous() else absmax.contiguous()


# Host copies of small device tensors, keyed by the tensor object itself (weak reference + version
# counter), so a freed tensor whose memory is reused can never hit a stale entry.
_host_cache = {}
_host_cache_lock = threading.Lock()


def _cached_host(t, compute):
    key = id(t)
    with _host_cache_lock:
        hit = _host_cache.get(key)
        if hit is not None and hit[0]() is t and hit[1] == t._version:
            return hit[2]
    value = compute(t)
    try:
        ref = weakref.ref(t, lambda _r, key=key: _host_cache.pop(key, None))
    except TypeError:  # not weak-referenceable: do not cache
        return value
    with _host_cache_lock:
        _host_cache[key] = (ref, t._version, value)
    return value


def _offset_value(offset):
    torch = _torch()
    if offset.numel() != 1:
        raise ValueError(f"bnb4: absmax_offset must be a scalar, got shape {tuple(offset.shape)}")
    return _cached_host(offset, lambda t: float(t.detach().to(torch.float32).cpu().reshape(())))


def _code_quant_type(code):
    """NF4 or FP4 from a 16-entry quant_map tensor (what the legacy gemv_4bit op receives)."""

    def classify(t):
        values = t.detach().float().cpu().reshape(-1).tolist()
        if len(values) == 16:
            for qt in (NF4, FP4):
                if all(abs(a - b) <= 1e-6 for a, b in zip(values, _quant_map_table(qt))):
                    return qt
        raise ValueError("bnb4: gemv_4bit got a code table that is neither bitsandbytes' NF4 nor FP4 map")

    return _cached_host(code, classify)


# Read once, at the first CUDA call: "gpus" (torch.cuda.device_count()) and "raw_stream" (torch's raw
# current-stream getter, what bitsandbytes itself uses; None where this torch has none).
_CUDA = {}


class _Guard:
    """Makes t's device current for the call when several GPUs exist (bitsandbytes does the same);
    a no-op otherwise, and on CPU."""
    __slots__ = ("index", "previous")

    def __init__(self, index):
        self.index = index
        self.previous = None

    def __enter__(self):
        if self.index is not None:
            torch = _torch()
            self.previous = torch.cuda.current_device()
            if self.previous != self.index:
                torch.cuda.set_device(self.index)

    def __exit__(self, *exc):
        if self.previous is not None and self.previous != self.index:
            _torch().cuda.set_device(self.previous)


_NO_GUARD = _Guard(None)


def _context(t, device=None):
    """(bnb4 context, device guard) for tensor t (on `device`, where the caller has it already): the NULL
    CPU context, or the CUDA context of t's device and torch's current stream there."""
    if device is None:
        device = t.device
    if device.type != "cuda":
        return None, _NO_GUARD
    torch = _torch()
    index = device.index if device.index is not None else torch.cuda.current_device()
    if not _CUDA:
        _CUDA.update(gpus=torch.cuda.device_count(), raw_stream=getattr(torch._C, "_cuda_getCurrentRawStream", None))
    raw_stream = _CUDA["raw_stream"]
    stream = raw_stream(index) if raw_stream else torch.cuda.current_stream(index).cuda_stream
    return _lib.cuda_context(index, stream), (_Guard(index) if _CUDA["gpus"] > 1 else _NO_GUARD)


# The bnb4_qtensor views of recent calls: a view holds only sizes, pointers and the offset, so one
# whose key (all of them) matches is the same view. Saves rebuilding a ctypes struct per call.
_views = {}


def _view(key):
    q = _views.get(key)
    if q is None:
        if len(_views) > 4096:
            _views.clear()
        n_out, k, blocksize, qt, packed_ptr, absmax_ptr, nested = key
        q = _views[key] = ctypes.byref(make_qtensor(n_out, k, blocksize, qt, packed_ptr, absmax_ptr, nested))
    return q


# ---- the kernels --------------------------------------------------------------------------------------

def _quantize_4bit(A, blocksize, quant_type, quant_storage):
    torch = _torch()
    dt = _dtype_code(A.dtype, "A")
    qt = _quant_type(quant_type)
    A = A.contiguous()
    n = A.numel()
    itemsize = quant_storage.itemsize
    elems = (n + 1) // (2 * itemsize)
    nbytes = (n + 1) // 2
    buf = torch.empty(-(-max(nbytes, 1) // itemsize) * itemsize, dtype=torch.uint8, device=A.device)
    absmax = torch.empty(blocks(n, blocksize), dtype=torch.float32, device=A.device)
    if n:
        ctx, guard = _context(A)
        with guard:
            _lib.check(_lib.lib.bnb4_quantize(ctx, A.data_ptr(), dt, n, blocksize, qt, buf.data_ptr(),
                                              absmax.data_ptr()))
    packed = buf[: elems * itemsize]
    if quant_storage != torch.uint8:
        packed = packed.view(quant_storage)
    return packed.reshape(elems, 1), absmax


def _dequantize_into(A, absmax, blocksize, quant_type, n, out):
    dt = _dtype_code(out.dtype, "output")
    qt = _quant_type(quant_type)
    if n == 0:
        return
    packed = _packed_bytes(A, n)
    am = _absmax_f32(absmax, blocks(n, blocksize))
    q = make_qtensor(1, n, blocksize, qt, packed.data_ptr(), am.data_ptr())
    ctx, guard = _context(packed)
    with guard:
        _lib.check(_lib.lib.bnb4_dequantize(ctx, ctypes.byref(q), dt, out.data_ptr()))


def _dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype):
    torch = _torch()
    out = torch.empty(tuple(shape), dtype=dtype, device=A.device)
    _dequantize_into(A, absmax, blocksize, quant_type, out.numel(), out)
    return out


def _dequantize_4bit_out(A, absmax, blocksize, quant_type, shape, dtype, out):
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"bnb4: out must have shape {tuple(shape)} and dtype {dtype}, got "
                         f"{tuple(out.shape)} {out.dtype}")
    if out.is_contiguous():
        _dequantize_into(A, absmax, blocksize, quant_type, out.numel(), out)
    else:
        out.copy_(_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype))


def _matmul(A, B, shapeB, absmax, blocksize, qt, bias=None, absmax_8bit=None, absmax_code=None,
            absmax_offset=None):
    """out[..., N] = A[..., K] W^T (+ bias) for W of shape shapeB = [N, K], every row of A."""
    torch = _torch()
    if len(shapeB) != 2:
        raise ValueError(f"bnb4: shapeB must be [N, K], got {list(shapeB)}")
    n_out, k = int(shapeB[0]), int(shapeB[1])
    if A.shape[-1] != k:
        raise ValueError(f"bnb4: A's inner dimension {A.shape[-1]} does not match the weight's K = {k}")
    dt = _dtype_code(A.dtype, "A")
    if not A.is_contiguous():
        A = A.contiguous()
    device = A.device
    out = torch.empty((*A.shape[:-1], n_out), dtype=A.dtype, device=device)
    m = A.numel() // k if k else 0
    if m == 0 or n_out == 0:
        return out
    n = n_out * k
    nb = blocks(n, blocksize)
    packed = _packed_bytes(B, n)
    bias_ptr = None
    if bias is not None:
        if bias.numel() != n_out:
            raise ValueError(f"bnb4: bias has {bias.numel()} values, N = {n_out}")
        if bias.dtype != A.dtype or not bias.is_contiguous():
            bias = bias.to(A.dtype).contiguous()
        bias_ptr = bias.data_ptr()
    if absmax_8bit is not None:
        if absmax_code is None or absmax_offset is None:
            raise ValueError("bnb4: absmax_8bit needs absmax_code and absmax_offset")
        if absmax_8bit.dtype != torch.uint8 or absmax_8bit.numel() != nb:
            raise ValueError(f"bnb4: absmax_8bit must be uint8 with {nb} codes, got {absmax_8bit.dtype} "
                             f"with {absmax_8bit.numel()}")
        codes = absmax_8bit if absmax_8bit.is_contiguous() else absmax_8bit.contiguous()
        code = _absmax_f32(absmax_code, 256, "absmax_code")
        nested_absmax = _absmax_f32(absmax, blocks(nb, 256), "absmax")
        q = _view((n_out, k, blocksize, qt, packed.data_ptr(), None,
                   (codes.data_ptr(), nested_absmax.data_ptr(), code.data_ptr(), _offset_value(absmax_offset), 256)))
    else:
        am = _absmax_f32(absmax, nb)
        q = _view((n_out, k, blocksize, qt, packed.data_ptr(), am.data_ptr(), None))
    ctx, guard = _context(A, device)
    if guard is _NO_GUARD:  # (one GPU, or the CPU: no device switch around the call)
        status = _lib.lib.bnb4_linear(ctx, q, dt, m, A.data_ptr(), bias_ptr, out.data_ptr())
    else:
        with guard:
            status = _lib.lib.bnb4_linear(ctx, q, dt, m, A.data_ptr(), bias_ptr, out.data_ptr())
    if status:
        _lib.check(status)
    return out


def _gemv_4bit(A, B, shapeB, absmax, code, blocksize):
    return _matmul(A, B, shapeB, absmax, blocksize, _code_quant_type(code))


def _gemv_4bit_out(A, B, shapeB, absmax, code, blocksize, out):
    expected = (*A.shape[:-1], shapeB[0])
    if tuple(out.shape) != tuple(expected) or out.dtype != A.dtype:
        raise ValueError(f"bnb4: out must have shape {tuple(expected)} and dtype {A.dtype}")
    out.copy_(_gemv_4bit(A, B, shapeB, absmax, code, blocksize))


def _gemm_4bit(A, B, shapeB, absmax, blocksize, quant_type, bias=None, absmax_8bit=None, absmax_code=None,
               absmax_offset=None):
    return _matmul(A, B, shapeB, absmax, blocksize, _quant_type(quant_type), bias, absmax_8bit, absmax_code,
                   absmax_offset)


_KERNELS = {
    "quantize_4bit": _quantize_4bit,
    "dequantize_4bit": _dequantize_4bit,
    "dequantize_4bit.out": _dequantize_4bit_out,
    "gemv_4bit": _gemv_4bit,
    "gemv_4bit.out": _gemv_4bit_out,
    "gemm_4bit": _gemm_4bit,
}


# ---- registration ---------------------------------------------------------------------------------------

def _impl(lib, name, fn, key):
    torch = _torch()
    if hasattr(torch, "_disable_dynamo"):  # as torch.library.register_kernel does
        fn = torch._disable_dynamo(fn)
    try:
        with warnings.catch_warnings():  # the dispatcher warns that we override bitsandbytes' kernel: intended
            warnings.filterwarnings("ignore", message=r"(?s).*Overriding a previously registered kernel")
            lib.impl(name, fn, key, allow_override=True)
    except TypeError:  # torch without allow_override: drop the Python-side duplicate guard for this key
        import torch.library as tl
        tl._impls.discard(f"bitsandbytes/{name}/{key}")
        lib.impl(name, fn, key)


def register(devices=("cpu", "cuda")):
    """Register bnb4's kernels for bitsandbytes' 4-bit ops on the given device types ("cpu", "cuda").
    Calling it again replaces the previous registration."""
    devices = tuple(devices)
    for d in devices:
        if d not in _DISPATCH_KEYS:
            raise ValueError(f"bnb4: device type {d!r} is not one of {sorted(_DISPATCH_KEYS)}")
    try:
        import bitsandbytes  # defines the ops and registers its own kernels first
    except ImportError as e:
        raise ImportError(f"bnb4.bitsandbytes_backend needs bitsandbytes installed: {e}") from e
    torch = _torch()
    with _lock:
        _unregister_locked()
        lib = torch.library.Library("bitsandbytes", "IMPL")
        for d in devices:
            for name in _OPS:
                _impl(lib, name, _KERNELS[name], _DISPATCH_KEYS[d])
        patch = None
        if "cpu" in devices:
            modules = getattr(getattr(bitsandbytes, "nn", None), "modules", None)
            if modules is not None and hasattr(modules, "has_avx512bf16"):
                patch = (modules, modules.has_avx512bf16)
                modules.has_avx512bf16 = lambda: False
        _registered.update(lib=lib, devices=devices, patch=patch)


def _unregister_locked():
    lib = _registered["lib"]
    if lib is not None:
        lib._destroy()
    if _registered["patch"] is not None:
        modules, original = _registered["patch"]
        modules.has_avx512bf16 = original
    _registered.update(lib=None, devices=(), patch=None)


def unregister():
    """Remove bnb4's kernels; bitsandbytes' own become active again. A no-op when not registered."""
    with _lock:
        _unregister_locked()


def registered_devices():
    """The device types bnb4 is registered on, () when it is not."""
    return _registered["devices"]


@contextlib.contextmanager
def enabled(devices=("cpu", "cuda")):
    """Run bitsandbytes' 4-bit ops on bnb4 inside a with-block, then restore what was there before."""
    previous = registered_devices()
    register(devices)
    try:
        yield
    finally:
        if previous:
            register(previous)
        else:
            unregister()


__all__ = ["register", "unregister", "registered_devices", "enabled"]
