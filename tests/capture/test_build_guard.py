"""A compiled module must never silently shadow a newer source file."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import capture


def stale_package(root: Path, checkout: bool) -> Path:
    """A copy of the package with a compiled module older than its source; returns the .so."""
    if checkout:
        (root / "setup.py").write_text("")  # a source checkout (the guard's scope)
    pkg = root / "capture"
    pkg.mkdir()
    shutil.copy(Path(capture.__file__), pkg / "__init__.py")
    so = pkg / "fake.cpython-311-x86_64-linux-gnu.so"
    so.write_bytes(b"")
    old = time.time() - 100
    os.utime(so, (old, old))
    (pkg / "fake.py").write_text("X = 1\n")
    return so


def import_capture(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import capture"], cwd=root, capture_output=True, text=True)


def test_stale_compiled_module_refuses_to_import(tmp_path: Path) -> None:
    so = stale_package(tmp_path, checkout=True)
    r = import_capture(tmp_path)
    assert r.returncode != 0
    assert "changed after it was compiled: run `make venv` to rebuild" in r.stderr
    os.utime(so, None)  # rebuilt: newer than its source
    r = import_capture(tmp_path)
    assert r.returncode == 0, r.stderr


def test_installed_package_is_not_guarded(tmp_path: Path) -> None:
    """A wheel install writes sources and compiled modules in archive order: no false alarm."""
    stale_package(tmp_path, checkout=False)
    r = import_capture(tmp_path)
    assert r.returncode == 0, r.stderr
