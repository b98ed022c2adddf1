"""What the shadow is told: the Host (HTTP/1) or :authority (HTTP/2) a mirrored request carries.

Envoy marks mirrored requests by appending `-shadow` to the host part of the authority
(`shadowAppendedHost` in source/common/router/shadow_writer_impl.cc), so that the shadow's
logs and any echo of the Host show that the request is a copy. We apply the same rule, to
the byte, so that a shadow behind shadowtap sees what it would see behind Istio.
"""
from __future__ import annotations

SUFFIX = "-shadow"


def port_start(host: str) -> int:
    """Index of the `:` that starts the port, or -1. Envoy's HeaderUtility::getPortStart:
    the last `:`, unless a `]` comes after it (then it is inside an IPv6 literal)."""
    colon = host.rfind(":")
    if colon < 0:
        return -1
    bracket = host.rfind("]")
    if bracket < 0 or bracket < colon:
        return colon
    return -1


def shadow_host(host: str, suffix: str = SUFFIX) -> str:
    """`httpbin:8000` → `httpbin-shadow:8000`, `[::1]:80` → `[::1]-shadow:80`,
    `cluster1` → `cluster1-shadow`."""
    at = port_start(host)
    if at < 0:
        return host + suffix
    return host[:at] + suffix + host[at:]


def unshadow_host(host: str, suffix: str = SUFFIX) -> str | None:
    """The captured authority a shadow authority was made from, or None if `host` does not
    carry the suffix (analyze uses this to recognise echoes of the rewrite)."""
    at = port_start(host)
    name, port = (host, "") if at < 0 else (host[:at], host[at:])
    if not name.endswith(suffix):
        return None
    return name[: -len(suffix)] + port
