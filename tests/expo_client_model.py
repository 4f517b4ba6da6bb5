"""A small model of what an expo-updates client decides, read from its source.

Every rule below names where it comes from in expo/expo,
``packages/expo-updates/android/src/main/java/expo/modules/updates/``:

* ``selectionpolicy/LauncherSelectionPolicyFilterAware.kt``: at launch, of the updates stored
  on the device (the embedded one included) whose runtime version equals the binary's and
  that pass the manifest filters, the one with the greatest ``commitTime`` runs.
* ``selectionpolicy/LoaderSelectionPolicyFilterAware.kt``: a manifest from the server is
  downloaded only when its ``commitTime`` (the manifest's ``createdAt``) is *after* the
  running update's (or the running update fails the filters). A server that serves an older
  update to move devices back is ignored: rollbacks need a new id and a new ``createdAt``.
  ``shouldLoadRollBackToEmbeddedDirective``: a ``rollBackToEmbedded`` directive applies when
  its ``commitTime`` is after the running update's; the embedded update then takes the
  directive's commit time, so the launcher picks it.
* ``selectionpolicy/SelectionPolicies.kt``: manifest filters (keys lower-cased, a key present
  in the metadata with another value fails).
* ``loader/FileDownloader.kt``: the multipart answer (``manifest``, ``extensions``,
  ``directive`` parts, others ignored), a 204 or empty body means nothing to do for protocol 1,
  asset keys and file extensions may not escape the updates directory, each downloaded file
  must hash (base64url SHA-256) to the manifest's ``hash``.
* ``codesigning/``: a manifest or directive part is verified against the embedded
  certificate: ``expo-signature`` (``sig``, ``keyid``, ``alg``) over the exact part body,
  RSA PKCS#1 v1.5 SHA-256, keyid equal to the configured one (default ``root``); the
  certificate must be valid now, have key usage ``digitalSignature`` and extended key usage
  ``codeSigning``.
* ``launcher/DatabaseLauncher.kt`` + expo-asset's ``AssetSources``: a running downloaded
  update exposes ``localAssets``, a map of asset ``key`` -> file; expo-asset looks an image or
  font up there by its Metro hash (the md5 of the file). Assets that the binary embeds are
  found in the binary; any other lookup that misses leaves the asset unresolved.
* Error recovery (``errorrecovery/``): an update that failed to launch is never launched
  again on this device and is reported in ``expo-recent-failed-update-ids``.
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import bsdiff4
import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from lumora_ota.client import selection as rules


class ModelError(Exception):
    """The client rejects the answer (it keeps running what it runs)."""


def parse_time(value: str) -> datetime:
    """``createdAt`` / ``commitTime`` as the client parses them (ISO 8601)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def b64url_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


# ---------------------------------------------------------------- stored updates


@dataclass
class StoredUpdate:
    """An update in the client's database (UpdateEntity)."""

    id: str
    commit_time: datetime
    runtime_version: str
    launch_key: str
    asset_keys: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    embedded: bool = False
    failed: bool = False


def matches_filters(update: StoredUpdate, filters: Mapping[str, Any] | None) -> bool:
    """SelectionPolicies.matchesFilters: a metadata key that is filtered must match."""
    if not filters or not update.metadata:
        return True
    lowered = {k.lower(): v for k, v in update.metadata.items()}
    return all(not (key in lowered and lowered[key] != value) for key, value in filters.items())


def _candidate(update: StoredUpdate) -> rules.Candidate:
    return rules.Candidate(
        id=update.id,
        runtime_version=update.runtime_version,
        created_at=update.commit_time,
        failed=update.failed,
        embedded=update.embedded,
    )


def select_update_to_launch(
    updates: list[StoredUpdate], runtime_version: str, filters: Mapping[str, Any] | None = None
) -> StoredUpdate | None:
    """LauncherSelectionPolicyFilterAware (+ the launchable-updates query: failed updates are
    left out). The runtime and ordering rules are the SDK's own module
    (``lumora_ota.client.selection``), so the SDK is checked against expo's cases too."""
    passing = {u.id: u for u in updates if matches_filters(u, filters)}
    chosen = rules.select_update_to_launch(map(_candidate, passing.values()), runtime_version)
    return passing[chosen.id] if chosen is not None else None


