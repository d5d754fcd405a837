"""Whole quantized tensors: packed codes + plain or double-quantized ("nested") absmax + shape,
blocksize and quant type, as bitsandbytes' QuantState holds them, and the bridge to and from a
bitsandbytes state_dict (Linear4bit / transformers checkpoints, format.md section 6):

  P.weight                                   packed codes in quant_storage, [(n+1)//(2*itemsize), 1]
  P.weight.absmax                            float32 [nblocks], or uint8 codes when nested
  P.weight.quant_map                         float32 [16]
  P.weight.nested_absmax                     float32 [ceil(nblocks/256)]          (nested only)
  P.weight.nested_quant_map                  float32 [256]                        (nested only)
  P.weight.quant_state.bitsandbytes__nf4     uint8 JSON: quant_type, blocksize, dtype, shape
                                             (+ nested_blocksize, nested_dtype, nested_offset)

All arrays of one QuantizedTensor are numpy arrays, or torch tensors on one device; its methods
return arrays of that kind.
"""

import ctypes
import json

import numpy as np

from . import _lib
from ._api import NF4, blocks, make_qtensor, nested_code, positive_int, quant_type_code, quant_type_name
from ._api import quant_map as _quant_map_table
from ._arrays import DTYPE_NAMES, kind_of, resolve_dtype, same_kind

_QS_PREFIX = "quant_state.bitsandbytes__"
_PACKED_KEYS = {"absmax", "quant_map", "nested_absmax", "nested_quant_map"}
_UNPACKED_KEYS = {"quant_type", "blocksize", "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset"}


class NestedAbsmax:
    """Double-quantized absmax: 8-bit codes of (absmax - offset) with the signed dynamic map `code`,
    one float32 scale per `blocksize` codes (bitsandbytes' compress_statistics=True; blocksize 256)."""

    def __init__(self, codes, absmax, code, offset, blocksize=256):
        self.codes = codes
        self.absmax = absmax
        self.code = code
        self.offset = float(np.float32(offset))
        self.blocksize = positive_int(blocksize, "nested blocksize")

    def __repr__(self):
        return (f"NestedAbsmax(codes={len(self.codes)}, absmax={len(self.absmax)}, offset={self.offset!r}, "
                f"blocksize={self.blocksize})")


def double_quantize(absmax, nested_blocksize=256, offset=None):
    """Double quantization of a float32 absmax vector, as bitsandbytes' compress_statistics=True does:
    offset = mean(absmax) (torch's CUDA float32 mean, bit for bit), then 8-bit blockwise quantization of
    absmax - offset. Codes and nested absmax are byte-identical to bitsandbytes' CUDA quantize_blockwise
    for the same offset. `offset` (a float) replaces the mean, e.g. to reproduce a QuantState made
    elsewhere (bitsandbytes on the CPU takes torch's CPU mean, another summation order)."""
    kind = kind_of(absmax, "absmax")
    if not kind.is_float32(absmax):
        raise ValueError(f"bnb4: absmax must be float32, got {kind.dtype_name(absmax)}")
    a = kind.contiguous(absmax)
    nb = kind.numel(a)
    nbs = positive_int(nested_blocksize, "nested_blocksize")
    if nb == 0:
        raise ValueError("bnb4: double_quantize got an empty absmax")
    codes = kind.empty_bytes((nb,))
    nested_absmax = kind.empty_f32((max(blocks(nb, nbs), 1),))
    given = offset is not None
    offset = ctypes.c_float(float(offset) if given else 0.0)
    with kind.run(a) as ctx:
        if not given:
            _lib.check(_lib.lib.bnb4_nested_offset(ctx, kind.ptr(a), nb, ctypes.byref(offset)))
        _lib.check(_lib.lib.bnb4_quantize_nested(ctx, kind.ptr(a), nb, offset.value, nbs, kind.ptr(codes),
                                                 kind.ptr(nested_absmax)))
    return NestedAbsmax(codes, nested_absmax, kind.f32_from(nested_code()), offset.value, nbs)


def _shape_tuple(shape):
    try:
        dims = tuple(positive_int(d, "shape entry") for d in shape)
    except TypeError:
        raise ValueError(f"bnb4: shape must be a sequence of integers, got {shape!r}") from None
    if not dims or any(d == 0 for d in dims):
        raise ValueError(f"bnb4: shape {shape!r} has no elements")
    return dims


