"""Compiles the extraction hot path with mypyc (the metadata lives in pyproject.toml).

The cores are plain, fully typed Python; mypyc turns them into C extensions that run about
twice as fast, which is most of what extract's throughput target asks for. Set
SHADOWTAP_PURE=1 to install them as plain Python (slower, same behaviour).
"""
import os

from setuptools import setup

HOT = ["capture/pcapfile.py", "capture/layers.py", "capture/tcp.py", "capture/message.py",
       "capture/http1.py", "capture/pairing.py"]

ext_modules = []
if os.environ.get("SHADOWTAP_PURE") != "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(HOT, opt_level="3")

setup(ext_modules=ext_modules)
