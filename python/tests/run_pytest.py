"""CTest's entry point to the Python tests (tests/python/tests.cmake): runs pytest on this folder with
the given arguments, or exits 77 ("skipped" for CTest) with a message when numpy or pytest is missing."""

import os
import sys

try:
    import numpy  # noqa: F401
    import pytest
except ImportError as e:
    print(f"SKIP: {e.name} is not installed, so the bnb4 Python tests did not run "
          f"(pip install numpy pytest)", flush=True)
    sys.exit(77)

sys.exit(pytest.main([os.path.dirname(os.path.abspath(__file__))] + sys.argv[1:]))