class QuantizedTensor:
    """A 4-bit quantized tensor in bitsandbytes' format.

    packed: uint8 codes (ceil(n/2) bytes, flat); absmax: float32 [ceil(n/blocksize)] or None when
    `nested` (a NestedAbsmax) is given; shape: the original shape ([out, in] for a linear weight);
    dtype: the original dtype's name, the default for dequantize(); quant_map: the stored 16-entry
    table (kept for round trips; the kernels decode with the built-in table of quant_type, as
    bitsandbytes' CUDA kernels do)."""

    def __init__(self, packed, absmax=None, shape=None, blocksize=64, quant_type=NF4, dtype="float16",
                 nested=None, quant_map=None):
        kind = kind_of(packed, "packed")
        self.kind = kind
        if shape is None:
            raise ValueError("bnb4: QuantizedTensor needs the original shape")
        self.shape = _shape_tuple(shape)
        self.blocksize = positive_int(blocksize, "blocksize")
        self.quant_type = quant_type_code(quant_type)
        quant_type_name(self.quant_type)  # rejects codes other than 1 and 2 here, with the name
        self.dtype = DTYPE_NAMES[resolve_dtype(dtype, "dtype")]
        n = self.numel
        nb = blocks(n, self.blocksize)
        if not kind.is_uint8(packed):
            raise ValueError(f"bnb4: packed must be uint8, got {kind.dtype_name(packed)} (use from_state_dict "
                             f"for other quant_storage dtypes)")
        if kind.numel(packed) < (n + 1) // 2:
            raise ValueError(f"bnb4: packed holds {kind.numel(packed)} bytes but shape {self.shape} needs "
                             f"{(n + 1) // 2}")
        self.packed = kind.contiguous(packed).reshape(-1)
        if (absmax is None) == (nested is None):
            raise ValueError("bnb4: give exactly one of absmax (plain) or nested (double-quantized)")
        if absmax is not None:
            same_kind(kind, absmax, "absmax")
            if not kind.is_float32(absmax) or kind.numel(absmax) != nb:
                raise ValueError(f"bnb4: absmax must be float32 with {nb} values, got {kind.dtype_name(absmax)} "
                                 f"with {kind.numel(absmax)}")
            self.absmax = kind.contiguous(absmax).reshape(-1)
            self.nested = None
        else:
            if not isinstance(nested, NestedAbsmax):
                raise ValueError("bnb4: nested must be a NestedAbsmax")
            for what, arr, is_ok, count in (
                    ("nested codes", nested.codes, kind.is_uint8, nb),
                    ("nested absmax", nested.absmax, kind.is_float32, blocks(nb, nested.blocksize)),
                    ("nested code", nested.code, kind.is_float32, 256)):
                same_kind(kind, arr, what)
                if not is_ok(arr) or kind.numel(arr) != count:
                    raise ValueError(f"bnb4: {what} must hold {count} values of the right dtype, got "
                                     f"{kind.numel(arr)} of {kind.dtype_name(arr)}")
            nested.codes = kind.contiguous(nested.codes).reshape(-1)
            nested.absmax = kind.contiguous(nested.absmax).reshape(-1)
            nested.code = kind.contiguous(nested.code).reshape(-1)
            self.absmax = None
            self.nested = nested
        if quant_map is None:
            quant_map = kind.f32_from(_quant_map_table(self.quant_type))
        self.quant_map = quant_map

    # ---- basic properties -------------------------------------------------------------------------
    @property
    def numel(self):
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nblocks(self):
        return blocks(self.numel, self.blocksize)

    @property
    def quant_type_name(self):
        return quant_type_name(self.quant_type)

    def __repr__(self):
        return (f"QuantizedTensor(shape={self.shape}, {self.quant_type_name}, blocksize={self.blocksize}, "
                f"dtype={self.dtype}, {'nested' if self.nested else 'plain'} absmax, {self.kind.describe()})")

    def _view(self):
        rows = self.shape[0] if len(self.shape) > 1 else 1
        cols = self.numel // rows
        k = self.kind
        if self.nested is None:
            return make_qtensor(rows, cols, self.blocksize, self.quant_type, k.ptr(self.packed), k.ptr(self.absmax))
        nq = self.nested
        return make_qtensor(rows, cols, self.blocksize, self.quant_type, k.ptr(self.packed), None,
                            (k.ptr(nq.codes), k.ptr(nq.absmax), k.ptr(nq.code), nq.offset, nq.blocksize))

    # ---- construction -----------------------------------------------------------------------------
    @classmethod
    def quantize(cls, input, blocksize=64, quant_type=NF4, compress_statistics=False, nested_blocksize=256):
        """Quantize `input` (any shape) like bitsandbytes' quantize_4bit; with compress_statistics=True
        the absmax is double-quantized as well."""
        from ._api import quantize_4bit
        kind = kind_of(input, "input")
        packed, absmax = quantize_4bit(input, blocksize, quant_type)
        dtype = DTYPE_NAMES[kind.dtype_code(input)]
        nested = double_quantize(absmax, nested_blocksize) if compress_statistics else None
        return cls(packed, None if nested else absmax, tuple(input.shape), blocksize, quant_type, dtype, nested)

    # ---- ops --------------------------------------------------------------------------------------
    def absmax_f32(self):
        """The float32 scale of every block (decoded when nested, as bitsandbytes' dequantize_4bit does)."""
        if self.nested is None:
            return self.absmax
        k = self.kind
        out = k.empty_f32((self.nblocks,))
        q = self._view()
        with k.run(self.packed) as ctx:
            _lib.check(_lib.lib.bnb4_dequantize_nested(ctx, ctypes.byref(q), k.ptr(out)))
        return out

    def dequantize(self, dtype=None):
        """The decoded tensor, of self.shape, in `dtype` (default: the original dtype)."""
        k = self.kind
        code = resolve_dtype(self.dtype if dtype is None else dtype)
        out = k.empty(self.shape, code)
        q = self._view()
        with k.run(self.packed) as ctx:
            _lib.check(_lib.lib.bnb4_dequantize(ctx, ctypes.byref(q), code, k.ptr(out)))
        return out

    def linear(self, x, bias=None):
        """x[..., K] W^T + bias for a 2-D weight W = this tensor ([N, K]); output in x's dtype."""
        if len(self.shape) != 2:
            raise ValueError(f"bnb4: linear needs a 2-D weight, this one has shape {self.shape}")
        k = self.kind
        same_kind(k, x, "x")
        n_out, k_in = self.shape
        if len(tuple(x.shape)) < 1 or tuple(x.shape)[-1] != k_in:
            raise ValueError(f"bnb4: x has shape {tuple(x.shape)}, its last dimension must be K = {k_in}")
        dt = k.dtype_code(x)
        if dt is None:
            raise ValueError(f"bnb4: x has dtype {k.dtype_name(x)}; bnb4 takes float32, float16 or bfloat16")
        xc = k.contiguous(x)
        m = k.numel(xc) // k_in
        y = k.empty(tuple(x.shape)[:-1] + (n_out,), dt)
        bias_ptr = None
        if bias is not None:
            same_kind(k, bias, "bias")
            if tuple(bias.shape) != (n_out,):
                raise ValueError(f"bnb4: bias must have shape ({n_out},), got {tuple(bias.shape)}")
            bias = k.astype(bias, dt)
            bias_ptr = k.ptr(bias)
        if m == 0:
            return y
        q = self._view()
        with k.run(xc) as ctx:
            _lib.check(_lib.lib.bnb4_linear(ctx, ctypes.byref(q), dt, m, k.ptr(xc), bias_ptr, k.ptr(y)))
        return y

    # ---- bitsandbytes state_dict ------------------------------------------------------------------
    def quant_state_json(self):
        """The JSON bitsandbytes packs into `...quant_state.bitsandbytes__<qt>` (same key order and
        separators as its json.dumps)."""
        info = {"quant_type": self.quant_type_name, "blocksize": self.blocksize, "dtype": self.dtype,
                "shape": list(self.shape)}
        if self.nested is not None:
            info.update({"nested_blocksize": self.nested.blocksize, "nested_dtype": "float32",
                         "nested_offset": float(np.float32(self.nested.offset))})
        return json.dumps(info)

    def to_state_dict(self, prefix="weight", quant_storage="uint8"):
        """The entries bitsandbytes' Linear4bit writes for its weight, keyed under `prefix` (the weight's
        key, e.g. "model.layers.0.mlp.down_proj.weight"). quant_storage is the packed weight's dtype
        (uint8, float16, bfloat16 or float32); like bitsandbytes, the weight then holds
        (n+1)//(2*itemsize) elements, which drops the last byte when ceil(n/2) is not a multiple of
        the itemsize."""
        k = self.kind
        n = self.numel
        storage, itemsize = k.storage_dtype(quant_storage)
        elems = (n + 1) // (2 * itemsize)  # elems * itemsize <= ceil(n/2): a view of the first bytes
        weight = k.view_storage(self.packed[: elems * itemsize], storage).reshape(elems, 1)
        out = {prefix: weight}
        if self.nested is None:
            out[prefix + ".absmax"] = self.absmax
        else:
            out[prefix + ".absmax"] = self.nested.codes
        out[prefix + ".quant_map"] = self.quant_map
        if self.nested is not None:
            out[prefix + ".nested_absmax"] = self.nested.absmax
            out[prefix + ".nested_quant_map"] = self.nested.code
        blob = self.quant_state_json().encode("utf-8")
        if k.name == "torch":  # bitsandbytes keeps the JSON tensor on the CPU
            import torch
            out[prefix + "." + _QS_PREFIX + self.quant_type_name] = torch.tensor(list(blob), dtype=torch.uint8)
        else:
            out[prefix + "." + _QS_PREFIX + self.quant_type_name] = np.frombuffer(blob, dtype=np.uint8).copy()
        return out

    @classmethod
    def from_state_dict(cls, state_dict, prefix="weight"):
        """Build from a bitsandbytes state_dict (packed JSON form, or the unpacked form of
        QuantState.as_dict()). Checks what bitsandbytes' QuantState.from_dict checks; raises ValueError
        where it would raise or assert."""
        if prefix not in state_dict:
            raise ValueError(f"bnb4: the state_dict has no key {prefix!r}")
        weight = state_dict[prefix]
        k = kind_of(weight, prefix)
        sub = {key[len(prefix) + 1:]: v for key, v in state_dict.items() if key.startswith(prefix + ".")}
        qs_keys = [key for key in sub if "quant_state" in key]
        if "quant_type" in sub:
            info = {key: sub[key] for key in _UNPACKED_KEYS if key in sub}
        else:
            if len(qs_keys) != 1 or not qs_keys[0].startswith(_QS_PREFIX) or \
                    qs_keys[0][len(_QS_PREFIX):] not in ("nf4", "fp4"):
                raise ValueError(f"bnb4: expected exactly one '{prefix}.{_QS_PREFIX}nf4|fp4' entry, found "
                                 f"{[prefix + '.' + q for q in qs_keys]}")
            blob = sub[qs_keys[0]]
            raw = kind_of(blob, qs_keys[0]).to_host_bytes(blob)
            try:
                info = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise ValueError(f"bnb4: {prefix}.{qs_keys[0]} is not UTF-8 JSON: {e}") from None
            if not isinstance(info, dict):
                raise ValueError(f"bnb4: {prefix}.{qs_keys[0]} holds JSON that is not an object")
            if info.get("quant_type") != qs_keys[0][len(_QS_PREFIX):]:
                raise ValueError(f"bnb4: {prefix}.{qs_keys[0]} says quant_type {info.get('quant_type')!r}")
        unknown = sorted(set(sub) - _PACKED_KEYS - _UNPACKED_KEYS - set(qs_keys))
        unknown += sorted(set(info) - _UNPACKED_KEYS)
        if unknown:
            raise ValueError(f"bnb4: unknown quant_state entries under {prefix!r}: {unknown}")
        for key in ("quant_type", "blocksize", "dtype", "shape"):
            if info.get(key) is None:
                raise ValueError(f"bnb4: the quant_state of {prefix!r} has no {key}")
        if "absmax" not in sub:
            raise ValueError(f"bnb4: the state_dict has no {prefix}.absmax")
        shape = _shape_tuple(info["shape"])
        n = 1
        for d in shape:
            n *= d

        def local(name):  # bitsandbytes' from_dict moves every part to the weight's device
            v = sub[name]
            if k.name == "torch" and kind_of(v, name).name == "torch":
                return v.to(k.device)
            same_kind(k, v, prefix + "." + name)
            return v

        packed = k.as_bytes(weight)
        need = (n + 1) // 2
        if k.numel(packed) < need:  # bitsandbytes' own storage truncation (see to_state_dict)
            packed = k.concat_bytes(packed, k.zeros_bytes(need - k.numel(packed)))
        quant_map_arr = local("quant_map") if "quant_map" in sub else None
        nested = None
        absmax = local("absmax")
        if "nested_absmax" in sub:
            for key in ("nested_blocksize", "nested_offset"):
                if info.get(key) is None:
                    raise ValueError(f"bnb4: nested quant_state of {prefix!r} has no {key}")
            if "nested_quant_map" not in sub:
                raise ValueError(f"bnb4: nested quant_state of {prefix!r} has no nested_quant_map")
            nested = NestedAbsmax(absmax, local("nested_absmax"), local("nested_quant_map"),
                                  float(info["nested_offset"]), info["nested_blocksize"])
            absmax = None
        return cls(packed, absmax, shape, info["blocksize"], info["quant_type"], info["dtype"], nested,
                   quant_map_arr)
