"""Capture-side of shadowtap: reading captures, reassembling TCP, parsing HTTP/1.x, and the
recording format the other stages read.

The hot modules may be compiled with mypyc (setup.py). In a source checkout a compiled
module shadows its source, so an edit to the source would be silently ignored: refuse that,
and likewise for capture._native, compiled from native/*.c and *.h. (Only there: an installed
wheel writes both files in archive order, and its sources never change.)
"""
from __future__ import annotations

import glob
import os

_here = os.path.dirname(os.path.abspath(__file__))
_checkout = os.path.exists(os.path.join(_here, os.pardir, "setup.py"))
for _so in glob.glob(os.path.join(_here, "*.so")) if _checkout else ():
    _py = os.path.join(_here, os.path.basename(_so).split(".", 1)[0] + ".py")
    if os.path.exists(_py) and os.path.getmtime(_py) > os.path.getmtime(_so):
        raise ImportError(
            f"{_py} changed after it was compiled: run `make venv` to rebuild "
            f"(or delete {_so} to run it as plain Python)"
        )
    if os.path.basename(_so).startswith("_native."):  # built from native/*.c and *.h
        _srcs = [p for p in glob.glob(os.path.join(_here, "native", "*.[ch]"))
                 if not os.path.basename(p).startswith("_")]  # '_' files are never built
        _new = max(_srcs, key=os.path.getmtime, default=None)
        if _new is not None and os.path.getmtime(_new) > os.path.getmtime(_so):
            raise ImportError(
                f"{_new} changed after {_so} was compiled: run `make venv` to rebuild "
                f"(or delete {_so} to use the Python engine)"
            )
