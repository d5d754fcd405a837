"""bnb4: 4-bit NF4/FP4 blockwise quantization in the bitsandbytes format, on numpy arrays and torch
tensors (CPU and CUDA), through the C library libbnb4 (loaded with ctypes; no compiled extension).

The top level is the API of the seed project, bitsandbytes-mps (same names, argument order, defaults
and return shapes), without its bugs:

    import bnb4
    packed, absmax = bnb4.quantize_4bit(w, blocksize=64, quant_type=bnb4.NF4)     # w: [N, K]
    y = bnb4.linear_4bit(x, packed, absmax, output_features=N, bias=b)           # x: [..., K]
    w2 = bnb4.dequantize_4bit(packed, absmax, numel=w.size, output_dtype="float32")

Also: QuantizedTensor (plain or double-quantized absmax, to/from bitsandbytes state_dicts),
double_quantize, codebook/quant_map/nested_code tables, kernel_name, and
bnb4.bitsandbytes_backend.register() which runs bitsandbytes' 4-bit ops on bnb4's kernels.
"""

from . import _lib
from ._api import (FP4, NF4, codebook, dequantize_4bit, gemm_4bit, gemv_4bit, kernel_name, linear_4bit,
                   nested_code, quant_map, quantize_4bit)
from .quantized import NestedAbsmax, QuantizedTensor, double_quantize

__version__ = "0.1.0"

#: The dtype names output_dtype accepts (numpy users: bfloat16 needs ml_dtypes).
float32, float16, bfloat16 = "float32", "float16", "bfloat16"

library_path = _lib.library_path


def library_version():
    """The version string of the loaded libbnb4."""
    return _lib.lib.bnb4_version_string().decode()


def cpu_features():
    """CPU features libbnb4 detected at run time (space-separated)."""
    return _lib.lib.bnb4_cpu_features().decode()


def cuda_device_count():
    """Usable CUDA devices for libbnb4 (0 when it was built without CUDA)."""
    return int(_lib.lib.bnb4_cuda_device_count())


def last_error():
    """The C library's message for this thread's last failure (also in every raised exception)."""
    return _lib.last_error()


__all__ = ["FP4", "NF4", "quantize_4bit", "dequantize_4bit", "gemv_4bit", "gemm_4bit", "linear_4bit",
           "QuantizedTensor", "NestedAbsmax", "double_quantize", "codebook", "quant_map", "nested_code",
           "kernel_name", "library_version", "library_path", "cpu_features", "cuda_device_count", "last_error",
           "float32", "float16", "bfloat16"]
