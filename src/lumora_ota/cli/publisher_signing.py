"""Signing on the publisher's machine, for projects whose signing key never reaches the server.

The server lists the bodies it would serve but may not (``GET
/projects/{p}/signing/unsigned``); the CLI checks each is what the publisher means to sign,
signs it with the local private key and uploads the signatures. What is checked:

* the body is compact JSON that re-serializes to the same bytes (nothing hidden in
  whitespace or duplicate keys);
* a manifest names the update it was listed for, every asset URL is on an expected origin
  (the server's, or ``--asset-origin``), and its files (by SHA-256) are among those just
  published (``lumora publish``) or exactly those of the update a rollback or promote
  copied;
* a directive is a ``rollBackToEmbedded`` of the update listed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from lumora_ota.api_models import (
    ExpoManifest,
    LumoraManifest,
    RollBackDirective,
    StoredAnswer,
    UnsignedAnswer,
    UnsignedBody,
    UpdateAnswer,
)
from lumora_ota.cli.api import ApiError, LumoraApi
from lumora_ota.cli.errors import CliError

NO_UPDATE_BODY = b'{"type":"noUpdateAvailable"}'
BATCH = 100


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def _b64url_to_hex(value: str) -> str:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()


def check_intended(
    entry: UnsignedBody,
    *,
    origins: Iterable[str],
    expected_sha256: Mapping[str, frozenset[str]] | None = None,
    exact: bool = True,
) -> bytes:
    """The bytes of one listed body when they are what the publisher means to sign;
    ``CliError`` naming the problem otherwise."""
    update_id = entry.update_id
    text = entry.body
    data = text.encode("utf-8")
    try:
        document = json.loads(text)
    except ValueError:
        raise CliError(f"the body listed for {update_id} is not JSON") from None
    compact = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    if not isinstance(document, dict) or compact != data:
        raise CliError(f"the body listed for {update_id} is not a compact JSON object")
    # The protocol's shapes, no member unknown to them: nothing the check below skips.
    shape: type[RollBackDirective | LumoraManifest | ExpoManifest] = ExpoManifest
    if entry.kind == "directive":
        shape = RollBackDirective
    elif entry.kind == "manifest-lumora":
        shape = LumoraManifest
    try:
        parsed = shape.model_validate(document)
    except ValidationError as exc:
        what = "directive" if entry.kind == "directive" else "manifest"
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "it"
        raise CliError(
            f"the {what} listed for {update_id} is not a rollBackToEmbedded directive or a"
            f" manifest of this version ({where}: {problem['msg']})"
        ) from None
    if isinstance(parsed, RollBackDirective):
        return data
    assert isinstance(parsed, ExpoManifest | LumoraManifest)
    if parsed.id != update_id:
        raise CliError(f"the manifest listed for {update_id} names update {parsed.id}")
    allowed = {_origin(o) for o in origins}
    hashes: set[str] = set()
    for asset in [parsed.launch_asset, *parsed.assets]:
        if _origin(asset.url) not in allowed:
            raise CliError(
                f"the manifest of {update_id} points at {_origin(asset.url)}, not at "
                f"{', '.join(sorted(allowed))} (pass --asset-origin if that is your CDN)"
            )
        sha256 = getattr(asset, "sha256", None)
        hashes.add(sha256 if isinstance(sha256, str) else _b64url_to_hex(asset.hash))
    expected = (expected_sha256 or {}).get(update_id)
    if expected is not None and not (hashes == expected if exact else hashes <= expected):
        raise CliError(f"the manifest of {update_id} lists other files than it should")
    return data


def sign_pending(
    api: LumoraApi,
    project: str,
    private_key_pem: bytes,
    *,
    update_ids: list[str] | None = None,
    origins: Iterable[str] = (),
    expected_sha256: Mapping[str, frozenset[str]] | None = None,
    exact: bool = True,
) -> int:
    """Sign every body the server lists as unsigned (of ``update_ids``, or of every active
    update) and upload the signatures; the number of bodies signed."""
    from lumora_ota.signing import SigningError, load_private_key, sign_rsa_sha256

    try:
        key = load_private_key(private_key_pem)
    except SigningError as exc:
        raise CliError(f"cannot sign: {exc}") from None
    allowed = [api.url("/"), *origins]
    signed = 0
    seen: set[bytes] = set()
    while True:
        params: dict[str, Any] = {"updateId": update_ids} if update_ids else {}
        path = f"/projects/{project}/signing/unsigned"
        entries = api.read(UnsignedAnswer, "GET", path, params=params).unsigned
        if not entries:
            return signed
        uploads = []
        for entry in entries:
            data = check_intended(
                entry, origins=allowed, expected_sha256=expected_sha256, exact=exact
            )
            if data in seen:
                raise CliError("the server lists a body again after its signature was stored")
            seen.add(data)
            uploads.append(
                {
                    "updateId": entry.update_id,
                    "body": data.decode("utf-8"),
                    "signature": sign_rsa_sha256(key, data),
                }
            )
        for start in range(0, len(uploads), BATCH):
            api.read(
                StoredAnswer,
                "POST",
                f"/projects/{project}/signing/signatures",
                json={"signatures": uploads[start : start + BATCH]},
            )
        signed += len(uploads)
        if update_ids:  # one listing holds every body of the named updates
            return signed


def _asset_hashes(update: UpdateAnswer) -> frozenset[str]:
    files = [update.launch_asset, *update.assets]
    return frozenset(f.sha256 for f in files if f is not None)


def sign_new_updates(
    api: LumoraApi,
    private_key_pem: bytes,
    updates: Iterable[UpdateAnswer],
    *,
    origins: Iterable[str] = (),
) -> int:
    """Sign what a rollback or promote just created (copies, roll-back-to-embedded markers):
    a copy's manifest must list exactly the files of the update it copies."""
    signed = 0
    for update in updates:
        update_id, project = update.id, update.project_id
        expected: dict[str, frozenset[str]] = {}
        source = update.source_update_id
        if source is not None and update.kind == "update":
            copied = api.read(UpdateAnswer, "GET", f"/updates/{source}")
            expected[update_id] = _asset_hashes(copied)
        signed += sign_pending(
            api,
            project,
            private_key_pem,
            update_ids=[update_id],
            origins=origins,
            expected_sha256=expected,
        )
    return signed


def note_awaiting_signature(api: LumoraApi, project: str, update_ids: list[str]) -> None:
    """Say so on stderr when the project's key is publisher-held and these new updates wait
    for the publisher's signature: devices get "no update" for them until then."""
    from lumora_ota.cli.output import note

    if not update_ids:
        return
    try:
        path = f"/projects/{project}/signing/unsigned"
        listed = api.read(UnsignedAnswer, "GET", path, params={"updateId": update_ids})
    except ApiError:  # 409: not publisher-held; anything else: only a hint is lost
        return
    waiting = {entry.update_id for entry in listed.unsigned}
    if waiting:
        note(
            f"{len(waiting)} new update(s) of {project} await the publisher's signature: devices"
            " get no update for them until you run `lumora codesigning sign --project"
            f" {project} --private-key <key>` (or pass --private-key here)"
        )
