"""The JSON answers of a Lumora server as pydantic models: the management API (``/api/v1``)
and the device answers (Expo manifest, directives, the Lumora check answer).

One module, shared: the server documents its answers with them (``response_model``, so
``/openapi.json`` gives every success answer a schema), the CLI reads answers as them (typed
attributes instead of ``dict.get``), and the tests validate real answers against them.

It imports pydantic only — no FastAPI, no server, no database — so the CLI can import it
cheaply (and only when a command reads an answer: ``lumora --help`` loads no pydantic).
Validators are built on first use (``defer_build``): a command pays for the few models it
reads, not for all of them (importing this module took ~130 ms more without it).

Conventions: members are camelCase on the wire (``created_at`` is ``createdAt``); times are
ISO 8601 UTC strings with milliseconds and ``Z``; sizes are bytes; ``rollout``, ``share`` and
plan ``steps`` are percent (0-100); rates (``failureRate``, ``maxFailureRate``) are fractions
(0-1). Management answers keep members a model does not list (``extra="allow"``), so a
newer server's additions reach older clients; the tests refuse such members, so the models
stay complete. Device answer models refuse them (``extra="forbid"``): those shapes are the
protocol.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

T = TypeVar("T")

Time = Annotated[str, Field(description="ISO 8601 UTC time, e.g. 2026-01-31T12:00:00.000Z")]
Percent = Annotated[float, Field(ge=0, le=100, description="Percent, 0-100.")]
UpdateKind = Literal["update", "rollbackToEmbedded"]


class Answer(BaseModel):
    """Base of management answers: camelCase members; unknown members are kept."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", defer_build=True
    )


class Items(Answer, Generic[T]):
    """A list answer: ``{"items": [...]}``."""

    items: list[T]


# --- projects, deployments --------------------------------------------------------------


class ProjectAnswer(Answer):
    """A project, with its channel names."""

    id: str
    slug: str
    name: str
    created_at: Time
    auto_pause_on_failure: bool = Field(
        description="Pause a channel when a rollout plan halts on launch failures."
    )
    channels: list[str]


class DeploymentAnswer(Answer):
    """A deployment (channel)."""

    id: str
    project_id: str
    name: str
    created_at: Time
    paused: bool = Field(description="A paused channel serves no update.")


class UpdateSummary(Answer):
    """A short description of an update a channel serves."""

    id: str
    group_id: str | None
    kind: UpdateKind
    message: str | None
    created_at: Time
    rollout: int = Field(description="Percent of devices (0-100) the update is offered to.")
    mandatory: bool


class ServingShare(Answer):
    """One share of a rollout split: ``update`` null means "no update" (devices keep what
    they run)."""

    share: Percent
    update: UpdateSummary | None


class ServingEntry(Answer):
    """What a channel's devices get for one platform and runtime version: shares summing
    to 100."""

    platform: str
    runtime_version: str
    split: list[ServingShare]


class DeploymentDetail(DeploymentAnswer):
    """A deployment with what it serves, per platform and runtime version."""

    serving: list[ServingEntry]


class DeploymentListItem(DeploymentDetail):
    """A deployment in a list: also ``current``, the newest active update by platform, then
    by runtime version."""

    current: dict[str, dict[str, UpdateSummary]]


# --- updates ------------------------------------------------------------------------------


class AssetAnswer(Answer):
    """One file of an update; ``url`` is where devices download it."""

    key: str | None = Field(description="The file's path in the publish.")
    sha256: str = Field(description="Lowercase hex SHA-256 of the bytes.")
    md5: str | None
    hash: str = Field(description="Base64url SHA-256 (the manifest's hash).")
    size: int | None = Field(description="Bytes.")
    content_type: str | None
    file_extension: str | None
    url: str


