"""Envoy's shadow authority rule, case by case (DESIGN.md, shadowAppendedHost)."""
import pytest

from replay.authority import port_start, shadow_host, unshadow_host

CASES = [
    ("httpbin:8000", "httpbin-shadow:8000"),
    ("httpbin", "httpbin-shadow"),
    ("cluster1", "cluster1-shadow"),
    ("api.example.com:443", "api.example.com-shadow:443"),
    ("api.example.com", "api.example.com-shadow"),
    ("[::1]:80", "[::1]-shadow:80"),
    ("[::1]", "[::1]-shadow"),
    ("[2001:db8::7]:8443", "[2001:db8::7]-shadow:8443"),
    ("10.0.0.7:8000", "10.0.0.7-shadow:8000"),
    ("10.0.0.7", "10.0.0.7-shadow"),
    ("host:", "host-shadow:"),  # an empty port is still a port start, as in Envoy
    ("a:b:c", "a:b-shadow:c"),  # the last colon
]


@pytest.mark.parametrize("host,expected", CASES)
def test_shadow_host(host: str, expected: str) -> None:
    assert shadow_host(host) == expected


@pytest.mark.parametrize("host,expected", CASES)
def test_unshadow_inverts(host: str, expected: str) -> None:
    assert unshadow_host(expected) == host


def test_unshadow_rejects_unsuffixed() -> None:
    assert unshadow_host("httpbin:8000") is None
    assert unshadow_host("[::1]:80") is None


def test_port_start() -> None:
    assert port_start("[::1]") == -1
    assert port_start("[::1]:80") == 5
    assert port_start("x") == -1


def test_custom_suffix() -> None:
    assert shadow_host("svc:80", "-canary") == "svc-canary:80"
