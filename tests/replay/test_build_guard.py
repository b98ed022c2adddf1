"""replay's compiled modules (mypyc's planning modules, the native send loop) must never
silently shadow a newer source."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import replay


def package(root: Path, so_name: str, source: str) -> Path:
    """A copy of the replay package in a checkout whose compiled module is older than its source."""
    (root / "setup.py").write_text("")
    pkg = root / "replay"
    (pkg / "native").mkdir(parents=True)
    shutil.copy(Path(replay.__file__), pkg / "__init__.py")
    so = pkg / so_name
    so.write_bytes(b"")
    old = time.time() - 100
    os.utime(so, (old, old))
    (pkg / source).write_text("X = 1\n")
    return so


@pytest.mark.parametrize("so_name,source", [
    ("_sender.cpython-311-x86_64-linux-gnu.so", "native/sender.c"),
    ("_sender.cpython-311-x86_64-linux-gnu.so", "native/planner.c"),
    ("_sender.cpython-311-x86_64-linux-gnu.so", "native/job.h"),
    ("plan.cpython-311-x86_64-linux-gnu.so", "plan.py"),
])
def test_stale_compiled_module_refuses_to_import(tmp_path: Path, so_name: str, source: str) -> None:
    so = package(tmp_path, so_name, source)
    r = subprocess.run([sys.executable, "-c", "import replay"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and f"{source} changed after it was compiled" in r.stderr, r.stderr
    os.utime(so, None)  # rebuilt
    r = subprocess.run([sys.executable, "-c", "import replay"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
