"""The `shadowtap` front door and the `extract` subcommand.

Subcommands are found through the `shadowtap.commands` entry-point group, so each package
registers its own and this module never imports replay or analyze. User errors are one plain
line on stderr (`error: …`) and an exit code: 0 fine, 1 input partly unreadable (results
kept), 2 usage error or an input that is not a capture at all.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import UserError
from .exchange import Exchange, json_line
from .extract import Extractor, InputReport, input_size, parse_server, read_capture
from .har import HarWriter
from .http1 import DEFAULT_MAX_BODY
from .pcapfile import NotACapture, Record


# The subcommands shipped with shadowtap (pyproject.toml's `shadowtap.commands` entry points,
# which other packages may add to): a named one is loaded without scanning the installed
# distributions for entry points, which costs more than loading the command (50 ms).
COMMANDS = {
    "extract": "capture.cli:register_extract", "capture": "capture.agent:register",
    "replay": "replay.cli:register", "mirror": "replay.mirror:register",
    "analyze": "analyze.cli:register", "show": "analyze.show:register", "demo": "analyze.demo:register",
}


def version() -> str:
    from importlib import metadata

    try:
        return metadata.version("shadowtap")
    except metadata.PackageNotFoundError:
        return "0+unknown"


class _Version(argparse.Action):
    """--version, looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        print(f"shadowtap {version()}")
        parser.exit()


def _registrars() -> dict[str, str]:
    """Every subcommand: the shipped ones and any other package's entry points."""
    from importlib import metadata

    found = {ep.name: ep.value for ep in metadata.entry_points(group="shadowtap.commands")}
    return {**COMMANDS, **found}


def _size(text: str) -> int:
    """`64M`, `512k`, `1G` or a plain byte count."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 64M)") from None


def positive(kind: type) -> Any:
    """An argparse type: a number of `kind` above zero."""
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return v
    return parse


# -- extract ----------------------------------------------------------------------------
def register_extract(sub: Any) -> None:
    p = sub.add_parser(
        "extract",
        help="reassemble TCP in pcap/pcapng files and pair HTTP/1.x requests with responses",
        description="Read captures (pcap or pcapng, optionally gzipped, or - for stdin) and "
        "write the HTTP/1.x exchanges they hold.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="capture file, or - for stdin")
    out = p.add_argument_group("outputs (at least one; default --jsonl -)")
    out.add_argument("-o", "--output", metavar="REC", help="write a recording directory (Parquet + manifest)")
    out.add_argument("--jsonl", metavar="FILE", help="one JSON object per exchange (- for stdout)")
    out.add_argument("--har", metavar="FILE", help="HAR 1.2 file (- for stdout)")
    out.add_argument("--table", metavar="FILE", help="aligned text, one line per exchange, for people (- for stdout)")
    p.add_argument("--port", type=int, action="append", default=[], metavar="P",
                   help="the server listens on port P (when the capture lacks SYNs)")
    p.add_argument("--server", action="append", default=[], metavar="HOST:PORT",
                   help="the server's address (repeatable)")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N exchanges")
    p.add_argument("--max-body", type=_size, default=DEFAULT_MAX_BODY, metavar="BYTES",
                   help="keep at most this much of each body (default 64M); the rest is counted")
    p.add_argument("--idle-timeout", type=float, default=300.0, metavar="S",
                   help="capture-time seconds after which an idle connection is closed (default 300)")
    p.add_argument("--engine", choices=("auto", "python", "native"), default="auto",
                   help="the extraction core: native (C, JSON lines only) or python; auto (default) "
                   "takes native when it is built and JSON lines are the only output")
    p.set_defaults(func=cmd_extract)


class _Sinks:
    """The outputs an extraction writes to, opened together and closed together."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.closers: list[Callable[[], None]] = []
        self.adders: list[Callable[[Exchange], None]] = []
        self.flushers: list[Callable[[], None]] = []
        self.rec = Path(args.output) if args.output else None
        if self.rec is not None:
            from .recording import ExchangeWriter  # pyarrow: loaded only when a recording is asked for

            w = ExchangeWriter(self.rec)
            self.adders.append(w.add)
            self.closers.append(w.close)
        jsonl = args.jsonl if args.jsonl or args.har or args.output or args.table else "-"
        if jsonl:
            f = self._open(jsonl)
            write = f.write
            self.adders.append(lambda ex: write(json_line(ex) + "\n"))
            self.closers.append(f.flush if jsonl == "-" else f.close)
        if args.har:
            f = self._open(args.har)
            har = HarWriter(f, version())
            self.adders.append(har.add)
            self.closers.append(har.close)
            self.closers.append(f.flush if args.har == "-" else f.close)

        if args.table:
            f = self._open(args.table)
            write = f.write
            write(TABLE_HEAD + "\n")
            self.adders.append(lambda ex: write(table_line(ex) + "\n"))
            self.closers.append(f.flush if args.table == "-" else f.close)

    def _open(self, path: str) -> Any:
        if path == "-":
            self.flushers.append(sys.stdout.flush)
            return sys.stdout
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # a file that already existed keeps its mode otherwise
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror}") from None
        return os.fdopen(fd, "w", buffering=1 << 20)

    def add(self, ex: Exchange) -> None:
        for a in self.adders:
            a(ex)

    def flush(self) -> None:
        """Live input (`tcpdump -w - | shadowtap extract -`): show exchanges as they complete."""
        for f in self.flushers:
            f()

    def close(self) -> None:
        for c in self.closers:
            c()