class UpdateAnswer(Answer):
    """An update (``kind`` update or rollbackToEmbedded) with its assets."""

    id: str
    group_id: str | None
    project_id: str
    channel: str | None
    platform: str
    runtime_version: str
    kind: UpdateKind
    message: str | None
    created_at: Time
    rollout: int = Field(description="Percent of devices (0-100) the update is offered to.")
    mandatory: bool
    status: Literal["active", "rolledBack"]
    source_update_id: str | None = Field(
        description="The update this one republishes (rollback or promote), if any."
    )
    launch_asset: AssetAnswer | None
    assets: list[AssetAnswer]
    metadata: Any
    extra: Any
    manifest_url: str | None


class RolledBackAnswer(UpdateAnswer):
    """``POST /updates/{id}/rollback`` with ``{}``: the update, marked rolled back, and its
    ``replacement`` (null when nothing had to move)."""

    replacement: UpdateAnswer | None


class UpdatePage(Items[UpdateAnswer]):
    """A page of updates; ``nextCursor`` fetches the next (null: last page)."""

    next_cursor: str | None


class GroupAnswer(Answer):
    """An update group: the updates of one publish, one per platform."""

    id: str | None
    project_id: str
    message: str | None
    created_at: Time
    updates: list[UpdateAnswer]


class PublishAnswer(Answer):
    """The update group just published: one update per platform."""

    group_id: str | None
    updates: list[UpdateAnswer]


class DeletedAnswer(Answer):
    """The ids of the deleted updates."""

    deleted: list[str]


class MissingAnswer(Answer):
    """The SHA-256 hashes still to upload."""

    missing: list[str]


class UploadAnswer(Answer):
    """``PUT /assets/{sha256}``: ``created`` false when the project had the file already
    (then no ``size``)."""

    sha256: str
    size: int | None = Field(default=None, description="Bytes stored.")
    created: bool


# --- keys, signing, audit -----------------------------------------------------------------


class KeyAnswer(Answer):
    """An API key, never its secret."""

    id: str
    name: str
    role: str
    project_id: str | None
    prefix: str
    created_at: Time
    expires_at: Time | None
    revoked_at: Time | None
    last_used_at: Time | None


class NewKeyAnswer(KeyAnswer):
    """A new API key with its secret (shown once)."""

    key: str


class SigningAnswer(Answer):
    """A project's signing configuration (never the private key)."""

    enabled: bool
    # "publisher": the private key stays with the publisher (SECURITY.md §8).
    mode: Literal["server", "publisher"] | None = None
    keyid: str | None = None
    certificate_pem: str | None = None
    private_key_source: Literal["file", "database", "publisher"] | None = None
    timestamp_certificate_pem: str | None = None
    created_at: Time | None = None


class SigningSetAnswer(Answer):
    """The signing key just configured. In publisher mode, the whole configuration (as
    ``GET .../signing``), with the server's timestamp certificate."""

    keyid: str
    certificate_pem: str
    enabled: bool | None = None
    mode: Literal["server", "publisher"] | None = None
    private_key_source: Literal["file", "database", "publisher"] | None = None
    timestamp_certificate_pem: str | None = Field(
        default=None, description="Publisher mode: what verifies freshness statements."
    )
    created_at: Time | None = None


class UnsignedBody(Answer):
    """A body the server would serve that the publisher has not signed yet."""

    update_id: str
    kind: str = Field(description="directive, manifest-expo or manifest-lumora.")
    body: str = Field(description="The exact JSON text to sign (UTF-8).")
    sha256: str = Field(description="Lowercase hex SHA-256 of the body's UTF-8 bytes.")


class UnsignedAnswer(Answer):
    """Bodies awaiting the publisher's signature, newest update first (at most 100)."""

    unsigned: list[UnsignedBody]


class StoredAnswer(Answer):
    """How many new signatures were stored."""

    stored: int


class WhoAmIProject(Answer):
    """A project a key may see."""

    id: str
    slug: str
    name: str


class WhoAmIAnswer(Answer):
    """The calling key and the projects it may see."""

    key_id: str | None
    name: str | None
    role: str
    project_id: str | None
    projects: list[WhoAmIProject]


