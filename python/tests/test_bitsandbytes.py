"""Parity with bitsandbytes and the bitsandbytes backend (skips with a message without torch and
bitsandbytes).

Against bitsandbytes' own kernels: quantize bytes (exact on CUDA, where bitsandbytes' CUDA kernel is
the reference; on CPU bitsandbytes runs its pure-PyTorch backend, which rounds differently, so the
decoded values must agree except for rare neighbouring codes), dequantize (bit-exact in float32),
matmul (bitsandbytes' test_matmul_4bit error limits and agreement with bitsandbytes' output), and
Linear4bit state_dicts (read, written back byte for byte, loaded by bitsandbytes).

With bnb4.bitsandbytes_backend registered: bitsandbytes' functional API, matmul_4bit and Linear4bit
run on bnb4 (checked by counting C calls) and agree with bitsandbytes' kernels; unregister restores them.
"""

import json

import numpy as np
import pytest

import bnb4
from bnb4 import _lib
import reference as ref

torch = pytest.importorskip("torch", reason="torch is not installed: bitsandbytes parity tests skipped")
bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed: parity tests skipped")
import bitsandbytes.functional as F  # noqa: E402
import bnb4.bitsandbytes_backend as backend  # noqa: E402

from conftest import cuda_usable  # noqa: E402


def _devices():
    out = [pytest.param("cpu", id="cpu")]
    out.append(pytest.param("cuda", id="cuda", marks=pytest.mark.skipif(
        not cuda_usable(), reason="no CUDA device or libbnb4 without CUDA: bitsandbytes CUDA parity skipped")))
    return out


DEVICES = pytest.mark.parametrize("device", _devices())
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _bitsandbytes_kernels():
    """Every test starts and ends on bitsandbytes' own kernels."""
    backend.unregister()
    yield
    backend.unregister()


@pytest.fixture
def gen(rng):
    return torch.Generator().manual_seed(int(rng.integers(1 << 62)))


def _randn(gen, *shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, generator=gen).to(dtype).to(device)


def _codes(packed_u8):
    p = packed_u8.reshape(-1).cpu()
    return torch.stack([p >> 4, p & 15], 1).reshape(-1)


@DEVICES
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [32, 64, 128, 256, 512, 1024, 2048, 4096])
def test_quantize_parity(device, gen, blocksize, qt, dtype):
    A = _randn(gen, 512, 1023, dtype=dtype, device=device)  # odd n: a partial block and a pad nibble
    q_bnb, st = F.quantize_4bit(A, blocksize=blocksize, quant_type=qt)
    packed, absmax = bnb4.quantize_4bit(A, blocksize, qt)
    assert torch.equal(absmax, st.absmax)
    if device == "cuda":
        assert torch.equal(packed, q_bnb.reshape(-1)), "quantize bytes differ from bitsandbytes' CUDA kernel"
        return
    book = torch.from_numpy(ref.codebook(ref.NF4 if qt == "nf4" else ref.FP4))
    n = A.numel()
    v_bnb, v_us = book[_codes(q_bnb)[:n].long()], book[_codes(packed)[:n].long()]
    # +-0 compare equal (FP4's zero sign rule differs in bitsandbytes' CPU backend); its scaling in the
    # input dtype (bf16/f16) moves a few values across a decision boundary: neighbouring codes only
    differ = v_bnb != v_us
    assert differ.float().mean() < 2e-3
    levels = torch.unique(book)  # sorted distinct values (+0 and -0 are one level)
    rank_bnb, rank_us = torch.searchsorted(levels, v_bnb), torch.searchsorted(levels, v_us)
    assert torch.all((rank_bnb - rank_us)[differ].abs() == 1)


