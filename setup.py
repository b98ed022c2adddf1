"""Compiles the extraction hot path (the metadata lives in pyproject.toml).

The cores are plain, fully typed Python; mypyc turns them into C extensions that run about
twice as fast. `shadowtap extract --jsonl` goes further: capture._native is the same core
ported to C (capture/native/*.c; the Python modules are its specification, and
tests/capture/test_native.py holds the two to byte-identical output). Set SHADOWTAP_PURE=1 to
install everything as plain Python (slower, same behaviour; extract then uses the Python
engine).
"""
import glob
import os

from setuptools import Extension, setup

HOT = ["capture/pcapfile.py", "capture/layers.py", "capture/tcp.py", "capture/message.py",
       "capture/http1.py", "capture/pairing.py",
       # replay's planning (what to send, the bytes): per request, in the feeder thread that
       # keeps the native send loop fed
       "replay/authority.py", "replay/sampling.py", "replay/request.py", "replay/plan.py"]

ext_modules = []
if os.environ.get("SHADOWTAP_PURE") != "1":
    from mypyc.build import mypycify

    ext_modules = mypycify(HOT, opt_level="3")
    ext_modules.append(Extension(
        "capture._native",
        # Files whose names start with '_' are a developer's scratch (stubs), never built.
        sources=sorted(glob.glob("capture/native/[!_]*.c")),
        depends=sorted(glob.glob("capture/native/*.h")),
        # -ffp-contract=off: no fused multiply-add, so timestamps are Python's exact doubles.
        extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-ffp-contract=off"],
        libraries=["m"],
    ))
    # replay's send loop (replay/native/sender.c; replay.client is its reference) and the
    # planning that feeds it (planner.c; replay.plan and replay.request are its reference).
    ext_modules.append(Extension(
        "replay._sender",
        sources=["replay/native/sender.c", "replay/native/planner.c"],
        depends=["replay/native/job.h"],
        extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-pthread"],
        extra_link_args=["-pthread"],
    ))

setup(ext_modules=ext_modules)
