"""The service under test for `shadowtap analyze`: one Flask app in three roles.

    SHADOWTAP_APP_ROLE=v1        the primary (what the capture sees)
    SHADOWTAP_APP_ROLE=baseline  an identical second copy of v1 (Diffy's "secondary")
    SHADOWTAP_APP_ROLE=v2        the candidate, with the seeded regressions in REGRESSIONS/SLOW

    gunicorn --no-control-socket -k gthread 'tests.analyze.apps:create()'

Every answer is a function of the request, except the noise that all three roles share (so it
must never be reported as a change): a fresh UUID (`request_id`), the current time (ISO
`generated_at`, epoch milliseconds `generated_at_epoch`), a list in random order (`tags`, which
the tests declare with `--unordered body.tags`), a random hex `nonce`, gunicorn's `Date` and an
`X-Request-Id` response header. The volatile values have a fixed width, so a response's
Content-Length never varies between runs of the same role.

The module has no side effect on import beyond defining constants: the test harness imports it
for REGRESSIONS, NOISE_PATHS, ENDPOINTS, SLOW and `v2_breaks_item`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import random
import secrets
import time
import uuid
from typing import Any

ROLE_ENV = "SHADOWTAP_APP_ROLE"
ROLES = ("v1", "baseline", "v2")

# (endpoint template, field path, kind): exactly what v2 changes, field by field. Paths use the
# report contract's syntax ("status", "header.<lower-name>", "body.a.b").
REGRESSIONS: list[tuple[str, str, str]] = [
    ("GET /users/{id}", "body.age", "type_change"),  # int -> string
    ("GET /orders/{id}", "body.total", "changed_value"),  # tax added to the total
    ("GET /products", "body.total_pages", "missing_field"),  # dropped in v2
    ("GET /products", "header.cache-control", "changed_header"),  # max-age=60 -> max-age=600
    ("GET /items/{id}", "status", "status_500"),  # 200 -> 500 for the ids v2_breaks_item picks
]

# The endpoint v2 makes slower (sleeps SLOW_SECONDS per request); no field of it changes.
SLOW = "GET /search"
SLOW_SECONDS = 0.150

# Paths whose values differ between any two answers, in every role (the noise).
NOISE_PATHS: list[str] = [
    "body.request_id",
    "body.generated_at",
    "body.generated_at_epoch",
    "body.nonce",
    "body.tags",
    "header.date",
    "header.x-request-id",
]

# The endpoint templates the analyzer's learned path templating should find in the traffic the
# scenario sends (every endpoint here gets several distinct ids).
ENDPOINTS: list[str] = [
    "GET /health",
    "GET /users/{id}",
    "GET /orders/{id}",  # UUIDs
    "GET /items/{id}",  # 16 hex digits
    "GET /products",  # ?page=N
    "GET /search",  # ?q=...
    "GET /time",
    "GET /session",
    "GET /headers",  # echoes the request's headers, Host included (the mirroring artifact)
    "GET /text/{id}",
    "GET /status/{id}",
    "POST /echo",
]

# The echo endpoint and the field in it that carries the Host the service was asked for.
ECHO = "GET /headers"
ECHO_HOST_PATH = "body.headers.Host"


def v2_breaks_item(item_id: str) -> bool:
    """The /items ids for which v2 answers 500 (v1 and baseline answer 200)."""
    return int(item_id, 16) % 3 == 0


# --------------------------------------------------------------------------------------------
# Deterministic content


_NAMES = ["ada", "brian", "chen", "dara", "emeka", "fatima", "goran", "hana", "ivan", "jun",
          "kofi", "lena", "mateo", "nadia", "omar", "priya", "quinn", "rosa", "sven", "tariq"]
_TAGS = ["alpha", "beta", "gamma", "delta", "epsilon"]
_WORDS = ["red", "shoes", "lamp", "desk", "chair", "green", "blue", "mug", "pen", "book"]


def _h(*parts: object) -> int:
    """A stable integer from the parts (never Python's randomised hash())."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "big")


def _now_fields() -> dict[str, Any]:
    now = time.time()
    iso = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).isoformat(timespec="microseconds")
    return {"generated_at": iso, "generated_at_epoch": int(now * 1000)}  # fixed widths


def _noise() -> dict[str, Any]:
    return {"request_id": str(uuid.uuid4()), **_now_fields()}


def user(uid: int) -> dict[str, Any]:
    name = _NAMES[uid % len(_NAMES)]
    return {"id": uid, "name": name.title(), "email": f"{name}.{uid}@example.com",
            "age": 20 + (uid * 7) % 50, "created": f"2023-{1 + uid % 12:02d}-{1 + uid % 28:02d}"}


def order_lines(oid: uuid.UUID) -> list[dict[str, Any]]:
    n = 1 + oid.int % 4
    return [{"sku": f"SKU-{(oid.int >> (8 * i)) % 1000:03d}", "qty": 1 + (oid.int >> (4 * i)) % 5,
             "unit_price": round(((oid.int >> (12 * i)) % 9000) / 100 + 1, 2)} for i in range(n)]