def should_load_new_update(
    new: StoredUpdate | None,
    launched: StoredUpdate | None,
    filters: Mapping[str, Any] | None = None,
) -> bool:
    """LoaderSelectionPolicyFilterAware.shouldLoadNewUpdate."""
    if new is None or not matches_filters(new, filters):
        return False
    if launched is None or not matches_filters(launched, filters):
        return True
    return rules.should_load_new_update(_candidate(new), _candidate(launched))


def should_load_rollback_to_embedded(
    commit_time: datetime,
    embedded: StoredUpdate,
    launched: StoredUpdate | None,
    filters: Mapping[str, Any] | None = None,
) -> bool:
    """LoaderSelectionPolicyFilterAware.shouldLoadRollBackToEmbeddedDirective."""
    if not matches_filters(embedded, filters):
        return False
    if launched is None or not matches_filters(launched, filters):
        return True
    return rules.should_load_rollback_to_embedded(commit_time, _candidate(launched))


# ---------------------------------------------------------------- parsing answers


def check_file_name(key: str, file_extension: str) -> None:
    """FileDownloader: key and extension become a file name in the updates directory, so path
    separators and ``..`` components are refused; a key may start with dots."""
    for part in (key, file_extension):
        if "/" in part or "\\" in part or part == "..":
            raise ModelError(f"asset key or extension escapes the updates directory: {key!r}")


@dataclass
class Part:
    name: str
    headers: dict[str, str]
    body: bytes


@dataclass
class ParsedAnswer:
    manifest: Part | None = None
    directive: Part | None = None
    extensions: dict[str, Any] = field(default_factory=dict)


def parse_answer(status: int, headers: Mapping[str, str], body: bytes) -> ParsedAnswer:
    """FileDownloader.parseRemoteUpdateResponse for protocol 1."""
    protocol = headers.get("expo-protocol-version")
    if status == 204 or not body:
        if protocol is None and status == 204:
            raise ModelError("Invalid update response: Empty body")
        return ParsedAnswer()
    content_type = headers.get("content-type", "")
    if not content_type.startswith("multipart/"):
        return ParsedAnswer(
            manifest=Part("manifest", {k.lower(): v for k, v in headers.items()}, body)
        )
    raw = f"content-type: {content_type}\r\n\r\n".encode() + body
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    answer = ParsedAnswer()
    for sub in message.iter_parts():
        name = sub.get_param("name", header="content-disposition")
        payload = sub.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        part = Part(str(name), {k.lower(): str(v) for k, v in sub.items()}, payload)
        if name == "manifest":
            answer.manifest = part
        elif name == "directive":
            answer.directive = part
        elif name == "extensions":
            answer.extensions = json.loads(payload or b"{}")
    return answer


# ---------------------------------------------------------------- code signing


def parse_signature_header(value: str) -> dict[str, str]:
    """The SFV dictionary of ``expo-signature`` (string members only)."""
    fields = dict(re.findall(r'(\w+)="([^"]*)"', value))
    if "sig" not in fields:
        raise ModelError("No sig in expo-signature header")
    fields.setdefault("keyid", "root")
    fields.setdefault("alg", "rsa-v1_5-sha256")
    return fields


def validate_code_signing_certificate(cert: x509.Certificate, now: datetime | None = None) -> None:
    """The checks expo-updates makes on the certificate it embeds (codesigning/)."""
    now = now or datetime.now(UTC)
    if not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise ModelError("Certificate not valid at this time")
    try:
        key_usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise ModelError("Certificate missing key usage") from None
    if not key_usage.digital_signature:
        raise ModelError("Certificate key usage must include digitalSignature")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        raise ModelError("Certificate extended key usage must include codeSigning") from None
    if ExtendedKeyUsageOID.CODE_SIGNING not in eku:
        raise ModelError("Certificate extended key usage must include codeSigning")
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise ModelError("Certificate key must be RSA")