TABLE_HEAD = f"{'time':>15}  {'client':21} {'method':7} {'target':40} {'status':>6} {'bytes':>8} {'ms':>7}  flags"


def table_line(ex: Exchange) -> str:
    req, resp = ex.request, ex.response
    t = req.t_start if req else resp.t_start if resp else 0.0
    clock = time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}"
    target = (req.target or "") if req else "-"
    if len(target) > 40:
        target = target[:39] + "…"
    ms = f"{(resp.t_end - req.t_start) * 1e3:.1f}" if req and resp else "-"
    return (f"{clock:>15}  {ex.client:21} {(req.method if req else '-') or '-':7} {target:40} "
            f"{(resp.status if resp else '-') or '-'!s:>6} {resp.body_len if resp else '-'!s:>8} {ms:>7}  "
            + " ".join(sorted(ex.flags)))


def _progress() -> Any:
    if not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                    TextColumn("{task.fields[exchanges]} exchanges"), TimeRemainingColumn(),
                    transient=True, console=Console(stderr=True))  # stdout may be --jsonl -


def _native_engine(args: argparse.Namespace) -> Any | None:
    """The compiled module when --engine asks for it (or auto finds it fits), else None."""
    engine = getattr(args, "engine", "auto")
    if engine == "python":
        return None
    only_jsonl = not (args.output or args.har or args.table)
    if engine == "native" and not only_jsonl:
        raise UserError("--engine native writes JSON lines only: drop -o/--har/--table, or use --engine python")
    from .native_extract import load

    native = load() if only_jsonl else None
    if engine == "native" and native is None:
        raise UserError("--engine native: capture._native is not built (run `make venv`; "
                        "SHADOWTAP_PURE=1 installs without it), or use --engine python")
    return native


def _run_inputs(paths: list[str], batches: Callable[[str, InputReport], Iterable[Any]],
                emit: Callable[[Any], bool], finish: Callable[[], Any], flush: Callable[[], None],
                close: Callable[[], None], written: Callable[[], int]) -> tuple[list[InputReport], int]:
    """Each input in turn, its batches to `emit` until it says stop (--limit), then what
    `finish` completes; the same for both engines. Returns the inputs' reports and the exit
    code so far (1 when an input was corrupt); trouble the user can fix is a UserError."""
    reports: list[InputReport] = []
    code = 0
    progress = _progress()
    try:
        if progress is not None:
            progress.start()
        going = True
        for path in paths:
            rep = InputReport(path)
            reports.append(rep)
            task = None
            if progress is not None:
                task = progress.add_task(os.path.basename(path), total=input_size(path), exchanges=0)
            try:
                for batch in batches(path, rep):
                    going = emit(batch)
                    if path == "-":
                        flush()
                    if task is not None:
                        progress.update(task, completed=rep.bytes, exchanges=written())
                    if not going:
                        break
            except NotACapture as e:
                raise UserError(str(e)) from None
            except BrokenPipeError:
                raise
            except OSError as e:
                raise UserError(f"{path}: {e.strerror or e}") from None
            if rep.error:
                code = 1
            if not going:
                break
        if going:
            emit(finish())
    finally:
        if progress is not None:
            progress.stop()
        close()
    for rep in reports:
        for w in rep.warnings:
            print(f"warning: {w}", file=sys.stderr)
        if rep.error:
            print(f"error: {rep.error}", file=sys.stderr)
    return reports, code


def _summary(written: int, counts: dict[str, Any]) -> None:
    flagged = ", ".join(f"{k} {v}" for k, v in counts["exchanges_by_flag"].items()) or "none"
    print(f"extracted {written} exchanges from {counts['packets']} packets "
          f"({counts['http_connections']} HTTP of {counts['tcp_connections']} TCP connections); "
          f"flagged: {flagged}", file=sys.stderr)