class AuditAnswer(Answer):
    """A management action (``detail``: what the action records)."""

    id: Any
    at: Time
    key_id: str | None
    project_id: str | None
    action: str
    target: str | None
    detail: Any


# --- embedded bundles and delta patches ---------------------------------------------------


class EmbeddedAnswer(Answer):
    """A build's embedded bundle registered as a patch base."""

    project_id: str
    platform: str
    runtime_version: str
    embedded_update_id: str
    sha256: str
    size: int | None = Field(description="Bytes.")
    created_at: Time


class LaunchSizes(Answer):
    """Sizes in bytes of the launch asset as served: raw, gzip and brotli (null: not
    computed yet)."""

    raw: int | None
    gzip: int | None
    br: int | None


class DeltaLaunch(Answer):
    """The update's launch asset and its sizes."""

    sha256: str
    sizes: LaunchSizes | None


class DeltaPatchAnswer(Answer):
    """A bsdiff patch from a base bundle to the update's launch asset."""

    base_update_id: str
    base_sha256: str
    size: int = Field(description="Bytes of the patch.")
    useful: bool = Field(description="Smaller than the compressed bundle: it is served.")
    skipped: bool = Field(description="Not computed: the bundle is over the size or memory cap.")
    created_at: Time


class DeltaSavings(Answer):
    """Download savings, all time."""

    patch_bytes_saved: int = Field(description="Bytes.")
    patch_downloads: int
    compression_bytes_saved: int = Field(description="Bytes.")
    patches_skipped: int


class DeltaAnswer(Answer):
    """An update's launch-asset sizes, its patches and the bytes they saved."""

    update_id: str
    launch_asset: DeltaLaunch | None
    patches: list[DeltaPatchAnswer]
    savings: DeltaSavings


# --- rollout plans ------------------------------------------------------------------------


class PlanGate(Answer):
    """The launch figures the plan's gate judges."""

    launches: int
    failures: int
    failure_rate: float | None = Field(description="failures / launches (null: no launches).")


class PlanAnswer(Answer):
    """An update's rollout plan: the rollout climbs ``steps`` one per ``stepSeconds`` while
    the gate holds."""

    update_id: str
    group_id: str | None
    platform: str
    steps: list[int] = Field(description="Rollout percents, in order.")
    step_seconds: int = Field(description="Seconds each step soaks.")
    min_launches: int
    max_failure_rate: float = Field(description="Fraction 0-1.")
    status: str = Field(description="running, halted or done.")
    step_index: int = Field(description="0-based index of the current step.")
    rollout: int = Field(description="The update's rollout now, percent.")
    next_step: int | None = Field(description="Percent of the next step (null: last step).")
    step_started_at: Time
    next_step_at: Time | None
    halt_reason: str | None
    gate: PlanGate


class ClearedAnswer(Answer):
    """The ids of the updates whose plan was removed."""

    cleared: list[str]


# --- webhooks -----------------------------------------------------------------------------


class WebhookAnswer(Answer):
    """A webhook (never its secret)."""

    id: str
    project_id: str
    url: str
    events: list[str]
    created_at: Time


class NewWebhookAnswer(WebhookAnswer):
    """A new webhook with its signing secret (shown once)."""

    secret: str


class DeletedIdAnswer(Answer):
    """The id of the deleted resource."""

    deleted: str


class AttemptAnswer(Answer):
    """One try at delivering an event."""

    at: Time
    status_code: int | None = Field(description="The receiver's HTTP status (null: no answer).")
    error: str | None
    duration_ms: int | float | None = Field(description="Milliseconds.")


class DeliveryAnswer(Answer):
    """A webhook delivery, with its attempts newest first."""

    id: str
    event_id: str
    type: str
    status: str = Field(description="pending, delivered or failed.")
    created_at: Time
    attempt_count: int
    next_attempt_at: Time | None
    delivered_at: Time | None
    attempts: list[AttemptAnswer]


# --- devices ------------------------------------------------------------------------------


