"""Differences as field paths; equality decided cheaply; rules applied per path."""
import json

from analyze.bodies import read
from analyze.diff import Answer, HostRewrite, Rules, compare, path_pattern

NOHOST = HostRewrite(None, None)


def ans(body: object, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Answer:
    hs = headers or [("Content-Type", "application/json")]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Answer(status, hs, read(raw, hs))


def paths(a: Answer, b: Answer, rules: Rules = Rules(), host: HostRewrite = NOHOST) -> list[str]:
    return [d.path for d in compare(a, b, rules, host)]


def test_equal_is_empty_even_with_other_key_order() -> None:
    assert paths(ans({"a": 1, "b": [1, 2]}), ans({"b": [1, 2], "a": 1})) == []


def test_value_missing_added_and_type_change() -> None:
    a = ans({"user": {"id": 7, "email": "a@x", "age": 30}, "items": [{"price": 1.5}]})
    b = ans({"user": {"id": "7", "age": 30, "nick": "z"}, "items": [{"price": 2.5}]})
    assert paths(a, b) == ["body.items[0].price", "body.user.email", "body.user.id", "body.user.nick"]


def test_bool_is_not_one() -> None:
    assert paths(ans({"a": 1}), ans({"a": True})) == ["body.a"]


def test_status_and_headers() -> None:
    a = ans({"a": 1}, 200, [("Content-Type", "application/json"), ("Cache-Control", "max-age=60"), ("Date", "x")])
    b = ans({"a": 1}, 500, [("content-type", "application/json"), ("Cache-Control", "no-store"), ("Date", "y")])
    assert paths(a, b) == ["status", "header.cache-control"]


def test_odd_keys_are_quoted() -> None:
    assert paths(ans({"a b": 1}), ans({"a b": 2})) == ['body["a b"]']


def test_unordered_tolerance_and_ignore() -> None:
    a = ans({"tags": ["x", "y"], "price": 10.0, "meta": {"at": 1}, "items": [{"ids": [1, 2]}]})
    b = ans({"tags": ["y", "x"], "price": 10.004, "meta": {"at": 2}, "items": [{"ids": [2, 1]}]})
    assert paths(a, b) == ["body.items[0].ids[0]", "body.items[0].ids[1]", "body.meta.at", "body.price",
                           "body.tags[0]", "body.tags[1]"]
    rules = Rules(unordered=(path_pattern("body.tags"), path_pattern("body.items[*].ids")),
                  tolerance=((path_pattern("body.price"), 0.01),), ignore_fields=(path_pattern("body.meta.*"),))
    assert paths(a, b, rules) == []


def test_host_and_client_echo_are_artifacts() -> None:
    host = HostRewrite("svc:8000", "svc-shadow:8000", "10.0.0.9")
    a = ans({"headers": {"Host": "svc:8000"}, "url": "http://svc:8000/x", "origin": "10.0.0.9", "n": 1})
    b = ans({"headers": {"Host": "svc-shadow:8000"}, "url": "http://svc-shadow:8000/x", "origin": "127.0.0.1", "n": 2})
    diffs = {d.path: d.artifact for d in compare(a, b, Rules(), host)}
    assert diffs == {"body.headers.Host": True, "body.url": True, "body.origin": True, "body.n": False}


def test_text_and_bytes() -> None:
    t = [("Content-Type", "text/plain")]
    d = compare(ans(b"one\ntwo\n", headers=t), ans(b"one\nTWO\n", headers=t), Rules(), NOHOST)
    assert [(x.path, x.a, x.b) for x in d] == [("body", "line 2: two", "line 2: TWO")]
    o = [("Content-Type", "application/octet-stream")]
    d = compare(ans(b"\x00\x01", headers=o), ans(b"\x00\x02", headers=o), Rules(), NOHOST)
    assert d[0].path == "body" and "2 bytes" in d[0].a and d[0].a != d[0].b


def test_encoded_bodies_compare_decoded() -> None:
    import gzip

    a = Answer(200, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")],
               read(gzip.compress(b'{"a": 1}'), [("Content-Type", "application/json"), ("Content-Encoding", "gzip")]))
    b = ans({"a": 1})
    assert [p for p in paths(a, b) if p.startswith("body")] == []


def test_json_lines() -> None:
    hs = [("Content-Type", "application/json")]
    a = ans(b'{"i": 0}\n{"i": 1}\n', headers=hs)
    b = ans(b'{"i": 0}\n{"i": 2}\n', headers=hs)
    assert paths(a, b) == ["body[1].i"]


def test_not_the_json_it_says_and_a_bomb() -> None:
    import gzip

    assert read(b"<html>", [("Content-Type", "application/json")]).resolve().problem == "not the JSON its Content-Type says"
    bomb = gzip.compress(b"\0" * (40 << 20))
    body = read(bomb, [("Content-Encoding", "gzip")])
    assert body.kind == "bytes" and body.problem and "too_large" in body.problem


def test_the_walk_finds_what_deepdiff_finds() -> None:
    """Random documents and random edits: the same paths as DeepDiff's (without ignore_order),
    which is what the field counts and the benchmark's findings rest on."""
    import random

    from deepdiff import DeepDiff

    from analyze.diff import _walk, json_path

    rng = random.Random(7)

    def doc(depth: int = 0) -> object:
        r = rng.random()
        if depth > 3 or r < 0.3:
            return rng.choice([1, 2, 1.5, "a", "b", True, False, None, 0, ""])
        if r < 0.65:
            return {rng.choice("abcdef"): doc(depth + 1) for _ in range(rng.randint(0, 4))}
        return [doc(depth + 1) for _ in range(rng.randint(0, 4))]

    def edit(v: object) -> object:
        if isinstance(v, dict) and v and rng.random() < 0.7:
            k = rng.choice(list(v))
            w = dict(v)
            op = rng.random()
            if op < 0.3:
                del w[k]
            elif op < 0.5:
                w["z"] = doc()
            else:
                w[k] = edit(v[k])
            return w
        if isinstance(v, list) and v and rng.random() < 0.7:
            w = list(v)
            op = rng.random()
            if op < 0.3:
                w.pop(rng.randrange(len(w)))
            elif op < 0.5:
                w.append(doc())
            else:
                i = rng.randrange(len(w))
                w[i] = edit(w[i])
            return w
        return doc()

    checked = 0
    for _ in range(400):
        a = doc()
        b = edit(a)
        mine: list = []
        _walk(a, b, "body", mine, Rules(), NOHOST)
        tree = DeepDiff(a, b, view="tree", threshold_to_diff_deeper=0)  # always field by field
        theirs = {json_path(level.path(output_format="list")) for levels in tree.values() for level in levels}
        assert {d.path for d in mine} == theirs, (a, b)
        checked += bool(theirs)
    assert checked > 200
