"""Array adapters: one small interface over numpy arrays and torch tensors, so every op is written
once. An op takes the "kind" of its main input (numpy, or torch on one device), makes the other
arrays contiguous, allocates its outputs of the same kind on the same device, and runs the C call
in that kind's context (the NULL CPU context, or a CUDA context on the tensor's device and the
current torch stream).

torch is never imported here: a torch tensor can only exist if the caller imported torch, so it is
looked up in sys.modules. numpy has no bfloat16; ml_dtypes' bfloat16 is used when installed.
"""

import contextlib
import sys

import numpy as np

from . import _lib

try:  # optional: numpy bfloat16 arrays
    import ml_dtypes as _ml_dtypes
    _NP_BF16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    _ml_dtypes = None
    _NP_BF16 = None

DTYPE_NAMES = {_lib.DT_F32: "float32", _lib.DT_F16: "float16", _lib.DT_BF16: "bfloat16"}
_NAME_TO_CODE = {"float32": _lib.DT_F32, "float": _lib.DT_F32, "f32": _lib.DT_F32, "fp32": _lib.DT_F32,
                 "float16": _lib.DT_F16, "half": _lib.DT_F16, "f16": _lib.DT_F16, "fp16": _lib.DT_F16,
                 "bfloat16": _lib.DT_BF16, "bf16": _lib.DT_BF16}


def _torch():
    return sys.modules.get("torch")


def resolve_dtype(spec, what="dtype"):
    """A bnb4 dtype code (0 f32, 1 f16, 2 bf16) from a name, numpy/ml_dtypes dtype or torch dtype."""
    torch = _torch()
    if isinstance(spec, str):
        name = spec.lower()
        if name.startswith("torch."):
            name = name[len("torch."):]
    elif torch is not None and isinstance(spec, torch.dtype):
        name = str(spec)[len("torch."):]
    else:
        try:
            name = np.dtype(spec).name
        except TypeError:
            name = repr(spec)
    code = _NAME_TO_CODE.get(name)
    if code is None:
        raise ValueError(f"bnb4: {what} {spec!r} is not supported (float32, float16 or bfloat16)")
    return code


class _NumpyKind:
    name = "numpy"
    device = "cpu"

    def describe(self):
        return "a numpy array"

    def contiguous(self, x):
        return np.ascontiguousarray(x)

    def ptr(self, x):
        return x.ctypes.data

    def numel(self, x):
        return int(x.size)

    def dtype_code(self, x):
        if x.dtype == np.float32:
            return _lib.DT_F32
        if x.dtype == np.float16:
            return _lib.DT_F16
        if _NP_BF16 is not None and x.dtype == _NP_BF16:
            return _lib.DT_BF16
        return None

    def dtype_name(self, x):
        return str(x.dtype)

    def is_uint8(self, x):
        return x.dtype == np.uint8

    def is_float32(self, x):
        return x.dtype == np.float32

    def np_dtype(self, code):
        if code == _lib.DT_BF16:
            if _NP_BF16 is None:
                raise ValueError("bnb4: bfloat16 numpy arrays need the ml_dtypes package (pip install ml_dtypes)")
            return _NP_BF16
        return np.dtype(np.float32 if code == _lib.DT_F32 else np.float16)

    def empty(self, shape, code):
        return np.empty(shape, dtype=self.np_dtype(code))

    def empty_bytes(self, shape):
        return np.empty(shape, dtype=np.uint8)

    def empty_f32(self, shape):
        return np.empty(shape, dtype=np.float32)

    def zeros_bytes(self, n):
        return np.zeros(n, dtype=np.uint8)

    def astype(self, x, code):
        return np.ascontiguousarray(x, dtype=self.np_dtype(code))

    def as_bytes(self, x):
        """The bytes of x (any dtype) as a contiguous 1-D uint8 array."""
        return np.ascontiguousarray(x).reshape(-1).view(np.uint8)

    def storage_dtype(self, storage):
        """(dtype, itemsize) of a quant_storage given as a name or numpy/ml_dtypes dtype."""
        name = storage if isinstance(storage, str) else None
        try:
            dt = _NP_BF16 if name == "bfloat16" else np.dtype(storage)
        except TypeError:
            dt = None
        if dt is None or dt.name not in ("uint8", "float16", "bfloat16", "float32"):
            raise ValueError(f"bnb4: quant_storage {storage!r} is not uint8, float16, bfloat16 or float32"
                             + (" (bfloat16 needs ml_dtypes)" if name == "bfloat16" else ""))
        return dt, dt.itemsize

    def view_storage(self, flat_bytes, storage):
        """Reinterpret contiguous 1-D bytes as the dtype `storage` (from storage_dtype)."""
        return flat_bytes.view(storage)

    def f32_from(self, values):
        return np.asarray(values, dtype=np.float32)

    def to_host_bytes(self, x):
        return np.ascontiguousarray(x).reshape(-1).view(np.uint8).tobytes()

    def concat_bytes(self, a, b):
        return np.concatenate([a, b])

    @contextlib.contextmanager
    def run(self, x):
        yield None  # the NULL context: CPU, all cores