@DEVICES
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
def test_dequantize_parity(device, gen, qt, dtype):
    A = _randn(gen, 256, 200, dtype=dtype, device=device)
    q, st = F.quantize_4bit(A, blocksize=64, quant_type=qt)
    ours = bnb4.dequantize_4bit(q.reshape(-1), st.absmax, 64, qt, A.numel(), torch.float32).reshape(A.shape)
    theirs = F.dequantize_4bit(q, st)  # in A's dtype
    assert torch.equal(ours.to(dtype), theirs) or device == "cpu"
    deq32 = bnb4.dequantize_4bit(q.reshape(-1), st.absmax, 64, qt, A.numel(), dtype).reshape(A.shape)
    if device == "cuda":
        assert torch.equal(deq32, theirs)
    else:  # bitsandbytes' CPU kernel mis-rounds rare f32 -> f16 ties (format.md section 3): one ulp
        assert torch.allclose(deq32.float(), theirs.float(), rtol=2 ** -7, atol=0)


# bitsandbytes' test_matmul_4bit limit on mean |A W^T - out| (format.md section 9, item 6)
def _matmul_limit(qt, blocksize):
    return 0.115 if qt == "nf4" or blocksize <= 64 else 0.13 if blocksize <= 256 else 0.16


@DEVICES
@pytest.mark.parametrize("shape", [(1, 256, 128), (40, 512, 128), (9, 320, 128), (3, 64, 96)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("blocksize", [32, 64, 128, 4096])
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "nested"])
def test_matmul_parity(device, gen, shape, dtype, blocksize, qt, nested):
    m, n_out, k = shape
    B = _randn(gen, n_out, k, dtype=dtype, device=device) / k ** 0.5
    A = _randn(gen, 1, m, k, dtype=dtype, device=device)
    bias = _randn(gen, n_out, dtype=dtype, device=device)
    qB, st = F.quantize_4bit(B, blocksize=blocksize, quant_type=qt, compress_statistics=nested)
    out_bnb = bnb.matmul_4bit(A, qB.t(), st, bias=bias)
    with backend.enabled():
        out = bnb.matmul_4bit(A, qB.t(), st, bias=bias)
    assert out.shape == (1, m, n_out) and out.dtype == dtype
    exact = torch.nn.functional.linear(A.float(), B.float(), bias.float())
    # bitsandbytes' own limit - or, on a draw where its own output misses that too (the same quantized weight: the mean
    # error over a few hundred outputs moves with the draw, 0.1153 against 0.115 seen for fp4), no further than its own
    err, err_bnb = (exact - out.float()).abs().mean(), (exact - out_bnb.float()).abs().mean()
    assert err < _matmul_limit(qt, blocksize) or err <= err_bnb * 1.001
    if device == "cpu" and k % blocksize:
        return  # bitsandbytes' CPU dequantize indexes absmax per row, wrong unless K % bs == 0 (format.md 3)
    # both run on the same quantized weight: only rounding separates them
    W = F.dequantize_4bit(qB, st).float()
    scale = A.float().abs() @ W.abs().t() + bias.float().abs()
    rtol = {torch.float32: 1e-5, torch.float16: 8e-3, torch.bfloat16: 6e-2}[dtype]
    assert torch.all((out.float() - out_bnb.float()).abs() <= rtol * scale)


class _CallCounter:
    """Counts calls into libbnb4's op entry points (the backend calls them through _lib.lib)."""

    NAMES = ("bnb4_quantize", "bnb4_dequantize", "bnb4_linear")

    def __init__(self, monkeypatch):
        self.counts = dict.fromkeys(self.NAMES, 0)
        for name in self.NAMES:
            fn = getattr(_lib.lib, name)

            def wrapper(*args, _fn=fn, _name=name):
                self.counts[_name] += 1
                return _fn(*args)

            monkeypatch.setattr(_lib.lib, name, wrapper)


