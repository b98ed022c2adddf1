"""Endpoint templates: ids are recognised, words are not, user patterns win."""
import pytest

from analyze.endpoints import Endpoints, Pattern, is_id, template


@pytest.mark.parametrize("seg", ["123", "0", "-5", "3.14", "550e8400-e29b-41d4-a716-446655440000",
                                 "550e8400e29b41d4a716446655440000", "5f2b9c1a", "deadbeef0123",
                                 "aZ9kQ2xP7mN4vB8c"])
def test_ids(seg: str) -> None:
    assert is_id(seg)


@pytest.mark.parametrize("seg", ["users", "v2", "headers", "deadbeef", "facade", "get", "a1", "status",
                                 "some-long-slug-name-here"])
def test_not_ids(seg: str) -> None:
    assert not is_id(seg)


def test_templates() -> None:
    assert template("/users/123/orders/550e8400-e29b-41d4-a716-446655440000") == "/users/{id}/orders/{id}"
    assert template("/") == "/"
    assert template("/v2/items/5f2b9c1a/") == "/v2/items/{id}/"


def test_query_and_absolute_form() -> None:
    e = Endpoints()
    assert e.of("GET", "/users/7?expand=1") == "GET /users/{id}"
    assert e.of("GET", "http://svc:8000/users/7?x#y") == "GET /users/{id}"
    assert e.of(None, None) == "? /"


def test_user_patterns_win() -> None:
    e = Endpoints(["GET /files/{name}", "* /health"])
    assert e.of("GET", "/files/report.pdf") == "GET /files/{name}"
    assert e.of("POST", "/files/x") == "POST /files/x"
    assert e.of("HEAD", "/health") == "HEAD /health"
    with pytest.raises(ValueError):
        Pattern.parse("users/{id}")
