"""A compiled module must never silently shadow a newer source file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import capture


def test_stale_compiled_module_refuses_to_import(tmp_path: Path) -> None:
    (tmp_path / "setup.py").write_text("")  # a source checkout (the guard's scope)
    pkg = tmp_path / "capture"
    pkg.mkdir()
    shutil.copy(Path(capture.__file__), pkg / "__init__.py")
    so = pkg / "fake.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    old = time.time() - 100
    os.utime(so, (old, old))
    (pkg / "fake.py").write_text("X = 1\n")
    r = subprocess.run([sys.executable, "-c", "import capture"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0
    assert "changed after it was compiled: run `make venv` to rebuild" in r.stderr
    os.utime(so, None)  # rebuilt: newer than its source
    r = subprocess.run([sys.executable, "-c", "import capture"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_installed_package_is_not_guarded(tmp_path: Path) -> None:
    """A wheel install writes sources and compiled modules in archive order: no false alarm."""
    pkg = tmp_path / "capture"
    pkg.mkdir()
    shutil.copy(Path(capture.__file__), pkg / "__init__.py")
    so = pkg / "fake.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    old = time.time() - 100
    os.utime(so, (old, old))
    (pkg / "fake.py").write_text("X = 1\n")
    r = subprocess.run([sys.executable, "-c", "import capture"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
