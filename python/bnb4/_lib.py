"""The thin binding to libbnb4: finds the shared library, declares the C API of include/bnb4.h with
ctypes, turns non-OK statuses into Python exceptions, and caches CUDA contexts per (device, stream).

Nothing else in the package calls ctypes directly. No compiled extension: the library is loaded in
ctypes' ABI mode, so one wheel works with any Python 3 and the C library can be swapped through
BNB4_LIBRARY.

Where the library is looked for, first hit wins:
  1. the BNB4_LIBRARY environment variable (a path to libbnb4.so / .dylib / bnb4.dll);
  2. next to this package (an installed wheel puts it in bnb4/lib/);
  3. the repository's default build directory, ../../build/ from here (in-tree use after `make`);
  4. the system's library path (ctypes.util.find_library("bnb4")).
"""

import ctypes
import ctypes.util
import os
import sys
import threading

# ---- enums and statuses (include/bnb4.h) ------------------------------------------------------------
FP4 = 1
NF4 = 2
DT_F32, DT_F16, DT_BF16 = 0, 1, 2
DEVICE_CPU, DEVICE_CUDA = 0, 1
OP_QUANTIZE, OP_QUANTIZE_NESTED, OP_DEQUANTIZE, OP_GEMV, OP_GEMM = range(5)

OK = 0
ERR_INVALID_ARGUMENT = 1
ERR_UNSUPPORTED = 2
ERR_OVERFLOW = 3
ERR_OUT_OF_MEMORY = 4
ERR_DEVICE = 5


class CtxParams(ctypes.Structure):
    _fields_ = [("device", ctypes.c_int), ("device_index", ctypes.c_int), ("stream", ctypes.c_void_p),
                ("num_threads", ctypes.c_int)]


class NestedAbsmaxC(ctypes.Structure):
    _fields_ = [("codes", ctypes.c_void_p), ("absmax", ctypes.c_void_p), ("code", ctypes.c_void_p),
                ("offset", ctypes.c_float), ("blocksize", ctypes.c_size_t)]


class QTensorC(ctypes.Structure):
    _fields_ = [("rows", ctypes.c_size_t), ("cols", ctypes.c_size_t), ("blocksize", ctypes.c_size_t),
                ("quant_type", ctypes.c_int), ("packed", ctypes.c_void_p), ("absmax", ctypes.c_void_p),
                ("nested", NestedAbsmaxC)]


def _library_names():
    if sys.platform == "darwin":
        return ["libbnb4.dylib", "libbnb4.0.dylib"]
    if sys.platform == "win32":
        return ["bnb4.dll", "libbnb4.dll"]
    return ["libbnb4.so", "libbnb4.so.0"]


def _candidates():
    env = os.environ.get("BNB4_LIBRARY")
    if env:
        return [env], True
    here = os.path.dirname(os.path.abspath(__file__))
    repo_build = os.path.join(here, os.pardir, os.pardir, "build")
    paths = []
    for folder in (os.path.join(here, "lib"), os.path.join(here, "lib64"), here, repo_build):
        paths += [os.path.join(folder, name) for name in _library_names()]
    found = ctypes.util.find_library("bnb4")
    if found:
        paths.append(found)
    return paths, False


def _cuda_library_dirs():
    """Where the CUDA runtime and cuBLAS a CUDA build of libbnb4 links against may live, when the
    loader's path lacks them: the toolkit, and the nvidia-* wheels torch installs."""
    dirs = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            dirs.append(os.path.join(os.environ[var], "lib64"))
    dirs.append("/usr/local/cuda/lib64")
    for entry in sys.path:
        nvidia = os.path.join(entry or ".", "nvidia")
        if os.path.isdir(nvidia):
            for sub in sorted(os.listdir(nvidia)):
                dirs.append(os.path.join(nvidia, sub, "lib"))
    return [d for d in dirs if os.path.isdir(d)]


def _preload_cuda_libraries(message):
    """Load the CUDA libraries named in a loader error globally, so libbnb4 finds them by soname."""
    loaded = False
    for soname in ("libcudart.so", "libcublasLt.so", "libcublas.so"):
        if soname not in message and not (soname == "libcublasLt.so" and "libcublas.so" in message):
            continue
        for folder in _cuda_library_dirs():
            candidates = sorted(f for f in os.listdir(folder) if f.startswith(soname + "."))
            for name in candidates:
                try:
                    ctypes.CDLL(os.path.join(folder, name), mode=ctypes.RTLD_GLOBAL)
                    loaded = True
                    break
                except OSError:
                    continue
            else:
                continue
            break
    return loaded


