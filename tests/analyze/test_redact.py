"""Secrets never reach a report."""
from analyze import redact


def test_headers() -> None:
    out = redact.headers([("Authorization", "Bearer abc"), ("Cookie", "s=1"), ("X-Auth-Token", "t"),
                          ("Accept", "*/*"), ("X-Note", "see Bearer abc.def")])
    assert out == [["Authorization", "[redacted]"], ["Cookie", "[redacted]"], ["X-Auth-Token", "[redacted]"],
                   ["Accept", "*/*"], ["X-Note", "see Bearer [redacted]"]]


def test_json_values_and_paths() -> None:
    v = redact.value({"user": "a", "password": "p", "session_id": "s", "nested": [{"api_key": "k"}],
                      "msg": "Basic dXNlcjpwYXNz"})
    assert v == {"user": "a", "password": "[redacted]", "session_id": "[redacted]",
                 "nested": [{"api_key": "[redacted]"}], "msg": "Basic [redacted]"}
    assert redact.path_value("body.auth.token", "x") == "[redacted]"
    assert redact.path_value("header.set-cookie", "a=b") == "[redacted]"
    assert redact.path_value("body.items[0].name", "x") == "x"
