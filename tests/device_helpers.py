"""Helpers for the device-endpoint tests: projects, Expo requests, multipart parsing."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from harness import ServerProcess, create_project, make_export, publish_export

IN_PROCESS_ADMIN_KEY = "lum_in_process_" + uuid.uuid4().hex
EXPO_ACCEPT = "application/expo+json;q=0.9, application/json;q=0.8, multipart/mixed"


@dataclass
class Part:
    """One part of a multipart/mixed answer."""

    name: str
    headers: dict[str, str]
    body: bytes


def new_project(server: ServerProcess, unique: str, prefix: str = "dev") -> str:
    """Create a project with a unique slug; returns the slug."""
    slug = f"{prefix}-{unique}"
    with server.client() as client:
        create_project(client, slug)
    return slug


def expo_headers(
    platform: str = "ios",
    runtime_version: str = "1",
    *,
    protocol: str | None = "1",
    accept: str = "multipart/mixed",
    **extra: str,
) -> dict[str, str]:
    """Request headers of an expo-updates client (``extra`` keys use ``_`` for ``-``)."""
    headers = {"expo-platform": platform, "expo-runtime-version": runtime_version, "accept": accept}
    if protocol is not None:
        headers["expo-protocol-version"] = protocol
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return headers


def expo_get(server: ServerProcess, project: str, **kwargs: Any) -> httpx.Response:
    """GET the project's Expo manifest with ``expo_headers(**kwargs)``."""
    with server.anon() as client:
        return client.get(f"/api/v1/expo/{project}/manifest", headers=expo_headers(**kwargs))


def parse_multipart(resp: httpx.Response) -> dict[str, Part]:
    """The parts of a multipart/mixed answer, parsed by Python's ``email`` package."""
    content_type = resp.headers["content-type"]
    assert content_type.startswith("multipart/mixed"), content_type
    raw = f"content-type: {content_type}\r\n\r\n".encode() + resp.content
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert message.is_multipart()
    parts: dict[str, Part] = {}
    for sub in message.iter_parts():
        disposition = sub.get("content-disposition", "")
        assert disposition.startswith("inline"), disposition
        name = sub.get_param("name", header="content-disposition")
        assert isinstance(name, str)
        body = sub.get_payload(decode=True)
        assert isinstance(body, bytes)
        parts[name] = Part(name, {k.lower(): str(v) for k, v in sub.items()}, body)
    return parts


def enable_signing(server: ServerProcess, slug: str, pair: tuple[bytes, bytes]) -> None:
    """Turn on signing for the project with ``pair`` (private key PEM, certificate PEM)."""
    key_pem, cert_pem = pair
    body = {"keyid": "main", "privateKeyPem": key_pem.decode(), "certificatePem": cert_pem.decode()}
    with server.client() as client:
        resp = client.put(f"/api/v1/projects/{slug}/signing", json=body)
    assert resp.status_code == 200, resp.text


def publish_small(
    server: ServerProcess, slug: str, tmp_path: Path, **options: Any
) -> dict[str, Any]:
    """Publish a small generated export; returns the new updates by platform."""
    seed = uuid.uuid4().hex
    root = make_export(tmp_path / seed, seed=seed, n_assets=1)
    with server.client() as client:
        answer, _ = publish_export(client, slug, root, **options)
    return {u["platform"]: u for u in answer["updates"]}


@contextlib.contextmanager
def in_process_app(tmp_path: Path, **settings: Any) -> Iterator[tuple[Any, Any]]:
    """(TestClient with the admin key, AppContext) of an in-process app on SQLite, started
    with its lifespan. ``settings`` override ``Settings`` fields."""
    from lumora_ota.server.app import create_app
    from lumora_ota.settings import Settings

    with warnings.catch_warnings():
        # Starlette nudges towards httpx2; the httpx-based TestClient works fine meanwhile.
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    config = Settings(
        data_dir=tmp_path / "data", bootstrap_admin_key=IN_PROCESS_ADMIN_KEY, **settings
    )
    app = create_app(config)
    with TestClient(app) as client:
        client.headers["authorization"] = f"Bearer {IN_PROCESS_ADMIN_KEY}"
        yield client, app.state.ctx
