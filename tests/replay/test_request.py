"""The request sent is the captured one: only Host, framing and the user's edits change."""
from replay.request import Edits, HostRule, build

H = [("Host", "httpbin:8000"), ("User-Agent", "curl/7.88.1"), ("accept", "*/*")]


def test_captured_bytes_with_shadow_host() -> None:
    data, host = build("GET", "/get?x=1", "HTTP/1.1", H, None, Edits())
    assert host == "httpbin-shadow:8000"
    assert data == (b"GET /get?x=1 HTTP/1.1\r\nHost: httpbin-shadow:8000\r\nUser-Agent: curl/7.88.1\r\n"
                    b"accept: */*\r\n\r\n")


def test_keep_and_literal_host() -> None:
    data, host = build("GET", "/", "HTTP/1.1", H, None, Edits(HostRule("keep")))
    assert host == "httpbin:8000" and b"Host: httpbin:8000\r\n" in data
    data, host = build("GET", "/", "HTTP/1.1", H, None, Edits(HostRule("literal", "v2.internal")))
    assert host == "v2.internal" and b"Host: v2.internal\r\n" in data and b"httpbin" not in data


def test_literal_host_added_when_missing() -> None:
    data, host = build("GET", "/", "HTTP/1.0", [("Accept", "*/*")], None, Edits(HostRule("literal", "h")))
    assert host == "h"
    assert data.startswith(b"GET / HTTP/1.0\r\nHost: h\r\n")


def test_no_host_stays_without_host() -> None:
    data, host = build("GET", "/", "HTTP/1.0", [("Accept", "*/*")], None, Edits())
    assert host is None and b"Host" not in data


def test_order_case_and_duplicates_kept() -> None:
    hs = [("X-B", "1"), ("host", "a:1"), ("x-b", "2"), ("Cookie", "k=v")]
    data, _ = build("GET", "/", "HTTP/1.1", hs, None, Edits())
    assert data == b"GET / HTTP/1.1\r\nX-B: 1\r\nhost: a-shadow:1\r\nx-b: 2\r\nCookie: k=v\r\n\r\n"


def test_chunked_body_is_sent_with_a_content_length() -> None:
    hs = [("Host", "h"), ("Transfer-Encoding", "chunked"), ("Content-Type", "text/plain")]
    data, _ = build("POST", "/post", "HTTP/1.1", hs, b"hello world", Edits())
    assert b"Transfer-Encoding" not in data
    assert data == (b"POST /post HTTP/1.1\r\nHost: h-shadow\r\nContent-Length: 11\r\n"
                    b"Content-Type: text/plain\r\n\r\nhello world")


def test_content_length_rewritten_to_the_body() -> None:
    hs = [("Host", "h"), ("content-length", "5"), ("Content-Length", "5")]
    data, _ = build("PUT", "/x", "HTTP/1.1", hs, b"abcde", Edits())
    assert data.count(b"ength") == 1 and data.endswith(b"content-length: 5\r\n\r\nabcde")


def test_body_without_framing_gets_one() -> None:
    data, _ = build("POST", "/x", "HTTP/1.1", [("Host", "h")], b"abc", Edits())
    assert data.endswith(b"Content-Length: 3\r\n\r\nabc")


def test_connection_headers_kept_as_captured() -> None:
    hs = [("Host", "h"), ("Connection", "close"), ("Keep-Alive", "timeout=5")]
    data, _ = build("GET", "/", "HTTP/1.1", hs, None, Edits())
    assert b"Connection: close\r\n" in data and b"Keep-Alive: timeout=5\r\n" in data


def test_set_and_drop_headers() -> None:
    hs = [("Host", "h"), ("User-Agent", "a"), ("X-Req", "1"), ("x-req", "2")]
    e = Edits(set_headers=(("X-Req", "9"), ("X-Shadow", "yes")), drop_headers=frozenset({"user-agent"}))
    data, _ = build("GET", "/", "HTTP/1.1", hs, None, e)
    assert data == b"GET / HTTP/1.1\r\nHost: h-shadow\r\nX-Req: 9\r\nX-Shadow: yes\r\n\r\n"


def test_set_host_wins_over_the_rule() -> None:
    data, host = build("GET", "/", "HTTP/1.1", H, None, Edits(set_headers=(("Host", "explicit"),)))
    assert host == "explicit" and b"Host: explicit\r\n" in data


def test_duplicate_host_sent_once() -> None:
    data, host = build("GET", "/", "HTTP/1.1", [("Host", "a"), ("Host", "b")], None, Edits())
    assert host == "a-shadow" and data.count(b"Host:") == 1


def test_latin1_round_trip() -> None:
    hs = [("Host", "h"), ("X-Name", "caf\xe9")]
    data, _ = build("GET", "/caf%C3%A9", "HTTP/1.1", hs, None, Edits())
    assert b"X-Name: caf\xe9\r\n" in data


def test_absolute_form_target_gets_the_rule_too() -> None:
    data, host = build("GET", "http://httpbin:8000/get?x=1", "HTTP/1.1", [("Host", "httpbin:8000")], None, Edits())
    assert data.startswith(b"GET http://httpbin-shadow:8000/get?x=1 HTTP/1.1\r\nHost: httpbin-shadow:8000\r\n")
    data, _ = build("GET", "HTTP://a", "HTTP/1.1", [], None, Edits(HostRule("literal", "b")))
    assert data.startswith(b"GET HTTP://b HTTP/1.1\r\n")
    data, _ = build("GET", "http://a:1/", "HTTP/1.1", [], None, Edits(HostRule("keep")))
    assert data.startswith(b"GET http://a:1/ HTTP/1.1\r\n")
