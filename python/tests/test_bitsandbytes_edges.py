"""Bit-exactness against bitsandbytes' CUDA kernels where implementations part (needs torch,
bitsandbytes and a GPU; skips with a message otherwise).

Random normal data says little about exactness: codes differ between implementations only for NaN,
Inf and subnormal elements, blocks near the ends of a type's range, and values within ulps of a
decision threshold, where only the GPU's approximate reciprocal gives bitsandbytes' code. These tests
feed such data to bitsandbytes' CUDA kernels - the reference - and to bnb4 on the CPU and on CUDA,
and require the same bits:
- quantize: every float16 and every bfloat16 bit pattern (as they come, and finite ones ordered by
  magnitude, so blocks of every exponent exist), random float32 bit patterns, and blocks whose
  elements lie within a few ulps of each threshold times their absmax, or of FLT_MIN times it (where
  the product is flushed or not), on every blocksize;
- dequantize: random codes with absmax of every kind (random bit patterns: NaN, Inf, subnormal,
  huge), into every output dtype, and with products within ulps of FLT_MIN;
- double quantization: absmax vectors of many ranges, codes and nested absmax for bitsandbytes'
  offset, the offset itself, and the decoded absmax;
- linear on model-sized weights: within bitsandbytes' own matmul limits of its output.
"""

import numpy as np
import pytest

import bnb4
from conftest import cuda_usable

torch = pytest.importorskip("torch", reason="torch is not installed: bitsandbytes edge-case tests skipped")
bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed: edge-case tests skipped")
import bitsandbytes.functional as F  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device: bitsandbytes' CUDA kernels, the reference here, cannot run")

OURS = [pytest.param("cpu", id="bnb4-cpu"),
        pytest.param("cuda", id="bnb4-cuda", marks=pytest.mark.skipif(
            not cuda_usable(), reason="libbnb4 without CUDA: its CUDA side of the edge cases skipped"))]
BLOCKSIZES = [32, 64, 128, 256, 512, 1024, 2048, 4096]
DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}
INT_OF = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}

# The decision thresholds of bitsandbytes' CUDA quantizer, as float32 bit patterns (spec/format.md 2.3,
# 2.4): NF4 compares the signed scaled value, FP4 its magnitude.
NF4_THRESHOLDS = [0xbf591cd9, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec, 0xbe0d38bc, 0xbd3a7871, 0x3d22faff,
                  0x3df64863, 0x3e5067e0, 0x3e9582d4, 0x3ec753f9, 0x3f006d03, 0x3f248daf, 0x3f5c89d9]
FP4_THRESHOLDS = [0x3b2aaab9, 0x3db00000, 0x3e555555, 0x3e955555, 0x3ed55556, 0x3f155550, 0x3f555555]


@pytest.fixture
def gen(rng):
    return np.random.default_rng(rng.integers(1 << 62))


def _bits(t):
    """A tensor's bit patterns (on the CPU), so -0.0 != +0.0 and NaNs compare by payload."""
    t = t.detach().cpu().contiguous()
    return t.view(INT_OF[t.dtype]) if t.dtype in INT_OF else t


def _assert_same_bits(ours, theirs, what):
    a, b = _bits(ours).reshape(-1), _bits(theirs).reshape(-1)
    assert a.shape == b.shape, f"{what}: {a.numel()} values against {b.numel()}"
    bad = torch.nonzero(a != b).reshape(-1)
    assert bad.numel() == 0, (f"{what}: {bad.numel()} of {a.numel()} differ, first at {int(bad[0])}: "
                              f"bnb4 {ours.reshape(-1)[int(bad[0])].item()!r} (bits {int(a[bad[0]]):#x}), "
                              f"bitsandbytes {theirs.reshape(-1)[int(bad[0])].item()!r} (bits {int(b[bad[0]]):#x})")


def _assert_same_values(ours, theirs, what):
    """As _assert_same_bits, but any NaN matches any NaN (CUDA's multiplies give the canonical NaN, a
    CPU's keep the operand's payload; both are what bitsandbytes' decode produces there)."""
    a, b = ours.detach().cpu().reshape(-1), theirs.detach().cpu().reshape(-1)
    both_nan = torch.isnan(a.float()) & torch.isnan(b.float())
    _assert_same_bits(torch.where(both_nan, torch.zeros_like(a), a), torch.where(both_nan, torch.zeros_like(b), b),
                      what)