@DEVICES
def test_backend_routes_ops(device, gen, monkeypatch):
    calls = _CallCounter(monkeypatch)
    W = _randn(gen, 64, 128, dtype=torch.float16, device=device)
    x = _randn(gen, 1, 128, dtype=torch.float16, device=device)
    q, st = F.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    F.dequantize_4bit(q, st)
    bnb.matmul_4bit(x, q.t(), st)
    assert calls.counts == dict.fromkeys(calls.NAMES, 0)
    backend.register()
    assert backend.registered_devices() == ("cpu", "cuda")
    q2, st2 = F.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    F.dequantize_4bit(q2, st2)
    bnb.matmul_4bit(x, q2.t(), st2)
    st_plain = F.quantize_4bit(W, quant_type="fp4")[1]
    F.gemv_4bit(x, q.t(), state=st_plain)
    assert calls.counts == {"bnb4_quantize": 2, "bnb4_dequantize": 1, "bnb4_linear": 2}
    backend.unregister()
    assert backend.registered_devices() == ()
    bnb.matmul_4bit(x, q2.t(), st2)
    F.quantize_4bit(W)
    assert calls.counts == {"bnb4_quantize": 2, "bnb4_dequantize": 1, "bnb4_linear": 2}


@DEVICES
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16, torch.float32], ids=str)
def test_backend_quantize_storage_and_dequantize_out(device, gen, storage):
    A = _randn(gen, 7, 63, dtype=torch.bfloat16, device=device)  # (7, bs - 1): bitsandbytes' odd-size case
    with backend.enabled(["cpu", "cuda"]):
        q, st = F.quantize_4bit(A, blocksize=64, quant_type="nf4", quant_storage=storage)
        assert q.dtype == storage and q.shape == ((A.numel() + 1) // (2 * storage.itemsize), 1)
        out = torch.empty(7, 63, dtype=torch.bfloat16, device=device)
        F.dequantize_4bit(q, st, out=out)
        assert torch.isfinite(out).all()
    # bitsandbytes' own kernels, uint8 storage (its CPU backend cannot view an odd byte count as bf16)
    q_bnb, st_bnb = F.quantize_4bit(A, blocksize=64, quant_type="nf4")
    kept = 2 * q.numel() * storage.itemsize  # elements whose byte the storage holds (see to_state_dict)
    np.testing.assert_array_equal(F.dequantize_4bit(q_bnb, st_bnb).float().cpu().numpy().reshape(-1)[:kept],
                                  out.float().cpu().numpy().reshape(-1)[:kept])


def _linear(device, dtype, bias, nested, qt, storage):
    lin = torch.nn.Linear(300, 400, bias=bias, dtype=dtype)
    q = bnb.nn.Linear4bit(300, 400, bias=bias, compute_dtype=dtype, compress_statistics=nested, quant_type=qt,
                          quant_storage=storage)
    q.support_avx512bf16_for_cpu = False  # keep bitsandbytes' CPU path on the bitsandbytes layout
    q.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type=qt,
                                 compress_statistics=nested, quant_storage=storage)
    if bias:
        q.bias = torch.nn.Parameter(lin.bias.data.clone(), requires_grad=False)
    return q.to(device)