def product_page(page: int) -> list[dict[str, Any]]:
    return [{"id": page * 10 + i, "name": f"product {page * 10 + i}",
             "price": round(((page * 10 + i) * 37 % 500) / 10 + 0.99, 2)} for i in range(5)]


def item(item_id: str) -> dict[str, Any]:
    n = int(item_id, 16)
    return {"id": item_id, "name": f"item {n % 10007}", "stock": n % 97, "warehouse": "w" + str(n % 5)}


def search(q: str) -> list[dict[str, Any]]:
    k = 1 + _h("search", q) % 4
    return [{"rank": i + 1, "title": f"{q} #{(_h(q, i) % 900) + 100}"} for i in range(k)]


def text(doc: int) -> str:
    return "".join(f"document {doc} line {i}: {' '.join(_WORDS[(doc + i + j) % 10] for j in range(6))}\n"
                   for i in range(1 + doc % 6))


# --------------------------------------------------------------------------------------------
# The app


def create(role: str | None = None) -> Any:
    """The Flask app for ``role`` (default: the SHADOWTAP_APP_ROLE environment variable)."""
    from flask import Flask, Response, abort, jsonify, request

    role = role or os.environ.get(ROLE_ENV, "v1")
    if role not in ROLES:
        raise ValueError(f"{ROLE_ENV} must be one of {ROLES}, not {role!r}")
    v2 = role == "v2"
    app = Flask(f"shadowtap-test-{role}")
    app.json.sort_keys = False  # type: ignore[attr-defined]

    @app.after_request
    def request_id_header(resp: Response) -> Response:
        resp.headers["X-Request-Id"] = uuid.uuid4().hex
        return resp

    @app.get("/health")
    def health() -> Any:
        return jsonify(status="ok", service="svc")

    @app.get("/users/<int:uid>")
    def get_user(uid: int) -> Any:
        u = user(uid)
        if v2:
            u["age"] = str(u["age"])
        tags = random.sample(_TAGS, k=len(_TAGS))  # random order on every call
        return jsonify(**u, tags=tags, **_noise())

    @app.get("/orders/<uuid:oid>")
    def get_order(oid: uuid.UUID) -> Any:
        lines = order_lines(oid)
        subtotal = sum(line["qty"] * line["unit_price"] for line in lines)
        total = round(subtotal * 1.2, 2) if v2 else round(subtotal, 2)
        return jsonify(id=str(oid), status="shipped", lines=lines, currency="EUR", total=total, **_noise())

    @app.get("/products")
    def products() -> Any:
        page = request.args.get("page", 1, type=int) or 1
        body: dict[str, Any] = {"page": page, "per_page": 5}
        if not v2:
            body["total_pages"] = 5
        body["items"] = product_page(page)
        resp = jsonify(body)
        resp.headers["Cache-Control"] = "public, max-age=600" if v2 else "public, max-age=60"
        return resp

    @app.get("/items/<item_id>")
    def get_item(item_id: str) -> Any:
        try:
            int(item_id, 16)
        except ValueError:
            abort(404)
        if v2 and v2_breaks_item(item_id):
            return jsonify(error="internal server error"), 500
        return jsonify(**item(item_id), **_noise())

    @app.get("/search")
    def get_search() -> Any:
        if v2:
            time.sleep(SLOW_SECONDS)
        q = request.args.get("q", "")
        results = search(q)
        return jsonify(query=q, count=len(results), results=results, **_noise())

    @app.get("/time")
    def get_time() -> Any:
        return jsonify(timezone="UTC", **_noise())

    @app.get("/session")
    def session() -> Any:
        sid = request.cookies.get("sid")
        authed = request.headers.get("Authorization", "").startswith("Bearer ")
        body = {"authenticated": authed, "user": f"user-{_h('sid', sid) % 1000:03d}" if sid else None,
                "nonce": secrets.token_hex(16), **_noise()}
        resp = jsonify(body)
        if sid:
            resp.set_cookie("sid", sid, path="/", httponly=True)
        return resp

    @app.get("/headers")
    def headers() -> Any:
        # Like httpbin's /headers: no noise of its own, so the only difference the shadow
        # shows is the Host the replayer rewrote (svc:8000 -> svc-shadow:8000).
        return jsonify(headers={k: v for k, v in request.headers.items()})

    @app.get("/text/<int:doc>")
    def get_text(doc: int) -> Any:
        return Response(text(doc), mimetype="text/plain")

    @app.get("/status/<int:code>")
    def status(code: int) -> Any:
        if code == 204 or code < 200 or code > 599:
            return Response(status=204)
        return jsonify(status=code), code

    @app.post("/echo")
    def echo() -> Any:
        data = request.get_json(silent=True)
        return jsonify(json=data, length=len(request.get_data()))

    return app