def _from_bits(bits, dtype):
    """A CPU tensor of `dtype` from an integer numpy array of its bit patterns."""
    np_int = np.int32 if dtype == torch.float32 else np.int16
    return torch.from_numpy(np.ascontiguousarray(bits.astype(np.int64).astype(np_int))).view(dtype)


def _nudged(x, gen):
    """x (a CPU tensor) with each element moved by -2..2 units in the last place of its dtype."""
    xi = x.view(INT_OF[x.dtype]).to(torch.int64) + torch.from_numpy(gen.integers(-2, 3, tuple(x.shape)))
    return xi.to(INT_OF[x.dtype]).view(x.dtype)


def _grouped_by_magnitude(t, gen):
    """t's values ordered by magnitude, shuffled within runs of 32: every block (32 or more, aligned)
    then holds values of one range, so blocks exist at every exponent, the subnormal range included."""
    order = torch.from_numpy(np.argsort(t.float().abs().numpy(), kind="stable"))
    t = t[order]
    n = t.numel() // 32 * 32
    runs = torch.from_numpy(gen.permuted(np.arange(n).reshape(-1, 32), axis=1).reshape(-1))
    return torch.cat([t[:n][runs], t[n:]])


def _every_16bit_pattern(dtype, gen, finite, by_magnitude):
    t = _from_bits(np.arange(-32768, 32768), dtype)
    if finite:
        t = t[torch.isfinite(t)]
    t = t[torch.from_numpy(gen.permutation(t.numel()))]
    return _grouped_by_magnitude(t, gen) if by_magnitude else t


def _random_f32_patterns(gen, n, finite, by_magnitude):
    bits = gen.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    if finite:  # exponent field 0..254: zeros, subnormals and every normal exponent
        exponent = gen.integers(0, 255, n).astype(np.uint32)
        bits = (bits & np.uint32(0x807FFFFF)) | (exponent << np.uint32(23))
    t = torch.from_numpy(bits.view(np.int32).copy()).view(torch.float32)
    return _grouped_by_magnitude(t, gen) if by_magnitude else t


def _near_thresholds(gen, dtype, qt, blocksize, nblocks):
    """Blocks whose absmax a (one element, +-a, at a random place) has random bits over the type's range,
    and whose other elements are the type's rounding of t * a for random thresholds t, moved by -2..2
    units in the last place: where x * rcp(a) meets t, and an exact reciprocal would give another code."""
    finfo = torch.finfo(dtype)
    # a: log-uniform over the normal range (a few past 2^126 for float32 and bfloat16, where the reciprocal
    # flushes to zero), random mantissa bits
    a = np.exp2(gen.uniform(np.log2(finfo.tiny), np.log2(float(finfo.max)), nblocks)).astype(np.float64)
    a = torch.from_numpy(a).to(torch.float32).to(dtype).float().numpy().astype(np.float64)
    a = np.where(np.isfinite(a) & (a > 0), a, 1.0)
    table = NF4_THRESHOLDS if qt == "nf4" else FP4_THRESHOLDS
    t = np.array(table, dtype=np.uint32).view(np.float32).astype(np.float64)
    picks = t[gen.integers(0, len(t), (nblocks, blocksize))]
    if qt == "fp4":
        picks = picks * gen.choice([-1.0, 1.0], (nblocks, blocksize))
    x = torch.from_numpy(picks * a[:, None]).to(torch.float32).to(dtype)  # t * a, rounded to the type
    x = _nudged(x, gen)
    x = torch.where(torch.isfinite(x) & (x.float().abs() < torch.from_numpy(a).float()[:, None]), x,
                    torch.zeros_like(x))  # a nudge must not make an element the block's max (or NaN)
    pivot = torch.from_numpy(a * gen.choice([-1.0, 1.0], nblocks)).to(torch.float32).to(dtype)
    where = torch.from_numpy(gen.integers(0, blocksize, nblocks))
    x[torch.arange(nblocks), where] = pivot
    return x.reshape(-1)


