"""The seed's own test suite (bitsandbytes-mps tests/test_bnb_mps.py), ported case for case with its
sizes, parameters and tolerances (format.md section 8), on numpy arrays, torch CPU and torch CUDA
tensors (the `kind` fixture). The data is fresh random data (see conftest's seed), not the seed's
fixed torch.manual_seed streams.

  roundtrip          n=1024 randn, bs {64,128} x {NF4,FP4} x {f16,bf16}: shapes, dtypes, cosine > 0.95
  dequant reference  n=256 f16 NF4, bs {64,128}: matches codebook[nibble]*absmax, rtol=atol=1e-3
  gemv               N=K=256 f16, bs {64,128} x {NF4,FP4}: mean|y-ref|/mean|ref| < 0.05
  gemm               M=8, N=K=128, same grid and metric
  linear_4bit        N=K=128, bs 64, NF4: x [K] -> (N,), x [4, K] -> (4, N)
"""

import numpy as np
import pytest

import bnb4
import reference as ref


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("quant_type", [bnb4.NF4, bnb4.FP4], ids=["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [64, 128])
def test_quantize_dequantize_roundtrip(kind, rng, blocksize, quant_type, dtype):
    n = 1024
    x = kind.arr(rng.standard_normal(n), dtype)
    packed, absmax = bnb4.quantize_4bit(x, blocksize=blocksize, quant_type=quant_type)
    assert tuple(packed.shape) == (n // 2,)
    assert kind.dtype_name(packed) == "uint8"
    assert kind.dtype_name(absmax) == "float32"
    assert tuple(absmax.shape) == ((n + blocksize - 1) // blocksize,)

    x_deq = bnb4.dequantize_4bit(packed, absmax, blocksize=blocksize, quant_type=quant_type, numel=n,
                                 output_dtype=kind.dtype(dtype))
    assert tuple(x_deq.shape) == (n,)
    assert kind.dtype_name(x_deq) == dtype
    a, b = kind.np(x).astype(np.float64), kind.np(x_deq).astype(np.float64)
    cosine = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cosine > 0.95, f"cosine similarity {cosine}"


@pytest.mark.parametrize("blocksize", [64, 128])
def test_dequantize_matches_reference(kind, rng, blocksize):
    n = 256
    x = kind.arr(rng.standard_normal(n), "float16")
    packed, absmax = bnb4.quantize_4bit(x, blocksize=blocksize, quant_type=bnb4.NF4)
    x_deq = bnb4.dequantize_4bit(packed, absmax, blocksize=blocksize, quant_type=bnb4.NF4, numel=n,
                                 output_dtype=kind.dtype("float16"))
    expected = ref.dequantize(kind.np(packed), kind.np(absmax), blocksize, ref.NF4, n)
    np.testing.assert_allclose(kind.np(x_deq), expected, rtol=1e-3, atol=1e-3)


def _relative_error(y, y_ref):
    y, y_ref = np.asarray(y, np.float64), np.asarray(y_ref, np.float64)
    return np.abs(y - y_ref).mean() / np.abs(y_ref).mean()


@pytest.mark.parametrize("quant_type", [bnb4.NF4, bnb4.FP4], ids=["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [64, 128])
def test_gemv_correctness(kind, rng, blocksize, quant_type):
    n_out, k = 256, 256
    w = kind.arr(rng.standard_normal((n_out, k)), "float16")
    packed, absmax = bnb4.quantize_4bit(w.reshape(-1), blocksize=blocksize, quant_type=quant_type)
    x = kind.arr(rng.standard_normal(k), "float16")
    y = bnb4.gemv_4bit(x, packed.reshape(n_out, k // 2), absmax.reshape(n_out, -1), output_features=n_out,
                       blocksize=blocksize, quant_type=quant_type)
    w_deq = bnb4.dequantize_4bit(packed, absmax, blocksize=blocksize, quant_type=quant_type, numel=n_out * k,
                                 output_dtype=kind.dtype("float16"))
    # the seed's reference: an f16 matmul of the dequantized weight, here in float64 of the same values
    y_ref = kind.np(w_deq).reshape(n_out, k).astype(np.float64) @ kind.np(x).astype(np.float64)
    assert tuple(y.shape) == (n_out,)
    assert _relative_error(kind.np(y), y_ref) < 0.05


@pytest.mark.parametrize("quant_type", [bnb4.NF4, bnb4.FP4], ids=["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [64, 128])
def test_gemm_correctness(kind, rng, blocksize, quant_type):
    m, n_out, k = 8, 128, 128
    w = kind.arr(rng.standard_normal((n_out, k)), "float16")
    packed, absmax = bnb4.quantize_4bit(w.reshape(-1), blocksize=blocksize, quant_type=quant_type)
    x = kind.arr(rng.standard_normal((m, k)), "float16")
    y = bnb4.gemm_4bit(x, packed.reshape(n_out, k // 2), absmax.reshape(n_out, -1), output_features=n_out,
                       blocksize=blocksize, quant_type=quant_type)
    w_deq = bnb4.dequantize_4bit(packed, absmax, blocksize=blocksize, quant_type=quant_type, numel=n_out * k,
                                 output_dtype=kind.dtype("float16"))
    y_ref = kind.np(x).astype(np.float64) @ kind.np(w_deq).reshape(n_out, k).astype(np.float64).T
    assert tuple(y.shape) == (m, n_out)
    assert _relative_error(kind.np(y), y_ref) < 0.05


def test_linear_4bit_auto_select(kind, rng):
    n_out, k = 128, 128
    w = kind.arr(rng.standard_normal((n_out, k)), "float16")
    packed, absmax = bnb4.quantize_4bit(w.reshape(-1), blocksize=64, quant_type=bnb4.NF4)
    packed_w, absmax_w = packed.reshape(n_out, k // 2), absmax.reshape(n_out, -1)
    y = bnb4.linear_4bit(kind.arr(rng.standard_normal(k), "float16"), packed_w, absmax_w, output_features=n_out)
    assert tuple(y.shape) == (n_out,)
    y = bnb4.linear_4bit(kind.arr(rng.standard_normal((4, k)), "float16"), packed_w, absmax_w, output_features=n_out)
    assert tuple(y.shape) == (4, n_out)


def test_api_is_the_seeds():
    """Names, argument order and defaults of the seed's bitsandbytes_mps module."""
    import inspect
    assert (bnb4.FP4, bnb4.NF4) == (1, 2)
    expected = {
        "quantize_4bit": [("input", None), ("blocksize", 64), ("quant_type", 2)],
        "dequantize_4bit": [("packed", None), ("absmax", None), ("blocksize", 64), ("quant_type", 2),
                            ("numel", -1), ("output_dtype", "float16")],
        "gemv_4bit": [("x", None), ("w", None), ("absmax", None), ("output_features", None), ("blocksize", 64),
                      ("quant_type", 2)],
        "gemm_4bit": [("x", None), ("w", None), ("absmax", None), ("output_features", None), ("blocksize", 64),
                      ("quant_type", 2)],
        "linear_4bit": [("x", None), ("w", None), ("absmax", None), ("output_features", None), ("blocksize", 64),
                        ("quant_type", 2), ("bias", None)],
    }
    for name, params in expected.items():
        sig = inspect.signature(getattr(bnb4, name))
        got = [(p.name, None if p.default is inspect.Parameter.empty else p.default) for p in sig.parameters.values()]
        assert got == params, name