@dataclass
class CodeSigning:
    """The app's code-signing configuration (certificate + metadata keyid)."""

    certificate: x509.Certificate
    keyid: str = "root"
    allow_unsigned: bool = False

    def verify(self, part: Part) -> bool:
        """Whether ``part`` is verified; raises when it must be and is not."""
        header = part.headers.get("expo-signature")
        if header is None:
            if self.allow_unsigned:
                return False
            raise ModelError(f"Code signing verification failed for {part.name}: no signature")
        fields = parse_signature_header(header)
        if fields["alg"] != "rsa-v1_5-sha256":
            raise ModelError("Unsupported signature algorithm")
        if fields["keyid"] != self.keyid:
            raise ModelError("Key with keyid from signature not found in client configuration")
        validate_code_signing_certificate(self.certificate)
        public_key = self.certificate.public_key()
        assert isinstance(public_key, rsa.RSAPublicKey)
        try:
            public_key.verify(
                base64.b64decode(fields["sig"]), part.body, padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            raise ModelError(f"Code signing verification failed for {part.name}") from None
        return True


# ---------------------------------------------------------------- the device


@dataclass
class EmbeddedBuild:
    """What a binary ships: its runtime version, its embedded update and the files in it,
    by key (Metro's md5 for assets)."""

    runtime_version: str
    commit_time: datetime
    files: dict[str, bytes]
    launch_key: str = "embedded-bundle"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


class Device:
    """One installed app: a database of updates, files by key, the running update."""

    def __init__(
        self,
        build: EmbeddedBuild,
        *,
        platform: str = "ios",
        channel: str = "production",
        code_signing: CodeSigning | None = None,
        delta: bool = False,
    ) -> None:
        self.platform = platform
        self.channel = channel
        self.code_signing = code_signing
        self.delta = delta  # expo-updates 55+: launch assets as bsdiff patches (A-IM)
        self.patches_applied = 0
        self.client_id = str(uuid.uuid4())
        self.install_build(build)
        self.files: dict[str, bytes] = {}

    def install_build(self, build: EmbeddedBuild) -> None:
        """A (new) binary: same data, new embedded update and runtime version."""
        self.build = build
        self.embedded = StoredUpdate(
            id=build.id,
            commit_time=build.commit_time,
            runtime_version=build.runtime_version,
            launch_key=build.launch_key,
            asset_keys=tuple(k for k in build.files if k != build.launch_key),
            embedded=True,
        )
        self.updates: dict[str, StoredUpdate] = getattr(self, "updates", {})
        self.updates = {k: u for k, u in self.updates.items() if not u.embedded}
        self.updates[build.id] = self.embedded
        self.launched: StoredUpdate | None = None
        self.launch()

    # -- launching

    def launch(self) -> StoredUpdate:
        """Cold start: the launcher's choice."""
        chosen = select_update_to_launch(list(self.updates.values()), self.build.runtime_version)
        assert chosen is not None, "the embedded update always qualifies"
        self.launched = chosen
        return chosen

    def fail_launch(self) -> StoredUpdate:
        """The running update crashed: error recovery marks it failed and relaunches."""
        assert self.launched is not None
        if not self.launched.embedded:
            self.launched.failed = True
        return self.launch()

    @property
    def running_id(self) -> str:
        assert self.launched is not None
        return self.launched.id

    def launch_bytes(self) -> bytes:
        """The JS bundle the device runs."""
        assert self.launched is not None
        if self.launched.embedded:
            return self.build.files[self.build.launch_key]
        return self.files[self.launched.launch_key]

    def launched_id_or_none(self) -> str | None:
        return self.launched.id if self.launched is not None else None

    def resolve_asset(self, md5: str) -> bytes | None:
        """expo-asset: the file for Metro asset hash ``md5``, or None (a broken image)."""
        assert self.launched is not None
        if not self.launched.embedded and md5 in self.launched.asset_keys:
            return self.files.get(md5)
        return self.build.files.get(md5) if md5 != self.build.launch_key else None

    # -- checking

    def request_headers(self) -> dict[str, str]:
        headers = {
            "accept": "multipart/mixed,application/expo+json,application/json",
            "expo-protocol-version": "1",
            "expo-platform": self.platform,
            "expo-runtime-version": self.build.runtime_version,
            "expo-channel-name": self.channel,
            "expo-embedded-update-id": self.embedded.id,
            "eas-client-id": self.client_id,
        }
        if self.launched is not None:
            headers["expo-current-update-id"] = self.launched.id
        failed = [u.id for u in self.updates.values() if u.failed]
        if failed:
            headers["expo-recent-failed-update-ids"] = ", ".join(f'"{i}"' for i in failed)
        if self.code_signing is not None:
            headers["expo-expect-signature"] = f'sig, keyid="{self.code_signing.keyid}"'
        return headers

    def check_and_download(self, client: httpx.Client, manifest_url: str) -> str:
        """One check (LoaderTask/RemoteLoader); returns what happened: ``"downloaded"``,
        ``"rollBackToEmbedded"``, ``"ignored"`` (not newer) or ``"nothing"``."""
        resp = client.get(manifest_url, headers=self.request_headers())
        if resp.status_code not in (200, 204):
            raise ModelError(f"manifest request failed: {resp.status_code} {resp.text[:200]}")
        answer = parse_answer(resp.status_code, resp.headers, resp.content)
        if answer.directive is not None:
            if self.code_signing is not None:
                self.code_signing.verify(answer.directive)
            directive = json.loads(answer.directive.body)
            if directive.get("type") == "rollBackToEmbedded":
                commit_time = parse_time(directive["parameters"]["commitTime"])
                if should_load_rollback_to_embedded(commit_time, self.embedded, self.launched):
                    self.embedded.commit_time = commit_time
                    return "rollBackToEmbedded"
                return "ignored"
        if answer.manifest is None:
            return "nothing"
        if self.code_signing is not None:
            self.code_signing.verify(answer.manifest)
        manifest = json.loads(answer.manifest.body)
        new = self._entity(manifest)
        if new.id in self.updates and not self.updates[new.id].failed:
            return "nothing"
        if not should_load_new_update(new, self.launched):
            return "ignored"
        self._download(client, manifest, answer.extensions)
        self.updates[new.id] = new
        return "downloaded"

    @staticmethod
    def _entity(manifest: dict[str, Any]) -> StoredUpdate:
        assets = [manifest["launchAsset"], *manifest.get("assets", [])]
        for asset in assets:
            check_file_name(str(asset["key"]), str(asset.get("fileExtension", "")))
        return StoredUpdate(
            id=str(manifest["id"]).lower(),
            commit_time=parse_time(manifest["createdAt"]),
            runtime_version=str(manifest["runtimeVersion"]),
            launch_key=str(manifest["launchAsset"]["key"]),
            asset_keys=tuple(str(a["key"]) for a in manifest.get("assets", [])),
            metadata=dict(manifest.get("metadata") or {}),
        )

    def _download(
        self, client: httpx.Client, manifest: dict[str, Any], extensions: dict[str, Any]
    ) -> None:
        """Fetch every asset whose key the device lacks and check its hash (all or nothing)."""
        headers_by_key = extensions.get("assetRequestHeaders") or {}
        fetched: dict[str, bytes] = {}
        for asset in [manifest["launchAsset"], *manifest.get("assets", [])]:
            key = str(asset["key"])
            if key in self.files or key in fetched:
                continue  # expo-updates reuses a stored asset with the same key
            extra = dict(headers_by_key.get(key) or {})
            is_launch = asset is manifest["launchAsset"]
            if is_launch and self.delta and self.launched is not None:
                # FileDownloader: ask for a patch from the running update's bundle.
                extra.update(
                    {
                        "a-im": "bsdiff",
                        "expo-current-update-id": self.launched.id,
                        "expo-requested-update-id": str(manifest["id"]),
                        "expo-embedded-update-id": self.embedded.id,
                    }
                )
            resp = client.get(str(asset["url"]), headers={"accept-encoding": "br, gzip", **extra})
            if resp.status_code == 226 and resp.headers.get("im") == "bsdiff":
                if resp.headers.get("expo-base-update-id") != self.launched_id_or_none():
                    raise ModelError("patch from another base than the running update")
                data = bsdiff4.patch(self.launch_bytes(), resp.content)
                self.patches_applied += 1
            elif resp.status_code != 200:
                raise ModelError(f"asset download failed: {resp.status_code} {asset['url']}")
            else:
                data = resp.content
            if asset.get("hash") is not None and b64url_sha256(data) != asset["hash"]:
                raise ModelError(f"asset hash mismatch for {key}")
            fetched[key] = data
        self.files.update(fetched)


def run_update_cycle(device: Device, client: httpx.Client, manifest_url: str) -> str:
    """Check, download, restart: what a user sees over one app restart."""
    outcome = device.check_and_download(client, manifest_url)
    device.launch()
    return outcome