class _TorchKind:
    name = "torch"

    def __init__(self, device):
        self.device = device

    def describe(self):
        return f"a torch tensor on {self.device}"

    def _t(self):
        return _torch()

    def contiguous(self, x):
        return x.detach().contiguous()

    def ptr(self, x):
        return x.data_ptr()

    def numel(self, x):
        return int(x.numel())

    def dtype_code(self, x):
        torch = self._t()
        return {torch.float32: _lib.DT_F32, torch.float16: _lib.DT_F16, torch.bfloat16: _lib.DT_BF16}.get(x.dtype)

    def dtype_name(self, x):
        return str(x.dtype)

    def is_uint8(self, x):
        return x.dtype == self._t().uint8

    def is_float32(self, x):
        return x.dtype == self._t().float32

    def torch_dtype(self, code):
        torch = self._t()
        return (torch.float32, torch.float16, torch.bfloat16)[code]

    def empty(self, shape, code):
        return self._t().empty(shape, dtype=self.torch_dtype(code), device=self.device)

    def empty_bytes(self, shape):
        torch = self._t()
        return torch.empty(shape, dtype=torch.uint8, device=self.device)

    def empty_f32(self, shape):
        torch = self._t()
        return torch.empty(shape, dtype=torch.float32, device=self.device)

    def zeros_bytes(self, n):
        torch = self._t()
        return torch.zeros(n, dtype=torch.uint8, device=self.device)

    def astype(self, x, code):
        return x.detach().to(self.torch_dtype(code)).contiguous()

    def as_bytes(self, x):
        torch = self._t()
        x = x.detach().contiguous().reshape(-1)
        return x if x.dtype == torch.uint8 else x.view(torch.uint8)

    def storage_dtype(self, storage):
        torch = self._t()
        names = {"uint8": torch.uint8, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "float32": torch.float32}
        dt = names.get(storage.replace("torch.", "")) if isinstance(storage, str) else storage
        if dt not in names.values():
            raise ValueError(f"bnb4: quant_storage {storage!r} is not uint8, float16, bfloat16 or float32")
        return dt, dt.itemsize

    def view_storage(self, flat_bytes, storage):
        return flat_bytes.view(storage)

    def f32_from(self, values):
        torch = self._t()
        return torch.tensor(list(values), dtype=torch.float32, device=self.device)

    def to_host_bytes(self, x):
        return self.as_bytes(x).cpu().numpy().tobytes()

    def concat_bytes(self, a, b):
        return self._t().cat([a, b])

    @contextlib.contextmanager
    def run(self, x):
        torch = self._t()
        if self.device.type != "cuda":
            yield None
            return
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(index).cuda_stream
        ctx = _lib.cuda_context(index, stream)
        if torch.cuda.current_device() == index:
            yield ctx
        else:
            with torch.cuda.device(index):
                yield ctx


_NUMPY = _NumpyKind()


def kind_of(x, what="input"):
    """The adapter for x, or ValueError if x is neither a numpy array nor a torch tensor."""
    if isinstance(x, np.ndarray):
        return _NUMPY
    torch = _torch()
    if torch is not None and isinstance(x, torch.Tensor):
        if x.device.type not in ("cpu", "cuda"):
            raise ValueError(f"bnb4: {what} is on device {x.device}; bnb4 runs on cpu and cuda tensors")
        return _TorchKind(x.device)
    raise ValueError(f"bnb4: {what} must be a numpy array or a torch tensor, got {type(x).__name__}")


def same_kind(kind, x, what):
    """Check that x is of the same kind (and device) as the op's main input."""
    other = kind_of(x, what)
    if other.name != kind.name or str(other.device) != str(kind.device):
        raise ValueError(f"bnb4: {what} is {other.describe()}, but the input is {kind.describe()}; "
                         f"pass every array of one call as the same kind on the same device")
    return other