def _load():
    paths, from_env = _candidates()
    errors = []
    for path in paths:
        if not from_env and os.sep in path and not os.path.exists(path):
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as e:  # keep looking, but report every reason if nothing loads
            if _preload_cuda_libraries(str(e)):  # a CUDA build whose runtime is not on the loader path
                try:
                    return ctypes.CDLL(path), path
                except OSError as e2:
                    e = e2
            errors.append(f"{path}: {e}")
    where = "BNB4_LIBRARY=" + paths[0] if from_env else "next to the package, in ../../build, or on the library path"
    detail = ("; ".join(errors)) if errors else "not found"
    raise ImportError(
        f"bnb4: cannot load the C library libbnb4 ({where}): {detail}. Install the package with "
        f"`pip install .` from the repository, or build it (`make build`) and set BNB4_LIBRARY to "
        f"build/libbnb4.so.")


lib, library_path = _load()

_P = ctypes.c_void_p
_SZ = ctypes.c_size_t
_I = ctypes.c_int
_F = ctypes.c_float
_QP = ctypes.POINTER(QTensorC)
_FP = ctypes.POINTER(ctypes.c_float)

_SIGNATURES = {
    "bnb4_version_string": (ctypes.c_char_p, []),
    "bnb4_version_number": (ctypes.c_uint, []),
    "bnb4_status_string": (ctypes.c_char_p, [_I]),
    "bnb4_last_error": (ctypes.c_char_p, []),
    "bnb4_ctx_params_default": (None, [ctypes.POINTER(CtxParams)]),
    "bnb4_ctx_create": (_I, [ctypes.POINTER(CtxParams), ctypes.POINTER(_P)]),
    "bnb4_ctx_destroy": (None, [_P]),
    "bnb4_quantize": (_I, [_P, _P, _I, _SZ, _SZ, _I, _P, _P]),
    "bnb4_nested_offset": (_I, [_P, _P, _SZ, _FP]),
    "bnb4_quantize_nested": (_I, [_P, _P, _SZ, _F, _SZ, _P, _P]),
    "bnb4_dequantize_nested": (_I, [_P, _QP, _P]),
    "bnb4_nested_code": (_FP, []),
    "bnb4_dequantize": (_I, [_P, _QP, _I, _P]),
    "bnb4_gemv": (_I, [_P, _QP, _I, _P, _P, _P]),
    "bnb4_gemm": (_I, [_P, _QP, _I, _SZ, _P, _P, _P]),
    "bnb4_linear": (_I, [_P, _QP, _I, _SZ, _P, _P, _P]),
    "bnb4_blocksize_supported": (_I, [_SZ]),
    "bnb4_codebook": (_FP, [_I]),
    "bnb4_quant_map": (_FP, [_I]),
    "bnb4_qtensor_validate": (_I, [_QP]),
    "bnb4_kernel_name": (ctypes.c_char_p, [_P, _I, _I, _SZ]),
    "bnb4_cpu_features": (ctypes.c_char_p, []),
    "bnb4_cuda_device_count": (_I, []),
}
for _name, (_res, _args) in _SIGNATURES.items():
    _fn = getattr(lib, _name)
    _fn.restype = _res
    _fn.argtypes = _args


def last_error():
    """The C library's detailed message for the calling thread's last failure."""
    return lib.bnb4_last_error().decode("utf-8", "replace")


def status_string(status):
    return lib.bnb4_status_string(status).decode()


def check(status):
    """Raise for a non-OK status: ValueError for bad arguments/unsupported/overflow, MemoryError for
    out of memory, RuntimeError for device errors. The message is bnb4_last_error()."""
    if status == OK:
        return
    msg = f"{last_error()} [{status_string(status)}]"
    if status in (ERR_INVALID_ARGUMENT, ERR_UNSUPPORTED, ERR_OVERFLOW):
        err = ValueError(msg)
    elif status == ERR_OUT_OF_MEMORY:
        err = MemoryError(msg)
    else:
        err = RuntimeError(msg)
    err.status = status
    raise err


def table(ptr, count):
    """Copy `count` floats from a C pointer into a Python list."""
    return [ptr[i] for i in range(count)]


# ---- contexts --------------------------------------------------------------------------------------
# CPU work uses the NULL context (all cores). CUDA work needs one context per (device, stream); a
# context must not be used by two threads at once, so the cache is per thread. Contexts are not
# destroyed at exit on purpose: the CUDA runtime may already be torn down by then.
_tls = threading.local()


def cuda_context(device_index, stream):
    cache = getattr(_tls, "cuda_contexts", None)
    if cache is None:
        cache = _tls.cuda_contexts = {}
    key = (int(device_index), int(stream or 0))
    ctx = cache.get(key)
    if ctx is None:
        params = CtxParams()
        lib.bnb4_ctx_params_default(ctypes.byref(params))
        params.device = DEVICE_CUDA
        params.device_index = key[0]
        params.stream = key[1] or None
        handle = ctypes.c_void_p()
        check(lib.bnb4_ctx_create(ctypes.byref(params), ctypes.byref(handle)))
        ctx = cache[key] = handle.value
    return ctx
