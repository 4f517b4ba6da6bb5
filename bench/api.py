"""A minimal async management-API client for loading data fast: find which hashes are
missing, upload only those (concurrently), publish (concurrently)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import httpx

from bench.synth import SynthFile

MISSING_BATCH = 10_000
UPLOAD_ATTEMPTS = 3
T = TypeVar("T")
R = TypeVar("R")


class ApiError(RuntimeError):
    """The server answered a management call with an error."""


def _check(resp: httpx.Response, *ok: int) -> Any:
    if resp.status_code not in ok:
        raise ApiError(
            f"{resp.request.method} {resp.request.url.path}: {resp.status_code} {resp.text[:400]}"
        )
    return resp.json() if resp.content else None


async def gather_limited(
    items: Iterable[T], work: Callable[[T], Awaitable[R]], concurrency: int
) -> list[R]:
    """``work`` over ``items`` with at most ``concurrency`` in flight, results in order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> R:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


class ManagementApi:
    """The calls the loader needs, over one keep-alive connection pool."""

    def __init__(
        self, base_url: str, key: str, concurrency: int, upload_concurrency: int = 1
    ) -> None:
        self.concurrency = concurrency
        self.upload_concurrency = upload_concurrency
        # 5xx answers that a retry got past: server bugs worth reporting, not hiding.
        self.server_errors: list[str] = []
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers={"authorization": f"Bearer {key}"},
            timeout=120,
            limits=httpx.Limits(max_connections=concurrency * 2),
            transport=httpx.AsyncHTTPTransport(retries=2),
        )

    async def _idempotent(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Send a request that is safe to repeat, once more if the server dropped a
        keep-alive connection just as it was reused."""
        try:
            return await self.http.request(method, url, **kwargs)
        except httpx.RemoteProtocolError:
            return await self.http.request(method, url, **kwargs)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self.http.aclose()

    async def create_project(self, slug: str, name: str) -> dict[str, Any]:
        """POST /projects."""
        resp = await self.http.post("/api/v1/projects", json={"name": name, "slug": slug})
        result: dict[str, Any] = _check(resp, 201)
        return result

    async def missing(self, project: str, hashes: Sequence[str]) -> set[str]:
        """POST /assets/missing, batched."""
        missing: set[str] = set()
        for start in range(0, len(hashes), MISSING_BATCH):
            batch = list(hashes[start : start + MISSING_BATCH])
            resp = await self._idempotent(
                "POST", "/api/v1/assets/missing", json={"project": project, "hashes": batch}
            )
            missing.update(_check(resp, 200)["missing"])
        return missing

    async def upload(self, project: str, files: Iterable[SynthFile]) -> int:
        """Upload the files the server lacks; returns the bytes sent."""
        unique = {f.sha256: f for f in files}
        missing = await self.missing(project, list(unique))

        async def put(sha: str) -> int:
            for _attempt in range(UPLOAD_ATTEMPTS):
                resp = await self._idempotent(
                    "PUT",
                    f"/api/v1/assets/{sha}",
                    params={"project": project},
                    content=unique[sha].data,
                )
                if resp.status_code < 500:
                    break
                self.server_errors.append(f"PUT {sha[:12]}: {resp.status_code}")
            _check(resp, 200, 201)
            return unique[sha].size

        return sum(await gather_limited(sorted(missing), put, self.upload_concurrency))

    async def publish(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /updates/publish. A 5xx is retried (and recorded): a publish that failed
        with a server error committed nothing, and at worst the history gets one more
        release."""
        for _attempt in range(UPLOAD_ATTEMPTS):
            resp = await self.http.post("/api/v1/updates/publish", json=body)
            if resp.status_code < 500:
                break
            self.server_errors.append(f"publish: {resp.status_code}")
        result: dict[str, Any] = _check(resp, 201)
        return result

    async def publish_many(self, bodies: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Publish concurrently; the order of completion is not the order given."""
        return await gather_limited(bodies, self.publish, self.concurrency)

    async def enable_signing(
        self, project: str, keyid: str, private_key_pem: str, certificate_pem: str
    ) -> None:
        """PUT /projects/{project}/signing."""
        resp = await self.http.put(
            f"/api/v1/projects/{project}/signing",
            json={
                "keyid": keyid,
                "privateKeyPem": private_key_pem,
                "certificatePem": certificate_pem,
            },
        )
        _check(resp, 200, 201)
