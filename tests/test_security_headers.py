"""Security headers: the dashboard gets a strict CSP (no inline script, no framing) and every
API answer — success, problem, device or management — gets nosniff and frame denial."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from harness import ServerProcess


def _csp_directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


class _InlineCode(HTMLParser):
    """Finds inline scripts, inline event handlers and inline styles in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower() for name, _ in attrs}
        if tag == "script":
            self._in_script = "src" not in names
        self.found += [f"{tag}[{n}]" for n in names if n.startswith("on") or n == "style"]

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.found.append("inline <script>")


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/", "/dashboard/static/app.js"])
def test_dashboard_csp_forbids_inline_script_and_framing(server: ServerProcess, path: str) -> None:
    with server.anon() as anon:
        resp = anon.get(path)
    assert resp.status_code == 200
    csp = _csp_directives(resp.headers["content-security-policy"])
    scripts = csp.get("script-src", csp.get("default-src", []))
    assert scripts and "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts
    assert not any(s.startswith(("'nonce-", "'sha256-", "http:", "*")) for s in scripts)
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["default-src"] == ["'none'"] or "'self'" in csp["default-src"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"].upper() == "DENY"


def test_dashboard_page_has_no_inline_code(server: ServerProcess) -> None:
    with server.anon() as anon:
        page = anon.get("/dashboard")
    parser = _InlineCode()
    parser.feed(page.text)
    assert parser.found == []
    assert not re.search(r"javascript:", page.text, re.IGNORECASE)


def test_dashboard_errors_carry_the_headers_too(server: ServerProcess) -> None:
    with server.anon() as anon:
        missing = anon.get("/dashboard/static/nope.js")
        bad_login = anon.post("/dashboard/session", json={"apiKey": "lum_wrong"})
    for resp in (missing, bad_login):
        assert 400 <= resp.status_code < 500
        assert "frame-ancestors 'none'" in resp.headers["content-security-policy"]
        assert resp.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    ("method", "path", "auth"),
    [
        ("GET", "/health", False),
        ("GET", "/api/v1/projects", True),
        ("GET", "/api/v1/projects", False),  # 401 problem
        ("GET", "/api/v1/updates/00000000-0000-0000-0000-000000000000", True),  # 404 problem
        ("POST", "/api/v1/updates/check", False),  # 422 problem
        ("GET", "/api/v1/assets/" + "0" * 64 + ".js", False),  # 404 on the asset route
        ("GET", "/api/v1/expo/nope/manifest", False),
        ("GET", "/openapi.json", False),
        ("GET", "/nowhere", False),
    ],
)
def test_api_answers_carry_nosniff_and_frame_denial(
    server: ServerProcess, method: str, path: str, auth: bool
) -> None:
    client = server.client() if auth else server.anon()
    with client:
        resp = client.request(method, path, json={} if method == "POST" else None)
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"].upper() == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    if resp.status_code >= 400:
        assert resp.headers["content-type"].startswith("application/problem+json")
