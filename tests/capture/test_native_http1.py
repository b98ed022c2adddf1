"""The native HTTP/1 parser (capture/native/http1.c) agrees with capture/http1.py exactly.

`capture._native` exposes only the whole engine, so these tests compile http1.c + util.c into
a small wrapper of their own (tests/capture/native_http1_wrapper.c) and drive both parsers
through tests/capture/native_http1_harness.py: the inputs of test_http1.py, hand-picked
corners, and seeded random streams (segmentation, gaps, garbage, chunked bodies, 1xx, HEAD and
CONNECT, HTTP/0.9, bad Content-Length values, heads over 64 KiB, small max_body). The harness
run as a script does more (thousands of random cases, real captures); see its docstring.
"""
from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.capture import native_http1_harness as harness


@pytest.fixture(scope="module")
def wrapper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    assert shutil.which("gcc") is not None, "gcc builds the project (mypyc, the native engine): install it"
    where = tmp_path_factory.mktemp("h1wrap")
    harness.build(str(where))
    sys.path.insert(0, str(where))
    try:
        yield
    finally:
        sys.path.remove(str(where))
        sys.modules.pop("h1wrap", None)


@pytest.mark.parametrize("case", harness.unit_cases(), ids=lambda c: c[0])
def test_hand_picked(wrapper: None, case: tuple) -> None:
    name, ops, max_body, overrides = case
    assert harness.run_case(ops, max_body, overrides) is None


@pytest.mark.parametrize("seed", range(4))
def test_random_streams(wrapper: None, seed: int) -> None:
    for i in range(75):
        ops, max_body, overrides = harness.gen_case(random.Random(seed * 1_000_003 + i))
        err = harness.run_case(ops, max_body, overrides)
        assert err is None, f"seed={seed} i={i}: {err}"


def test_wrapper_source_exists() -> None:
    assert Path(harness.WRAPPER).exists()