class PinAnswer(Answer):
    """A device pinned to a channel."""

    device_id: str
    channel: str
    created_at: Time


class UnpinnedAnswer(Answer):
    """The device id just unpinned."""

    unpinned: str


class LastCheck(Answer):
    """The device's last update check."""

    at: Time
    first_seen: Time
    channel: str | None
    platform: str | None
    current_update_id: str | None
    embedded_update_id: str | None


class PlanStepRef(Answer):
    """Where the update's rollout plan is: step ``index`` (0-based) of ``of``."""

    index: int
    of: int
    status: str


class ServedWhy(Answer):
    """Why a device was served an update. Only ``deleted`` (true) when the update and its
    record are gone."""

    channel: str | None = None
    pinned: bool | None = None
    rollout_bucket: float | None = Field(
        default=None, description="The device's stable bucket, percent 0-100."
    )
    rollout: int | None = Field(default=None, description="Percent.")
    in_rollout: bool | None = None
    recorded: bool | None = None
    deleted: bool
    plan_step: PlanStepRef | None = None


class TimelineEvent(Answer):
    """One event of a device: ``served`` (with ``why``) or an outcome it reported."""

    at: Time
    type: str
    update_id: str | None
    why: ServedWhy | None = None


class DeviceTimelineAnswer(Answer):
    """A device's pin, last check and timeline, newest first."""

    device_id: str
    project_id: str
    pin: PinAnswer | None
    last_check: LastCheck | None
    timeline: list[TimelineEvent]


# --- statistics (GET /stats) ------------------------------------------------------------


class ActiveDevices(Answer):
    """Devices seen within 1, 7 and 30 days before now."""

    one_day: int = Field(alias="1d")
    seven_days: int = Field(alias="7d")
    thirty_days: int = Field(alias="30d")


class Figures(Answer):
    """Counts over the range: checks answered; devices per update outcome."""

    checks: int
    downloads: int
    installs: int
    launch_successes: int
    launch_failures: int
    rollbacks: int
    download_failures: int


class Totals(Figures):
    """Figures summed over the range, with device counts and launch rates (0..1 or null)."""

    unique_devices: int
    active_devices: ActiveDevices
    success_rate: float | None
    failure_rate: float | None


class DailyPoint(Figures):
    """One UTC day of the series."""

    date: str
    unique_devices: int


class HealthOut(Answer):
    """Launch health over all time: flagged when the failure rate crosses the threshold."""

    status: Literal["ok", "failing", "insufficientData"]
    flagged: bool
    launches: int
    failures: int
    failure_rate: float | None


class UpdateFigures(Figures):
    """One update's figures over the range, and its health."""

    update_id: str
    project_id: str
    channel: str
    platform: str
    runtime_version: str
    message: str
    created_at: str
    rollout: int
    status: str
    active_devices: ActiveDevices
    success_rate: float | None
    failure_rate: float | None
    health: HealthOut


class Flag(HealthOut):
    """A flagged update."""

    update_id: str
    project_id: str
    channel: str
    platform: str
    rollout: int


class ProjectRef(Answer):
    """The project reported on."""

    id: str
    slug: str
    name: str


class Thresholds(Answer):
    """The health rule in force."""

    failure_rate: float
    min_launches: int
    min_failures: int = Field(description="Failing devices needed before an update is flagged.")
    devices_per_source: int = Field(
        description="Devices one client address adds to an update's health figure, per outcome."
    )


class StatsReport(Answer):
    """The answer of ``GET /stats``."""

    project: ProjectRef | None
    since: str
    until: str
    channel: str | None
    update: str | None
    totals: Totals
    daily: list[DailyPoint]
    updates: list[UpdateFigures]
    flags: list[Flag]
    thresholds: Thresholds


# --- health ------------------------------------------------------------------------------


class DependencyCheck(Answer):
    """One dependency's probe."""

    name: str
    status: Literal["ok", "degraded", "down"]
    backend: str
    latency_ms: float | None = Field(default=None, description="Milliseconds.")
    error: str | None = None
    detail: str | None = None