def _inputs(case, dtype, gen):
    if case == "patterns":
        if dtype == torch.float32:
            return _random_f32_patterns(gen, 1 << 18, finite=False, by_magnitude=False)
        return _every_16bit_pattern(dtype, gen, finite=False, by_magnitude=False)
    if case == "finite-by-magnitude":
        if dtype == torch.float32:
            return _random_f32_patterns(gen, 1 << 18, finite=True, by_magnitude=True)
        return _every_16bit_pattern(dtype, gen, finite=True, by_magnitude=True)
    raise ValueError(case)


def _check_quantize(A_cpu, blocksize, qt, ours, what, trim=True):
    """bitsandbytes' CUDA quantize_4bit against bnb4's on `ours`, bit for bit (an odd length as well)."""
    for n in (A_cpu.numel(), A_cpu.numel() - 1) if trim else (A_cpu.numel(),):
        A = A_cpu[:n]
        q_ref, st = F.quantize_4bit(A.cuda(), blocksize=blocksize, quant_type=qt)
        packed, absmax = bnb4.quantize_4bit(A.to(ours), blocksize, qt)
        _assert_same_bits(absmax, st.absmax, f"{what} n={n}: absmax")
        _assert_same_bits(packed, q_ref.reshape(-1), f"{what} n={n}: packed bytes")


@pytest.mark.parametrize("ours", OURS)
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
@pytest.mark.parametrize("case", ["patterns", "finite-by-magnitude"])
def test_quantize_bit_patterns(ours, case, dtype, qt, gen):
    """Every 16-bit pattern (float16, bfloat16) or 2^18 random float32 ones: NaN, Inf, subnormal and
    huge elements, and (ordered by magnitude) whole blocks of each range."""
    A = _inputs(case, DTYPES[dtype], gen)
    for blocksize in BLOCKSIZES:
        _check_quantize(A, blocksize, qt, ours, f"{case} {dtype} {qt} bs{blocksize}")


