"""Every exchange gets exactly one decision, with the documented reasons, in order."""
from replay.plan import Captured, Job, Planner, Skip
from replay.request import Edits
from replay.sampling import Sampler


def cap(id: str = "c-0", method: str | None = "GET", target: str | None = "/x", version: str | None = "HTTP/1.1",
        headers: list[tuple[str, str]] | None = None, flags: list[str] | None = None) -> Captured:
    return Captured(id, "10.0.0.1:80", method, target, version, headers or [("Host", "h:80")], None, 1.0, flags or [])


def reason(p: Planner, c: Captured) -> str:
    d = p.decide(c)
    return "send" if isinstance(d, Job) else d.reason


def test_reasons() -> None:
    p = Planner(Edits(), Sampler())
    assert reason(p, cap()) == "send"
    assert reason(p, cap(method=None, target=None, version=None)) == "no_request"
    for f in ("gap", "incomplete", "snaplen", "body_truncated", "parse_error"):
        assert reason(p, cap(flags=[f])) == "incomplete"
    assert reason(p, cap(flags=["midstream", "interim"])) == "send"  # intact requests
    assert reason(p, cap(method="CONNECT", target="h:443")) == "upgrade"
    assert reason(p, cap(headers=[("Host", "h"), ("Upgrade", "websocket")])) == "upgrade"
    assert reason(p, cap(version="HTTP/0.9")) == "http09"
    for m in ("POST", "PUT", "PATCH", "DELETE", "PROPPATCH"):
        assert reason(p, cap(method=m)) == "write"
    for m in ("GET", "HEAD", "OPTIONS", "TRACE"):
        assert reason(p, cap(method=m)) == "send"


def test_writes_allowed() -> None:
    p = Planner(Edits(), Sampler(), allow_writes=True)
    assert reason(p, cap(method="POST")) == "send"


def test_filters() -> None:
    p = Planner(Edits(), Sampler(), methods=["get"], include=[r"^/api/"], exclude=[r"/health"])
    assert reason(p, cap(target="/api/users")) == "send"
    assert reason(p, cap(target="/static/x")) == "path"
    assert reason(p, cap(target="/api/health")) == "path"
    assert reason(p, cap(method="HEAD", target="/api/users")) == "method"


def test_sampled_out_before_writes_and_done() -> None:
    p = Planner(Edits(), Sampler(0), done={"c-0"})
    assert reason(p, cap(method="POST")) == "sampled_out"
    p = Planner(Edits(), Sampler(100), done={"c-0"})
    assert reason(p, cap()) == "done"
    assert reason(p, cap(id="c-1")) == "send"


def test_job_carries_bytes_and_host() -> None:
    d = Planner(Edits(), Sampler()).decide(cap())
    assert isinstance(d, Job)
    assert d.host == "h-shadow:80" and d.data.startswith(b"GET /x HTTP/1.1\r\nHost: h-shadow:80\r\n")
    assert d.server == "10.0.0.1:80" and d.t == 1.0


def test_skip_keeps_the_method() -> None:
    d = Planner(Edits(), Sampler()).decide(cap(method="DELETE"))
    assert isinstance(d, Skip) and d.method == "DELETE"