class HealthAnswer(Answer):
    """``status`` for everyone; with an API key also the version, instance and checks."""

    status: Literal["ok", "degraded"]
    version: str | None = None
    instance: str | None = None
    pid: int | None = None
    checks: list[DependencyCheck] | None = None


# --- device answers (the protocol: unknown members refused) ------------------------------


class DeviceModel(BaseModel):
    """Base of device answers: camelCase, no member the model lacks."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", defer_build=True
    )


class ManifestAsset(DeviceModel):
    """A file of an Expo manifest. The launch asset omits ``fileExtension`` when empty."""

    hash: str = Field(description="Base64url SHA-256 of the bytes (no padding).")
    key: str = Field(description="md5 of the bytes, lowercase hex (Metro's asset hash).")
    content_type: str
    file_extension: str | None = None
    url: str


class ExpoManifest(DeviceModel):
    """An Expo Updates v1 manifest (the ``manifest`` part, ``/manifests/{id}``)."""

    id: str
    created_at: Time
    runtime_version: str = Field(description="The runtime version the device runs.")
    launch_asset: ManifestAsset
    assets: list[ManifestAsset]
    metadata: dict[str, Any]
    extra: dict[str, Any]


class LumoraManifestAsset(ManifestAsset):
    """A manifest file with what the Lumora SDK also reads."""

    path: str = Field(description="The file's path in the publish.")
    sha256: str = Field(description="Lowercase hex SHA-256 of the bytes.")
    size: int = Field(description="Bytes.")


class LumoraManifest(DeviceModel):
    """The check answer's manifest: Expo's (same members, in the same order), plus
    path/sha256/size per file."""

    id: str
    created_at: Time
    runtime_version: str = Field(description="The runtime version the device runs.")
    launch_asset: LumoraManifestAsset
    assets: list[LumoraManifestAsset]
    metadata: dict[str, Any]
    extra: dict[str, Any]


class ManifestExtensions(DeviceModel):
    """The ``extensions`` part beside a manifest: extra request headers per asset key
    (always none)."""

    asset_request_headers: dict[str, dict[str, str]]


class NoUpdateDirective(DeviceModel):
    """The device should keep what it runs."""

    type: Literal["noUpdateAvailable"]


class RollBackParameters(DeviceModel):
    """When the roll-back was decided."""

    commit_time: Time


class RollBackDirective(DeviceModel):
    """The device should launch its embedded update."""

    type: Literal["rollBackToEmbedded"]
    parameters: RollBackParameters


Directive = Annotated[NoUpdateDirective | RollBackDirective, Field(discriminator="type")]


class CheckResponse(DeviceModel):
    """The Lumora check answer (``POST /api/v1/updates/check``). The responder writes its
    bytes itself (the hot path); the tests prove them equal to this model's serialization."""

    update_available: bool
    is_mandatory: bool
    message: str | None = Field(default=None, description="Release notes of the update.")
    manifest: LumoraManifest | None = Field(
        default=None, description="Expo-shaped manifest plus path/sha256/size per asset."
    )
    directive: Directive | None = Field(
        default=None, description="noUpdateAvailable or rollBackToEmbedded."
    )
    manifest_text: str | None = Field(
        default=None, description="Signed answers: the exact JSON text the signature covers."
    )
    directive_text: str | None = Field(
        default=None, description="Signed answers: the exact JSON text the signature covers."
    )
    signature: str | None = Field(
        default=None,
        description='Signed answers: sig="<base64>", keyid="...", alg="rsa-v1_5-sha256" '
        "over the UTF-8 bytes of manifestText/directiveText (also the expo-signature header).",
    )
    freshness_text: str | None = Field(
        default=None,
        description="Signed answers: the freshness statement (lumora_ota.freshness): "
        "projectId, channel, platform, sequence, issuedAt, expires, bodySha256, rollback.",
    )
    freshness_signature: str | None = Field(
        default=None, description="Signed answers: expo-signature value over freshnessText."
    )
