"""QuantizedTensor and double quantization: decoding rules of nested absmax, bitsandbytes' state_dict
layout and JSON blob, round trips through every quant_storage, and from_state_dict's checks."""

import json

import numpy as np
import pytest

import bnb4
import reference as ref

STORAGES = ["uint8", "float16", "bfloat16", "float32"]


def _storage(kind, name):
    return kind.dtype(name) if kind.is_torch or name != "bfloat16" else kind.dtype("bfloat16")


@pytest.mark.parametrize("nested_blocksize", [256, 7])
def test_double_quantize_rules(kind, rng, nested_blocksize):
    """offset = mean(absmax) (torch's float32 order: within 2 ulps of the exact mean, see
    test_offset_is_torch_cuda_mean); absmax' = f32(f32(code[q] * nested) + offset) is close to absmax;
    codes index the nearest dynamic-map value of (absmax - offset) / nested."""
    nb = 1000
    absmax = np.abs(rng.standard_normal(nb)).astype(np.float32) * 3
    nested = bnb4.double_quantize(kind.arr(absmax), nested_blocksize)
    exact = np.float32(absmax.astype(np.float64).mean())
    assert abs(int(np.float32(nested.offset).view(np.int32)) - int(exact.view(np.int32))) <= 2
    assert nested.blocksize == nested_blocksize
    codes, nabs = kind.np(nested.codes), kind.np(nested.absmax)
    code = np.array(bnb4.nested_code(), np.float32)
    np.testing.assert_array_equal(kind.np(nested.code), code)
    d = (absmax - np.float32(nested.offset)).astype(np.float32)
    per_block = np.arange(nb) // nested_blocksize
    np.testing.assert_array_equal(nabs, [np.abs(d[per_block == j]).max() for j in range(nabs.size)])
    normalized = d.astype(np.float64) / nabs[per_block]
    dist = np.abs(normalized[:, None] - code[None, :].astype(np.float64))
    assert np.all(dist[np.arange(nb), codes] <= dist.min(axis=1) + 1e-6)

    q = bnb4.QuantizedTensor(kind.arr(np.zeros(nb * 32, np.uint8)), None, (nb * 64,), 64, bnb4.NF4,
                             "float32", nested)
    decoded = kind.np(q.absmax_f32())
    expected = ((code[codes] * nabs[per_block]).astype(np.float32) + np.float32(nested.offset)).astype(np.float32)
    np.testing.assert_array_equal(ref.bits(decoded), ref.bits(expected))
    assert np.max(np.abs(decoded - absmax) / absmax.max()) < 1e-2


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "nested"])
@pytest.mark.parametrize("qt", [bnb4.NF4, bnb4.FP4], ids=["nf4", "fp4"])
def test_quantized_tensor_ops(kind, rng, qt, compress):
    w = kind.arr(rng.standard_normal((40, 96)) / 10, "float16")
    q = bnb4.QuantizedTensor.quantize(w, blocksize=64, quant_type=qt, compress_statistics=compress)
    assert q.shape == (40, 96) and q.dtype == "float16" and q.nblocks == 60
    assert (q.nested is not None) == compress
    packed, absmax = bnb4.quantize_4bit(w, 64, qt)
    np.testing.assert_array_equal(kind.np(q.packed), kind.np(packed))  # nesting never changes the codes
    scales = kind.np(q.absmax_f32())
    if not compress:
        np.testing.assert_array_equal(scales, kind.np(absmax))
    deq = q.dequantize()
    assert tuple(deq.shape) == (40, 96) and kind.dtype_name(deq) == "float16"
    w_f32 = ref.dequantize(kind.np(packed), scales, 64, qt, 40 * 96).reshape(40, 96)
    np.testing.assert_array_equal(kind.np(q.dequantize("float32")), w_f32)
    x = kind.arr(rng.standard_normal((3, 96)), "float32")
    bias = kind.arr(rng.standard_normal(40), "float32")
    y = q.linear(x, bias)
    expected, mag = ref.matmul(kind.np(x), w_f32, kind.np(bias))
    ref.assert_matmul_close(kind.np(y), expected, mag, "float32", "QuantizedTensor.linear")
    assert "QuantizedTensor(shape=(40, 96)" in repr(q)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "nested"])