@pytest.mark.parametrize("ours", OURS)
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=str)
def test_quantize_near_thresholds(ours, dtype, qt, gen):
    """Elements within two ulps of a threshold times their block's absmax (_near_thresholds)."""
    for blocksize in BLOCKSIZES:
        A = _near_thresholds(gen, DTYPES[dtype], qt, blocksize, max(8, (1 << 17) // blocksize))
        _check_quantize(A, blocksize, qt, ours, f"near thresholds {dtype} {qt} bs{blocksize}", trim=False)


@pytest.mark.parametrize("ours", OURS)
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", ["f32", "bf16"], ids=str)
def test_quantize_near_flush(ours, dtype, qt, gen):
    """Elements whose x * rcp(absmax) lies within a few ulps of +-FLT_MIN: a normal product keeps FP4's
    sign, a flushed one does not (float16 cannot get there: its values are >= 2^-24)."""
    dt = DTYPES[dtype]
    for blocksize in BLOCKSIZES:
        nblocks = max(8, (1 << 16) // blocksize)
        a = np.exp2(gen.uniform(0, 126, nblocks)) * gen.uniform(1, 2, nblocks)
        a = torch.from_numpy(a).to(torch.float32).to(dt).float().numpy().astype(np.float64)
        tiny = np.float64(np.finfo(np.float32).tiny)
        x = torch.from_numpy(tiny * a[:, None] * gen.choice([-1.0, 1.0], (nblocks, blocksize))).to(torch.float32).to(dt)
        x = _nudged(x, gen)
        x[:, 0] = torch.from_numpy(a).to(torch.float32).to(dt)
        _check_quantize(x.reshape(-1), blocksize, qt, ours, f"near flush {dtype} {qt} bs{blocksize}", trim=False)


@pytest.mark.parametrize("ours", OURS)
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("blocksize", [32, 64, 256, 4096])
def test_dequantize_any_absmax(ours, blocksize, qt, gen):
    """Random codes times absmax of every kind: random bit patterns (NaN, Inf, subnormal, negative),
    finite ones over the whole range, zeros; into float32, float16 and bfloat16 (results that are
    subnormal in float32 flush to zero; past the output type's range, Inf)."""
    n = 1 << 18
    nb = n // blocksize
    packed = torch.from_numpy(gen.integers(0, 256, n // 2, dtype=np.uint8))
    kinds = gen.integers(0, 4, nb)
    raw = gen.integers(0, 1 << 32, nb, dtype=np.uint64).astype(np.uint32)
    finite = (raw & np.uint32(0x807FFFFF)) | (gen.integers(0, 255, nb).astype(np.uint32) << np.uint32(23))
    bits = np.where(kinds == 0, raw, np.where(kinds == 1, finite & np.uint32(0x7FFFFFFF),
                                              np.where(kinds == 2, finite, 0)))
    absmax = torch.from_numpy(bits.astype(np.uint32).view(np.int32).copy()).view(torch.float32)
    for dtype in DTYPES.values():
        ref = torch.empty(n, dtype=dtype, device="cuda")
        F.dequantize_4bit(packed.cuda().reshape(-1, 1), absmax=absmax.cuda(), out=ref, blocksize=blocksize,
                          quant_type=qt)
        got = bnb4.dequantize_4bit(packed.to(ours), absmax.to(ours), blocksize, qt, n, dtype)
        _assert_same_values(got, ref, f"dequantize {qt} bs{blocksize} -> {dtype}")


@pytest.mark.parametrize("ours", OURS)
@pytest.mark.parametrize("qt", ["nf4", "fp4"])
def test_dequantize_near_flush(ours, qt, gen):
    """code * absmax within ulps of FLT_MIN: the GPU flushes a product whose 24-bit rounding is below it,
    which IEEE's gradual underflow would round up to FLT_MIN."""
    book = np.array(bnb4.codebook(qt), np.float64)
    nonzero = np.abs(book[book != 0])
    bs, nb = 64, 4096
    c = gen.choice(nonzero, nb)
    absmax = torch.from_numpy(np.float64(np.finfo(np.float32).tiny) / c * (1 + gen.integers(-64, 65, nb) * 2.0 ** -25))
    absmax = absmax.to(torch.float32)
    packed = torch.from_numpy(gen.integers(0, 256, nb * bs // 2, dtype=np.uint8))
    for dtype in (torch.float32, torch.bfloat16):
        ref = torch.empty(nb * bs, dtype=dtype, device="cuda")
        F.dequantize_4bit(packed.cuda().reshape(-1, 1), absmax=absmax.cuda(), out=ref, blocksize=bs, quant_type=qt)
        got = bnb4.dequantize_4bit(packed.to(ours), absmax.to(ours), bs, qt, nb * bs, dtype)
        _assert_same_bits(got, ref, f"dequantize near FLT_MIN {qt} -> {dtype}")


def _absmax_vectors(gen, nb):
    """absmax vectors as a checkpoint may hold them: the absmax of quantized weights of one scale, of
    scales spread over many decades, with zero blocks and a few huge ones, and tiny ones."""
    yield "weights", F.quantize_4bit(torch.from_numpy(gen.standard_normal(nb * 64, dtype=np.float32)).cuda()
                                     * 0.02, blocksize=64)[1].absmax
    spread = np.exp2(gen.uniform(-40, 40, nb)).astype(np.float32)
    yield "spread", torch.from_numpy(spread).cuda()
    mixed = spread.copy()
    mixed[gen.integers(0, nb, nb // 16)] = 0.0
    mixed[gen.integers(0, nb, 4)] = np.float32(2.0 ** 100)
    yield "zeros-and-huge", torch.from_numpy(mixed).cuda()
    yield "tiny", torch.from_numpy(np.exp2(gen.uniform(-149, -120, nb)).astype(np.float32)).cuda()


@pytest.mark.parametrize("ours", OURS)
@pytest.mark.parametrize("nb", [256, 4097, 65536 + 13], ids=lambda n: f"nb{n}")
def test_double_quant(ours, nb, gen):
    """bitsandbytes' compress_statistics: offset = torch's mean, then its 8-bit blockwise quantizer of
    absmax - offset, blocks of 256. For bitsandbytes' offset bnb4 writes the same codes and nested
    absmax; its own mean is within one ulp of torch's; the decoded absmax is bitsandbytes' bit for bit."""
    for name, absmax in _absmax_vectors(gen, nb):
        offset = absmax.mean()
        codes_ref, state2 = F.quantize_blockwise(absmax - offset, blocksize=256)
        what = f"double quant nb={nb} {name}"
        nested = bnb4.double_quantize(absmax.to(ours), 256, offset=offset.item())
        _assert_same_bits(nested.codes, codes_ref, f"{what}: codes")
        _assert_same_bits(nested.absmax, state2.absmax, f"{what}: nested absmax")
        own = bnb4.double_quantize(absmax.to(ours), 256)
        ulps = abs(int(np.float32(own.offset).view(np.int32)) - int(np.float32(offset.item()).view(np.int32)))
        assert ulps <= 1, f"{what}: bnb4's offset {own.offset!r} is {ulps} ulps from torch's mean {offset.item()!r}"
        decoded_ref = F.dequantize_blockwise(codes_ref, state2) + offset
        q = bnb4.QuantizedTensor(torch.zeros((nb * 64 + 1) // 2, dtype=torch.uint8, device=ours), None, (nb * 64,),
                                 64, "nf4", "float32", nested)
        _assert_same_bits(q.absmax_f32(), decoded_ref, f"{what}: decoded absmax")


# bitsandbytes' test_matmul_4bit limit on mean |A W^T - out| (format.md section 9, item 6), and the
# rounding-only bound between two implementations on one quantized weight (test_bitsandbytes.py)
MATMUL_LIMIT = {"nf4": 0.115, "fp4": 0.13}
RTOL = {torch.float16: 8e-3, torch.bfloat16: 6e-2}


@pytest.mark.parametrize("ours", OURS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "nested"])
@pytest.mark.parametrize("shape", [(4096, 4096), (11008, 4096), (4096, 11008)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_linear_model_sizes(ours, shape, nested, dtype, gen):
    """Model-sized layers at the batch sizes that pick bnb4's other kernels (gemv, the pipelined
    tensor-core kernel, the tile kernel): bitsandbytes' matmul_4bit output on the same quantized weight
    is the reference, within the rounding both may do."""
    if ours == "cpu" and shape != (4096, 4096):
        pytest.skip("the CPU kernels are checked on one model-sized shape (time)")
    n_out, k = shape
    W = (torch.from_numpy(gen.standard_normal((n_out, k), dtype=np.float32)) / k ** 0.5).to(dtype).cuda()
    qt = "nf4" if nested else "fp4"
    qW, st = F.quantize_4bit(W, blocksize=64 if nested else 128, quant_type=qt, compress_statistics=nested)
    Wd = F.dequantize_4bit(qW, st).float()
    q = bnb4.QuantizedTensor.from_state_dict({f"w.{key}": v for key, v in st.as_dict(packed=True).items()}
                                             | {"w": qW}, "w")
    q = _to_device(q, ours)
    bias = torch.from_numpy(gen.standard_normal(n_out, dtype=np.float32)).to(dtype).cuda()
    for m in (1, 3, 16, 40, 64, 100, 512):
        x = torch.from_numpy(gen.standard_normal((m, k), dtype=np.float32)).to(dtype).cuda()
        ref = bnb.matmul_4bit(x, qW.t(), st, bias=bias)
        out = q.linear(x.to(ours), bias.to(ours)).cuda()
        exact = torch.nn.functional.linear(x.float(), W.float(), bias.float())
        assert (exact - out.float()).abs().mean() < MATMUL_LIMIT[qt], f"m={m}: bitsandbytes' error limit"
        scale = x.float().abs() @ Wd.abs().t() + bias.float().abs()
        err = (out.float() - ref.float()).abs()
        worst = int(torch.argmax(err / scale))
        assert torch.all(err <= RTOL[dtype] * scale), (
            f"m={m}: bnb4 and bitsandbytes differ by {err.reshape(-1)[worst].item():.4g} at {worst}, "
            f"bound {RTOL[dtype] * scale.reshape(-1)[worst].item():.4g}")


def _to_device(q, device):
    """A QuantizedTensor with every array moved to `device`."""
    nested = q.nested
    if nested is not None:
        nested = bnb4.NestedAbsmax(nested.codes.to(device), nested.absmax.to(device), nested.code.to(device),
                                   nested.offset, nested.blocksize)
    return bnb4.QuantizedTensor(q.packed.to(device), None if q.absmax is None else q.absmax.to(device), q.shape,
                                q.blocksize, q.quant_type, q.dtype, nested)
