"""Dashboard sessions: the signer in isolation, and cookie auth + CSRF against a real server."""

from __future__ import annotations

import httpx

from harness import ServerProcess, create_project
from lumora_ota.server.dashboard.sessions import SESSION_COOKIE, SessionSigner


def test_signer_rejects_tampering_expiry_and_foreign_secrets() -> None:
    signer = SessionSigner(b"s" * 32, lifetime=60)
    cookie, session = signer.issue("key-1", now=1000.0)
    assert signer.verify(cookie, now=1001.0) == session
    assert signer.verify(cookie, now=1061.0) is None  # expired
    payload, mac = cookie.split(".")
    assert signer.verify(payload + "." + mac[:-2] + "AA", now=1001.0) is None
    assert signer.verify("garbage", now=1001.0) is None
    assert signer.verify("", now=1001.0) is None
    assert SessionSigner(b"t" * 32).verify(cookie, now=1001.0) is None
    token = signer.csrf_token(session)
    assert signer.csrf_ok(session, token)
    _cookie, other = signer.issue("key-1", now=1000.0)
    assert not signer.csrf_ok(other, token)  # tokens are per session
    assert "key-1" not in token


def test_cookie_auth_needs_csrf_for_writes_and_ends_with_the_key(
    server: ServerProcess, unique: str
) -> None:
    with server.client() as admin:
        project = create_project(admin, f"sess-{unique}")
        created = admin.post(
            "/api/v1/keys", json={"name": "dash", "role": "admin", "project": project["id"]}
        ).json()
    browser = httpx.Client(base_url=server.url, timeout=30)
    signed_in = browser.post("/dashboard/session", json={"apiKey": created["key"]})
    assert signed_in.status_code == 200
    assert "httponly" in signed_in.headers["set-cookie"].lower()
    assert "samesite=strict" in signed_in.headers["set-cookie"].lower()
    assert created["key"] not in signed_in.headers["set-cookie"]
    csrf = signed_in.json()["csrfToken"]
    assert browser.get("/dashboard/session").json()["csrfToken"] == csrf

    path = f"/api/v1/projects/{project['id']}"
    assert browser.get(path).status_code == 200  # reads need no token
    assert browser.patch(path, json={"name": "x"}).status_code == 403
    assert (
        browser.patch(path, json={"name": "x"}, headers={"x-csrf-token": "nope"}).status_code == 403
    )
    foreign = {"x-csrf-token": csrf, "origin": "http://evil.example"}
    assert browser.patch(path, json={"name": "x"}, headers=foreign).status_code == 403
    same = {"x-csrf-token": csrf, "origin": server.url}
    assert browser.patch(path, json={"name": "renamed"}, headers=same).status_code == 200
    # Another project stays invisible to this project-scoped key.
    assert browser.get("/api/v1/projects/does-not-exist").status_code == 404
    # A forged cookie is no session at all.
    forged = httpx.Client(base_url=server.url, cookies={SESSION_COOKIE: "e30.AAAA"})
    assert forged.get(path).status_code == 401

    with server.client() as admin:
        assert admin.delete(f"/api/v1/keys/{created['id']}").status_code == 200
    assert browser.get(path).status_code == 401  # revoking the key ends its sessions
    assert browser.get("/dashboard/session").json() == {"signedIn": False}
    signed_out = browser.delete("/dashboard/session", headers={"x-csrf-token": csrf})
    assert signed_out.status_code == 204
    assert SESSION_COOKIE not in browser.cookies
