"""The top-level API beyond the seed's tests: quantize/dequantize properties on every blocksize, dtype
and odd size; gemv/gemm/linear swept against an exact dequantize-then-matmul over dtypes, quant types,
blocksizes, odd shapes and batch shapes (every row and batch computed, unlike the seed); non-contiguous
inputs; and the errors (ValueError carrying the C library's message)."""

import numpy as np
import pytest

import bnb4
import reference as ref

BLOCKSIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096]
DTYPES = ["float32", "float16", "bfloat16"]
QTS = pytest.mark.parametrize("qt", [bnb4.NF4, bnb4.FP4], ids=["nf4", "fp4"])


def _randn(rng, shape, scale=1.0):
    return rng.standard_normal(shape) * scale


# ---- quantize ----------------------------------------------------------------------------------------

@QTS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_quantize_picks_nearest_code(kind, rng, blocksize, dtype, qt):
    """absmax is max|x| per block, and each code is the codebook entry nearest to x/absmax (ties and
    the GPU's approximate reciprocal may pick the neighbour at a boundary: allow 1e-6)."""
    n = int(rng.integers(1, 3 * blocksize + 2))
    x = kind.arr(_randn(rng, n), dtype)
    packed, absmax = bnb4.quantize_4bit(x, blocksize, qt)
    assert tuple(packed.shape) == ((n + 1) // 2,) and tuple(absmax.shape) == (-(-n // blocksize),)
    xs = kind.np(x).astype(np.float64)
    am = kind.np(absmax).astype(np.float64)
    blocks_of = np.arange(n) // blocksize
    expected_am = np.array([np.abs(xs[blocks_of == b]).max() for b in range(am.size)])
    np.testing.assert_array_equal(am, expected_am)
    normalized = np.where(am[blocks_of] > 0, xs / np.where(am[blocks_of] > 0, am[blocks_of], 1), 0)
    book = ref.codebook(qt).astype(np.float64)
    got = book[ref.unpack(kind.np(packed), n)]
    nearest = np.abs(normalized[:, None] - book[None, :]).min(axis=1)
    assert np.all(np.abs(normalized - got) <= nearest + 1e-6)
    if n % 2:  # the pad nibble of an odd tail is bitsandbytes' quantization of 0
        pad = ref.unpack(kind.np(packed), n + 1)[n]
        assert book[pad] == 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_quantize_any_shape_and_non_contiguous(kind, rng, dtype):
    """Input of any shape is quantized in row-major order; strided views give the bytes of their copy."""
    base = kind.arr(_randn(rng, (6, 10, 40)), dtype)
    view = base[:, ::3, 1:36]
    copy = kind.arr(kind.np(view), dtype)
    p1, a1 = bnb4.quantize_4bit(view, 64, bnb4.NF4)
    p2, a2 = bnb4.quantize_4bit(copy.reshape(-1), 64, bnb4.NF4)
    np.testing.assert_array_equal(kind.np(p1), kind.np(p2))
    np.testing.assert_array_equal(kind.np(a1), kind.np(a2))


def test_quantize_special_blocks(kind):
    """An all-zero block gets absmax 0 and decodes to zeros; blocks never restart mid-buffer."""
    x = np.zeros(100, dtype=np.float32)
    x[64:] = np.linspace(-3, 3, 36)
    packed, absmax = bnb4.quantize_4bit(kind.arr(x), 64, bnb4.NF4)
    am = kind.np(absmax)
    assert am[0] == 0 and am[1] == 3
    out = kind.np(bnb4.dequantize_4bit(packed, absmax, 64, bnb4.NF4, 100, "float32"))
    assert np.all(out[:64] == 0)
    assert out[99] == 3 and out[64] == -3


# ---- dequantize --------------------------------------------------------------------------------------

@QTS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_dequantize_exact(kind, rng, blocksize, dtype, qt):
    """Random bytes and random (also negative) absmax decode to RNE(f32(codebook * absmax)), bit-exact,
    including FP4's -0.0."""
    n = int(rng.integers(1, 2 * blocksize + 3))
    packed = rng.integers(0, 256, (n + 1) // 2, dtype=np.uint8)
    absmax = _randn(rng, -(-n // blocksize)).astype(np.float32)
    out = bnb4.dequantize_4bit(kind.arr(packed), kind.arr(absmax), blocksize, qt, n, kind.dtype(dtype))
    assert tuple(out.shape) == (n,) and kind.dtype_name(out) == dtype
    expected = ref.dequantize(packed, absmax, blocksize, qt, n).astype(kind.dtype(dtype) if not kind.is_torch
                                                                        else np.float32)
    got = kind.np(out)
    if kind.is_torch:  # compare torch's own f32 -> dtype rounding of the reference, as f32 bits
        import torch
        expected = torch.from_numpy(expected).to(getattr(torch, dtype)).float().numpy()
    np.testing.assert_array_equal(ref.bits(got.astype(np.float32)), ref.bits(np.asarray(expected, np.float32)))


def test_dequantize_numel_rules(kind, rng):
    packed = rng.integers(0, 256, 10, dtype=np.uint8)
    absmax = np.ones(1, dtype=np.float32)
    p, a = kind.arr(packed), kind.arr(absmax)
    assert tuple(bnb4.dequantize_4bit(p, a).shape) == (20,)  # numel < 0: 2 * packed bytes
    assert kind.dtype_name(bnb4.dequantize_4bit(p, a)) == "float16"  # the seed's default output dtype
    assert tuple(bnb4.dequantize_4bit(p, a, numel=19).shape) == (19,)
    assert tuple(bnb4.dequantize_4bit(p, a, numel=0).shape) == (0,)
    with pytest.raises(ValueError, match="holds 10 bytes but 11 are needed"):
        bnb4.dequantize_4bit(p, a, numel=21)
    for name in ("float32", "f32", "fp16", "half"):
        bnb4.dequantize_4bit(p, a, numel=3, output_dtype=name)
    with pytest.raises(ValueError, match="not supported"):
        bnb4.dequantize_4bit(p, a, numel=3, output_dtype="float64")


# ---- gemv / gemm / linear sweeps -----------------------------------------------------------------------

SHAPES = [(1, 1), (3, 5), (4, 64), (17, 96), (33, 130), (64, 257)]
BATCHES_GEMV = [(), (1,), (3,), (2, 3), (2, 1, 4)]
BATCHES_GEMM = [(1, 1), (5, 1), (1, 7), (2, 3), (3, 2, 2)]


def _weights(kind, rng, n_out, k, blocksize, qt, wdtype="float32"):
    w = kind.arr(_randn(rng, (n_out, k), 1 / np.sqrt(k)), wdtype)
    packed, absmax = bnb4.quantize_4bit(w, blocksize, qt)
    w_f32 = ref.dequantize(kind.np(packed), kind.np(absmax), blocksize, qt, n_out * k).reshape(n_out, k)
    return packed, absmax, w_f32


def _check(kind, y, x, w_f32, dtype, out_shape, bias=None, what=""):
    assert tuple(y.shape) == out_shape, what
    assert kind.dtype_name(y) == dtype, what
    expected, mag = ref.matmul(kind.np(x), w_f32, None if bias is None else kind.np(bias))
    ref.assert_matmul_close(kind.np(y), expected, mag, dtype, what)


@QTS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocksize", [32, 64, 256, 4096])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
def test_matmul_sweep(kind, rng, shape, blocksize, dtype, qt):
    n_out, k = shape
    packed, absmax, w_f32 = _weights(kind, rng, n_out, k, blocksize, qt)
    for batch in BATCHES_GEMV:
        x = kind.arr(_randn(rng, batch + (k,)), dtype)
        y = bnb4.gemv_4bit(x, packed, absmax, n_out, blocksize, qt)
        _check(kind, y, x, w_f32, dtype, batch + (n_out,), what=f"gemv x{batch + (k,)}")
        bias = kind.arr(_randn(rng, n_out), dtype)
        y = bnb4.linear_4bit(x, packed, absmax, n_out, blocksize, qt, bias=bias)
        _check(kind, y, x, w_f32, dtype, batch + (n_out,), bias, what=f"linear x{batch + (k,)}")
    for batch in BATCHES_GEMM:
        x = kind.arr(_randn(rng, batch + (k,)), dtype)
        y = bnb4.gemm_4bit(x, packed, absmax, n_out, blocksize, qt)
        _check(kind, y, x, w_f32, dtype, batch + (n_out,), what=f"gemm x{batch + (k,)}")


def test_matmul_subnormal_half_output(kind):
    """A float16 output in float16's subnormal range is rounded on an absolute grid (2^-24 apart): the
    bound allows half of that, which a relative bound alone does not (a 1x1 product of 1.4e-6 once
    failed the sweep by it)."""
    n_out = 1
    x = kind.arr(np.array([[2.0**-10]], dtype=np.float32), "float16")
    # one weight in its block: absmax is |w| and the code 1.0, so the weight comes back exactly; x * w
    # three quarters of the way between two subnormal float16 values near 1.5e-6
    w = kind.arr(np.array([[(24 + 0.75) * 2.0**-24 / 2.0**-10]], dtype=np.float32))
    packed, absmax = bnb4.quantize_4bit(w, 64, bnb4.NF4)
    w_f32 = ref.dequantize(kind.np(packed), kind.np(absmax), 64, bnb4.NF4, 1).reshape(1, 1)
    assert w_f32[0, 0] == kind.np(w)[0, 0]
    y = bnb4.linear_4bit(x, packed, absmax, n_out)
    expected, mag = ref.matmul(kind.np(x), w_f32)
    err = abs(float(kind.np(y)[0, 0]) - expected[0, 0])
    assert err > ref.MATMUL_RTOL["float16"] * mag[0, 0]  # the case needs the absolute term
    _check(kind, y, x, w_f32, "float16", (1, n_out))
    assert float(kind.np(y)[0, 0]) == float(np.float16(expected[0, 0]))  # one rounding, to nearest


@pytest.mark.parametrize("blocksize", BLOCKSIZES)
def test_matmul_every_blocksize(kind, rng, blocksize):
    """Blocks that straddle rows (K % blocksize != 0) and a partial last block, for every blocksize."""
    n_out, k = 7, 300
    packed, absmax, w_f32 = _weights(kind, rng, n_out, k, blocksize, bnb4.NF4)
    x = kind.arr(_randn(rng, (3, k)), "float32")
    _check(kind, bnb4.linear_4bit(x, packed, absmax, n_out, blocksize), x, w_f32, "float32", (3, n_out))


def test_batched_rows_all_computed(kind, rng):
    """Every row of a batched gemv and every batch of a 3-D gemm equal their one-row results (the
    seed leaves rows >= 1 and batches >= 1 at zero)."""
    n_out, k = 24, 64
    packed, absmax, _ = _weights(kind, rng, n_out, k, 64, bnb4.NF4)
    x = kind.arr(_randn(rng, (2, 3, 1, k)), "float32")
    y_all = kind.np(bnb4.linear_4bit(x, packed, absmax, n_out))
    y_gemm = kind.np(bnb4.gemm_4bit(x.reshape(2, 3, k), packed, absmax, n_out))
    xs = kind.np(x)
    for i in range(2):
        for j in range(3):
            row = kind.np(bnb4.gemv_4bit(kind.arr(xs[i, j, 0]), packed, absmax, n_out))
            np.testing.assert_allclose(y_all[i, j, 0], row, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(y_gemm[i, j], row, rtol=1e-5, atol=1e-6)
            assert np.any(row != 0)


def test_matmul_non_contiguous(kind, rng):
    n_out, k = 16, 64
    packed, absmax, w_f32 = _weights(kind, rng, n_out, k, 64, bnb4.FP4)
    x_big = kind.arr(_randn(rng, (5, 2 * k)), "float16")
    x = x_big[::2, ::2]
    packed_big = kind.arr(np.stack([kind.np(packed), kind.np(packed)], axis=1))  # [bytes, 2]
    absmax_big = kind.arr(np.stack([kind.np(absmax)] * 3, axis=1))
    y = bnb4.linear_4bit(x, packed_big[:, 1], absmax_big[:, 2], n_out, 64, bnb4.FP4,
                         bias=kind.arr(np.arange(2 * n_out, dtype=np.float32))[::2])
    _check(kind, y, x, w_f32, "float16", (3, n_out), kind.arr(np.arange(0, 2 * n_out, 2, dtype=np.float32)))


def test_bias_cast_to_x_dtype(kind, rng):
    n_out, k = 8, 32
    packed, absmax, w_f32 = _weights(kind, rng, n_out, k, 32, bnb4.NF4)
    x = kind.arr(_randn(rng, (2, k)), "float16")
    bias = kind.arr(_randn(rng, n_out), "float32")
    y = bnb4.linear_4bit(x, packed, absmax, n_out, 32, bnb4.NF4, bias=bias)
    bias16 = kind.arr(kind.np(bias), "float16")
    _check(kind, y, x, w_f32, "float16", (2, n_out), bias16)


def test_empty_batch(kind, rng):
    packed, absmax, _ = _weights(kind, rng, 4, 8, 32, bnb4.NF4)
    y = bnb4.gemm_4bit(kind.arr(np.zeros((0, 3, 8), np.float32)), packed, absmax, 4, 32)
    assert tuple(y.shape) == (0, 3, 4)


# ---- errors ---------------------------------------------------------------------------------------------

def test_errors_carry_the_library_message(kind, rng):
    x = kind.arr(_randn(rng, 100), "float32")
    with pytest.raises(ValueError, match=r"bnb4_quantize: blocksize 48 is not supported"):
        bnb4.quantize_4bit(x, blocksize=48)
    with pytest.raises(ValueError, match=r"unknown quant_type 3"):
        bnb4.quantize_4bit(x, quant_type=3)
    with pytest.raises(ValueError, match=r"blocksize is 0"):
        bnb4.quantize_4bit(x, blocksize=0)
    try:
        bnb4.quantize_4bit(x, blocksize=4097)
    except ValueError as e:
        assert e.status == 2 and "4097" in bnb4.last_error()
    else:
        raise AssertionError("blocksize 4097 was accepted")


def test_errors_from_python_checks(kind, rng):
    packed, absmax, _ = _weights(kind, rng, 8, 32, 32, bnb4.NF4)
    x = kind.arr(_randn(rng, (2, 32)), "float32")
    with pytest.raises(ValueError, match="float64"):
        bnb4.quantize_4bit(kind.arr(_randn(rng, 8)))  # float64 input
    with pytest.raises(ValueError, match="w holds 128 bytes but 528 are needed"):
        bnb4.linear_4bit(x, packed, absmax, 33, 32)  # wrong output_features
    with pytest.raises(ValueError, match="at least 2 dimension"):
        bnb4.gemm_4bit(x[0], packed, absmax, 8, 32)
    with pytest.raises(ValueError, match="must be uint8"):
        bnb4.gemv_4bit(x, absmax, absmax, 8, 32)
    with pytest.raises(ValueError, match="blocksize must be positive"):
        bnb4.quantize_4bit(x, blocksize=-64)
    with pytest.raises(ValueError, match="quant_type"):
        bnb4.quantize_4bit(x, quant_type="int4")
    with pytest.raises(ValueError, match=r"bias must have shape \(8,\)"):
        bnb4.linear_4bit(x, packed, absmax, 8, 32, bias=kind.arr(np.zeros(7, np.float32)))
    with pytest.raises(ValueError, match="must be a numpy array or a torch tensor"):
        bnb4.quantize_4bit([1.0, 2.0])
    with pytest.raises(ValueError, match="empty input"):
        bnb4.quantize_4bit(kind.arr(np.zeros(0, np.float32)))
    if kind.is_torch:
        with pytest.raises(ValueError, match="same kind on the same device"):
            bnb4.linear_4bit(x, kind.np(packed), absmax, 8, 32)


def test_tables_and_introspection():
    np.testing.assert_array_equal(ref.bits(np.array(bnb4.codebook(bnb4.NF4), np.float32)), ref.NF4_BITS)
    np.testing.assert_array_equal(ref.bits(np.array(bnb4.codebook("fp4"), np.float32)), ref.FP4_BITS)
    np.testing.assert_array_equal(ref.bits(np.array(bnb4.quant_map(bnb4.FP4), np.float32)),
                                  ref.bits(ref.FP4_QUANT_MAP))
    code = np.array(bnb4.nested_code(), np.float32)
    assert code.size == 256 and code[127] == 0 and code[255] == 1 and np.all(np.diff(code) > 0)
    assert bnb4.kernel_name("gemv")
    assert isinstance(bnb4.cpu_features(), str)
    with pytest.raises(ValueError, match="unknown op"):
        bnb4.kernel_name("conv")


def test_numpy_bfloat16_without_ml_dtypes(numpy_kind, monkeypatch):
    from bnb4 import _arrays
    monkeypatch.setattr(_arrays, "_NP_BF16", None)
    p = np.zeros(4, np.uint8)
    a = np.ones(1, np.float32)
    with pytest.raises(ValueError, match="ml_dtypes"):
        bnb4.dequantize_4bit(p, a, output_dtype="bfloat16")