def cmd_extract(args: argparse.Namespace) -> int:
    for path in args.inputs:
        if path != "-" and not os.path.isfile(path):
            raise UserError(f"{path}: no such file")
    try:
        servers = [parse_server(s) for s in args.server]
    except ValueError as e:
        raise UserError(str(e)) from None
    native = _native_engine(args)
    if native is not None:
        return _extract_native(args, native, servers)
    ex = Extractor(args.port, servers, args.max_body, args.idle_timeout)
    # Millions of short-lived objects and few cycles: the default collector runs a full pass
    # dozens of times per million packets for nothing.
    gc.freeze()
    gc.set_threshold(100_000, 50, 1000)
    sinks = _Sinks(args)
    started = time.time()
    limit = args.limit
    written = 0

    def emit(batch: list[Exchange]) -> bool:
        nonlocal written
        for e in batch:
            if limit is not None and written >= limit:
                return False
            sinks.add(e)
            written += 1
        return limit is None or written < limit

    reports, code = _run_inputs(args.inputs, lambda path, rep: map(ex.feed, read_capture(path, rep)), emit,
                                ex.finish, sinks.flush, sinks.close, lambda: written)
    counts = ex.counts()
    if sinks.rec is not None:
        from .recording import write_manifest

        write_manifest(sinks.rec, "extract", {
            "tool": "shadowtap", "version": version(),
            "command": ["shadowtap", "extract", *sys.argv[2:]],
            "started": started, "seconds": round(time.time() - started, 3),
            "inputs": [vars(r) for r in reports],
            "options": {"ports": args.port, "servers": args.server, "max_body": args.max_body,
                        "limit": limit, "idle_timeout": args.idle_timeout},
            "written": written,
            "counts": counts,
        })
    _summary(written, counts)
    return code


def _open_binary(path: str) -> tuple[Any, Callable[[], None]]:
    """--jsonl's stream for the native engine (bytes), and how to finish it."""
    if path == "-":
        out = getattr(sys.stdout, "buffer", None)
        if out is None:  # stdout replaced by a text-only stream (tests calling main())
            text = sys.stdout
            return _TextBytes(text), text.flush
        sys.stdout.flush()
        return out, out.flush
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # a file that already existed keeps its mode otherwise
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    f = os.fdopen(fd, "wb", buffering=1 << 20)
    return f, f.close


class _TextBytes:
    def __init__(self, text: Any) -> None:
        self.text = text

    def write(self, b: bytes) -> None:
        self.text.write(b.decode("ascii"))

    def flush(self) -> None:
        self.text.flush()


def _extract_native(args: argparse.Namespace, native: Any, servers: list[tuple[bytes, int]]) -> int:
    """cmd_extract with the native engine: the same inputs, outputs, messages and exit codes,
    for the one output it writes (JSON lines)."""
    from .native_extract import NativeExtractor

    ex = NativeExtractor(native, args.port, servers, args.max_body, args.idle_timeout)
    out, close = _open_binary(args.jsonl or "-")
    write = out.write
    limit = args.limit
    written = 0

    def emit(batch: tuple[bytes, int]) -> bool:
        """Write whole lines up to --limit; False once the limit is reached (like emit())."""
        nonlocal written
        lines, n = batch
        if limit is None:
            write(lines)
            written += n
            return True
        room = limit - written
        if n < room:
            write(lines)
            written += n
            return True
        cut = 0
        for _ in range(room):
            cut = lines.index(b"\n", cut) + 1
        write(lines[:cut])
        written = limit
        return False

    reports, code = _run_inputs(args.inputs, ex.read, emit, ex.finish, out.flush, close, lambda: written)
    counts = ex.counts()
    _summary(written, counts)
    return code


# -- front door -------------------------------------------------------------------------
def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The front door. With `only`, just that subcommand's module is loaded: `shadowtap
    capture` on a node must not pay for pandas and pyarrow, which analyze and replay import."""
    parser = argparse.ArgumentParser(
        prog="shadowtap",
        description="Test a new release against real production traffic, offline: "
        "capture, extract, replay to a shadow, analyze the differences.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    table = {only: COMMANDS[only]} if only in COMMANDS else _registrars()
    for name in sorted(table):
        if only is None or name == only:
            module, _, func = table[name].partition(":")
            getattr(importlib.import_module(module), func)(sub)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand named on the command line, if it is one (else every one is loaded, for
    the help or the error that lists them)."""
    first = next((a for a in argv if not a.startswith("-")), None)
    if first in COMMANDS:
        return first
    return first if first is not None and first in _registrars() else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except BrokenPipeError:
        # `… | head`: the reader left. Not an error; silence the flush at exit too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
