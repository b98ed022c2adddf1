"""Replay: send captured requests to shadow targets and record their answers.

As in capture/__init__.py: in a source checkout a compiled module (mypyc's planning modules,
and _sender from native/*.c) shadows its source, so an edit to the source would be
silently ignored: refuse that. (Only there: an installed wheel's sources never change.)
"""
from __future__ import annotations

import glob
import os

_here = os.path.dirname(os.path.abspath(__file__))
_checkout = os.path.exists(os.path.join(_here, os.pardir, "setup.py"))
for _so in glob.glob(os.path.join(_here, "*.so")) if _checkout else ():
    _name = os.path.basename(_so).split(".", 1)[0]
    _srcs = (glob.glob(os.path.join(_here, "native", "*.[ch]")) if _name == "_sender"
             else [os.path.join(_here, _name + ".py")])
    _src = max(_srcs, key=lambda p: os.path.getmtime(p) if os.path.exists(p) else 0.0, default="")
    if os.path.exists(_src) and os.path.getmtime(_src) > os.path.getmtime(_so):
        raise ImportError(
            f"{_src} changed after it was compiled: run `make venv` to rebuild "
            f"(or delete {_so} to run without it)"
        )
