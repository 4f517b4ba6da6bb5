"""Management API: ``GET /updates/{id}/delta`` — an update's delta patches and download savings.

Shows what a device downloads for the update's launch asset (raw, gzip, brotli and each stored
patch by base update) and, from the statistics counters, the bytes that patches and
compression saved so far (``patch_bytes_saved``, ``patch_downloads``,
``compression_bytes_saved``, recorded by ``server/device/patches.py``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import func, select

from lumora_ota.api_models import DeltaAnswer
from lumora_ota.domain.manifest import iso_time
from lumora_ota.server.management.auth import CurrentPrincipal, ReadSession
from lumora_ota.server.management.guards import GuardedJSONRoute
from lumora_ota.server.management.responses import answer
from lumora_ota.server.management.updates import visible_update
from lumora_ota.store.models import Blob, DeltaPatch, StatCounter
from lumora_ota.store.patches import SKIPPED_SIZE

router = APIRouter(tags=["delta updates"], route_class=GuardedJSONRoute)

SAVINGS_METRICS = {
    "patch_bytes_saved": "patchBytesSaved",
    "patch_downloads": "patchDownloads",
    "compression_bytes_saved": "compressionBytesSaved",
    # Bases not diffed (bundle over LUMORA_PATCH_MAX_BUNDLE_BYTES or LUMORA_PATCH_MEMORY_BYTES).
    "patch_skipped": "patchesSkipped",
}


@router.get(
    "/updates/{update_id}/delta",
    summary="Delta patches and download savings",
    **answer(DeltaAnswer),
)
def update_delta(
    update_id: str, principal: CurrentPrincipal, session: ReadSession
) -> dict[str, Any]:
    """The update's launch-asset sizes, its patches and the bytes saved (all time)."""
    update = visible_update(session, principal, update_id)
    launch = next((a for a in update.assets if a.is_launch_asset), None)
    full: dict[str, int | None] | None = None
    if launch is not None:
        blob = session.get(Blob, launch.sha256)
        full = {
            "raw": launch.size,
            "gzip": blob.gzip_size if blob else None,
            "br": blob.br_size if blob else None,
        }
    patches = session.scalars(
        select(DeltaPatch)
        .where(DeltaPatch.target_update_id == update.id)
        .order_by(DeltaPatch.created_at, DeltaPatch.base_update_id)
    )
    totals = dict(
        session.execute(
            select(StatCounter.metric, func.sum(StatCounter.value))
            .where(
                StatCounter.project_id == update.project_id,
                StatCounter.update_id == update.id,
                StatCounter.metric.in_(list(SAVINGS_METRICS)),
            )
            .group_by(StatCounter.metric)
        ).all()
    )
    return {
        "updateId": update.id,
        "launchAsset": None if launch is None else {"sha256": launch.sha256, "sizes": full},
        "patches": [
            {
                "baseUpdateId": p.base_update_id,
                "baseSha256": p.base_sha256,
                "size": p.size,
                "useful": p.useful,
                # Not computed: a bundle over the size cap or the memory budget.
                "skipped": p.size == SKIPPED_SIZE,
                "createdAt": iso_time(p.created_at),
            }
            for p in patches
        ],
        "savings": {name: int(totals.get(metric) or 0) for metric, name in SAVINGS_METRICS.items()},
    }
