"""The web console: static assets served at /console by the service itself, so it deploys with
the API and reaches it on the same origin. Every action the console takes is a call to the public
API with the token the person signed in with; these routes hand out files and nothing else.

Cheap to import (stdlib and chalice only): the files are read on first request and kept.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from chalice import Blueprint, Response

bp = Blueprint(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "application/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# No inline script or style, nothing from another origin, no framing; Trusted Types make a stray
# innerHTML with a string fail instead of becoming an injection point.
CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}

_cache: dict[str, tuple[str, str, str]] = {}  # name -> (body, content type, etag)


def _load(name: str) -> tuple[str, str, str] | None:
    """An asset by its bare file name (no directories: a name with a slash never matches)."""
    hit = _cache.get(name)
    if hit is not None:
        return hit
    if not _cache:
        for path in ASSETS.iterdir():
            if path.suffix in TYPES and path.is_file():
                text = path.read_text(encoding="utf-8")
                etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:20] + '"'
                _cache[path.name] = (text, TYPES[path.suffix], etag)
    return _cache.get(name)


def _serve(name: str) -> Response:
    asset = _load(name)
    if asset is None:
        problem = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "no such console asset"}
        return Response(
            body=json.dumps(problem), status_code=404, headers=_headers("application/problem+json", "no-store")
        )
    text, ctype, etag = asset
    # Revalidated on every load (names carry no hash): a deploy shows up at once, an unchanged
    # file costs a 304.
    headers = _headers(ctype, "no-cache", ETag=etag)
    if bp.current_request.headers.get("if-none-match") == etag:
        return Response(body="", status_code=304, headers=headers)
    return Response(body=text, status_code=200, headers=headers)


def _headers(ctype: str, cache: str, **extra: str) -> dict[str, str | list[str]]:
    return {"Content-Type": ctype, "Cache-Control": cache, **SECURITY_HEADERS, **extra}


@bp.route("/console", methods=["GET"])
def console_index() -> Response:
    # The page's links are relative to /console; from /console/ they would miss (the servers
    # route both here), so the slash goes. Relative, so a stage prefix needs no knowing.
    if str(bp.current_request.context.get("path", "")).endswith("/"):
        return Response(body="", status_code=308, headers=_headers("text/plain", "no-store", Location="../console"))
    return _serve("index.html")


@bp.route("/console/{asset}", methods=["GET"])
def console_asset(asset: str) -> Response:
    # index.html's relative links only resolve from /console itself.
    return _serve("" if asset == "index.html" else asset)