def test_state_dict_round_trip(kind, rng, storage, compress):
    n_out, k = 30, 41  # odd n: the packed bytes are not a multiple of every storage's itemsize
    w = kind.arr(rng.standard_normal((n_out, k)), "bfloat16")
    q = bnb4.QuantizedTensor.quantize(w, blocksize=32, quant_type="fp4", compress_statistics=compress)
    sd = q.to_state_dict("layer.weight", quant_storage=_storage(kind, storage))
    keys = {"layer.weight", "layer.weight.absmax", "layer.weight.quant_map",
            "layer.weight.quant_state.bitsandbytes__fp4"}
    if compress:
        keys |= {"layer.weight.nested_absmax", "layer.weight.nested_quant_map"}
    assert set(sd) == keys
    itemsize = {"uint8": 1, "float16": 2, "bfloat16": 2, "float32": 4}[storage]
    n = n_out * k
    assert tuple(sd["layer.weight"].shape) == ((n + 1) // (2 * itemsize), 1)
    assert kind.dtype_name(sd["layer.weight.absmax"]) == ("uint8" if compress else "float32")
    blob = bytes(kind.np(sd["layer.weight.quant_state.bitsandbytes__fp4"]).tolist())
    info = json.loads(blob)
    assert list(info)[:4] == ["quant_type", "blocksize", "dtype", "shape"]
    assert info["shape"] == [n_out, k] and info["dtype"] == "bfloat16" and info["blocksize"] == 32
    assert blob == q.quant_state_json().encode()
    if compress:
        assert info["nested_blocksize"] == 256 and info["nested_dtype"] == "float32"
        assert np.float32(info["nested_offset"]) == np.float32(q.nested.offset)
    np.testing.assert_array_equal(ref.bits(kind.np(sd["layer.weight.quant_map"])), ref.bits(ref.FP4_QUANT_MAP))

    back = bnb4.QuantizedTensor.from_state_dict(sd, "layer.weight")
    assert back.shape == q.shape and back.quant_type == q.quant_type and back.dtype == "bfloat16"
    kept = (n + 1) // (2 * itemsize) * itemsize  # bitsandbytes' storage keeps this many bytes
    np.testing.assert_array_equal(kind.np(back.packed)[:kept], kind.np(q.packed)[:kept])
    np.testing.assert_array_equal(kind.np(back.absmax_f32()), kind.np(q.absmax_f32()))
    if kept == (n + 1) // 2:
        np.testing.assert_array_equal(ref.bits(kind.np(back.dequantize("float32"))),
                                      ref.bits(kind.np(q.dequantize("float32"))))


def test_quant_state_json_matches_bitsandbytes_format():
    q = bnb4.QuantizedTensor(np.zeros(60000, np.uint8), np.ones(1875, np.float32), (400, 300), 64, "nf4",
                             "float16")
    assert q.quant_state_json() == '{"quant_type": "nf4", "blocksize": 64, "dtype": "float16", "shape": [400, 300]}'
    assert len(q.quant_state_json()) == 79  # format.md section 6's example


def test_from_state_dict_unpacked_form(numpy_kind, rng):
    q = bnb4.QuantizedTensor.quantize(rng.standard_normal((8, 64)).astype(np.float32), 64, "nf4", True)
    sd = {"w": q.packed, "w.absmax": q.nested.codes, "w.quant_map": q.quant_map, "w.nested_absmax": q.nested.absmax,
          "w.nested_quant_map": q.nested.code, "w.quant_type": "nf4", "w.blocksize": 64, "w.dtype": "float32",
          "w.shape": (8, 64), "w.nested_blocksize": 256, "w.nested_dtype": "float32", "w.nested_offset": q.nested.offset}
    back = bnb4.QuantizedTensor.from_state_dict(sd, "w")
    np.testing.assert_array_equal(back.dequantize(), q.dequantize())


def test_from_state_dict_checks(numpy_kind, rng):
    q = bnb4.QuantizedTensor.quantize(rng.standard_normal((4, 64)).astype(np.float32), 64, "nf4")
    good = q.to_state_dict("w")
    with pytest.raises(ValueError, match="no key 'v'"):
        bnb4.QuantizedTensor.from_state_dict(good, "v")
    two = dict(good, **{"w.quant_state.bitsandbytes__fp4": good["w.quant_state.bitsandbytes__nf4"]})
    with pytest.raises(ValueError, match="exactly one"):
        bnb4.QuantizedTensor.from_state_dict(two, "w")
    renamed = {k.replace("__nf4", "__fp4"): v for k, v in good.items()}
    with pytest.raises(ValueError, match="says quant_type 'nf4'"):
        bnb4.QuantizedTensor.from_state_dict(renamed, "w")
    with pytest.raises(ValueError, match="unknown quant_state entries"):
        bnb4.QuantizedTensor.from_state_dict(dict(good, **{"w.extra": np.zeros(1)}), "w")
    bad = dict(good, **{"w.quant_state.bitsandbytes__nf4": np.frombuffer(b"{not json", np.uint8)})
    with pytest.raises(ValueError, match="not UTF-8 JSON"):
        bnb4.QuantizedTensor.from_state_dict(bad, "w")
    no_absmax = {k: v for k, v in good.items() if k != "w.absmax"}
    with pytest.raises(ValueError, match="no w.absmax"):
        bnb4.QuantizedTensor.from_state_dict(no_absmax, "w")
    short = dict(good, **{"w.absmax": good["w.absmax"][:2]})
    with pytest.raises(ValueError, match="absmax must be float32 with 4 values"):
        bnb4.QuantizedTensor.from_state_dict(short, "w")
    with pytest.raises(ValueError, match="exactly one of absmax"):
        bnb4.QuantizedTensor(q.packed, None, (4, 64))
    with pytest.raises(ValueError, match="no elements"):
        bnb4.QuantizedTensor(q.packed, q.absmax, (4, 0))
    with pytest.raises(ValueError, match="needs a 2-D weight"):
        bnb4.QuantizedTensor(q.packed, q.absmax, (256,)).linear(np.zeros(256, np.float32))


# sizes where torch's reduction changes shape: loads of 4 from 128, 512-thread blocks from 2048, several
# blocks from 130561, the SM count's cap from 4325377 (132 SMs; an A100's 108 from 3538945), a float32 count that
# rounds past 2^24
OFFSET_SIZES = [1, 2, 3, 5, 100, 128, 129, 131, 513, 769, 2047, 2049, 4097, 65537, 130560, 130561, 262147, 704512,
                1000003, 4325376, 4325377, 5000001, 16777217]


def test_offset_is_torch_cuda_mean(rng):
    """bitsandbytes' offset is absmax.mean() on the GPU: bnb4's offset (CPU and CUDA contexts) has its bits
    for every size, on values spread over 2^-32 .. 2^32 (so the summation order shows)."""
    torch = pytest.importorskip("torch", reason="torch is not installed: torch's mean cannot be compared")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch's CUDA mean cannot be compared")
    props = torch.cuda.get_device_properties(0)
    # torch's block count follows the GPU past its grid target (SMs x threads per SM / 512 blocks of 16 x 512
    # values): a CUDA context follows its own GPU, the CPU the H100's (132 x 2048 / 512)
    target = props.multi_processor_count * (getattr(props, "max_threads_per_multi_processor", 2048) // 512)
    for n in OFFSET_SIZES:
        absmax = np.exp2(rng.uniform(-32, 32, n)).astype(np.float32)
        want = torch.from_numpy(absmax).cuda().mean().item()
        on_cpu = [absmax] if target == 132 * 4 or -(-n // (16 * 512)) <= min(target, 132 * 4) else []
        for arr in on_cpu + ([torch.from_numpy(absmax).cuda()] if bnb4.cuda_device_count() else []):
            got = bnb4.double_quantize(arr).offset
            assert np.float32(got).view(np.int32) == np.float32(want).view(np.int32), (
                f"n={n} on {type(arr).__module__}: bnb4 {got!r}, torch {want!r}")