@DEVICES
@pytest.mark.parametrize("storage", [torch.uint8, torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "nested"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_linear4bit_state_dict(device, gen, dtype, nested, qt, storage):
    """bitsandbytes' test_linear_serialization shape (300 -> 400): its state_dict is read exactly,
    written back byte for byte, loads into bitsandbytes, and forwards agree."""
    layer = _linear(device, dtype, True, nested, qt, storage)
    sd = {k: v for k, v in layer.state_dict().items() if k != "bias"}
    qt_ours = bnb4.QuantizedTensor.from_state_dict(sd, "weight")
    assert qt_ours.shape == (400, 300) and qt_ours.dtype == str(dtype)[6:] and (qt_ours.nested is not None) == nested
    written = qt_ours.to_state_dict("weight", quant_storage=storage)
    assert set(written) == set(sd)
    for key, value in sd.items():
        assert written[key].dtype == value.dtype and written[key].shape == value.shape, key
        assert torch.equal(written[key].cpu().view(torch.uint8) if written[key].dtype != torch.uint8
                           else written[key].cpu(),
                           value.cpu().view(torch.uint8) if value.dtype != torch.uint8 else value.cpu()), key
    blob = sd[f"weight.quant_state.bitsandbytes__{qt}"]
    assert json.loads(bytes(blob.cpu().tolist())) == json.loads(qt_ours.quant_state_json())
    # bitsandbytes decodes the weight as bnb4 does (dequantize_4bit of the nested absmax included)
    w_bnb = F.dequantize_4bit(layer.weight.data, layer.weight.quant_state)  # in the layer's dtype
    w_ours = qt_ours.dequantize()  # in the recorded original dtype, the same
    assert w_ours.dtype == w_bnb.dtype == dtype
    if device == "cuda":
        assert torch.equal(w_ours, w_bnb)
    else:  # bitsandbytes' CPU kernel mis-rounds rare f32 -> f16 ties (format.md section 3): one ulp
        assert torch.allclose(w_ours.float(), w_bnb.float(), rtol=2 ** -7, atol=0)
    w_bnb = w_bnb.float()
    # a layer loaded from bnb4's state_dict forwards like bnb4's linear
    loaded = bnb.nn.Linear4bit(300, 400, bias=True, compute_dtype=dtype, quant_type=qt, quant_storage=storage)
    loaded.support_avx512bf16_for_cpu = False
    loaded.weight = bnb.nn.Params4bit.from_prequantized(
        data=written["weight"], quantized_stats={k[len("weight."):]: v for k, v in written.items() if k != "weight"},
        requires_grad=False, device=torch.device(device))
    loaded.bias = torch.nn.Parameter(layer.bias.data.clone(), requires_grad=False)
    loaded = loaded.to(device)
    x = torch.rand(42, 300, generator=gen).to(dtype).to(device)
    with torch.no_grad():
        y_bnb = loaded(x)
        y_layer = layer(x)
    assert torch.equal(y_bnb, y_layer)  # bitsandbytes, same bytes: bit-equal
    y_ours = qt_ours.linear(x, layer.bias.data)
    scale = x.float().abs() @ w_bnb.abs().t() + layer.bias.float().abs()
    rtol = {torch.float16: 8e-3, torch.bfloat16: 6e-2}[dtype]
    assert torch.all((y_ours.float() - y_bnb.float()).abs() <= rtol * scale)


@DEVICES
def test_linear4bit_on_bnb4(device, gen):
    """A Linear4bit built and run while bnb4 is registered: same bytes as bitsandbytes would store (on
    CUDA), forward close to bitsandbytes' own kernels."""
    with backend.enabled():
        layer = _linear(device, torch.float16, True, True, "nf4", torch.uint8)
        x = _randn(gen, 2, 5, 300, dtype=torch.float16, device=device)
        with torch.no_grad():
            y = layer(x)
    with torch.no_grad():
        y_bnb = layer(x)
    assert y.shape == (2, 5, 400)
    w = F.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    scale = x.float().abs() @ w.abs().t() + layer.bias.float().abs()
    assert torch.all((y.float() - y_bnb.float()).abs() <= 8e-3 * scale)


@pytest.mark.skipif(not cuda_usable(), reason="no CUDA device or libbnb4 without CUDA: stream test skipped")
def test_cuda_current_stream(gen):
    """Work is enqueued on torch's current stream: results computed on a side stream are right after
    synchronizing that stream."""
    W = _randn(gen, 256, 512, dtype=torch.float16, device="cuda")
    x = _randn(gen, 8, 512, dtype=torch.float16, device="cuda")
    packed, absmax = bnb4.quantize_4bit(W)
    expected = bnb4.linear_4bit(x, packed, absmax, 256)
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            y = bnb4.linear_4bit(x, packed, absmax, 256)
    side.synchronize()
    assert torch.equal(y, expected)
