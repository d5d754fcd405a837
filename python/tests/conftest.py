"""Shared fixtures for the bnb4 Python tests.

`kind` runs a test on numpy arrays, torch CPU tensors and torch CUDA tensors; the torch variants skip
with a message when torch (or a GPU, or libbnb4's CUDA backend) is missing. `rng` is a numpy
Generator seeded from one run-wide seed (printed in the header; set BNB4_TEST_SEED to repeat a run)
and the test's id, so every test sees fresh data that can be reproduced.
"""

import os
import random
import zlib

import numpy as np
import pytest

import bnb4

try:
    import ml_dtypes
except ImportError:  # numpy bfloat16 cases skip with a message
    ml_dtypes = None

try:
    import torch
except ImportError:  # torch cases skip with a message
    torch = None

SEED = int(os.environ.get("BNB4_TEST_SEED", random.SystemRandom().randrange(1 << 31)))


def pytest_report_header(config):
    torch_line = f"torch {torch.__version__}" if torch is not None else "torch not installed (torch tests skip)"
    return [f"bnb4 test seed: {SEED} (set BNB4_TEST_SEED={SEED} to repeat)",
            f"libbnb4 {bnb4.library_version()} from {bnb4.library_path}; CUDA devices: {bnb4.cuda_device_count()}",
            f"numpy {np.__version__}; ml_dtypes {'installed' if ml_dtypes else 'not installed (numpy bf16 skips)'}; "
            + torch_line]


@pytest.fixture
def rng(request):
    return np.random.default_rng([SEED, zlib.crc32(request.node.nodeid.encode())])


def cuda_usable():
    return torch is not None and torch.cuda.is_available() and bnb4.cuda_device_count() > 0


class Kind:
    """Makes test data of one array kind from numpy arrays, and reads results back as numpy."""

    def __init__(self, name):
        self.name = name
        self.device = {"numpy": None, "torch-cpu": "cpu", "torch-cuda": "cuda"}[name]

    def __repr__(self):
        return self.name

    @property
    def is_torch(self):
        return self.device is not None

    def dtype(self, name):
        if not self.is_torch:
            if name == "bfloat16":
                if ml_dtypes is None:
                    pytest.skip("numpy bfloat16 needs ml_dtypes, which is not installed")
                return np.dtype(ml_dtypes.bfloat16)
            return np.dtype(name)
        return getattr(torch, name)

    def arr(self, a, dtype=None):
        """numpy -> this kind; dtype is a name ("float16", ...) or None to keep a's dtype."""
        a = np.asarray(a)
        if not self.is_torch:
            return a.astype(self.dtype(dtype)) if dtype else a.copy()
        if dtype in ("bfloat16", "float16"):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device).to(self.dtype(dtype))
        t = torch.from_numpy(np.ascontiguousarray(a)).to(self.device)
        return t.to(self.dtype(dtype)) if dtype else t

    def np(self, x):
        """this kind -> numpy; float arrays as float32 (exact for all three dtypes)."""
        if not self.is_torch:
            if x.dtype.kind == "f" or (ml_dtypes is not None and x.dtype == ml_dtypes.bfloat16):
                return x.astype(np.float32)
            return x
        x = x.detach()
        if x.is_floating_point():
            x = x.float()
        return x.cpu().numpy()

    def dtype_name(self, x):
        return str(x.dtype).replace("torch.", "")

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()


def _kind_params():
    marks = {"numpy": [], "torch-cpu": [], "torch-cuda": []}
    return [pytest.param(Kind(name), id=name, marks=m) for name, m in marks.items()]


@pytest.fixture(params=_kind_params())
def kind(request):
    k = request.param
    if k.is_torch and torch is None:
        pytest.skip("torch is not installed: torch tensor tests skipped")
    if k.device == "cuda" and not cuda_usable():
        pytest.skip("no CUDA device, or libbnb4 built without its CUDA backend: torch CUDA tests skipped")
    return k


@pytest.fixture
def numpy_kind():
    return Kind("numpy")
